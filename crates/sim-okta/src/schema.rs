//! Validation of request bodies against the official Okta OpenAPI excerpts in `contracts/`.
//!
//! The validator understands the keywords the excerpts use: `$ref`, `allOf`, `type`, `enum`,
//! `required`, `properties`, `items`, `minimum`/`maximum`, `minLength`/`maxLength`. `readOnly`
//! properties are accepted in request bodies (Okta ignores them, and its SDKs send back what they
//! read). The `Application` discriminator maps `OPENID_CONNECT` to `OpenIdConnectApplication`,
//! which the excerpts do not carry whole: its refresh-relevant parts are checked at their JSON paths
//! against the excerpt's own schemas (see `contracts/README.md`).

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The management subset (apps, authorization servers, policies, rules, scopes).
pub const MANAGEMENT_YAML: &str =
    include_str!("../contracts/okta-management-2026.06.3-apps-authserver-subset.yaml");
/// The refresh-token schemas excerpt.
pub const REFRESH_YAML: &str =
    include_str!("../contracts/okta-management-2026.06.3-refresh-schemas-excerpt.yaml");

/// Every schema of both excerpts by name (the refresh excerpt wins on a name both carry; the
/// values are identical where they overlap).
pub fn schemas() -> &'static Map<String, Value> {
    static S: OnceLock<Map<String, Value>> = OnceLock::new();
    S.get_or_init(|| {
        let mgmt: Value =
            serde_saphyr::from_str(MANAGEMENT_YAML).expect("the management excerpt is YAML");
        let refresh: Value =
            serde_saphyr::from_str(REFRESH_YAML).expect("the refresh excerpt is YAML");
        let mut all = mgmt["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        if let Some(r) = refresh["schemas"].as_object() {
            for (k, v) in r {
                all.insert(k.clone(), v.clone());
            }
        }
        all
    })
}

/// The error examples of the refresh excerpt (`ErrorApiValidationFailed`, …), by name.
pub fn error_example(name: &str) -> Option<Value> {
    static S: OnceLock<Value> = OnceLock::new();
    let v = S.get_or_init(|| serde_saphyr::from_str(REFRESH_YAML).unwrap_or(Value::Null));
    v["examples"][name].get("value").cloned()
}

/// Validates `value` against the named schema; one line per problem (`path: problem`).
pub fn validate(name: &str, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match schemas().get(name) {
        Some(s) => check(s, value, "$", &mut out),
        None => out.push(format!("no schema named {name} in the contract")),
    }
    out
}

/// Validates an app body (`PUT /api/v1/apps/{id}`).
pub fn validate_app(body: &Value) -> Vec<String> {
    let mut out = validate("Application", body);
    if body.get("signOnMode").and_then(Value::as_str) == Some("OPENID_CONNECT") {
        // `OpenIdConnectApplication`: required [name, settings, credentials]; settings.oauthClient
        // requires grant_types.
        for k in ["name", "settings", "credentials"] {
            if body.get(k).is_none() {
                out.push(format!("$: required property {k} is missing"));
            }
        }
        let at = |p: &[&str]| p.iter().try_fold(body, |v, k| v.get(*k));
        if let Some(c) = at(&["credentials", "oauthClient"]) {
            out.extend(prefixed(
                "$.credentials.oauthClient",
                validate("ApplicationCredentialsOAuthClient", c),
            ));
        }
        match at(&["settings", "oauthClient"]) {
            Some(oc) => {
                match oc.get("grant_types") {
                    Some(Value::Array(g)) => {
                        for (i, g) in g.iter().enumerate() {
                            out.extend(prefixed(
                                &format!("$.settings.oauthClient.grant_types[{i}]"),
                                validate("GrantType", g),
                            ));
                        }
                    }
                    Some(_) => out.push("$.settings.oauthClient.grant_types: not an array".into()),
                    None => out.push(
                        "$.settings.oauthClient: required property grant_types is missing".into(),
                    ),
                }
                if let Some(t) = oc.get("application_type") {
                    out.extend(prefixed(
                        "$.settings.oauthClient.application_type",
                        validate("OpenIdConnectApplicationType", t),
                    ));
                }
                if let Some(t) = oc.get("consent_method") {
                    out.extend(prefixed(
                        "$.settings.oauthClient.consent_method",
                        validate("OpenIdConnectApplicationConsentMethod", t),
                    ));
                }
                if let Some(r) = oc.get("refresh_token") {
                    out.extend(prefixed(
                        "$.settings.oauthClient.refresh_token",
                        validate("OpenIdConnectApplicationSettingsRefreshToken", r),
                    ));
                }
            }
            None if body.get("settings").is_some() => {
                out.push("$.settings: required property oauthClient is missing".into())
            }
            None => {}
        }
    }
    out
}

/// Validates a rule body (`PUT …/policies/{policyId}/rules/{ruleId}`).
pub fn validate_rule(body: &Value) -> Vec<String> {
    validate("AuthorizationServerPolicyRuleRequest", body)
}

fn prefixed(prefix: &str, lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| match l.strip_prefix('$') {
            Some(rest) => format!("{prefix}{rest}"),
            None => l,
        })
        .collect()
}

fn resolve(schema: &Value) -> Option<&'static Value> {
    let r = schema.get("$ref")?.as_str()?;
    let name = r.rsplit('/').next()?;
    schemas().get(name)
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some(),
        "number" => v.is_number(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn check(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(target) = resolve(schema) {
        check(target, v, path, out);
        return;
    }
    if schema.get("$ref").is_some() {
        // A reference the excerpts do not carry (e.g. other app types): nothing to check.
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(s, v, path, out);
        }
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str)
        && !type_ok(t, v)
    {
        // Okta's nullable fields answer null; a null where a value is typed is accepted as "unset".
        if !v.is_null() {
            out.push(format!("{path}: expected {t}, got {}", kind(v)));
        }
        return;
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !v.is_null()
        && !e.contains(v)
    {
        out.push(format!(
            "{path}: {v} is not one of {}",
            e.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.push(format!("{path}: {n} is below the minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            out.push(format!("{path}: {n} is above the maximum {max}"));
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            out.push(format!("{path}: shorter than {min} characters"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            out.push(format!("{path}: longer than {max} characters"));
        }
    }
    if let Some(o) = v.as_object() {
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for k in req.iter().filter_map(Value::as_str) {
                if !o.contains_key(k) {
                    out.push(format!("{path}: required property {k} is missing"));
                }
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, s) in props {
                if let Some(child) = o.get(k) {
                    check(s, child, &format!("{path}.{k}"), out);
                }
            }
        }
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        for (i, item) in a.iter().enumerate() {
            check(items, item, &format!("{path}[{i}]"), out);
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
