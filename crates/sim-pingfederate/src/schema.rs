//! Validation of request bodies against the contract's component schemas (OpenAPI 3.0 subset used
//! by the PingFederate admin API: `$ref`, `type`, `required`, `properties`, `additionalProperties`,
//! `items`, `uniqueItems`, `enum`, integer `format`s). Like PingFederate, a property the selected
//! version does not know is a validation error.

use std::sync::OnceLock;

use serde_json::Value;

use crate::PfVersion;

const SPEC_11_3: &str = include_str!("../contracts/pf-admin-api-11.3-oauth-clients-subset.yaml");
const SPEC_12_1: &str = include_str!("../contracts/pf-admin-api-12.1-oauth-clients-subset.yaml");

/// One validation error, shaped like PingFederate's `ValidationError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `errorId`.
    pub error_id: String,
    /// `fieldPath` (dotted, with `[i]` for array items).
    pub field_path: String,
    /// `message`.
    pub message: String,
}

/// The parsed contract of one version.
pub fn spec(version: PfVersion) -> &'static Value {
    static V11: OnceLock<Value> = OnceLock::new();
    static V12: OnceLock<Value> = OnceLock::new();
    let (cell, text) = match version {
        PfVersion::V11_3 => (&V11, SPEC_11_3),
        PfVersion::V12_1 => (&V12, SPEC_12_1),
    };
    cell.get_or_init(|| {
        serde_saphyr::from_str::<Value>(text).expect("the bundled contract is valid YAML")
    })
}

/// Property names of a component schema (e.g. `Client`) in a version.
pub fn property_names(version: PfVersion, schema: &str) -> Vec<String> {
    spec(version)["components"]["schemas"][schema]["properties"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Validates `value` against the component schema `schema` (e.g. `Client`, `ScopeEntry`,
/// `AuthorizationServerSettings`) of `version`. Empty when valid.
pub fn validate(version: PfVersion, schema: &str, value: &Value) -> Vec<FieldError> {
    let spec = spec(version);
    let root = &spec["components"]["schemas"][schema];
    let mut errors = Vec::new();
    if root.is_null() {
        errors.push(FieldError {
            error_id: "unknown_schema".into(),
            field_path: String::new(),
            message: format!("no schema {schema} in the {version} contract"),
        });
        return errors;
    }
    check(spec, root, value, "", &mut errors);
    errors
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..16 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/components/schemas/");
                s = &spec["components"]["schemas"][name];
            }
            None => break,
        }
    }
    s
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(spec: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let schema = resolve(spec, schema);
    let mut push = |id: &str, message: String| {
        errors.push(FieldError {
            error_id: id.to_string(),
            field_path: path.to_string(),
            message,
        })
    };
    if value.is_null() {
        // PingFederate treats an explicit null like an absent property.
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    if let Some(ty) = ty {
        let actual = type_name(value);
        let ok = match ty {
            "number" => matches!(actual, "integer" | "number"),
            t => t == actual,
        };
        if !ok {
            push(
                "invalid_type",
                format!("Invalid value type: expected {ty}, got {actual}."),
            );
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect();
        push(
            "invalid_enum_value",
            format!(
                "Invalid value {value}; allowed values are: {}.",
                names.join(", ")
            ),
        );
        return;
    }
    if let Some(n) = value.as_i64() {
        match schema.get("format").and_then(Value::as_str) {
            Some("int32") if i32::try_from(n).is_err() => {
                push("invalid_number", format!("{n} is out of range for int32."))
            }
            _ => {}
        }
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if map.get(r).is_none_or(Value::is_null) {
                        errors.push(FieldError {
                            error_id: "required_field_missing".into(),
                            field_path: join(path, r),
                            message: format!("Required field '{r}' is missing."),
                        });
                    }
                }
            }
            for (k, v) in map {
                let sub = join(path, k);
                if let Some(p) = props.and_then(|p| p.get(k)) {
                    check(spec, p, v, &sub, errors);
                } else if let Some(a) = additional.filter(|a| a.is_object()) {
                    check(spec, a, v, &sub, errors);
                } else if props.is_some() || additional.is_some() {
                    errors.push(FieldError {
                        error_id: "unrecognized_field".into(),
                        field_path: sub,
                        message: format!("Unrecognized field '{k}'."),
                    });
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check(spec, item_schema, v, &format!("{path}[{i}]"), errors);
                }
            }
            if schema.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
                for (i, v) in items.iter().enumerate() {
                    if items[..i].contains(v) {
                        errors.push(FieldError {
                            error_id: "duplicate_value".into(),
                            field_path: format!("{path}[{i}]"),
                            message: format!("Duplicate value {v}."),
                        });
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contracts_parse_and_differ_by_version() {
        let v12 = property_names(PfVersion::V12_1, "Client");
        let v11 = property_names(PfVersion::V11_3, "Client");
        assert!(v12.contains(&"offlineAccessRequireConsentPrompt".to_string()));
        assert!(!v11.contains(&"offlineAccessRequireConsentPrompt".to_string()));
        assert!(v11.contains(&"persistentGrantIdleTimeoutTimeUnit".to_string()));
    }

    #[test]
    fn client_validation_reports_field_paths() {
        let body = json!({
            "clientId": "c",
            "grantTypes": ["AUTHORIZATION_CODE", "REFRESH", "AUTHORIZATION_CODE"],
            "refreshRolling": "ALWAYS",
            "clientAuth": {"type": "SECRET", "bogus": 1},
            "offlineAccessRequireConsentPrompt": "YES",
        });
        let errs = validate(PfVersion::V11_3, "Client", &body);
        let paths: Vec<(&str, &str)> = errs
            .iter()
            .map(|e| (e.field_path.as_str(), e.error_id.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                ("name", "required_field_missing"),
                ("grantTypes[1]", "invalid_enum_value"),
                ("grantTypes[2]", "duplicate_value"),
                ("refreshRolling", "invalid_enum_value"),
                ("clientAuth.bogus", "unrecognized_field"),
                ("offlineAccessRequireConsentPrompt", "unrecognized_field"),
            ]
        );
        let ok = json!({"clientId": "c", "name": "n", "grantTypes": ["AUTHORIZATION_CODE"],
            "offlineAccessRequireConsentPrompt": "YES",
            "extendedParameters": {"x": {"values": ["a"]}}});
        assert_eq!(validate(PfVersion::V12_1, "Client", &ok), []);
    }
}
