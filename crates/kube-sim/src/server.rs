//! HTTP routing: parses Kubernetes REST paths into request info, counts requests
//! and dispatches to discovery, OpenAPI, read, watch and write handlers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use serde_json::Value;

use crate::Shared;
use crate::errors::SimError;
use crate::resources::ResourceInfo;

/// The user a request is made as (from a bearer token). With
/// [`SimConfig::rbac`](crate::SimConfig::rbac) off every request is allowed and
/// only `token` is set.
#[derive(Debug, Clone, Default)]
pub struct RequestUser {
    /// Bearer token, if any.
    pub token: Option<String>,
    /// The authenticated user's name (RBAC on only).
    pub name: Option<String>,
    /// The authenticated user's groups (RBAC on only).
    pub groups: Vec<String>,
}

/// What the client asked to get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Full objects.
    Full,
    /// `meta.k8s.io/v1` Table.
    Table {
        /// rows[].object as PartialObjectMetadata (`includeObject=Metadata`, default), full object, or none.
        include: Include,
    },
    /// PartialObjectMetadata(List).
    Metadata,
}

/// Table row object inclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// No object.
    None,
    /// PartialObjectMetadata.
    Metadata,
    /// Full object.
    Object,
}

/// A parsed resource request.
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Kubernetes verb.
    pub verb: &'static str,
    /// Resource.
    pub ri: ResourceInfo,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Name from the path.
    pub name: Option<String>,
    /// Subresource.
    pub subresource: Option<String>,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Output negotiation.
    pub output: Output,
    /// Caller.
    pub user: RequestUser,
}

impl ApiRequest {
    /// Query parameter.
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(|s| s.as_str())
    }
    /// Boolean query parameter.
    pub fn q_bool(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true") | Some("1"))
    }
    /// User-Agent header.
    pub fn user_agent(&self) -> &str {
        self.headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// Content-Type header (without parameters).
    pub fn content_type(&self) -> String {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    }
    /// Counter resource name (`deployments/status`).
    pub fn counter_resource(&self) -> String {
        match &self.subresource {
            Some(s) => format!("{}/{}", self.ri.resource, s),
            None => self.ri.resource.clone(),
        }
    }
}

/// A handler's answer.
pub enum Reply {
    /// JSON body with status code and warnings.
    Json(u16, Value, Vec<String>),
    /// Streaming body (watch).
    Stream(Body),
    /// Raw JSON with a custom content type.
    Raw(u16, String, &'static str),
}

impl Reply {
    /// 200 with JSON.
    pub fn ok(v: Value) -> Self {
        Reply::Json(200, v, vec![])
    }
}

impl From<SimError> for Reply {
    fn from(e: SimError) -> Self {
        Reply::Json(e.code, e.to_status(), vec![])
    }
}

/// Build the router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn parse_query(uri: &Uri) -> HashMap<String, String> {
    let mut m = HashMap::new();
    if let Some(q) = uri.query() {
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(percent_decode(k), percent_decode(v));
        }
    }
    m
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let h = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn negotiate(headers: &HeaderMap, query: &HashMap<String, String>) -> Output {
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The first acceptable media type wins.
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=Table") && p.contains("g=meta.k8s.io") {
            let include = match query.get("includeObject").map(|s| s.as_str()) {
                Some("None") => Include::None,
                Some("Object") => Include::Object,
                _ => Include::Metadata,
            };
            return Output::Table { include };
        }
        if p.contains("as=PartialObjectMetadata") {
            return Output::Metadata;
        }
        if p.starts_with("application/json") || p.starts_with("*/*") || p.is_empty() {
            return Output::Full;
        }
    }
    Output::Full
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let path = uri.path().trim_end_matches('/').to_string();
    let query = parse_query(&uri);
    tracing::debug!(%method, %uri, "request");
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(|s| s.as_str()).collect();
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let user = match authenticate(&shared, token, &segs) {
        Ok(u) => u,
        Err(e) => return into_response(e.into()),
    };
    // Non-resource endpoints.
    match segs.as_slice() {
        ["version"] => return into_response(Reply::ok(crate::discovery::version())),
        ["healthz"] | ["readyz"] | ["livez"] => {
            return into_response(Reply::Raw(200, "ok".into(), "text/plain"));
        }
        ["api"] => {
            return discovered(&shared, &segs, Reply::ok(crate::discovery::api_versions()));
        }
        ["apis"] => {
            let reply = Reply::ok(crate::discovery::api_group_list(&shared.lock().resources));
            return discovered(&shared, &segs, reply);
        }
        ["api", "v1"] => {
            let reply = Reply::ok(crate::discovery::resource_list(
                &shared.lock().resources,
                "",
                "v1",
            ));
            return discovered(&shared, &segs, reply);
        }
        ["apis", group] => {
            let reply = match crate::discovery::api_group(&shared.lock().resources, group) {
                Some(v) => Reply::ok(v),
                None => not_found_path(),
            };
            return discovered(&shared, &segs, reply);
        }
        ["apis", group, version] => {
            let reply = {
                let st = shared.lock();
                let known = st
                    .resources
                    .iter()
                    .any(|r| r.group == *group && r.version == *version);
                if known {
                    Reply::ok(crate::discovery::resource_list(
                        &st.resources,
                        group,
                        version,
                    ))
                } else {
                    not_found_path()
                }
            };
            return discovered(&shared, &segs, reply);
        }
        ["openapi", "v3"] => {
            let st = shared.lock();
            return into_response(Reply::ok(crate::openapi::index(&st.resources)));
        }
        ["openapi", "v3", rest @ ..] => {
            let st = shared.lock();
            let gv = rest.join("/");
            return into_response(match crate::openapi::document(&st.resources, &gv) {
                Some(v) => Reply::ok(v),
                None => not_found_path(),
            });
        }
        ["openapi", "v2"] => return into_response(not_found_path()),
        _ => {}
    }
    let _ = accept;
    // Resource paths.
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return into_response(not_found_path()),
    };
    let (namespace, rest): (Option<String>, &[&str]) = match rest {
        ["namespaces", ns, r, tail @ ..]
            if !(group.is_empty() && (*r == "status" || *r == "finalize") && tail.is_empty()) =>
        {
            (Some(ns.to_string()), &rest[2..])
        }
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [r] => (*r, None, None),
        [r, n] => (*r, Some(n.to_string()), None),
        [r, n, s] => (*r, Some(n.to_string()), Some(s.to_string())),
        _ => return into_response(not_found_path()),
    };
    let ri = {
        let st = shared.lock();
        st.resource(group, version, resource)
    };
    let Some(ri) = ri else {
        return into_response(not_found_path());
    };
    if namespace.is_some() && !ri.namespaced {
        return into_response(not_found_path());
    }
    if let Some(s) = &sub {
        let ok = (s == "status" && ri.status_subresource) || (s == "scale" && ri.scale_subresource);
        if !ok {
            return into_response(not_found_path());
        }
    }
    let is_watch = matches!(
        query.get("watch").map(|s| s.as_str()),
        Some("true") | Some("1")
    );
    let verb: &'static str = match (&method, name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if is_watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => {
            let e = SimError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            );
            let req_res = ri.resource.clone();
            shared
                .counters
                .lock()
                .unwrap()
                .record(method.as_str(), &req_res, 405);
            return into_response(e.into());
        }
    };
    let output = negotiate(&headers, &query);
    let req = ApiRequest {
        method,
        verb,
        ri,
        namespace,
        name,
        subresource: sub,
        query,
        headers,
        body,
        output,
        user,
    };
    let mut req = req;
    let mut ct = req.content_type();
    if ct == "application/vnd.kubernetes.protobuf"
        && matches!(verb, "create" | "update")
        && let Ok(v) = crate::proto::decode(&req.body)
    {
        req.body = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        ct = "application/json".into();
    }
    let reply = if let Err(e) = authorize(&shared, &req) {
        e.into()
    } else if shared.take_fault(verb, &req.counter_resource()) {
        SimError::internal("injected fault: the request failed and changed nothing").into()
    } else if !req.body.is_empty()
        && matches!(verb, "create" | "update")
        && !(ct.contains("json") || ct.contains("yaml"))
    {
        SimError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct})"),
        )
        .into()
    } else {
        match verb {
            "get" => crate::write::get(&shared, &req),
            "list" => crate::write::list(&shared, &req),
            "watch" => crate::watch::watch(&shared, &req),
            "create" => crate::write::create(&shared, &req),
            "update" => crate::write::update(&shared, &req),
            "patch" => crate::write::patch(&shared, &req),
            "delete" => crate::write::delete(&shared, &req),
            _ => crate::write::delete_collection(&shared, &req),
        }
    };
    tracing::debug!(
        method = %req.method,
        verb = req.verb,
        resource = %req.counter_resource(),
        user = req.user.name.as_deref().unwrap_or(""),
        "handled"
    );
    let code = match &reply {
        Reply::Json(c, _, _) => *c,
        Reply::Raw(c, _, _) => *c,
        Reply::Stream(_) => 200,
    };
    shared
        .counters
        .lock()
        .unwrap()
        .record(verb, &req.counter_resource(), code);
    if verb != "watch" {
        // Deployment rollouts are driven by writes.
        shared.deploy_notify.notify_one();
    }
    into_response(reply)
}

/// Authentication: with RBAC on, a request needs a token the simulator issued
/// (401 otherwise), except the health endpoints.
fn authenticate(
    shared: &Shared,
    token: Option<String>,
    segs: &[&str],
) -> Result<RequestUser, SimError> {
    if !shared.config.rbac {
        return Ok(RequestUser {
            token,
            ..Default::default()
        });
    }
    let info = token.as_deref().and_then(|t| shared.tokens.lookup(t));
    match info {
        Some(u) => Ok(RequestUser {
            token,
            name: Some(u.name),
            groups: u.groups,
        }),
        None if token.is_none() && matches!(segs, ["healthz"] | ["readyz"] | ["livez"]) => {
            Ok(RequestUser::default())
        }
        None => Err(crate::rbac::unauthorized()),
    }
}

/// The authorization hook: the RBAC authorizer when RBAC is on, else allow-all.
/// A server-side apply that would create the object also needs `create`.
fn authorize(shared: &Shared, req: &ApiRequest) -> Result<(), SimError> {
    if !shared.config.rbac {
        return Ok(());
    }
    let user = crate::rbac::UserInfo {
        name: req.user.name.clone().unwrap_or_default(),
        groups: req.user.groups.clone(),
    };
    let selector_name = if matches!(req.verb, "list" | "watch") {
        crate::rbac::selector_name(req.q("fieldSelector"))
    } else {
        None
    };
    // As the real RequestInfoFactory: `/api/v1/namespaces/<ns>[/status]` is in namespace <ns>.
    let namespace = if req.ri.group.is_empty() && req.ri.resource == "namespaces" {
        req.name.as_deref()
    } else {
        req.namespace.as_deref()
    };
    let mut attrs = crate::rbac::Attributes {
        user: &user,
        verb: req.verb,
        group: &req.ri.group,
        resource: &req.ri.resource,
        subresource: req.subresource.as_deref(),
        namespace,
        name: req.name.as_deref().or(selector_name.as_deref()),
    };
    let st = shared.lock();
    if let Err(reason) = crate::rbac::authorize(&st, &attrs) {
        return Err(crate::rbac::forbidden(&attrs, &reason));
    }
    if req.verb == "patch"
        && req.subresource.is_none()
        && req.content_type() == "application/apply-patch+yaml"
    {
        let ns = if req.ri.namespaced {
            req.namespace.as_deref().unwrap_or("")
        } else {
            ""
        };
        let name = req.name.as_deref().unwrap_or("");
        if st.get(&req.ri.storage, ns, name).is_none() {
            attrs.verb = "create";
            if let Err(reason) = crate::rbac::authorize(&st, &attrs) {
                return Err(crate::rbac::forbidden_create_on_patch(&attrs, &reason));
            }
        }
    }
    Ok(())
}

/// Answers a discovery request, counted like a resource request under its path as
/// `("get", "/apis/<group>/<version>")` (the API server counts and audits them as non-resource
/// URLs), so tests can see how often a client asks.
fn discovered(shared: &Arc<Shared>, segs: &[&str], reply: Reply) -> Response<Body> {
    let code = match &reply {
        Reply::Json(c, _, _) | Reply::Raw(c, _, _) => *c,
        Reply::Stream(_) => 200,
    };
    shared
        .counters
        .lock()
        .unwrap()
        .record("get", &format!("/{}", segs.join("/")), code);
    into_response(reply)
}

fn not_found_path() -> Reply {
    SimError::new(404, "NotFound", "the server could not find the requested resource")
        .with_details(serde_json::json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}))
        .into()
}

fn into_response(reply: Reply) -> Response<Body> {
    match reply {
        Reply::Json(code, v, warnings) => {
            let body = serde_json::to_vec(&v).unwrap_or_default();
            let mut r = Response::new(Body::from(body));
            *r.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            for w in warnings {
                if let Ok(h) = HeaderValue::from_str(&format!("299 - {:?}", w)) {
                    r.headers_mut().append("warning", h);
                }
            }
            r
        }
        Reply::Raw(code, s, ct) => {
            let mut r = Response::new(Body::from(s));
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static(ct));
            r
        }
        Reply::Stream(body) => {
            let mut r = Response::new(body);
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r.headers_mut().insert(
                "cache-control",
                HeaderValue::from_static("no-cache, private"),
            );
            r
        }
    }
}
