//! A stateful simulator of what the oidc-refresh-operator uses of a Duende IdentityServer
//! deployment administered with Skoruba's open-source `Duende.IdentityServer.Admin` API, built from
//! the contract excerpts in `contracts/` (see `docs/fidelity/duende.md` for every known
//! difference):
//!
//! - `POST /connect/token` (the STS): the client-credentials grant. The client authenticates with
//!   HTTP Basic (form-urlencoded, as IdentityServer decodes it) or `client_id`/`client_secret` in
//!   the body; an unknown client or wrong secret is 400 `invalid_client`, a scope the client may
//!   not request is 400 `invalid_scope`, another grant 400 `unsupported_grant_type`. The token is
//!   a JWT whose `aud` is the API resource, whose `scope` is an array of granted scopes, and which
//!   carries the client's claims with the client-claims prefix (`client_role`).
//! - The admin API, `[Route("api/[controller]")]` with case-insensitive routing:
//!   `GET /api/Clients?searchText&page&pageSize` (`ClientId` or `ClientName` contains the text,
//!   ordered by `Id`; list items carry only `properties`, every other child list empty),
//!   `GET /api/Clients/{id}` (`id` the integer key; an unknown id is **400**, a non-integer 400),
//!   `PUT /api/Clients` (the id in the body; a destructive full replace: omitted properties take
//!   the DTO defaults, child lists are deleted and re-inserted with new ids; 204),
//!   `POST /api/Clients` (201). Errors are `application/problem+json` `ValidationProblemDetails`.
//! - JWT bearer authentication and the `RequireAdministratorRole` policy: no or a bad token is 401
//!   with an empty body and `WWW-Authenticate: Bearer`; a token without a `role` or `client_role`
//!   claim equal to the administration role, or without a `scope` claim equal to the API name, is
//!   403 with an empty body.
//!
//! Test hooks (the shared ones are [`sim_kit::Harness`]'s, which [`SimHandle`] dereferences to):
//! latency, scripted failures and throttling for admin API calls (answered with a plain-text
//! body, as a reverse proxy or Kestrel would give), counters per (method, route template,
//! status), every admin API request body recorded with a strict contract check
//! ([`validate_recorded_bodies`](sim_kit::Harness::validate_recorded_bodies)), token expiry, and
//! direct state edits (as another administrator or a database edit would).

pub mod dto;
pub mod node;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use sim_kit::{
    Contract, CountRules, Harness, Listener, Observe, Tokens, form_decode, lock, percent_decode,
};

pub use sim_kit::SandboxSeed;

/// Route template of the STS token endpoint.
pub const TOKEN_ROUTE: &str = "/connect/token";
/// Route template of the client list (and of PUT/POST).
pub const CLIENTS_ROUTE: &str = "/api/Clients";
/// Route template of one client.
pub const CLIENT_ROUTE: &str = "/api/Clients/{id}";
/// The admin API's name: its API resource, audience and required scope (`OidcApiName`).
pub const API_NAME: &str = "skoruba_identity_admin_api";
/// The default `AdministrationRole`.
pub const ADMIN_ROLE: &str = "SkorubaIdentityAdminAdministrator";
/// `RefreshTokenUsage.ReUse`.
pub const REUSE: i64 = 0;
/// `RefreshTokenUsage.OneTimeOnly`.
pub const ONE_TIME_ONLY: i64 = 1;
/// `TokenExpiration.Sliding`.
pub const SLIDING: i64 = 0;
/// `TokenExpiration.Absolute`.
pub const ABSOLUTE: i64 = 1;

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Listen address (default `127.0.0.1:0`).
    pub addr: SocketAddr,
    /// Delay before every answer.
    pub latency: Duration,
    /// `expires_in` of issued tokens (default 3600 s).
    pub token_lifetime: Duration,
    /// `AdminApiConfiguration.AdministrationRole`.
    pub admin_role: String,
    /// Emit `scope` as one space-delimited string (`EmitScopesAsSpaceDelimitedStringInJwt`): the
    /// admin API's policy then matches only a token holding exactly one scope.
    pub space_delimited_scopes: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            addr: sim_kit::LOOPBACK,
            latency: Duration::ZERO,
            token_lifetime: Duration::from_secs(3600),
            admin_role: ADMIN_ROLE.into(),
            space_delimited_scopes: false,
        }
    }
}

/// Duende's calls, for the counters: the STS token endpoint's calls are token requests.
pub struct DuendeRoutes;

impl CountRules for DuendeRoutes {
    const TOKEN_ROUTE: Option<&'static str> = Some(TOKEN_ROUTE);
}

/// Request counts by (method, route template, status), e.g. `("PUT", "/api/Clients", 204)`.
pub type SimCounters = sim_kit::Counters<DuendeRoutes>;

/// Duende's contract for recorded bodies: every admin API body is checked strictly against
/// `ClientApiDto` (the whole object, nothing else).
pub struct DuendeContract;

impl Contract for DuendeContract {
    fn check(_method: &str, _route: &str, body: &Value) -> Result<(), Vec<String>> {
        dto::validate_strict(body)
    }
}

/// One admin API request body the simulator received, with its method and route template.
pub type RecordedBody = sim_kit::RequestBody<DuendeContract>;

/// A client of the STS that can get admin API tokens.
#[derive(Clone, Debug)]
struct StsClient {
    secret: String,
    scopes: Vec<String>,
    /// Client claims (type, value), emitted with the `client_` prefix.
    claims: Vec<(String, String)>,
}

struct SimState {
    /// `Clients` rows as the API shows them, by `Id`.
    clients: BTreeMap<i64, Map<String, Value>>,
    next_id: i64,
    next_child_id: i64,
    sts_clients: HashMap<String, StsClient>,
    /// Issued access tokens and their claims.
    tokens: Tokens<Value>,
    token_lifetime: Duration,
    admin_role: String,
    space_delimited_scopes: bool,
    sandbox: Option<i64>,
}

struct Inner {
    state: Mutex<SimState>,
    kit: Harness<DuendeRoutes, RecordedBody>,
}

type Sim = Arc<Inner>;

/// Handle to a running simulator. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

/// A random-looking string of `len` characters from `[0-9A-Za-z]`.
pub fn random_id(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(N.fetch_add(1, Ordering::Relaxed));
        let mut x = h.finish();
        for _ in 0..10 {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[(x % 62) as usize] as char);
            x /= 62;
        }
    }
    out
}

/// Starts the simulator on the current tokio runtime, with no clients.
pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = Listener::bind(config.addr).await?;
    let inner = Arc::new(Inner {
        state: Mutex::new(SimState {
            clients: BTreeMap::new(),
            next_id: 1,
            next_child_id: 1,
            sts_clients: HashMap::new(),
            tokens: Tokens::default(),
            token_lifetime: config.token_lifetime,
            admin_role: config.admin_role,
            space_delimited_scopes: config.space_delimited_scopes,
            sandbox: None,
        }),
        kit: Harness::new(listener.base_url(), config.latency),
    });
    let app = observed(&inner).apply(Router::new().fallback(dispatch).with_state(inner.clone()));
    inner.kit.serve(listener, app);
    Ok(SimHandle { inner })
}

/// A confidential web client as an administrator would create it for Coder: authorization code,
/// Coder's callback, `openid profile email`, everything else at the DTO defaults (no offline
/// access, one-time refresh tokens with an absolute lifetime).
pub fn web_client(client_id: &str, client_name: &str) -> Value {
    let mut c = dto::defaults();
    c.insert("clientId".into(), json!(client_id));
    c.insert("clientName".into(), json!(client_name));
    c.insert("allowedGrantTypes".into(), json!(["authorization_code"]));
    c.insert(
        "redirectUris".into(),
        json!(["https://coder.example.com/api/v2/users/oidc/callback"]),
    );
    c.insert(
        "allowedScopes".into(),
        json!(["openid", "profile", "email"]),
    );
    Value::Object(c)
}

/// The route template of a path (routing is case-insensitive), for counters.
pub fn route_template(path: &str) -> String {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(str::to_ascii_lowercase)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["connect", "token"] => TOKEN_ROUTE.into(),
        ["api", "clients"] => CLIENTS_ROUTE.into(),
        ["api", "clients", _] => CLIENT_ROUTE.into(),
        _ => "<unmatched>".into(),
    }
}

fn is_api(route: &str) -> bool {
    route.starts_with("/api/")
}

/// The shared hooks around every call: scripted failures hit the admin API only and answer with
/// a plain-text body, as a reverse proxy or Kestrel would give.
fn observed(sim: &Sim) -> Observe {
    sim.kit
        .observe(route_template)
        .faults_on(is_api)
        .fault_answer(|status| {
            (
                status,
                status.canonical_reason().unwrap_or("error").to_string(),
            )
                .into_response()
        })
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, SimState> {
        lock(&self.state)
    }
}

fn trace_id() -> String {
    format!(
        "00-{}-{}-00",
        random_id(32).to_ascii_lowercase(),
        random_id(16).to_ascii_lowercase()
    )
}

fn problem(body: Value) -> Response {
    let mut r = (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json; charset=utf-8"),
    );
    r
}

/// The automatic `[ApiController]` 400 (model binding and `[Required]`).
fn validation_problem(errors: &[dto::BindError]) -> Response {
    let mut map = Map::new();
    for e in errors {
        map.entry(e.key.clone())
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("an array")
            .push(json!(e.message));
    }
    problem(json!({
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": map,
        "traceId": trace_id(),
    }))
}

/// `ControllerExceptionFilterAttribute`'s 400 for a user-friendly exception.
fn service_problem(path: &str, key: &str, message: &str) -> Response {
    problem(json!({
        "title": "One or more model validation errors occurred.",
        "status": 400,
        "instance": path,
        "errors": {key: [message]},
        "traceId": trace_id(),
    }))
}

fn oauth_error(error: &str, description: Option<&str>) -> Response {
    let mut body = json!({"error": error});
    if let Some(d) = description {
        body["error_description"] = json!(d);
    }
    let mut r = (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn unauthorized(challenge: &str) -> Response {
    let mut r = StatusCode::UNAUTHORIZED.into_response();
    if let Ok(v) = HeaderValue::from_str(challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

async fn dispatch(
    State(sim): State<Sim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = route_template(uri.path());
    if route == TOKEN_ROUTE {
        if method != Method::POST {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        return token(&sim, &headers, &body);
    }
    if !is_api(&route) {
        return StatusCode::NOT_FOUND.into_response();
    }
    if let Some(refusal) = authorize(&sim, &headers) {
        return refusal;
    }
    if method != Method::GET {
        sim.kit
            .record(RecordedBody::new(method.as_str(), &route, &body));
    }
    let path = uri.path().to_string();
    match (route.as_str(), method) {
        (CLIENTS_ROUTE, Method::GET) => list(&sim, uri.query().unwrap_or_default()),
        (CLIENT_ROUTE, Method::GET) => {
            let raw = path.rsplit('/').next().unwrap_or_default();
            get_one(&sim, raw, &path)
        }
        (CLIENTS_ROUTE, Method::PUT) => write(&sim, &headers, &body, &path, false),
        (CLIENTS_ROUTE, Method::POST) => write(&sim, &headers, &body, &path, true),
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// JWT bearer authentication, then the `RequireAdministratorRole` policy: the refusal, if any.
fn authorize(sim: &Sim, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
    else {
        return Some(unauthorized("Bearer"));
    };
    let st = sim.state();
    let Some(issued) = st.tokens.get(token) else {
        return Some(unauthorized(
            "Bearer error=\"invalid_token\", error_description=\"The signature key was not found\"",
        ));
    };
    if !issued.live_at(Instant::now()) {
        return Some(unauthorized(
            "Bearer error=\"invalid_token\", error_description=\"The token expired\"",
        ));
    }
    let claims = &issued.grant;
    if claims["aud"] != json!(API_NAME)
        && !claims["aud"]
            .as_array()
            .is_some_and(|a| a.contains(&json!(API_NAME)))
    {
        return Some(unauthorized(&format!(
            "Bearer error=\"invalid_token\", error_description=\"The audience '{}' is invalid\"",
            claims["aud"]
        )));
    }
    // Each element of a JSON array claim becomes one claim; a string stays one claim.
    let values = |name: &str| -> Vec<String> {
        match &claims[name] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    let role_ok = values("role")
        .iter()
        .chain(values("client_role").iter())
        .any(|r| r == &st.admin_role);
    let scope_ok = values("scope").iter().any(|s| s == API_NAME);
    (!(role_ok && scope_ok)).then(|| StatusCode::FORBIDDEN.into_response())
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        k.eq_ignore_ascii_case(key).then(|| form_decode(v))
    })
}

/// `GET /api/Clients`: search, page, and the list shape (only `properties` loaded).
fn list(sim: &Sim, query: &str) -> Response {
    let int = |k: &str, default: i64| -> Result<i64, dto::BindError> {
        match query_value(query, k) {
            None => Ok(default),
            Some(v) if v.is_empty() => Ok(default),
            Some(v) => v.parse::<i32>().map(i64::from).map_err(|_| dto::BindError {
                key: k.into(),
                message: format!("The value '{v}' is not valid for {k}."),
            }),
        }
    };
    let (page, page_size) = match (int("page", 1), int("pageSize", 10)) {
        (Ok(p), Ok(s)) => (p, s),
        (a, b) => {
            let errors: Vec<dto::BindError> = [a.err(), b.err()].into_iter().flatten().collect();
            return validation_problem(&errors);
        }
    };
    let search = query_value(query, "searchText").filter(|s| !s.trim().is_empty());
    let st = sim.state();
    let matching: Vec<&Map<String, Value>> = st
        .clients
        .values()
        .filter(|c| {
            search.as_deref().is_none_or(|s| {
                ["clientId", "clientName"]
                    .iter()
                    .any(|k| c[*k].as_str().is_some_and(|v| v.contains(s)))
            })
        })
        .collect();
    let skip = (page - 1) * page_size;
    if skip < 0 || page_size < 0 {
        // EF Core's Skip/Take with a negative count throws: an unhandled exception.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let items: Vec<Value> = matching
        .iter()
        .skip(skip as usize)
        .take(page_size as usize)
        .map(|c| {
            let mut c = (*c).clone();
            for f in dto::FIELDS {
                if matches!(f.kind, dto::Kind::StrList | dto::Kind::Claims) {
                    c.insert(f.name.into(), json!([]));
                }
            }
            Value::Object(c)
        })
        .collect();
    axum::Json(json!({"clients": items, "totalCount": matching.len(), "pageSize": page_size}))
        .into_response()
}

/// `GET /api/Clients/{id}`.
fn get_one(sim: &Sim, raw: &str, path: &str) -> Response {
    let Ok(id) = raw.parse::<i32>() else {
        return validation_problem(&[dto::BindError {
            key: "id".into(),
            message: format!("The value '{}' is not valid.", percent_decode(raw)),
        }]);
    };
    match sim.state().clients.get(&i64::from(id)) {
        Some(c) => axum::Json(Value::Object(c.clone())).into_response(),
        None => service_problem(path, "Error", &format!("Client with id {id} doesn't exist")),
    }
}

/// `PUT /api/Clients` (full replace) and `POST /api/Clients` (create).
fn write(sim: &Sim, headers: &HeaderMap, body: &[u8], path: &str, create: bool) -> Response {
    let json_ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.starts_with("application/json") || v.contains("+json")
        });
    if !json_ct {
        return problem_status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return validation_problem(&[
                dto::BindError {
                    key: "$".into(),
                    message: format!("The input is not valid JSON: {e}"),
                },
                dto::BindError {
                    key: "client".into(),
                    message: "The client field is required.".into(),
                },
            ]);
        }
    };
    let mut client = match dto::bind(&parsed) {
        Ok(c) => c,
        Err(errors) => return validation_problem(&errors),
    };
    let id = client["id"].as_i64().unwrap_or(0);
    let client_id = client["clientId"].as_str().unwrap_or_default().to_string();
    let mut st = sim.state();
    // ClientService: the clientId must be free (among other clients), then the client must exist.
    let taken = st
        .clients
        .iter()
        .any(|(k, c)| c["clientId"] == json!(client_id) && (create || id == 0 || *k != id));
    if taken {
        return service_problem(
            path,
            "Client already exists",
            &format!("Client Id ({client_id}) already exists"),
        );
    }
    let id = if create {
        let id = st.next_id;
        st.next_id += 1;
        id
    } else {
        if !st.clients.contains_key(&id) {
            return service_problem(path, "Error", &format!("Client with id {id} doesn't exist"));
        }
        id
    };
    client.insert("id".into(), json!(id));
    // Child rows are deleted and inserted again: new ids.
    for key in ["claims", "properties"] {
        if let Some(Value::Array(items)) = client.get_mut(key) {
            for item in items {
                item["id"] = json!(st.next_child_id);
                st.next_child_id += 1;
            }
        }
    }
    st.clients.insert(id, client.clone());
    if create {
        let mut r = (StatusCode::CREATED, axum::Json(Value::Object(client))).into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("/api/Clients/{id}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

fn problem_status(status: StatusCode) -> Response {
    let mut r = (
        status,
        axum::Json(json!({
            "type": "https://tools.ietf.org/html/rfc9110#section-15.5.16",
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "traceId": trace_id(),
        })),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json; charset=utf-8"),
    );
    r
}

fn form_value<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `POST /connect/token`: the client-credentials grant.
fn token(sim: &Sim, headers: &HeaderMap, body: &[u8]) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (id, secret) = s.split_once(':')?;
            Some((form_decode(id), form_decode(secret)))
        });
    let (client_id, secret) = match basic {
        Some(pair) => pair,
        None => (
            form_value(&form, "client_id")
                .unwrap_or_default()
                .to_string(),
            form_value(&form, "client_secret")
                .unwrap_or_default()
                .to_string(),
        ),
    };
    let mut st = sim.state();
    let Some(client) = st.sts_clients.get(&client_id).cloned() else {
        return oauth_error("invalid_client", None);
    };
    if secret.is_empty() || client.secret != secret {
        return oauth_error("invalid_client", None);
    }
    match form_value(&form, "grant_type") {
        Some("client_credentials") => {}
        None => return oauth_error("invalid_request", None),
        Some(_) => return oauth_error("unsupported_grant_type", None),
    }
    let requested: Vec<String> = match form_value(&form, "scope") {
        Some(s) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        None => client.scopes.clone(),
    };
    if requested.is_empty() || requested.iter().any(|s| !client.scopes.contains(s)) {
        return oauth_error("invalid_scope", None);
    }
    let iat = now_secs();
    let lifetime = st.token_lifetime;
    let mut claims = json!({
        "iss": sim.kit.base_url(),
        "nbf": iat,
        "iat": iat,
        "exp": iat + lifetime.as_secs(),
        "aud": API_NAME,
        "client_id": client_id,
        "jti": random_id(32),
    });
    claims["scope"] = if st.space_delimited_scopes {
        json!(requested.join(" "))
    } else {
        json!(requested)
    };
    for (t, v) in &client.claims {
        let name = format!("client_{t}");
        match claims.get_mut(&name) {
            Some(Value::Array(a)) => a.push(json!(v)),
            Some(old) => *old = json!([old.clone(), v]),
            None => claims[name] = json!(v),
        }
    }
    let access_token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"sim","typ":"at+jwt"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        random_id(86)
    );
    let now = Instant::now();
    st.tokens
        .insert(access_token.clone(), claims, now + lifetime, now);
    let mut r = axum::Json(json!({
        "access_token": access_token,
        "expires_in": lifetime.as_secs(),
        "token_type": "Bearer",
        "scope": requested.join(" "),
    }))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl SimHandle {
    fn state(&self) -> MutexGuard<'_, SimState> {
        self.inner.state()
    }

    /// `http://127.0.0.1:<port>`: both the STS (`/connect/token`) and the admin API (`/api`).
    pub fn base_url(&self) -> String {
        self.inner.kit.base_url().to_string()
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_ROUTE}", self.inner.kit.base_url())
    }

    /// Registers an STS client that may request `scopes`, with client claims (emitted as
    /// `client_<type>`), e.g. `[("role", ADMIN_ROLE)]`.
    pub fn add_sts_client(
        &self,
        client_id: &str,
        secret: &str,
        scopes: &[&str],
        claims: &[(&str, &str)],
    ) {
        self.state().sts_clients.insert(
            client_id.to_string(),
            StsClient {
                secret: secret.to_string(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                claims: claims
                    .iter()
                    .map(|(t, v)| (t.to_string(), v.to_string()))
                    .collect(),
            },
        );
    }

    /// The operator's STS client as the admin API needs it: scope [`API_NAME`] and the client
    /// claim `role` = the administration role.
    pub fn add_admin_api_client(&self, client_id: &str, secret: &str) {
        let role = self.state().admin_role.clone();
        self.add_sts_client(client_id, secret, &[API_NAME], &[("role", &role)]);
    }

    /// Adds a client row (any subset of `ClientApiDto`; the rest at the DTO defaults), with a new
    /// `id`. Returns the id.
    pub fn add_client(&self, client: Value) -> i64 {
        let mut row = dto::defaults();
        if let Value::Object(m) = client {
            for (k, v) in m {
                if let Some(f) = dto::field(&k) {
                    row.insert(f.name.to_string(), v);
                }
            }
        }
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        row.insert("id".into(), json!(id));
        for key in ["claims", "properties"] {
            if let Some(Value::Array(items)) = row.get_mut(key) {
                for item in items {
                    item["id"] = json!(st.next_child_id);
                    st.next_child_id += 1;
                }
            }
        }
        st.clients.insert(id, row);
        id
    }

    /// A client as `GET /api/Clients/{id}` shows it.
    pub fn client(&self, id: i64) -> Option<Value> {
        self.state().clients.get(&id).cloned().map(Value::Object)
    }

    /// The id of the client with this `clientId`.
    pub fn id_of(&self, client_id: &str) -> Option<i64> {
        self.state()
            .clients
            .iter()
            .find(|(_, c)| c["clientId"] == json!(client_id))
            .map(|(k, _)| *k)
    }

    /// Edits a client row directly (another administrator, or the database).
    pub fn update_client(&self, id: i64, f: impl FnOnce(&mut Map<String, Value>)) {
        if let Some(c) = self.state().clients.get_mut(&id) {
            f(c);
        }
    }

    /// Removes a client.
    pub fn remove_client(&self, id: i64) {
        self.state().clients.remove(&id);
    }

    /// Makes every issued token expire now.
    pub fn expire_tokens(&self) {
        self.state().tokens.expire_all(Instant::now());
    }

    /// Whether IdentityServer would accept an authorization request of client `id` asking for
    /// `scopes`: `offline_access` needs `AllowOfflineAccess` (else `invalid_scope`), every other
    /// scope must be allowed.
    pub fn authorize_scopes(&self, id: i64, scopes: &[&str]) -> Result<(), &'static str> {
        let st = self.state();
        let c = st.clients.get(&id).ok_or("invalid_client")?;
        if !c["enabled"].as_bool().unwrap_or(false) {
            return Err("invalid_client");
        }
        let allowed = c["allowedScopes"].as_array().cloned().unwrap_or_default();
        for s in scopes {
            let ok = if *s == "offline_access" {
                c["allowOfflineAccess"] == json!(true)
            } else {
                allowed.contains(&json!(s))
            };
            if !ok {
                return Err("invalid_scope");
            }
        }
        Ok(())
    }

    /// Seeds a realistic deployment: Coder's client before the operator (no offline access,
    /// one-time refresh tokens, PKCE on, consent off, a claim and a property, CORS origins, all of
    /// which must survive), two clients whose ids contain `coder`, and the operator's STS client.
    pub fn seed_sandbox(&self) -> SandboxSeed {
        self.add_client(web_client("coder-staging", "Coder (staging)"));
        let mut coder = web_client("coder", "Coder");
        coder["requirePkce"] = json!(true);
        coder["requireConsent"] = json!(false);
        coder["description"] = json!("Coder workspaces");
        coder["allowedCorsOrigins"] = json!(["https://coder.example.com"]);
        coder["postLogoutRedirectUris"] = json!(["https://coder.example.com"]);
        coder["claims"] = json!([{"id": 0, "type": "team", "value": "platform"}]);
        coder["properties"] = json!([{"id": 0, "key": "owner", "value": "platform"}]);
        coder["updated"] = json!("2026-01-05T09:30:00");
        let id = self.add_client(coder);
        self.add_client(web_client("not-coder", "Another app"));
        let secret = format!("sim-{}", random_id(32));
        self.add_admin_api_client("oidc-refresh-operator", &secret);
        self.state().sandbox = Some(id);
        SandboxSeed {
            spec: json!({"duende": {
                "clientId": "coder",
                "credentialsSecret": "duende-admin-api",
                "adminApi": {"url": self.base_url(), "authority": self.base_url()}
            }}),
            secret_name: "duende-admin-api".into(),
            secret_data: BTreeMap::from([
                ("client-id".to_string(), "oidc-refresh-operator".to_string()),
                ("client-secret".to_string(), secret),
            ]),
        }
    }

    /// After [`seed_sandbox`](Self::seed_sandbox): the refresh settings of Coder's client.
    pub fn describe_client(&self) -> Vec<(String, String)> {
        let Some(id) = self.state().sandbox else {
            return Vec::new();
        };
        self.describe(id)
    }

    /// The refresh settings of a client as (setting, value) lines.
    pub fn describe(&self, id: i64) -> Vec<(String, String)> {
        let Some(c) = self.client(id) else {
            return Vec::new();
        };
        let name = |v: &Value, names: [&str; 2]| match v.as_i64() {
            Some(0) => names[0].to_string(),
            Some(1) => names[1].to_string(),
            _ => v.to_string(),
        };
        vec![
            (
                "AllowOfflineAccess".into(),
                c["allowOfflineAccess"].to_string(),
            ),
            (
                "RefreshTokenUsage".into(),
                name(&c["refreshTokenUsage"], ["ReUse", "OneTimeOnly"]),
            ),
            (
                "RefreshTokenExpiration".into(),
                name(&c["refreshTokenExpiration"], ["Sliding", "Absolute"]),
            ),
            (
                "AbsoluteRefreshTokenLifetime".into(),
                format!("{}s", c["absoluteRefreshTokenLifetime"]),
            ),
            (
                "SlidingRefreshTokenLifetime".into(),
                format!("{}s", c["slidingRefreshTokenLifetime"]),
            ),
            (
                "AccessTokenLifetime".into(),
                format!("{}s", c["accessTokenLifetime"]),
            ),
        ]
    }
}

/// The shared test methods (`counters`, `writes`, `reset_counters`, `recorded_bodies`,
/// `validate_recorded_bodies`, `set_latency`, `fail_next`, `set_throttle`, `shutdown`) are the
/// harness's.
impl Deref for SimHandle {
    type Target = Harness<DuendeRoutes, RecordedBody>;

    fn deref(&self) -> &Self::Target {
        &self.inner.kit
    }
}
