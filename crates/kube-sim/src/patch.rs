//! Strategic merge patch for built-in types, driven by the
//! `x-kubernetes-patch-merge-key` / `x-kubernetes-patch-strategy` extensions of
//! the built-in schemas. Supports `$patch: replace|delete|merge` on maps and
//! list items, `$setElementOrder/<list>`, and merging of primitive lists with
//! strategy `merge`. `$retainKeys` and `$deleteFromPrimitiveList` are ignored.

use serde_json::{Map, Value};

use crate::errors::SimError;
use crate::schema::{child_schema, items_schema};

/// Apply a strategic merge patch.
pub fn strategic_merge(schema: &Value, original: &Value, patch: &Value) -> Result<Value, SimError> {
    if !patch.is_object() {
        return Err(SimError::bad_request(
            "strategic merge patch must be a JSON object",
        ));
    }
    Ok(merge_value(Some(schema), Some(original), patch))
}

fn merge_value(schema: Option<&Value>, orig: Option<&Value>, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            match p.get("$patch").and_then(|d| d.as_str()) {
                Some("replace") => {
                    let mut out = p.clone();
                    out.remove("$patch");
                    return Value::Object(strip(out));
                }
                Some("delete") => return Value::Null,
                _ => {}
            }
            let mut out: Map<String, Value> = orig
                .and_then(|o| o.as_object())
                .cloned()
                .unwrap_or_default();
            let mut orders: Vec<(String, Vec<Value>)> = vec![];
            for (k, pv) in p {
                if let Some(field) = k.strip_prefix("$setElementOrder/") {
                    if let Some(a) = pv.as_array() {
                        orders.push((field.to_string(), a.clone()));
                    }
                    continue;
                }
                if k.starts_with('$') {
                    continue;
                }
                if pv.is_null() {
                    out.remove(k);
                    continue;
                }
                let cs = child_schema(schema, k);
                let merged = match pv {
                    Value::Object(_) => {
                        let is_atomic = cs
                            .and_then(|s| s.get("x-kubernetes-map-type"))
                            .and_then(|t| t.as_str())
                            == Some("atomic");
                        if is_atomic && pv.get("$patch").is_none() {
                            pv.clone()
                        } else {
                            merge_value(cs, out.get(k), pv)
                        }
                    }
                    Value::Array(pa) => merge_list(cs, out.get(k), pa),
                    _ => pv.clone(),
                };
                if merged.is_null() && pv.get("$patch").is_some() {
                    out.remove(k);
                } else {
                    out.insert(k.clone(), merged);
                }
            }
            for (field, order) in orders {
                let mk = child_schema(schema, &field)
                    .and_then(|s| s.get("x-kubernetes-patch-merge-key"))
                    .and_then(|m| m.as_str())
                    .map(String::from);
                if let Some(Value::Array(items)) = out.get_mut(&field) {
                    reorder(items, &order, mk.as_deref());
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn strip(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    m
}

fn reorder(items: &mut Vec<Value>, order: &[Value], mk: Option<&str>) {
    let key_of = |v: &Value| -> Value {
        match mk {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let mut ordered = vec![];
    let mut rest = std::mem::take(items);
    for o in order {
        let ok = key_of(o);
        if let Some(pos) = rest.iter().position(|i| key_of(i) == ok) {
            ordered.push(rest.remove(pos));
        }
    }
    ordered.extend(rest);
    *items = ordered;
}

fn merge_list(schema: Option<&Value>, orig: Option<&Value>, patch: &[Value]) -> Value {
    let strategy = schema
        .and_then(|s| s.get("x-kubernetes-patch-strategy"))
        .and_then(|s| s.as_str())
        .unwrap_or("");
    let mk = schema
        .and_then(|s| s.get("x-kubernetes-patch-merge-key"))
        .and_then(|m| m.as_str());
    if !strategy.contains("merge") {
        return Value::Array(patch.iter().map(strip_value).collect());
    }
    if patch.iter().any(|i| {
        i.get("$patch").and_then(|d| d.as_str()) == Some("replace")
            && i.as_object().is_some_and(|o| o.len() == 1)
    }) {
        return Value::Array(
            patch
                .iter()
                .filter(|i| {
                    !(i.get("$patch").is_some() && i.as_object().is_some_and(|o| o.len() == 1))
                })
                .map(strip_value)
                .collect(),
        );
    }
    let mut out: Vec<Value> = orig.and_then(|o| o.as_array()).cloned().unwrap_or_default();
    let is = items_schema(schema);
    match mk {
        Some(mk) => {
            for item in patch {
                let key = item.get(mk).cloned();
                let pos = key
                    .as_ref()
                    .and_then(|k| out.iter().position(|o| o.get(mk) == Some(k)));
                if item.get("$patch").and_then(|d| d.as_str()) == Some("delete") {
                    if let Some(p) = pos {
                        out.remove(p);
                    }
                    continue;
                }
                match pos {
                    Some(p) => {
                        let merged = merge_value(is, Some(&out[p].clone()), item);
                        out[p] = merged;
                    }
                    None => out.push(strip_value(item)),
                }
            }
        }
        None => {
            for item in patch {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
        }
    }
    Value::Array(out)
}

fn strip_value(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_value(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_value).collect()),
        o => o.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        crate::builtin_schemas::schema_for("apps", "Deployment")
    }

    #[test]
    fn merges_containers_and_env_by_name() {
        let orig = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "env": [{"name": "Y", "value": "2"}, {"name": "X", "$patch": "delete"}]}]}}}});
        let out = strategic_merge(&schema(), &orig, &p).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0],
            json!({"name": "a", "image": "a:1", "env": [{"name": "Y", "value": "2"}]})
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][1]["image"],
            "b:1"
        );
    }

    #[test]
    fn set_element_order_and_replace() {
        let orig =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "b", "image": "x"}]}}}});
        let out = strategic_merge(&schema(), &orig, &p).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b", "image": "x"}, {"name": "a"}])
        );
        let p2 = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "c"}]}}}});
        let out2 = strategic_merge(&schema(), &orig, &p2).unwrap();
        assert_eq!(
            out2["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c"}])
        );
    }
}
