//! A stateful simulator of the parts of Okta that the oidc-refresh-operator uses, for tests and the
//! `sandbox` command, built from the official OpenAPI excerpts in `contracts/` (spec 2026.06.3)
//! and Okta's documented behaviour (see `docs/fidelity/okta.md` for every known difference):
//!
//! - Management API authentication: `SSWS {token}`, `Bearer {token}`, or `DPoP {token}` with a
//!   DPoP proof (signature, `htm`, `htu`, `ath`, key bound to the token, and the current nonce when
//!   [`SimHandle::require_resource_dpop_nonce`] is on); anything else is 401
//!   `E0000011 Invalid token provided`. An OAuth token lacking the operation's `okta.*` scope is
//!   403 `E0000006`.
//! - `POST /oauth2/v1/token` (the org authorization server): `client_credentials` for service apps
//!   with `private_key_jwt` (RS256 or ES256 client assertions: signature, `iss`=`sub`=client id,
//!   `aud` the token URL, `exp`, one-time `jti`); an app that requires DPoP answers 400
//!   `invalid_dpop_proof` without a proof and 400 `use_dpop_nonce` with a `DPoP-Nonce` header until
//!   the proof carries the nonce, then issues `token_type: DPoP` bound to the proof's key.
//! - Apps: `GET /api/v1/apps` (`q` on name/label prefix, `filter` on `id`, `name`, `status` only,
//!   `limit` ≤ 200, `after` cursor with a `Link: …; rel="next"` header), `GET` and `PUT
//!   /api/v1/apps/{appId}`. PUT replaces the whole app: omitted fields are gone, system fields
//!   (`id`, `name`, `status`, `created`, `lastUpdated`, `_links`) in the body are ignored, the
//!   client id is immutable, **`settings.oauthClient.refresh_token` keeps its stored values when
//!   omitted**, `client_secret` is kept when omitted and shown only in the PUT answer, and a GET
//!   shows `refresh_token` only while `refresh_token` is a grant type (defaults: `ROTATE` for
//!   `browser` apps, else `STATIC`; `leeway` 30). Bodies are validated against the contract
//!   (400 `E0000001` with `errorCauses`).
//! - Custom authorization servers: list and read, policies (list, read) and rules (list, read,
//!   `PUT` full replace with the documented ranges: access token 5–1440 min, refresh window
//!   10–2,628,000 min, refresh lifetime 0 = unlimited or not below the access token's, at most
//!   2,628,000), scopes (list, with the reserved `offline_access`).
//! - Rate limits: every Management API answer carries `X-Rate-Limit-Limit`, `-Remaining`,
//!   `-Reset` (epoch seconds), `Date` and `X-Okta-Request-Id`; past the limit the answer is 429
//!   `E0000047` until the window resets.
//!
//! Test hooks (the shared ones are [`sim_kit::Harness`]'s, which [`SimHandle`] dereferences to):
//! latency, `fail_next` and `set_throttle` for Management API calls (a scripted 429 answers with
//! Okta's `E0000047` body, any other status with `E0000009`, both with the rate-limit headers),
//! counters per (method, route template, status), every PUT body recorded and checked against the
//! contract ([`validate_recorded_bodies`](sim_kit::Harness::validate_recorded_bodies)), and direct
//! state edits.

pub mod jose;
pub mod schema;

use std::collections::{BTreeMap, HashMap, HashSet};
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
use serde_json::{Map, Value, json};

use sim_kit::{Contract, CountRules, Harness, Listener, Observe, Tokens, lock};

pub use sim_kit::SandboxSeed;

/// Route template of the org authorization server's token endpoint.
pub const TOKEN_ROUTE: &str = "/oauth2/v1/token";
/// Route templates of the Management API.
pub const APPS_ROUTE: &str = "/api/v1/apps";
/// One app.
pub const APP_ROUTE: &str = "/api/v1/apps/{appId}";
/// Authorization servers.
pub const SERVERS_ROUTE: &str = "/api/v1/authorizationServers";
/// One authorization server.
pub const SERVER_ROUTE: &str = "/api/v1/authorizationServers/{authServerId}";
/// Its policies.
pub const POLICIES_ROUTE: &str = "/api/v1/authorizationServers/{authServerId}/policies";
/// One policy.
pub const POLICY_ROUTE: &str = "/api/v1/authorizationServers/{authServerId}/policies/{policyId}";
/// A policy's rules.
pub const RULES_ROUTE: &str =
    "/api/v1/authorizationServers/{authServerId}/policies/{policyId}/rules";
/// One rule.
pub const RULE_ROUTE: &str =
    "/api/v1/authorizationServers/{authServerId}/policies/{policyId}/rules/{ruleId}";
/// An authorization server's scopes.
pub const SCOPES_ROUTE: &str = "/api/v1/authorizationServers/{authServerId}/scopes";

/// Longest refresh-token lifetime and idle window, in minutes (five years).
pub const MAX_REFRESH_MINUTES: i64 = 2_628_000;

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Listen address (default `127.0.0.1:0`).
    pub addr: SocketAddr,
    /// Management API requests allowed per rate-limit window (default 600).
    pub rate_limit: u32,
    /// Length of a rate-limit window (default 60 s).
    pub rate_window: Duration,
    /// `expires_in` of issued tokens (default 3600 s).
    pub token_lifetime: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            addr: sim_kit::LOOPBACK,
            rate_limit: 600,
            rate_window: Duration::from_secs(60),
            token_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Okta's calls, for the counters: the org token endpoint's calls are token requests.
pub struct OktaRoutes;

impl CountRules for OktaRoutes {
    const TOKEN_ROUTE: Option<&'static str> = Some(TOKEN_ROUTE);
}

/// Request counts by (method, route template, status), e.g.
/// `("PUT", "/api/v1/apps/{appId}", 200)`.
pub type SimCounters = sim_kit::Counters<OktaRoutes>;

/// Okta's contract for recorded bodies: apps and rules, by route.
pub struct OktaContract;

impl Contract for OktaContract {
    fn check(_method: &str, route: &str, body: &Value) -> Result<(), Vec<String>> {
        let problems = match route {
            APP_ROUTE => schema::validate_app(body),
            RULE_ROUTE => schema::validate_rule(body),
            other => vec![format!("no contract check for {other}")],
        };
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// One Management API request body the simulator received, with its method and route template.
pub type RecordedBody = sim_kit::RequestBody<OktaContract>;

#[derive(Clone, Debug)]
struct App {
    /// As stored, `refresh_token` included even while hidden, no `client_secret`.
    row: Map<String, Value>,
    secret: Option<String>,
}

#[derive(Clone, Debug)]
struct Policy {
    row: Value,
    rules: Vec<Value>,
}

#[derive(Clone, Debug)]
struct AuthServer {
    row: Value,
    policies: Vec<Policy>,
    scopes: Vec<Value>,
}

#[derive(Clone, Debug)]
struct ServiceApp {
    jwk: Value,
    dpop: bool,
    scopes: Vec<String>,
}

/// What an issued access token grants: its DPoP key thumbprint, if bound, and its scopes.
#[derive(Clone, Debug)]
struct Grant {
    jkt: Option<String>,
    scopes: Vec<String>,
}

struct RateWindow {
    limit: u32,
    length: Duration,
    start: SystemTime,
    used: u32,
}

impl RateWindow {
    fn reset_epoch(&self) -> u64 {
        let end = self.start + self.length;
        let d = end.duration_since(UNIX_EPOCH).unwrap_or_default();
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

struct SimState {
    apps: BTreeMap<String, App>,
    servers: BTreeMap<String, AuthServer>,
    service_apps: HashMap<String, ServiceApp>,
    api_tokens: HashSet<String>,
    tokens: Tokens<Grant>,
    jtis: HashSet<String>,
    nonce: String,
    resource_nonce: bool,
    rate: RateWindow,
    token_lifetime: Duration,
    sandbox: Option<(String, String, String)>,
}

struct Inner {
    state: Mutex<SimState>,
    kit: Harness<OktaRoutes, RecordedBody>,
}

type Sim = Arc<Inner>;

/// Handle to a running simulator. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

/// The shared test methods (`counters`, `writes`, `reset_counters`, `recorded_bodies`,
/// `validate_recorded_bodies`, `set_latency`, `fail_next`, `set_throttle`, `shutdown`) are the
/// harness's.
impl Deref for SimHandle {
    type Target = Harness<OktaRoutes, RecordedBody>;

    fn deref(&self) -> &Self::Target {
        &self.inner.kit
    }
}

/// An id in Okta's style: `prefix` followed by random-looking letters and digits (20 chars).
pub fn new_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let seed = N.fetch_add(1, Ordering::Relaxed)
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
    let mut x = ring::digest::digest(&ring::digest::SHA256, &seed.to_be_bytes())
        .as_ref()
        .to_vec();
    x.truncate(20 - prefix.len().min(20));
    let mut out = prefix.to_string();
    out.extend(
        x.iter()
            .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char),
    );
    out
}

fn now_iso() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000Z")
}

/// (year, month, day, hour, minute, second) of an epoch second (UTC).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// An HTTP date (IMF-fixdate) of an epoch second.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s) = civil(secs);
    format!(
        "{}, {d:02} {} {y} {h:02}:{mi:02}:{s:02} GMT",
        DAYS[((secs / 86_400) % 7) as usize],
        MONTHS[(mo - 1) as usize]
    )
}

/// Starts the simulator on the current tokio runtime: an empty org.
pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = Listener::bind(config.addr).await?;
    let inner = Arc::new(Inner {
        state: Mutex::new(SimState {
            apps: BTreeMap::new(),
            servers: BTreeMap::new(),
            service_apps: HashMap::new(),
            api_tokens: HashSet::new(),
            tokens: Tokens::default(),
            jtis: HashSet::new(),
            nonce: new_id("n"),
            resource_nonce: false,
            rate: RateWindow {
                limit: config.rate_limit,
                length: config.rate_window,
                start: SystemTime::now(),
                used: 0,
            },
            token_lifetime: config.token_lifetime,
            sandbox: None,
        }),
        kit: Harness::new(listener.base_url(), Duration::ZERO),
    });
    let app = observed(&inner).apply(Router::new().fallback(dispatch).with_state(inner.clone()));
    inner.kit.serve(listener, app);
    Ok(SimHandle { inner })
}

/// An OIDC web app as the Admin Console creates it for Coder: authorization code only, a client
/// secret, Coder's callback, `TRUSTED` consent, no refresh token.
pub fn web_app(id: &str, client_id: &str, label: &str) -> Value {
    json!({
        "id": id,
        "orn": format!("orn:okta:idp:00o1sim:apps:oidc_client:{id}"),
        "name": "oidc_client",
        "label": label,
        "status": "ACTIVE",
        "created": "2026-01-01T00:00:00.000Z",
        "lastUpdated": "2026-01-01T00:00:00.000Z",
        "signOnMode": "OPENID_CONNECT",
        "accessibility": {"selfService": false, "errorRedirectUrl": null, "loginRedirectUrl": null},
        "visibility": {"autoSubmitToolbar": false, "hide": {"iOS": true, "web": true}, "appLinks": {"oidc_client_link": true}},
        "features": [],
        "credentials": {
            "userNameTemplate": {"template": "${source.login}", "type": "BUILT_IN"},
            "signing": {"kid": "sim-signing-key"},
            "oauthClient": {
                "autoKeyRotation": true,
                "client_id": client_id,
                "token_endpoint_auth_method": "client_secret_basic",
                "pkce_required": false
            }
        },
        "settings": {
            "app": {},
            "notifications": {"vpn": {"network": {"connection": "DISABLED"}, "message": null, "helpUrl": null}},
            "manualProvisioning": false,
            "implicitAssignment": false,
            "notes": {"admin": null, "enduser": null},
            "oauthClient": {
                "client_uri": null,
                "logo_uri": null,
                "redirect_uris": ["https://coder.example.com/api/v2/users/oidc/callback"],
                "post_logout_redirect_uris": [],
                "response_types": ["code"],
                "grant_types": ["authorization_code"],
                "application_type": "web",
                "consent_method": "TRUSTED",
                "issuer_mode": "DYNAMIC",
                "wildcard_redirect": "DISABLED"
            }
        }
    })
}

/// A custom authorization server row.
pub fn auth_server(id: &str, name: &str, base_url: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "description": format!("{name} authorization server"),
        "audiences": ["api://default"],
        "issuer": format!("{base_url}/oauth2/{id}"),
        "issuerMode": "DYNAMIC",
        "status": "ACTIVE",
        "created": "2026-01-01T00:00:00.000Z",
        "lastUpdated": "2026-01-01T00:00:00.000Z",
        "credentials": {"signing": {"kid": "sim-as-key", "rotationMode": "AUTO", "use": "sig"}}
    })
}

/// An access policy for `clients` (client ids, or `ALL_CLIENTS`).
pub fn access_policy(id: &str, name: &str, priority: i64, clients: &[&str]) -> Value {
    json!({
        "id": id,
        "type": "OAUTH_AUTHORIZATION_POLICY",
        "status": "ACTIVE",
        "name": name,
        "description": name,
        "priority": priority,
        "system": false,
        "conditions": {"clients": {"include": clients}},
        "created": "2026-01-01T00:00:00.000Z",
        "lastUpdated": "2026-01-01T00:00:00.000Z"
    })
}

/// A rule with the Admin Console's defaults: authorization code, every user, every scope, 60 min
/// access tokens, unlimited refresh tokens with a 7-day idle window.
pub fn access_rule(id: &str, name: &str, priority: i64, scopes: &[&str]) -> Value {
    json!({
        "id": id,
        "type": "RESOURCE_ACCESS",
        "status": "ACTIVE",
        "name": name,
        "priority": priority,
        "system": false,
        "conditions": {
            "people": {"users": {"include": []}, "groups": {"include": ["EVERYONE"]}},
            "grantTypes": {"include": ["authorization_code"]},
            "scopes": {"include": scopes}
        },
        "actions": {"token": {
            "accessTokenLifetimeMinutes": 60,
            "refreshTokenLifetimeMinutes": 0,
            "refreshTokenWindowMinutes": 10080
        }},
        "created": "2026-01-01T00:00:00.000Z",
        "lastUpdated": "2026-01-01T00:00:00.000Z"
    })
}

/// An Okta error body.
pub fn error_body(code: &str, summary: &str, causes: &[String]) -> Value {
    json!({
        "errorCode": code,
        "errorSummary": summary,
        "errorLink": code,
        "errorId": format!("oae{}", new_id("")),
        "errorCauses": causes.iter().map(|c| json!({"errorSummary": c})).collect::<Vec<_>>()
    })
}

fn okta_error(status: StatusCode, code: &str, summary: &str, causes: &[String]) -> Response {
    (status, axum::Json(error_body(code, summary, causes))).into_response()
}

fn invalid_token() -> Response {
    let mut r = okta_error(
        StatusCode::UNAUTHORIZED,
        "E0000011",
        "Invalid token provided",
        &[],
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("SSWS realm=\"okta\""),
    );
    r
}

fn not_found(what: &str) -> Response {
    okta_error(
        StatusCode::NOT_FOUND,
        "E0000007",
        &format!("Not found: Resource not found: {what} (Resource)"),
        &[],
    )
}

fn validation_failed(causes: Vec<String>) -> Response {
    let summary = format!(
        "Api validation failed: {}",
        causes.first().cloned().unwrap_or_default()
    );
    okta_error(StatusCode::BAD_REQUEST, "E0000001", &summary, &causes)
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
        ["oauth2", "v1", "token"] => TOKEN_ROUTE.into(),
        ["api", "v1", "apps"] => APPS_ROUTE.into(),
        ["api", "v1", "apps", _] => APP_ROUTE.into(),
        ["api", "v1", "authorizationServers"] => SERVERS_ROUTE.into(),
        ["api", "v1", "authorizationServers", _] => SERVER_ROUTE.into(),
        ["api", "v1", "authorizationServers", _, "policies"] => POLICIES_ROUTE.into(),
        ["api", "v1", "authorizationServers", _, "policies", _] => POLICY_ROUTE.into(),
        [
            "api",
            "v1",
            "authorizationServers",
            _,
            "policies",
            _,
            "rules",
        ] => RULES_ROUTE.into(),
        [
            "api",
            "v1",
            "authorizationServers",
            _,
            "policies",
            _,
            "rules",
            _,
        ] => RULE_ROUTE.into(),
        ["api", "v1", "authorizationServers", _, "scopes"] => SCOPES_ROUTE.into(),
        _ => "<unmatched>".into(),
    }
}

fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn is_api(route: &str) -> bool {
    route.starts_with("/api/")
}

/// The shared hooks around every call, in Okta's shape: scripted failures hit the Management API
/// only and answer with Okta's error bodies; the rate limit refuses Management API calls over the
/// window's quota; every Management API answer carries the rate-limit headers and a request id,
/// every answer a `Date`.
fn observed(sim: &Sim) -> Observe {
    let admit = sim.clone();
    let finish = sim.clone();
    sim.kit
        .observe(route_template)
        .faults_on(is_api)
        .fault_answer(|status| {
            if status == StatusCode::TOO_MANY_REQUESTS {
                rate_limited()
            } else {
                okta_error(status, "E0000009", "Internal Server Error", &[])
            }
        })
        .admit(move |route| {
            if !is_api(route) {
                return None;
            }
            let now = SystemTime::now();
            let rate = &mut lock(&admit.state).rate;
            if now >= rate.start + rate.length {
                rate.start = now;
                rate.used = 0;
            }
            if rate.used >= rate.limit {
                return Some(rate_limited());
            }
            rate.used += 1;
            None
        })
        .finish(move |route, response| {
            if is_api(route) {
                let st = lock(&finish.state);
                let rate = &st.rate;
                let h = response.headers_mut();
                for (k, v) in [
                    ("x-rate-limit-limit", rate.limit.to_string()),
                    (
                        "x-rate-limit-remaining",
                        rate.limit.saturating_sub(rate.used).to_string(),
                    ),
                    ("x-rate-limit-reset", rate.reset_epoch().to_string()),
                    ("x-okta-request-id", new_id("sim")),
                ] {
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        h.insert(k, v);
                    }
                }
            }
            if let Ok(v) = HeaderValue::from_str(&http_date(epoch_now())) {
                response.headers_mut().insert(header::DATE, v);
            }
        })
}

fn rate_limited() -> Response {
    okta_error(
        StatusCode::TOO_MANY_REQUESTS,
        "E0000047",
        "API call exceeded rate limit due to too many requests.",
        &[],
    )
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
    if route == "<unmatched>" {
        return not_found(uri.path());
    }
    let segs: Vec<String> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    let htu = format!("{}{}", sim.kit.base_url(), uri.path());
    let mut st = lock(&sim.state);
    let scopes = match authenticate(&mut st, &headers, method.as_str(), &htu) {
        Ok(s) => s,
        Err(AuthFailure::Invalid) => return invalid_token(),
        Err(AuthFailure::NeedNonce) => {
            let mut r = invalid_token();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "DPoP error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce in DPoP proof\"",
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&st.nonce) {
                r.headers_mut().insert("dpop-nonce", v);
            }
            return r;
        }
    };
    let family = if route.starts_with(SERVERS_ROUTE) {
        "authorizationServers"
    } else {
        "apps"
    };
    let needed = if method == Method::GET {
        vec![
            format!("okta.{family}.read"),
            format!("okta.{family}.manage"),
        ]
    } else {
        vec![format!("okta.{family}.manage")]
    };
    if let Some(scopes) = scopes
        && !needed.iter().any(|n| scopes.contains(n))
    {
        return okta_error(
            StatusCode::FORBIDDEN,
            "E0000006",
            "You do not have permission to perform the requested action",
            &[],
        );
    }
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    let parsed = if method == Method::PUT || method == Method::POST {
        let parsed = serde_json::from_slice::<Value>(&body).ok();
        sim.kit
            .record(RecordedBody::new(method.as_str(), &route, &body));
        match parsed {
            Some(v) => Some(v),
            None => {
                return okta_error(
                    StatusCode::BAD_REQUEST,
                    "E0000003",
                    "The request body was not well-formed.",
                    &[],
                );
            }
        }
    } else {
        None
    };
    let base = sim.kit.base_url().to_string();
    match (method.clone(), route.as_str()) {
        (Method::GET, APPS_ROUTE) => list_apps(&st, &base, &query),
        (Method::GET, APP_ROUTE) => match st.apps.get(&segs[3]) {
            Some(a) => axum::Json(shown(a, &base, false)).into_response(),
            None => not_found(&segs[3]),
        },
        (Method::PUT, APP_ROUTE) => put_app(&mut st, &segs[3], &parsed.unwrap_or_default(), &base),
        (Method::GET, SERVERS_ROUTE) => axum::Json(Value::Array(
            st.servers.values().map(|s| s.row.clone()).collect(),
        ))
        .into_response(),
        (Method::GET, SERVER_ROUTE) => match st.servers.get(&segs[3]) {
            Some(s) => axum::Json(s.row.clone()).into_response(),
            None => not_found(&segs[3]),
        },
        (Method::GET, POLICIES_ROUTE) => match st.servers.get(&segs[3]) {
            Some(s) => axum::Json(Value::Array(sorted(
                s.policies.iter().map(|p| p.row.clone()).collect(),
            )))
            .into_response(),
            None => not_found(&segs[3]),
        },
        (Method::GET, POLICY_ROUTE) => match policy(&st, &segs[3], &segs[5]) {
            Some(p) => axum::Json(p.row.clone()).into_response(),
            None => not_found(&segs[5]),
        },
        (Method::GET, RULES_ROUTE) => match policy(&st, &segs[3], &segs[5]) {
            Some(p) => axum::Json(Value::Array(sorted(p.rules.clone()))).into_response(),
            None => not_found(&segs[5]),
        },
        (Method::GET, RULE_ROUTE) => match policy(&st, &segs[3], &segs[5])
            .and_then(|p| p.rules.iter().find(|r| r["id"] == segs[7].as_str()))
        {
            Some(r) => axum::Json(r.clone()).into_response(),
            None => not_found(&segs[7]),
        },
        (Method::PUT, RULE_ROUTE) => put_rule(
            &mut st,
            (&segs[3], &segs[5], &segs[7]),
            &parsed.unwrap_or_default(),
        ),
        (Method::GET, SCOPES_ROUTE) => match st.servers.get(&segs[3]) {
            Some(s) => axum::Json(Value::Array(s.scopes.clone())).into_response(),
            None => not_found(&segs[3]),
        },
        _ => okta_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "E0000022",
            "The endpoint does not support the provided HTTP method",
            &[],
        ),
    }
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|x| x["priority"].as_i64().unwrap_or(i64::MAX));
    v
}

fn policy<'a>(st: &'a SimState, server: &str, policy: &str) -> Option<&'a Policy> {
    st.servers
        .get(server)?
        .policies
        .iter()
        .find(|p| p.row["id"] == policy)
}

/// Why a Management API call is not authenticated.
enum AuthFailure {
    /// 401 `E0000011`.
    Invalid,
    /// 401 `use_dpop_nonce` with a `DPoP-Nonce` header (resource-server nonces are on).
    NeedNonce,
}

/// Checks the `Authorization` header: `Ok(None)` for an API token (all rights), `Ok(Some(scopes))`
/// for an OAuth token, `Err` for anything Okta answers with `E0000011`.
fn authenticate(
    st: &mut SimState,
    headers: &HeaderMap,
    method: &str,
    htu: &str,
) -> Result<Option<Vec<String>>, AuthFailure> {
    use AuthFailure::Invalid;
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (scheme, value) = auth.split_once(' ').unwrap_or((auth, ""));
    let value = value.trim();
    match scheme {
        "SSWS" if st.api_tokens.contains(value) => Ok(None),
        "Bearer" | "DPoP" => {
            let Some(t) = st.tokens.live(value, Instant::now()).cloned() else {
                return Err(Invalid);
            };
            match (&t.jkt, scheme) {
                (None, "Bearer") => Ok(Some(t.scopes)),
                (Some(jkt), "DPoP") => {
                    let proof = headers
                        .get("dpop")
                        .and_then(|v| v.to_str().ok())
                        .ok_or(Invalid)?;
                    let (_, nonce) = check_proof(st, proof, method, htu, Some(value))
                        .ok()
                        .filter(|(thumb, _)| thumb == jkt)
                        .ok_or(Invalid)?;
                    if st.resource_nonce && nonce.as_deref() != Some(st.nonce.as_str()) {
                        return Err(AuthFailure::NeedNonce);
                    }
                    Ok(Some(t.scopes))
                }
                _ => Err(Invalid),
            }
        }
        _ => Err(Invalid),
    }
}

/// Checks a DPoP proof; returns (key thumbprint, nonce claim).
fn check_proof(
    st: &mut SimState,
    proof: &str,
    method: &str,
    htu: &str,
    access_token: Option<&str>,
) -> Result<(String, Option<String>), String> {
    let jws = jose::parse(proof)?;
    if jws.header["typ"] != "dpop+jwt" {
        return Err("typ is not dpop+jwt".into());
    }
    let jwk = jws.header["jwk"].clone();
    jws.verify(&jwk)?;
    let c = &jws.claims;
    if c["htm"] != method {
        return Err("htm does not match the request method".into());
    }
    if c["htu"].as_str().map(|u| u.split('?').next().unwrap_or(u)) != Some(htu) {
        return Err("htu does not match the request URL".into());
    }
    let iat = c["iat"].as_i64().ok_or("iat is missing")?;
    if (iat - epoch_now() as i64).abs() > 300 {
        return Err("iat is too far from now".into());
    }
    if let Some(t) = access_token
        && c["ath"].as_str() != Some(&jose::ath(t))
    {
        return Err("ath does not match the access token".into());
    }
    let jti = c["jti"].as_str().ok_or("jti is missing")?;
    if !st.jtis.insert(format!("dpop:{jti}")) {
        return Err("jti was used before".into());
    }
    Ok((
        jose::thumbprint(&jwk),
        c["nonce"].as_str().map(str::to_string),
    ))
}

fn token(sim: &Sim, headers: &HeaderMap, body: &[u8]) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let get = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    if get("grant_type") != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The authorization server only supports client_credentials for service apps here.",
        );
    }
    if get("client_assertion_type")
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed. Either the client or the client credentials are invalid.",
        );
    }
    let token_url = format!("{}{TOKEN_ROUTE}", sim.kit.base_url());
    let mut st = lock(&sim.state);
    let assertion = get("client_assertion").unwrap_or_default();
    let checked = jose::parse(assertion).and_then(|jws| {
        let client_id = jws.claims["iss"].as_str().unwrap_or_default().to_string();
        let app = st
            .service_apps
            .get(&client_id)
            .cloned()
            .ok_or("unknown client")?;
        jws.verify(&app.jwk)?;
        let c = &jws.claims;
        if c["sub"] != client_id.as_str() {
            return Err("sub is not the client id".into());
        }
        if c["aud"] != token_url.as_str() {
            return Err("aud is not the token endpoint".into());
        }
        let exp = c["exp"].as_i64().ok_or("exp is missing")?;
        if exp <= epoch_now() as i64 || exp - epoch_now() as i64 > 3600 {
            return Err("exp is in the past or more than an hour ahead".into());
        }
        let jti = c["jti"].as_str().ok_or("jti is missing")?;
        if !st.jtis.insert(format!("client:{jti}")) {
            return Err("jti was used before".into());
        }
        Ok(app)
    });
    let app = match checked {
        Ok(app) => app,
        Err(why) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                &format!("The client_assertion token is invalid: {why}."),
            );
        }
    };
    let requested: Vec<String> = get("scope")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if requested.is_empty() || requested.iter().any(|s| !app.scopes.contains(s)) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "One or more scopes are not configured for the authorization server resource.",
        );
    }
    let proof = headers.get("dpop").and_then(|v| v.to_str().ok());
    let jkt = match (app.dpop, proof) {
        (true, None) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_dpop_proof",
                "The DPoP proof JWT header is missing.",
            );
        }
        (true, Some(p)) => match check_proof(&mut st, p, "POST", &token_url, None) {
            Ok((thumb, nonce)) if nonce.as_deref() == Some(st.nonce.as_str()) => Some(thumb),
            Ok(_) => {
                let mut r = oauth_error(
                    StatusCode::BAD_REQUEST,
                    "use_dpop_nonce",
                    "Authorization server requires nonce in DPoP proof.",
                );
                if let Ok(v) = HeaderValue::from_str(&st.nonce) {
                    r.headers_mut().insert("dpop-nonce", v);
                }
                return r;
            }
            Err(why) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_dpop_proof",
                    &format!("The DPoP proof JWT is invalid: {why}."),
                );
            }
        },
        (false, _) => None,
    };
    let access = new_id("eyJsim");
    let expires_in = st.token_lifetime.as_secs();
    let now = Instant::now();
    let expires = now + st.token_lifetime;
    st.tokens.insert(
        access.clone(),
        Grant {
            jkt: jkt.clone(),
            scopes: requested.clone(),
        },
        expires,
        now,
    );
    let mut r = axum::Json(json!({
        "token_type": if jkt.is_some() { "DPoP" } else { "Bearer" },
        "expires_in": expires_in,
        "access_token": access,
        "scope": requested.join(" "),
    }))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn grant_types(row: &Map<String, Value>) -> Vec<String> {
    row.get("settings")
        .and_then(|s| s["oauthClient"]["grant_types"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// An app as the API shows it: `refresh_token` only with the grant, the secret only after a write.
fn shown(app: &App, base: &str, with_secret: bool) -> Value {
    let mut row = app.row.clone();
    let refresh = grant_types(&row).iter().any(|g| g == "refresh_token");
    if !refresh
        && let Some(oc) = row
            .get_mut("settings")
            .and_then(|s| s.get_mut("oauthClient"))
            .and_then(Value::as_object_mut)
    {
        oc.remove("refresh_token");
    }
    if with_secret
        && let Some(secret) = &app.secret
        && let Some(c) = row
            .get_mut("credentials")
            .and_then(|c| c.get_mut("oauthClient"))
            .and_then(Value::as_object_mut)
    {
        c.insert("client_secret".into(), json!(secret));
    }
    let id = row["id"].as_str().unwrap_or_default().to_string();
    row.insert(
        "_links".into(),
        json!({"self": {"href": format!("{base}/api/v1/apps/{id}")},
               "appLinks": [{"name": "oidc_client_link", "href": format!("{base}/home/oidc_client/{id}/aln1"), "type": "text/html"}]}),
    );
    Value::Object(row)
}

fn list_apps(st: &SimState, base: &str, query: &[(String, String)]) -> Response {
    let q = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let limit = q("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 200);
    let mut filter: Option<(String, String)> = None;
    if let Some(f) = q("filter") {
        // `<property> eq "<value>"` on the properties the spec lists.
        let parts: Vec<&str> = f.splitn(3, ' ').collect();
        let ok = parts.len() == 3 && parts[1] == "eq" && parts[2].len() >= 2;
        let prop = parts.first().copied().unwrap_or_default();
        if !ok
            || !matches!(
                prop,
                "id" | "status" | "name" | "credentials.signing.kid" | "settings.slo.enabled"
            )
        {
            return validation_failed(vec![format!(
                "Invalid filter expression: {f}. Apps can be filtered by id, status, name, credentials.signing.kid and settings.slo.enabled."
            )]);
        }
        filter = Some((prop.to_string(), parts[2].trim_matches('"').to_string()));
    }
    let prefix = q("q").map(|s| s.to_lowercase());
    let matching: Vec<&App> = st
        .apps
        .values()
        .filter(|a| match &filter {
            Some((p, v)) => match p.as_str() {
                "id" | "status" | "name" => a.row.get(p).and_then(Value::as_str) == Some(v),
                "credentials.signing.kid" => a.row["credentials"]["signing"]["kid"] == v.as_str(),
                _ => false,
            },
            None => true,
        })
        .filter(|a| match &prefix {
            Some(p) => ["name", "label"].iter().any(|k| {
                a.row
                    .get(*k)
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.to_lowercase().starts_with(p))
            }),
            None => true,
        })
        .collect();
    let start = match q("after") {
        Some(after) => matching
            .iter()
            .position(|a| a.row["id"] == after.as_str())
            .map(|i| i + 1)
            .unwrap_or(matching.len()),
        None => 0,
    };
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(|a| shown(a, base, false))
        .collect();
    let mut links = vec![format!("<{base}/api/v1/apps?limit={limit}>; rel=\"self\"")];
    if start + limit < matching.len()
        && let Some(last) = page.last()
    {
        let mut next = vec![
            (
                "after".to_string(),
                last["id"].as_str().unwrap_or_default().to_string(),
            ),
            ("limit".to_string(), limit.to_string()),
        ];
        for k in ["filter", "q"] {
            if let Some(v) = q(k) {
                next.push((k.to_string(), v));
            }
        }
        let qs = serde_urlencoded::to_string(&next).unwrap_or_default();
        links.push(format!("<{base}/api/v1/apps?{qs}>; rel=\"next\""));
    }
    let mut r = axum::Json(Value::Array(page)).into_response();
    for l in links {
        if let Ok(v) = HeaderValue::from_str(&l) {
            r.headers_mut().append(header::LINK, v);
        }
    }
    r
}

fn put_app(st: &mut SimState, id: &str, body: &Value, base: &str) -> Response {
    let mut causes = schema::validate_app(body);
    let Some(stored) = st.apps.get(id).cloned() else {
        return not_found(id);
    };
    if !causes.is_empty() {
        return validation_failed(causes);
    }
    let mut row = body.as_object().cloned().unwrap_or_default();
    for k in [
        "id",
        "name",
        "status",
        "created",
        "orn",
        "_links",
        "_embedded",
    ] {
        row.remove(k);
        if let Some(v) = stored.row.get(k) {
            row.insert(k.into(), v.clone());
        }
    }
    row.insert("lastUpdated".into(), json!(now_iso()));
    let stored_client_id = stored.row["credentials"]["oauthClient"]["client_id"].clone();
    let mut secret = stored.secret.clone();
    if let Some(c) = row
        .get_mut("credentials")
        .and_then(|c| c.get_mut("oauthClient"))
        .and_then(Value::as_object_mut)
    {
        match c.get("client_id") {
            Some(v) if *v != stored_client_id => {
                causes.push("client_id: The client_id cannot be changed.".into())
            }
            _ => {
                c.insert("client_id".into(), stored_client_id.clone());
            }
        }
        if let Some(s) = c
            .remove("client_secret")
            .and_then(|v| v.as_str().map(str::to_string))
        {
            secret = Some(s);
        }
    }
    // Settings Okta defaults when a body leaves them out (the official SDK's
    // OpenIdConnectApplicationSettings model does not carry them, so it never sends them back).
    if let Some(settings) = row.get_mut("settings").and_then(Value::as_object_mut) {
        settings.entry("app").or_insert(json!({}));
        settings.entry("manualProvisioning").or_insert(json!(false));
        settings.entry("implicitAssignment").or_insert(json!(false));
    }
    let grants = grant_types(&row);
    let oc = row
        .get_mut("settings")
        .and_then(|s| s.get_mut("oauthClient"))
        .and_then(Value::as_object_mut);
    if let Some(oc) = oc {
        let kind = oc
            .get("application_type")
            .and_then(Value::as_str)
            .unwrap_or("web")
            .to_string();
        let refresh = grants.iter().any(|g| g == "refresh_token");
        if refresh && kind == "service" {
            causes.push(
                "grant_types: 'refresh_token' is not a valid grant type for a service application."
                    .into(),
            );
        }
        if oc.get("dpop_bound_access_tokens") == Some(&json!(true))
            && grants
                .iter()
                .any(|g| g == "client_credentials" || g == "implicit")
        {
            causes.push("dpop_bound_access_tokens: DPoP-bound access tokens can't be used with the client_credentials or implicit grant types.".into());
        }
        if !oc.contains_key("refresh_token") {
            let kept = stored.row["settings"]["oauthClient"]
                .get("refresh_token")
                .cloned();
            match kept {
                Some(r) => {
                    oc.insert("refresh_token".into(), r);
                }
                None if refresh => {
                    let rotation = if kind == "browser" {
                        "ROTATE"
                    } else {
                        "STATIC"
                    };
                    oc.insert(
                        "refresh_token".into(),
                        json!({"rotation_type": rotation, "leeway": 30}),
                    );
                }
                None => {}
            }
        } else if let Some(r) = oc.get_mut("refresh_token").and_then(Value::as_object_mut)
            && !r.contains_key("leeway")
        {
            r.insert("leeway".into(), json!(30));
        }
    }
    if !causes.is_empty() {
        return validation_failed(causes);
    }
    let app = App { row, secret };
    let answer = shown(&app, base, true);
    st.apps.insert(id.to_string(), app);
    axum::Json(answer).into_response()
}

fn put_rule(st: &mut SimState, ids: (&str, &str, &str), body: &Value) -> Response {
    let (server, pol, rule) = ids;
    let mut causes = schema::validate_rule(body);
    let Some(p) = st
        .servers
        .get_mut(server)
        .and_then(|s| s.policies.iter_mut().find(|p| p.row["id"] == pol))
    else {
        return not_found(pol);
    };
    let Some(stored) = p.rules.iter_mut().find(|r| r["id"] == rule) else {
        return not_found(rule);
    };
    if !causes.is_empty() {
        return validation_failed(causes);
    }
    if body["type"] != "RESOURCE_ACCESS" {
        causes.push("type: The rule type must be RESOURCE_ACCESS.".into());
    }
    let t = &body["actions"]["token"];
    let minutes = |k: &str| t.get(k).and_then(Value::as_i64);
    let access = minutes("accessTokenLifetimeMinutes").unwrap_or(60);
    if !(5..=1440).contains(&access) {
        causes.push("accessTokenLifetimeMinutes: Access token lifetime must be between 5 minutes and 1 day.".into());
    }
    let refresh = minutes("refreshTokenLifetimeMinutes").unwrap_or(0);
    if refresh != 0 && (refresh < access || refresh > MAX_REFRESH_MINUTES) {
        causes.push("refreshTokenLifetimeMinutes: Refresh token lifetime must be unlimited or between the access token lifetime and 5 years.".into());
    }
    let window = minutes("refreshTokenWindowMinutes").unwrap_or(10080);
    if !(10..=MAX_REFRESH_MINUTES).contains(&window) {
        causes.push(
            "refreshTokenWindowMinutes: Refresh token window must be between 10 minutes and 5 years."
                .into(),
        );
    }
    if body["conditions"]["grantTypes"]["include"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        causes.push("conditions.grantTypes: At least one grant type must be included.".into());
    }
    if !causes.is_empty() {
        return validation_failed(causes);
    }
    let mut row = body.as_object().cloned().unwrap_or_default();
    for k in ["id", "created", "system", "_links"] {
        row.remove(k);
        if let Some(v) = stored.get(k) {
            row.insert(k.into(), v.clone());
        }
    }
    row.insert("lastUpdated".into(), json!(now_iso()));
    row.entry("status").or_insert(json!("ACTIVE"));
    // Omitted token settings take the defaults.
    let token = row
        .entry("actions")
        .or_insert(json!({}))
        .as_object_mut()
        .map(|a| a.entry("token").or_insert(json!({})));
    if let Some(Value::Object(t)) = token {
        t.entry("accessTokenLifetimeMinutes")
            .or_insert(json!(access));
        t.entry("refreshTokenLifetimeMinutes")
            .or_insert(json!(refresh));
        t.entry("refreshTokenWindowMinutes")
            .or_insert(json!(window));
    }
    *stored = Value::Object(row);
    axum::Json(stored.clone()).into_response()
}

impl SimHandle {
    fn state(&self) -> MutexGuard<'_, SimState> {
        lock(&self.inner.state)
    }

    /// `http://127.0.0.1:<port>`: the org URL.
    pub fn base_url(&self) -> String {
        self.inner.kit.base_url().to_string()
    }

    /// Adds (or replaces) an app, e.g. from [`web_app`], with an optional client secret.
    pub fn add_app(&self, row: Value, secret: Option<&str>) -> String {
        let mut row = match row {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let id = row
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| new_id("0oa"));
        row.insert("id".into(), json!(id));
        self.state().apps.insert(
            id.clone(),
            App {
                row,
                secret: secret.map(str::to_string),
            },
        );
        id
    }

    /// An app as stored (the `refresh_token` object included even while the grant is off; no
    /// secret).
    pub fn app(&self, id: &str) -> Option<Value> {
        self.state()
            .apps
            .get(id)
            .map(|a| Value::Object(a.row.clone()))
    }

    /// An app's client secret.
    pub fn app_secret(&self, id: &str) -> Option<String> {
        self.state().apps.get(id).and_then(|a| a.secret.clone())
    }

    /// Edits an app directly (as an administrator in the Admin Console would).
    pub fn update_app(&self, id: &str, f: impl FnOnce(&mut Map<String, Value>)) {
        if let Some(a) = self.state().apps.get_mut(id) {
            f(&mut a.row);
        }
    }

    /// Adds a custom authorization server (with the reserved OIDC scopes).
    pub fn add_auth_server(&self, id: &str, name: &str) {
        let base = self.base_url();
        let scopes = ["openid", "profile", "email", "address", "phone", "offline_access", "device_sso"]
            .iter()
            .map(|s| {
                json!({"id": new_id("scp"), "name": s, "displayName": s, "description": format!("Reserved scope {s}"),
                       "system": true, "default": false, "optional": false, "consent": "IMPLICIT", "metadataPublish": "ALL_CLIENTS"})
            })
            .collect();
        self.state().servers.insert(
            id.to_string(),
            AuthServer {
                row: auth_server(id, name, &base),
                policies: Vec::new(),
                scopes,
            },
        );
    }

    /// Adds a policy (from [`access_policy`]) to an authorization server.
    pub fn add_policy(&self, server: &str, policy: Value) {
        if let Some(s) = self.state().servers.get_mut(server) {
            s.policies.push(Policy {
                row: policy,
                rules: Vec::new(),
            });
        }
    }

    /// Adds a rule (from [`access_rule`]) to a policy.
    pub fn add_rule(&self, server: &str, policy: &str, rule: Value) {
        if let Some(p) = self
            .state()
            .servers
            .get_mut(server)
            .and_then(|s| s.policies.iter_mut().find(|p| p.row["id"] == policy))
        {
            p.rules.push(rule);
        }
    }

    /// A rule as stored.
    pub fn rule(&self, server: &str, policy: &str, rule: &str) -> Option<Value> {
        self.state()
            .servers
            .get(server)?
            .policies
            .iter()
            .find(|p| p.row["id"] == policy)?
            .rules
            .iter()
            .find(|r| r["id"] == rule)
            .cloned()
    }

    /// Edits a rule directly.
    pub fn update_rule(&self, server: &str, policy: &str, rule: &str, f: impl FnOnce(&mut Value)) {
        if let Some(r) = self
            .state()
            .servers
            .get_mut(server)
            .and_then(|s| s.policies.iter_mut().find(|p| p.row["id"] == policy))
            .and_then(|p| p.rules.iter_mut().find(|r| r["id"] == rule))
        {
            f(r);
        }
    }

    /// Edits a policy directly.
    pub fn update_policy(&self, server: &str, policy: &str, f: impl FnOnce(&mut Value)) {
        if let Some(p) = self
            .state()
            .servers
            .get_mut(server)
            .and_then(|s| s.policies.iter_mut().find(|p| p.row["id"] == policy))
        {
            f(&mut p.row);
        }
    }

    /// Adds an API token (`SSWS`) with the rights of a super administrator.
    pub fn add_api_token(&self, token: &str) {
        self.state().api_tokens.insert(token.to_string());
    }

    /// Adds an API service app authenticating with `private_key_jwt` (public `jwk`), granted
    /// `scopes`; `dpop` requires DPoP proofs on its token requests (the default for new service
    /// apps).
    pub fn add_service_app(&self, client_id: &str, jwk: Value, dpop: bool, scopes: &[&str]) {
        self.state().service_apps.insert(
            client_id.to_string(),
            ServiceApp {
                jwk,
                dpop,
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
            },
        );
    }

    /// Changes the DPoP nonce the token endpoint expects.
    pub fn rotate_dpop_nonce(&self) {
        self.state().nonce = new_id("n");
    }

    /// Management API calls with DPoP-bound tokens must carry the current DPoP nonce (401
    /// `use_dpop_nonce` with a `DPoP-Nonce` header otherwise), as an Okta resource server may ask.
    pub fn require_resource_dpop_nonce(&self, on: bool) {
        self.state().resource_nonce = on;
    }

    /// Makes every issued token expire now.
    pub fn expire_tokens(&self) {
        self.state().tokens.expire_all(Instant::now());
    }

    /// Sets the rate limit (requests per window) and starts a new window.
    pub fn set_rate_limit(&self, limit: u32, window: Duration) {
        let mut st = self.state();
        st.rate = RateWindow {
            limit,
            length: window,
            start: SystemTime::now(),
            used: 0,
        };
    }

    /// Seeds a realistic org: Coder's web app (a client id that is not its app id, a secret, two
    /// redirect URIs, an extra grant type) without refresh tokens; a custom authorization server
    /// "coder" whose first policy applies to Coder's app only, with a rule that does not allow
    /// `offline_access`; a second, shared policy for every other client that must stay untouched;
    /// another app; and a DPoP-requiring service app for the operator (ES256 key).
    pub fn seed_sandbox(&self) -> SandboxSeed {
        let client_id = "coder-workspaces-oidc";
        let mut coder = web_app("0oacoder4sandbox7x1", client_id, "Coder");
        coder["settings"]["oauthClient"]["redirect_uris"] = json!([
            "https://coder.example.com/api/v2/users/oidc/callback",
            "https://coder-staging.example.com/api/v2/users/oidc/callback"
        ]);
        coder["settings"]["oauthClient"]["grant_types"] = json!([
            "authorization_code",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ]);
        let app_id = self.add_app(coder, Some("coder-oidc-client-secret-0123456789"));
        self.add_app(
            web_app("0oaother2app5sandbox", "0oaother2app5sandbox", "Wiki"),
            Some("wiki-client-secret-0123456789"),
        );
        let server = "aus1coder4sandbox0x1";
        self.add_auth_server(server, "coder");
        self.add_policy(server, access_policy("00p1coder", "Coder", 1, &[client_id]));
        self.add_rule(
            server,
            "00p1coder",
            access_rule(
                "0pr1coder",
                "Coder users",
                1,
                &["openid", "profile", "email", "groups"],
            ),
        );
        self.add_policy(
            server,
            access_policy("00p2everyone", "Everyone else", 2, &["ALL_CLIENTS"]),
        );
        self.add_rule(
            server,
            "00p2everyone",
            access_rule("0pr2everyone", "Default rule", 1, &["*"]),
        );
        let (pem, mut jwk) = jose::generate_es256();
        jwk["kid"] = json!("operator-key-1");
        let operator = "0oaoperator5service1";
        self.add_service_app(
            operator,
            jwk,
            true,
            &[
                "okta.apps.read",
                "okta.apps.manage",
                "okta.authorizationServers.read",
                "okta.authorizationServers.manage",
            ],
        );
        self.state().sandbox = Some((app_id, server.into(), "00p1coder/0pr1coder".into()));
        SandboxSeed {
            spec: json!({"okta": {"orgUrl": self.base_url(), "clientId": client_id,
                                  "authorizationServerId": server, "credentialsSecret": "okta-operator"}}),
            secret_name: "okta-operator".into(),
            secret_data: BTreeMap::from([
                ("client-id".to_string(), operator.to_string()),
                ("private-key".to_string(), pem),
                ("key-id".to_string(), "operator-key-1".to_string()),
            ]),
        }
    }

    /// After [`seed_sandbox`](Self::seed_sandbox): the refresh-relevant settings of Coder's app
    /// and of the rule that applies to it, as (setting, value) lines.
    pub fn describe_client(&self) -> Vec<(String, String)> {
        let Some((app, server, path)) = self.state().sandbox.clone() else {
            return Vec::new();
        };
        let (policy, rule) = path.split_once('/').unwrap_or_default();
        let mut out = Vec::new();
        if let Some(a) = self.app(&app) {
            let oc = &a["settings"]["oauthClient"];
            out.push(("app grant_types".into(), oc["grant_types"].to_string()));
            out.push((
                "app refresh_token".into(),
                oc.get("refresh_token")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "(none)".into()),
            ));
        }
        if let Some(r) = self.rule(&server, policy, rule) {
            out.push((
                "rule scopes".into(),
                r["conditions"]["scopes"]["include"].to_string(),
            ));
            for k in [
                "accessTokenLifetimeMinutes",
                "refreshTokenLifetimeMinutes",
                "refreshTokenWindowMinutes",
            ] {
                out.push((format!("rule {k}"), r["actions"]["token"][k].to_string()));
            }
        }
        out
    }

    /// After [`seed_sandbox`](Self::seed_sandbox): Coder's app and every policy and rule of the
    /// sandbox's authorization server, as stored (without `lastUpdated`), for before/after
    /// comparisons.
    pub fn sandbox_state(&self) -> Value {
        let Some((app, server, _)) = self.state().sandbox.clone() else {
            return Value::Null;
        };
        let strip = |mut v: Value| {
            if let Some(o) = v.as_object_mut() {
                o.remove("lastUpdated");
            }
            v
        };
        let st = self.state();
        let policies: Vec<Value> = st
            .servers
            .get(&server)
            .map(|s| {
                s.policies
                    .iter()
                    .map(|p| {
                        let mut row = strip(p.row.clone());
                        row["rules"] = Value::Array(p.rules.iter().cloned().map(strip).collect());
                        row
                    })
                    .collect()
            })
            .unwrap_or_default();
        let app = st
            .apps
            .get(&app)
            .map(|a| strip(Value::Object(a.row.clone())));
        json!({"app": app, "policies": policies})
    }
}
