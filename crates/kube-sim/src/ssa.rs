//! Server-side apply: structured-merge-diff style field sets (`fieldsV1`),
//! managedFields bookkeeping for Update operations, and Apply (merge, prune,
//! conflict detection with the real server's messages, force).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::errors::SimError;
use crate::schema::{NodeKind, child_schema, items_schema, kind_of};

/// A set of field paths, as a prefix tree. Path elements use the fieldsV1
/// spelling: `f:name`, `k:{"name":"x"}`, `v:"x"`, `i:0`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSet {
    members: BTreeSet<String>,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// Empty set.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(|c| c.is_empty())
    }

    /// Parse `fieldsV1`.
    pub fn from_json(v: &Value) -> FieldSet {
        let mut s = FieldSet::default();
        if let Some(o) = v.as_object() {
            for (k, child) in o {
                if k == "." {
                    continue;
                }
                let is_member = child
                    .as_object()
                    .is_none_or(|c| c.is_empty() || c.contains_key("."));
                if is_member {
                    s.members.insert(k.clone());
                }
                let sub = FieldSet::from_json(child);
                if !sub.is_empty() {
                    s.children.insert(k.clone(), sub);
                }
            }
        }
        s
    }

    /// Serialize to `fieldsV1`.
    pub fn to_json(&self) -> Value {
        let mut keys: BTreeSet<&String> = self.members.iter().collect();
        keys.extend(
            self.children
                .iter()
                .filter(|(_, c)| !c.is_empty())
                .map(|(k, _)| k),
        );
        let mut m = Map::new();
        for k in keys {
            let mut inner = match self.children.get(k) {
                Some(c) if !c.is_empty() => c.to_json(),
                _ => json!({}),
            };
            if self.members.contains(k) && self.children.get(k).is_some_and(|c| !c.is_empty()) {
                let mut o = Map::new();
                o.insert(".".into(), json!({}));
                for (kk, vv) in inner.as_object().unwrap() {
                    o.insert(kk.clone(), vv.clone());
                }
                inner = Value::Object(o);
            }
            m.insert(k.clone(), inner);
        }
        Value::Object(m)
    }

    /// Union.
    pub fn union(&self, o: &FieldSet) -> FieldSet {
        let mut r = self.clone();
        r.members.extend(o.members.iter().cloned());
        for (k, c) in &o.children {
            let merged = match r.children.get(k) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            r.children.insert(k.clone(), merged);
        }
        r
    }

    /// Difference.
    pub fn difference(&self, o: &FieldSet) -> FieldSet {
        let mut r = FieldSet {
            members: self.members.difference(&o.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            let d = match o.children.get(k) {
                Some(oc) => c.difference(oc),
                None => c.clone(),
            };
            if !d.is_empty() {
                r.children.insert(k.clone(), d);
            }
        }
        r
    }

    /// Intersection.
    pub fn intersection(&self, o: &FieldSet) -> FieldSet {
        let mut r = FieldSet {
            members: self.members.intersection(&o.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            if let Some(oc) = o.children.get(k) {
                let i = c.intersection(oc);
                if !i.is_empty() {
                    r.children.insert(k.clone(), i);
                }
            }
        }
        r
    }

    /// All member paths.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = vec![];
        self.collect(&mut vec![], &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut keys: BTreeSet<&String> = self.members.iter().collect();
        keys.extend(self.children.keys());
        for k in keys {
            prefix.push(k.clone());
            if self.members.contains(k) {
                out.push(prefix.clone());
            }
            if let Some(c) = self.children.get(k) {
                c.collect(prefix, out);
            }
            prefix.pop();
        }
    }

    /// Whether the path has children in this set (it is not a leaf).
    fn has_children(&self, path: &[String]) -> bool {
        let mut cur = self;
        for p in path {
            match cur.children.get(p) {
                Some(c) => cur = c,
                None => return false,
            }
        }
        !cur.is_empty()
    }

    fn insert(&mut self, path: &[String]) {
        if path.len() == 1 {
            self.members.insert(path[0].clone());
        } else if let Some((first, rest)) = path.split_first() {
            self.children.entry(first.clone()).or_default().insert(rest);
        }
    }
}

/// Render a path like the real server (`.spec.containers[name="x"].image`).
pub fn path_string(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if let Some(f) = p.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = p.strip_prefix("k:") {
            let v: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            let parts: Vec<String> = v
                .as_object()
                .map(|o| o.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = p.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = p.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

fn item_key(keys: &[String], item: &Value, item_schema: Option<&Value>) -> Option<String> {
    let mut m = BTreeMap::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        } else if let Some(d) = child_schema(item_schema, k).and_then(|s| s.get("default")) {
            m.insert(k.clone(), d.clone());
        }
    }
    if m.is_empty() {
        return None;
    }
    let mut o = Map::new();
    for (k, v) in m {
        o.insert(k, v);
    }
    Some(format!(
        "k:{}",
        serde_json::to_string(&Value::Object(o)).unwrap()
    ))
}

/// Field set of a value under `schema` (relative to the value).
fn value_set(schema: Option<&Value>, v: &Value) -> FieldSet {
    let mut s = FieldSet::default();
    match kind_of(schema, v) {
        NodeKind::Struct | NodeKind::Map => {
            if let Some(o) = v.as_object() {
                for (k, cv) in o {
                    let cs = child_schema(schema, k);
                    let key = format!("f:{k}");
                    add_child(&mut s, key, cs, cv);
                }
            }
        }
        NodeKind::ListMap(keys) => {
            let is = items_schema(schema);
            for item in v.as_array().into_iter().flatten() {
                if let Some(k) = item_key(&keys, item, is) {
                    s.members.insert(k.clone());
                    let sub = value_set(is, item);
                    if !sub.is_empty() {
                        s.children.insert(k, sub);
                    }
                }
            }
        }
        NodeKind::ListSet => {
            for item in v.as_array().into_iter().flatten() {
                s.members
                    .insert(format!("v:{}", serde_json::to_string(item).unwrap()));
            }
        }
        _ => {}
    }
    s
}

fn add_child(s: &mut FieldSet, key: String, cs: Option<&Value>, cv: &Value) {
    match kind_of(cs, cv) {
        NodeKind::Struct => {
            let sub = value_set(cs, cv);
            if sub.is_empty() {
                s.members.insert(key);
            } else {
                s.children.insert(key, sub);
            }
        }
        NodeKind::Map => {
            let sub = value_set(cs, cv);
            s.members.insert(key.clone());
            if !sub.is_empty() {
                s.children.insert(key, sub);
            }
        }
        NodeKind::ListMap(_) | NodeKind::ListSet => {
            let sub = value_set(cs, cv);
            if sub.is_empty() {
                s.members.insert(key);
            } else {
                s.children.insert(key, sub);
            }
        }
        _ => {
            s.members.insert(key);
        }
    }
}

/// The managed field set of a whole object: apiVersion/kind and most of
/// metadata are not tracked; status is tracked only through `/status` when
/// the status subresource is enabled.
pub fn object_set(
    schema: &Value,
    obj: &Value,
    subresource: Option<&str>,
    has_status: bool,
) -> FieldSet {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(|x| x.as_object_mut()) {
            meta.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels" | "annotations" | "finalizers" | "ownerReferences"
                )
            });
            if meta.is_empty() {
                m.remove("metadata");
            }
        }
        if has_status {
            if subresource == Some("status") {
                m.retain(|k, _| k == "status");
            } else {
                m.remove("status");
            }
        }
    }
    value_set(Some(schema), &o)
}

/// Look up the value at a path.
fn value_at<'a>(
    schema: Option<&'a Value>,
    v: &'a Value,
    path: &[String],
) -> Option<(&'a Value, Option<&'a Value>)> {
    let Some((first, rest)) = path.split_first() else {
        return Some((v, schema));
    };
    if let Some(f) = first.strip_prefix("f:") {
        let cv = v.get(f)?;
        return value_at(child_schema(schema, f), cv, rest);
    }
    if first.starts_with("k:") {
        let keys = match kind_of(schema, v) {
            NodeKind::ListMap(k) => k,
            _ => return None,
        };
        let is = items_schema(schema);
        let item = v
            .as_array()?
            .iter()
            .find(|i| item_key(&keys, i, is).as_deref() == Some(first.as_str()))?;
        return value_at(is, item, rest);
    }
    if let Some(val) = first.strip_prefix("v:") {
        let target: Value = serde_json::from_str(val).ok()?;
        let item = v.as_array()?.iter().find(|i| **i == target)?;
        return Some((item, None));
    }
    None
}

/// added, modified, removed.
fn compare(
    schema: &Value,
    old: &Value,
    new: &Value,
    subresource: Option<&str>,
    has_status: bool,
) -> (FieldSet, FieldSet, FieldSet) {
    let so = object_set(schema, old, subresource, has_status);
    let sn = object_set(schema, new, subresource, has_status);
    let added = sn.difference(&so);
    let removed = so.difference(&sn);
    let both = sn.intersection(&so);
    let mut modified = FieldSet::default();
    for p in both.paths() {
        if both.has_children(&p) || sn.has_children(&p) {
            continue;
        }
        let a = value_at(Some(schema), old, &p).map(|x| x.0);
        let b = value_at(Some(schema), new, &p).map(|x| x.0);
        if a != b {
            modified.insert(&p);
        }
    }
    (added, modified, removed)
}

#[derive(Debug, Clone)]
struct Entry {
    raw: Value,
    set: FieldSet,
}

impl Entry {
    fn manager(&self) -> &str {
        self.raw["manager"].as_str().unwrap_or("")
    }
    fn is(&self, manager: &str, op: &str, sub: Option<&str>) -> bool {
        self.manager() == manager
            && self.raw["operation"].as_str() == Some(op)
            && self.raw["subresource"].as_str() == sub
    }
}

fn entries(obj: Option<&Value>) -> Vec<Entry> {
    obj.and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(|m| m.as_array())
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    raw: e.clone(),
                    set: FieldSet::from_json(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn render(entries: Vec<Entry>) -> Value {
    Value::Array(
        entries
            .into_iter()
            .filter(|e| !e.set.is_empty())
            .map(|mut e| {
                e.raw["fieldsType"] = json!("FieldsV1");
                e.raw["fieldsV1"] = e.set.to_json();
                let mut o = Map::new();
                for k in [
                    "manager",
                    "operation",
                    "apiVersion",
                    "time",
                    "fieldsType",
                    "fieldsV1",
                    "subresource",
                ] {
                    if let Some(v) = e.raw.get(k) {
                        o.insert(k.into(), v.clone());
                    }
                }
                Value::Object(o)
            })
            .collect(),
    )
}

fn new_entry(manager: &str, op: &str, api_version: &str, time: &str, sub: Option<&str>) -> Entry {
    let mut raw =
        json!({"manager": manager, "operation": op, "apiVersion": api_version, "time": time});
    if let Some(s) = sub {
        raw["subresource"] = json!(s);
    }
    Entry {
        raw,
        set: FieldSet::default(),
    }
}

/// `isResetManagedFields`: a non-nil empty list or one empty entry.
pub fn is_reset_managed_fields(mf: &[Value]) -> bool {
    mf.is_empty() || (mf.len() == 1 && mf[0].as_object().is_some_and(|o| o.is_empty()))
}

/// Whether client-written managedFields decode (`DecodeManagedFields`):
/// every entry an object with `fieldsType: FieldsV1`, an `Apply`/`Update`
/// operation and a `fieldsV1` object.
pub fn decodable_managed_fields(mf: &[Value]) -> bool {
    !mf.is_empty()
        && mf.iter().all(|e| {
            e["fieldsType"] == "FieldsV1"
                && matches!(e["operation"].as_str(), Some("Apply" | "Update"))
                && e["fieldsV1"].is_object()
        })
}

/// Record an Update (create, PUT, non-apply PATCH) by `manager` into `new`'s managedFields.
#[allow(clippy::too_many_arguments)]
pub fn record_update(
    schema: &Value,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
    has_status: bool,
    time: &str,
) {
    let empty = json!({});
    let old_v = old.unwrap_or(&empty);
    let (added, modified, removed) = compare(schema, old_v, new, subresource, has_status);
    let mut es = entries(Some(new));
    let touched = added.union(&modified);
    let changed = !touched.is_empty() || !removed.is_empty();
    for e in es.iter_mut() {
        if !e.is(manager, "Update", subresource) {
            e.set = e.set.difference(&touched).difference(&removed);
        }
    }
    let idx = es.iter().position(|e| e.is(manager, "Update", subresource));
    let idx = match idx {
        Some(i) => i,
        None => {
            es.push(new_entry(manager, "Update", api_version, time, subresource));
            es.len() - 1
        }
    };
    es[idx].set = es[idx].set.difference(&removed).union(&touched);
    if changed {
        es[idx].raw["time"] = json!(time);
        es[idx].raw["apiVersion"] = json!(api_version);
    }
    let mf = render(es);
    if mf.as_array().is_some_and(|a| a.is_empty()) {
        new["metadata"]
            .as_object_mut()
            .map(|m| m.remove("managedFields"));
    } else {
        new["metadata"]["managedFields"] = mf;
    }
}

/// Merge an applied configuration into a live value (structured merge).
pub fn merge(schema: Option<&Value>, live: Option<&Value>, config: &Value) -> Value {
    let Some(live) = live else {
        return config.clone();
    };
    match kind_of(schema, config) {
        NodeKind::Struct | NodeKind::Map if live.is_object() => {
            let mut out = live.as_object().cloned().unwrap_or_default();
            for (k, cv) in config.as_object().unwrap() {
                let merged = merge(child_schema(schema, k), live.get(k), cv);
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        NodeKind::ListMap(keys) if live.is_array() => {
            let is = items_schema(schema);
            let mut out: Vec<Value> = live.as_array().cloned().unwrap_or_default();
            for item in config.as_array().unwrap() {
                let key = item_key(&keys, item, is);
                match out
                    .iter()
                    .position(|l| key.is_some() && item_key(&keys, l, is) == key)
                {
                    Some(i) => out[i] = merge(is, Some(&out[i].clone()), item),
                    None => out.push(item.clone()),
                }
            }
            Value::Array(out)
        }
        NodeKind::ListSet if live.is_array() => {
            let mut out: Vec<Value> = live.as_array().cloned().unwrap_or_default();
            for item in config.as_array().unwrap() {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Value::Array(out)
        }
        _ => config.clone(),
    }
}

/// Remove the value at `path` from `v`.
fn remove_path(schema: Option<&Value>, v: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if let Some(f) = first.strip_prefix("f:") {
        if rest.is_empty() {
            if let Some(o) = v.as_object_mut() {
                o.remove(f);
            }
        } else if let Some(cv) = v.get_mut(f) {
            remove_path(child_schema(schema, f), cv, rest);
        }
    } else if first.starts_with("k:") {
        let keys = match kind_of(schema, v) {
            NodeKind::ListMap(k) => k,
            _ => return,
        };
        let is = items_schema(schema);
        if let Some(arr) = v.as_array_mut() {
            if rest.is_empty() {
                arr.retain(|i| item_key(&keys, i, is).as_deref() != Some(first.as_str()));
            } else if let Some(item) = arr
                .iter_mut()
                .find(|i| item_key(&keys, i, is).as_deref() == Some(first.as_str()))
            {
                remove_path(is, item, rest);
            }
        }
    } else if let Some(val) = first.strip_prefix("v:")
        && let Ok(target) = serde_json::from_str::<Value>(val)
        && let Some(arr) = v.as_array_mut()
    {
        arr.retain(|i| *i != target);
    }
}

/// Server-side apply. Returns the new object with managedFields set.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    schema: &Value,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    subresource: Option<&str>,
    has_status: bool,
    time: &str,
) -> Result<Value, SimError> {
    let mut cfg = config.clone();
    if has_status && let Some(o) = cfg.as_object_mut() {
        if subresource == Some("status") {
            o.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            if let Some(m) = o.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                m.retain(|k, _| k == "name" || k == "namespace");
            }
        } else {
            o.remove("status");
        }
    }
    if let Some(m) = cfg.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.remove("managedFields");
        m.remove("resourceVersion");
        m.remove("uid");
        m.remove("creationTimestamp");
        m.remove("generation");
    }
    let empty = json!({"metadata": {}});
    let live_v = live.unwrap_or(&empty);
    let mut merged = merge(Some(schema), Some(live_v), &cfg);
    let cfg_set = object_set(schema, &cfg, subresource, has_status);
    let mut es = entries(live);
    // skipNonAppliedManager.Apply: the first apply to an existing object
    // without managed fields first records an Update by `before-first-apply`
    // owning every field the object has.
    if let Some(l) = live
        && es.is_empty()
    {
        let set = object_set(schema, l, subresource, has_status);
        if !set.is_empty() {
            let mut e = new_entry(
                "before-first-apply",
                "Update",
                api_version,
                time,
                subresource,
            );
            e.set = set;
            es.push(e);
        }
    }
    let idx = match es.iter().position(|e| e.is(manager, "Apply", subresource)) {
        Some(i) => i,
        None => {
            es.push(new_entry(manager, "Apply", api_version, time, subresource));
            es.len() - 1
        }
    };
    let last = es[idx].set.clone();
    es[idx].set = cfg_set.clone();
    // Prune what this manager applied before but no longer applies, unless others own it.
    let mut others = FieldSet::default();
    for (i, e) in es.iter().enumerate() {
        if i != idx {
            others = others.union(&e.set);
        }
    }
    let prune = last.difference(&cfg_set).difference(&others);
    let mut prune_paths = prune.paths();
    prune_paths.sort_by_key(|p| p.len());
    for p in prune_paths {
        remove_path(Some(schema), &mut merged, &p);
    }
    // Conflicts with other managers.
    let (added, modified, removed) = compare(schema, live_v, &merged, subresource, has_status);
    let changed = added.union(&modified);
    let mut conflicts: Vec<(String, Vec<String>, Vec<Vec<String>>)> = vec![];
    for (i, e) in es.iter().enumerate() {
        if i == idx {
            continue;
        }
        let c = e.set.intersection(&changed).intersection(&cfg_set);
        if !c.is_empty() {
            let mut who = format!("{:?}", e.manager());
            if let Some(s) = e.raw["subresource"].as_str() {
                who = format!("{who} with subresource {s:?}");
            }
            let av = e.raw["apiVersion"].as_str().unwrap_or("");
            who = if e.raw["operation"] == "Update" && e.raw["time"].is_string() {
                format!("{who} using {av} at {}", e.raw["time"].as_str().unwrap())
            } else {
                format!("{who} using {av}")
            };
            conflicts.push((
                e.manager().to_string(),
                vec![who],
                c.paths()
                    .into_iter()
                    .filter(|p| !c.has_children(p))
                    .collect(),
            ));
        }
    }
    if !conflicts.is_empty() && !force {
        let total: usize = conflicts.iter().map(|c| c.2.len()).sum();
        let mut causes = vec![];
        for (_, who, paths) in &conflicts {
            for p in paths {
                causes.push(json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", who[0]), "field": path_string(p)}));
            }
        }
        let message = if total == 1 {
            let (_, who, paths) = &conflicts[0];
            format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                who[0],
                path_string(&paths[0])
            )
        } else {
            let mut sorted = conflicts.clone();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let mut lines = vec![];
            for (_, who, paths) in &sorted {
                lines.push(format!("conflicts with {}:", who[0]));
                for p in paths {
                    lines.push(format!("- {}", path_string(p)));
                }
            }
            format!("Apply failed with {total} conflicts: {}", lines.join("\n"))
        };
        return Err(SimError::new(409, "Conflict", message).with_details(json!({"causes": causes})));
    }
    for (i, e) in es.iter_mut().enumerate() {
        if i != idx {
            e.set = e
                .set
                .difference(&changed.intersection(&cfg_set))
                .difference(&removed);
        }
    }
    let live_changed =
        !added.is_empty() || !modified.is_empty() || !removed.is_empty() || last != cfg_set;
    if live_changed || es[idx].raw.get("time").is_none() {
        es[idx].raw["time"] = json!(time);
    }
    es[idx].raw["apiVersion"] = json!(api_version);
    let mf = render(es);
    if !merged["metadata"].is_object() {
        merged["metadata"] = json!({});
    }
    merged["metadata"]["managedFields"] = mf;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy_schema() -> Value {
        crate::builtin_schemas::schema_for("apps", "Deployment")
    }

    #[test]
    fn fieldsv1_roundtrip() {
        let j = json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:containers": {"k:{\"name\":\"a\"}": {".": {}, "f:image": {}}}}});
        let s = FieldSet::from_json(&j);
        assert_eq!(s.to_json(), j);
    }

    #[test]
    fn object_set_uses_list_map_keys() {
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "labels": {"app": "x"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}]}]}}}});
        let s = object_set(&deploy_schema(), &obj, None, true);
        assert_eq!(
            s.to_json(),
            json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}}, "f:image": {}, "f:name": {}}}}}}})
        );
    }

    #[test]
    fn path_rendering() {
        let p = vec![
            "f:spec".to_string(),
            "f:containers".into(),
            "k:{\"name\":\"coder\"}".into(),
            "f:env".into(),
            "k:{\"name\":\"X\"}".into(),
            "f:value".into(),
        ];
        assert_eq!(
            path_string(&p),
            ".spec.containers[name=\"coder\"].env[name=\"X\"].value"
        );
    }
}
