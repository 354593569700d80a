//! A stateful simulator of the parts of the Keycloak 26 Admin REST API that the
//! oidc-refresh-operator uses, for tests and the `sandbox` command. It is checked against
//! Keycloak's official admin client (`@keycloak/keycloak-admin-client`) by the conformance suite
//! in `tests/conformance/keycloak`; every known difference from Keycloak is listed in
//! `docs/fidelity/keycloak.md`.
//!
//! What it models (see `shared/reference/idp-admin-apis.md` §1 and the contract in `contracts/`):
//! - realms with the settings of `RealmRepresentation`, Keycloak's defaults and realm attributes
//!   (the `master` realm's access tokens last 60 s);
//! - clients (`ClientRepresentation`), internal UUIDs, attributes, default/optional client-scope
//!   links, realm-role scope mappings; built-in client scopes (`offline_access` carries the
//!   `offline_access` realm role as a scope mapping) and realm roles;
//! - the token endpoint: client authentication by HTTP Basic or form fields as
//!   `ClientIdAndSecretAuthenticator` does it (unknown or disabled client → 401 `invalid_client`,
//!   wrong secret → 401 `unauthorized_client`), the `client_credentials`, `password` and
//!   `refresh_token` grants, offline tokens, and refresh/offline lifetimes computed as
//!   `SessionExpirationUtils` does ([`session_deadlines`]); tokens are JWT-shaped (unsigned) so
//!   clients can read `exp`;
//! - admin role checks per call, as `ClientPermissions`/`RealmPermissions` without fine-grained
//!   permissions: `query-clients` may list clients but sees none (`200 []`), `view-clients` sees
//!   them with masked secrets, `manage-clients` may change them; `view-realm`/`manage-realm`;
//!   `realm-admin` holds all; a principal of `master` may manage other realms;
//! - request bodies bound as Keycloak's Jackson binds them: unknown field → 400
//!   `Unrecognized field "x" ...`, scalar coercions, `null` = not sent; every body is recorded and
//!   can be checked against the contract strictly
//!   ([`validate_recorded_bodies`](Harness::validate_recorded_bodies));
//! - `PUT /clients/{id}` as `ClientResource.update`: present non-null fields only, attributes
//!   merged key by key with blank values deleting, secret kept unless sent, authorization
//!   services off unless sent as `true`, URL validation (400 `invalid_input`), 409 on a clientId
//!   clash; `defaultClientScopes`/`optionalClientScopes` ignored (use the link endpoints);
//! - `PUT /admin/realms/{realm}` as `DefaultExportImportManager.updateRealm`: non-null top-level
//!   fields applied, `attributes` (when sent) replacing the realm's attributes, and the device
//!   authorization, CIBA and PAR settings always rewritten (defaults when not sent);
//! - collection URLs with a trailing slash, `first`/`max` paging, Keycloak's status codes and
//!   both error shapes (`{"error","error_description"}` and `{"errorMessage"}`).
//!
//! Test hooks: injectable latency, `fail_next` (5xx, 429 with `Retry-After`), throttling, token
//! expiry, a movable clock ([`SimHandle::advance_clock`]), request counters per (method, route
//! template, status), and direct state edits (drift).

#![recursion_limit = "256"]

pub mod schema;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};
use sim_kit::{CountRules, Harness, Listener, Observe, Recorded, Tokens, form_decode, lock};

pub use sim_kit::SandboxSeed;

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
            addr: sim_kit::LOOPBACK,
            latency: Duration::ZERO,
            path_prefix: String::new(),
        }
    }
}

/// Request counts by (method, route template, status). Route templates are relative to the path
/// prefix, e.g. `/admin/realms/{realm}/clients/{id}`.
pub type SimCounters = sim_kit::Counters<KeycloakRoutes>;

/// Keycloak's counting rules: token requests are [`TOKEN_ROUTE`], reads are `GET` and `HEAD`.
#[derive(Clone, Copy, Debug)]
pub struct KeycloakRoutes;

impl CountRules for KeycloakRoutes {
    const TOKEN_ROUTE: Option<&'static str> = Some(TOKEN_ROUTE);
}

/// Route template of the token endpoint.
pub const TOKEN_ROUTE: &str = "/realms/{realm}/protocol/openid-connect/token";

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
    protocol: String,
    attributes: Map<String, Value>,
    /// Realm roles in the scope's scope mappings (ids).
    realm_scope_mappings: Vec<String>,
}

impl ScopeState {
    fn json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "description": self.description,
               "protocol": self.protocol, "attributes": self.attributes})
    }
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
    /// Top-level fields of `RealmRepresentation` (not `attributes`).
    repr: Map<String, Value>,
    /// Realm attributes stored as such (CIBA, PAR and the rest); the attribute-backed top-level
    /// fields ([`MIRRORED_REALM_ATTRIBUTES`]) live in `repr` and are mirrored on read.
    attributes: BTreeMap<String, String>,
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
    /// The full representation: top-level fields and `attributes` (stored ones plus the
    /// attribute-backed top-level fields).
    fn full_json(&self) -> Value {
        let mut repr = self.repr.clone();
        let mut attrs: Map<String, Value> = self
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        for (k, default) in MIRRORED_REALM_ATTRIBUTES {
            let v = repr.get(k).and_then(Value::as_i64).unwrap_or(default);
            attrs.insert(k.into(), Value::String(v.to_string()));
        }
        repr.insert("attributes".into(), Value::Object(attrs));
        Value::Object(repr)
    }

    /// Replaces the whole state from a full representation (direct edits).
    fn set_full(&mut self, mut full: Map<String, Value>) {
        if let Some(Value::Object(attrs)) = full.remove("attributes") {
            self.attributes = attrs
                .into_iter()
                .filter(|(k, _)| !MIRRORED_REALM_ATTRIBUTES.iter().any(|(m, _)| m == k))
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect();
        }
        self.repr = full;
    }

    fn role_json(&self, r: &RoleState) -> Value {
        json!({"id": r.id, "name": r.name, "description": r.description, "composite": r.name.starts_with("default-roles-"),
               "clientRole": false, "containerId": str_field(&self.repr, "id")})
    }
    /// A client as `GET /clients/{id}` answers it to a caller with `access`: secrets are masked
    /// for callers who cannot manage clients, `access` is the caller's.
    fn client_json(&self, c: &ClientState, access: Access) -> Value {
        let mut repr = c.repr.clone();
        if !access.manage && repr.get("secret").is_some_and(|v| !v.is_null()) {
            repr.insert("secret".into(), json!(SECRET_MASK));
        }
        repr.insert(
            "access".into(),
            json!({"view": access.view, "configure": access.configure, "manage": access.manage}),
        );
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

/// What an access token grants: its realm and principal.
#[derive(Clone, Debug)]
struct Token {
    realm: String,
    principal: Principal,
}

/// A user session behind a refresh token (password grant), online or offline.
#[derive(Clone, Debug)]
struct Session {
    realm: String,
    client_id: String,
    username: String,
    offline: bool,
    started: Instant,
    last_refresh: Instant,
    /// The client session the token belongs to (shared by every token refreshed from it).
    client_session: u64,
    /// The refresh token's `jti` and `iat` (wall-clock seconds); set when it is issued.
    jti: String,
    iat: i64,
}

/// The refresh-token reuse state Keycloak keeps on a client session
/// (`AuthenticatedClientSessionModel`: current refresh token, its use count, timestamp).
#[derive(Clone, Debug, Default)]
struct ClientSession {
    current_refresh_token: Option<String>,
    use_count: u64,
    /// Wall-clock seconds of the sign-in or the last refresh.
    timestamp: i64,
    /// Detached from the user session after a failed reuse check: every token of it is dead.
    detached: bool,
}

struct SimState {
    realms: BTreeMap<String, RealmState>,
    tokens: Tokens<Token>,
    /// Refresh tokens → sessions.
    sessions: HashMap<String, Session>,
    /// Client sessions (reuse state) by id.
    client_sessions: HashMap<u64, ClientSession>,
    next_client_session: u64,
    sandbox: Option<(String, String)>,
    next_token: u64,
    ignore_client_updates: bool,
    /// Simulated time ahead of the real clock ([`SimHandle::advance_clock`]).
    clock_offset: Duration,
}

impl SimState {
    fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }
}

struct Inner {
    state: Mutex<SimState>,
    kit: Harness<KeycloakRoutes, RecordedBody>,
    prefix: String,
}

/// Handle to a running simulator. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

/// The test hooks every simulator shares (`counters`, `writes`, `reset_counters`,
/// `recorded_bodies`, `validate_recorded_bodies`, `set_latency`, `fail_next`, `set_throttle`,
/// `shutdown`):
/// scripted failures and throttling hit the admin API (paths under `/admin`) only, never the
/// token or discovery endpoints, and answer in Keycloak's `{"error","error_description"}` shape.
impl std::ops::Deref for SimHandle {
    type Target = Harness<KeycloakRoutes, RecordedBody>;

    fn deref(&self) -> &Self::Target {
        &self.inner.kit
    }
}

impl Recorded for RecordedBody {
    fn label(&self) -> String {
        format!("{} {} ({})", self.method, self.route, self.schema)
    }

    fn validate(&self) -> Result<(), Vec<String>> {
        validate_body(&self.schema, &self.body)
    }
}

/// Starts the simulator on the current tokio runtime. The `master` realm exists from the start.
pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = Listener::bind(config.addr).await?;
    let prefix = config.path_prefix.trim_end_matches('/').to_string();
    let prefix = if prefix.is_empty() || prefix.starts_with('/') {
        prefix
    } else {
        format!("/{prefix}")
    };
    let inner = Arc::new(Inner {
        state: Mutex::new(SimState {
            realms: BTreeMap::new(),
            tokens: Tokens::default(),
            sessions: HashMap::new(),
            client_sessions: HashMap::new(),
            next_client_session: 1,
            sandbox: None,
            next_token: 1,
            ignore_client_updates: false,
            clock_offset: Duration::ZERO,
        }),
        kit: Harness::new(format!("{}{prefix}", listener.base_url()), config.latency),
        prefix: prefix.clone(),
    });
    let handle = SimHandle { inner };
    handle.add_realm("master");
    let routes = routes(handle.inner.clone());
    let routes = if prefix.is_empty() {
        routes
    } else {
        Router::new().nest(&prefix, routes)
    };
    // The outer router only normalizes the path, then hands every request to the real one.
    let app = Router::new()
        .fallback_service(routes)
        .layer(middleware::map_request(strip_trailing_slash));
    handle.inner.kit.serve(listener, app);
    Ok(handle)
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Keycloak's realm defaults (`DefaultExportImportManager.importRealm`, reference §1.4) plus the
/// usual top-level fields of `GET /admin/realms/{realm}` in Keycloak 26. The `master` realm has
/// `accessTokenLifespan` 60 (`RealmManager.createAdminRealm`), so its admin tokens last a minute.
fn default_realm_repr(name: &str) -> Map<String, Value> {
    let master = name == "master";
    let v = json!({
        "id": if master { "master".to_string() } else { new_id() },
        "realm": name,
        "displayName": if master { "Keycloak".to_string() } else { name.to_string() },
        "notBefore": 0,
        "defaultSignatureAlgorithm": "RS256",
        "revokeRefreshToken": false,
        "refreshTokenMaxReuse": 0,
        "accessTokenLifespan": if master { 60 } else { 300 },
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
        "actionTokenGeneratedByAdminLifespan": 43200,
        "actionTokenGeneratedByUserLifespan": 300,
        "oauth2DeviceCodeLifespan": DEVICE_CODE_LIFESPAN_DEFAULT,
        "oauth2DevicePollingInterval": DEVICE_POLLING_INTERVAL_DEFAULT,
        "enabled": true,
        "sslRequired": "external",
        "registrationAllowed": false,
        "registrationEmailAsUsername": false,
        "rememberMe": false,
        "verifyEmail": false,
        "loginWithEmailAllowed": true,
        "duplicateEmailsAllowed": false,
        "resetPasswordAllowed": false,
        "editUsernameAllowed": false,
        "bruteForceProtected": false,
        "permanentLockout": false,
        "maxTemporaryLockouts": 0,
        "bruteForceStrategy": "MULTIPLE",
        "maxFailureWaitSeconds": 900,
        "minimumQuickLoginWaitSeconds": 60,
        "waitIncrementSeconds": 60,
        "quickLoginCheckMilliSeconds": 1000,
        "maxDeltaTimeSeconds": 43200,
        "failureFactor": 30,
        "eventsEnabled": false,
        "eventsListeners": ["jboss-logging"],
        "enabledEventTypes": [],
        "adminEventsEnabled": false,
        "adminEventsDetailsEnabled": false,
        "internationalizationEnabled": false,
        "organizationsEnabled": false,
        "adminPermissionsEnabled": false,
        "verifiableCredentialsEnabled": false,
        "browserFlow": "browser",
        "registrationFlow": "registration",
        "directGrantFlow": "direct grant",
        "resetCredentialsFlow": "reset credentials",
        "clientAuthenticationFlow": "clients",
        "dockerAuthenticationFlow": "docker auth",
        "firstBrokerLoginFlow": "first broker login",
        "defaultRole": {"name": format!("default-roles-{name}"), "description": "${role_default-roles}",
                        "composite": true, "clientRole": false},
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Realm attributes of a new realm (besides the mirrored top-level fields).
fn default_realm_attributes() -> BTreeMap<String, String> {
    [
        (CIBA_DELIVERY_MODE, CIBA_DELIVERY_MODE_DEFAULT.to_string()),
        (CIBA_EXPIRES_IN, CIBA_EXPIRES_IN_DEFAULT.to_string()),
        (CIBA_INTERVAL, CIBA_INTERVAL_DEFAULT.to_string()),
        (CIBA_USER_HINT, CIBA_USER_HINT_DEFAULT.to_string()),
        (PAR_LIFESPAN, PAR_LIFESPAN_DEFAULT.to_string()),
        ("realmReusableOtpCode", "false".to_string()),
        ("frontendUrl", String::new()),
        ("acr.loa.map", "{}".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

// Realm attribute names and defaults (`CibaConfig`, `ParConfig`, `OAuth2DeviceConfig`).
const CIBA_DELIVERY_MODE: &str = "cibaBackchannelTokenDeliveryMode";
const CIBA_DELIVERY_MODE_DEFAULT: &str = "poll";
const CIBA_EXPIRES_IN: &str = "cibaExpiresIn";
const CIBA_EXPIRES_IN_DEFAULT: i64 = 120;
const CIBA_INTERVAL: &str = "cibaInterval";
const CIBA_INTERVAL_DEFAULT: i64 = 5;
const CIBA_USER_HINT: &str = "cibaAuthRequestedUserHint";
const CIBA_USER_HINT_DEFAULT: &str = "login_hint";
const PAR_LIFESPAN: &str = "parRequestUriLifespan";
const PAR_LIFESPAN_DEFAULT: i64 = 60;
const DEVICE_CODE_LIFESPAN: &str = "oauth2DeviceCodeLifespan";
const DEVICE_CODE_LIFESPAN_DEFAULT: i64 = 600;
const DEVICE_POLLING_INTERVAL: &str = "oauth2DevicePollingInterval";
const DEVICE_POLLING_INTERVAL_DEFAULT: i64 = 5;

/// Top-level realm fields that the JPA store keeps as realm attributes and `GET` therefore also
/// lists under `attributes` (not in `ModelToRepresentation.REALM_EXCLUDED_ATTRIBUTES`), with the
/// value they fall back to when the attribute is removed.
const MIRRORED_REALM_ATTRIBUTES: [(&str, i64); 6] = [
    ("clientSessionIdleTimeout", 0),
    ("clientSessionMaxLifespan", 0),
    ("clientOfflineSessionIdleTimeout", 0),
    ("clientOfflineSessionMaxLifespan", 0),
    (DEVICE_CODE_LIFESPAN, DEVICE_CODE_LIFESPAN_DEFAULT),
    (DEVICE_POLLING_INTERVAL, DEVICE_POLLING_INTERVAL_DEFAULT),
];

/// Realm attributes a `PUT` with `attributes` never removes
/// (`ModelToRepresentation.REALM_EXCLUDED_ATTRIBUTES`, the part of it that can be stored).
const EXCLUDED_REALM_ATTRIBUTES: [&str; 8] = [
    "displayName",
    "displayNameHtml",
    "defaultSignatureAlgorithm",
    "offlineSessionMaxLifespanEnabled",
    "offlineSessionMaxLifespan",
    "actionTokenGeneratedByAdminLifespan",
    "actionTokenGeneratedByUserLifespan",
    "organizationsEnabled",
];

/// What `StripSecretsUtils` shows instead of a secret.
const SECRET_MASK: &str = "**********";

/// An admin's rights on clients, as `ClientPermissions.getAccess` reports them.
#[derive(Clone, Copy, Debug)]
struct Access {
    view: bool,
    configure: bool,
    manage: bool,
}

impl Access {
    const FULL: Access = Access {
        view: true,
        configure: true,
        manage: true,
    };
}

/// A client as Keycloak 24–26 creates it from the admin console ("OpenID Connect", client
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
        "authorizationServicesEnabled": false
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
        self.inner.kit.base_url().to_string()
    }

    /// Creates a realm with Keycloak's defaults, its built-in client scopes and realm roles, and
    /// the public `admin-cli` client (password grant). No-op if it exists.
    pub fn add_realm(&self, name: &str) {
        let mut st = self.state();
        if st.realms.contains_key(name) {
            return;
        }
        let roles: Vec<RoleState> = ["offline_access", "uma_authorization"]
            .iter()
            .map(|n| n.to_string())
            .chain([format!("default-roles-{name}")])
            .map(|n| RoleState {
                id: new_id(),
                description: format!("${{role_{}}}", n.replace('_', "-")),
                name: n,
            })
            .collect();
        let offline_role = roles[0].id.clone();
        let scopes = BUILTIN_SCOPES
            .iter()
            .map(|(n, _)| {
                let (description, token_scope, consent, text) = match *n {
                    "acr" => ("OpenID Connect scope for add acr (authentication context class reference) to the token", "false", "false", None),
                    "basic" => ("OpenID Connect scope for add all basic claims to the token", "false", "false", None),
                    "microprofile-jwt" => ("Microprofile - JWT built-in scope", "true", "false", None),
                    "offline_access" => ("OpenID Connect built-in scope: offline_access", "", "true", Some("${offlineAccessScopeConsentText}")),
                    "roles" => ("OpenID Connect scope for add user roles to the access token", "false", "true", Some("${rolesScopeConsentText}")),
                    "web-origins" => ("OpenID Connect scope for add allowed web origins to the access token", "false", "false", Some("")),
                    "address" => ("OpenID Connect built-in scope: address", "true", "true", Some("${addressScopeConsentText}")),
                    "email" => ("OpenID Connect built-in scope: email", "true", "true", Some("${emailScopeConsentText}")),
                    "phone" => ("OpenID Connect built-in scope: phone", "true", "true", Some("${phoneScopeConsentText}")),
                    _ => ("OpenID Connect built-in scope: profile", "true", "true", Some("${profileScopeConsentText}")),
                };
                let mut attributes = Map::new();
                if !token_scope.is_empty() {
                    attributes.insert("include.in.token.scope".into(), json!(token_scope));
                }
                attributes.insert("display.on.consent.screen".into(), json!(consent));
                if let Some(t) = text {
                    attributes.insert("consent.screen.text".into(), json!(t));
                }
                ScopeState {
                    id: new_id(),
                    name: n.to_string(),
                    description: description.to_string(),
                    protocol: "openid-connect".into(),
                    attributes,
                    // The built-in offline_access scope carries the offline_access realm role.
                    realm_scope_mappings: if *n == "offline_access" {
                        vec![offline_role.clone()]
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        let realm = RealmState {
            repr: default_realm_repr(name),
            attributes: default_realm_attributes(),
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
        Some(r.client_json(&c, Access::FULL))
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

    /// A realm's full representation (as `GET /admin/realms/{realm}` answers a realm admin).
    pub fn realm(&self, name: &str) -> Option<Value> {
        self.state().realms.get(name).map(RealmState::full_json)
    }

    /// Edits a realm's representation directly (drift). `attributes` in the map are the realm
    /// attributes, as in the representation.
    pub fn update_realm(&self, name: &str, f: impl FnOnce(&mut Map<String, Value>)) {
        if let Some(r) = self.state().realms.get_mut(name) {
            let Value::Object(mut full) = r.full_json() else {
                return;
            };
            f(&mut full);
            r.set_full(full);
        }
    }

    /// Sets (or, with `None`, removes) an attribute of a client scope, e.g.
    /// `include.in.openid.provider.metadata`.
    pub fn set_client_scope_attribute(
        &self,
        realm: &str,
        scope: &str,
        key: &str,
        value: Option<&str>,
    ) {
        if let Some(sc) = self
            .state()
            .realms
            .get_mut(realm)
            .and_then(|r| r.scopes.iter_mut().find(|s| s.name == scope))
        {
            match value {
                Some(v) => {
                    sc.attributes.insert(key.into(), json!(v));
                }
                None => {
                    sc.attributes.remove(key);
                }
            }
        }
    }

    /// Replaces the realm roles in a client scope's own scope mappings (by role name; unknown
    /// names are skipped), e.g. an `offline_access` scope stripped of its role.
    pub fn set_client_scope_realm_roles(&self, realm: &str, scope: &str, roles: &[&str]) {
        let mut st = self.state();
        let Some(r) = st.realms.get_mut(realm) else {
            return;
        };
        let ids: Vec<String> = roles
            .iter()
            .filter_map(|n| r.roles.iter().find(|x| x.name == *n).map(|x| x.id.clone()))
            .collect();
        if let Some(sc) = r.scopes.iter_mut().find(|s| s.name == scope) {
            sc.realm_scope_mappings = ids;
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
        let mut st = self.state();
        let now = st.now();
        st.tokens.expire_all(now);
    }

    /// Number of tokens issued and not yet expired.
    pub fn live_tokens(&self) -> usize {
        let st = self.state();
        let now = st.now();
        st.tokens.live_count(now)
    }

    /// Moves the simulator's clock forward: access tokens, refresh tokens and sessions expire as
    /// if `d` had passed.
    pub fn advance_clock(&self, d: Duration) {
        self.state().clock_offset += d;
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
        let scope_carries = {
            let st = self.state();
            st.realms.get(realm).is_some_and(|r| {
                let role = r.roles.iter().find(|x| x.name == "offline_access");
                r.scopes.iter().any(|s| {
                    s.name == "offline_access"
                        && role.is_some_and(|x| s.realm_scope_mappings.contains(&x.id))
                })
            })
        };
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
            (
                "offline_access role in the offline_access client scope".into(),
                if scope_carries { "yes" } else { "no" }.into(),
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

    /// When on, `PUT /clients/{id}` answers 204 but stores nothing (as a client policy or a
    /// faulty proxy might), so a client can prove it reads back after writing.
    pub fn ignore_client_updates(&self, on: bool) {
        self.state().ignore_client_updates = on;
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
pub const ROUTES: [&str; 19] = [
    TOKEN_ROUTE,
    "/realms/{realm}/.well-known/openid-configuration",
    "/admin/realms",
    "/admin/realms/{realm}",
    "/admin/realms/{realm}/clients",
    "/admin/realms/{realm}/clients/{id}",
    "/admin/realms/{realm}/clients/{id}/default-client-scopes",
    "/admin/realms/{realm}/clients/{id}/optional-client-scopes",
    "/admin/realms/{realm}/clients/{id}/default-client-scopes/{scope}",
    "/admin/realms/{realm}/clients/{id}/optional-client-scopes/{scope}",
    "/admin/realms/{realm}/clients/{id}/scope-mappings/realm",
    "/admin/realms/{realm}/clients/{id}/scope-mappings/realm/composite",
    "/admin/realms/{realm}/clients/{id}/scope-mappings/realm/available",
    "/admin/realms/{realm}/client-scopes",
    "/admin/realms/{realm}/client-scopes/{id}",
    "/admin/realms/{realm}/client-scopes/{id}/scope-mappings/realm",
    "/admin/realms/{realm}/roles",
    "/admin/realms/{realm}/roles/{name}",
    "/admin/realms/{realm}/clients/{id}/service-account-user",
];

/// The route template a path matches, or `<unmatched>`. A trailing slash is ignored, as by
/// Keycloak (RESTEasy matches `.../clients/` like `.../clients`).
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
    let routes = Router::new()
        .route(TOKEN_ROUTE, post(token))
        .route(
            "/realms/{realm}/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/admin/realms", get(list_realms))
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
            get(|s, p, h| get_mappings(s, p, h, MappingView::Explicit))
                .post(|s, p, h, b| change_mappings(s, p, h, b, true))
                .delete(|s, p, h, b| change_mappings(s, p, h, b, false)),
        )
        .route(
            "/admin/realms/{realm}/clients/{id}/scope-mappings/realm/composite",
            get(|s, p, h| get_mappings(s, p, h, MappingView::Effective)),
        )
        .route(
            "/admin/realms/{realm}/clients/{id}/scope-mappings/realm/available",
            get(|s, p, h| get_mappings(s, p, h, MappingView::Available)),
        )
        .route(
            "/admin/realms/{realm}/clients/{id}/service-account-user",
            get(service_account_user),
        )
        .route("/admin/realms/{realm}/client-scopes", get(list_scopes))
        .route("/admin/realms/{realm}/client-scopes/{id}", get(get_scope))
        .route(
            "/admin/realms/{realm}/client-scopes/{id}/scope-mappings/realm",
            get(get_scope_mappings),
        )
        .route("/admin/realms/{realm}/roles", get(list_roles))
        .route("/admin/realms/{realm}/roles/{name}", get(get_role))
        .fallback(|| async {
            keycloak_error(
                StatusCode::NOT_FOUND,
                "RESTEASY003210: Could not find resource",
                None,
            )
        })
        .with_state(sim.clone());
    observed(&sim).apply(routes)
}

/// Drops trailing slashes from the path before routing (`/admin/realms/x/clients/` is
/// `/admin/realms/x/clients` to Keycloak; the official admin client sends the former).
async fn strip_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let pq = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

/// Latency, failure injection (admin API only, in Keycloak's error shape) and counters around
/// every call.
fn observed(sim: &Sim) -> Observe {
    let prefix = sim.prefix.clone();
    sim.kit
        .observe(move |path| {
            // A nested router already sees the path without the prefix.
            route_template(
                path.strip_prefix(prefix.as_str())
                    .filter(|r| !prefix.is_empty() && r.starts_with('/'))
                    .unwrap_or(path),
            )
        })
        .faults_on(|route| route.starts_with("/admin/"))
        .fault_answer(|status| {
            keycloak_error(
                status,
                "unknown_error",
                Some(status.canonical_reason().unwrap_or("injected failure")),
            )
        })
}

/// The caller of an admin call: its realm-management roles for the target realm.
///
/// Mirrors Keycloak's `ClientPermissions`/`RealmPermissions` without fine-grained permissions:
/// `canManage` = `manage-clients`; `canView` = `canManage` or `view-clients`; `canList` =
/// `canView` or `query-clients`; realm view/manage likewise; `realm-admin` holds them all.
struct Caller {
    roles: BTreeSet<String>,
}

impl Caller {
    fn has(&self, role: &str) -> bool {
        self.roles.contains("realm-admin") || self.roles.contains(role)
    }
    fn manage_clients(&self) -> bool {
        self.has("manage-clients")
    }
    fn view_clients(&self) -> bool {
        self.manage_clients() || self.has("view-clients")
    }
    fn list_clients(&self) -> bool {
        self.view_clients() || self.has("query-clients")
    }
    fn manage_realm(&self) -> bool {
        self.has("manage-realm")
    }
    fn view_realm(&self) -> bool {
        self.manage_realm() || self.has("view-realm")
    }
    fn any(&self) -> bool {
        !self.roles.is_empty()
    }
    fn access(&self) -> Access {
        Access {
            view: self.view_clients(),
            configure: self.manage_clients(),
            manage: self.manage_clients(),
        }
    }
}

fn forbidden() -> Response {
    keycloak_error(StatusCode::FORBIDDEN, "HTTP 403 Forbidden", None)
}

fn unauthorized() -> Response {
    keycloak_error(StatusCode::UNAUTHORIZED, "HTTP 401 Unauthorized", None)
}

/// The access token of the `Authorization` header as Keycloak's
/// `AppAuthManager.extractTokenStringFromAuthHeader` reads it: the value trimmed, split at runs
/// of whitespace into exactly two parts, the first `Bearer` in any case.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    // Java's `String.trim` and `\s` (space, \t, \n, \x0B, \f, \r).
    let java_space = |c: char| c.is_ascii_whitespace() || c == '\x0B';
    let mut parts = value
        .trim_matches(|c: char| c <= ' ')
        .split(java_space)
        .filter(|p| !p.is_empty());
    let (scheme, token) = (parts.next()?, parts.next()?);
    (parts.next().is_none() && scheme.eq_ignore_ascii_case("bearer")).then_some(token)
}

/// Checks the bearer token and the realm's existence; returns the caller's roles for `realm`.
/// A token of a realm other than `master` only works on its own realm (403 elsewhere).
#[allow(clippy::result_large_err)] // the error is the HTTP answer, returned at once
fn authenticate(st: &SimState, headers: &HeaderMap, realm: &str) -> Result<Caller, Response> {
    let token = bearer_token(headers);
    let now = st.now();
    let Some(t) = token.and_then(|t| st.tokens.live(t, now)).cloned() else {
        return Err(unauthorized());
    };
    let Some(auth_realm) = st.realms.get(&t.realm) else {
        return Err(unauthorized());
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
        return Err(realm_not_found());
    }
    if t.realm != "master" && t.realm != realm {
        return Err(forbidden());
    }
    let roles: BTreeSet<String> = grants
        .into_iter()
        .filter(|(target, _)| target == realm)
        .map(|(_, r)| r)
        .collect();
    Ok(Caller { roles })
}

macro_rules! caller_or_return {
    ($st:expr, $headers:expr, $realm:expr) => {
        match authenticate($st, $headers, $realm) {
            Ok(c) => c,
            Err(resp) => return resp,
        }
    };
}

macro_rules! require {
    ($cond:expr) => {
        if !$cond {
            return forbidden();
        }
    };
}

/// Parses a JSON body, records it, and binds it to the representation as Keycloak's Jackson does
/// (unknown field → 400, coercions). `Err` is the 400 answer.
#[allow(clippy::result_large_err)] // the error is the HTTP answer, returned at once
fn read_body(
    sim: &Inner,
    method: &Method,
    route: &str,
    schema: &str,
    bytes: &Bytes,
) -> Result<Value, Response> {
    read_body_known(sim, method, route, schema, bytes, &[])
}

/// [`read_body`] for a representation whose stored form carries the top-level properties
/// `also_known` (the simulated server knows them: it returned them).
#[allow(clippy::result_large_err)] // the error is the HTTP answer, returned at once
fn read_body_known(
    sim: &Inner,
    method: &Method,
    route: &str,
    schema: &str,
    bytes: &Bytes,
    also_known: &[String],
) -> Result<Value, Response> {
    let parsed: Result<Value, _> = serde_json::from_slice(bytes);
    let body = match &parsed {
        Ok(v) => v.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
    };
    sim.kit.record(RecordedBody {
        method: method.to_string(),
        route: route.to_string(),
        schema: schema.to_string(),
        body: body.clone(),
    });
    if let Err(e) = parsed {
        return Err(keycloak_error(
            StatusCode::BAD_REQUEST,
            &format!("Unexpected character or end of input: {e}"),
            None,
        ));
    }
    let bound = match schema.strip_suffix("[]") {
        Some(item) => schema::contract().bind_array(item, &body),
        None => schema::contract().bind_known(schema, &body, also_known),
    };
    bound.map_err(|msg| keycloak_error(StatusCode::BAD_REQUEST, &msg, None))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// base64url without padding.
fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT-shaped token (unsigned: the simulator keeps the tokens it issued), so that clients that
/// read `exp` (the official admin client refreshes on it) behave as against Keycloak.
fn jwt(claims: &Value) -> String {
    format!(
        "{}.{}.{}",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(claims.to_string().as_bytes()),
        base64url(new_id().as_bytes())
    )
}

/// Decodes standard base64 (padding optional).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.trim().bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))` as RFC 6749 §2.3.1 (and
/// Keycloak's `BasicAuthHelper.RFC6749`) reads it.
fn parse_basic(header_value: &str) -> Option<(String, String)> {
    let (scheme, rest) = header_value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = String::from_utf8(base64_decode(rest)?).ok()?;
    let (id, secret) = raw.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    keycloak_error(status, error, Some(description))
}

fn client_attr_secs(c: &Map<String, Value>, key: &str) -> i64 {
    c.get("attributes")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(-1)
}

fn realm_secs(r: &Map<String, Value>, key: &str) -> i64 {
    r.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// When a refresh token of a session stops working, as `SessionExpirationUtils` computes it for
/// Keycloak 24–26 (user session and client session, idle and max), in seconds from now:
/// `(idle deadline, max deadline)`, `None` for a max that does not exist. The realm and client
/// are their JSON representations. Remember-me is not modelled.
///
/// Online: idle is the client attribute `client.session.idle.timeout` if positive, else the realm's
/// `clientSessionIdleTimeout` if positive, else `ssoSessionIdleTimeout`, capped by the user
/// session's `ssoSessionIdleTimeout`; max likewise with `client.session.max.lifespan`,
/// `clientSessionMaxLifespan` and `ssoSessionMaxLifespan`.
///
/// Offline: idle is `client.offline.session.idle.timeout` if positive, else
/// `clientOfflineSessionIdleTimeout` if positive, else `offlineSessionIdleTimeout`, capped by
/// `offlineSessionIdleTimeout`. A max exists when the realm's `offlineSessionMaxLifespanEnabled`
/// is on, or when the client attribute `client.offline.session.max.lifespan` is positive: it is
/// that attribute, else `clientOfflineSessionMaxLifespan` if positive, else
/// `offlineSessionMaxLifespan`; when the realm switch is on it is also capped by the user
/// session's `offlineSessionMaxLifespan`.
pub fn session_deadlines(
    realm: &Value,
    client: &Value,
    offline: bool,
    started_secs_ago: u64,
    idle_secs_ago: u64,
) -> (i64, Option<i64>) {
    let empty = Map::new();
    let r = realm.as_object().unwrap_or(&empty);
    let c = client.as_object().unwrap_or(&empty);
    let or_default = |v: i64, d: i64| if v <= 0 { d } else { v };
    let started = -(started_secs_ago as i64);
    let last = -(idle_secs_ago as i64);
    if offline {
        let user_idle = or_default(realm_secs(r, "offlineSessionIdleTimeout"), 2_592_000);
        let attr = client_attr_secs(c, "client.offline.session.idle.timeout");
        let realm_client = realm_secs(r, "clientOfflineSessionIdleTimeout");
        let client_idle = if attr > 0 {
            attr
        } else if realm_client > 0 {
            realm_client
        } else {
            user_idle
        };
        let idle = last + user_idle.min(client_idle);
        let enabled = r
            .get("offlineSessionMaxLifespanEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let user_max = or_default(realm_secs(r, "offlineSessionMaxLifespan"), 5_184_000);
        let attr = client_attr_secs(c, "client.offline.session.max.lifespan");
        let max = if enabled || attr > 0 {
            let realm_client = realm_secs(r, "clientOfflineSessionMaxLifespan");
            let client_max = if attr > 0 {
                attr
            } else if realm_client > 0 {
                realm_client
            } else {
                user_max
            };
            let mut m = started + client_max;
            if enabled {
                m = m.min(started + user_max);
            }
            Some(m)
        } else {
            None
        };
        (idle, max)
    } else {
        let user_idle = or_default(realm_secs(r, "ssoSessionIdleTimeout"), 1800);
        let attr = client_attr_secs(c, "client.session.idle.timeout");
        let realm_client = realm_secs(r, "clientSessionIdleTimeout");
        let client_idle = if attr > 0 {
            attr
        } else if realm_client > 0 {
            realm_client
        } else {
            user_idle
        };
        let user_max = or_default(realm_secs(r, "ssoSessionMaxLifespan"), 36_000);
        let attr = client_attr_secs(c, "client.session.max.lifespan");
        let realm_client = realm_secs(r, "clientSessionMaxLifespan");
        let client_max = if attr > 0 {
            attr
        } else if realm_client > 0 {
            realm_client
        } else {
            user_max
        };
        (
            last + user_idle.min(client_idle),
            Some(started + user_max.min(client_max)),
        )
    }
}

/// `refresh_expires_in` for a session: seconds to the earlier deadline; 0 for an offline session
/// without a max (its refresh token carries no `exp`, keycloak/keycloak#48063).
fn refresh_expires_in(deadlines: (i64, Option<i64>), offline: bool) -> i64 {
    match deadlines {
        (_, None) if offline => 0,
        (idle, None) => idle.max(0),
        (idle, Some(max)) => idle.min(max).max(0),
    }
}

async fn token(
    State(sim): State<Sim>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let mut st = lock(&sim.state);
    let now = st.now();
    let Some(r) = st.realms.get(&realm) else {
        return keycloak_error(StatusCode::NOT_FOUND, "Realm does not exist", None);
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let grant = field("grant_type");
    if grant.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing form parameter: grant_type",
        );
    }
    if !matches!(grant, "client_credentials" | "password" | "refresh_token") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant_type",
        );
    }
    // Client authentication (ClientIdAndSecretAuthenticator): Basic header, then form fields.
    let auth_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let mut client_id: Option<String> = None;
    let mut secret: Option<String> = None;
    if let Some(h) = auth_header {
        match parse_basic(h) {
            Some((id, s)) => {
                client_id = Some(id);
                secret = Some(s);
            }
            None if !form.contains_key("client_id") => {
                let mut resp = StatusCode::UNAUTHORIZED.into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                return resp;
            }
            None => {}
        }
    }
    if let Some(id) = form.get("client_id") {
        client_id = Some(id.clone());
    }
    if let Some(s) = form.get("client_secret") {
        secret = Some(s.clone());
    }
    let Some(client_id) = client_id else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "Missing client_id parameter",
        );
    };
    let bad_client = || {
        oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        )
    };
    let bad_secret = || {
        oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        )
    };
    let Some(c) = r
        .clients
        .iter()
        .find(|c| str_field(&c.repr, "clientId") == client_id)
    else {
        return bad_client();
    };
    let flag = |k: &str| c.repr.get(k).and_then(Value::as_bool) == Some(true);
    if c.repr.get("enabled").and_then(Value::as_bool) == Some(false) {
        return bad_client();
    }
    let public = flag("publicClient");
    if !public {
        let Some(given) = secret.as_deref() else {
            return bad_secret();
        };
        match c.repr.get("secret").and_then(Value::as_str) {
            Some(s) if s == given => {}
            _ => return bad_secret(),
        }
    }
    if flag("bearerOnly") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "Bearer-only not allowed",
        );
    }
    let client = c.clone();
    let use_refresh = client
        .repr
        .get("attributes")
        .and_then(|a| a.get("use.refresh.tokens"))
        .and_then(Value::as_str)
        .map(|v| v != "false")
        .unwrap_or(true);
    let realm_repr = Value::Object(r.repr.clone());
    let access_lifespan = {
        let attr = client_attr_secs(&client.repr, "access.token.lifespan");
        if attr > 0 {
            attr as u64
        } else {
            r.repr
                .get("accessTokenLifespan")
                .and_then(Value::as_u64)
                .unwrap_or(300)
        }
    };
    let requested: Vec<String> = field("scope")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let linked = |name: &str| {
        r.scopes.iter().find(|s| s.name == name).is_some_and(|s| {
            client.default_scopes.contains(&s.id) || client.optional_scopes.contains(&s.id)
        })
    };
    let scope_out = {
        let mut names: Vec<String> = client
            .default_scopes
            .iter()
            .filter_map(|id| r.scopes.iter().find(|s| s.id == *id))
            .filter(|s| {
                s.attributes
                    .get("include.in.token.scope")
                    .and_then(Value::as_str)
                    != Some("false")
            })
            .map(|s| s.name.clone())
            .collect();
        for q in &requested {
            if q != "openid" && !names.contains(q) && linked(q) {
                names.push(q.clone());
            }
        }
        if requested.iter().any(|q| q == "openid") {
            names.insert(0, "openid".into());
        }
        names.join(" ")
    };
    let (principal, session) = match grant {
        "client_credentials" => {
            if public {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized_client",
                    "Public client not allowed to retrieve service account",
                );
            }
            if !flag("serviceAccountsEnabled") {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized_client",
                    "Client not enabled to retrieve service account",
                );
            }
            (Principal::ServiceAccount(client_id.clone()), None)
        }
        "password" => {
            if !flag("directAccessGrantsEnabled") {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    "Client not allowed for direct access grants",
                );
            }
            if let Some(bad) = requested.iter().find(|q| *q != "openid" && !linked(q)) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    &format!("Invalid scopes: {bad}"),
                );
            }
            let ok = r
                .users
                .iter()
                .any(|u| u.username == field("username") && u.password == field("password"));
            if !ok {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    "Invalid user credentials",
                );
            }
            let offline = requested.iter().any(|q| q == "offline_access");
            if offline {
                // The offline_access role must be in the client's scope: full scope, a realm
                // scope mapping of the client, or the scope mapping of the requested
                // offline_access client scope (the built-in one carries it).
                let role = r
                    .roles
                    .iter()
                    .find(|x| x.name == "offline_access")
                    .map(|x| x.id.clone());
                let in_scope = flag("fullScopeAllowed")
                    || role.as_ref().is_some_and(|rid| {
                        client.realm_scope_mappings.contains(rid)
                            || r.scopes
                                .iter()
                                .find(|s| s.name == "offline_access")
                                .is_some_and(|s| s.realm_scope_mappings.contains(rid))
                    });
                if !in_scope || role.is_none() {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "not_allowed",
                        "Offline tokens not allowed for the user or client",
                    );
                }
            }
            let session = use_refresh.then(|| {
                let id = st.next_client_session;
                st.next_client_session += 1;
                let timestamp = unix_now() + st.clock_offset.as_secs() as i64;
                st.client_sessions.insert(
                    id,
                    ClientSession {
                        timestamp,
                        ..ClientSession::default()
                    },
                );
                Session {
                    realm: realm.clone(),
                    client_id: client_id.clone(),
                    username: field("username").to_string(),
                    offline,
                    started: now,
                    last_refresh: now,
                    client_session: id,
                    jti: String::new(),
                    iat: 0,
                }
            });
            (Principal::User(field("username").to_string()), session)
        }
        _ => {
            let rt = field("refresh_token");
            let Some(s) = st.sessions.get(rt).cloned() else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Invalid refresh token",
                );
            };
            if s.realm != realm || s.client_id != client_id {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Invalid refresh token. Token client and authorized client don't match",
                );
            }
            let secs = |t: Instant| now.saturating_duration_since(t).as_secs();
            let (idle, max) = session_deadlines(
                &realm_repr,
                &Value::Object(client.repr.clone()),
                s.offline,
                secs(s.started),
                secs(s.last_refresh),
            );
            if idle <= 0 || max.is_some_and(|m| m <= 0) {
                st.sessions.remove(rt);
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Token is not active",
                );
            }
            // TokenManager.validateToken: a client session detached after a failed reuse check
            // is gone for every token of it.
            if st
                .client_sessions
                .get(&s.client_session)
                .is_none_or(|c| c.detached)
            {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Session doesn't have required client",
                );
            }
            // TokenManager.validateTokenReuseForRefresh / validateTokenReuse: with
            // revokeRefreshToken the client session remembers the current refresh token and how
            // often it was used; a token other than the current one issued before the last
            // refresh is stale, and a use fails once the earlier uses of the current token
            // exceed refreshTokenMaxReuse (0: one use in all). A failure detaches the client
            // session, ending every token of it.
            let wall_now = unix_now() + st.clock_offset.as_secs() as i64;
            let rotate = realm_repr
                .get("revokeRefreshToken")
                .and_then(Value::as_bool)
                == Some(true);
            let max_reuse = realm_repr
                .get("refreshTokenMaxReuse")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let cs = st
                .client_sessions
                .get_mut(&s.client_session)
                .expect("checked above");
            if rotate {
                let current = cs.current_refresh_token.as_deref();
                let refused = if current.is_some_and(|c| c != s.jti) && s.iat < cs.timestamp {
                    Some("Stale token")
                } else {
                    if current != Some(s.jti.as_str()) {
                        cs.current_refresh_token = Some(s.jti.clone());
                        cs.use_count = 0;
                    }
                    (cs.use_count > max_reuse)
                        .then_some("Maximum allowed refresh token reuse exceeded")
                };
                if let Some(description) = refused {
                    cs.detached = true;
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description);
                }
                cs.use_count += 1;
            }
            cs.timestamp = wall_now;
            if let Some(s) = st.sessions.get_mut(rt) {
                s.last_refresh = now;
            }
            let mut s = s;
            s.last_refresh = now;
            (Principal::User(s.username.clone()), Some(s))
        }
    };
    let n = st.next_token;
    st.next_token += 1;
    let issuer = format!("{}/realms/{realm}", sim.kit.base_url());
    let wall = unix_now() + st.clock_offset.as_secs() as i64;
    let subject = match &principal {
        Principal::ServiceAccount(cid) => format!("service-account-{}", cid.to_lowercase()),
        Principal::User(u) => u.clone(),
    };
    let access_token = jwt(&json!({
        "exp": wall + access_lifespan as i64, "iat": wall, "jti": new_id(), "iss": issuer,
        "typ": "Bearer", "azp": client_id, "preferred_username": subject, "scope": scope_out,
    }));
    st.tokens.insert(
        access_token.clone(),
        Token {
            realm: realm.clone(),
            principal,
        },
        now + Duration::from_secs(access_lifespan),
        now,
    );
    let mut out = json!({
        "access_token": access_token,
        "expires_in": access_lifespan,
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": scope_out,
    });
    if let Some(s) = session {
        let deadlines = session_deadlines(
            &realm_repr,
            &Value::Object(client.repr.clone()),
            s.offline,
            0,
            0,
        );
        let mut claims = json!({"iat": wall, "jti": new_id(), "iss": issuer, "azp": client_id,
            "typ": if s.offline { "Offline" } else { "Refresh" }, "sid": n});
        let expires_in = refresh_expires_in(deadlines, s.offline);
        if expires_in > 0 {
            claims["exp"] = json!(wall + expires_in);
        }
        let refresh_token = jwt(&claims);
        out["refresh_token"] = json!(refresh_token);
        out["refresh_expires_in"] = json!(expires_in);
        out["session_state"] = json!(new_id());
        let mut s = s;
        s.jti = claims["jti"].as_str().unwrap_or_default().to_string();
        s.iat = wall;
        st.sessions.insert(refresh_token, s);
    }
    axum::Json(out).into_response()
}

async fn discovery(State(sim): State<Sim>, Path(realm): Path<String>) -> Response {
    let st = lock(&sim.state);
    let Some(r) = st.realms.get(&realm) else {
        return keycloak_error(StatusCode::NOT_FOUND, "Realm does not exist", None);
    };
    let issuer = format!("{}/realms/{realm}", sim.kit.base_url());
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
    // OIDCWellKnownProvider: the realm's OIDC client scopes whose
    // `include.in.openid.provider.metadata` attribute is not "false".
    let mut scopes = vec!["openid".to_string()];
    scopes.extend(
        r.scopes
            .iter()
            .filter(|s| s.protocol == "openid-connect")
            .filter(|s| {
                s.attributes
                    .get("include.in.openid.provider.metadata")
                    .and_then(Value::as_str)
                    != Some("false")
            })
            .map(|s| s.name.clone()),
    );
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{oidc}/auth"),
        "token_endpoint": format!("{oidc}/token"),
        "introspection_endpoint": format!("{oidc}/token/introspect"),
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

async fn list_realms(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    let st = lock(&sim.state);
    let names: Vec<String> = st.realms.keys().cloned().collect();
    let mut out = Vec::new();
    let mut authenticated = false;
    for name in names {
        match authenticate(&st, &headers, &name) {
            Ok(caller) => {
                authenticated = true;
                let r = &st.realms[&name];
                if caller.view_realm() {
                    out.push(r.full_json());
                } else if caller.any() {
                    out.push(json!({"id": r.repr.get("id"), "realm": name}));
                }
            }
            Err(resp) if resp.status() == StatusCode::UNAUTHORIZED => return resp,
            Err(_) => authenticated = true,
        }
    }
    if !authenticated {
        return unauthorized();
    }
    axum::Json(Value::Array(out)).into_response()
}

async fn get_realm(
    State(sim): State<Sim>,
    Path(realm): Path<String>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    let r = &st.realms[&realm];
    if caller.view_realm() {
        axum::Json(r.full_json()).into_response()
    } else {
        // RealmAdminResource.getRealm: without view-realm, any realm-management role gets the
        // brief representation (null fields are left out).
        require!(caller.any());
        let mut brief = Map::new();
        brief.insert("realm".into(), json!(realm));
        for k in [
            "defaultLocale",
            "displayName",
            "displayNameHtml",
            "supportedLocales",
            "bruteForceProtected",
            "organizationsEnabled",
        ] {
            if let Some(v) = r.repr.get(k).filter(|v| !v.is_null()) {
                brief.insert(k.into(), v.clone());
            }
        }
        if !brief.contains_key("supportedLocales") {
            brief.insert("supportedLocales".into(), json!([]));
        }
        axum::Json(Value::Object(brief)).into_response()
    }
}

/// Top-level fields `PUT /admin/realms/{realm}` does not apply (collections, read-only data).
const REALM_PUT_IGNORED: [&str; 30] = [
    "id",
    "realm",
    "attributes",
    "users",
    "clients",
    "roles",
    "groups",
    "clientScopes",
    "defaultRole",
    "defaultRoles",
    "defaultDefaultClientScopes",
    "defaultOptionalClientScopes",
    "identityProviders",
    "identityProviderMappers",
    "components",
    "authenticationFlows",
    "authenticatorConfig",
    "requiredActions",
    "protocolMappers",
    "scopeMappings",
    "clientScopeMappings",
    "federatedUsers",
    "userFederationProviders",
    "userFederationMappers",
    "applications",
    "oauthClients",
    "clientTemplates",
    "keycloakVersion",
    "otpSupportedApplications",
    "localizationTexts",
];

async fn put_realm(
    State(sim): State<Sim>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    require!(caller.manage_realm());
    let stored_fields: Vec<String> = st.realms[&realm].repr.keys().cloned().collect();
    let body = match read_body_known(
        &sim,
        &Method::PUT,
        "/admin/realms/{realm}",
        "RealmRepresentation",
        &body,
        &stored_fields,
    ) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Value::Object(mut fields) = body else {
        return keycloak_error(StatusCode::BAD_REQUEST, "invalid_request", None);
    };
    if let Some(name) = fields.get("realm").and_then(Value::as_str)
        && name != realm
    {
        if realm == "master" {
            return error_message(StatusCode::BAD_REQUEST, "Can't rename master realm");
        }
        return error_message(
            StatusCode::BAD_REQUEST,
            "Renaming realms is not supported by the simulator",
        );
    }
    if let (Some(login), Some(action)) = (
        fields
            .get("accessCodeLifespanLogin")
            .and_then(Value::as_i64),
        fields
            .get("accessCodeLifespanUserAction")
            .and_then(Value::as_i64),
    ) && (login < 1 || action < 1)
    {
        return error_message(
            StatusCode::BAD_REQUEST,
            "AccessCodeLifespanLogin or AccessCodeLifespanUserAction cannot be 0",
        );
    }
    // Deprecated alias setters of the device settings.
    for (alias, name) in [
        ("oAuth2DeviceCodeLifespan", DEVICE_CODE_LIFESPAN),
        ("oAuth2DevicePollingInterval", DEVICE_POLLING_INTERVAL),
    ] {
        if let Some(v) = fields.remove(alias)
            && !v.is_null()
            && fields.get(name).is_none_or(Value::is_null)
        {
            fields.insert(name.into(), v);
        }
    }
    let r = st
        .realms
        .get_mut(&realm)
        .expect("authenticated realm exists");
    let mut next = r.clone();
    // 1. `attributes`, when given, replace the realm's attributes (DefaultExportImportManager
    //    .updateRealm: set each, remove the others except REALM_EXCLUDED_ATTRIBUTES).
    let given_attrs: Map<String, Value> = fields
        .get("attributes")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if fields.get("attributes").is_some_and(Value::is_object) {
        for (k, v) in &given_attrs {
            let mirrored = MIRRORED_REALM_ATTRIBUTES.iter().find(|(m, _)| m == k);
            match (v.as_str(), mirrored) {
                (None, Some((m, d))) => {
                    next.repr.insert(m.to_string(), json!(d));
                }
                (None, None) => {
                    next.attributes.remove(k);
                }
                (Some(s), Some((m, d))) => {
                    let n = s.trim().parse::<i64>().unwrap_or(*d);
                    next.repr.insert(m.to_string(), json!(n));
                }
                (Some(s), None) => {
                    next.attributes.insert(k.clone(), s.to_string());
                }
            }
        }
        next.attributes.retain(|k, _| {
            given_attrs.contains_key(k) || EXCLUDED_REALM_ATTRIBUTES.contains(&k.as_str())
        });
        for (m, d) in MIRRORED_REALM_ATTRIBUTES {
            if !given_attrs.contains_key(m) {
                next.repr.insert(m.into(), json!(d));
            }
        }
    }
    // 2. Top-level fields: only the non-null ones.
    for (k, v) in &fields {
        if v.is_null() || REALM_PUT_IGNORED.contains(&k.as_str()) {
            continue;
        }
        next.repr.insert(k.clone(), v.clone());
    }
    // 3. Always rewritten: OAuth2DeviceConfig (top-level fields), CibaConfig and ParConfig
    //    (from `attributes`); anything not sent falls back to its default.
    for (name, default) in [
        (DEVICE_CODE_LIFESPAN, DEVICE_CODE_LIFESPAN_DEFAULT),
        (DEVICE_POLLING_INTERVAL, DEVICE_POLLING_INTERVAL_DEFAULT),
    ] {
        let v = fields.get(name).and_then(Value::as_i64).unwrap_or(default);
        next.repr.insert(name.into(), json!(v));
    }
    let attr = |k: &str| given_attrs.get(k).and_then(Value::as_str);
    let int_attr = |k: &str, d: i64| -> Result<i64, ()> {
        match attr(k) {
            None => Ok(d),
            Some(s) => s.trim().parse::<i64>().map_err(|_| ()),
        }
    };
    let (Ok(expires), Ok(interval), Ok(par)) = (
        int_attr(CIBA_EXPIRES_IN, CIBA_EXPIRES_IN_DEFAULT),
        int_attr(CIBA_INTERVAL, CIBA_INTERVAL_DEFAULT),
        int_attr(PAR_LIFESPAN, PAR_LIFESPAN_DEFAULT),
    ) else {
        // Integer.parseInt throws; the transaction is rolled back.
        return error_message(StatusCode::INTERNAL_SERVER_ERROR, "Failed to update realm");
    };
    let mode = attr(CIBA_DELIVERY_MODE)
        .filter(|m| !m.trim().is_empty())
        .unwrap_or(CIBA_DELIVERY_MODE_DEFAULT);
    let hint = attr(CIBA_USER_HINT).unwrap_or(CIBA_USER_HINT_DEFAULT);
    for (k, v) in [
        (CIBA_DELIVERY_MODE, mode.to_string()),
        (CIBA_EXPIRES_IN, expires.to_string()),
        (CIBA_INTERVAL, interval.to_string()),
        (CIBA_USER_HINT, hint.to_string()),
        (PAR_LIFESPAN, par.to_string()),
    ] {
        next.attributes.insert(k.into(), v);
    }
    *r = next;
    no_content()
}

/// Keycloak's paging parameters: `first` (offset, default 0) and `max` (a negative or
/// unreadable value means no limit).
fn first_max(q: &HashMap<String, String>) -> (usize, Option<usize>) {
    let first = q
        .get("first")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let max = q
        .get("max")
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|m| usize::try_from(m).ok());
    (first, max)
}

async fn list_clients(
    State(sim): State<Sim>,
    Path(realm): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    require!(caller.list_clients());
    let r = &st.realms[&realm];
    let search = q.get("search").map(|s| s == "true").unwrap_or(false);
    let (first, max) = first_max(&q);
    let client_id = q.get("clientId").filter(|v| !v.trim().is_empty());
    let matching: Vec<&ClientState> = r
        .clients
        .iter()
        .filter(|c| {
            let cid = str_field(&c.repr, "clientId");
            match (client_id, search) {
                (None, _) => true,
                (Some(want), false) => cid == want,
                (Some(want), true) => cid.to_lowercase().contains(&want.to_lowercase()),
            }
        })
        .collect();
    // Paging applies to listing and searching, not to an exact clientId lookup.
    let paged: Vec<&ClientState> = if client_id.is_some() && !search {
        matching
    } else {
        sim_kit::window(matching, first, max)
    };
    // ClientsResource.getClients: clients the caller cannot view are left out, so an admin with
    // query-clients only gets an empty list.
    let list: Vec<Value> = if caller.view_clients() {
        paged
            .into_iter()
            .map(|c| r.client_json(c, caller.access()))
            .collect()
    } else {
        Vec::new()
    };
    axum::Json(Value::Array(list)).into_response()
}

/// `ClientsResource.getClient`: an unknown id is 404 for callers who may list clients, 403
/// otherwise (ids cannot be probed).
fn missing_client(caller: &Caller) -> Response {
    if caller.list_clients() {
        client_not_found()
    } else {
        forbidden()
    }
}

async fn get_client(
    State(sim): State<Sim>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    let r = st
        .realms
        .get_mut(&realm)
        .expect("authenticated realm exists");
    let Some(c) = r.client_by_id(&id).cloned() else {
        return missing_client(&caller);
    };
    require!(caller.view_clients());
    axum::Json(r.client_json(&c, caller.access())).into_response()
}

/// Client fields `PUT /clients/{id}` copies when present and non-null
/// (`RepresentationToModel.updateClientProperties`).
const CLIENT_SCALAR_FIELDS: [&str; 21] = [
    "clientId",
    "name",
    "description",
    "enabled",
    "alwaysDisplayInConsole",
    "adminUrl",
    "surrogateAuthRequired",
    "rootUrl",
    "baseUrl",
    "bearerOnly",
    "consentRequired",
    "standardFlowEnabled",
    "implicitFlowEnabled",
    "directAccessGrantsEnabled",
    "serviceAccountsEnabled",
    "publicClient",
    "frontchannelLogout",
    "notBefore",
    "protocol",
    "nodeReRegistrationTimeout",
    "clientAuthenticatorType",
];

/// `DefaultClientValidationProvider`: URL checks run after an update; a failure rolls it back.
fn validate_client(c: &Map<String, Value>) -> Result<(), String> {
    let scheme_is = |u: &str, s: &str| {
        u.split_once(':')
            .is_some_and(|(scheme, _)| scheme.trim().eq_ignore_ascii_case(s))
    };
    let root = str_field(c, "rootUrl");
    if !root.is_empty() {
        if scheme_is(root, "javascript") {
            return Err("Root URL uses an illegal scheme".into());
        }
        if root.contains('#') {
            return Err("Root URL must not contain an URL fragment".into());
        }
    }
    let base = str_field(c, "baseUrl");
    if !base.is_empty() && scheme_is(base, "javascript") {
        return Err("Base URL uses an illegal scheme".into());
    }
    for u in c
        .get("redirectUris")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if scheme_is(u, "javascript") {
            return Err("A redirect URI uses an illegal scheme".into());
        }
        if u.contains('#') {
            return Err("Redirect URIs must not contain an URI fragment".into());
        }
    }
    Ok(())
}

fn origin_of(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{host}"))
}

async fn put_client(
    State(sim): State<Sim>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    if st
        .realms
        .get_mut(&realm)
        .and_then(|r| r.client_by_id(&id))
        .is_none()
    {
        return missing_client(&caller);
    }
    require!(caller.manage_clients());
    let stored_fields: Vec<String> = st
        .realms
        .get_mut(&realm)
        .and_then(|r| r.client_by_id(&id))
        .map(|c| c.repr.keys().cloned().collect())
        .unwrap_or_default();
    let body = match read_body_known(
        &sim,
        &Method::PUT,
        "/admin/realms/{realm}/clients/{id}",
        "ClientRepresentation",
        &body,
        &stored_fields,
    ) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let ignore = st.ignore_client_updates;
    let r = st
        .realms
        .get_mut(&realm)
        .expect("authenticated realm exists");
    let Value::Object(fields) = body else {
        return keycloak_error(StatusCode::BAD_REQUEST, "invalid_request", None);
    };
    if let Some(new_cid) = fields.get("clientId").and_then(Value::as_str) {
        let clash = r
            .clients
            .iter()
            .any(|c| str_field(&c.repr, "clientId") == new_cid && str_field(&c.repr, "id") != id);
        if clash {
            return error_message(StatusCode::CONFLICT, "Client already exists");
        }
    }
    let mut c = r.client_by_id(&id).cloned().expect("checked above");
    // Service account: enabling creates the service-account user, disabling deletes it (and
    // with it the roles it held).
    if fields
        .get("serviceAccountsEnabled")
        .and_then(Value::as_bool)
        == Some(false)
    {
        c.grants.clear();
    }
    for k in CLIENT_SCALAR_FIELDS {
        if let Some(v) = fields.get(k).filter(|v| !v.is_null()) {
            c.repr.insert(k.into(), v.clone());
        }
    }
    if let Some(v) = fields.get("fullScopeAllowed").filter(|v| !v.is_null()) {
        c.repr.insert("fullScopeAllowed".into(), v.clone());
    }
    // Fields of a newer server (stored, outside the contract): applied like the others.
    for k in &stored_fields {
        if !schema::contract().has_property("ClientRepresentation", k)
            && let Some(v) = fields.get(k).filter(|v| !v.is_null())
        {
            c.repr.insert(k.clone(), v.clone());
        }
    }
    for k in ["redirectUris", "webOrigins"] {
        if let Some(Value::Array(items)) = fields.get(k) {
            let mut set: Vec<Value> = Vec::new();
            for i in items {
                if !set.contains(i) {
                    set.push(i.clone());
                }
            }
            c.repr.insert(k.into(), Value::Array(set));
        }
    }
    // webOrigins not sent and empty: derived from the redirect URIs (defaultWebOrigins).
    if fields.get("webOrigins").is_none_or(Value::is_null)
        && c.repr
            .get("webOrigins")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    {
        let mut origins: Vec<Value> = Vec::new();
        for u in c
            .repr
            .get("redirectUris")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|u| u.starts_with("http"))
        {
            if let Some(o) = origin_of(u).map(Value::String)
                && !origins.contains(&o)
            {
                origins.push(o);
            }
        }
        c.repr.insert("webOrigins".into(), Value::Array(origins));
    }
    let flag = |c: &ClientState, k: &str| c.repr.get(k).and_then(Value::as_bool) == Some(true);
    // Secret (determineNewSecret): none for public and bearer-only clients; the one sent; else
    // the current one, or a new one when there is none.
    if flag(&c, "publicClient") || flag(&c, "bearerOnly") {
        c.repr.remove("secret");
    } else if let Some(s) = fields.get("secret").filter(|v| !v.is_null()) {
        c.repr.insert("secret".into(), s.clone());
    } else if c.repr.get("secret").is_none_or(Value::is_null) {
        c.repr.insert("secret".into(), json!(new_id()));
    }
    // Attributes: merged key by key; a null or blank value deletes the attribute.
    if let Some(Value::Object(attrs)) = fields.get("attributes") {
        let dst = c
            .repr
            .entry("attributes")
            .or_insert_with(|| Value::Object(Map::new()));
        if !dst.is_object() {
            *dst = Value::Object(Map::new());
        }
        if let Some(dst) = dst.as_object_mut() {
            for (k, v) in attrs {
                match v.as_str() {
                    Some(s) if !s.trim().is_empty() => {
                        dst.insert(k.clone(), Value::String(s.to_string()));
                    }
                    _ => {
                        dst.remove(k);
                    }
                }
            }
        }
    }
    if let Some(Value::Object(overrides)) = fields.get("authenticationFlowBindingOverrides") {
        let dst = c
            .repr
            .entry("authenticationFlowBindingOverrides")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(dst) = dst.as_object_mut() {
            for (k, v) in overrides {
                match v.as_str() {
                    Some(s) if !s.trim().is_empty() => {
                        dst.insert(k.clone(), v.clone());
                    }
                    _ => {
                        dst.remove(k);
                    }
                }
            }
        }
    }
    if let Some(Value::Array(mappers)) = fields.get("protocolMappers") {
        c.repr
            .insert("protocolMappers".into(), Value::Array(mappers.clone()));
    }
    // Authorization services: on only when the body says true (and the client is neither public
    // nor bearer-only); a body without the field turns them off (updateAuthorizationSettings).
    let authz = fields
        .get("authorizationServicesEnabled")
        .and_then(Value::as_bool)
        == Some(true)
        && !fields
            .get("publicClient")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        && !fields
            .get("bearerOnly")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    c.repr
        .insert("authorizationServicesEnabled".into(), Value::Bool(authz));
    if let Err(msg) = validate_client(&c.repr) {
        return keycloak_error(StatusCode::BAD_REQUEST, "invalid_input", Some(&msg));
    }
    if ignore {
        return no_content();
    }
    if let Some(slot) = r.client_by_id(&id) {
        *slot = c;
    }
    no_content()
}

async fn service_account_user(
    State(sim): State<Sim>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    let r = st
        .realms
        .get_mut(&realm)
        .expect("authenticated realm exists");
    let Some(c) = r.client_by_id(&id).cloned() else {
        return missing_client(&caller);
    };
    require!(caller.view_clients());
    if c.repr
        .get("serviceAccountsEnabled")
        .and_then(Value::as_bool)
        != Some(true)
    {
        let cid = str_field(&c.repr, "clientId");
        return keycloak_error(
            StatusCode::BAD_REQUEST,
            &format!("Service account not enabled for the client '{cid}'"),
            None,
        );
    }
    let cid = str_field(&c.repr, "clientId").to_lowercase();
    axum::Json(json!({
        "id": format!("sa-{}", str_field(&c.repr, "id")),
        "username": format!("service-account-{cid}"),
        "enabled": true,
        "emailVerified": false,
        "serviceAccountClientId": str_field(&c.repr, "id"),
    }))
    .into_response()
}

async fn list_links(
    State(sim): State<Sim>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
    default: bool,
) -> Response {
    let mut st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    let r = st
        .realms
        .get_mut(&realm)
        .expect("authenticated realm exists");
    let Some(c) = r.client_by_id(&id).cloned() else {
        return missing_client(&caller);
    };
    require!(caller.view_clients());
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
    let caller = caller_or_return!(&st, &headers, &realm);
    let r = st
        .realms
        .get_mut(&realm)
        .expect("authenticated realm exists");
    if r.client_by_id(&id).is_none() {
        return missing_client(&caller);
    }
    require!(caller.manage_clients());
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
        // removeClientScope unlinks whichever way it is linked.
        c.default_scopes.retain(|s| *s != scope);
        c.optional_scopes.retain(|s| *s != scope);
    }
    no_content()
}

#[derive(Clone, Copy)]
enum MappingView {
    /// `GET .../scope-mappings/realm`: the client's own realm scope mappings.
    Explicit,
    /// `.../composite`: every realm role in the client's scope (all of them with full scope).
    Effective,
    /// `.../available`: realm roles not in the client's scope.
    Available,
}

async fn get_mappings(
    State(sim): State<Sim>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
    view: MappingView,
) -> Response {
    let mut st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    let r = st
        .realms
        .get_mut(&realm)
        .expect("authenticated realm exists");
    let Some(c) = r.client_by_id(&id).cloned() else {
        return missing_client(&caller);
    };
    require!(caller.view_clients());
    let full = c.repr.get("fullScopeAllowed").and_then(Value::as_bool) != Some(false);
    let default_roles = format!("default-roles-{realm}");
    let in_scope = |role: &RoleState| -> bool {
        if full || c.realm_scope_mappings.contains(&role.id) {
            return true;
        }
        // Composites of mapped roles: default-roles-<realm> holds offline_access and
        // uma_authorization.
        let composite = r
            .roles
            .iter()
            .find(|x| x.name == default_roles)
            .is_some_and(|d| c.realm_scope_mappings.contains(&d.id));
        composite && matches!(role.name.as_str(), "offline_access" | "uma_authorization")
    };
    let list: Vec<Value> = match view {
        MappingView::Explicit => c
            .realm_scope_mappings
            .iter()
            .filter_map(|rid| {
                r.roles
                    .iter()
                    .find(|x| x.id == *rid)
                    .map(|x| r.role_json(x))
            })
            .collect(),
        MappingView::Effective => r
            .roles
            .iter()
            .filter(|x| in_scope(x))
            .map(|x| r.role_json(x))
            .collect(),
        MappingView::Available => r
            .roles
            .iter()
            .filter(|x| !in_scope(x))
            .map(|x| r.role_json(x))
            .collect(),
    };
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
    let caller = caller_or_return!(&st, &headers, &realm);
    if st
        .realms
        .get_mut(&realm)
        .and_then(|r| r.client_by_id(&id))
        .is_none()
    {
        return missing_client(&caller);
    }
    require!(caller.manage_clients());
    let method = if add { Method::POST } else { Method::DELETE };
    // DELETE without a body removes every realm scope mapping.
    let remove_all = !add && body.iter().all(u8::is_ascii_whitespace);
    let body = if remove_all {
        Value::Array(Vec::new())
    } else {
        match read_body(
            &sim,
            &method,
            "/admin/realms/{realm}/clients/{id}/scope-mappings/realm",
            "RoleRepresentation[]",
            &body,
        ) {
            Ok(b) => b,
            Err(resp) => return resp,
        }
    };
    let r = st
        .realms
        .get_mut(&realm)
        .expect("authenticated realm exists");
    // ScopeMappedResource: roles are looked up by id only.
    let mut role_ids = Vec::new();
    for role in body.as_array().cloned().unwrap_or_default() {
        let by_id = role.get("id").and_then(Value::as_str);
        match r
            .roles
            .iter()
            .find(|x| by_id.is_some_and(|i| i == x.id))
            .map(|x| x.id.clone())
        {
            Some(rid) => role_ids.push(rid),
            None => return keycloak_error(StatusCode::NOT_FOUND, "Role not found", None),
        }
    }
    let c = r.client_by_id(&id).expect("checked above");
    if remove_all {
        c.realm_scope_mappings.clear();
    }
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
    let st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    require!(caller.list_clients() || caller.view_realm());
    let r = &st.realms[&realm];
    let list: Vec<Value> = r.scopes.iter().map(ScopeState::json).collect();
    axum::Json(Value::Array(list)).into_response()
}

async fn get_scope(
    State(sim): State<Sim>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    require!(caller.list_clients() || caller.view_realm());
    match st.realms[&realm].scopes.iter().find(|s| s.id == id) {
        Some(s) => axum::Json(s.json()).into_response(),
        None => keycloak_error(StatusCode::NOT_FOUND, "Could not find client scope", None),
    }
}

async fn get_scope_mappings(
    State(sim): State<Sim>,
    Path((realm, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    require!(caller.list_clients() || caller.view_realm());
    let r = &st.realms[&realm];
    let Some(s) = r.scopes.iter().find(|s| s.id == id) else {
        return keycloak_error(StatusCode::NOT_FOUND, "Could not find client scope", None);
    };
    let list: Vec<Value> = s
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

async fn list_roles(
    State(sim): State<Sim>,
    Path(realm): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    require!(caller.view_realm() || caller.view_clients());
    let r = &st.realms[&realm];
    let search = q.get("search").map(|s| s.to_lowercase());
    let (first, max) = first_max(&q);
    let matching = r.roles.iter().filter(|x| {
        search
            .as_ref()
            .is_none_or(|s| x.name.to_lowercase().contains(s))
    });
    let list: Vec<Value> = sim_kit::window(matching, first, max)
        .into_iter()
        .map(|x| r.role_json(x))
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

async fn get_role(
    State(sim): State<Sim>,
    Path((realm, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let st = lock(&sim.state);
    let caller = caller_or_return!(&st, &headers, &realm);
    require!(caller.view_realm() || caller.view_clients());
    let r = &st.realms[&realm];
    match r.roles.iter().find(|x| x.name == name) {
        Some(role) => axum::Json(r.role_json(role)).into_response(),
        None => keycloak_error(StatusCode::NOT_FOUND, "Could not find role", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
