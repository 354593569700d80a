//! A stateful simulator of the parts of the Keycloak (24–26) Admin REST API that the
//! oidc-refresh-operator uses, for tests and the `sandbox` command.
//!
//! What it models (see `shared/reference/idp-admin-apis.md` §1 and the contract in `contracts/`):
//! - realms with the token/session settings of `RealmRepresentation` and Keycloak's defaults;
//! - clients (`ClientRepresentation` kept as JSON, so unknown fields survive), internal UUIDs,
//!   attributes (string values only), default/optional client-scope links, realm-role scope
//!   mappings; built-in client scopes (`offline_access`, `profile`, `email`, `roles`...) and realm
//!   roles (`offline_access`, `uma_authorization`, `default-roles-<realm>`);
//! - the token endpoint (`client_credentials` and `password` grants) issuing opaque, expiring
//!   bearer tokens (`expires_in` = the auth realm's `accessTokenLifespan`);
//! - admin role checks per call: realm-management client roles (`view-clients`,
//!   `manage-clients`, `view-realm`, `manage-realm`, `realm-admin`) granted to a service account or
//!   user, per target realm (a principal of `master` may manage other realms, as with the
//!   `<realm>-realm` clients of `master`); missing roles answer 403;
//! - Keycloak's status codes (204 on PUT/POST/DELETE of the admin API) and both error shapes
//!   (`{"error","error_description"}` and `{"errorMessage"}`);
//! - request bodies are validated against the contract's component schemas (400 otherwise) and
//!   recorded, so tests can check every body a client sent.
//!
//! Semantics taken from Keycloak's source: `PUT /clients/{id}` applies only the fields present and
//! non-null (a body without `secret` keeps the secret), merges `attributes` key by key, and ignores
//! `defaultClientScopes`/`optionalClientScopes` (use the link endpoints); linking a client scope
//! that is already linked (as default or optional) is a silent no-op answering 204 (Keycloak's
//! `addClientScopes` filters out scopes already linked); `PUT /admin/realms/{realm}` applies only
//! the non-null top-level fields given.
//!
//! Test hooks: injectable latency, `fail_next` (5xx, 429 with `Retry-After`), token expiry,
//! request counters per (method, route template, status), and direct state edits (drift).

pub mod schema;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Listen address (default `127.0.0.1:0`).
    pub addr: SocketAddr,
    /// Delay before every answer (default none).
    pub latency: Duration,
    /// Path prefix of every endpoint, e.g. `/auth` for a legacy (≤16) Keycloak layout
    /// (default empty). [`SimHandle::base_url`] includes it.
    pub path_prefix: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            latency: Duration::ZERO,
            path_prefix: String::new(),
        }
    }
}

/// What [`SimHandle::seed_sandbox`] created.
#[derive(Clone, Debug)]
pub struct SandboxSeed {
    /// The provider block of the policy's `spec.provider`: `{"keycloak": {...}}`.
    pub spec: Value,
    /// Name of the credentials Secret the spec names.
    pub secret_name: String,
    /// The Secret's keys and values.
    pub secret_data: BTreeMap<String, String>,
}

/// Request counts by (method, route template, status). Route templates are relative to the path
/// prefix, e.g. `/admin/realms/{realm}/clients/{id}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// Count per (method, route template, status).
    pub by_route: BTreeMap<(String, String, u16), u64>,
}

/// Route template of the token endpoint.
pub const TOKEN_ROUTE: &str = "/realms/{realm}/protocol/openid-connect/token";

impl SimCounters {
    /// Non-GET calls other than token requests.
    pub fn writes(&self) -> u64 {
        self.by_route
            .iter()
            .filter(|((m, r, _), _)| m != "GET" && m != "HEAD" && r != TOKEN_ROUTE)
            .map(|(_, n)| n)
            .sum()
    }

    /// GET calls.
    pub fn reads(&self) -> u64 {
        self.by_route
            .iter()
            .filter(|((m, _, _), _)| m == "GET")
            .map(|(_, n)| n)
            .sum()
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.by_route.values().sum()
    }

    /// Token requests.
    pub fn token_requests(&self) -> u64 {
        self.by_route
            .iter()
            .filter(|((_, r, _), _)| r == TOKEN_ROUTE)
            .map(|(_, n)| n)
            .sum()
    }

    /// Calls to one (method, route template), any status.
    pub fn calls(&self, method: &str, route: &str) -> u64 {
        self.by_route
            .iter()
            .filter(|((m, r, _), _)| m == method && r == route)
            .map(|(_, n)| n)
            .sum()
    }

    /// Calls answered with `status`.
    pub fn with_status(&self, status: u16) -> u64 {
        self.by_route
            .iter()
            .filter(|((_, _, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }
}

/// One request body the simulator received on the admin API.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedBody {
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// Contract schema the body must match: a component name, or `Name[]` for an array of it.
    pub schema: String,
    /// The body (a JSON string holding the raw text when it was not JSON).
    pub body: Value,
}

/// Realm-management roles the simulator knows.
pub const ADMIN_ROLES: [&str; 6] = [
    "view-clients",
    "manage-clients",
    "query-clients",
    "view-realm",
    "manage-realm",
    "realm-admin",
];

/// Built-in client scopes of a new realm: (name, linked to new clients as default?).
const BUILTIN_SCOPES: [(&str, Option<bool>); 10] = [
    ("acr", Some(true)),
    ("address", Some(false)),
    ("basic", Some(true)),
    ("email", Some(true)),
    ("microprofile-jwt", Some(false)),
    ("offline_access", Some(false)),
    ("phone", Some(false)),
    ("profile", Some(true)),
    ("roles", Some(true)),
    ("web-origins", Some(true)),
];

#[derive(Clone, Debug)]
struct ClientState {
    repr: Map<String, Value>,
    default_scopes: Vec<String>,
    optional_scopes: Vec<String>,
    realm_scope_mappings: Vec<String>,
    /// Admin grants of the client's service-account user: (target realm, role).
    grants: BTreeSet<(String, String)>,
}

#[derive(Clone, Debug)]
struct ScopeState {
    id: String,
    name: String,
    description: String,
}

#[derive(Clone, Debug)]
struct RoleState {
    id: String,
    name: String,
    description: String,
}

#[derive(Clone, Debug)]
struct UserState {
    username: String,
    password: String,
    grants: BTreeSet<(String, String)>,
}

#[derive(Clone, Debug)]
struct RealmState {
    repr: Map<String, Value>,
    clients: Vec<ClientState>,
    scopes: Vec<ScopeState>,
    roles: Vec<RoleState>,
    users: Vec<UserState>,
    grant_types_supported: Option<Vec<String>>,
}

impl RealmState {
    fn client_by_id(&mut self, id: &str) -> Option<&mut ClientState> {
        self.clients
            .iter_mut()
            .find(|c| str_field(&c.repr, "id") == id)
    }
    fn client_by_client_id(&mut self, client_id: &str) -> Option<&mut ClientState> {
        self.clients
            .iter_mut()
            .find(|c| str_field(&c.repr, "clientId") == client_id)
    }
    fn scope_name(&self, id: &str) -> Option<String> {
        self.scopes
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.name.clone())
    }
    fn role_json(&self, r: &RoleState) -> Value {
        json!({"id": r.id, "name": r.name, "description": r.description, "composite": r.name.starts_with("default-roles-"),
               "clientRole": false, "containerId": str_field(&self.repr, "id")})
    }
    fn client_json(&self, c: &ClientState) -> Value {
        let mut repr = c.repr.clone();
        let names = |ids: &[String]| -> Value {
            ids.iter()
                .filter_map(|id| self.scope_name(id))
                .map(Value::String)
                .collect()
        };
        repr.insert("defaultClientScopes".into(), names(&c.default_scopes));
        repr.insert("optionalClientScopes".into(), names(&c.optional_scopes));
        Value::Object(repr)
    }
}

#[derive(Clone, Debug)]
enum Principal {
    ServiceAccount(String),
    User(String),
}

#[derive(Clone, Debug)]
struct Token {
    realm: String,
    principal: Principal,
    expires: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Failure {
    remaining: usize,
    status: u16,
    retry_after: Option<u64>,
}

/// Probabilistic throttling: a share of admin calls answers 429 with `Retry-After`, decided by a
/// seeded PRNG (xorshift64*), so a run is reproducible.
#[derive(Clone, Copy, Debug)]
struct Throttle {
    ratio: f64,
    retry_after: u64,
    rng: u64,
}

/// Seed of the throttle PRNG (any non-zero value).
const THROTTLE_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

impl Throttle {
    fn new(ratio: f64, retry_after: u64) -> Self {
        Throttle {
            ratio: if ratio.is_nan() {
                0.0
            } else {
                ratio.clamp(0.0, 1.0)
            },
            retry_after,
            rng: THROTTLE_SEED,
        }
    }

    /// Next uniform draw in [0, 1).
    fn next_unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether this call is throttled.
    fn hit(&mut self) -> bool {
        self.ratio > 0.0 && self.next_unit() < self.ratio
    }
}

struct SimState {
    realms: BTreeMap<String, RealmState>,
    tokens: HashMap<String, Token>,
    latency: Duration,
    failure: Option<Failure>,
    throttle: Option<Throttle>,
    counters: SimCounters,
    bodies: Vec<RecordedBody>,
    sandbox: Option<(String, String)>,
    next_token: u64,
    ignore_client_updates: bool,
}

struct Inner {
    state: Mutex<SimState>,
    base_url: String,
    prefix: String,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Handle to a running simulator. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

/// Starts the simulator on the current tokio runtime. The `master` realm exists from the start.
pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let prefix = config.path_prefix.trim_end_matches('/').to_string();
    let prefix = if prefix.is_empty() || prefix.starts_with('/') {
        prefix
    } else {
        format!("/{prefix}")
    };
    let inner = Arc::new(Inner {
        state: Mutex::new(SimState {
            realms: BTreeMap::new(),
            tokens: HashMap::new(),
            latency: config.latency,
            failure: None,
            throttle: None,
            counters: SimCounters::default(),
            bodies: Vec::new(),
            sandbox: None,
            next_token: 1,
            ignore_client_updates: false,
        }),
        base_url: format!("http://{addr}{prefix}"),
        prefix: prefix.clone(),
        shutdown: Mutex::new(None),
        task: Mutex::new(None),
    });
    let handle = SimHandle { inner };
    handle.add_realm("master");
    let routes = routes(handle.inner.clone());
    let app = if prefix.is_empty() {
        routes
    } else {
        Router::new().nest(&prefix, routes)
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    *lock(&handle.inner.shutdown) = Some(tx);
    *lock(&handle.inner.task) = Some(task);
    Ok(handle)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Keycloak's realm defaults (reference §1.4) plus the usual top-level fields.
fn default_realm_repr(name: &str) -> Map<String, Value> {
    let v = json!({
        "id": new_id(),
        "realm": name,
        "displayName": name,
        "notBefore": 0,
        "defaultSignatureAlgorithm": "RS256",
        "revokeRefreshToken": false,
        "refreshTokenMaxReuse": 0,
        "accessTokenLifespan": 300,
        "accessTokenLifespanForImplicitFlow": 900,
        "ssoSessionIdleTimeout": 1800,
        "ssoSessionMaxLifespan": 36000,
        "ssoSessionIdleTimeoutRememberMe": 0,
        "ssoSessionMaxLifespanRememberMe": 0,
        "offlineSessionIdleTimeout": 2592000,
        "offlineSessionMaxLifespanEnabled": false,
        "offlineSessionMaxLifespan": 5184000,
        "clientSessionIdleTimeout": 0,
        "clientSessionMaxLifespan": 0,
        "clientOfflineSessionIdleTimeout": 0,
        "clientOfflineSessionMaxLifespan": 0,
        "accessCodeLifespan": 60,
        "accessCodeLifespanUserAction": 300,
        "accessCodeLifespanLogin": 1800,
        "enabled": true,
        "sslRequired": "external",
        "registrationAllowed": false,
        "loginWithEmailAllowed": true,
        "bruteForceProtected": false,
        "defaultRole": {"name": format!("default-roles-{name}"), "composite": true, "clientRole": false},
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A client as Keycloak 24 creates it from the admin console ("OpenID Connect", client
/// authentication on, standard flow), with the given `clientId`. Pass it to
/// [`SimHandle::add_client`] after changing what the test needs.
pub fn stock_client(client_id: &str) -> Value {
    json!({
        "clientId": client_id,
        "name": "",
        "description": "",
        "rootUrl": "",
        "adminUrl": "",
        "baseUrl": "",
        "surrogateAuthRequired": false,
        "enabled": true,
        "alwaysDisplayInConsole": false,
        "clientAuthenticatorType": "client-secret",
        "secret": format!("{}-secret-{}", client_id, &new_id()[..8]),
        "redirectUris": [],
        "webOrigins": [],
        "notBefore": 0,
        "bearerOnly": false,
        "consentRequired": false,
        "standardFlowEnabled": true,
        "implicitFlowEnabled": false,
        "directAccessGrantsEnabled": false,
        "serviceAccountsEnabled": false,
        "publicClient": false,
        "frontchannelLogout": true,
        "protocol": "openid-connect",
        "attributes": {
            "oidc.ciba.grant.enabled": "false",
            "oauth2.device.authorization.grant.enabled": "false",
            "backchannel.logout.session.required": "true",
            "backchannel.logout.revoke.offline.tokens": "false",
            "post.logout.redirect.uris": "+"
        },
        "authenticationFlowBindingOverrides": {},
        "fullScopeAllowed": true,
        "nodeReRegistrationTimeout": -1,
        "access": {"view": true, "configure": true, "manage": true}
    })
}

fn keycloak_error(status: StatusCode, error: &str, description: Option<&str>) -> Response {
    let body = match description {
        Some(d) => json!({"error": error, "error_description": d}),
        None => json!({"error": error}),
    };
    (status, axum::Json(body)).into_response()
}

fn error_message(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"errorMessage": message}))).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn realm_not_found() -> Response {
    keycloak_error(StatusCode::NOT_FOUND, "Realm not found.", None)
}

fn client_not_found() -> Response {
    keycloak_error(StatusCode::NOT_FOUND, "Could not find client", None)
}

impl SimHandle {
    fn state(&self) -> MutexGuard<'_, SimState> {
        lock(&self.inner.state)
    }

    /// `http://127.0.0.1:PORT` plus the path prefix: the `url` for the policy's spec.
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// Creates a realm with Keycloak's defaults, its built-in client scopes and realm roles, and
    /// the public `admin-cli` client (password grant). No-op if it exists.
    pub fn add_realm(&self, name: &str) {
        let mut st = self.state();
        if st.realms.contains_key(name) {
            return;
        }
        let scopes = BUILTIN_SCOPES
            .iter()
            .map(|(n, _)| ScopeState {
                id: new_id(),
                name: n.to_string(),
                description: match *n {
                    "offline_access" => "OpenID Connect built-in scope: offline_access".into(),
                    other => format!("OpenID Connect built-in scope: {other}"),
                },
            })
            .collect();
        let roles = ["offline_access", "uma_authorization"]
            .iter()
            .map(|n| n.to_string())
            .chain([format!("default-roles-{name}")])
            .map(|n| RoleState {
                id: new_id(),
                description: format!("${{role_{}}}", n.replace('_', "-")),
                name: n,
            })
            .collect();
        let realm = RealmState {
            repr: default_realm_repr(name),
            clients: Vec::new(),
            scopes,
            roles,
            users: Vec::new(),
            grant_types_supported: None,
        };
        st.realms.insert(name.to_string(), realm);
        drop(st);
        let mut admin_cli = stock_client("admin-cli");
        if let Some(o) = admin_cli.as_object_mut() {
            o.insert("publicClient".into(), Value::Bool(true));
            o.insert("standardFlowEnabled".into(), Value::Bool(false));
            o.insert("directAccessGrantsEnabled".into(), Value::Bool(true));
            o.remove("secret");
        }
        self.add_client(name, admin_cli);
    }

    /// Adds a client to a realm (panics if the realm does not exist: test setup error). An `id`
    /// is generated unless given; the realm's default scopes are linked as Keycloak does on
    /// create. Returns the internal id.
    pub fn add_client(&self, realm: &str, client: Value) -> String {
        let mut st = self.state();
        let r = st
            .realms
            .get_mut(realm)
            .unwrap_or_else(|| panic!("sim-keycloak: no realm {realm}"));
        let mut repr = match client {
            Value::Object(m) => m,
            _ => panic!("sim-keycloak: a client is a JSON object"),
        };
        let id = match repr.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => {
                let id = new_id();
                repr.insert("id".into(), Value::String(id.clone()));
                id
            }
        };
        repr.remove("defaultClientScopes");
        repr.remove("optionalClientScopes");
        let pick = |default: bool| -> Vec<String> {
            BUILTIN_SCOPES
                .iter()
                .filter(|(_, d)| *d == Some(default))
                .filter_map(|(n, _)| r.scopes.iter().find(|s| s.name == *n).map(|s| s.id.clone()))
                .collect()
        };
        let default_scopes = pick(true);
        let optional_scopes = pick(false);
        r.clients.push(ClientState {
            repr,
            default_scopes,
            optional_scopes,
            realm_scope_mappings: Vec::new(),
            grants: BTreeSet::new(),
        });
        id
    }

    /// Adds a confidential client with a service account holding `roles` (realm-management
    /// roles) for `target_realm`.
    pub fn add_service_account(
        &self,
        realm: &str,
        client_id: &str,
        secret: &str,
        target_realm: &str,
        roles: &[&str],
    ) {
        let mut c = stock_client(client_id);
        if let Some(o) = c.as_object_mut() {
            o.insert("secret".into(), Value::String(secret.into()));
            o.insert("serviceAccountsEnabled".into(), Value::Bool(true));
            o.insert("standardFlowEnabled".into(), Value::Bool(false));
        }
        self.add_client(realm, c);
        self.set_admin_roles(realm, client_id, target_realm, roles);
    }

    /// Adds a user who may sign in to `admin-cli` with the password grant, holding `roles` for
    /// `target_realm`.
    pub fn add_admin_user(
        &self,
        realm: &str,
        username: &str,
        password: &str,
        target_realm: &str,
        roles: &[&str],
    ) {
        let mut st = self.state();
        let r = st
            .realms
            .get_mut(realm)
            .unwrap_or_else(|| panic!("sim-keycloak: no realm {realm}"));
        r.users.push(UserState {
            username: username.into(),
            password: password.into(),
            grants: BTreeSet::new(),
        });
        drop(st);
        self.set_admin_roles(realm, username, target_realm, roles);
    }

    /// Replaces the roles that `principal` (a service-account client's `clientId` or a username
    /// in `realm`) holds for `target_realm`.
    pub fn set_admin_roles(
        &self,
        realm: &str,
        principal: &str,
        target_realm: &str,
        roles: &[&str],
    ) {
        let mut st = self.state();
        let Some(r) = st.realms.get_mut(realm) else {
            panic!("sim-keycloak: no realm {realm}");
        };
        let grants = if let Some(c) = r.client_by_client_id(principal) {
            &mut c.grants
        } else if let Some(u) = r.users.iter_mut().find(|u| u.username == principal) {
            &mut u.grants
        } else {
            panic!("sim-keycloak: no principal {principal} in {realm}");
        };
        grants.retain(|(t, _)| t != target_realm);
        for role in roles {
            grants.insert((target_realm.to_string(), role.to_string()));
        }
    }

    /// Changes a client's secret (as "Regenerate" in the console).
    pub fn set_client_secret(&self, realm: &str, client_id: &str, secret: &str) {
        self.update_client(realm, client_id, |c| {
            c.insert("secret".into(), Value::String(secret.into()));
        });
    }

    /// A client's representation as `GET /clients/{id}` answers it.
    pub fn client(&self, realm: &str, client_id: &str) -> Option<Value> {
        let mut st = self.state();
        let r = st.realms.get_mut(realm)?;
        let c = r.client_by_client_id(client_id)?.clone();
        Some(r.client_json(&c))
    }

    /// Edits a client's stored representation directly (drift, as a change in the admin console).
    pub fn update_client(
        &self,
        realm: &str,
        client_id: &str,
        f: impl FnOnce(&mut Map<String, Value>),
    ) {
        let mut st = self.state();
        if let Some(c) = st
            .realms
            .get_mut(realm)
            .and_then(|r| r.client_by_client_id(client_id))
        {
            f(&mut c.repr);
        }
    }

    /// A realm's full representation.
    pub fn realm(&self, name: &str) -> Option<Value> {
        self.state()
            .realms
            .get(name)
            .map(|r| Value::Object(r.repr.clone()))
    }

    /// Edits a realm's representation directly.
    pub fn update_realm(&self, name: &str, f: impl FnOnce(&mut Map<String, Value>)) {
        if let Some(r) = self.state().realms.get_mut(name) {
            f(&mut r.repr);
        }
    }

    /// Names of the client scopes linked to a client: (default, optional), sorted.
    pub fn client_scope_links(&self, realm: &str, client_id: &str) -> (Vec<String>, Vec<String>) {
        let mut st = self.state();
        let Some(r) = st.realms.get_mut(realm) else {
            return Default::default();
        };
        let Some(c) = r.client_by_client_id(client_id).cloned() else {
            return Default::default();
        };
        let names = |ids: &[String]| {
            let mut v: Vec<String> = ids.iter().filter_map(|i| r.scope_name(i)).collect();
            v.sort();
            v
        };
        (names(&c.default_scopes), names(&c.optional_scopes))
    }

    /// Unlinks a client scope (default or optional) from a client.
    pub fn unlink_client_scope(&self, realm: &str, client_id: &str, scope: &str) {
        let mut st = self.state();
        let Some(r) = st.realms.get_mut(realm) else {
            return;
        };
        let Some(id) = r
            .scopes
            .iter()
            .find(|s| s.name == scope)
            .map(|s| s.id.clone())
        else {
            return;
        };
        if let Some(c) = r.client_by_client_id(client_id) {
            c.default_scopes.retain(|s| *s != id);
            c.optional_scopes.retain(|s| *s != id);
        }
    }

    /// Links a client scope as default (`true`) or optional, removing any other link first.
    pub fn link_client_scope(&self, realm: &str, client_id: &str, scope: &str, default: bool) {
        self.unlink_client_scope(realm, client_id, scope);
        let mut st = self.state();
        let Some(r) = st.realms.get_mut(realm) else {
            return;
        };
        let Some(id) = r
            .scopes
            .iter()
            .find(|s| s.name == scope)
            .map(|s| s.id.clone())
        else {
            return;
        };
        if let Some(c) = r.client_by_client_id(client_id) {
            if default {
                c.default_scopes.push(id);
            } else {
                c.optional_scopes.push(id);
            }
        }
    }

    /// Deletes a client scope from a realm (and its links).
    pub fn remove_client_scope(&self, realm: &str, scope: &str) {
        let mut st = self.state();
        let Some(r) = st.realms.get_mut(realm) else {
            return;
        };
        let Some(id) = r
            .scopes
            .iter()
            .find(|s| s.name == scope)
            .map(|s| s.id.clone())
        else {
            return;
        };
        r.scopes.retain(|s| s.id != id);
        for c in &mut r.clients {
            c.default_scopes.retain(|s| *s != id);
            c.optional_scopes.retain(|s| *s != id);
        }
    }

    /// Sets the `grant_types_supported` the realm's discovery document lists (`None`: Keycloak's).
    pub fn set_grant_types_supported(&self, realm: &str, grants: Option<Vec<String>>) {
        if let Some(r) = self.state().realms.get_mut(realm) {
            r.grant_types_supported = grants;
        }
    }

    /// Names of the realm roles in a client's realm scope mappings, sorted.
    pub fn client_realm_scope_mappings(&self, realm: &str, client_id: &str) -> Vec<String> {
        let mut st = self.state();
        let Some(r) = st.realms.get_mut(realm) else {
            return Vec::new();
        };
        let Some(c) = r.client_by_client_id(client_id).cloned() else {
            return Vec::new();
        };
        let mut v: Vec<String> = c
            .realm_scope_mappings
            .iter()
            .filter_map(|id| r.roles.iter().find(|x| x.id == *id).map(|x| x.name.clone()))
            .collect();
        v.sort();
        v
    }

    /// Makes every issued token expired (the next admin call with one answers 401).
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for t in self.state().tokens.values_mut() {
            t.expires = now;
        }
    }

    /// Number of tokens issued and not yet expired.
    pub fn live_tokens(&self) -> usize {
        let now = Instant::now();
        self.state()
            .tokens
            .values()
            .filter(|t| t.expires > now)
            .count()
    }

    /// Seeds the sandbox tenant: realm `coder` (Keycloak defaults) with Coder's client `coder`
    /// before refresh tokens were set up (`use.refresh.tokens` off, `offline_access` scope not
    /// linked, `fullScopeAllowed` off so the `offline_access` role must be mapped), and a service
    /// account `coder-operator` with `view-clients`, `manage-clients`, `view-realm` and
    /// `manage-realm`. The spec opts in to realm changes so `lifetime`/`rotation` can converge.
    pub fn seed_sandbox(&self) -> SandboxSeed {
        let realm = "coder";
        self.add_realm(realm);
        let mut c = stock_client("coder");
        if let Some(o) = c.as_object_mut() {
            o.insert("name".into(), json!("Coder"));
            o.insert("secret".into(), json!("sandbox-coder-client-secret"));
            o.insert("rootUrl".into(), json!("https://coder.example.com"));
            o.insert(
                "redirectUris".into(),
                json!(["https://coder.example.com/api/v2/users/oidc/callback"]),
            );
            o.insert("webOrigins".into(), json!(["https://coder.example.com"]));
            o.insert("fullScopeAllowed".into(), json!(false));
            if let Some(a) = o.get_mut("attributes").and_then(Value::as_object_mut) {
                a.insert("use.refresh.tokens".into(), json!("false"));
                a.insert("pkce.code.challenge.method".into(), json!("S256"));
            }
        }
        if self.client(realm, "coder").is_none() {
            self.add_client(realm, c);
            self.unlink_client_scope(realm, "coder", "offline_access");
        }
        let secret = "sandbox-operator-secret";
        if self.client(realm, "coder-operator").is_none() {
            self.add_service_account(
                realm,
                "coder-operator",
                secret,
                realm,
                &[
                    "view-clients",
                    "manage-clients",
                    "view-realm",
                    "manage-realm",
                ],
            );
        }
        self.state().sandbox = Some((realm.into(), "coder".into()));
        SandboxSeed {
            spec: json!({"keycloak": {
                "url": self.base_url(),
                "realm": realm,
                "clientId": "coder",
                "credentialsSecret": "keycloak-admin",
                "allowRealmChanges": true,
            }}),
            secret_name: "keycloak-admin".into(),
            secret_data: BTreeMap::from([
                ("client-id".to_string(), "coder-operator".to_string()),
                ("client-secret".to_string(), secret.to_string()),
            ]),
        }
    }

    /// Refresh-relevant settings of the sandbox's Coder client (after [`Self::seed_sandbox`]).
    pub fn describe_client(&self) -> Vec<(String, String)> {
        let Some((realm, client_id)) = self.state().sandbox.clone() else {
            return Vec::new();
        };
        self.describe(&realm, &client_id)
    }

    /// Refresh-relevant settings of any client and its realm, as (setting, value) lines.
    pub fn describe(&self, realm: &str, client_id: &str) -> Vec<(String, String)> {
        let Some(client) = self.client(realm, client_id) else {
            return vec![("client".into(), format!("{client_id} not found in {realm}"))];
        };
        let realm_repr = self.realm(realm).unwrap_or_default();
        let attr = |k: &str| {
            client
                .pointer(&format!(
                    "/attributes/{}",
                    k.replace('~', "~0").replace('/', "~1")
                ))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .unwrap_or("unset")
                .to_string()
        };
        let (default, optional) = self.client_scope_links(realm, client_id);
        let link = if default.iter().any(|s| s == "offline_access") {
            "default"
        } else if optional.iter().any(|s| s == "offline_access") {
            "optional"
        } else {
            "not linked"
        };
        let mapped = self
            .client_realm_scope_mappings(realm, client_id)
            .contains(&"offline_access".to_string());
        let mut out = vec![
            ("client".to_string(), format!("{client_id} (realm {realm})")),
            ("use.refresh.tokens".into(), attr("use.refresh.tokens")),
            ("offline_access client scope".into(), link.into()),
            (
                "fullScopeAllowed".into(),
                client
                    .get("fullScopeAllowed")
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "true".into()),
            ),
            (
                "offline_access role in scope mappings".into(),
                if mapped { "yes" } else { "no" }.into(),
            ),
        ];
        for k in [
            "client.offline.session.idle.timeout",
            "client.offline.session.max.lifespan",
            "client.session.idle.timeout",
            "client.session.max.lifespan",
            "access.token.lifespan",
        ] {
            out.push((k.to_string(), attr(k)));
        }
        for k in [
            "offlineSessionIdleTimeout",
            "offlineSessionMaxLifespanEnabled",
            "offlineSessionMaxLifespan",
            "ssoSessionIdleTimeout",
            "ssoSessionMaxLifespan",
            "revokeRefreshToken",
            "refreshTokenMaxReuse",
            "accessTokenLifespan",
        ] {
            out.push((
                format!("realm {k}"),
                realm_repr
                    .get(k)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "unset".into()),
            ));
        }
        out
    }

    /// Request counters so far.
    pub fn counters(&self) -> SimCounters {
        self.state().counters.clone()
    }

    /// Shorthand for `counters().writes()`.
    pub fn writes(&self) -> u64 {
        self.counters().writes()
    }

    /// Clears the counters (not the recorded bodies).
    pub fn reset_counters(&self) {
        self.state().counters = SimCounters::default();
    }

    /// Every admin-API request body received so far, in order.
    pub fn recorded_bodies(&self) -> Vec<RecordedBody> {
        self.state().bodies.clone()
    }

    /// Validates every recorded body against its contract schema. Returns how many were checked,
    /// or one line per problem.
    pub fn validate_recorded_bodies(&self) -> Result<usize, Vec<String>> {
        let bodies = self.recorded_bodies();
        let mut errors = Vec::new();
        for b in &bodies {
            if let Err(e) = validate_body(&b.schema, &b.body) {
                errors.extend(
                    e.into_iter()
                        .map(|e| format!("{} {} ({}): {e}", b.method, b.route, b.schema)),
                );
            }
        }
        if errors.is_empty() {
            Ok(bodies.len())
        } else {
            Err(errors)
        }
    }

    /// Delay before every answer from now on.
    pub fn set_latency(&self, d: Duration) {
        self.state().latency = d;
    }

    /// The next `n` admin-API calls (paths under `/admin`) answer `status`, with `Retry-After:
    /// <secs>` when given. `n = 0` clears a pending failure.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        self.state().failure = (n > 0).then_some(Failure {
            remaining: n,
            status,
            retry_after,
        });
    }

    /// From now on, a share `ratio` (0..=1) of admin-API calls (paths under `/admin`, not the token
    /// endpoint) answers 429 with `Retry-After: <retry_after_secs>`, as a throttling IdP does.
    /// The choice is made by a PRNG seeded the same way on every call of this method, so a given
    /// sequence of calls is throttled the same way each time. `ratio = 0` turns it off. A pending
    /// [`Self::fail_next`] takes precedence.
    pub fn set_throttle(&self, ratio: f64, retry_after_secs: u64) {
        self.state().throttle = (ratio > 0.0).then(|| Throttle::new(ratio, retry_after_secs));
    }

    /// When on, `PUT /clients/{id}` answers 204 but stores nothing (as a client policy or a
    /// faulty proxy might), so a client can prove it reads back after writing.
    pub fn ignore_client_updates(&self, on: bool) {
        self.state().ignore_client_updates = on;
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(&self) {
        if let Some(tx) = lock(&self.inner.shutdown).take() {
            let _ = tx.send(());
        }
        let task = lock(&self.inner.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Validates a body against a schema named as in [`RecordedBody::schema`].
pub fn validate_body(schema: &str, body: &Value) -> Result<(), Vec<String>> {
    match schema.strip_suffix("[]") {
        Some(item) => schema::contract().validate_array(item, body),
        None => schema::contract().validate(schema, body),
    }
}

type Sim = Arc<Inner>;

/// Route templates served (relative to the prefix), for counters.
pub const ROUTES: [&str; 12] = [
    TOKEN_ROUTE,
    "/realms/{realm}/.well-known/openid-configuration",
    "/admin/realms/{realm}",
    "/admin/realms/{realm}/clients",
    "/admin/realms/{realm}/clients/{id}",
    "/admin/realms/{realm}/clients/{id}/default-client-scopes",
    "/admin/realms/{realm}/clients/{id}/optional-client-scopes",
    "/admin/realms/{realm}/clients/{id}/default-client-scopes/{scope}",
    "/admin/realms/{realm}/clients/{id}/optional-client-scopes/{scope}",
    "/admin/realms/{realm}/clients/{id}/scope-mappings/realm",
    "/admin/realms/{realm}/client-scopes",
    "/admin/realms/{realm}/roles/{name}",
];

/// The route template a path matches, or `<unmatched>`.
pub fn route_template(path: &str) -> String {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ROUTES
        .iter()
        .find(|t| {
            let tsegs: Vec<&str> = t.split('/').collect();
            tsegs.len() == segs.len()
                && tsegs
                    .iter()
                    .zip(&segs)
                    .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
        })
        .map(|t| t.to_string())
        .unwrap_or_else(|| "<unmatched>".to_string())
}

fn routes(sim: Sim) -> Router {
    Router::new()
        .route(TOKEN_ROUTE, post(token))
        .route(
            "/realms/{realm}/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/admin/realms/{realm}", get(get_realm).put(put_realm))
        .route("/admin/realms/{realm}/clients", get(list_clients))
        .route(
            "/admin/realms/{realm}/clients/{id}",
            get(get_client).put(put_client),
        )
        .route(
            "/admin/realms/{realm}/clients/{id}/default-client-scopes",
            get(|s, p, h| list_links(s, p, h, true)),
        )
        .route(
            "/admin/realms/{realm}/clients/{id}/optional-client-scopes",
            get(|s, p, h| list_links(s, p, h, false)),
        )
        .route(
            "/admin/realms/{realm}/clients/{id}/default-client-scopes/{scope}",
            put(|s, p, h| link(s, p, h, true, true)).delete(|s, p, h| link(s, p, h, true, false)),
        )
        .route(
            "/admin/realms/{realm}/clients/{id}/optional-client-scopes/{scope}",
            put(|s, p, h| link(s, p, h, false, true)).delete(|s, p, h| link(s, p, h, false, false)),
        )
        .route(
            "/admin/realms/{realm}/clients/{id}/scope-mappings/realm",
            get(get_mappings)
                .post(|s, p, h, b| change_mappings(s, p, h, b, true))
                .delete(|s, p, h, b| change_mappings(s, p, h, b, false)),
        )
        .route("/admin/realms/{realm}/client-scopes", get(list_scopes))
        .route("/admin/realms/{realm}/roles/{name}", get(get_role))
        .fallback(|| async {
            keycloak_error(
                StatusCode::NOT_FOUND,
                "RESTEASY003210: Could not find resource",
                None,
            )
        })
        .layer(middleware::from_fn_with_state(sim.clone(), observe))
        .with_state(sim)
}

/// Latency, failure injection and counters around every call.
async fn observe(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path();
    // A nested router already sees the path without the prefix.
    let route = route_template(
        path.strip_prefix(sim.prefix.as_str())
            .filter(|r| !sim.prefix.is_empty() && r.starts_with('/'))
            .unwrap_or(path),
    );
    let (latency, injected) = {
        let mut st = lock(&sim.state);
        let mut injected = None;
        if route.starts_with("/admin/")
            && let Some(f) = st.failure.as_mut()
        {
            injected = Some((f.status, f.retry_after));
            f.remaining -= 1;
            if f.remaining == 0 {
                st.failure = None;
            }
        }
        if injected.is_none()
            && route.starts_with("/admin/")
            && let Some(t) = st.throttle.as_mut()
            && t.hit()
        {
            injected = Some((429, Some(t.retry_after)));
        }
        (st.latency, injected)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = match injected {
        Some((status, retry_after)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut resp = keycloak_error(
                status,
                "unknown_error",
                Some(status.canonical_reason().unwrap_or("injected failure")),
            );
            if let Some(secs) = retry_after
                && let Ok(v) = HeaderValue::from_str(&secs.to_string())
            {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        None => next.run(req).await,
    };
    let mut st = lock(&sim.state);
    *st.counters
        .by_route
        .entry((method, route, response.status().as_u16()))
        .or_default() += 1;
    response
}

/// The roles an operation needs: any of them suffices (`realm-admin` always does).
#[derive(Clone, Copy)]
enum Need {
    ViewClients,
    ManageClients,
    ViewRealm,
    ManageRealm,
}

impl Need {
    fn satisfied_by(self) -> &'static [&'static str] {
        match self {
            Need::ViewClients => &["view-clients", "manage-clients", "realm-admin"],
            Need::ManageClients => &["manage-clients", "realm-admin"],
            Need::ViewRealm => &["view-realm", "manage-realm", "realm-admin"],
            Need::ManageRealm => &["manage-realm", "realm-admin"],
        }
    }
}

/// Outcome of authorizing an admin call.
enum Authz {
    /// Allowed; the caller's grants for the target realm.
    Allowed(BTreeSet<String>),
    Denied(Response),
}

/// Checks the bearer token, the realm's existence and the caller's roles for `realm`.
/// `need: None` only requires some admin role for the realm.
fn authorize(st: &mut SimState, headers: &HeaderMap, realm: &str, need: Option<Need>) -> Authz {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let now = Instant::now();
    let Some(t) = token
        .and_then(|t| st.tokens.get(t))
        .filter(|t| t.expires > now)
        .cloned()
    else {
        return Authz::Denied(keycloak_error(
            StatusCode::UNAUTHORIZED,
            "HTTP 401 Unauthorized",
            None,
        ));
    };
    let Some(auth_realm) = st.realms.get(&t.realm) else {
        return Authz::Denied(keycloak_error(
            StatusCode::UNAUTHORIZED,
            "HTTP 401 Unauthorized",
            None,
        ));
    };
    let grants: BTreeSet<(String, String)> = match &t.principal {
        Principal::ServiceAccount(cid) => auth_realm
            .clients
            .iter()
            .find(|c| str_field(&c.repr, "clientId") == cid)
            .map(|c| c.grants.clone()),
        Principal::User(u) => auth_realm
            .users
            .iter()
            .find(|x| x.username == *u)
            .map(|x| x.grants.clone()),
    }
    .unwrap_or_default();
    if !st.realms.contains_key(realm) {
        return Authz::Denied(realm_not_found());
    }
    let forbidden = || keycloak_error(StatusCode::FORBIDDEN, "HTTP 403 Forbidden", None);
    if t.realm != "master" && t.realm != realm {
        return Authz::Denied(forbidden());
    }
    let roles: BTreeSet<String> = grants
        .into_iter()
        .filter(|(target, _)| target == realm)
        .map(|(_, r)| r)
        .collect();
    let ok = match need {
        None => !roles.is_empty(),
        Some(n) => n.satisfied_by().iter().any(|r| roles.contains(*r)),
    };
    if ok {
        Authz::Allowed(roles)
    } else {
        Authz::Denied(forbidden())
    }
}

macro_rules! authorize_or_return {
    ($st:expr, $headers:expr, $realm:expr, $need:expr) => {
        match authorize($st, $headers, $realm, $need) {
            Authz::Allowed(roles) => roles,
            Authz::Denied(resp) => return resp,
        }
    };
}

/// Parses and validates a JSON body, recording it. `Err` is the 400 answer.
#[allow(clippy::result_large_err)] // the error is the HTTP answer, returned at once
fn read_body(
    st: &mut SimState,
    method: &Method,
    route: &str,
    schema: &str,
    bytes: &Bytes,
) -> Result<Value, Response> {
    let parsed: Result<Value, _> = serde_json::from_slice(bytes);
    let body = match &parsed {
        Ok(v) => v.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
    };
    st.bodies.push(RecordedBody {
        method: method.to_string(),
        route: route.to_string(),
        schema: schema.to_string(),
        body: body.clone(),
    });
    if let Err(e) = parsed {
        return Err(keycloak_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(&format!("Unable to parse the request body as JSON: {e}")),
        ));
    }
    if let Err(errors) = validate_body(schema, &body) {
        return Err(keycloak_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(&format!(
                "The request body does not match {schema}: {}",
                errors.join("; ")
            )),
        ));
    }
    Ok(body)
}

async fn token(State(sim): State<Sim>, Path(realm): Path<String>, body: Bytes) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let mut st = lock(&sim.state);
    let Some(r) = st.realms.get(&realm) else {
        return keycloak_error(StatusCode::NOT_FOUND, "Realm does not exist", None);
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let client = r
        .clients
        .iter()
        .find(|c| str_field(&c.repr, "clientId") == field("client_id"));
    let invalid_client = || {
        keycloak_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            Some("Invalid client or Invalid client credentials"),
        )
    };
    let principal = match field("grant_type") {
        "client_credentials" => {
            let Some(c) = client else {
                return invalid_client();
            };
            let public = c.repr.get("publicClient").and_then(Value::as_bool) == Some(true);
            if public || str_field(&c.repr, "secret") != field("client_secret") {
                return invalid_client();
            }
            if c.repr
                .get("serviceAccountsEnabled")
                .and_then(Value::as_bool)
                != Some(true)
            {
                return keycloak_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized_client",
                    Some("Client not enabled to retrieve service account"),
                );
            }
            Principal::ServiceAccount(field("client_id").to_string())
        }
        "password" => {
            let Some(c) = client else {
                return invalid_client();
            };
            let public = c.repr.get("publicClient").and_then(Value::as_bool) == Some(true);
            if !public && str_field(&c.repr, "secret") != field("client_secret") {
                return invalid_client();
            }
            if c.repr
                .get("directAccessGrantsEnabled")
                .and_then(Value::as_bool)
                != Some(true)
            {
                return keycloak_error(
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    Some("Client not allowed for direct access grants"),
                );
            }
            let ok = r
                .users
                .iter()
                .any(|u| u.username == field("username") && u.password == field("password"));
            if !ok {
                return keycloak_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    Some("Invalid user credentials"),
                );
            }
            Principal::User(field("username").to_string())
        }
        "" => {
            return keycloak_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("Missing form parameter: grant_type"),
            );
        }
        _ => {
            return keycloak_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                Some("Unsupported grant_type"),
            );
        }
    };
    let lifespan = r
        .repr
        .get("accessTokenLifespan")
        .and_then(Value::as_u64)
        .unwrap_or(300);
    let n = st.next_token;
    st.next_token += 1;
    let access_token = format!("sim-kc-{n}-{}", new_id());
    let now = Instant::now();
    st.tokens.retain(|_, t| t.expires > now);
    st.tokens.insert(
        access_token.clone(),
        Token {
            realm: realm.clone(),
            principal,
            expires: now + Duration::from_secs(lifespan),
        },
    );
    axum::Json(json!({
        "access_token": access_token,
        "expires_in": lifespan,
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": "profile email",
    }))
    .into_response()
}

async fn discovery(State(sim): State<Sim>, Path(realm): Path<String>) -> Response {
    let st = lock(&sim.state);
    let Some(r) = st.realms.get(&realm) else {
        return keycloak_error(StatusCode::NOT_FOUND, "Realm does not exist", None);
    };
    let issuer = format!("{}/realms/{realm}", sim.base_url);
    let oidc = format!("{issuer}/protocol/openid-connect");
    let grants = r.grant_types_supported.clone().unwrap_or_else(|| {
        [
            "authorization_code",
            "implicit",
            "refresh_token",
            "password",
            "client_credentials",
            "urn:openid:params:grant-type:ciba",
            "urn:ietf:params:oauth:grant-type:device_code",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    });
    let mut scopes = vec!["openid".to_string()];
    scopes.extend(r.scopes.iter().map(|s| s.name.clone()));
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{oidc}/auth"),
        "token_endpoint": format!("{oidc}/token"),
        "userinfo_endpoint": format!("{oidc}/userinfo"),
        "end_session_endpoint": format!("{oidc}/logout"),
        "jwks_uri": format!("{oidc}/certs"),
        "grant_types_supported": grants,
        "response_types_supported": ["code", "none", "id_token", "token", "id_token token", "code id_token", "code token", "code id_token token"],
        "scopes_supported": scopes,
        "code_challenge_methods_supported": ["plain", "S256"],
    }))
    .into_response()
}

async fn get_realm(
    State(sim): State<Sim>,
    Path(realm): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&sim.state);
    let roles = authorize_or_return!(&mut st, &headers, &realm, None);
    let r = &st.realms[&realm];
    let full = Need::ViewRealm
        .satisfied_by()
        .iter()
        .any(|x| roles.contains(*x));
    if full {
        axum::Json(Value::Object(r.repr.clone())).into_response()
    } else {
        // Keycloak answers a brief representation to admins without view-realm.
        let brief: Map<String, Value> = ["id", "realm", "displayName", "enabled"]
            .iter()
            .filter_map(|k| r.repr.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        axum::Json(Value::Object(brief)).into_response()
    }
}

async fn put_realm(
    State(sim): State<Sim>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&sim.state);
    authorize_or_return!(&mut st, &headers, &realm, Some(Need::ManageRealm));
    let body = match read_body(
        &mut st,
        &Method::PUT,
        "/admin/realms/{realm}",
        "RealmRepresentation",
        &body,
    ) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Value::Object(fields) = body else {
        return keycloak_error(StatusCode::BAD_REQUEST, "invalid_request", None);
    };
    if let Some(name) = fields.get("realm").and_then(Value::as_str)
        && name != realm
    {
        return error_message(
            StatusCode::BAD_REQUEST,
            "Renaming realms is not supported by the simulator",
        );
    }
    let r = st.realms.get_mut(&realm).expect("authorized realm exists");
    for (k, v) in fields {
        // Nested collections are ignored by this endpoint in Keycloak.
        if v.is_null()
            || matches!(
                k.as_str(),
                "id" | "realm" | "users" | "clients" | "roles" | "groups" | "clientScopes"
            )
        {
            continue;
        }
        r.repr.insert(k, v);
    }
    no_content()
}

#[derive(serde::Deserialize)]
struct ClientQuery {
    #[serde(rename = "clientId")]
    client_id: Option<String>,
    search: Option<bool>,
}

async fn list_clients(
    State(sim): State<Sim>,
    Path(realm): Path<String>,
    Query(q): Query<ClientQuery>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&sim.state);
    authorize_or_return!(&mut st, &headers, &realm, Some(Need::ViewClients));
    let r = &st.realms[&realm];
    let list: Vec<Value> = r
        .clients
        .iter()
        .filter(|c| {
            let cid = str_field(&c.repr, "clientId");
            match (&q.client_id, q.search.unwrap_or(false)) {
                (None, _) => true,
                (Some(want), false) => cid == want,
                (Some(want), true) => cid.to_lowercase().contains(&want.to_lowercase()),
            }
        })
        .map(|c| r.client_json(c))
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

async fn get_client(
    State(sim): State<Sim>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&sim.state);
    authorize_or_return!(&mut st, &headers, &realm, Some(Need::ViewClients));
    let r = st.realms.get_mut(&realm).expect("authorized realm exists");
    match r.client_by_id(&id).cloned() {
        Some(c) => axum::Json(r.client_json(&c)).into_response(),
        None => client_not_found(),
    }
}

async fn put_client(
    State(sim): State<Sim>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&sim.state);
    authorize_or_return!(&mut st, &headers, &realm, Some(Need::ManageClients));
    let body = match read_body(
        &mut st,
        &Method::PUT,
        "/admin/realms/{realm}/clients/{id}",
        "ClientRepresentation",
        &body,
    ) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let ignore = st.ignore_client_updates;
    let r = st.realms.get_mut(&realm).expect("authorized realm exists");
    if r.client_by_id(&id).is_none() {
        return client_not_found();
    }
    let Value::Object(fields) = body else {
        return keycloak_error(StatusCode::BAD_REQUEST, "invalid_request", None);
    };
    if let Some(new_cid) = fields.get("clientId").and_then(Value::as_str) {
        let clash = r
            .clients
            .iter()
            .any(|c| str_field(&c.repr, "clientId") == new_cid && str_field(&c.repr, "id") != id);
        if clash {
            return error_message(
                StatusCode::CONFLICT,
                &format!("Client {new_cid} already exists"),
            );
        }
    }
    if ignore {
        return no_content();
    }
    let c = r.client_by_id(&id).expect("checked above");
    for (k, v) in fields {
        if v.is_null()
            || matches!(
                k.as_str(),
                "id" | "defaultClientScopes" | "optionalClientScopes"
            )
        {
            continue;
        }
        if k == "attributes" {
            let attrs = c
                .repr
                .entry("attributes")
                .or_insert_with(|| Value::Object(Map::new()));
            if !attrs.is_object() {
                *attrs = Value::Object(Map::new());
            }
            if let (Some(dst), Value::Object(src)) = (attrs.as_object_mut(), v) {
                for (ak, av) in src {
                    dst.insert(ak, av);
                }
            }
            continue;
        }
        c.repr.insert(k, v);
    }
    no_content()
}

async fn list_links(
    State(sim): State<Sim>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
    default: bool,
) -> Response {
    let mut st = lock(&sim.state);
    authorize_or_return!(&mut st, &headers, &realm, Some(Need::ViewClients));
    let r = st.realms.get_mut(&realm).expect("authorized realm exists");
    let Some(c) = r.client_by_id(&id).cloned() else {
        return client_not_found();
    };
    let ids = if default {
        &c.default_scopes
    } else {
        &c.optional_scopes
    };
    let list: Vec<Value> = ids
        .iter()
        .filter_map(|i| r.scope_name(i).map(|n| json!({"id": i, "name": n})))
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

async fn link(
    State(sim): State<Sim>,
    Path((realm, id, scope)): Path<(String, String, String)>,
    headers: HeaderMap,
    default: bool,
    add: bool,
) -> Response {
    let mut st = lock(&sim.state);
    authorize_or_return!(&mut st, &headers, &realm, Some(Need::ManageClients));
    let r = st.realms.get_mut(&realm).expect("authorized realm exists");
    if !r.scopes.iter().any(|s| s.id == scope) {
        return keycloak_error(StatusCode::NOT_FOUND, "Client scope not found", None);
    }
    let Some(c) = r.client_by_id(&id) else {
        return client_not_found();
    };
    if add {
        // Keycloak's addClientScopes skips scopes already linked either way: 204, no change.
        if !c.default_scopes.contains(&scope) && !c.optional_scopes.contains(&scope) {
            if default {
                c.default_scopes.push(scope);
            } else {
                c.optional_scopes.push(scope);
            }
        }
    } else {
        c.default_scopes.retain(|s| *s != scope);
        c.optional_scopes.retain(|s| *s != scope);
    }
    no_content()
}

async fn get_mappings(
    State(sim): State<Sim>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&sim.state);
    authorize_or_return!(&mut st, &headers, &realm, Some(Need::ViewClients));
    let r = st.realms.get_mut(&realm).expect("authorized realm exists");
    let Some(c) = r.client_by_id(&id).cloned() else {
        return client_not_found();
    };
    let list: Vec<Value> = c
        .realm_scope_mappings
        .iter()
        .filter_map(|rid| {
            r.roles
                .iter()
                .find(|x| x.id == *rid)
                .map(|x| r.role_json(x))
        })
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

async fn change_mappings(
    State(sim): State<Sim>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
    add: bool,
) -> Response {
    let mut st = lock(&sim.state);
    authorize_or_return!(&mut st, &headers, &realm, Some(Need::ManageClients));
    let method = if add { Method::POST } else { Method::DELETE };
    let body = match read_body(
        &mut st,
        &method,
        "/admin/realms/{realm}/clients/{id}/scope-mappings/realm",
        "RoleRepresentation[]",
        &body,
    ) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let r = st.realms.get_mut(&realm).expect("authorized realm exists");
    if r.client_by_id(&id).is_none() {
        return client_not_found();
    }
    let mut role_ids = Vec::new();
    for role in body.as_array().cloned().unwrap_or_default() {
        let by_id = role.get("id").and_then(Value::as_str);
        let found = r
            .roles
            .iter()
            .find(|x| by_id.is_some_and(|i| i == x.id))
            .map(|x| x.id.clone());
        match found {
            Some(rid) => role_ids.push(rid),
            None => {
                return keycloak_error(StatusCode::NOT_FOUND, "Could not find role", None);
            }
        }
    }
    let c = r.client_by_id(&id).expect("checked above");
    for rid in role_ids {
        if add {
            if !c.realm_scope_mappings.contains(&rid) {
                c.realm_scope_mappings.push(rid);
            }
        } else {
            c.realm_scope_mappings.retain(|x| *x != rid);
        }
    }
    no_content()
}

async fn list_scopes(
    State(sim): State<Sim>,
    Path(realm): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&sim.state);
    authorize_or_return!(&mut st, &headers, &realm, Some(Need::ViewClients));
    let r = &st.realms[&realm];
    let list: Vec<Value> = r
        .scopes
        .iter()
        .map(|s| {
            json!({"id": s.id, "name": s.name, "description": s.description, "protocol": "openid-connect",
                   "attributes": {"include.in.token.scope": "true", "display.on.consent.screen": "true"}})
        })
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

async fn get_role(
    State(sim): State<Sim>,
    Path((realm, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&sim.state);
    authorize_or_return!(&mut st, &headers, &realm, Some(Need::ViewRealm));
    let r = &st.realms[&realm];
    match r.roles.iter().find(|x| x.name == name) {
        Some(role) => axum::Json(r.role_json(role)).into_response(),
        None => keycloak_error(StatusCode::NOT_FOUND, "Could not find role", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_hits_about_the_ratio_and_is_deterministic() {
        let draws = |ratio: f64| {
            let mut t = Throttle::new(ratio, 1);
            (0..10_000).map(|_| t.hit()).collect::<Vec<bool>>()
        };
        let a = draws(0.2);
        assert_eq!(a, draws(0.2), "same seed, same sequence");
        let hits = a.iter().filter(|h| **h).count();
        assert!((1_800..=2_200).contains(&hits), "{hits} of 10000");
        assert!(draws(0.0).iter().all(|h| !h));
        assert!(draws(1.0).iter().all(|h| *h));
        assert!(draws(f64::NAN).iter().all(|h| !h));
    }

    #[tokio::test]
    async fn throttle_answers_429_with_retry_after_on_admin_calls_only() {
        let sim = start(SimConfig::default()).await.unwrap();
        sim.set_throttle(1.0, 7);
        let addr = sim.base_url().trim_start_matches("http://").to_string();
        let get = |path: &'static str| {
            let addr = addr.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    use std::io::{Read, Write};
                    let mut s = std::net::TcpStream::connect(&addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let req =
                        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                    s.write_all(req.as_bytes()).unwrap();
                    let mut out = String::new();
                    s.read_to_string(&mut out).unwrap();
                    out
                })
                .await
                .unwrap()
            }
        };
        let admin = get("/admin/realms/master").await;
        assert!(admin.starts_with("HTTP/1.1 429"), "{admin}");
        assert!(
            admin.to_ascii_lowercase().contains("retry-after: 7"),
            "{admin}"
        );
        let discovery = get("/realms/master/.well-known/openid-configuration").await;
        assert!(discovery.starts_with("HTTP/1.1 200"), "{discovery}");
        sim.set_throttle(0.0, 7);
        let admin = get("/admin/realms/master").await;
        assert!(!admin.starts_with("HTTP/1.1 429"), "{admin}");
        assert_eq!(sim.counters().with_status(429), 1);
        sim.shutdown().await;
    }
}
