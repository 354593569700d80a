//! Conversion between core/v1 Events (the storage form) and events.k8s.io/v1 Events.

use serde_json::{Map, Value, json};

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
