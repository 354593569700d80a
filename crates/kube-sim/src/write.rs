//! Read and write handlers: get, list, create, update, patch (incl. server-side
//! apply), delete, deletecollection, and the common write pipeline (metadata,
//! status subresource rules, validation, managedFields, no-op detection,
//! finalizers, garbage collection, namespace termination, CRD registration).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::Shared;
use crate::errors::{FieldError, FieldErrorKind, SimError};
use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{ApiRequest, Output, Reply};
use crate::store::State;
use crate::util::{b64_decode, b64_encode, now_rfc3339, parse_body};

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Reject.
    Strict,
    /// Prune and warn.
    Warn,
    /// Prune silently.
    Ignore,
}

/// Per-write options.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    /// Field manager.
    pub manager: String,
    /// Subresource being written.
    pub subresource: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// Unknown field handling.
    pub validation: Validation,
    /// Warnings to send back.
    pub warnings: Vec<String>,
}

impl WriteCtx {
    fn from_req(req: &ApiRequest, default_prefix: &str) -> Self {
        let manager = match req.q("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => {
                let ua = req.user_agent();
                let prefix = ua.split('/').next().unwrap_or("").trim();
                if prefix.is_empty() {
                    default_prefix.to_string()
                } else {
                    prefix.to_string()
                }
            }
        };
        let validation = match req.q("fieldValidation") {
            Some("Strict") => Validation::Strict,
            Some("Ignore") => Validation::Ignore,
            _ => Validation::Warn,
        };
        WriteCtx {
            manager,
            subresource: req.subresource.clone(),
            dry_run: req.q("dryRun") == Some("All"),
            validation,
            warnings: vec![],
        }
    }
}

/// What kind of write it is.
pub enum Op {
    /// POST.
    Create,
    /// PUT or non-apply PATCH.
    Update,
    /// Server-side apply: managedFields already computed.
    Apply(Value),
}

fn ns_key(ri: &ResourceInfo, ns: Option<&str>) -> String {
    if ri.namespaced {
        ns.unwrap_or("").to_string()
    } else {
        String::new()
    }
}

/// Convert a stored object to what a client of `ri` sees.
pub fn present(ri: &ResourceInfo, obj: &Value) -> Value {
    let mut v = if ri.group == "events.k8s.io" {
        crate::events::core_to_events(obj)
    } else {
        obj.clone()
    };
    if ri.custom {
        v["apiVersion"] = json!(ri.api_version());
        crate::schema::apply_defaults(&ri.schema, &mut v);
    }
    v
}

fn to_storage(ri: &ResourceInfo, obj: Value) -> Value {
    if ri.group == "events.k8s.io" {
        return crate::events::events_to_core(&obj);
    }
    let mut obj = obj;
    if ri.custom {
        obj["apiVersion"] = json!(format!("{}/{}", ri.group, ri.storage_version));
    }
    obj
}

fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// Shape one object per the requested output.
pub fn shape_one(req: &ApiRequest, obj: &Value) -> Value {
    let v = present(&req.ri, obj);
    match req.output {
        Output::Full => v,
        Output::Metadata => partial(&v),
        Output::Table { include } => crate::table::table(&req.ri, &[v], include, None),
    }
}

/// GET of one object.
pub fn get(shared: &Shared, req: &ApiRequest) -> Reply {
    let name = req.name.as_deref().unwrap_or("");
    let st = shared.lock();
    match st.get(
        &req.ri.storage,
        &ns_key(&req.ri, req.namespace.as_deref()),
        name,
    ) {
        Some(o) => {
            if req.subresource.as_deref() == Some("status") {
                return Reply::ok(present(&req.ri, &o));
            }
            if req.subresource.as_deref() == Some("scale") {
                return Reply::ok(to_scale(&o));
            }
            Reply::ok(shape_one(req, &o))
        }
        None => SimError::not_found(&req.ri.group, &req.ri.resource, name).into(),
    }
}

/// Parsed list/watch filters.
pub struct Filters {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Namespace restriction.
    pub namespace: Option<String>,
}

impl Filters {
    /// Parse from the request.
    pub fn from_req(req: &ApiRequest) -> Result<Self, SimError> {
        let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(
            &map_event_field_selector(&req.ri, req.q("fieldSelector").unwrap_or("")),
            &req.ri.field_selectors,
            &req.ri.kind,
        )?;
        Ok(Filters {
            labels,
            fields,
            namespace: req.namespace.clone(),
        })
    }

    /// Whether a stored object matches.
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && obj.pointer("/metadata/namespace").and_then(|v| v.as_str()) != Some(ns.as_str())
        {
            return false;
        }
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

fn map_event_field_selector(ri: &ResourceInfo, s: &str) -> String {
    if ri.group != "events.k8s.io" {
        return s.to_string();
    }
    s.replace("regarding.", "involvedObject.")
        .replace("reportingController", "reportingComponent")
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    b64_encode(format!("{rv}\n{ns}\n{name}").as_bytes())
}

fn decode_continue(tok: &str) -> Option<(u64, String, String)> {
    let raw = String::from_utf8(b64_decode(tok)?).ok()?;
    let mut it = raw.splitn(3, '\n');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.to_string(),
        it.next()?.to_string(),
    ))
}

/// LIST.
pub fn list(shared: &Shared, req: &ApiRequest) -> Reply {
    let filters = match Filters::from_req(req) {
        Ok(f) => f,
        Err(e) => return e.into(),
    };
    let limit: usize = req.q("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let cont = match req.q("continue").filter(|c| !c.is_empty()) {
        Some(c) => match decode_continue(c) {
            Some(t) => Some(t),
            None => {
                return SimError::bad_request("continue key is not valid: illegal base64 data")
                    .into();
            }
        },
        None => None,
    };
    let (items, rv, next, remaining) = {
        let st = shared.lock();
        let rv = cont.as_ref().map(|c| c.0).unwrap_or(st.rv);
        let mut items: Vec<Arc<Value>> = Vec::new();
        let mut next = None;
        let mut remaining = 0usize;
        if let Some(bucket) = st.objects.get(&req.ri.storage) {
            type Entries<'a> =
                Box<dyn Iterator<Item = (&'a (String, String), &'a Arc<Value>)> + 'a>;
            let iter: Entries<'_> = match &cont {
                Some((_, ns, name)) => Box::new(bucket.range((
                    std::ops::Bound::Excluded((ns.clone(), name.clone())),
                    std::ops::Bound::Unbounded,
                ))),
                None => match &req.namespace {
                    Some(ns) => Box::new(bucket.range((ns.clone(), String::new())..)),
                    None => Box::new(bucket.iter()),
                },
            };
            for ((ns, name), obj) in iter {
                if let Some(rns) = &req.namespace
                    && ns != rns
                {
                    if ns > rns {
                        break;
                    }
                    continue;
                }
                if !filters.matches(obj) {
                    continue;
                }
                if limit > 0 && items.len() >= limit {
                    if next.is_none() {
                        let last = items.last().unwrap();
                        let lns = last
                            .pointer("/metadata/namespace")
                            .and_then(|v| v.as_str())
                            .unwrap_or("");
                        let lname = last
                            .pointer("/metadata/name")
                            .and_then(|v| v.as_str())
                            .unwrap_or("");
                        next = Some(encode_continue(rv, lns, lname));
                    }
                    remaining += 1;
                    continue;
                }
                let _ = name;
                items.push(obj.clone());
            }
        }
        (items, rv, next, remaining)
    };
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(n) = next {
        meta["continue"] = json!(n);
        if filters.labels.is_empty() && filters.fields.is_empty() {
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    match req.output {
        Output::Table { include } => {
            let objs: Vec<Value> = items.iter().map(|o| present(&req.ri, o)).collect();
            Reply::ok(crate::table::table(&req.ri, &objs, include, Some(meta)))
        }
        Output::Metadata => Reply::ok(json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": items.iter().map(|o| partial(o)).collect::<Vec<_>>(),
        })),
        Output::Full => {
            // Serialize straight from the stored objects when no conversion is
            // needed (saves a deep copy per item on large lists).
            let needs_conversion = req.ri.custom || req.ri.group == "events.k8s.io";
            let mut body = serde_json::to_vec(&json!({
                "kind": format!("{}List", req.ri.kind),
                "apiVersion": req.ri.api_version(),
                "metadata": meta,
            }))
            .unwrap_or_default();
            body.pop(); // the closing brace
            body.extend_from_slice(b",\"items\":[");
            for (i, o) in items.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                let _ = if needs_conversion {
                    serde_json::to_writer(&mut body, &present(&req.ri, o))
                } else {
                    serde_json::to_writer(&mut body, &**o)
                };
            }
            body.extend_from_slice(b"]}");
            Reply::Raw(
                200,
                String::from_utf8(body).unwrap_or_default(),
                "application/json",
            )
        }
    }
}

fn parse_req_body(req: &ApiRequest) -> Result<Value, SimError> {
    let v = parse_body(&req.body).map_err(|e| {
        SimError::bad_request(format!(
            "the object provided is unrecognized or invalid: {e}"
        ))
    })?;
    if !v.is_object() {
        return Err(SimError::bad_request(
            "the object provided is unrecognized or invalid",
        ));
    }
    Ok(v)
}

fn check_type(ri: &ResourceInfo, obj: &Value) -> Result<(), SimError> {
    let av = obj["apiVersion"].as_str().unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or("");
    if (!av.is_empty() && av != ri.api_version()) || (!kind.is_empty() && kind != ri.kind) {
        return Err(SimError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            ri.api_version()
        )));
    }
    Ok(())
}

/// POST.
pub fn create(shared: &Shared, req: &ApiRequest) -> Reply {
    let body = match parse_req_body(req) {
        Ok(b) => b,
        Err(e) => return e.into(),
    };
    let mut ctx = WriteCtx::from_req(req, "unknown");
    let mut st = shared.lock();
    match create_inner(&mut st, &req.ri, req.namespace.as_deref(), body, &mut ctx) {
        Ok((code, v)) => Reply::Json(code, present(&req.ri, &v), ctx.warnings),
        Err(e) => e.into(),
    }
}

/// Create in an already locked state.
pub fn create_inner(
    st: &mut State,
    ri: &ResourceInfo,
    ns: Option<&str>,
    body: Value,
    ctx: &mut WriteCtx,
) -> Result<(u16, Value), SimError> {
    check_type(ri, &body)?;
    let body_ns = body
        .pointer("/metadata/namespace")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(String::from);
    if let (Some(bns), Some(rns)) = (&body_ns, ns)
        && bns != rns
    {
        return Err(SimError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    commit(st, ri, ns.map(String::from), None, body, Op::Create, ctx)
}

/// PUT.
pub fn update(shared: &Shared, req: &ApiRequest) -> Reply {
    let body = match parse_req_body(req) {
        Ok(b) => b,
        Err(e) => return e.into(),
    };
    let name = req.name.clone().unwrap_or_default();
    if req.subresource.as_deref() == Some("scale") {
        return scale_write(shared, req, |_| Ok(body.clone())).unwrap_or_else(|e| e.into());
    }
    if let Err(e) = check_type(&req.ri, &body) {
        return e.into();
    }
    let body_name = body
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if body_name != name {
        return SimError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        ))
        .into();
    }
    let mut ctx = WriteCtx::from_req(req, "unknown");
    let mut st = shared.lock();
    let old = st.get(
        &req.ri.storage,
        &ns_key(&req.ri, req.namespace.as_deref()),
        &name,
    );
    let Some(old) = old else {
        return SimError::not_found(&req.ri.group, &req.ri.resource, &name).into();
    };
    // Store.Update: kinds whose strategy does not AllowUnconditionalUpdate
    // (custom resources, CRDs) need a resourceVersion; the error names the
    // resource (plural) as its kind.
    if (req.ri.custom || req.ri.resource == "customresourcedefinitions")
        && body
            .pointer("/metadata/resourceVersion")
            .and_then(|v| v.as_str())
            .is_none_or(|v| v.is_empty() || v == "0")
    {
        return SimError::invalid(
            &req.ri.group,
            &req.ri.resource,
            &name,
            &[FieldError::new(
                "metadata.resourceVersion",
                FieldErrorKind::InvalidRaw("0x0".into()),
                "must be specified for an update",
            )],
        )
        .into();
    }
    if let Some(rv) = body
        .pointer("/metadata/resourceVersion")
        .and_then(|v| v.as_str())
        && !rv.is_empty()
        && Some(rv)
            != old
                .pointer("/metadata/resourceVersion")
                .and_then(|v| v.as_str())
    {
        return SimError::conflict(&req.ri.group, &req.ri.resource, &name).into();
    }
    match commit(
        &mut st,
        &req.ri,
        req.namespace.clone(),
        Some(old),
        body,
        Op::Update,
        &mut ctx,
    ) {
        Ok((code, v)) => Reply::Json(code, present(&req.ri, &v), ctx.warnings),
        Err(e) => e.into(),
    }
}

/// PATCH (merge, JSON, strategic, apply).
pub fn patch(shared: &Shared, req: &ApiRequest) -> Reply {
    match patch_inner(shared, req) {
        Ok((code, v, warnings)) => Reply::Json(code, v, warnings),
        Err(e) => e.into(),
    }
}

fn patch_inner(shared: &Shared, req: &ApiRequest) -> Result<(u16, Value, Vec<String>), SimError> {
    let ct = req.content_type();
    let name = req.name.clone().unwrap_or_default();
    let ri = &req.ri;
    match ct.as_str() {
        "application/apply-patch+yaml"
        | "application/merge-patch+json"
        | "application/json-patch+json" => {}
        "application/strategic-merge-patch+json" if !ri.custom => {}
        other => return Err(SimError::unsupported_media_type(other)),
    }
    if ct == "application/apply-patch+yaml" {
        return apply(shared, req);
    }
    if req.subresource.as_deref() == Some("scale") {
        let body = req.body.clone();
        let ct2 = ct.clone();
        return match scale_write(shared, req, move |old_scale| {
            let mut doc = old_scale.clone();
            match ct2.as_str() {
                "application/json-patch+json" => {
                    let p: json_patch::Patch = serde_json::from_slice(&body)
                        .map_err(|e| SimError::bad_request(format!("error decoding patch: {e}")))?;
                    json_patch::patch(&mut doc, &p)
                        .map_err(|e| SimError::new(422, "Invalid", e.to_string()))?;
                }
                _ => {
                    let p: Value = serde_json::from_slice(&body)
                        .map_err(|e| SimError::bad_request(format!("error decoding patch: {e}")))?;
                    json_patch::merge(&mut doc, &p);
                }
            }
            Ok(doc)
        })? {
            Reply::Json(c, v, w) => Ok((c, v, w)),
            _ => Err(SimError::internal("scale")),
        };
    }
    let mut ctx = WriteCtx::from_req(req, "unknown");
    let mut st = shared.lock();
    let old = st
        .get(&ri.storage, &ns_key(ri, req.namespace.as_deref()), &name)
        .ok_or_else(|| SimError::not_found(&ri.group, &ri.resource, &name))?;
    let old_req = present(ri, &old);
    let new = match ct.as_str() {
        "application/merge-patch+json" => {
            let p: Value = serde_json::from_slice(&req.body)
                .map_err(|e| SimError::bad_request(format!("error decoding patch: {e}")))?;
            let mut doc = old_req.clone();
            json_patch::merge(&mut doc, &p);
            doc
        }
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(&req.body)
                .map_err(|e| SimError::bad_request(format!("error decoding patch: {e}")))?;
            let mut doc = old_req.clone();
            json_patch::patch(&mut doc, &p).map_err(|e| {
                let msg = match e.kind {
                    json_patch::PatchErrorKind::TestFailed => {
                        format!(
                            "the server rejected our request due to an error in our request: {}",
                            testfail_message(&p, e.operation)
                        )
                    }
                    _ => format!(
                        "the server rejected our request due to an error in our request: {e}"
                    ),
                };
                SimError::new(422, "Invalid", msg)
            })?;
            doc
        }
        _ => {
            let p: Value = serde_json::from_slice(&req.body)
                .map_err(|e| SimError::bad_request(format!("error decoding patch: {e}")))?;
            crate::patch::strategic_merge(&ri.schema, &old_req, &p)?
        }
    };
    if !new.is_object() {
        return Err(SimError::bad_request("patch result is not an object"));
    }
    if new.pointer("/metadata/name").and_then(|v| v.as_str()) != Some(name.as_str()) {
        return Err(SimError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            new.pointer("/metadata/name")
                .and_then(|v| v.as_str())
                .unwrap_or("")
        )));
    }
    check_type(ri, &new)?;
    if new.pointer("/metadata/resourceVersion") != old.pointer("/metadata/resourceVersion") {
        return Err(SimError::conflict(&ri.group, &ri.resource, &name));
    }
    let (code, v) = commit(
        &mut st,
        ri,
        req.namespace.clone(),
        Some(old),
        new,
        Op::Update,
        &mut ctx,
    )?;
    Ok((code, present(ri, &v), ctx.warnings))
}

fn testfail_message(p: &json_patch::Patch, idx: usize) -> String {
    match p.0.get(idx) {
        Some(json_patch::PatchOperation::Test(t)) => {
            format!("testing value {} failed: test failed", t.path)
        }
        _ => "test failed".into(),
    }
}

fn apply(shared: &Shared, req: &ApiRequest) -> Result<(u16, Value, Vec<String>), SimError> {
    let ri = &req.ri;
    let name = req.name.clone().unwrap_or_default();
    let manager = match req.q("fieldManager") {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => {
            return Err(SimError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            )
            .with_details(json!({"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"}]})));
        }
    };
    let force = req.q_bool("force");
    let mut config = parse_body(&req.body)
        .map_err(|e| SimError::bad_request(format!("error decoding YAML: {e}")))?;
    if !config.is_object() {
        return Err(SimError::bad_request("apply patch must be an object"));
    }
    let av = config["apiVersion"].as_str().unwrap_or("");
    let kind = config["kind"].as_str().unwrap_or("");
    if av.is_empty() || kind.is_empty() {
        return Err(SimError::bad_request("invalid object type: /, Kind="));
    }
    check_type(ri, &config)?;
    let cname = config
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if !cname.is_empty() && cname != name {
        return Err(SimError::bad_request(format!(
            "the name of the object ({cname}) does not match the name on the URL ({name})"
        )));
    }
    if config.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(decode_error(ri, "metadata", "ObjectMeta"));
    }
    check_metadata(ri, &config)?;
    config["metadata"]["name"] = json!(name);
    let mut ctx = WriteCtx::from_req(req, &manager);
    ctx.manager = manager.clone();
    let mut st = shared.lock();
    let old = st.get(&ri.storage, &ns_key(ri, req.namespace.as_deref()), &name);
    if let Some(rv) = config
        .pointer("/metadata/resourceVersion")
        .and_then(|v| v.as_str())
        && Some(rv)
            != old
                .as_ref()
                .and_then(|o| o.pointer("/metadata/resourceVersion"))
                .and_then(|v| v.as_str())
    {
        return Err(SimError::conflict(&ri.group, &ri.resource, &name));
    }
    // Unknown fields in the applied configuration.
    if ri.custom {
        let mut unknown = vec![];
        let mut probe = config.clone();
        crate::schema::prune(&ri.schema, &mut probe, "", &mut unknown);
        if !unknown.is_empty() {
            match ctx.validation {
                Validation::Strict => {
                    return Err(SimError::bad_request(format!(
                        "{}: field not declared in schema",
                        unknown
                            .iter()
                            .map(|u| format!(".{u}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Validation::Warn => {
                    for u in &unknown {
                        ctx.warnings.push(format!("unknown field \"{u}\""));
                    }
                }
                Validation::Ignore => {}
            }
            config = probe;
        }
    }
    let old_req = old.as_ref().map(|o| present(ri, o));
    let subresource = req.subresource.as_deref();
    let merged = crate::ssa::apply(
        &ri.schema,
        old_req.as_ref(),
        &config,
        &manager,
        &ri.api_version(),
        force,
        subresource,
        ri.status_subresource,
        &now_rfc3339(),
    )?;
    let mf = merged
        .pointer("/metadata/managedFields")
        .cloned()
        .unwrap_or(json!([]));
    let (code, v) = match old {
        Some(old) => commit(
            &mut st,
            ri,
            req.namespace.clone(),
            Some(old),
            merged,
            Op::Apply(mf),
            &mut ctx,
        )?,
        None => {
            if subresource.is_some() {
                return Err(SimError::not_found(&ri.group, &ri.resource, &name));
            }
            commit(
                &mut st,
                ri,
                req.namespace.clone(),
                None,
                merged,
                Op::Apply(mf),
                &mut ctx,
            )?
        }
    };
    Ok((code, present(ri, &v), ctx.warnings))
}

fn strip_for_compare(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.remove("resourceVersion");
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf.iter_mut() {
                if let Some(o) = e.as_object_mut() {
                    o.remove("time");
                }
            }
        }
    }
    v
}

fn without_meta_status(v: &Value, drop_status: bool) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        if drop_status {
            o.remove("status");
        }
    }
    v
}

/// The common write pipeline. `new` is in the request's version/form.
pub fn commit(
    st: &mut State,
    ri: &ResourceInfo,
    ns: Option<String>,
    old: Option<Arc<Value>>,
    mut new: Value,
    op: Op,
    ctx: &mut WriteCtx,
) -> Result<(u16, Value), SimError> {
    let now = now_rfc3339();
    let old_req = old.as_ref().map(|o| present(ri, o));
    new["apiVersion"] = json!(ri.api_version());
    new["kind"] = json!(ri.kind);
    if new
        .get("metadata")
        .is_some_and(|m| !m.is_null() && !m.is_object())
    {
        return Err(decode_error(ri, "metadata", "ObjectMeta"));
    }
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    check_metadata(ri, &new)?;
    let is_create = old.is_none();
    // --- metadata ---
    if is_create {
        let meta = new["metadata"].as_object_mut().unwrap();
        let mut name = meta
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            if let Some(g) = meta
                .get("generateName")
                .and_then(|v| v.as_str())
                .filter(|g| !g.is_empty())
            {
                name = format!("{g}{}", crate::util::random_suffix());
                meta.insert("name".into(), json!(name));
            } else {
                return Err(SimError::invalid(
                    &ri.group,
                    &ri.kind,
                    "",
                    &[FieldError::new(
                        "metadata.name",
                        FieldErrorKind::Required,
                        "name or generateName is required",
                    )],
                ));
            }
        }
        let check = if ri.resource == "namespaces" {
            crate::util::check_dns_label(&name)
        } else if ri.resource == "events" || ri.group == "rbac.authorization.k8s.io" {
            None
        } else {
            crate::util::check_dns_subdomain(&name)
        };
        if let Some(msg) = check {
            return Err(SimError::invalid(
                &ri.group,
                &ri.kind,
                &name,
                &[FieldError::new(
                    "metadata.name",
                    FieldErrorKind::Invalid(json!(name)),
                    msg,
                )],
            ));
        }
        if ri.namespaced {
            let nsn = ns.clone().unwrap_or_default();
            if nsn.is_empty() {
                return Err(SimError::bad_request(
                    "the server could not find the requested resource",
                ));
            }
            meta.insert("namespace".into(), json!(nsn));
            match st.namespace(&nsn) {
                None => return Err(SimError::not_found("", "namespaces", &nsn)),
                Some(nsobj) if nsobj.pointer("/metadata/deletionTimestamp").is_some() => {
                    return Err(SimError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {nsn} because it is being terminated",
                        if ri.group.is_empty() { ri.resource.clone() } else { format!("{}.{}", ri.resource, ri.group) }
                    ))
                    .with_details(json!({"name": name, "kind": ri.resource, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {nsn} is being terminated"), "field": "metadata.namespace"}]})));
                }
                _ => {}
            }
        } else {
            meta.remove("namespace");
        }
        if st
            .get(&ri.storage, &ns_key(ri, ns.as_deref()), &name)
            .is_some()
        {
            return Err(SimError::already_exists(&ri.group, &ri.resource, &name));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now));
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("generation");
        if ri.has_generation {
            meta.insert("generation".into(), json!(1));
        }
        if ri.status_subresource
            && ri.resource != "namespaces"
            && let Some(o) = new.as_object_mut()
        {
            o.remove("status");
        }
    } else {
        let old_v = old_req.as_ref().unwrap();
        let subresource_status = ctx.subresource.as_deref() == Some("status");
        if ri.status_subresource {
            if subresource_status {
                // Only .status (and managedFields) change through /status.
                let mut base = old_v.clone();
                match new.get("status") {
                    Some(s) => base["status"] = s.clone(),
                    None => {
                        base.as_object_mut().unwrap().remove("status");
                    }
                }
                if let Some(mf) = new.pointer("/metadata/managedFields") {
                    base["metadata"]["managedFields"] = mf.clone();
                }
                if ri.group == "apps" && ri.resource == "deployments" {
                    // deploymentStatusStrategy.PrepareForUpdate resets only
                    // spec and labels: the controller writes the revision
                    // annotation through /status.
                    match new.pointer("/metadata/annotations") {
                        Some(a) => base["metadata"]["annotations"] = a.clone(),
                        None => {
                            if let Some(m) = base["metadata"].as_object_mut() {
                                m.remove("annotations");
                            }
                        }
                    }
                }
                new = base;
            } else {
                match old_v.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().unwrap().remove("status");
                    }
                }
            }
        }
        let om = old_v["metadata"].as_object().cloned().unwrap_or_default();
        let meta = new["metadata"].as_object_mut().unwrap();
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "name",
            "namespace",
            "generation",
        ] {
            match om.get(k) {
                Some(v) => {
                    meta.insert(k.into(), v.clone());
                }
                None => {
                    meta.remove(k);
                }
            }
        }
        meta.remove("resourceVersion");
        if om.contains_key("deletionTimestamp") {
            // Finalizers may only be removed while deleting.
            let old_f: Vec<Value> = om
                .get("finalizers")
                .and_then(|f| f.as_array())
                .cloned()
                .unwrap_or_default();
            let new_f: Vec<Value> = meta
                .get("finalizers")
                .and_then(|f| f.as_array())
                .cloned()
                .unwrap_or_default();
            if new_f.iter().any(|f| !old_f.contains(f)) {
                let name = om
                    .get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
                return Err(SimError::invalid(
                    &ri.group,
                    &ri.kind,
                    &name,
                    &[FieldError::new(
                        "metadata.finalizers",
                        FieldErrorKind::Forbidden,
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
    }
    let name = new
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    // Built-in kinds are decoded into Go structs: JSON nulls are not kept.
    if !ri.custom && ri.resource != "customresourcedefinitions" {
        drop_nulls(&mut new);
    }
    // --- kind-specific normalization ---
    normalize_kind(ri, &mut new, old_req.as_ref(), is_create)?;
    if ri.group.is_empty() && ri.resource == "services" {
        crate::service::allocate(st, &mut new, old_req.as_ref())
            .map_err(|errs| SimError::invalid("", "Service", &name, &errs))?;
    }
    if ri.resource == "events" {
        let strict = ri.group == "events.k8s.io";
        let core = to_storage(ri, new.clone());
        let old_core = old_req.as_ref().map(|o| to_storage(ri, o.clone()));
        let errs = crate::events::validate(&core, old_core.as_ref(), strict);
        if !errs.is_empty() {
            return Err(SimError::invalid("", "Event", &name, &errs));
        }
    }
    // --- custom resource schema ---
    if ri.custom {
        let mut unknown = vec![];
        crate::schema::prune(&ri.schema, &mut new, "", &mut unknown);
        if !unknown.is_empty() && !matches!(op, Op::Apply(_)) {
            match ctx.validation {
                Validation::Strict => {
                    return Err(SimError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        ri.kind,
                        ri.version,
                        ri.kind,
                        unknown
                            .iter()
                            .map(|u| format!("unknown field \"{u}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Validation::Warn => {
                    for u in &unknown {
                        ctx.warnings.push(format!("unknown field \"{u}\""));
                    }
                }
                Validation::Ignore => {}
            }
        }
        crate::schema::prune_nulls(Some(&ri.schema), &mut new);
        crate::schema::apply_defaults(&ri.schema, &mut new);
        let mut errs = vec![];
        crate::schema::validate(&ri.schema, &new, old_req.as_ref(), &mut errs);
        if let Some(o) = old_req.as_ref() {
            crate::schema::ratchet(&mut errs, &new, o);
        }
        if !errs.is_empty() {
            return Err(SimError::invalid(&ri.group, &ri.kind, &name, &errs));
        }
    }
    if ri.resource == "customresourcedefinitions" {
        crate::schema::validate_crd(&new, &name)?;
    }
    // --- generation ---
    if ri.has_generation && !is_create {
        let old_v = old_req.as_ref().unwrap();
        let old_gen = old_v
            .pointer("/metadata/generation")
            .and_then(|g| g.as_i64())
            .unwrap_or(1);
        let changed = if ri.group == "apps" && ri.resource == "deployments" {
            // deploymentStrategy.PrepareForUpdate: spec or annotations.
            ctx.subresource.as_deref() != Some("status")
                && (old_v.get("spec") != new.get("spec")
                    || old_v
                        .pointer("/metadata/annotations")
                        .filter(|a| a.as_object().is_some_and(|o| !o.is_empty()))
                        != new
                            .pointer("/metadata/annotations")
                            .filter(|a| a.as_object().is_some_and(|o| !o.is_empty())))
        } else {
            without_meta_status(old_v, ri.status_subresource)
                != without_meta_status(&new, ri.status_subresource)
        };
        new["metadata"]["generation"] = json!(if changed { old_gen + 1 } else { old_gen });
    }
    // --- managed fields ---
    match op {
        Op::Apply(mf) => {
            new["metadata"]["managedFields"] = mf;
        }
        Op::Create | Op::Update => {
            // decodeLiveOrNew (managedfields/internal/fieldmanager.go): a
            // subresource write keeps the live managedFields; otherwise
            // `[]`/`[{}]` resets them, decodable entries are taken as given,
            // anything else (absent, undecodable) falls back to the live ones.
            let live_mf = old_req
                .as_ref()
                .and_then(|o| o.pointer("/metadata/managedFields"))
                .cloned();
            let req_mf = new.pointer("/metadata/managedFields").cloned();
            let base = if ctx.subresource.is_some() {
                live_mf
            } else {
                match req_mf {
                    Some(Value::Array(a)) if crate::ssa::is_reset_managed_fields(&a) => {
                        Some(json!([]))
                    }
                    Some(Value::Array(a)) if crate::ssa::decodable_managed_fields(&a) => {
                        Some(Value::Array(a))
                    }
                    _ => live_mf,
                }
            };
            let empty_base = base
                .as_ref()
                .is_none_or(|b| b.as_array().is_none_or(|a| a.is_empty()));
            match base {
                Some(mf) if !empty_base => new["metadata"]["managedFields"] = mf,
                _ => {
                    new["metadata"]
                        .as_object_mut()
                        .unwrap()
                        .remove("managedFields");
                }
            }
            // skipNonAppliedManager: an update of an object without managed
            // fields does not start tracking (until the next apply).
            if !is_create && empty_base {
                // nothing recorded
            } else {
                crate::ssa::record_update(
                    &ri.schema,
                    old_req.as_ref(),
                    &mut new,
                    &ctx.manager,
                    &ri.api_version(),
                    ctx.subresource.as_deref(),
                    ri.status_subresource,
                    &now,
                );
            }
        }
    }
    if ri.resource == "customresourcedefinitions" {
        crate::schema::crd_status(&mut new);
    }
    // --- no-op ---
    if let Some(o) = &old_req
        && strip_for_compare(o) == strip_for_compare(&new)
    {
        return Ok((200, (**old.as_ref().unwrap()).clone()));
    }
    let stored = to_storage(ri, new);
    if ctx.dry_run {
        // Nothing is persisted: an update answers with the current resourceVersion.
        let mut stored = stored;
        if let Some(rv) = old
            .as_ref()
            .and_then(|o| o.pointer("/metadata/resourceVersion"))
        {
            stored["metadata"]["resourceVersion"] = rv.clone();
        }
        return Ok((if is_create { 201 } else { 200 }, stored));
    }
    let key_ns = ns_key(ri, ns.as_deref());
    // --- finalizers: deletion completes when the last finalizer goes ---
    if !is_create
        && stored.pointer("/metadata/deletionTimestamp").is_some()
        && stored
            .pointer("/metadata/finalizers")
            .and_then(|f| f.as_array())
            .is_none_or(|f| f.is_empty())
        && ri.resource != "namespaces"
    {
        // As the real registry does: the update is not persisted, the stored
        // object is deleted (watchers see one DELETED event).
        let last = st
            .remove(&ri.storage, &key_ns, &name)
            .map(|v| (*v).clone())
            .unwrap_or(stored);
        after_delete(st);
        return Ok((200, last));
    }
    let rv = st.next_rv();
    let mut stored = stored;
    stored["metadata"]["resourceVersion"] = json!(rv.to_string());
    let out = st.put(&ri.storage, &key_ns, &name, stored, rv);
    // --- hooks ---
    if ri.resource == "customresourcedefinitions" {
        refresh_crd(st, &out);
    }
    if ri.group == "apps"
        && ri.resource == "deployments"
        && ctx.subresource.as_deref() != Some("status")
    {
        let gen_changed = is_create
            || old.as_ref().and_then(|o| o.pointer("/metadata/generation"))
                != out.pointer("/metadata/generation");
        if gen_changed {
            st.rollout_queue.push((key_ns.clone(), name.clone()));
        }
    }
    Ok((if is_create { 201 } else { 200 }, (*out).clone()))
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            for x in m.values_mut() {
                drop_nulls(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn normalize_kind(
    ri: &ResourceInfo,
    new: &mut Value,
    old: Option<&Value>,
    is_create: bool,
) -> Result<(), SimError> {
    match (ri.group.as_str(), ri.resource.as_str()) {
        ("", "secrets") => {
            if let Some(Value::Object(sd)) =
                new.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                if !new["data"].is_object() {
                    new["data"] = json!({});
                }
                for (k, v) in sd {
                    new["data"][k] = json!(b64_encode(v.as_str().unwrap_or("").as_bytes()));
                }
            }
            // SetDefaults_Secret: an absent or empty type is Opaque.
            if new.get("type").is_none_or(|t| t.is_null() || t == "") {
                new["type"] = json!("Opaque");
            }
            if let Some(o) = old
                && o["immutable"].as_bool() == Some(true)
                && (o.get("data") != new.get("data"))
            {
                let name = new
                    .pointer("/metadata/name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
                return Err(SimError::invalid(
                    "",
                    "Secret",
                    &name,
                    &[FieldError::new(
                        "data",
                        FieldErrorKind::Forbidden,
                        "field is immutable when `immutable` is set",
                    )],
                ));
            }
        }
        ("", "namespaces") => {
            let name = new
                .pointer("/metadata/name")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            new["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            if is_create {
                new["spec"] = json!({"finalizers": ["kubernetes"]});
                new["status"] = json!({"phase": "Active"});
            } else if let Some(o) = old {
                new["spec"] = o.get("spec").cloned().unwrap_or(json!({}));
            }
        }
        ("apps", "deployments") => {
            crate::deployment::defaults(new);
            refuse_invalid(ri, new, crate::deployment::validate(new, old))?;
        }
        ("", "services") => crate::service::defaults(new, old),
        ("networking.k8s.io", "networkpolicies") => {
            crate::network_policy::defaults(new);
            refuse_invalid(ri, new, crate::network_policy::validate(new))?;
        }
        _ => {}
    }
    Ok(())
}

/// The 422 Invalid the server answers when a built-in kind's validation found problems.
fn refuse_invalid(ri: &ResourceInfo, new: &Value, errs: Vec<FieldError>) -> Result<(), SimError> {
    if errs.is_empty() {
        return Ok(());
    }
    let name = new
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    Err(SimError::invalid(&ri.group, &ri.kind, name, &errs))
}

/// Register/unregister the resources of a CRD.
fn refresh_crd(st: &mut State, crd: &Value) {
    let group = crd
        .pointer("/spec/group")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let storage = format!("{group}/{plural}");
    st.resources.retain(|r| !(r.custom && r.storage == storage));
    st.resources.extend(crate::resources::from_crd(crd));
}

fn unregister_crd(st: &mut State, crd: &Value) {
    let group = crd
        .pointer("/spec/group")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let storage = format!("{group}/{plural}");
    st.resources.retain(|r| !(r.custom && r.storage == storage));
    let keys: Vec<(String, String)> = st
        .objects
        .get(&storage)
        .map(|b| b.keys().cloned().collect())
        .unwrap_or_default();
    for (ns, name) in keys {
        st.remove(&storage, &ns, &name);
    }
}

#[derive(Default)]
struct DeleteOpts {
    rv: Option<String>,
    uid: Option<String>,
    dry_run: bool,
    orphan: bool,
}

fn delete_opts(req: &ApiRequest) -> DeleteOpts {
    let mut o = DeleteOpts {
        dry_run: req.q("dryRun") == Some("All"),
        orphan: req.q("propagationPolicy") == Some("Orphan")
            || req.q("orphanDependents") == Some("true"),
        ..Default::default()
    };
    if let Ok(b) = serde_json::from_slice::<Value>(&req.body) {
        o.rv = b
            .pointer("/preconditions/resourceVersion")
            .and_then(|v| v.as_str())
            .map(String::from);
        o.uid = b
            .pointer("/preconditions/uid")
            .and_then(|v| v.as_str())
            .map(String::from);
        match b.get("propagationPolicy").and_then(|p| p.as_str()) {
            Some("Orphan") => o.orphan = true,
            Some(_) => o.orphan = false,
            None => {
                if b.get("orphanDependents").and_then(|x| x.as_bool()) == Some(true) {
                    o.orphan = true;
                }
            }
        }
        if let Some(d) = b.get("dryRun").and_then(|d| d.as_array())
            && d.iter().any(|x| x == "All")
        {
            o.dry_run = true;
        }
    }
    o
}

/// DELETE one object.
pub fn delete(shared: &Shared, req: &ApiRequest) -> Reply {
    let name = req.name.clone().unwrap_or_default();
    let opts = delete_opts(req);
    let mut st = shared.lock();
    match delete_inner(
        &mut st,
        &req.ri,
        &ns_key(&req.ri, req.namespace.as_deref()),
        &name,
        &opts,
    ) {
        Ok((code, v)) => Reply::Json(code, v, vec![]),
        Err(e) => e.into(),
    }
}

fn delete_inner(
    st: &mut State,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
) -> Result<(u16, Value), SimError> {
    let old = st
        .get(&ri.storage, ns, name)
        .ok_or_else(|| SimError::not_found(&ri.group, &ri.resource, name))?;
    if let Some(rv) = &opts.rv
        && Some(rv.as_str())
            != old
                .pointer("/metadata/resourceVersion")
                .and_then(|v| v.as_str())
    {
        return Err(SimError::conflict(&ri.group, &ri.resource, name)
            .with_details(json!({"name": name, "kind": ri.resource})));
    }
    if let Some(uid) = &opts.uid
        && Some(uid.as_str()) != old.pointer("/metadata/uid").and_then(|v| v.as_str())
    {
        return Err(SimError::conflict(&ri.group, &ri.resource, name));
    }
    if opts.dry_run {
        return Ok((200, present(ri, &old)));
    }
    let has_finalizers = old
        .pointer("/metadata/finalizers")
        .and_then(|f| f.as_array())
        .is_some_and(|f| !f.is_empty());
    if ri.resource == "namespaces" && ri.group.is_empty() {
        let mut o = (*old).clone();
        if o.pointer("/metadata/deletionTimestamp").is_none() {
            o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            o["status"]["phase"] = json!("Terminating");
            let rv = st.next_rv();
            o["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.put(&ri.storage, "", name, o.clone(), rv);
        }
        after_delete(st);
        let cur = st
            .get(&ri.storage, "", name)
            .map(|v| (*v).clone())
            .unwrap_or(o);
        return Ok((200, present(ri, &cur)));
    }
    if has_finalizers {
        let mut o = (*old).clone();
        if o.pointer("/metadata/deletionTimestamp").is_none() {
            o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let rv = st.next_rv();
            o["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.put(&ri.storage, ns, name, o.clone(), rv);
        }
        return Ok((200, present(ri, &o)));
    }
    if opts.orphan
        && let Some(uid) = old.pointer("/metadata/uid").and_then(|u| u.as_str())
    {
        orphan_dependents(st, uid);
    }
    let last = st.remove(&ri.storage, ns, name).unwrap();
    if ri.resource == "customresourcedefinitions" {
        unregister_crd(st, &last);
    }
    after_delete(st);
    if ri.resource == "pods" {
        return Ok((200, present(ri, &last)));
    }
    let mut details = json!({"name": name, "group": ri.group, "kind": ri.resource, "uid": last.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)});
    if ri.group.is_empty() {
        details.as_object_mut().unwrap().remove("group");
    }
    Ok((
        200,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
    ))
}

/// `propagationPolicy: Orphan`: the garbage collector removes the owner's
/// reference from its dependents (which then survive it).
fn orphan_dependents(st: &mut State, uid: &str) {
    let mut hits = vec![];
    for (storage, b) in &st.objects {
        for ((ns, name), o) in b {
            if o.pointer("/metadata/ownerReferences")
                .and_then(|r| r.as_array())
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            {
                hits.push((storage.clone(), ns.clone(), name.clone()));
            }
        }
    }
    for (storage, ns, name) in hits {
        let Some(o) = st.get(&storage, &ns, &name) else {
            continue;
        };
        let mut o = (*o).clone();
        if let Some(refs) = o
            .pointer_mut("/metadata/ownerReferences")
            .and_then(|r| r.as_array_mut())
        {
            refs.retain(|r| r["uid"] != uid);
            if refs.is_empty()
                && let Some(m) = o["metadata"].as_object_mut()
            {
                m.remove("ownerReferences");
            }
        }
        let rv = st.next_rv();
        o["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.put(&storage, &ns, &name, o, rv);
    }
}

/// Garbage collection and namespace termination after deletions.
fn after_delete(st: &mut State) {
    for _round in 0..16 {
        let mut changed = false;
        // Garbage collector: dependents whose owners are all gone.
        let mut uids = std::collections::HashSet::new();
        for b in st.objects.values() {
            for o in b.values() {
                if let Some(u) = o.pointer("/metadata/uid").and_then(|v| v.as_str()) {
                    uids.insert(u.to_string());
                }
            }
        }
        let mut doomed = vec![];
        for (storage, b) in &st.objects {
            for ((ns, name), o) in b {
                if let Some(refs) = o
                    .pointer("/metadata/ownerReferences")
                    .and_then(|r| r.as_array())
                    && !refs.is_empty()
                    && refs
                        .iter()
                        .all(|r| !r["uid"].as_str().is_some_and(|u| uids.contains(u)))
                    && o.pointer("/metadata/deletionTimestamp").is_none()
                {
                    doomed.push((storage.clone(), ns.clone(), name.clone()));
                }
            }
        }
        // Terminating namespaces: delete their content.
        let terminating: Vec<String> = st
            .objects
            .get("/namespaces")
            .map(|b| {
                b.values()
                    .filter(|n| n.pointer("/metadata/deletionTimestamp").is_some())
                    .filter_map(|n| {
                        n.pointer("/metadata/name")
                            .and_then(|v| v.as_str())
                            .map(String::from)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for nsn in &terminating {
            let mut any = false;
            for (storage, b) in &st.objects {
                for ((ns, name), o) in b {
                    if ns == nsn {
                        any = true;
                        if o.pointer("/metadata/deletionTimestamp").is_none() {
                            doomed.push((storage.clone(), ns.clone(), name.clone()));
                        }
                    }
                }
            }
            if !any {
                st.remove("/namespaces", "", nsn);
                changed = true;
            }
        }
        for (storage, ns, name) in doomed {
            let Some(o) = st.get(&storage, &ns, &name) else {
                continue;
            };
            let has_f = o
                .pointer("/metadata/finalizers")
                .and_then(|f| f.as_array())
                .is_some_and(|f| !f.is_empty());
            if has_f {
                let mut o = (*o).clone();
                o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let rv = st.next_rv();
                o["metadata"]["resourceVersion"] = json!(rv.to_string());
                st.put(&storage, &ns, &name, o, rv);
            } else if let Some(last) = st.remove(&storage, &ns, &name)
                && storage == "apiextensions.k8s.io/customresourcedefinitions"
            {
                unregister_crd(st, &last);
            }
            changed = true;
        }
        if !changed {
            break;
        }
    }
}

/// DELETE a collection.
pub fn delete_collection(shared: &Shared, req: &ApiRequest) -> Reply {
    let filters = match Filters::from_req(req) {
        Ok(f) => f,
        Err(e) => return e.into(),
    };
    let opts = delete_opts(req);
    let mut st = shared.lock();
    let keys: Vec<(String, String)> = st
        .objects
        .get(&req.ri.storage)
        .map(|b| {
            b.iter()
                .filter(|(_, o)| filters.matches(o))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut items = vec![];
    for (ns, name) in keys {
        if let Ok((_, v)) = delete_inner(&mut st, &req.ri, &ns, &name, &opts)
            && v["kind"] != "Status"
        {
            items.push(v);
        }
    }
    let rv = st.rv;
    Reply::ok(
        json!({"kind": format!("{}List", req.ri.kind), "apiVersion": req.ri.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    )
}

/// Objects that exist from the start (`default`, `kube-system`, `kube-public` namespaces).
pub fn bootstrap(shared: &Shared) {
    let mut st = shared.lock();
    let ri = st.resource("", "v1", "namespaces").unwrap();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let mut ctx = WriteCtx {
            manager: "kube-apiserver".into(),
            subresource: None,
            dry_run: false,
            validation: Validation::Ignore,
            warnings: vec![],
        };
        let _ = create_inner(
            &mut st,
            &ri,
            None,
            json!({"metadata": {"name": ns}}),
            &mut ctx,
        );
    }
}

/// `SimHandle::create_object`.
pub fn direct_create(
    shared: &Shared,
    api_version: &str,
    kind: &str,
    obj: Value,
) -> Result<Value, SimError> {
    let mut st = shared.lock();
    let ri = st.resource_for_kind(api_version, kind).ok_or_else(|| {
        SimError::new(
            404,
            "NotFound",
            format!("no resource for {api_version}, Kind={kind}"),
        )
    })?;
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(|v| v.as_str())
        .map(String::from);
    let mut obj = obj;
    if obj.get("apiVersion").is_none() {
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(kind);
    }
    let mut ctx = WriteCtx {
        manager: "kube-sim".into(),
        subresource: None,
        dry_run: false,
        validation: Validation::Strict,
        warnings: vec![],
    };
    let ns = if ri.namespaced {
        Some(ns.unwrap_or_else(|| "default".into()))
    } else {
        None
    };
    let (_, v) = create_inner(&mut st, &ri, ns.as_deref(), obj, &mut ctx)?;
    drop(st);
    shared.deploy_notify.notify_one();
    Ok(present(&ri, &v))
}

/// `SimHandle::get_object`.
pub fn direct_get(
    shared: &Shared,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<Value> {
    let st = shared.lock();
    let ri = st.resource_for_kind(api_version, kind)?;
    let o = st.get(&ri.storage, &ns_key(&ri, namespace), name)?;
    Some(present(&ri, &o))
}

/// Write a status through the store as a controller would (used by the
/// Deployment emulation): Update by `manager` on the status subresource.
pub fn controller_status_write(
    st: &mut State,
    ri: &ResourceInfo,
    ns: &str,
    name: &str,
    status: Value,
    manager: &str,
    annotations: Option<Value>,
) -> Option<Value> {
    let old = st.get(&ri.storage, ns, name)?;
    let mut new = (*old).clone();
    new["status"] = status;
    if let Some(a) = annotations {
        new["metadata"]["annotations"] = a;
    }
    let mut ctx = WriteCtx {
        manager: manager.into(),
        subresource: Some("status".into()),
        dry_run: false,
        validation: Validation::Ignore,
        warnings: vec![],
    };
    commit(
        st,
        ri,
        Some(ns.to_string()),
        Some(old),
        new,
        Op::Update,
        &mut ctx,
    )
    .ok()
    .map(|(_, v)| v)
}

/// The `autoscaling/v1` Scale view of a Deployment.
fn to_scale(d: &Value) -> Value {
    let sel = d
        .pointer("/spec/selector/matchLabels")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = &d["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"], "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": d.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": d.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": sel}
    })
}

fn scale_write(
    shared: &Shared,
    req: &ApiRequest,
    f: impl FnOnce(&Value) -> Result<Value, SimError>,
) -> Result<Reply, SimError> {
    let ri = &req.ri;
    let name = req.name.clone().unwrap_or_default();
    let mut ctx = WriteCtx::from_req(req, "unknown");
    let mut st = shared.lock();
    let old = st
        .get(&ri.storage, &ns_key(ri, req.namespace.as_deref()), &name)
        .ok_or_else(|| SimError::not_found(&ri.group, &ri.resource, &name))?;
    let old_scale = to_scale(&old);
    let new_scale = f(&old_scale)?;
    if let Some(rv) = new_scale
        .pointer("/metadata/resourceVersion")
        .and_then(|v| v.as_str())
        && !rv.is_empty()
        && Some(rv)
            != old
                .pointer("/metadata/resourceVersion")
                .and_then(|v| v.as_str())
    {
        return Err(SimError::conflict(&ri.group, &ri.resource, &name));
    }
    let replicas = new_scale
        .pointer("/spec/replicas")
        .cloned()
        .unwrap_or(json!(1));
    if !replicas.is_i64() || replicas.as_i64().unwrap_or(-1) < 0 {
        return Err(SimError::invalid(
            "autoscaling",
            "Scale",
            &name,
            &[FieldError::new(
                "spec.replicas",
                FieldErrorKind::Invalid(replicas),
                "must be greater than or equal to 0",
            )],
        ));
    }
    let mut new = present(ri, &old);
    new["spec"]["replicas"] = replicas;
    let (_, v) = commit(
        &mut st,
        ri,
        req.namespace.clone(),
        Some(old),
        new,
        Op::Update,
        &mut ctx,
    )?;
    Ok(Reply::Json(200, to_scale(&v), ctx.warnings))
}

fn decode_error(ri: &ResourceInfo, field: &str, go_type: &str) -> SimError {
    SimError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: json: cannot unmarshal into Go struct field {}.{field} of type {go_type}",
        ri.kind, ri.version, ri.kind, ri.kind
    ))
}

/// Reject metadata whose shape the real server could not decode.
fn check_metadata(ri: &ResourceInfo, obj: &Value) -> Result<(), SimError> {
    let Some(m) = obj.get("metadata").and_then(|m| m.as_object()) else {
        return Ok(());
    };
    for (k, ty) in [
        ("labels", "map[string]string"),
        ("annotations", "map[string]string"),
    ] {
        if let Some(v) = m.get(k)
            && !v.is_null()
            && !v
                .as_object()
                .is_some_and(|o| o.values().all(|x| x.is_string()))
        {
            return Err(decode_error(ri, &format!("metadata.{k}"), ty));
        }
    }
    if let Some(v) = m.get("finalizers")
        && !v.is_null()
        && !v
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x.is_string()))
    {
        return Err(decode_error(ri, "metadata.finalizers", "[]string"));
    }
    if let Some(v) = m.get("ownerReferences")
        && !v.is_null()
        && !v
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x.is_object()))
    {
        return Err(decode_error(
            ri,
            "metadata.ownerReferences",
            "[]v1.OwnerReference",
        ));
    }
    for k in [
        "name",
        "generateName",
        "namespace",
        "resourceVersion",
        "uid",
    ] {
        if let Some(v) = m.get(k)
            && !v.is_null()
            && !v.is_string()
        {
            return Err(decode_error(ri, &format!("metadata.{k}"), "string"));
        }
    }
    Ok(())
}
