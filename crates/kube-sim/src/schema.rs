//! OpenAPI v3 structural schemas: navigation (for server-side apply and
//! strategic merge), and for custom resources pruning, defaulting and
//! validation (types, formats, enums, patterns, bounds, required,
//! `x-kubernetes-validations` CEL rules) with the real server's messages.

use serde_json::{Value, json};

use crate::errors::{FieldError, FieldErrorKind, SimError};

/// How a node merges.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// Object with named fields.
    Struct,
    /// Granular map.
    Map,
    /// Atomic value (scalar, atomic map, atomic list).
    Atomic,
    /// Associative list keyed by fields.
    ListMap(Vec<String>),
    /// Set of scalars.
    ListSet,
}

/// Schema of field `k` of an object schema.
pub fn child_schema<'a>(schema: Option<&'a Value>, k: &str) -> Option<&'a Value> {
    let s = schema?;
    if let Some(p) = s.get("properties").and_then(|p| p.get(k)) {
        return Some(p);
    }
    match s.get("additionalProperties") {
        Some(a) if a.is_object() => Some(a),
        _ => None,
    }
}

/// Schema of list items.
pub fn items_schema(schema: Option<&Value>) -> Option<&Value> {
    schema?.get("items")
}

/// Classify a value under its schema.
pub fn kind_of(schema: Option<&Value>, v: &Value) -> NodeKind {
    match v {
        Value::Object(_) => {
            let Some(s) = schema else {
                return NodeKind::Struct;
            };
            if s.get("x-kubernetes-map-type").and_then(|t| t.as_str()) == Some("atomic") {
                return NodeKind::Atomic;
            }
            if s.get("properties").is_some() {
                return NodeKind::Struct;
            }
            if s.get("additionalProperties")
                .is_some_and(|a| a.is_object() || a == &json!(true))
            {
                return NodeKind::Map;
            }
            NodeKind::Struct
        }
        Value::Array(_) => {
            let Some(s) = schema else {
                return NodeKind::Atomic;
            };
            match s.get("x-kubernetes-list-type").and_then(|t| t.as_str()) {
                Some("map") => NodeKind::ListMap(
                    s.get("x-kubernetes-list-map-keys")
                        .and_then(|k| k.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                Some("set") => NodeKind::ListSet,
                _ => NodeKind::Atomic,
            }
        }
        _ => NodeKind::Atomic,
    }
}

/// Add apiVersion/kind/metadata to a CRD's root schema (as the real server
/// does for OpenAPI publishing and SSA typing).
pub fn complete_crd_schema(schema: &mut Value) {
    if !schema.is_object() {
        *schema = json!({"type": "object"});
    }
    if schema.get("properties").is_none() {
        schema["properties"] = json!({});
    }
    let props = schema["properties"].as_object_mut().unwrap();
    props.entry("apiVersion").or_insert(json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
    props.entry("kind").or_insert(json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
    props.insert("metadata".into(), crate::builtin_schemas::object_meta());
}

fn preserves(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields")
        .and_then(|b| b.as_bool())
        == Some(true)
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

/// Remove fields not declared in the schema; record their paths.
pub fn prune(schema: &Value, v: &mut Value, path: &str, unknown: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            let props = schema.get("properties").and_then(|p| p.as_object());
            let addl = schema.get("additionalProperties");
            let keep_unknown =
                preserves(schema) || addl.is_some_and(|a| a.is_object() || a == &json!(true));
            let keys: Vec<String> = o.keys().cloned().collect();
            for k in keys {
                if path.is_empty() && (k == "apiVersion" || k == "kind" || k == "metadata") {
                    continue;
                }
                if schema
                    .get("x-kubernetes-embedded-resource")
                    .and_then(|b| b.as_bool())
                    == Some(true)
                    && (k == "apiVersion" || k == "kind" || k == "metadata")
                {
                    continue;
                }
                let child = props
                    .and_then(|p| p.get(&k))
                    .or_else(|| addl.filter(|a| a.is_object()));
                match child {
                    Some(cs) => {
                        if let Some(cv) = o.get_mut(&k) {
                            prune(cs, cv, &join(path, &k), unknown);
                        }
                    }
                    None if keep_unknown => {}
                    None => {
                        o.remove(&k);
                        unknown.push(join(path, &k));
                    }
                }
            }
        }
        Value::Array(a) => {
            if let Some(is) = schema.get("items") {
                for (i, item) in a.iter_mut().enumerate() {
                    prune(is, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// `PruneNonNullableNullsWithoutDefaults` (apiextensions-apiserver
/// `schema/defaulting/prunenulls.go`): drop `null`s of fields that are not
/// nullable and have no default (those with a default get it later).
pub fn prune_nulls(schema: Option<&Value>, v: &mut Value) {
    match v {
        Value::Object(o) => {
            let keys: Vec<String> = o.keys().cloned().collect();
            for k in keys {
                let cs = schema.and_then(|s| {
                    s.get("properties")
                        .and_then(|p| p.get(&k))
                        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
                });
                let drop = o.get(&k).is_some_and(|x| x.is_null())
                    && cs.is_some_and(|cs| {
                        cs.get("nullable").and_then(|n| n.as_bool()) != Some(true)
                            && cs.get("default").is_none()
                    });
                if drop {
                    o.remove(&k);
                } else if let Some(cv) = o.get_mut(&k) {
                    prune_nulls(cs, cv);
                }
            }
        }
        Value::Array(a) => {
            let is = schema.and_then(|s| s.get("items"));
            for x in a.iter_mut() {
                prune_nulls(is, x);
            }
        }
        _ => {}
    }
}

/// Validation ratcheting (`CRDValidationRatcheting`, on by default since
/// 1.30): on update, drop errors about values that are unchanged from the
/// old object (a `Required` error looks at the parent object).
pub fn ratchet(errs: &mut Vec<FieldError>, new: &Value, old: &Value) {
    fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
        let mut cur = v;
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            let (name, idx) = match seg.find('[') {
                Some(i) => (&seg[..i], Some(&seg[i..])),
                None => (seg, None),
            };
            if !name.is_empty() {
                cur = cur.get(name)?;
            }
            if let Some(idx) = idx {
                for part in idx.split(']').filter(|p| !p.is_empty()) {
                    let n: usize = part.trim_start_matches('[').parse().ok()?;
                    cur = cur.get(n)?;
                }
            }
        }
        Some(cur)
    }
    errs.retain(|e| {
        let path = if matches!(e.kind, FieldErrorKind::Required) {
            e.field.rsplit_once('.').map(|(p, _)| p).unwrap_or("")
        } else {
            e.field.as_str()
        };
        let (a, b) = (at(new, path), at(old, path));
        a.is_none() || a != b
    });
}

/// Apply `default`s (nested; only where the parent object exists).
pub fn apply_defaults(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (k, ps) in props {
                    let null_non_nullable = o.get(k).is_some_and(|x| x.is_null())
                        && ps.get("nullable").and_then(|n| n.as_bool()) != Some(true);
                    if (!o.contains_key(k) || null_non_nullable)
                        && let Some(d) = ps.get("default")
                    {
                        o.insert(k.clone(), d.clone());
                    }
                    if let Some(cv) = o.get_mut(k) {
                        apply_defaults(ps, cv);
                    }
                }
            }
            if let Some(a) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (_, cv) in o.iter_mut() {
                    apply_defaults(a, cv);
                }
            }
        }
        Value::Array(a) => {
            if let Some(is) = schema.get("items") {
                for item in a.iter_mut() {
                    apply_defaults(is, item);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                "integer"
            } else {
                "number"
            }
        }
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// Validate `v` against `schema` (CR root or below), collecting errors.
pub fn validate(schema: &Value, v: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    validate_node(schema, v, old, "", errs, true);
}

fn validate_node(
    schema: &Value,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
    root: bool,
) {
    let shown = |p: &str| {
        if p.is_empty() {
            "<root>".to_string()
        } else {
            p.to_string()
        }
    };
    let nullable = schema.get("nullable").and_then(|b| b.as_bool()) == Some(true);
    if v.is_null() {
        if !nullable && schema.get("type").is_some() {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::Invalid(json!("null")),
                format!(
                    "{} in body must be of type {}: \"null\"",
                    shown(path),
                    schema["type"].as_str().unwrap_or("")
                ),
            ));
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(|b| b.as_bool())
        == Some(true);
    if int_or_string {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::Invalid(json!(type_name(v))),
                format!(
                    "{} in body must be of type integer,string: \"{}\"",
                    shown(path),
                    type_name(v)
                ),
            ));
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(|t| t.as_str())
        && !type_ok(t, v)
    {
        errs.push(FieldError::new(
            path,
            FieldErrorKind::Invalid(json!(type_name(v))),
            format!(
                "{} in body must be of type {}: \"{}\"",
                shown(path),
                t,
                type_name(v)
            ),
        ));
        return;
    }
    let before = errs.len();
    // enum
    if let Some(en) = schema.get("enum").and_then(|e| e.as_array())
        && !en.contains(v)
    {
        let allowed: Vec<String> = en
            .iter()
            .map(|e| match e {
                Value::String(s) => s.clone(),
                o => o.to_string(),
            })
            .collect();
        errs.push(FieldError::new(
            path,
            FieldErrorKind::NotSupported(v.clone(), allowed),
            "",
        ));
    }
    match v {
        Value::String(s) => {
            if let Some(p) = schema.get("pattern").and_then(|p| p.as_str())
                && let Ok(re) = regex::Regex::new(p)
                && !re.is_match(s)
            {
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::Invalid(v.clone()),
                    format!("{} in body should match '{}'", shown(path), p),
                ));
            }
            let len = s.chars().count() as u64;
            if let Some(m) = schema.get("maxLength").and_then(|m| m.as_u64())
                && len > m
            {
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::TooLong,
                    format!("may not be more than {m} bytes"),
                ));
            }
            if let Some(m) = schema.get("minLength").and_then(|m| m.as_u64())
                && len < m
            {
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::Invalid(v.clone()),
                    format!("{} in body should be at least {m} chars long", shown(path)),
                ));
            }
            if let Some(f) = schema.get("format").and_then(|f| f.as_str()) {
                let ok = match f {
                    "date-time" => crate::util::parse_time(s).is_some(),
                    "date" => regex::Regex::new(r"^\d{4}-\d{2}-\d{2}$")
                        .unwrap()
                        .is_match(s),
                    "duration" => regex::Regex::new(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
                        .unwrap()
                        .is_match(s),
                    "uri" => s.contains(':'),
                    "email" => s.contains('@'),
                    "byte" => crate::util::b64_decode(s).is_some(),
                    "uuid" => uuid::Uuid::parse_str(s).is_ok(),
                    _ => true,
                };
                if !ok {
                    errs.push(FieldError::new(
                        path,
                        FieldErrorKind::Invalid(v.clone()),
                        format!("{} in body must be of type {}: {:?}", shown(path), f, s),
                    ));
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let excl_min = schema.get("exclusiveMinimum").and_then(|b| b.as_bool()) == Some(true);
            let excl_max = schema.get("exclusiveMaximum").and_then(|b| b.as_bool()) == Some(true);
            if let Some(m) = schema.get("minimum").and_then(|m| m.as_f64())
                && (x < m || (excl_min && x == m))
            {
                let rel = if excl_min {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::Invalid(v.clone()),
                    format!("{} in body should be {rel} {}", shown(path), fmt_num(m)),
                ));
            }
            if let Some(m) = schema.get("maximum").and_then(|m| m.as_f64())
                && (x > m || (excl_max && x == m))
            {
                let rel = if excl_max {
                    "less than"
                } else {
                    "less than or equal to"
                };
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::Invalid(v.clone()),
                    format!("{} in body should be {rel} {}", shown(path), fmt_num(m)),
                ));
            }
            if let Some(m) = schema.get("multipleOf").and_then(|m| m.as_f64())
                && m != 0.0
                && (x / m).fract() != 0.0
            {
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::Invalid(v.clone()),
                    format!(
                        "{} in body should be a multiple of {}",
                        shown(path),
                        fmt_num(m)
                    ),
                ));
            }
        }
        Value::Array(a) => {
            if let Some(m) = schema.get("maxItems").and_then(|m| m.as_u64())
                && a.len() as u64 > m
            {
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::TooMany,
                    format!("{}: must have at most {m} items", a.len()),
                ));
            }
            if let Some(m) = schema.get("minItems").and_then(|m| m.as_u64())
                && (a.len() as u64) < m
            {
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::Invalid(json!(a.len())),
                    format!("{} in body should have at least {m} items", shown(path)),
                ));
            }
            let lt = schema
                .get("x-kubernetes-list-type")
                .and_then(|t| t.as_str());
            if lt == Some("set") {
                for (i, item) in a.iter().enumerate() {
                    if a[..i].contains(item) {
                        errs.push(FieldError::new(
                            format!("{path}[{i}]"),
                            FieldErrorKind::Duplicate(item.clone()),
                            "",
                        ));
                    }
                }
            }
            if lt == Some("map")
                && let NodeKind::ListMap(keys) = kind_of(Some(schema), v)
            {
                let mut seen = vec![];
                for (i, item) in a.iter().enumerate() {
                    let k: Vec<Value> = keys
                        .iter()
                        .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                        .collect();
                    if seen.contains(&k) {
                        let kv: serde_json::Map<String, Value> =
                            keys.iter().cloned().zip(k.iter().cloned()).collect();
                        errs.push(FieldError::new(
                            format!("{path}[{i}]"),
                            FieldErrorKind::Duplicate(Value::Object(kv)),
                            "",
                        ));
                    }
                    seen.push(k);
                }
            }
            if let Some(is) = schema.get("items") {
                let old_items = old.and_then(|o| o.as_array());
                let keys = match kind_of(Some(schema), v) {
                    NodeKind::ListMap(k) => Some(k),
                    _ => None,
                };
                for (i, item) in a.iter().enumerate() {
                    // Correlate old items for transition rules: by key for list maps, by value for sets.
                    let old_item = match (&keys, old_items) {
                        (Some(keys), Some(oi)) => oi
                            .iter()
                            .find(|o| keys.iter().all(|k| o.get(k) == item.get(k))),
                        (None, Some(oi)) if lt == Some("set") => oi.iter().find(|o| *o == item),
                        _ => None,
                    };
                    validate_node(is, item, old_item, &format!("{path}[{i}]"), errs, false);
                }
            }
        }
        Value::Object(o) => {
            if let Some(req) = schema.get("required").and_then(|r| r.as_array()) {
                for r in req.iter().filter_map(|r| r.as_str()) {
                    if !o.contains_key(r) {
                        errs.push(FieldError::new(join(path, r), FieldErrorKind::Required, ""));
                    }
                }
            }
            if let Some(m) = schema.get("maxProperties").and_then(|m| m.as_u64())
                && o.len() as u64 > m
            {
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::TooMany,
                    format!("{}: must have at most {m} items", o.len()),
                ));
            }
            if let Some(m) = schema.get("minProperties").and_then(|m| m.as_u64())
                && (o.len() as u64) < m
            {
                errs.push(FieldError::new(
                    path,
                    FieldErrorKind::Invalid(json!(o.len())),
                    format!(
                        "{} in body should have at least {m} properties",
                        shown(path)
                    ),
                ));
            }
            let props = schema.get("properties").and_then(|p| p.as_object());
            let addl = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, cv) in o {
                if root && (k == "metadata" || k == "apiVersion" || k == "kind") {
                    continue;
                }
                let cs = props.and_then(|p| p.get(k)).or(addl);
                if let Some(cs) = cs {
                    let old_child = old.and_then(|ov| ov.get(k));
                    validate_node(cs, cv, old_child, &join(path, k), errs, false);
                }
            }
        }
        _ => {}
    }
    // Value validations of structural schemas: allOf / anyOf / oneOf / not.
    let sub_ok = |sub: &Value| {
        let mut e = vec![];
        validate_node(sub, v, old, path, &mut e, root);
        e
    };
    if let Some(all) = schema.get("allOf").and_then(|a| a.as_array()) {
        for sub in all {
            errs.extend(sub_ok(sub));
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(|a| a.as_array())
        && !any.iter().any(|sub| sub_ok(sub).is_empty())
    {
        errs.push(FieldError::new(
            path,
            FieldErrorKind::Invalid(json!(type_name(v))),
            format!(
                "{} in body must validate at least one schema (anyOf)",
                shown(path)
            ),
        ));
    }
    if let Some(one) = schema.get("oneOf").and_then(|a| a.as_array()) {
        let valid = one.iter().filter(|sub| sub_ok(sub).is_empty()).count();
        if valid != 1 {
            errs.push(FieldError::new(
                path,
                FieldErrorKind::Invalid(json!(type_name(v))),
                format!(
                    "{} in body must validate one and only one schema (oneOf). Found {}",
                    shown(path),
                    if valid == 0 {
                        "none valid".to_string()
                    } else {
                        format!("{valid} valid alternatives")
                    }
                ),
            ));
        }
    }
    if let Some(not) = schema.get("not")
        && sub_ok(not).is_empty()
    {
        errs.push(FieldError::new(
            path,
            FieldErrorKind::Invalid(json!(type_name(v))),
            format!("{} in body must not validate the schema (not)", shown(path)),
        ));
    }
    // CEL rules run only when the value itself passed the schema checks.
    if errs.len() == before
        && let Some(rules) = schema
            .get("x-kubernetes-validations")
            .and_then(|r| r.as_array())
    {
        for r in rules {
            let rule = r["rule"].as_str().unwrap_or("");
            let transition = crate::cel_rules::is_transition_rule(rule);
            if transition && old.is_none() {
                continue;
            }
            let field = match r["fieldPath"].as_str() {
                Some(fp) if !fp.is_empty() => format!(
                    "{path}{}",
                    if fp.starts_with('.') || fp.starts_with('[') {
                        fp.to_string()
                    } else {
                        format!(".{fp}")
                    }
                )
                .trim_start_matches('.')
                .to_string(),
                _ => path.to_string(),
            };
            match crate::cel_rules::eval_rule(rule, v, if transition { old } else { None }) {
                Ok(true) => {}
                Ok(false) => {
                    let msg = match r["messageExpression"].as_str() {
                        Some(me) => crate::cel_rules::eval_message(me, v, old)
                            .unwrap_or_else(|_| default_msg(r, rule)),
                        None => default_msg(r, rule),
                    };
                    let kind = match r["reason"].as_str() {
                        Some("FieldValueForbidden") => FieldErrorKind::Forbidden,
                        Some("FieldValueRequired") => FieldErrorKind::Required,
                        Some("FieldValueDuplicate") => {
                            FieldErrorKind::Duplicate(json!(type_name(v)))
                        }
                        _ => FieldErrorKind::Invalid(json!(type_name(v))),
                    };
                    errs.push(FieldError::new(field, kind, msg));
                }
                Err(e) => {
                    errs.push(FieldError::new(
                        field,
                        FieldErrorKind::Invalid(json!(type_name(v))),
                        format!("{rule}: {e}"),
                    ));
                }
            }
        }
    }
}

fn default_msg(r: &Value, rule: &str) -> String {
    match r["message"].as_str() {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => format!("failed rule: {rule}"),
    }
}

/// Light CRD validation.
pub fn validate_crd(crd: &Value, name: &str) -> Result<(), SimError> {
    let mut errs = vec![];
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec
        .pointer("/names/plural")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if group.is_empty() {
        errs.push(FieldError::new("spec.group", FieldErrorKind::Required, ""));
    } else if !group.contains('.') {
        errs.push(FieldError::new(
            "spec.group",
            FieldErrorKind::Invalid(json!(group)),
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        errs.push(FieldError::new(
            "spec.names.plural",
            FieldErrorKind::Required,
            "",
        ));
    }
    if spec
        .pointer("/names/kind")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .is_empty()
    {
        errs.push(FieldError::new(
            "spec.names.kind",
            FieldErrorKind::Required,
            "",
        ));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::new(
            "metadata.name",
            FieldErrorKind::Invalid(json!(name)),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match spec["scope"].as_str() {
        Some("Namespaced") | Some("Cluster") => {}
        other => errs.push(FieldError::new(
            "spec.scope",
            FieldErrorKind::NotSupported(
                json!(other.unwrap_or("")),
                vec!["Cluster".into(), "Namespaced".into()],
            ),
            "",
        )),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::new(
            "spec.versions",
            FieldErrorKind::Invalid(json!(null)),
            "must have exactly one version marked as storage version",
        ));
    } else {
        let storage = versions
            .iter()
            .filter(|v| v["storage"].as_bool() == Some(true))
            .count();
        if storage != 1 {
            errs.push(FieldError::new(
                "spec.versions",
                FieldErrorKind::Invalid(Value::Array(versions.clone())),
                "must have exactly one version marked as storage version",
            ));
        }
        for (i, v) in versions.iter().enumerate() {
            if v.pointer("/schema/openAPIV3Schema").is_none() {
                errs.push(FieldError::new(
                    format!("spec.versions[{i}].schema.openAPIV3Schema"),
                    FieldErrorKind::Required,
                    "schemas are required",
                ));
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SimError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            &errs,
        ))
    }
}

/// Set CRD status as the apiextensions controllers would (names accepted, established).
pub fn crd_status(crd: &mut Value) {
    let mut names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let kind = names["kind"].as_str().unwrap_or("").to_string();
    if names.get("singular").is_none() {
        names["singular"] = json!(kind.to_lowercase());
        crd["spec"]["names"]["singular"] = json!(kind.to_lowercase());
    }
    if names.get("listKind").is_none() {
        names["listKind"] = json!(format!("{kind}List"));
        crd["spec"]["names"]["listKind"] = json!(format!("{kind}List"));
    }
    if crd.pointer("/spec/conversion").is_none() {
        crd["spec"]["conversion"] = json!({"strategy": "None"});
    }
    let storage = crd
        .pointer("/spec/versions")
        .and_then(|v| v.as_array())
        .and_then(|vs| vs.iter().find(|v| v["storage"].as_bool() == Some(true)))
        .and_then(|v| v["name"].as_str())
        .unwrap_or("v1")
        .to_string();
    let now = crd
        .pointer("/status/conditions/0/lastTransitionTime")
        .cloned()
        .unwrap_or_else(|| json!(crate::util::now_rfc3339()));
    let mut stored: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    if !stored.contains(&json!(storage)) {
        stored.push(json!(storage));
    }
    crd["status"] = json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
        ],
        "storedVersions": stored,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["mode"],
            "x-kubernetes-validations": [{"rule": "has(self.a) != has(self.b)", "message": "exactly one of a or b must be set"}],
            "properties": {
                "mode": {"type": "string", "enum": ["Auto", "Manual"]},
                "name": {"type": "string", "pattern": "^[a-z]+$"},
                "n": {"type": "integer", "minimum": 1, "default": 5},
                "a": {"type": "string"}, "b": {"type": "string"}
        }}}})
    }

    #[test]
    fn collects_all_errors() {
        let s = schema();
        let v = json!({"spec": {"mode": "X", "name": "ABC", "n": 0, "a": "x", "b": "y"}});
        let mut errs = vec![];
        validate(&s, &v, None, &mut errs);
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "spec.mode: Unsupported value: \"X\": supported values: \"Auto\", \"Manual\"",
                "spec.name: Invalid value: \"ABC\": spec.name in body should match '^[a-z]+$'",
                "spec.n: Invalid value: 0: spec.n in body should be greater than or equal to 1",
            ]
        );
    }

    #[test]
    fn cel_rule_and_required() {
        let s = schema();
        let mut errs = vec![];
        validate(
            &s,
            &json!({"spec": {"mode": "Auto", "a": "x", "b": "y"}}),
            None,
            &mut errs,
        );
        assert_eq!(
            errs[0].to_string(),
            "spec: Invalid value: \"object\": exactly one of a or b must be set"
        );
        let mut errs = vec![];
        validate(&s, &json!({"spec": {"a": "x"}}), None, &mut errs);
        assert_eq!(errs[0].to_string(), "spec.mode: Required value");
    }

    #[test]
    fn prune_and_default() {
        let s = schema();
        let mut v = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"}, "spec": {"mode": "Auto", "foo": 1}});
        let mut unknown = vec![];
        prune(&s, &mut v, "", &mut unknown);
        assert_eq!(unknown, vec!["spec.foo"]);
        apply_defaults(&s, &mut v);
        assert_eq!(v["spec"]["n"], 5);
    }

    #[test]
    fn formats_bounds_maps_and_special_types() {
        let s = json!({"type": "object", "properties": {
            "port": {"x-kubernetes-int-or-string": true},
            "opt": {"type": "string", "nullable": true},
            "when": {"type": "string", "format": "date-time"},
            "short": {"type": "string", "minLength": 2, "maxLength": 3},
            "list": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "integer"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 1},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": true}
        }});
        let ok = json!({"port": "http", "opt": null, "when": "2024-01-01T00:00:00Z", "short": "ab", "list": [1],
            "labels": {"a": "b"}, "free": {"anything": {"goes": [1]}}, "ratio": 0.5});
        let mut errs = vec![];
        validate(&s, &ok, None, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let mut pruned = ok.clone();
        let mut unknown = vec![];
        prune(&s, &mut pruned, "", &mut unknown);
        assert!(unknown.is_empty());
        assert_eq!(
            pruned, ok,
            "preserve-unknown-fields and maps keep their content"
        );

        let bad = json!({"port": true, "when": "yesterday", "short": "abcd", "list": [1, 2, 3],
            "labels": {"a": "b", "c": 1}, "ratio": 0});
        let mut errs = vec![];
        validate(&s, &bad, None, &mut errs);
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "port: Invalid value: \"boolean\": port in body must be of type integer,string: \"boolean\"",
                "when: Invalid value: \"yesterday\": when in body must be of type date-time: \"yesterday\"",
                "short: Too long: may not be more than 3 bytes",
                "list: Too many: 3: must have at most 2 items",
                "labels: Too many: 2: must have at most 1 items",
                "labels.c: Invalid value: \"integer\": labels.c in body must be of type string: \"integer\"",
                "ratio: Invalid value: 0: ratio in body should be greater than 0",
            ]
        );
        let mut errs = vec![];
        validate(&s, &json!({"short": "a", "list": []}), None, &mut errs);
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "short: Invalid value: \"a\": short in body should be at least 2 chars long",
                "list: Invalid value: 0: list in body should have at least 1 items",
            ]
        );
    }

    #[test]
    fn one_of_any_of_not() {
        let s = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "oneOf": [{"required": ["a"]}, {"required": ["b"]}], "not": {"required": ["c"]}});
        let mut errs = vec![];
        validate(&s, &json!({"a": "x"}), None, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let mut errs = vec![];
        validate(&s, &json!({"a": "x", "b": "y"}), None, &mut errs);
        assert_eq!(errs[0].to_string(), "<root>: Invalid value: \"object\": <root> in body must validate one and only one schema (oneOf). Found 2 valid alternatives".replace("<root>: ", ""));
        let mut errs = vec![];
        validate(&s, &json!({"c": 1, "a": "x"}), None, &mut errs);
        assert_eq!(errs.len(), 1);
        let any = json!({"anyOf": [{"type": "integer"}, {"type": "string"}]});
        let mut errs = vec![];
        validate(&any, &json!(true), None, &mut errs);
        assert_eq!(errs.len(), 1);
    }
}
