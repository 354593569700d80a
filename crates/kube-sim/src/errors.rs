//! Kubernetes `Status` errors as the API server sends them.

use serde_json::{Value, json};

/// An error answered as a `meta.k8s.io/v1` `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct SimError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...).
    pub reason: String,
    /// Human-readable message, formatted like the real API server's.
    pub message: String,
    /// `details` of the Status object, if any.
    pub details: Option<Box<Value>>,
}

impl SimError {
    /// A new error with no details.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        SimError {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    /// Attach `details`.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// `<resource>[.<group>] "<name>" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        SimError::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", qualified(group, resource), name),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
        .strip_empty_group()
    }

    /// `<resource>[.<group>] "<name>" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        SimError::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", qualified(group, resource), name),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
        .strip_empty_group()
    }

    /// The optimistic-concurrency conflict of an update with a stale resourceVersion.
    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        SimError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(group, resource),
                name
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
        .strip_empty_group()
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        SimError::new(400, "BadRequest", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        SimError::new(405, "MethodNotAllowed", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        SimError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type})"
            ),
        )
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        SimError::new(403, "Forbidden", message)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        SimError::new(500, "InternalError", message)
    }

    /// 422 Invalid with field causes: `Kind.group "name" is invalid: [a, b]`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: &[FieldError]) -> Self {
        let gk = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let joined: Vec<String> = causes.iter().map(|c| c.to_string()).collect();
        let summary = if joined.len() == 1 {
            joined[0].clone()
        } else {
            format!("[{}]", joined.join(", "))
        };
        let mut details = json!({
            "name": name,
            "group": group,
            "kind": kind,
            "causes": causes.iter().map(|c| json!({
                "reason": c.kind.reason(),
                "message": c.cause_message(),
                "field": c.field,
            })).collect::<Vec<_>>(),
        });
        if group.is_empty() {
            details.as_object_mut().unwrap().remove("group");
        }
        SimError::new(
            422,
            "Invalid",
            format!("{gk} \"{name}\" is invalid: {summary}"),
        )
        .with_details(details)
    }

    fn strip_empty_group(mut self) -> Self {
        if let Some(d) = self.details.as_mut().and_then(|d| d.as_object_mut())
            && d.get("group").and_then(|g| g.as_str()) == Some("")
        {
            d.remove("group");
        }
        self
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        if let Some(d) = &self.details {
            s["details"] = (**d).clone();
        }
        s["code"] = json!(self.code);
        s
    }
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// The kinds of field errors (`field.ErrorType` in the real server).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldErrorKind {
    /// `Invalid value: <value>: <detail>`
    Invalid(Value),
    /// `Invalid value: <raw Go-formatted value>: <detail>`
    InvalidRaw(String),
    /// `Required value`
    Required,
    /// `Unsupported value: <value>: supported values: "a", "b"`
    NotSupported(Value, Vec<String>),
    /// `Duplicate value: <value>`
    Duplicate(Value),
    /// `Forbidden: <detail>`
    Forbidden,
    /// `Too long: may not be more than N bytes` etc.
    TooLong,
    /// `Too many: N: must have at most M items`
    TooMany,
    /// `field not declared in schema` (unknown field)
    FieldNotDeclared,
    /// `Internal error`
    Internal,
}

impl FieldErrorKind {
    fn reason(&self) -> &'static str {
        match self {
            FieldErrorKind::Invalid(_) | FieldErrorKind::InvalidRaw(_) => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::NotSupported(..) => "FieldValueNotSupported",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::FieldNotDeclared => "FieldValueInvalid",
            FieldErrorKind::Internal => "InternalError",
        }
    }
}

/// One field validation error.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Field path like `spec.interval`.
    pub field: String,
    /// Type of error.
    pub kind: FieldErrorKind,
    /// Extra detail.
    pub detail: String,
}

/// Render a value the way Go's `%#v`-ish field error formatting does for JSON values.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(_) => "\"array\"".into(),
        Value::Object(_) => "\"object\"".into(),
    }
}

impl FieldError {
    /// Convenience constructor.
    pub fn new(field: impl Into<String>, kind: FieldErrorKind, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind,
            detail: detail.into(),
        }
    }

    /// The message without the field prefix (as in `details.causes[].message`).
    pub fn cause_message(&self) -> String {
        let body = match &self.kind {
            FieldErrorKind::Invalid(v) => format!("Invalid value: {}", go_value(v)),
            FieldErrorKind::InvalidRaw(v) => format!("Invalid value: {v}"),
            FieldErrorKind::Required => "Required value".to_string(),
            FieldErrorKind::NotSupported(v, allowed) => {
                let quoted: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
                format!(
                    "Unsupported value: {}: supported values: {}",
                    go_value(v),
                    quoted.join(", ")
                )
            }
            FieldErrorKind::Duplicate(v) => format!("Duplicate value: {}", go_value(v)),
            FieldErrorKind::Forbidden => "Forbidden".to_string(),
            FieldErrorKind::TooLong => "Too long".to_string(),
            FieldErrorKind::TooMany => "Too many".to_string(),
            FieldErrorKind::FieldNotDeclared => "field not declared in schema".to_string(),
            FieldErrorKind::Internal => "Internal error".to_string(),
        };
        if self.detail.is_empty() || matches!(self.kind, FieldErrorKind::NotSupported(..)) {
            body
        } else {
            format!("{body}: {}", self.detail)
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.cause_message())
        } else {
            write!(f, "{}: {}", self.field, self.cause_message())
        }
    }
}

/// Go's `%#v` of a `map[string]string` (`map[string]string{"a":"b"}`).
pub fn go_string_map(v: Option<&Value>) -> String {
    let items: Vec<String> = v
        .and_then(|m| m.as_object())
        .map(|m| {
            let mut kv: Vec<(&String, &Value)> = m.iter().collect();
            kv.sort_by(|a, b| a.0.cmp(b.0));
            kv.into_iter()
                .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if v.is_none() {
        return "map[string]string(nil)".into();
    }
    format!("map[string]string{{{}}}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_matches_apiserver_format() {
        let e = SimError::invalid(
            "oidcrefresh.dev",
            "OidcRefreshPolicy",
            "coder",
            &[FieldError::new(
                "spec.interval",
                FieldErrorKind::Invalid(json!("string")),
                "interval must be at least 30s",
            )],
        );
        assert_eq!(
            e.message,
            "OidcRefreshPolicy.oidcrefresh.dev \"coder\" is invalid: spec.interval: Invalid value: \"string\": interval must be at least 30s"
        );
        let s = e.to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert_eq!(
            s["details"]["causes"][0]["message"],
            "Invalid value: \"string\": interval must be at least 30s"
        );
    }

    #[test]
    fn not_supported_lists_values() {
        let fe = FieldError::new(
            "spec.mode",
            FieldErrorKind::NotSupported(json!("x"), vec!["a".into(), "b".into()]),
            "",
        );
        assert_eq!(
            fe.to_string(),
            "spec.mode: Unsupported value: \"x\": supported values: \"a\", \"b\""
        );
    }
}
