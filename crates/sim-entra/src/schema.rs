//! Validation of request bodies against the Microsoft Graph CSDL excerpt in `contracts/`.
//!
//! The contract is the JSON conversion of OData CSDL XML: entity, complex and enum types with
//! their properties (`Name`, `Type`, `Nullable`). A body is valid for an entity type when every
//! property it names exists on the type or one of its base types (Graph rejects unknown properties
//! on `application` even though the CSDL marks it open) and every value has the declared type:
//! `Edm.String`, `Edm.Boolean`, `Edm.Int32`, `Edm.Guid` (a GUID string), `Edm.DateTimeOffset`
//! (RFC 3339), `Edm.Binary` (base64), `Collection(T)` (an array; `null` only when nullable),
//! `graph.<complex>` (an object with known properties only) and `graph.<enum>` (a member name).
//! Keys starting with `@` (OData annotations such as `@odata.type`) are allowed anywhere.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

/// The contract file, embedded.
pub const CONTRACT: &str =
    include_str!("../contracts/msgraph-v1.0-app-registration-subset.csdl.json");

/// One structural property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// Property name.
    pub name: String,
    /// CSDL type, e.g. `Edm.String` or `Collection(graph.requiredResourceAccess)`.
    pub ty: String,
    /// Whether `null` is allowed.
    pub nullable: bool,
}

/// A structured type (entity or complex).
#[derive(Clone, Debug, Default)]
pub struct StructType {
    /// Base type without the `graph.` prefix.
    pub base: Option<String>,
    /// Own structural properties.
    pub properties: Vec<Property>,
    /// Navigation property names.
    pub navigation: Vec<String>,
    /// `OpenType="true"`.
    pub open: bool,
}

/// The parsed contract.
#[derive(Debug, Default)]
pub struct Contract {
    /// Entity types by name.
    pub entities: BTreeMap<String, StructType>,
    /// Complex types by name.
    pub complex: BTreeMap<String, StructType>,
    /// Enum types: name to member names.
    pub enums: BTreeMap<String, Vec<String>>,
}

/// The embedded contract, parsed once.
pub fn contract() -> &'static Contract {
    static C: OnceLock<Contract> = OnceLock::new();
    C.get_or_init(|| parse(CONTRACT).expect("the embedded CSDL contract parses"))
}

fn parse_struct(v: &Value) -> StructType {
    let mut t = StructType {
        base: v
            .get("BaseType")
            .and_then(Value::as_str)
            .map(|b| b.trim_start_matches("graph.").to_string()),
        open: v.get("OpenType").and_then(Value::as_str) == Some("true"),
        ..StructType::default()
    };
    for c in v
        .get("children")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = c.get("Name").and_then(Value::as_str).unwrap_or_default();
        match c.get("$kind").and_then(Value::as_str) {
            Some("Property") => t.properties.push(Property {
                name: name.to_string(),
                ty: c
                    .get("Type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                nullable: c.get("Nullable").and_then(Value::as_str) != Some("false"),
            }),
            Some("NavigationProperty") => t.navigation.push(name.to_string()),
            _ => {}
        }
    }
    t
}

/// Parses the CSDL JSON conversion.
pub fn parse(text: &str) -> Result<Contract, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut c = Contract::default();
    for (name, t) in v
        .get("EntityType")
        .and_then(Value::as_object)
        .ok_or("no EntityType")?
    {
        c.entities.insert(name.clone(), parse_struct(t));
    }
    // `graph.entity` is not in the excerpt: it carries the key `id`.
    c.entities.entry("entity".into()).or_insert(StructType {
        properties: vec![Property {
            name: "id".into(),
            ty: "Edm.String".into(),
            nullable: false,
        }],
        ..StructType::default()
    });
    for (name, t) in v
        .get("ComplexType")
        .and_then(Value::as_object)
        .ok_or("no ComplexType")?
    {
        c.complex.insert(name.clone(), parse_struct(t));
    }
    for (name, t) in v
        .get("EnumType")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let members = t
            .get("children")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("Name").and_then(Value::as_str).map(str::to_string))
            .collect();
        c.enums.insert(name.clone(), members);
    }
    Ok(c)
}

impl Contract {
    /// All structural properties of an entity type, base types included.
    pub fn entity_properties(&self, name: &str) -> Vec<Property> {
        let mut out = Vec::new();
        let mut cur = Some(name.to_string());
        while let Some(n) = cur {
            let Some(t) = self.entities.get(&n) else {
                break;
            };
            out.extend(t.properties.iter().cloned());
            cur = t.base.clone();
        }
        out
    }

    /// Navigation property names of an entity type, base types included.
    pub fn entity_navigation(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = Some(name.to_string());
        while let Some(n) = cur {
            let Some(t) = self.entities.get(&n) else {
                break;
            };
            out.extend(t.navigation.iter().cloned());
            cur = t.base.clone();
        }
        out
    }

    /// The type of one property of an entity type.
    pub fn property(&self, entity: &str, name: &str) -> Option<Property> {
        self.entity_properties(entity)
            .into_iter()
            .find(|p| p.name == name)
    }

    /// Validates a (partial, as in a PATCH) body for an entity type: every property must exist
    /// and have its declared type. Returns one message per problem; the first message of an
    /// unknown property reads like Graph's own.
    pub fn validate_entity(&self, entity: &str, body: &Value) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let Some(obj) = body.as_object() else {
            return Err(vec![format!(
                "the body must be a JSON object (microsoft.graph.{entity})"
            )]);
        };
        let props = self.entity_properties(entity);
        if props.is_empty() {
            return Err(vec![format!("unknown entity type {entity}")]);
        }
        for (k, v) in obj {
            if k.starts_with('@') {
                continue;
            }
            match props.iter().find(|p| &p.name == k) {
                Some(p) => self.check_value(&p.ty, p.nullable, v, k, &mut errors),
                None => errors.push(format!(
                    "Property '{k}' does not exist on type 'microsoft.graph.{entity}'."
                )),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn check_value(
        &self,
        ty: &str,
        nullable: bool,
        v: &Value,
        path: &str,
        errors: &mut Vec<String>,
    ) {
        if v.is_null() {
            if !nullable {
                errors.push(format!("{path}: null is not allowed ({ty})"));
            }
            return;
        }
        if let Some(inner) = ty
            .strip_prefix("Collection(")
            .and_then(|t| t.strip_suffix(')'))
        {
            match v.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        // Items of a collection of complex/primitive types are not null.
                        self.check_value(inner, false, item, &format!("{path}[{i}]"), errors);
                    }
                }
                None => errors.push(format!("{path}: expected an array ({ty}), got {v}")),
            }
            return;
        }
        let bad = |errors: &mut Vec<String>, what: &str| {
            errors.push(format!("{path}: expected {what} ({ty}), got {v}"));
        };
        match ty {
            "Edm.String" => {
                if !v.is_string() {
                    bad(errors, "a string");
                }
            }
            "Edm.Boolean" => {
                if !v.is_boolean() {
                    bad(errors, "a boolean");
                }
            }
            "Edm.Int32" => {
                if v.as_i64().is_none_or(|n| i32::try_from(n).is_err()) {
                    bad(errors, "a 32-bit integer");
                }
            }
            "Edm.Guid" => {
                if !v.as_str().is_some_and(is_guid) {
                    bad(errors, "a GUID");
                }
            }
            "Edm.DateTimeOffset" => {
                if v.as_str()
                    .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                    .is_none()
                {
                    bad(errors, "an RFC 3339 timestamp");
                }
            }
            "Edm.Binary" => {
                if !v.as_str().is_some_and(is_base64) {
                    bad(errors, "base64 text");
                }
            }
            "Edm.Stream" => bad(errors, "no value (streams are not set through JSON)"),
            other => {
                let name = other.trim_start_matches("graph.");
                if let Some(members) = self.enums.get(name) {
                    // Flags enums accept comma-separated member names.
                    let ok = v.as_str().is_some_and(|s| {
                        s.split(',').all(|m| members.iter().any(|x| x == m.trim()))
                    });
                    if !ok {
                        bad(errors, &format!("one of {}", members.join(", ")));
                    }
                } else if let Some(t) = self.complex.get(name) {
                    let Some(obj) = v.as_object() else {
                        bad(errors, "an object");
                        return;
                    };
                    for (k, item) in obj {
                        if k.starts_with('@') {
                            continue;
                        }
                        match t.properties.iter().find(|p| &p.name == k) {
                            Some(p) => self.check_value(
                                &p.ty,
                                p.nullable,
                                item,
                                &format!("{path}.{k}"),
                                errors,
                            ),
                            None if t.open => {}
                            None => errors.push(format!(
                                "Property '{k}' does not exist on type 'microsoft.graph.{name}'."
                            )),
                        }
                    }
                } else {
                    errors.push(format!("{path}: type {ty} is not in the contract excerpt"));
                }
            }
        }
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` with hex digits.
pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_base64(s: &str) -> bool {
    s.len().is_multiple_of(4)
        && s.trim_end_matches('=')
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn application_properties_and_types() {
        let c = contract();
        assert!(
            c.property("application", "requiredResourceAccess")
                .is_some()
        );
        assert_eq!(
            c.property("application", "isFallbackPublicClient")
                .unwrap()
                .ty,
            "Edm.Boolean"
        );
        assert!(
            c.property("application", "id").is_some(),
            "inherited from entity"
        );
        assert!(
            c.entity_navigation("application")
                .contains(&"tokenLifetimePolicies".to_string())
        );
        c.validate_entity(
            "application",
            &json!({"isFallbackPublicClient": false, "requiredResourceAccess": [
                {"resourceAppId": "00000003-0000-0000-c000-000000000000",
                 "resourceAccess": [{"id": "7427e0e9-2fba-42fe-b0c0-848c9e6a8182", "type": "Scope"}]}]}),
        )
        .unwrap();
    }

    #[test]
    fn wrong_types_and_unknown_properties_are_reported() {
        let c = contract();
        let e = c
            .validate_entity("application", &json!({"isFallbackPublicClient": "false"}))
            .unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("expected a boolean"), "{e:?}");
        let e = c
            .validate_entity("application", &json!({"fooBar": 1}))
            .unwrap_err();
        assert_eq!(
            e,
            vec!["Property 'fooBar' does not exist on type 'microsoft.graph.application'."]
        );
        let e = c
            .validate_entity(
                "application",
                &json!({"requiredResourceAccess": [{"resourceAppId": "x", "resourceAccess": [{"id": "not-a-guid", "type": "Scope", "extra": 1}]}]}),
            )
            .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        let e = c
            .validate_entity("application", &json!({"requiredResourceAccess": null}))
            .unwrap_err();
        assert!(e[0].contains("null is not allowed"), "{e:?}");
        let e = c
            .validate_entity(
                "application",
                &json!({"web": {"redirectUris": "https://x"}}),
            )
            .unwrap_err();
        assert!(
            e[0].starts_with("web.redirectUris: expected an array"),
            "{e:?}"
        );
    }

    #[test]
    fn token_lifetime_policy_body() {
        let c = contract();
        c.validate_entity(
            "tokenLifetimePolicy",
            &json!({"definition": ["{}"], "displayName": "x", "isOrganizationDefault": false}),
        )
        .unwrap();
        assert!(
            c.validate_entity("tokenLifetimePolicy", &json!({"definition": "{}"}))
                .is_err()
        );
    }
}
