//! A stateful simulator of the PingFederate administrative API (`/pf-admin-api/v1`), in the 11.3
//! or the 12.1 shape, for tests and the operator's sandbox.
//!
//! What it does like PingFederate (see `shared/reference/idp-admin-apis.md` §2):
//! - every call needs the `X-XSRF-Header` header; calls without it are refused with **403** and an
//!   `ApiResult` body (the exact status of the real server is not documented; 403 is what a CSRF
//!   filter answers and what the reference suggests as "4xx");
//! - HTTP Basic against admin accounts with roles: `Admin` may write, `Auditor` only read (403 on
//!   writes); 401 with `WWW-Authenticate: Basic` for unknown users or wrong passwords;
//! - `PUT` bodies are validated against the selected version's contract schema (unknown
//!   properties, wrong enum values, wrong types, missing required fields) plus a few semantic
//!   rules (scopes must be defined at the authorization server, override types need their values,
//!   the client id cannot change, an `encryptedSecret` must be the stored one); failures are
//!   **422** `ApiResult` with `validationErrors[].fieldPath`;
//! - `PUT` replaces the whole client (fields left out are gone);
//! - a plaintext `clientAuth.secret` in a PUT **rotates** the secret: the stored `encryptedSecret`
//!   and `clientSecretChangedTime` change, and [`SimHandle::secret_rotations`] counts it;
//! - 12.1: a client's `offlineAccessRequireConsentPrompt` is reset to `SERVER_DEFAULT` unless its
//!   `requireOfflineAccessScopeToIssueRefreshTokens` is `YES`; the server-wide consent flag is
//!   reset to `false` when the server-wide "require offline_access" flag is `false`.
//!
//! Test hooks: latency, `fail_next` (e.g. 503, or 429 with `Retry-After`), request counters by
//! (method, route template, status) and a record of every request (method, path, JSON body,
//! status, user; never the `Authorization` header).

pub mod schema;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::watch;

pub use schema::{FieldError, validate};

/// Admin API prefix.
pub const API_PREFIX: &str = "/pf-admin-api/v1";

/// Which PingFederate admin API shape to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PfVersion {
    /// 11.3 (no `offline_access` controls, rolling interval in hours).
    V11_3,
    /// 12.1 (`requireOfflineAccessScopeToIssueRefreshTokens`, `offlineAccessRequireConsentPrompt`,
    /// rolling-interval units).
    #[default]
    V12_1,
}

impl PfVersion {
    /// The string `GET /version` returns.
    pub fn version_string(self) -> &'static str {
        match self {
            PfVersion::V11_3 => "11.3.5.0",
            PfVersion::V12_1 => "12.1.0.4",
        }
    }
}

impl fmt::Display for PfVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PfVersion::V11_3 => "PingFederate 11.3",
            PfVersion::V12_1 => "PingFederate 12.1",
        })
    }
}

/// Role of an admin account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminRole {
    /// May read and write the OAuth configuration.
    Admin,
    /// Read-only.
    Auditor,
}

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Listen address (default `127.0.0.1:0`).
    pub addr: SocketAddr,
    /// Delay before every answer (default none).
    pub latency: Duration,
    /// API shape to serve (default 12.1).
    pub version: PfVersion,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            latency: Duration::ZERO,
            version: PfVersion::default(),
        }
    }
}

/// What [`SimHandle::seed_sandbox`] created.
#[derive(Clone, Debug)]
pub struct SandboxSeed {
    /// The policy's `spec.provider` block: `{"pingFederate": {adminUrl, clientId, credentialsSecret}}`.
    pub spec: Value,
    /// Name of the credentials Secret.
    pub secret_name: String,
    /// The Secret's keys and values (`username`, `password`).
    pub secret_data: BTreeMap<String, String>,
}

/// One request the simulator received.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path (with the `/pf-admin-api/v1` prefix).
    pub path: String,
    /// Route template without the prefix, e.g. `/oauth/clients/{id}`.
    pub route: String,
    /// The JSON body, if one was sent (the raw text as a JSON string if it was not JSON).
    pub body: Option<Value>,
    /// Status answered.
    pub status: u16,
    /// The Basic-auth user name, if any.
    pub user: Option<String>,
    /// Whether `X-XSRF-Header` was present.
    pub xsrf_header: bool,
}

/// Request counts by (method, route template, status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// The counts.
    pub map: BTreeMap<(String, String, u16), u64>,
}

impl SimCounters {
    /// Requests with this method and route template, any status.
    pub fn get(&self, method: &str, route: &str) -> u64 {
        self.map
            .iter()
            .filter(|((m, r, _), _)| m == method && r == route)
            .map(|(_, c)| *c)
            .sum()
    }

    /// Non-GET calls (this API has no token requests).
    pub fn writes(&self) -> u64 {
        self.map
            .iter()
            .filter(|((m, _, _), _)| m != "GET" && m != "HEAD")
            .map(|(_, c)| *c)
            .sum()
    }

    /// GET calls.
    pub fn reads(&self) -> u64 {
        self.map
            .iter()
            .filter(|((m, _, _), _)| m == "GET" || m == "HEAD")
            .map(|(_, c)| *c)
            .sum()
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.map.values().sum()
    }

    /// Counts since `earlier`.
    pub fn diff(&self, earlier: &SimCounters) -> SimCounters {
        let mut map = BTreeMap::new();
        for (k, v) in &self.map {
            let before = earlier.map.get(k).copied().unwrap_or(0);
            if *v > before {
                map.insert(k.clone(), v - before);
            }
        }
        SimCounters { map }
    }
}

struct Account {
    password: String,
    role: AdminRole,
}

struct SimState {
    version: PfVersion,
    latency: Duration,
    fail: Option<(usize, u16, Option<u64>)>,
    accounts: BTreeMap<String, Account>,
    clients: BTreeMap<String, Value>,
    settings: Value,
    counters: SimCounters,
    requests: Vec<RecordedRequest>,
    secret_seq: u64,
    rotations: u64,
    seeded_secret: Option<String>,
}

type Shared = Arc<Mutex<SimState>>;

/// A running simulator.
#[derive(Clone)]
pub struct SimHandle {
    addr: SocketAddr,
    state: Shared,
    stop: watch::Sender<bool>,
    done: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

/// Starts a simulator on the current tokio runtime. It starts with default authorization server
/// settings, no clients and no admin accounts; see [`SimHandle::seed_sandbox`].
pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Mutex::new(SimState {
        version: config.version,
        latency: config.latency,
        fail: None,
        accounts: BTreeMap::new(),
        clients: BTreeMap::new(),
        settings: default_settings(config.version),
        counters: SimCounters::default(),
        requests: Vec::new(),
        secret_seq: 0,
        rotations: 0,
        seeded_secret: None,
    }));
    let app = Router::new().fallback(handle).with_state(state.clone());
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok(SimHandle {
        addr,
        state,
        stop,
        done: Arc::new(tokio::sync::Mutex::new(Some(task))),
    })
}

impl SimHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT` (the policy's `adminUrl`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API shape served.
    pub fn version(&self) -> PfVersion {
        self.lock().version
    }

    /// Seeds Coder's client `coder` (authorization code only, scopes restricted to
    /// openid/profile/email, a client secret), authorization server settings without
    /// `offline_access`, and an `Admin` account `oidc-refresh-operator`.
    pub fn seed_sandbox(&self) -> SandboxSeed {
        let password = "sandbox-admin-password-7Qx2".to_string();
        let mut s = self.lock();
        let version = s.version;
        let client = seed_client(version);
        s.seeded_secret = client["clientAuth"]["encryptedSecret"]
            .as_str()
            .map(str::to_string);
        s.clients.insert("coder".into(), client);
        s.settings = default_settings(version);
        s.accounts.insert(
            "oidc-refresh-operator".into(),
            Account {
                password: password.clone(),
                role: AdminRole::Admin,
            },
        );
        drop(s);
        SandboxSeed {
            spec: json!({"pingFederate": {
                "adminUrl": self.base_url(),
                "clientId": "coder",
                "credentialsSecret": "pingfederate-admin",
            }}),
            secret_name: "pingfederate-admin".into(),
            secret_data: BTreeMap::from([
                ("username".to_string(), "oidc-refresh-operator".to_string()),
                ("password".to_string(), password),
            ]),
        }
    }

    /// Refresh-relevant settings of the `coder` client, for people.
    pub fn describe_client(&self) -> Vec<(String, String)> {
        let s = self.lock();
        let Some(c) = s.clients.get("coder") else {
            return vec![("client coder".into(), "does not exist".into())];
        };
        let list = |v: &Value| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| "(none)".into())
        };
        let text = |v: &Value| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| "(unset)".into())
        };
        let grant = |ty: &str, time: &str, unit: &str| {
            let t = text(&c[ty]);
            if t == "OVERRIDE_SERVER_DEFAULT" {
                format!("{} {}", c[time], text(&c[unit]))
            } else {
                t
            }
        };
        let defined = s.settings["scopes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["name"] == "offline_access"));
        let mut out = vec![
            (
                "server version".to_string(),
                s.version.version_string().to_string(),
            ),
            ("grantTypes".into(), list(&c["grantTypes"])),
            ("restrictScopes".into(), c["restrictScopes"].to_string()),
            ("restrictedScopes".into(), list(&c["restrictedScopes"])),
            (
                "offline_access common scope".into(),
                if defined { "defined" } else { "not defined" }.into(),
            ),
            ("refreshRolling".into(), text(&c["refreshRolling"])),
            (
                "persistentGrantExpiration".into(),
                grant(
                    "persistentGrantExpirationType",
                    "persistentGrantExpirationTime",
                    "persistentGrantExpirationTimeUnit",
                ),
            ),
            (
                "persistentGrantIdleTimeout".into(),
                grant(
                    "persistentGrantIdleTimeoutType",
                    "persistentGrantIdleTimeout",
                    "persistentGrantIdleTimeoutTimeUnit",
                ),
            ),
        ];
        if s.version == PfVersion::V12_1 {
            out.push((
                "requireOfflineAccessScopeToIssueRefreshTokens".into(),
                text(&c["requireOfflineAccessScopeToIssueRefreshTokens"]),
            ));
            out.push((
                "offlineAccessRequireConsentPrompt".into(),
                text(&c["offlineAccessRequireConsentPrompt"]),
            ));
        }
        let unchanged = s.seeded_secret.is_some()
            && c["clientAuth"]["encryptedSecret"].as_str() == s.seeded_secret.as_deref();
        out.push((
            "client secret".into(),
            if unchanged { "unchanged" } else { "CHANGED" }.into(),
        ));
        out
    }

    /// Request counts so far.
    pub fn counters(&self) -> SimCounters {
        self.lock().counters.clone()
    }

    /// Validates every recorded request body against the contract schema of this version's
    /// operation (Client, ScopeEntry, AuthorizationServerSettings). Returns how many bodies were
    /// checked, or one line per problem (including requests sent without the XSRF header).
    pub fn validate_recorded_bodies(&self) -> Result<usize, Vec<String>> {
        let version = self.version();
        let mut errors = Vec::new();
        let mut checked = 0;
        for r in self.requests() {
            if !r.xsrf_header {
                errors.push(format!("{} {} without X-XSRF-Header", r.method, r.path));
            }
            let Some(body) = &r.body else { continue };
            let schema = match (r.method.as_str(), r.route.as_str()) {
                ("PUT", "/oauth/clients/{id}") | ("POST", "/oauth/clients") => "Client",
                ("POST", "/oauth/authServerSettings/scopes/commonScopes")
                | ("PUT", "/oauth/authServerSettings/scopes/commonScopes/{name}") => "ScopeEntry",
                ("PUT", "/oauth/authServerSettings") => "AuthorizationServerSettings",
                (m, route) => {
                    errors.push(format!(
                        "{m} {route}: no contract schema for this request body"
                    ));
                    continue;
                }
            };
            checked += 1;
            for e in validate(version, schema, body) {
                errors.push(format!("{} {} ({schema}): {e:?}", r.method, r.route));
            }
        }
        if errors.is_empty() {
            Ok(checked)
        } else {
            Err(errors)
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// How many times a client secret was rotated by a PUT carrying a plaintext secret.
    pub fn secret_rotations(&self) -> u64 {
        self.lock().rotations
    }

    /// Changes the delay before every answer.
    pub fn set_latency(&self, d: Duration) {
        self.lock().latency = d;
    }

    /// The next `n` admin-API calls answer `status` (with `Retry-After: retry_after` if given).
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        self.lock().fail = (n > 0).then_some((n, status, retry_after));
    }

    /// Adds or replaces an admin account.
    pub fn add_admin(&self, username: &str, password: &str, role: AdminRole) {
        self.lock().accounts.insert(
            username.into(),
            Account {
                password: password.into(),
                role,
            },
        );
    }

    /// A stored client, as `GET` returns it.
    pub fn client(&self, id: &str) -> Option<Value> {
        self.lock().clients.get(id).cloned()
    }

    /// Edits a stored client directly (like a change made in the admin console), unvalidated.
    pub fn update_client(&self, id: &str, f: impl FnOnce(&mut Value)) {
        if let Some(c) = self.lock().clients.get_mut(id) {
            f(c);
        }
    }

    /// Stores a client directly, unvalidated.
    pub fn insert_client(&self, client: Value) {
        let id = client["clientId"].as_str().unwrap_or_default().to_string();
        self.lock().clients.insert(id, client);
    }

    /// The authorization server settings.
    pub fn auth_server_settings(&self) -> Value {
        self.lock().settings.clone()
    }

    /// Edits the authorization server settings directly, unvalidated.
    pub fn update_auth_server_settings(&self, f: impl FnOnce(&mut Value)) {
        f(&mut self.lock().settings);
    }

    /// Stops the server.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.done.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// The `coder` client in its pre-refresh-token state.
pub fn seed_client(version: PfVersion) -> Value {
    let mut c = json!({
        "clientId": "coder",
        "enabled": true,
        "redirectUris": ["https://coder.example.com/api/v2/users/oidc/callback"],
        "grantTypes": ["AUTHORIZATION_CODE"],
        "name": "Coder",
        "description": "Coder workspaces (OIDC sign-in)",
        "modificationDate": "2026-03-02T09:14:27.000Z",
        "creationDate": "2025-11-18T16:40:03.000Z",
        "logoUrl": "https://coder.example.com/icon/coder.svg",
        "restrictToDefaultAccessTokenManager": false,
        "validateUsingAllEligibleAtms": false,
        "refreshRolling": "SERVER_DEFAULT",
        "refreshTokenRollingIntervalType": "SERVER_DEFAULT",
        "persistentGrantExpirationType": "SERVER_DEFAULT",
        "persistentGrantExpirationTime": 0,
        "persistentGrantExpirationTimeUnit": "DAYS",
        "persistentGrantIdleTimeoutType": "SERVER_DEFAULT",
        "persistentGrantIdleTimeout": 0,
        "persistentGrantIdleTimeoutTimeUnit": "DAYS",
        "persistentGrantReuseType": "SERVER_DEFAULT",
        "allowAuthenticationApiInit": false,
        "bypassApprovalPage": true,
        "restrictScopes": true,
        "restrictedScopes": ["openid", "profile", "email"],
        "exclusiveScopes": [],
        "authorizationDetailTypes": [],
        "restrictedResponseTypes": ["code"],
        "requirePushedAuthorizationRequests": false,
        "requireJwtSecuredAuthorizationResponseMode": false,
        "requireSignedRequests": false,
        "oidcPolicy": {
            "idTokenSigningAlgorithm": "RS256",
            "grantAccessSessionRevocationApi": false,
            "grantAccessSessionSessionManagementApi": false,
            "logoutMode": "NONE",
            "pingAccessLogoutCapable": false,
            "pairwiseIdentifierUserType": false
        },
        "clientAuth": {
            "type": "SECRET",
            "encryptedSecret": "OBF:JWE:eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4Q0JDLUhTMjU2Iiwia2lkIjoiU2ltUGYiLCJ2ZXJzaW9uIjoiMTIuMSJ9..c2VlZC1zZWNyZXQtY29kZXI.Zm9vYmFyYmF6cXV4",
            "secondarySecrets": [],
            "enforceReplayPrevention": false
        },
        "extendedParameters": {"costCenter": {"values": ["platform-eng"]}},
        "deviceFlowSettingType": "SERVER_DEFAULT",
        "requireProofKeyForCodeExchange": true,
        "refreshTokenRollingGracePeriodType": "SERVER_DEFAULT",
        "clientSecretRetentionPeriodType": "SERVER_DEFAULT",
        "clientSecretChangedTime": "2025-11-18T16:40:03.000Z",
        "requireDpop": false
    });
    if version == PfVersion::V12_1
        && let Some(o) = c.as_object_mut()
    {
        o.insert("replicationStatus".into(), json!("REPLICATED"));
        o.insert("refreshTokenRollingIntervalTimeUnit".into(), json!("HOURS"));
        o.insert("enableCookielessAuthenticationApi".into(), json!(false));
        o.insert(
            "requireOfflineAccessScopeToIssueRefreshTokens".into(),
            json!("SERVER_DEFAULT"),
        );
        o.insert(
            "offlineAccessRequireConsentPrompt".into(),
            json!("SERVER_DEFAULT"),
        );
    }
    c
}

/// Authorization server settings as a fresh server has them (no `offline_access` scope).
pub fn default_settings(version: PfVersion) -> Value {
    let mut s = json!({
        "defaultScopeDescription": "Default scope",
        "scopes": [
            {"name": "profile", "description": "Your basic profile", "dynamic": false},
            {"name": "email", "description": "Your email address", "dynamic": false},
            {"name": "groups", "description": "Your group memberships", "dynamic": false}
        ],
        "scopeGroups": [],
        "exclusiveScopes": [],
        "exclusiveScopeGroups": [],
        "authorizationCodeTimeout": 60,
        "authorizationCodeEntropy": 30,
        "disallowPlainPKCE": false,
        "includeIssuerInAuthorizationResponse": false,
        "trackUserSessionsForLogout": false,
        "persistentGrantLifetime": -1,
        "persistentGrantLifetimeUnit": "DAYS",
        "persistentGrantIdleTimeout": 30,
        "persistentGrantIdleTimeoutTimeUnit": "DAYS",
        "refreshTokenLength": 42,
        "rollRefreshTokenValues": false,
        "refreshTokenRollingGracePeriod": 60,
        "refreshRollingInterval": 0,
        "persistentGrantReuseGrantTypes": ["IMPLICIT"],
        "persistentGrantContract": {
            "coreAttributes": [{"name": "USER_KEY"}, {"name": "USER_NAME"}],
            "extendedAttributes": []
        },
        "bypassAuthorizationForApprovedGrants": false,
        "allowUnidentifiedClientROCreds": false,
        "allowUnidentifiedClientExtensionGrants": false,
        "allowedOrigins": [],
        "registeredAuthorizationPath": "",
        "pendingAuthorizationTimeout": 600,
        "devicePollingInterval": 5,
        "activationCodeCheckMode": "BEFORE_AUTHENTICATION",
        "bypassActivationCodeConfirmation": false,
        "userAuthorizationConsentPageSetting": "INTERNAL",
        "parReferenceTimeout": 60,
        "parReferenceLength": 24,
        "parStatus": "ENABLED",
        "clientSecretRetentionPeriod": 0,
        "jwtSecuredAuthorizationResponseModeLifetime": 600,
        "dpopProofRequireNonce": false,
        "dpopProofLifetimeSeconds": 120,
        "dpopProofEnforceReplayPrevention": false
    });
    if version == PfVersion::V12_1
        && let Some(o) = s.as_object_mut()
    {
        o.insert(
            "requireOfflineAccessScopeToIssueRefreshTokens".into(),
            json!(false),
        );
        o.insert("offlineAccessRequireConsentPrompt".into(), json!(false));
        o.insert("refreshRollingIntervalTimeUnit".into(), json!("HOURS"));
        o.insert(
            "bypassAuthorizationForApprovedConsents".into(),
            json!(false),
        );
        o.insert("consentLifetimeDays".into(), json!(-1));
        o.insert(
            "enableCookielessUserAuthorizationAuthenticationApi".into(),
            json!(false),
        );
    }
    s
}

// ---------------------------------------------------------------------------------------------
// HTTP handling

struct Answer {
    status: u16,
    body: Option<Value>,
    retry_after: Option<u64>,
}

fn ok(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body: Some(body),
        retry_after: None,
    }
}

fn api_error(status: u16, result_id: &str, message: &str) -> Answer {
    ok(status, json!({"resultId": result_id, "message": message}))
}

fn validation_error(errors: &[FieldError]) -> Answer {
    let list: Vec<Value> = errors
        .iter()
        .map(|e| json!({"errorId": e.error_id, "fieldPath": e.field_path, "message": e.message}))
        .collect();
    ok(
        422,
        json!({
            "resultId": "validation_error",
            "message": "Validation error(s) occurred. Please review the error(s) and address accordingly.",
            "validationErrors": list,
        }),
    )
}

fn field_error(path: &str, id: &str, message: String) -> FieldError {
    FieldError {
        error_id: id.into(),
        field_path: path.into(),
        message,
    }
}

/// Route template (without the prefix) and path parameter.
fn route_of(path: &str) -> Option<(&'static str, Option<String>)> {
    let rest = path.strip_prefix(API_PREFIX)?;
    let rest = rest.trim_end_matches('/');
    let param = |p: &str| (!p.is_empty() && !p.contains('/')).then(|| percent_decode(p));
    Some(match rest {
        "/version" => ("/version", None),
        "/oauth/clients" => ("/oauth/clients", None),
        "/oauth/authServerSettings" => ("/oauth/authServerSettings", None),
        "/oauth/authServerSettings/scopes/commonScopes" => {
            ("/oauth/authServerSettings/scopes/commonScopes", None)
        }
        _ => {
            if let Some(id) = rest.strip_prefix("/oauth/clients/").and_then(param) {
                ("/oauth/clients/{id}", Some(id))
            } else if let Some(name) = rest
                .strip_prefix("/oauth/authServerSettings/scopes/commonScopes/")
                .and_then(param)
            {
                (
                    "/oauth/authServerSettings/scopes/commonScopes/{name}",
                    Some(name),
                )
            } else {
                return None;
            }
        }
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn basic_user(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

async fn handle(State(shared): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 8 << 20)
        .await
        .unwrap_or_default();
    let latency = shared.lock().unwrap_or_else(|e| e.into_inner()).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let body_value: Option<Value> = if bytes.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        )
    };
    let xsrf = parts
        .headers
        .get("x-xsrf-header")
        .is_some_and(|v| !v.as_bytes().is_empty());
    let creds = basic_user(&parts.headers);
    let json_content = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    let route = route_of(&path);

    let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
    let s = &mut *guard;
    let answer = process(
        s,
        &method,
        route.clone(),
        xsrf,
        creds.as_ref(),
        json_content,
        &bytes,
    );
    let template = route.map(|(t, _)| t).unwrap_or("(unknown)").to_string();
    *s.counters
        .map
        .entry((method.clone(), template.clone(), answer.status))
        .or_insert(0) += 1;
    s.requests.push(RecordedRequest {
        method,
        path,
        route: template,
        body: body_value,
        status: answer.status,
        user: creds.map(|(u, _)| u),
        xsrf_header: xsrf,
    });
    drop(guard);

    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match answer.body {
        Some(b) => (status, axum::Json(b)).into_response(),
        None => (status, Body::empty()).into_response(),
    };
    if let Some(ra) = answer.retry_after
        && let Ok(v) = HeaderValue::from_str(&ra.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if answer.status == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"PingFederate\""),
        );
    }
    resp
}

fn process(
    s: &mut SimState,
    method: &str,
    route: Option<(&'static str, Option<String>)>,
    xsrf: bool,
    creds: Option<&(String, String)>,
    json_content: bool,
    bytes: &[u8],
) -> Answer {
    let Some((template, param)) = route else {
        return api_error(404, "resource_not_found", "Resource not found.");
    };
    if let Some((n, status, retry_after)) = s.fail.take() {
        if n > 1 {
            s.fail = Some((n - 1, status, retry_after));
        }
        let mut a = api_error(status, "simulated_failure", "Simulated failure.");
        a.retry_after = retry_after;
        return a;
    }
    if !xsrf {
        return api_error(
            403,
            "missing_xsrf_header",
            "The X-XSRF-Header header is required on every administrative API request.",
        );
    }
    let role = match creds {
        Some((u, p)) => match s.accounts.get(u) {
            Some(a) if a.password == *p => a.role,
            _ => return api_error(401, "unauthorized", "Authentication failed."),
        },
        None => return api_error(401, "unauthorized", "Authentication required."),
    };
    let write = method != "GET" && method != "HEAD";
    if write && role != AdminRole::Admin {
        return api_error(
            403,
            "insufficient_privileges",
            "The account does not have the Administrator role required to change the configuration.",
        );
    }
    let body: Option<Value> = if write && matches!(method, "PUT" | "POST") {
        if !json_content {
            return api_error(
                415,
                "unsupported_media_type",
                "Content-Type must be application/json.",
            );
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) if v.is_object() => Some(v),
            _ => {
                return api_error(
                    400,
                    "invalid_request_body",
                    "The request was improperly formatted or contained invalid fields.",
                );
            }
        }
    } else {
        None
    };
    let version = s.version;
    match (method, template) {
        ("GET", "/version") => ok(200, json!({"version": version.version_string()})),
        ("GET", "/oauth/clients") => ok(
            200,
            json!({"items": s.clients.values().cloned().collect::<Vec<_>>()}),
        ),
        ("GET", "/oauth/clients/{id}") => match s.clients.get(param.as_deref().unwrap_or("")) {
            Some(c) => ok(200, c.clone()),
            None => api_error(404, "resource_not_found", "Resource not found."),
        },
        ("PUT", "/oauth/clients/{id}") => {
            put_client(s, param.as_deref().unwrap_or(""), body.unwrap_or_default())
        }
        ("GET", "/oauth/authServerSettings") => ok(200, s.settings.clone()),
        ("PUT", "/oauth/authServerSettings") => put_settings(s, body.unwrap_or_default()),
        ("GET", "/oauth/authServerSettings/scopes/commonScopes") => {
            let items = s.settings["scopes"].clone();
            let n = items.as_array().map_or(0, Vec::len);
            ok(200, json!({"items": items, "totalItems": n}))
        }
        ("POST", "/oauth/authServerSettings/scopes/commonScopes") => {
            add_scope(s, body.unwrap_or_default())
        }
        ("GET", "/oauth/authServerSettings/scopes/commonScopes/{name}") => {
            let name = param.unwrap_or_default();
            match find_scope(&s.settings, "scopes", &name) {
                Some(i) => ok(200, s.settings["scopes"][i].clone()),
                None => api_error(404, "resource_not_found", "Resource not found."),
            }
        }
        ("DELETE", "/oauth/authServerSettings/scopes/commonScopes/{name}") => {
            let name = param.unwrap_or_default();
            match find_scope(&s.settings, "scopes", &name) {
                Some(i) => {
                    if let Some(a) = s.settings["scopes"].as_array_mut() {
                        a.remove(i);
                    }
                    Answer {
                        status: 204,
                        body: None,
                        retry_after: None,
                    }
                }
                None => api_error(404, "resource_not_found", "Resource not found."),
            }
        }
        _ => api_error(405, "method_not_allowed", "Method not allowed."),
    }
}

fn find_scope(settings: &Value, list: &str, name: &str) -> Option<usize> {
    settings[list]
        .as_array()?
        .iter()
        .position(|e| e["name"].as_str() == Some(name))
}

fn scope_defined(settings: &Value, list: &str, name: &str) -> bool {
    (list == "scopes" && name == "openid") || find_scope(settings, list, name).is_some()
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn put_client(s: &mut SimState, id: &str, body: Value) -> Answer {
    let Some(stored) = s.clients.get(id).cloned() else {
        return api_error(404, "resource_not_found", "Resource not found.");
    };
    let mut errors = schema::validate(s.version, "Client", &body);
    if body["clientId"].as_str().is_some_and(|c| c != id) {
        errors.push(field_error(
            "clientId",
            "client_id_mismatch",
            "The client ID in the body does not match the client ID in the path.".into(),
        ));
    }
    for (list, field) in [
        ("scopes", "restrictedScopes"),
        ("exclusiveScopes", "exclusiveScopes"),
    ] {
        for (i, sc) in body[field].as_array().into_iter().flatten().enumerate() {
            if let Some(name) = sc.as_str()
                && !scope_defined(&s.settings, list, name)
            {
                errors.push(field_error(
                    &format!("{field}[{i}]"),
                    "invalid_scope",
                    format!(
                        "The scope '{name}' is not defined in the authorization server settings."
                    ),
                ));
            }
        }
    }
    for (ty, time, unit) in [
        (
            "persistentGrantExpirationType",
            "persistentGrantExpirationTime",
            "persistentGrantExpirationTimeUnit",
        ),
        (
            "persistentGrantIdleTimeoutType",
            "persistentGrantIdleTimeout",
            "persistentGrantIdleTimeoutTimeUnit",
        ),
    ] {
        if body[ty] == "OVERRIDE_SERVER_DEFAULT" {
            if body[time].as_i64().is_none_or(|t| t < 1) {
                errors.push(field_error(
                    time,
                    "invalid_value",
                    format!(
                        "{time} must be a positive number when {ty} is OVERRIDE_SERVER_DEFAULT."
                    ),
                ));
            }
            if !body[unit].is_string() {
                errors.push(field_error(
                    unit,
                    "required_field_missing",
                    format!("{unit} is required when {ty} is OVERRIDE_SERVER_DEFAULT."),
                ));
            }
        }
    }
    let auth = &body["clientAuth"];
    let plaintext = auth["secret"]
        .as_str()
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    if auth["type"] == "SECRET" && plaintext.is_none() {
        match auth["encryptedSecret"].as_str() {
            None => errors.push(field_error(
                "clientAuth.secret",
                "required_field_missing",
                "A client secret is required for client authentication type SECRET.".into(),
            )),
            Some(e) if Some(e) != stored["clientAuth"]["encryptedSecret"].as_str() => {
                errors.push(field_error(
                    "clientAuth.encryptedSecret",
                    "invalid_encrypted_secret",
                    "The encrypted secret could not be decrypted.".into(),
                ))
            }
            Some(_) => {}
        }
    }
    if !errors.is_empty() {
        return validation_error(&errors);
    }
    let mut new = body;
    let rotate = plaintext.as_deref().map(|p| {
        s.secret_seq += 1;
        let digest: u64 = p
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        format!(
            "OBF:JWE:eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4Q0JDLUhTMjU2Iiwia2lkIjoiU2ltUGYifQ..{:016x}.{:08x}",
            digest, s.secret_seq
        )
    });
    let stamp = now();
    if let Some(o) = new.as_object_mut() {
        for ro in ["creationDate", "replicationStatus"] {
            match stored.get(ro) {
                Some(v) => {
                    o.insert(ro.into(), v.clone());
                }
                None => {
                    o.remove(ro);
                }
            }
        }
        o.insert("modificationDate".into(), json!(stamp));
        match stored.get("clientSecretChangedTime") {
            Some(v) if rotate.is_none() => {
                o.insert("clientSecretChangedTime".into(), v.clone());
            }
            _ if rotate.is_some() => {
                o.insert("clientSecretChangedTime".into(), json!(stamp));
            }
            _ => {
                o.remove("clientSecretChangedTime");
            }
        }
        if let Some(a) = o.get_mut("clientAuth").and_then(Value::as_object_mut) {
            a.remove("secret");
            if let Some(e) = &rotate {
                a.insert("encryptedSecret".into(), json!(e));
            }
        }
        if s.version == PfVersion::V12_1
            && o.contains_key("offlineAccessRequireConsentPrompt")
            && o.get("requireOfflineAccessScopeToIssueRefreshTokens") != Some(&json!("YES"))
        {
            o.insert(
                "offlineAccessRequireConsentPrompt".into(),
                json!("SERVER_DEFAULT"),
            );
        }
    }
    if rotate.is_some() {
        s.rotations += 1;
    }
    s.clients.insert(id.to_string(), new.clone());
    ok(200, new)
}

fn put_settings(s: &mut SimState, body: Value) -> Answer {
    let mut errors = schema::validate(s.version, "AuthorizationServerSettings", &body);
    for list in ["scopes", "exclusiveScopes"] {
        let names: Vec<&str> = body[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                errors.push(field_error(
                    &format!("{list}[{i}].name"),
                    "duplicate_scope",
                    format!("The scope '{n}' is defined more than once."),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return validation_error(&errors);
    }
    let mut new = body;
    if s.version == PfVersion::V12_1
        && let Some(o) = new.as_object_mut()
        && o.get("requireOfflineAccessScopeToIssueRefreshTokens") != Some(&json!(true))
    {
        o.insert("offlineAccessRequireConsentPrompt".into(), json!(false));
    }
    s.settings = new.clone();
    ok(200, new)
}

fn add_scope(s: &mut SimState, body: Value) -> Answer {
    let mut errors = schema::validate(s.version, "ScopeEntry", &body);
    if let Some(name) = body["name"].as_str() {
        if name.is_empty() || name.contains(char::is_whitespace) {
            errors.push(field_error(
                "name",
                "invalid_scope_name",
                "Scope names cannot be empty or contain spaces.".into(),
            ));
        } else if find_scope(&s.settings, "scopes", name).is_some()
            || find_scope(&s.settings, "exclusiveScopes", name).is_some()
        {
            errors.push(field_error(
                "name",
                "duplicate_scope",
                format!("The scope '{name}' already exists."),
            ));
        }
    }
    if !errors.is_empty() {
        return validation_error(&errors);
    }
    match s.settings.get_mut("scopes").and_then(Value::as_array_mut) {
        Some(a) => a.push(body.clone()),
        None => {
            if let Some(o) = s.settings.as_object_mut() {
                o.insert("scopes".into(), json!([body.clone()]));
            }
        }
    }
    ok(201, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_validate_against_their_contract() {
        for v in [PfVersion::V11_3, PfVersion::V12_1] {
            assert_eq!(schema::validate(v, "Client", &seed_client(v)), [], "{v}");
            assert_eq!(
                schema::validate(v, "AuthorizationServerSettings", &default_settings(v)),
                [],
                "{v}"
            );
        }
        let errs = schema::validate(PfVersion::V11_3, "Client", &seed_client(PfVersion::V12_1));
        let paths: Vec<&str> = errs.iter().map(|e| e.field_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "replicationStatus",
                "refreshTokenRollingIntervalTimeUnit",
                "enableCookielessAuthenticationApi",
                "requireOfflineAccessScopeToIssueRefreshTokens",
                "offlineAccessRequireConsentPrompt"
            ]
        );
    }

    #[test]
    fn routes_and_percent_decoding() {
        assert_eq!(
            route_of("/pf-admin-api/v1/oauth/clients/my%20client"),
            Some(("/oauth/clients/{id}", Some("my client".to_string())))
        );
        assert_eq!(route_of("/pf-admin-api/v1/oauth/clients/a/b"), None);
        assert_eq!(route_of("/other"), None);
    }
}
