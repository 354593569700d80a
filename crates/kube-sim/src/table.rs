//! Server-side printing (`meta.k8s.io/v1` Table) and a small JSONPath evaluator
//! for CRD `additionalPrinterColumns`.

use serde_json::{Value, json};

use crate::resources::ResourceInfo;
use crate::server::Include;
use crate::util::age;

/// Evaluate a kubectl-style JSONPath (`.status.conditions[?(@.type=="Ready")].status`).
/// Returns all matched values.
pub fn jsonpath(obj: &Value, path: &str) -> Vec<Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut cur = vec![obj.clone()];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            rest = &r[end..];
            if key.is_empty() {
                continue;
            }
            cur = cur
                .iter()
                .filter_map(|v| {
                    if key == "*" {
                        None
                    } else {
                        v.get(key).cloned()
                    }
                })
                .collect();
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = find_close(r) else {
                return vec![];
            };
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
                let mut out = vec![];
                for v in &cur {
                    if let Some(arr) = v.as_array() {
                        for item in arr {
                            if filter_matches(item, filter) {
                                out.push(item.clone());
                            }
                        }
                    }
                }
                cur = out;
            } else if inner == "*" {
                cur = cur
                    .iter()
                    .flat_map(|v| match v {
                        Value::Array(a) => a.clone(),
                        Value::Object(o) => o.values().cloned().collect(),
                        _ => vec![],
                    })
                    .collect();
            } else if let Ok(i) = inner.parse::<i64>() {
                cur = cur
                    .iter()
                    .filter_map(|v| {
                        let a = v.as_array()?;
                        let idx = if i < 0 { a.len() as i64 + i } else { i };
                        a.get(idx as usize).cloned()
                    })
                    .collect();
            } else {
                let key = inner.trim_matches('\'').trim_matches('"');
                cur = cur.iter().filter_map(|v| v.get(key).cloned()).collect();
            }
        } else {
            return vec![];
        }
    }
    cur
}

fn find_close(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut in_str: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (c, in_str) {
            ('"' | '\'', None) => in_str = Some(c),
            (q, Some(open)) if q == open => in_str = None,
            ('[', None) => depth += 1,
            (']', None) if depth == 0 => return Some(i),
            (']', None) => depth -= 1,
            _ => {}
        }
    }
    None
}

fn filter_matches(item: &Value, filter: &str) -> bool {
    for op in ["==", "!="] {
        if let Some((l, r)) = filter.split_once(op) {
            let lv = jsonpath(item, l.trim().trim_start_matches('@'));
            let r = r.trim();
            let rv: Value = if (r.starts_with('"') && r.ends_with('"'))
                || (r.starts_with('\'') && r.ends_with('\''))
            {
                Value::String(r[1..r.len() - 1].to_string())
            } else {
                serde_json::from_str(r).unwrap_or(Value::String(r.to_string()))
            };
            let eq = lv.first() == Some(&rv);
            return if op == "==" { eq } else { !eq };
        }
    }
    !jsonpath(item, filter.trim().trim_start_matches('@')).is_empty()
}

fn cell(vals: Vec<Value>, ty: &str) -> Value {
    if vals.is_empty() {
        return Value::Null;
    }
    if ty == "date"
        && let Some(s) = vals[0].as_str()
    {
        return json!(s);
    }
    if vals.len() == 1 {
        return match &vals[0] {
            Value::Array(_) | Value::Object(_) => json!(vals[0].to_string()),
            v => v.clone(),
        };
    }
    json!(
        vals.iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                o => o.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn coldef(name: &str, ty: &str, format: &str, desc: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": desc, "priority": priority})
}

/// Build a Table for objects (already converted to the request's version).
pub fn table(
    ri: &ResourceInfo,
    objs: &[Value],
    include: Include,
    list_meta: Option<Value>,
) -> Value {
    let name_col = coldef(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        0,
    );
    let age_col = coldef(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
    );
    let (columns, rows): (Vec<Value>, Vec<Vec<Value>>) = if ri.custom {
        let mut cols = vec![name_col];
        let pcs = &ri.printer_columns;
        for pc in pcs {
            cols.push(coldef(
                pc["name"].as_str().unwrap_or(""),
                pc["type"].as_str().unwrap_or("string"),
                pc["format"].as_str().unwrap_or(""),
                pc["description"].as_str().unwrap_or(""),
                pc["priority"].as_i64().unwrap_or(0),
            ));
        }
        if pcs.is_empty() {
            cols.push(coldef("Created At", "date", "", "", 0));
        }
        let rows = objs
            .iter()
            .map(|o| {
                let mut r = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
                for pc in pcs {
                    let ty = pc["type"].as_str().unwrap_or("string");
                    let path = pc["jsonPath"].as_str().unwrap_or("");
                    let vals = jsonpath(o, path);
                    if ty == "date" {
                        r.push(
                            match vals
                                .first()
                                .and_then(|v| v.as_str())
                                .and_then(crate::util::parse_time)
                            {
                                Some(t) => json!(crate::util::human_duration(
                                    jiff::Timestamp::now().as_second() - t.as_second()
                                )),
                                None => Value::Null,
                            },
                        );
                    } else {
                        r.push(cell(vals, ty));
                    }
                }
                if pcs.is_empty() {
                    r.push(
                        o.pointer("/metadata/creationTimestamp")
                            .cloned()
                            .unwrap_or(Value::Null),
                    );
                }
                r
            })
            .collect();
        (cols, rows)
    } else if ri.group == "apps" && ri.resource == "deployments" {
        let cols = vec![
            name_col,
            coldef(
                "Ready",
                "string",
                "",
                "Number of the pod with ready state",
                0,
            ),
            coldef(
                "Up-to-date",
                "string",
                "",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                0,
            ),
            coldef(
                "Available",
                "string",
                "",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                0,
            ),
            age_col,
            coldef(
                "Containers",
                "string",
                "",
                "Names of each container in the template.",
                1,
            ),
            coldef(
                "Images",
                "string",
                "",
                "Images referenced by each container in the template.",
                1,
            ),
            coldef(
                "Selector",
                "string",
                "",
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
                1,
            ),
        ];
        let rows = objs
            .iter()
            .map(|o| {
                let n = |p: &str| o.pointer(p).and_then(|v| v.as_i64()).unwrap_or(0);
                let containers = o
                    .pointer("/spec/template/spec/containers")
                    .and_then(|c| c.as_array())
                    .cloned()
                    .unwrap_or_default();
                let names: Vec<&str> = containers
                    .iter()
                    .filter_map(|c| c["name"].as_str())
                    .collect();
                let images: Vec<&str> = containers
                    .iter()
                    .filter_map(|c| c["image"].as_str())
                    .collect();
                let sel = o
                    .pointer("/spec/selector/matchLabels")
                    .and_then(|m| m.as_object())
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                vec![
                    o.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
                    json!(format!(
                        "{}/{}",
                        n("/status/readyReplicas"),
                        o.pointer("/spec/replicas")
                            .and_then(|v| v.as_i64())
                            .unwrap_or(1)
                    )),
                    json!(n("/status/updatedReplicas")),
                    json!(n("/status/availableReplicas")),
                    json!(age(o)),
                    json!(names.join(",")),
                    json!(images.join(",")),
                    json!(sel),
                ]
            })
            .collect();
        (cols, rows)
    } else if ri.group == "networking.k8s.io" && ri.resource == "networkpolicies" {
        let cols = vec![
            name_col,
            coldef(
                "Pod-Selector",
                "string",
                "",
                "Label selector for pods. Selects the pods to which this NetworkPolicy object applies.",
                0,
            ),
            age_col,
        ];
        let rows = named_rows(objs, |o| {
            vec![json!(format_label_selector(&o["spec"]["podSelector"]))]
        });
        (cols, rows)
    } else if ri.resource == "customresourcedefinitions" {
        let cols = vec![name_col, coldef("Created At", "date", "", "", 0)];
        let rows = objs
            .iter()
            .map(|o| {
                vec![
                    o.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
                    o.pointer("/metadata/creationTimestamp")
                        .cloned()
                        .unwrap_or(Value::Null),
                ]
            })
            .collect();
        (cols, rows)
    } else if ri.resource == "namespaces" {
        let cols = vec![
            name_col,
            coldef("Status", "string", "", "The status of the namespace", 0),
            age_col,
        ];
        let rows = named_rows(objs, |o| {
            vec![o.pointer("/status/phase").cloned().unwrap_or(json!(""))]
        });
        (cols, rows)
    } else if ri.resource == "secrets" && ri.group.is_empty() {
        let cols = vec![
            name_col,
            coldef("Type", "string", "", "The type of the secret", 0),
            coldef(
                "Data",
                "string",
                "",
                "The number of entries in the secret",
                0,
            ),
            age_col,
        ];
        let rows = named_rows(objs, |o| {
            vec![
                o.get("type").cloned().unwrap_or(json!("Opaque")),
                json!(entries(o, "data")),
            ]
        });
        (cols, rows)
    } else if ri.resource == "configmaps" {
        let cols = vec![
            name_col,
            coldef(
                "Data",
                "string",
                "",
                "The number of entries in the ConfigMap",
                0,
            ),
            age_col,
        ];
        let rows = named_rows(objs, |o| {
            vec![json!(entries(o, "data") + entries(o, "binaryData"))]
        });
        (cols, rows)
    } else if ri.resource == "events" {
        let cols = vec![
            coldef(
                "Last Seen",
                "string",
                "",
                "Time when this Event was last seen",
                0,
            ),
            coldef(
                "Type",
                "string",
                "",
                "Type of this event (Normal, Warning)",
                0,
            ),
            coldef(
                "Reason",
                "string",
                "",
                "Reason is why the action was taken.",
                0,
            ),
            coldef(
                "Object",
                "string",
                "",
                "The object that this event is about.",
                0,
            ),
            coldef(
                "Message",
                "string",
                "",
                "A human-readable description of the status of this operation.",
                0,
            ),
        ];
        let rows = objs
            .iter()
            .map(|o| {
                let core = if ri.group.is_empty() {
                    o.clone()
                } else {
                    crate::events::events_to_core(o)
                };
                let io = &core["involvedObject"];
                let last = core["lastTimestamp"]
                    .as_str()
                    .or(core["eventTime"].as_str())
                    .and_then(crate::util::parse_time);
                vec![
                    json!(
                        last.map(|t| crate::util::human_duration(
                            jiff::Timestamp::now().as_second() - t.as_second()
                        ))
                        .unwrap_or_else(|| "<unknown>".into())
                    ),
                    core.get("type").cloned().unwrap_or(json!("")),
                    core.get("reason").cloned().unwrap_or(json!("")),
                    json!(format!(
                        "{}/{}",
                        io["kind"].as_str().unwrap_or("").to_lowercase(),
                        io["name"].as_str().unwrap_or("")
                    )),
                    core.get("message").cloned().unwrap_or(json!("")),
                ]
            })
            .collect();
        (cols, rows)
    } else {
        let cols = vec![name_col, age_col];
        let rows = named_rows(objs, |_| vec![]);
        (cols, rows)
    };
    let rows: Vec<Value> = objs
        .iter()
        .zip(rows)
        .map(|(o, cells)| {
            let mut r = json!({"cells": cells});
            match include {
                Include::None => {}
                Include::Metadata => {
                    r["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))});
                }
                Include::Object => r["object"] = o.clone(),
            }
            r
        })
        .collect();
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta.unwrap_or_else(|| json!({})), "columnDefinitions": columns, "rows": rows});
    if let Some(rv) = objs
        .first()
        .and_then(|o| o.pointer("/metadata/resourceVersion"))
        .cloned()
        && t["metadata"].get("resourceVersion").is_none()
        && objs.len() == 1
    {
        t["metadata"]["resourceVersion"] = rv;
    }
    t
}

/// Rows of the name, the `middle` cells and the age.
fn named_rows(objs: &[Value], middle: impl Fn(&Value) -> Vec<Value>) -> Vec<Vec<Value>> {
    objs.iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
            cells.extend(middle(o));
            cells.push(json!(age(o)));
            cells
        })
        .collect()
}

/// The number of entries of the map `field` (0 when absent).
fn entries(o: &Value, field: &str) -> usize {
    o.get(field)
        .and_then(|d| d.as_object())
        .map_or(0, |d| d.len())
}

/// `metav1.FormatLabelSelector`: requirements sorted by key, `<none>` when empty.
fn format_label_selector(selector: &Value) -> String {
    let mut reqs: Vec<(String, String)> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))))
        .collect();
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let req = match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        };
        reqs.push((key.to_string(), req));
    }
    if reqs.is_empty() {
        return "<none>".into();
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_filter() {
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}]}});
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(
            jsonpath(&o, ".status.conditions[1].type"),
            vec![json!("Other")]
        );
        assert_eq!(jsonpath(&o, ".status.missing"), Vec::<Value>::new());
    }

    #[test]
    fn label_selectors_print_like_kubectl() {
        assert_eq!(format_label_selector(&json!({})), "<none>");
        assert_eq!(
            format_label_selector(&json!({
                "matchLabels": {"tier": "web", "app": "x"},
                "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["a", "b"]},
                    {"key": "legacy", "operator": "DoesNotExist"}
                ]
            })),
            "app=x,env in (a,b),!legacy,tier=web"
        );
    }
}
