//! Validation of `PATCH /api/applications/{id}` bodies against
//! `contracts/application-patch.derived.schema.json` (a JSON Schema derived from the zod guards of
//! `@logto/schemas` 1.43.0; its keys are checked against the official generated types in the
//! crate's tests).
//!
//! Two modes:
//! - [`Mode::Server`] behaves as Logto's `koa-guard`: zod objects are not strict, so unknown keys
//!   are dropped without an error; type and range problems are zod issues (`too_big`,
//!   `invalid_type`, …) with their key paths.
//! - [`Mode::Strict`] is for checking what a client sent: it also reports every key Logto would
//!   drop silently (unknown, or not patchable such as `type`), since a client relying on one has a
//!   bug the server would never report.

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The derived PATCH body schema, as shipped in `contracts/`.
pub const PATCH_SCHEMA: &str = include_str!("../contracts/application-patch.derived.schema.json");
/// The official generated types (`@logto/api` 1.42.0) of the GET/PATCH/DELETE operations.
pub const MANAGEMENT_DTS: &str =
    include_str!("../contracts/logto-api-1.42.0-management.d.ts-GetDeleteUpdateApplication.txt");

/// The parsed schema.
pub fn patch_schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(|| serde_json::from_str(PATCH_SCHEMA).expect("the contract schema is JSON"))
}

/// How unknown keys are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As the server: unknown keys are dropped silently.
    Server,
    /// As a client check: unknown and not-patchable keys are errors.
    Strict,
}

/// One zod-style issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// zod issue code (`too_big`, `too_small`, `invalid_type`, `unrecognized_keys`).
    pub code: &'static str,
    /// Key path.
    pub path: Vec<String>,
    /// zod's message.
    pub message: String,
}

impl Issue {
    /// As Logto's `formatZodError` renders it.
    pub fn render(&self) -> String {
        format!(
            "Error in key path \"{}\": ({}) {}",
            self.path.join("."),
            self.code,
            self.message
        )
    }
}

/// Validates a PATCH body. `max_ttl_days` overrides the schema's `refreshTokenTtlInDays` maximum
/// (90 emulates Logto before 1.34.0).
pub fn validate_patch(body: &Value, mode: Mode, max_ttl_days: u32) -> Vec<Issue> {
    let mut issues = Vec::new();
    let schema = patch_schema();
    check(
        schema,
        body,
        &mut Vec::new(),
        mode,
        max_ttl_days,
        &mut issues,
    );
    if mode == Mode::Strict
        && let (Some(o), Some(not)) = (body.as_object(), schema["$defs"]["notPatchable"].as_array())
    {
        for k in not.iter().filter_map(Value::as_str) {
            if o.contains_key(k) {
                issues.push(Issue {
                    code: "unrecognized_keys",
                    path: vec![k.to_string()],
                    message: format!("`{k}` cannot be changed with PATCH; Logto drops it silently"),
                });
            }
        }
    }
    issues
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn matches_type(t: &str, v: &Value) -> bool {
    match t {
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        other => type_name(v) == other,
    }
}

fn check(
    schema: &Value,
    v: &Value,
    path: &mut Vec<String>,
    mode: Mode,
    max_ttl_days: u32,
    out: &mut Vec<Issue>,
) {
    let issue = |code, message: String, path: &Vec<String>| Issue {
        code,
        path: path.clone(),
        message,
    };
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.iter().any(|t| matches_type(t, v)) {
            let expected = types
                .iter()
                .find(|t| **t != "null")
                .copied()
                .unwrap_or("null");
            let (expected, received) = if expected == "integer" && v.is_number() {
                ("integer", "float")
            } else {
                (
                    if expected == "integer" {
                        "number"
                    } else {
                        expected
                    },
                    type_name(v),
                )
            };
            out.push(issue(
                "invalid_type",
                format!("Expected {expected}, received {received}"),
                path,
            ));
            return;
        }
    }
    if let Some(n) = v.as_f64() {
        let is_ttl = path.last().map(String::as_str) == Some("refreshTokenTtlInDays");
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.push(issue(
                "too_small",
                format!("Number must be greater than or equal to {min}"),
                path,
            ));
        }
        let max = if is_ttl {
            Some(f64::from(max_ttl_days))
        } else {
            schema.get("maximum").and_then(Value::as_f64)
        };
        if let Some(max) = max
            && n > max
        {
            out.push(issue(
                "too_big",
                format!("Number must be less than or equal to {max}"),
                path,
            ));
        }
        if let Some(min) = schema.get("exclusiveMinimum").and_then(Value::as_f64)
            && n <= min
        {
            out.push(issue(
                "too_small",
                format!("Number must be greater than {min}"),
                path,
            ));
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            out.push(issue(
                "too_small",
                format!("String must contain at least {min} character(s)"),
                path,
            ));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            out.push(issue(
                "too_big",
                format!("String must contain at most {max} character(s)"),
                path,
            ));
        }
        if schema.get("format").and_then(Value::as_str) == Some("uri") && !s.contains("://") {
            out.push(issue("invalid_string", "Invalid url".into(), path));
        }
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        for (i, item) in a.iter().enumerate() {
            path.push(i.to_string());
            check(items, item, path, mode, max_ttl_days, out);
            path.pop();
        }
    }
    if let Some(o) = v.as_object() {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !o.contains_key(r) {
                path.push(r.to_string());
                out.push(issue("invalid_type", "Required".into(), path));
                path.pop();
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, val) in o {
                path.push(k.clone());
                match props.get(k) {
                    Some(s) => check(s, val, path, mode, max_ttl_days, out),
                    None if mode == Mode::Strict && !is_not_patchable(path) => {
                        out.push(issue(
                            "unrecognized_keys",
                            format!("Unrecognized key `{k}`: Logto drops it silently"),
                            path,
                        ));
                    }
                    None => {}
                }
                path.pop();
            }
        }
    }
}

fn is_not_patchable(path: &[String]) -> bool {
    path.len() == 1
        && patch_schema()["$defs"]["notPatchable"]
            .as_array()
            .is_some_and(|a| a.iter().any(|k| k.as_str() == Some(path[0].as_str())))
}

/// Drops what zod's non-strict objects drop: keys the schema does not know, at every level the
/// schema describes (not inside free-form objects such as `customData`).
pub fn strip_unknown(body: &Value) -> Value {
    strip(patch_schema(), body)
}

fn strip(schema: &Value, v: &Value) -> Value {
    match (schema.get("properties").and_then(Value::as_object), v) {
        (Some(props), Value::Object(o)) => Value::Object(
            o.iter()
                .filter_map(|(k, val)| props.get(k).map(|s| (k.clone(), strip(s, val))))
                .collect::<Map<String, Value>>(),
        ),
        _ => v.clone(),
    }
}

/// Keys of an object type declared in the generated `.d.ts` text, starting at the first line that
/// ends with `{name}?: {` after `after` (a marker such as `requestBody`): one level deep.
pub fn dts_object_keys(after: &str, name: &str) -> Vec<String> {
    let text = MANAGEMENT_DTS;
    let Some(start) = text.find(after) else {
        return Vec::new();
    };
    let rest = &text[start..];
    let opener = format!("{name}?: {{");
    let Some(open) = rest.find(&opener) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    let mut depth = 0i32;
    for line in rest[open + opener.len()..].lines() {
        let t = line.trim();
        if depth == 0 {
            if t.starts_with('}') {
                break;
            }
            if let Some((k, _)) = t.split_once(':')
                && !t.starts_with("/**")
                && !t.starts_with('*')
                && !t.starts_with('[')
            {
                keys.push(k.trim_end_matches('?').to_string());
            }
        }
        depth += t.matches('{').count() as i32 - t.matches('}').count() as i32;
    }
    keys
}
