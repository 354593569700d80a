//! Conversion between core/v1 Events (the storage form) and events.k8s.io/v1 Events.

use serde_json::{Map, Value, json};

use crate::errors::{FieldError, FieldErrorKind};

fn mv(from: &Map<String, Value>, to: &mut Map<String, Value>, a: &str, b: &str) {
    if let Some(v) = from.get(a)
        && !v.is_null()
    {
        to.insert(b.to_string(), v.clone());
    }
}

/// core/v1 Event -> events.k8s.io/v1 Event.
pub fn core_to_events(core: &Value) -> Value {
    let Some(c) = core.as_object() else {
        return core.clone();
    };
    let mut e = Map::new();
    e.insert("kind".into(), json!("Event"));
    e.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    for (a, b) in [
        ("metadata", "metadata"),
        ("involvedObject", "regarding"),
        ("related", "related"),
        ("message", "note"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
        ("source", "deprecatedSource"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("count", "deprecatedCount"),
    ] {
        mv(c, &mut e, a, b);
    }
    if e.get("eventTime").is_none() {
        e.insert("eventTime".into(), Value::Null);
    }
    Value::Object(e)
}

/// events.k8s.io/v1 Event -> core/v1 Event.
pub fn events_to_core(ev: &Value) -> Value {
    let Some(e) = ev.as_object() else {
        return ev.clone();
    };
    let mut c = Map::new();
    c.insert("kind".into(), json!("Event"));
    c.insert("apiVersion".into(), json!("v1"));
    for (a, b) in [
        ("metadata", "metadata"),
        ("regarding", "involvedObject"),
        ("related", "related"),
        ("note", "message"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
    ] {
        mv(e, &mut c, a, b);
    }
    if !c.contains_key("involvedObject") {
        c.insert("involvedObject".into(), json!({}));
    }
    if !c.contains_key("source") {
        c.insert("source".into(), json!({}));
    }
    Value::Object(c)
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("")
}

fn unset(v: &Value, k: &str) -> bool {
    match v.get(k) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::Object(o)) => o.values().all(|x| x.is_null() || x == ""),
        _ => false,
    }
}

/// `validation.IsQualifiedName`.
fn qualified_name_errors(v: &str) -> Vec<String> {
    let name_re = regex::Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").unwrap();
    let mut errs = vec![];
    let parts: Vec<&str> = v.split('/').collect();
    let name = match parts.as_slice() {
        [n] => *n,
        [prefix, n] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else if let Some(m) = crate::util::check_dns_subdomain(prefix) {
                errs.push(format!("prefix part {m}"));
            }
            n
        }
        _ => {
            return vec!["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into()];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".into());
    }
    if !name.is_empty() && !name_re.is_match(name) {
        errs.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into());
    }
    errs
}

/// `ValidateEventCreate`/`ValidateEventUpdate` of
/// `pkg/apis/core/validation/events.go` on the core (storage) form: legacy
/// validation always, strict validation for requests through
/// `events.k8s.io/v1` (`strict`). Field paths are the internal type's.
pub fn validate(core: &Value, old_core: Option<&Value>, strict: bool) -> Vec<FieldError> {
    let mut errs = vec![];
    let ns = core
        .pointer("/metadata/namespace")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let io_ns = core
        .pointer("/involvedObject/namespace")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let io_ns_err = || {
        FieldError::new(
            "involvedObject.namespace",
            FieldErrorKind::Invalid(json!(io_ns)),
            "does not match event.namespace",
        )
    };
    let has_event_time = !unset(core, "eventTime");
    if !has_event_time {
        if io_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(io_ns_err());
            }
        } else if ns != io_ns {
            errs.push(io_ns_err());
        }
    } else {
        if io_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(io_ns_err());
        }
        let rc = str_of(core, "reportingComponent");
        if rc.is_empty() {
            errs.push(FieldError::new(
                "reportingController",
                FieldErrorKind::Required,
                "",
            ));
        }
        for m in qualified_name_errors(rc) {
            errs.push(FieldError::new(
                "reportingController",
                FieldErrorKind::Invalid(json!(rc)),
                m,
            ));
        }
        for (key, path, limit) in [
            ("reportingInstance", "reportingInstance", 128usize),
            ("action", "action", 128),
            ("reason", "reason", 128),
            ("message", "message", 1024),
        ] {
            let v = str_of(core, key);
            if v.is_empty() && key != "message" {
                errs.push(FieldError::new(path, FieldErrorKind::Required, ""));
            }
            if v.len() > limit {
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::Invalid(json!("")),
                    format!("can have at most {limit} characters"),
                ));
            }
        }
    }
    if let Some(m) = crate::util::check_dns_subdomain(ns) {
        errs.push(FieldError::new(
            "namespace",
            FieldErrorKind::Invalid(json!(ns)),
            m,
        ));
    }
    if !strict {
        return errs;
    }
    let series_errs = |errs: &mut Vec<FieldError>| {
        if let Some(series) = core.get("series").filter(|s| s.is_object()) {
            if series["count"].as_i64().unwrap_or(0) < 2 {
                errs.push(FieldError::new(
                    "series.count",
                    FieldErrorKind::Invalid(json!("")),
                    "should be at least 2",
                ));
            }
            if unset(series, "lastObservedTime") {
                errs.push(FieldError::new(
                    "series.lastObservedTime",
                    FieldErrorKind::Required,
                    "",
                ));
            }
        }
    };
    match old_core {
        None => {
            let name = core
                .pointer("/metadata/name")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            if let Some(m) = crate::util::check_dns_subdomain(name) {
                errs.push(FieldError::new(
                    "metadata.name",
                    FieldErrorKind::Invalid(json!(name)),
                    m,
                ));
            }
            series_errs(&mut errs);
            if !has_event_time {
                errs.push(FieldError::new("eventTime", FieldErrorKind::Required, ""));
            }
            let ty = str_of(core, "type");
            if ty != "Normal" && ty != "Warning" {
                errs.push(FieldError::new(
                    "type",
                    FieldErrorKind::Invalid(json!("")),
                    format!("has invalid value: {ty}"),
                ));
            }
            for (k, path) in [
                ("firstTimestamp", "firstTimestamp"),
                ("lastTimestamp", "lastTimestamp"),
                ("count", "count"),
                ("source", "source"),
            ] {
                if !unset(core, k) {
                    errs.push(FieldError::new(
                        path,
                        FieldErrorKind::Invalid(json!("")),
                        "needs to be unset",
                    ));
                }
            }
        }
        Some(old) => {
            if core.get("series") != old.get("series") {
                series_errs(&mut errs);
            }
            for (k, path) in [
                ("involvedObject", "involvedObject"),
                ("reason", "reason"),
                ("message", "message"),
                ("source", "source"),
                ("firstTimestamp", "firstTimestamp"),
                ("lastTimestamp", "lastTimestamp"),
                ("count", "count"),
                ("type", "type"),
                ("eventTime", "eventTime"),
                ("action", "action"),
                ("related", "related"),
                ("reportingComponent", "reportingController"),
                ("reportingInstance", "reportingInstance"),
            ] {
                let (a, b) = (
                    core.get(k).filter(|v| !v.is_null()),
                    old.get(k).filter(|v| !v.is_null()),
                );
                if a != b {
                    errs.push(FieldError::new(
                        path,
                        FieldErrorKind::Invalid(a.cloned().unwrap_or(json!(""))),
                        "field is immutable",
                    ));
                }
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let ev = json!({"kind": "Event", "apiVersion": "events.k8s.io/v1", "metadata": {"name": "x"},
            "regarding": {"kind": "Deployment", "name": "coder"}, "note": "hello", "reason": "Synced",
            "type": "Normal", "reportingController": "op", "reportingInstance": "op-1", "action": "Reconcile",
            "eventTime": "2024-01-01T00:00:00.000000Z"});
        let core = events_to_core(&ev);
        assert_eq!(core["involvedObject"]["name"], "coder");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["reportingComponent"], "op");
        let back = core_to_events(&core);
        assert_eq!(back["note"], "hello");
        assert_eq!(back["regarding"]["kind"], "Deployment");
        assert_eq!(back["reportingController"], "op");
    }
}
