//! A stateful simulator of the parts of Logto (OSS core and Cloud tenants) that the
//! oidc-refresh-operator uses, for tests and the `sandbox` command, built from the contract
//! excerpts in `contracts/` and Logto's documented behaviour (see `docs/fidelity/logto.md` for
//! every known difference):
//!
//! - `POST /oidc/token`: the client-credentials grant of machine-to-machine apps. The client
//!   authenticates with HTTP Basic **or** `client_id`/`client_secret` in the body (both at once:
//!   400 `invalid_request`). Basic is read as node-oidc-provider's `client_auth.js` reads it: the
//!   scheme in any case, id and secret form-URL-decoded (RFC 6749 §2.3.1, `+` is a space), and
//!   400 `invalid_request` for anything outside VSCHAR once decoded. A wrong secret or unknown
//!   client is 401 `invalid_client`; an app
//!   that is not machine-to-machine gets 400 `unauthorized_client`; the `resource` must be the
//!   tenant's Management API indicator (`https://default.logto.app/api` for OSS,
//!   `https://{tenant}.logto.app/api` for Cloud), else 400 `invalid_target`; scope `all` is
//!   granted only when the app has a role with the Management API permission `all` (otherwise
//!   the token is issued without it, and the API answers 403). Without `resource` the token is
//!   opaque and the Management API refuses it (401).
//! - `GET /api/applications/{id}` (adds `isAdmin`) and `PATCH /api/applications/{id}` (answer
//!   without `isAdmin`), with Logto's semantics: the body is checked first (`guard.invalid_input`,
//!   400, zod-style `details`), then the app is looked up (404 `entity.not_exists_with_id`),
//!   SAML apps answer 400 `application.saml.use_saml_app_api`, token exchange on a third-party
//!   app and a change of `isDeviceFlow` answer 422; top-level keys left out stay as they are,
//!   **a JSONB object sent (`oidcClientMetadata`, `customClientMetadata`, `customData`) replaces
//!   the stored one wholesale**, unknown keys are dropped silently (zod objects are not strict),
//!   and `refreshTokenTtlInDays` must be an integer 1–180 (1–90 with
//!   [`SimConfig::max_ttl_days`] = [`LEGACY_MAX_TTL_DAYS`], Logto before 1.34.0); a refused body
//!   answers zod's own issues. `protectedAppMetadata` is merged into a Protected app's object and
//!   refused (400) on any other app.
//! - Management API authentication as `koa-auth` answers it: 401 `auth.authorization_header_missing`,
//!   `auth.authorization_token_type_not_supported`, `auth.unauthorized`; 403 `auth.forbidden`
//!   when the token lacks scope `all`.
//! - What an authorization request would get ([`SimHandle::would_issue_refresh_token`]): Logto's
//!   `oidc-provider` fork drops `offline_access` unless `prompt` includes `consent`, and issues a
//!   refresh token when `offline_access` was granted or (web apps) `alwaysIssueRefreshToken`.
//!
//! The official client `@logto/api` and the zod guards of `@logto/schemas` check all of this in
//! `tests/conformance/logto` ([`conformance`] runs it).
//!
//! Test hooks: injectable latency, `fail_next` (5xx, 429 with `Retry-After`) for Management API
//! calls, token expiry, request counters per (method, route template, status), a record of
//! every PATCH body with contract validation
//! ([`validate_recorded_bodies`](Harness::validate_recorded_bodies)), and direct state edits.

pub mod conformance;
pub mod schema;

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};
use sim_kit::{CountRules, Harness, Listener, Observe, Recorded, Tokens, lock};

pub use sim_kit::SandboxSeed;

/// Route template of the token endpoint.
pub const TOKEN_ROUTE: &str = "/oidc/token";
/// Route template of one application.
pub const APP_ROUTE: &str = "/api/applications/{id}";
/// The most `refreshTokenTtlInDays` allows since Logto 1.34.0.
pub const MAX_TTL_DAYS: u32 = 180;
/// The most `refreshTokenTtlInDays` allowed before Logto 1.34.0.
pub const LEGACY_MAX_TTL_DAYS: u32 = 90;
/// The Management API permission (scope) every management call needs.
pub const SCOPE_ALL: &str = "all";

/// The Management API resource indicator of a tenant (`default` for OSS).
pub fn management_indicator(tenant: &str) -> String {
    format!("https://{tenant}.logto.app/api")
}

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Listen address (default `127.0.0.1:0`).
    pub addr: SocketAddr,
    /// Delay before every answer (default none).
    pub latency: Duration,
    /// Tenant id: `default` (OSS, the default) or a Cloud tenant id; decides the Management API
    /// resource indicator.
    pub tenant_id: String,
    /// `expires_in` of issued tokens (default 3600 s).
    pub token_lifetime: Duration,
    /// Upper bound of `refreshTokenTtlInDays` ([`MAX_TTL_DAYS`]; [`LEGACY_MAX_TTL_DAYS`] emulates
    /// Logto before 1.34.0).
    pub max_ttl_days: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            addr: sim_kit::LOOPBACK,
            latency: Duration::ZERO,
            tenant_id: "default".into(),
            token_lifetime: Duration::from_secs(3600),
            max_ttl_days: MAX_TTL_DAYS,
        }
    }
}

/// Request counts by (method, route template, status), e.g.
/// `("PATCH", "/api/applications/{id}", 200)`.
pub type SimCounters = sim_kit::Counters<LogtoRoutes>;

/// Logto's counting rules: token requests are [`TOKEN_ROUTE`], reads are `GET` and `HEAD`.
#[derive(Clone, Copy, Debug)]
pub struct LogtoRoutes;

impl CountRules for LogtoRoutes {
    const TOKEN_ROUTE: Option<&'static str> = Some(TOKEN_ROUTE);
}

/// One Management API request body the simulator received.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedBody {
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// The body (a JSON string holding the raw text when it was not JSON).
    pub body: Value,
}

/// Validates a PATCH body strictly against the contract (unknown keys, which Logto would drop
/// silently, are errors too).
pub fn validate_body(body: &Value) -> Result<(), Vec<String>> {
    let issues = schema::validate_patch(body, schema::Mode::Strict, MAX_TTL_DAYS);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues.iter().map(schema::Issue::render).collect())
    }
}

#[derive(Clone, Debug)]
struct App {
    /// The stored row as the API shows it (without `isAdmin`).
    row: Map<String, Value>,
    /// Client secret (Traditional and machine-to-machine apps).
    secret: Option<String>,
    /// Machine-to-machine: granted the Management API permission `all` through a role.
    management_all: bool,
    /// Machine-to-machine: has the admin-tenant role (`isAdmin`).
    is_admin: bool,
}

#[derive(Clone, Debug)]
struct Token {
    audience: Option<String>,
    scopes: Vec<String>,
}

struct SimState {
    apps: BTreeMap<String, App>,
    tokens: Tokens<Token>,
    tenant_id: String,
    token_lifetime: Duration,
    max_ttl_days: u32,
    sandbox: Option<String>,
}

struct Inner {
    state: Mutex<SimState>,
    kit: Harness<LogtoRoutes, RecordedBody>,
}

type Sim = Arc<Inner>;

/// Handle to a running simulator. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

/// The test hooks every simulator shares (`counters`, `writes`, `reset_counters`,
/// `recorded_bodies`, `validate_recorded_bodies`, `set_latency`, `fail_next`, `set_throttle`,
/// `shutdown`): scripted failures and throttling hit the Management API (paths under `/api/`)
/// only, never the token endpoint; 500 answers with Logto's JSON body, other statuses as a
/// proxy's plain text. Every PATCH body is recorded (token requests are not: they hold secrets)
/// and validated strictly, unknown keys included.
impl std::ops::Deref for SimHandle {
    type Target = Harness<LogtoRoutes, RecordedBody>;

    fn deref(&self) -> &Self::Target {
        &self.inner.kit
    }
}

impl Recorded for RecordedBody {
    fn label(&self) -> String {
        format!("{} {}", self.method, self.route)
    }

    fn validate(&self) -> Result<(), Vec<String>> {
        validate_body(&self.body)
    }
}

/// A random-looking id of `len` lowercase letters and digits (Logto ids are 21 characters
/// from nanoid's alphabet; the simulator needs no cryptographic randomness).
pub fn new_id(len: usize) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(N.fetch_add(1, Ordering::Relaxed));
        let mut x = h.finish();
        for _ in 0..12 {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[(x % 36) as usize] as char);
            x /= 36;
        }
    }
    out
}

/// Starts the simulator on the current tokio runtime. No application exists until one is added.
pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = Listener::bind(config.addr).await?;
    let inner = Arc::new(Inner {
        state: Mutex::new(SimState {
            apps: BTreeMap::new(),
            tokens: Tokens::default(),
            tenant_id: config.tenant_id,
            token_lifetime: config.token_lifetime,
            max_ttl_days: config.max_ttl_days,
            sandbox: None,
        }),
        kit: Harness::new(listener.base_url(), config.latency),
    });
    let app = observed(&inner).apply(Router::new().fallback(dispatch).with_state(inner.clone()));
    inner.kit.serve(listener, app);
    Ok(SimHandle { inner })
}

/// A Traditional web application as Logto's console creates it: Coder's callback as its only
/// redirect URI, empty `customClientMetadata` (the defaults apply at runtime: refresh tokens live
/// 14 days and rotate), a legacy-secret-free row.
pub fn traditional_app(id: &str, name: &str) -> Value {
    json!({
        "tenantId": "default",
        "id": id,
        "name": name,
        "description": null,
        "type": "Traditional",
        "oidcClientMetadata": {
            "redirectUris": ["https://coder.example.com/api/v2/users/oidc/callback"],
            "postLogoutRedirectUris": []
        },
        "customClientMetadata": {},
        "protectedAppMetadata": null,
        "customData": {},
        "isThirdParty": false,
        "appLevelAccessControlEnabled": false,
        "createdAt": 1_767_225_600_000u64
    })
}

fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The route template of a path, for counters.
pub fn route_template(path: &str) -> String {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["oidc", "token"] => TOKEN_ROUTE.into(),
        ["api", "applications"] => "/api/applications".into(),
        ["api", "applications", _] => APP_ROUTE.into(),
        _ => "<unmatched>".into(),
    }
}

/// Latency, failure injection (Management API only) and counters around every call.
fn observed(sim: &Sim) -> Observe {
    sim.kit
        .observe(route_template)
        .faults_on(|route| route.starts_with("/api/"))
        .fault_answer(|status| {
            // Logto's error handler answers 500 with this body; other statuses come from a proxy
            // in front of Logto (Logto itself has no rate limit), as plain text.
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                (
                    status,
                    axum::Json(json!({"message": "Internal server error."})),
                )
                    .into_response()
            } else {
                (
                    status,
                    status.canonical_reason().unwrap_or("error").to_string(),
                )
                    .into_response()
            }
        })
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
    if route == "<unmatched>" || route == "/api/applications" {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    let id = uri
        .path()
        .trim_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut st = lock(&sim.state);
    if let Some(r) = authenticate(&st, &headers) {
        return r;
    }
    match method {
        Method::GET => match st.apps.get(&id) {
            Some(app) => {
                let mut row = app.row.clone();
                row.insert("isAdmin".into(), json!(app.is_admin));
                axum::Json(Value::Object(row)).into_response()
            }
            None => not_found(&id),
        },
        Method::PATCH => {
            let json_body = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
            // koa-body parses JSON bodies only; anything else leaves the body empty.
            let parsed: Value = if json_body {
                match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => {
                        sim.kit.record(RecordedBody {
                            method: "PATCH".into(),
                            route,
                            body: Value::String(String::from_utf8_lossy(&body).into_owned()),
                        });
                        return (
                            StatusCode::BAD_REQUEST,
                            axum::Json(json!({"message": e.to_string()})),
                        )
                            .into_response();
                    }
                }
            } else {
                json!({})
            };
            sim.kit.record(RecordedBody {
                method: "PATCH".into(),
                route,
                body: parsed.clone(),
            });
            let max = st.max_ttl_days;
            patch(&mut st, &id, &parsed, max)
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

fn not_found(id: &str) -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        "entity.not_exists_with_id",
        &format!("The applications with ID `{id}` does not exist."),
    )
}

/// Management API authentication, as `koa-auth` checks it.
fn authenticate(st: &SimState, headers: &HeaderMap) -> Option<Response> {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Some(error_body(
            StatusCode::UNAUTHORIZED,
            "auth.authorization_header_missing",
            "Authorization header is missing.",
        ));
    };
    // `extractBearerTokenFromHeaders` (koa-auth/utils.ts): `startsWith('Bearer')`, case and all,
    // then everything after `Bearer` and one more character, untrimmed.
    let Some(token) = auth
        .strip_prefix("Bearer")
        .map(|_| auth.get("Bearer ".len()..).unwrap_or_default())
    else {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"code": "auth.authorization_token_type_not_supported",
                              "message": "Authorization type is not supported.",
                              "data": {"supportedTypes": ["Bearer"]}}),
            ),
        )
            .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Some(r);
    };
    let unauthorized = || {
        error_body(
            StatusCode::UNAUTHORIZED,
            "auth.unauthorized",
            "Unauthorized. Please check credentials and its scope.",
        )
    };
    // An unknown or expired JWT, one without the tenant's Management API audience, or an opaque
    // token (issued without `resource`) all fail the JWT verification.
    let Some(t) = st.tokens.live(token, Instant::now()) else {
        return Some(unauthorized());
    };
    if t.audience.as_deref() != Some(management_indicator(&st.tenant_id).as_str()) {
        return Some(unauthorized());
    }
    if !t.scopes.iter().any(|s| s == SCOPE_ALL) {
        return Some(error_body(
            StatusCode::FORBIDDEN,
            "auth.forbidden",
            "Forbidden. Please check your user roles and permissions.",
        ));
    }
    None
}

fn patch(st: &mut SimState, id: &str, body: &Value, max_ttl_days: u32) -> Response {
    // koa-guard runs before the handler.
    let issues = schema::validate_patch(body, schema::Mode::Server, max_ttl_days);
    if !body.is_object() || !issues.is_empty() {
        let issues = if body.is_object() {
            issues
        } else {
            vec![schema::Issue::invalid_type(
                Vec::new(),
                "object",
                match body {
                    Value::Array(_) => "array",
                    Value::Null => "null",
                    Value::String(_) => "string",
                    Value::Number(_) => "number",
                    _ => "boolean",
                },
            )]
        };
        let details = issues
            .iter()
            .map(schema::Issue::render)
            .collect::<Vec<_>>()
            .join("\n");
        let data: Vec<Value> = issues.iter().map(schema::Issue::to_json).collect();
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"code": "guard.invalid_input", "message": "The request body is invalid.",
                              "details": details, "data": {"issues": data, "name": "ZodError"}}),
            ),
        )
            .into_response();
    }
    let Some(app) = st.apps.get_mut(id) else {
        return not_found(id);
    };
    let kind = app
        .row
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind == "SAML" {
        return error_body(
            StatusCode::BAD_REQUEST,
            "application.saml.use_saml_app_api",
            "Use `[METHOD] /saml-applications(/.*)?` API to operate SAML app.",
        );
    }
    let body = schema::strip_unknown(body);
    let third_party = app.row.get("isThirdParty") == Some(&json!(true));
    if third_party && body["customClientMetadata"]["allowTokenExchange"] == json!(true) {
        return error_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            "application.third_party_application_cannot_enable_token_exchange",
            "Third-party applications are not allowed to enable token exchange.",
        );
    }
    if let Some(new) = body["customClientMetadata"].get("isDeviceFlow") {
        let old = app.row["customClientMetadata"]
            .get("isDeviceFlow")
            .cloned()
            .unwrap_or(json!(false));
        if *new != old {
            return error_body(
                StatusCode::UNPROCESSABLE_ENTITY,
                "application.device_flow_not_changeable",
                "Device flow cannot be changed after application creation.",
            );
        }
    }
    // `protectedAppMetadata` is merged into a Protected app's own (a falsy value is no update);
    // any other app answers 400 `application.protected_application_only`.
    let protected = body.get("protectedAppMetadata").filter(|v| !v.is_null());
    if protected.is_some() {
        if kind != "Protected" {
            return error_body(
                StatusCode::BAD_REQUEST,
                "application.protected_application_only",
                "The feature is only available for protected applications.",
            );
        }
        if !app
            .row
            .get("protectedAppMetadata")
            .is_some_and(Value::is_object)
        {
            return error_body(
                StatusCode::UNPROCESSABLE_ENTITY,
                "application.protected_application_misconfigured",
                "Protected application is misconfigured.",
            );
        }
    }
    if let Some(admin) = body.get("isAdmin").and_then(Value::as_bool)
        && kind == "MachineToMachine"
    {
        app.is_admin = admin;
    }
    if let (Some(Value::Object(sent)), Some(Value::Object(stored))) =
        (protected, app.row.get_mut("protectedAppMetadata"))
    {
        stored.extend(sent.clone());
    }
    for (k, v) in body.as_object().into_iter().flatten() {
        if k == "isAdmin" || k == "protectedAppMetadata" {
            continue;
        }
        // updateApplicationById(id, rest, 'replace'): every key sent is set as sent; a JSONB
        // object replaces the stored one wholesale.
        app.row.insert(k.clone(), v.clone());
    }
    axum::Json(Value::Object(app.row.clone())).into_response()
}

fn form_value<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `decodeAuthToken` of node-oidc-provider (`lib/shared/client_auth.js`): the form-URL decoding
/// of RFC 6749 §2.3.1 (`+` is a space, then strict `decodeURIComponent`), and only VSCHAR
/// (`%x20-7E`, RFC 6749 Appendix A) may come out.
fn decode_auth_token(s: &str) -> Option<String> {
    let text = sim_kit::form_decode_strict(s)?;
    text.chars()
        .all(|c| (' '..='~').contains(&c))
        .then_some(text)
}

/// `Buffer.from(value, 'base64')`: characters outside the alphabet are skipped, padding is
/// optional, the URL-safe alphabet is read too.
fn node_base64(value: &str) -> Vec<u8> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let cleaned: String = value
        .split('=')
        .next()
        .unwrap_or_default()
        .chars()
        .filter_map(|c| match c {
            '-' => Some('+'),
            '_' => Some('/'),
            c if c.is_ascii_alphanumeric() || c == '+' || c == '/' => Some(c),
            _ => None,
        })
        .collect();
    let lenient = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    // A lone last character carries no whole byte.
    let usable = cleaned.len() - usize::from(cleaned.len() % 4 == 1);
    lenient.decode(&cleaned[..usable]).unwrap_or_default()
}

/// The client id and secret of a token request, as node-oidc-provider's client authentication
/// (`lib/shared/client_auth.js`) reads them: one mechanism only (an `Authorization` header of
/// any scheme counts as one); `client_secret` in the body (`client_secret_post`), or HTTP Basic
/// with the scheme in any case and id and secret form-URL-encoded (`client_secret_basic`); a
/// malformed header is 400 `invalid_request`.
#[allow(clippy::result_large_err)] // the error is the HTTP answer, returned at once
fn client_credentials(
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(String, String), Response> {
    let invalid = |description: &str| {
        Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            description,
        ))
    };
    let present = |v: Option<&str>| v.is_some_and(|v| !v.is_empty());
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body_secret = form_value(form, "client_secret");
    let mechanisms = [
        authorization.as_deref(),
        form_value(form, "client_assertion"),
        body_secret,
    ]
    .into_iter()
    .filter(|v| present(*v))
    .count();
    if mechanisms > 1 {
        return invalid("client authentication must only be provided using one mechanism");
    }
    let body_id = form_value(form, "client_id").map(str::to_string);
    if present(body_secret) {
        return Ok((
            body_id.unwrap_or_default(),
            body_secret.unwrap_or_default().to_string(),
        ));
    }
    let Some(authorization) = authorization else {
        return Ok((body_id.unwrap_or_default(), String::new()));
    };
    let parts: Vec<&str> = authorization.split(' ').collect();
    let [scheme, value] = parts.as_slice() else {
        return invalid("invalid authorization header value format");
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return invalid("invalid authorization header value format");
    }
    let basic = String::from_utf8_lossy(&node_base64(value)).into_owned();
    let Some((id, secret)) = basic.split_once(':') else {
        return invalid("invalid authorization header value format");
    };
    let (Some(id), Some(secret)) = (decode_auth_token(id), decode_auth_token(secret)) else {
        return invalid(
            "client_id and client_secret in the authorization header are not properly encoded",
        );
    };
    if body_id.is_some_and(|b| b != id) {
        return invalid("client_id mismatch");
    }
    if secret.is_empty() {
        return invalid("client_secret must be provided in the Authorization header");
    }
    Ok((id, secret))
}

fn token(sim: &Sim, headers: &HeaderMap, body: &[u8]) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let (client_id, secret) = match client_credentials(headers, &form) {
        Ok(pair) => pair,
        Err(refused) => return refused,
    };
    let mut st = lock(&sim.state);
    let Some(app) = st.apps.get(&client_id) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    };
    if app.secret.as_deref() != Some(secret.as_str()) || secret.is_empty() {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    match form_value(&form, "grant_type") {
        Some("client_credentials") => {}
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing required parameter 'grant_type'",
            );
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "unsupported grant_type requested",
            );
        }
    }
    if app.row.get("type").and_then(Value::as_str) != Some("MachineToMachine") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "requested grant type is not allowed for this client",
        );
    }
    let resource = form_value(&form, "resource");
    if let Some(r) = resource
        && r != management_indicator(&st.tenant_id)
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource indicator is missing, or unknown",
        );
    }
    // Requested scopes the app's roles do not grant are left out, not refused.
    let requested: Vec<String> = form_value(&form, "scope")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let scopes: Vec<String> = if resource.is_some() && app.management_all {
        requested.into_iter().filter(|s| s == SCOPE_ALL).collect()
    } else {
        Vec::new()
    };
    let access_token = if resource.is_some() {
        // Shaped like a JWT (never parsed by clients).
        format!(
            "eyJhbGciOiJFUzM4NCIsInR5cCI6ImF0K2p3dCJ9.{}.{}",
            new_id(40),
            new_id(43)
        )
    } else {
        new_id(43)
    };
    let (lifetime, now) = (st.token_lifetime, Instant::now());
    st.tokens.insert(
        access_token.clone(),
        Token {
            audience: resource.map(str::to_string),
            scopes: scopes.clone(),
        },
        now + lifetime,
        now,
    );
    let mut answer = json!({
        "access_token": access_token,
        "expires_in": lifetime.as_secs(),
        "token_type": "Bearer",
    });
    if !scopes.is_empty() {
        answer["scope"] = json!(scopes.join(" "));
    }
    let mut r = axum::Json(answer).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl SimHandle {
    fn state(&self) -> MutexGuard<'_, SimState> {
        lock(&self.inner.state)
    }

    /// `http://127.0.0.1:<port>`: the Logto endpoint (OIDC under `/oidc`, the API under `/api`).
    pub fn base_url(&self) -> String {
        self.inner.kit.base_url().to_string()
    }

    /// The Management API resource indicator of the simulated tenant.
    pub fn indicator(&self) -> String {
        management_indicator(&self.state().tenant_id)
    }

    /// Adds (or replaces) an application row, e.g. from [`traditional_app`], with an optional
    /// client secret. Returns its id.
    pub fn add_application(&self, row: Value, secret: Option<&str>) -> String {
        let row = match row {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let id = row
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| new_id(21));
        let mut row = row;
        row.insert("id".into(), json!(id));
        self.state().apps.insert(
            id.clone(),
            App {
                row,
                secret: secret.map(str::to_string),
                management_all: false,
                is_admin: false,
            },
        );
        id
    }

    /// Adds a machine-to-machine app with a secret; `management_all` assigns it a role with the
    /// Management API permission `all`.
    pub fn add_m2m_app(&self, id: &str, secret: &str, management_all: bool) {
        let mut row = traditional_app(id, "oidc-refresh-operator");
        row["type"] = json!("MachineToMachine");
        row["oidcClientMetadata"]["redirectUris"] = json!([]);
        self.add_application(row, Some(secret));
        self.set_management_all(id, management_all);
    }

    /// Assigns or removes the M2M role with the Management API permission `all`.
    pub fn set_management_all(&self, id: &str, on: bool) {
        if let Some(a) = self.state().apps.get_mut(id) {
            a.management_all = on;
        }
    }

    /// Changes an app's secret.
    pub fn set_secret(&self, id: &str, secret: &str) {
        if let Some(a) = self.state().apps.get_mut(id) {
            a.secret = Some(secret.to_string());
        }
    }

    /// Removes an application.
    pub fn remove_application(&self, id: &str) {
        self.state().apps.remove(id);
    }

    /// An application as `GET /api/applications/{id}` shows it (without `isAdmin`).
    pub fn application(&self, id: &str) -> Option<Value> {
        self.state()
            .apps
            .get(id)
            .map(|a| Value::Object(a.row.clone()))
    }

    /// Edits an application row directly (as an administrator in the console would).
    pub fn update_application(&self, id: &str, f: impl FnOnce(&mut Map<String, Value>)) {
        if let Some(a) = self.state().apps.get_mut(id) {
            f(&mut a.row);
        }
    }

    /// Makes every issued token expire now.
    pub fn expire_tokens(&self) {
        self.state().tokens.expire_all(Instant::now());
    }

    /// Whether Logto would issue a refresh token to app `id` for an authorization request with
    /// `scopes` and `prompt` (Logto's `oidc-provider` fork: `offline_access` is dropped unless
    /// `prompt` includes `consent` and the client has the `refresh_token` grant; a refresh token
    /// is issued when `offline_access` was granted or, for web apps, `alwaysIssueRefreshToken`).
    pub fn would_issue_refresh_token(
        &self,
        id: &str,
        scopes: &[&str],
        prompt: Option<&str>,
    ) -> bool {
        let st = self.state();
        let Some(app) = st.apps.get(id) else {
            return false;
        };
        let kind = app
            .row
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let refresh_grant = matches!(kind, "Traditional" | "SPA" | "Native");
        let web = matches!(kind, "Traditional" | "SPA" | "MachineToMachine");
        let consent = prompt.is_some_and(|p| p.split(' ').any(|p| p == "consent"));
        let offline = scopes.contains(&"offline_access") && consent && refresh_grant;
        let always = app.row["customClientMetadata"]["alwaysIssueRefreshToken"] == json!(true);
        refresh_grant && (offline || (web && always))
    }

    /// Seeds a realistic tenant: Coder's Traditional web app before the operator (refresh tokens
    /// at their defaults except rotation turned off, with CORS origins, an ID-token TTL, a grant
    /// cap and custom data that must survive), and a machine-to-machine app for the operator with
    /// the Management API permission `all`.
    pub fn seed_sandbox(&self) -> SandboxSeed {
        let app_id = "c0der7app4oidc9rtk2x1";
        let m2m = "op3rat0rm2m5app8q6w0z";
        let secret = format!("sim-{}", new_id(32));
        let mut row = traditional_app(app_id, "Coder");
        row["description"] = json!("Coder workspaces");
        row["customClientMetadata"] = json!({
            "corsAllowedOrigins": ["https://coder.example.com"],
            "idTokenTtl": 3600,
            "rotateRefreshToken": false,
            "maxAllowedGrants": 5
        });
        row["customData"] = json!({"team": "platform"});
        self.add_application(row, Some("coder-oidc-client-secret"));
        self.add_m2m_app(m2m, &secret, true);
        self.state().sandbox = Some(app_id.to_string());
        SandboxSeed {
            spec: json!({"logto": {"endpoint": self.base_url(), "applicationId": app_id,
                                   "credentialsSecret": "logto-m2m"}}),
            secret_name: "logto-m2m".into(),
            secret_data: BTreeMap::from([
                ("client-id".to_string(), m2m.to_string()),
                ("client-secret".to_string(), secret),
            ]),
        }
    }

    /// After [`seed_sandbox`](Self::seed_sandbox): the refresh-relevant settings of Coder's app
    /// as (setting, value) lines.
    pub fn describe_client(&self) -> Vec<(String, String)> {
        let Some(id) = self.state().sandbox.clone() else {
            return Vec::new();
        };
        self.describe(&id)
    }

    /// The refresh-relevant settings of an app as (setting, value) lines, defaults resolved.
    pub fn describe(&self, id: &str) -> Vec<(String, String)> {
        let Some(app) = self.application(id) else {
            return Vec::new();
        };
        let c = &app["customClientMetadata"];
        let show = |k: &str, default: &str| match c.get(k) {
            Some(v) => v.to_string(),
            None => format!("{default} (default)"),
        };
        vec![
            ("type".into(), app["type"].as_str().unwrap_or("?").into()),
            (
                "customClientMetadata.refreshTokenTtlInDays".into(),
                show("refreshTokenTtlInDays", "14"),
            ),
            (
                "customClientMetadata.rotateRefreshToken".into(),
                show("rotateRefreshToken", "true"),
            ),
            (
                "customClientMetadata.alwaysIssueRefreshToken".into(),
                show("alwaysIssueRefreshToken", "false"),
            ),
        ]
    }
}
