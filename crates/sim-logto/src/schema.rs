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

use serde_json::{Map, Value, json};

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
#[derive(Clone, Debug, PartialEq)]
pub struct Issue {
    /// zod issue code (`too_big`, `too_small`, `invalid_type`, `invalid_string`, `custom`,
    /// `unrecognized_keys`).
    pub code: &'static str,
    /// Key path: object keys as strings, array positions as numbers (as zod reports them).
    pub path: Vec<Value>,
    /// zod's message.
    pub message: String,
    /// The code's own fields (`expected`/`received`, `minimum`/`maximum`, `type`, `inclusive`,
    /// `exact`, `validation`), as zod puts them in the issue.
    pub fields: Map<String, Value>,
}

impl Issue {
    /// An issue without code-specific fields.
    pub fn new(code: &'static str, path: Vec<Value>, message: String) -> Issue {
        Issue {
            code,
            path,
            message,
            fields: Map::new(),
        }
    }

    /// `invalid_type`, with zod's `expected` and `received`.
    pub fn invalid_type(path: Vec<Value>, expected: &str, received: &str) -> Issue {
        let message = if received == "undefined" {
            "Required".to_string()
        } else {
            format!("Expected {expected}, received {received}")
        };
        let mut i = Issue::new("invalid_type", path, message);
        i.fields.insert("expected".into(), json!(expected));
        i.fields.insert("received".into(), json!(received));
        i
    }

    /// As Logto's `formatZodError` renders it.
    pub fn render(&self) -> String {
        let path: Vec<String> = self
            .path
            .iter()
            .map(|p| match p {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        format!(
            "Error in key path \"{}\": ({}) {}",
            path.join("."),
            self.code,
            self.message
        )
    }

    /// The issue as zod serializes it (an element of `ZodError.issues`).
    pub fn to_json(&self) -> Value {
        let mut o = self.fields.clone();
        o.insert("code".into(), json!(self.code));
        o.insert("path".into(), Value::Array(self.path.clone()));
        o.insert("message".into(), json!(self.message));
        Value::Object(o)
    }
}

/// A whole number as an integer (zod's bounds are JavaScript numbers: `1`, not `1.0`).
fn num(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

/// A `too_small`/`too_big` issue on a number or a string's length, with zod's fields.
fn bound(path: &[Value], small: bool, kind: &str, limit: f64, inclusive: bool) -> Issue {
    let message = match (kind, small, inclusive) {
        ("string", true, _) => format!("String must contain at least {limit} character(s)"),
        ("string", false, _) => format!("String must contain at most {limit} character(s)"),
        (_, true, true) => format!("Number must be greater than or equal to {limit}"),
        (_, true, false) => format!("Number must be greater than {limit}"),
        (_, false, true) => format!("Number must be less than or equal to {limit}"),
        (_, false, false) => format!("Number must be less than {limit}"),
    };
    let mut i = Issue::new(
        if small { "too_small" } else { "too_big" },
        path.to_vec(),
        message,
    );
    i.fields.insert(
        (if small { "minimum" } else { "maximum" }).into(),
        num(limit),
    );
    i.fields.insert("type".into(), json!(kind));
    i.fields.insert("inclusive".into(), json!(inclusive));
    i.fields.insert("exact".into(), json!(false));
    i
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
                issues.push(Issue::new(
                    "unrecognized_keys",
                    vec![json!(k)],
                    format!("`{k}` cannot be changed with PATCH; Logto drops it silently"),
                ));
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
    path: &mut Vec<Value>,
    mode: Mode,
    max_ttl_days: u32,
    out: &mut Vec<Issue>,
) {
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
            if expected == "integer" && v.is_number() {
                // zod's `.int()` is a check like `.min()`: the others still run, in order.
                out.push(Issue::invalid_type(path.clone(), "integer", "float"));
            } else {
                let expected = if expected == "integer" {
                    "number"
                } else {
                    expected
                };
                out.push(Issue::invalid_type(path.clone(), expected, type_name(v)));
                return;
            }
        }
    }
    if let Some(n) = v.as_f64() {
        let is_ttl = path.last().and_then(Value::as_str) == Some("refreshTokenTtlInDays");
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.push(bound(path, true, "number", min, true));
        }
        if let Some(min) = schema.get("exclusiveMinimum").and_then(Value::as_f64)
            && n <= min
        {
            out.push(bound(path, true, "number", min, false));
        }
        let max = if is_ttl {
            Some(f64::from(max_ttl_days))
        } else {
            schema.get("maximum").and_then(Value::as_f64)
        };
        if let Some(max) = max
            && n > max
        {
            out.push(bound(path, false, "number", max, true));
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.encode_utf16().count() as f64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_f64)
            && len < min
        {
            out.push(bound(path, true, "string", min, true));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_f64)
            && len > max
        {
            out.push(bound(path, false, "string", max, true));
        }
        if schema.get("format").and_then(Value::as_str) == Some("uri") && !s.contains("://") {
            let mut i = Issue::new("invalid_string", path.clone(), "Invalid url".into());
            i.fields.insert("validation".into(), json!("url"));
            out.push(i);
        }
        if is_redirect_uri(path) && !valid_redirect_uri(s) {
            out.push(Issue::new("custom", path.clone(), "Invalid input".into()));
        }
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        for (i, item) in a.iter().enumerate() {
            path.push(json!(i));
            check(items, item, path, mode, max_ttl_days, out);
            path.pop();
        }
    }
    if let Some(o) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        // zod checks the shape's keys in declaration order, required or not.
        for (k, s) in props.into_iter().flatten() {
            path.push(json!(k));
            match o.get(k) {
                Some(val) => check(s, val, path, mode, max_ttl_days, out),
                None if schema
                    .get("required")
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|r| r.as_str() == Some(k))) =>
                {
                    let expected = match s.get("type") {
                        Some(Value::String(t)) => t.as_str(),
                        _ => "object",
                    };
                    out.push(Issue::invalid_type(path.clone(), expected, "undefined"));
                }
                None => {}
            }
            path.pop();
        }
        if mode == Mode::Strict
            && let Some(props) = props
        {
            for k in o.keys().filter(|k| !props.contains_key(*k)) {
                path.push(json!(k));
                if !is_not_patchable(path) {
                    out.push(Issue::new(
                        "unrecognized_keys",
                        path.clone(),
                        format!("Unrecognized key `{k}`: Logto drops it silently"),
                    ));
                }
                path.pop();
            }
        }
    }
}

/// An element of `oidcClientMetadata.redirectUris` or `.postLogoutRedirectUris`.
fn is_redirect_uri(path: &[Value]) -> bool {
    path.len() == 3
        && path[0] == "oidcClientMetadata"
        && (path[1] == "redirectUris" || path[1] == "postLogoutRedirectUris")
}

/// `validateRedirectUrl(url, 'web') || validateRedirectUrl(url, 'mobile')` of `@logto/core-kit`,
/// simplified: an http(s) URL with a host and no `.`/`..` path segment (a `*` only in the host or
/// path of an http(s) URL whose host has a dot), or a custom scheme such as `com.example.app:/cb`.
pub fn valid_redirect_uri(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once(':') else {
        return false;
    };
    let scheme = scheme.to_ascii_lowercase();
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_lowercase())
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        || url.chars().any(|c| c.is_whitespace())
    {
        return false;
    }
    if scheme == "http" || scheme == "https" {
        let Some(after) = rest.strip_prefix("//") else {
            return false;
        };
        let authority = after.split(['/', '?', '#']).next().unwrap_or_default();
        let tail = &after[authority.len()..];
        let path_part = tail.split(['?', '#']).next().unwrap_or_default();
        let dot_segment = path_part.split('/').any(|seg| {
            let seg = seg.to_ascii_lowercase();
            matches!(seg.as_str(), "." | ".." | "%2e" | "%2e%2e")
        });
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let wildcard_ok = !url.contains('*')
            || (!authority.contains('@')
                && host.contains('.')
                && !tail[path_part.len()..].contains('*'));
        return !host.is_empty() && !dot_segment && wildcard_ok;
    }
    // Mobile: `^(?!http(s)?:)[a-z][\d+_a-z-]*(\.[\d+_a-z-]+)*:$`.
    !url.contains('*')
        && scheme.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '_' | '-'))
        })
}

fn is_not_patchable(path: &[Value]) -> bool {
    path.len() == 1
        && patch_schema()["$defs"]["notPatchable"]
            .as_array()
            .is_some_and(|a| a.iter().any(|k| Some(k) == path.first()))
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
