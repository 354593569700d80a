//! A stateful simulator of the PingFederate administrative API (`/pf-admin-api/v1`), in the 11.3
//! or the 12.1 shape, for tests and the operator's sandbox. It models what PingFederate does even
//! where that is inconvenient for a client; the known differences are listed in
//! `docs/fidelity/pingfederate.md`.
//!
//! What it does like PingFederate:
//! - every call needs the `X-XSRF-Header` header (any value); calls without it are refused with
//!   **403** and an `ApiResult` body;
//! - HTTP Basic against admin accounts with roles: `Admin` may write, `Auditor` only read (403 on
//!   writes); 401 with `WWW-Authenticate: Basic` for unknown users or wrong passwords;
//! - request bodies are checked against the selected version's contract schema. Bodies that cannot
//!   be read into the model (malformed JSON, a property the version does not know, a wrong type, a
//!   value outside an enum) are **400** with the first offending field; semantic failures
//!   (required fields, undefined scopes, override types without their values, an undecryptable
//!   `encryptedSecret`, …) are **422** `ApiResult` with every `validationErrors[]` entry;
//! - `PUT` replaces the whole object (fields left out are gone);
//! - **client secrets**: `GET` returns a fresh `clientAuth.encryptedSecret` ciphertext on every
//!   read, also when the secret did not change; the read-only `clientSecretChangedTime` is what
//!   changes when, and only when, the secret changes. Any ciphertext the server ever issued is
//!   accepted on `PUT` and decrypts to the secret it encrypted, so a whole-object `PUT` built from
//!   a read taken before a secret rotation **restores the old secret**. A plaintext
//!   `clientAuth.secret` sets a new secret. With a client-secret retention period (client override
//!   or server default, minutes) the replaced secret is kept as a `secondarySecrets[]` entry with
//!   an `expiryTime`;
//! - **clusters** ([`Deployment::Clustered`], the default): one administrative console node and
//!   engine nodes. Admin changes to the authorization server settings and scopes, and to clients
//!   kept in XML storage, set `replicationRequired` in `GET /cluster/status` and reach what the
//!   engines serve only after `POST /cluster/replicate` (12.x: clients also with
//!   `replicateClientsOnSave`; database client storage: clients are shared at once). What the
//!   engines serve is visible through [`SimHandle::engine_client`],
//!   [`SimHandle::engine_auth_server_settings`] and [`SimHandle::engine_refresh_policy`]. A
//!   standalone server answers 403 "not deployed in clustered mode" on `/cluster/*`;
//! - 11.3 has no `GET /oauth/authServerSettings/scopes/commonScopes` (405) and no
//!   `/cluster/settings` (404); `GET /oauth/clients` pages (`page`, `numberPerPage`) and filters
//!   (`filter`, case-insensitive partial match on client ID and name);
//! - 12.1: a client's `offlineAccessRequireConsentPrompt` is reset to `SERVER_DEFAULT` unless its
//!   `requireOfflineAccessScopeToIssueRefreshTokens` is `YES`; the server-wide consent flag is
//!   reset to `false` when the server-wide "require offline_access" flag is `false`.
//!
//! Test hooks: latency, `fail_next` (e.g. 503, or 429 with `Retry-After`), request counters by
//! (method, route template, status), a record of every request (method, path, JSON body, status,
//! user; never the `Authorization` header), console-style edits, secret rotation by an
//! administrator, engine reachability and engine-side views.

pub mod schema;
mod secrets;

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
use sim_kit::{CountRules, Harness, Hooks, Listener, form_decode, lock, percent_decode};

pub use sim_kit::SandboxSeed;

pub use schema::{FieldError, validate};
pub use secrets::{SEED_CIPHERTEXT, SEED_SECRET};

use secrets::Cipher;

/// Admin API prefix.
pub const API_PREFIX: &str = "/pf-admin-api/v1";

/// The message PingFederate answers on `/cluster/*` when it is not clustered (the Terraform
/// provider's `pingfederate_cluster_status` data source matches on "not deployed in clustered
/// mode").
pub const NOT_CLUSTERED_MESSAGE: &str =
    "This PingFederate instance is not deployed in clustered mode.";

/// Which PingFederate admin API shape to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PfVersion {
    /// 11.3 (no `offline_access` controls, rolling interval in hours, no common-scope list).
    V11_3,
    /// 12.1 (`requireOfflineAccessScopeToIssueRefreshTokens`, `offlineAccessRequireConsentPrompt`,
    /// rolling-interval units, `GET …/commonScopes`, `/cluster/settings`).
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
    /// May read and write the OAuth configuration and replicate the cluster.
    Admin,
    /// Read-only.
    Auditor,
}

/// How PingFederate is deployed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Deployment {
    /// One node that is console and engine at once: changes take effect at once, `/cluster/*`
    /// answers 403.
    Standalone,
    /// An administrative console node plus [`SimConfig::engines`] engine nodes; configuration
    /// reaches the engines by replication.
    #[default]
    Clustered,
}

/// Where OAuth clients are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientStorage {
    /// XML files in the configuration archive (the default): clients are replicated like the
    /// rest of the configuration.
    #[default]
    Xml,
    /// A database (JDBC/LDAP client storage) shared by all nodes: client changes are seen by the
    /// engines at once; authorization server settings still need replication.
    Database,
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
    /// Clustered (default) or standalone.
    pub deployment: Deployment,
    /// Engine nodes of a clustered deployment (default 2).
    pub engines: usize,
    /// Client storage (default XML).
    pub client_storage: ClientStorage,
    /// 12.x cluster setting `replicateClientsOnSave` (default false; ignored on 11.3 and with
    /// database client storage).
    pub replicate_clients_on_save: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            addr: sim_kit::LOOPBACK,
            latency: Duration::ZERO,
            version: PfVersion::default(),
            deployment: Deployment::default(),
            engines: 2,
            client_storage: ClientStorage::default(),
            replicate_clients_on_save: false,
        }
    }
}

/// One request the simulator received.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path (with the `/pf-admin-api/v1` prefix, without the query).
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

/// Request counts by (method, route template, status); route templates are without the
/// prefix, e.g. `/oauth/clients/{id}`.
pub type SimCounters = sim_kit::Counters<AdminApiRoutes>;

/// The counting rules of the administrative API: no token endpoint; `GET` and `HEAD` are reads
/// (the kit's rule).
#[derive(Clone, Copy, Debug)]
pub struct AdminApiRoutes;

impl CountRules for AdminApiRoutes {}

/// The refresh-token behaviour an engine node applies to a client, resolved from the client's
/// overrides and the authorization server settings the engine holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// `REFRESH_TOKEN` is among the client's grant types.
    pub refresh_token_grant: bool,
    /// `offline_access` is defined at the authorization server and the client may request it.
    pub offline_access_allowed: bool,
    /// 12.1: refresh tokens only when `offline_access` is requested (always false on 11.3).
    pub requires_offline_access_scope: bool,
    /// A new refresh token is issued on every use (`refreshRolling`, or the server's
    /// `rollRefreshTokenValues`).
    pub roll: bool,
    /// Seconds a rolled refresh token stays usable (`refreshTokenRollingGracePeriod`, client
    /// override or server default).
    pub rolling_grace_period_secs: i64,
    /// Maximum grant lifetime in seconds; `None` = indefinite.
    pub max_lifetime_secs: Option<i64>,
    /// Grant idle timeout in seconds; `None` = indefinite.
    pub idle_timeout_secs: Option<i64>,
}

impl RefreshPolicy {
    /// Whether presenting a refresh token again `secs_after_use` seconds after it was first
    /// redeemed still works: always when tokens do not roll; within the grace period when they do.
    /// A grace period of 0 means none: a rolled token is invalid at once, so a second redemption
    /// at the same moment (`secs_after_use` 0, two concurrent refreshes) fails.
    pub fn reuse_allowed(&self, secs_after_use: u64) -> bool {
        !self.roll
            || (self.rolling_grace_period_secs > 0
                && i64::try_from(secs_after_use).is_ok_and(|s| s <= self.rolling_grace_period_secs))
    }
}

struct Account {
    password: String,
    role: AdminRole,
}

struct EngineNode {
    address: String,
    clients: BTreeMap<String, Value>,
    settings: Value,
    reachable: bool,
    generation: u64,
    configuration_timestamp: String,
}

struct Cluster {
    deployment: Deployment,
    storage: ClientStorage,
    replicate_clients_on_save: bool,
    engines: Vec<EngineNode>,
    replication_required: bool,
    last_config_update: String,
    last_replication: String,
    generation: u64,
    published_clients: BTreeMap<String, Value>,
    published_settings: Value,
}

struct SimState {
    version: PfVersion,
    /// Latency, scripted failures and counters.
    hooks: Arc<Hooks>,
    accounts: BTreeMap<String, Account>,
    clients: BTreeMap<String, Value>,
    settings: Value,
    requests: Vec<RecordedRequest>,
    cipher: Cipher,
    rotations: u64,
    secret_changes: u64,
    seeded_secret: Option<String>,
    cluster: Cluster,
}

type Shared = Arc<Mutex<SimState>>;

/// A running simulator.
#[derive(Clone)]
pub struct SimHandle {
    state: Shared,
    kit: Arc<Harness<AdminApiRoutes>>,
}

/// The test hooks every simulator shares (`counters`, `writes`, `reset_counters`,
/// `set_latency`, `fail_next`, `set_throttle`, `shutdown`): scripted failures and throttling hit
/// every known route of the administrative API, after the delay, before the XSRF and
/// authentication checks, and answer with an `ApiResult` (`simulated_failure`). Requests are
/// recorded whole ([`SimHandle::requests`]), not through the harness.
impl std::ops::Deref for SimHandle {
    type Target = Harness<AdminApiRoutes>;

    fn deref(&self) -> &Self::Target {
        &self.kit
    }
}

/// Starts a simulator on the current tokio runtime. It starts with default authorization server
/// settings, no clients and no admin accounts; see [`SimHandle::seed_sandbox`].
pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = Listener::bind(config.addr).await?;
    let kit = Arc::new(Harness::new(listener.base_url(), config.latency));
    let settings = default_settings(config.version);
    let stamp = now();
    let engines = match config.deployment {
        Deployment::Standalone => Vec::new(),
        Deployment::Clustered => (0..config.engines)
            .map(|i| EngineNode {
                address: format!("10.0.0.{}:7600", 11 + i),
                clients: BTreeMap::new(),
                settings: settings.clone(),
                reachable: true,
                generation: 0,
                configuration_timestamp: stamp.clone(),
            })
            .collect(),
    };
    let state = Arc::new(Mutex::new(SimState {
        version: config.version,
        hooks: kit.hooks().clone(),
        accounts: BTreeMap::new(),
        clients: BTreeMap::new(),
        settings: settings.clone(),
        requests: Vec::new(),
        cipher: Cipher::new(config.version.version_string()),
        rotations: 0,
        secret_changes: 0,
        seeded_secret: None,
        cluster: Cluster {
            deployment: config.deployment,
            storage: config.client_storage,
            replicate_clients_on_save: config.replicate_clients_on_save
                && config.version != PfVersion::V11_3,
            engines,
            replication_required: false,
            last_config_update: stamp.clone(),
            last_replication: stamp,
            generation: 0,
            published_clients: BTreeMap::new(),
            published_settings: settings,
        },
    }));
    let app = Router::new().fallback(handle).with_state(state.clone());
    kit.serve(listener, app);
    Ok(SimHandle { state, kit })
}

impl SimHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        lock(&self.state)
    }

    /// `http://127.0.0.1:PORT` (the policy's `adminUrl`).
    pub fn base_url(&self) -> String {
        self.kit.base_url().to_string()
    }

    /// The API shape served.
    pub fn version(&self) -> PfVersion {
        self.lock().version
    }

    /// Seeds Coder's client `coder` (authorization code only, scopes restricted to
    /// openid/profile/email, the client secret [`SEED_SECRET`]), authorization server settings
    /// without `offline_access`, and an `Admin` account `oidc-refresh-operator`. In a cluster the
    /// seeded configuration is already replicated (engines serve it, nothing to replicate).
    pub fn seed_sandbox(&self) -> SandboxSeed {
        let password = "sandbox-admin-password-7Qx2".to_string();
        let mut s = self.lock();
        let version = s.version;
        let mut client = seed_client(version);
        if s.cluster.auto_replicates_clients()
            && let Some(o) = client.as_object_mut()
        {
            o.insert("replicationStatus".into(), json!("REPLICATED"));
        }
        s.seeded_secret = Some(SEED_SECRET.to_string());
        s.clients.insert("coder".into(), client);
        s.settings = default_settings(version);
        s.accounts.insert(
            "oidc-refresh-operator".into(),
            Account {
                password: password.clone(),
                role: AdminRole::Admin,
            },
        );
        publish(&mut s, true);
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

    /// Refresh-relevant settings of the `coder` client, for people: the admin node's
    /// configuration, then what the engines serve.
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
        let current = primary_secret(&s.cipher, c);
        let unchanged = s.seeded_secret.is_some() && current == s.seeded_secret;
        out.push((
            "client secret".into(),
            if unchanged { "unchanged" } else { "CHANGED" }.into(),
        ));
        out.push((
            "clientSecretChangedTime".into(),
            text(&c["clientSecretChangedTime"]),
        ));
        let cluster = match s.cluster.deployment {
            Deployment::Standalone => "standalone".to_string(),
            Deployment::Clustered => {
                let n = s.cluster.engines.len();
                let in_sync = (0..n)
                    .filter(|&i| {
                        engine_client_of(&s, i, "coder").as_ref() == Some(c)
                            && engine_settings_of(&s, i) == Some(&s.settings)
                    })
                    .count();
                format!(
                    "{in_sync} of {n} engines serve the admin configuration{}",
                    if s.cluster.replication_required {
                        " (replication required)"
                    } else {
                        ""
                    }
                )
            }
        };
        out.push(("cluster".into(), cluster));
        out
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

    /// How many times a client secret was set by a PUT carrying a plaintext `clientAuth.secret`.
    pub fn secret_rotations(&self) -> u64 {
        self.lock().rotations
    }

    /// How many times the effective secret of any client changed, for whatever reason: a
    /// plaintext secret in a PUT, a PUT carrying the ciphertext of another (e.g. an older)
    /// secret, or [`SimHandle::rotate_client_secret`].
    pub fn secret_changes(&self) -> u64 {
        self.lock().secret_changes
    }

    /// The plaintext client secret the admin node holds for a client.
    pub fn client_secret(&self, id: &str) -> Option<String> {
        let s = self.lock();
        primary_secret(&s.cipher, s.clients.get(id)?)
    }

    /// An administrator sets a new client secret in the console (not counted by
    /// [`SimHandle::secret_rotations`]): `clientSecretChangedTime` changes, the old secret is
    /// retained as a secondary secret when a retention period applies, and in a cluster the new
    /// secret needs replication like any other console change.
    pub fn rotate_client_secret(&self, id: &str, new_secret: &str) {
        let mut s = self.lock();
        let s = &mut *s;
        let Some(mut c) = s.clients.get(id).cloned() else {
            return;
        };
        let old = primary_secret(&s.cipher, &c);
        let ct = s.cipher.encrypt(new_secret);
        if let Some(a) = c.get_mut("clientAuth").and_then(Value::as_object_mut) {
            a.insert("type".into(), json!("SECRET"));
            a.insert("encryptedSecret".into(), json!(ct));
        }
        let mut secondaries = c["clientAuth"]["secondarySecrets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if old.as_deref() != Some(new_secret) {
            secret_changed(s, &c, old.as_deref(), &mut secondaries);
            if let Some(o) = c.as_object_mut() {
                o.insert("clientSecretChangedTime".into(), json!(now()));
            }
        }
        c["clientAuth"]["secondarySecrets"] = Value::Array(secondaries);
        s.clients.insert(id.to_string(), c.clone());
        client_saved(s, id);
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

    /// A client as the admin node stores it. Its `clientAuth.encryptedSecret` is the at-rest
    /// ciphertext, stable until the secret changes; a `GET` over HTTP shows a fresh ciphertext
    /// instead (see [`SimHandle::client_secret`] for the plaintext).
    pub fn client(&self, id: &str) -> Option<Value> {
        self.lock().clients.get(id).cloned()
    }

    /// Edits a stored client directly (like a change made in the admin console), unvalidated. A
    /// plaintext `clientAuth.secret` set here becomes the new secret; in a cluster the change
    /// needs replication like any console change.
    pub fn update_client(&self, id: &str, f: impl FnOnce(&mut Value)) {
        let mut s = self.lock();
        let s = &mut *s;
        let Some(c) = s.clients.get_mut(id) else {
            return;
        };
        f(c);
        let c = c.clone();
        store_direct(s, c);
    }

    /// Stores a client directly, unvalidated (a plaintext `clientAuth.secret` is encrypted; an
    /// unknown `encryptedSecret` decrypts to a secret nobody knows).
    pub fn insert_client(&self, client: Value) {
        let mut s = self.lock();
        store_direct(&mut s, client);
    }

    /// The authorization server settings on the admin node.
    pub fn auth_server_settings(&self) -> Value {
        self.lock().settings.clone()
    }

    /// Edits the authorization server settings directly (console change), unvalidated.
    pub fn update_auth_server_settings(&self, f: impl FnOnce(&mut Value)) {
        let mut s = self.lock();
        f(&mut s.settings);
        settings_saved(&mut s);
    }

    /// Whether the admin node has changes the engines do not have yet (`replicationRequired`).
    /// Always false when standalone.
    pub fn replication_required(&self) -> bool {
        self.lock().cluster.replication_required
    }

    /// Replicates like the console's Replicate button (`POST /cluster/replicate` without HTTP).
    /// Returns false when standalone.
    pub fn replicate(&self) -> bool {
        let mut s = self.lock();
        if s.cluster.deployment == Deployment::Standalone {
            return false;
        }
        publish(&mut s, false);
        true
    }

    /// `GET /cluster/status` as PingFederate answers it; `None` when standalone.
    pub fn cluster_status(&self) -> Option<Value> {
        cluster_status(&self.lock())
    }

    /// Engine nodes: the configured count when clustered, 1 (the server itself) when standalone.
    pub fn engine_count(&self) -> usize {
        let s = self.lock();
        match s.cluster.deployment {
            Deployment::Standalone => 1,
            Deployment::Clustered => s.cluster.engines.len(),
        }
    }

    /// Takes an engine off the network (`false`: it misses replications and shows
    /// `OUT_OF_DATE`) or brings it back (`true`: it fetches the latest replicated configuration,
    /// as its periodic poll would).
    pub fn set_engine_reachable(&self, engine: usize, reachable: bool) {
        let mut s = self.lock();
        let s = &mut *s;
        let generation = s.cluster.generation;
        let (clients, settings) = (
            s.cluster.published_clients.clone(),
            s.cluster.published_settings.clone(),
        );
        if let Some(e) = s.cluster.engines.get_mut(engine) {
            e.reachable = reachable;
            if reachable && e.generation < generation {
                e.clients = clients;
                e.settings = settings;
                e.generation = generation;
                e.configuration_timestamp = now();
            }
        }
    }

    /// The client an engine node serves (what the token endpoint of that node would use), with
    /// its at-rest secret ciphertext. `None` when the engine does not know the client.
    pub fn engine_client(&self, engine: usize, id: &str) -> Option<Value> {
        engine_client_of(&self.lock(), engine, id)
    }

    /// The authorization server settings an engine node serves.
    pub fn engine_auth_server_settings(&self, engine: usize) -> Option<Value> {
        engine_settings_of(&self.lock(), engine).cloned()
    }

    /// Whether an engine node accepts `secret` for the client (its primary secret or an unexpired
    /// secondary secret).
    pub fn engine_accepts_client_secret(&self, engine: usize, id: &str, secret: &str) -> bool {
        let s = self.lock();
        let Some(c) = engine_client_of(&s, engine, id) else {
            return false;
        };
        if primary_secret(&s.cipher, &c).as_deref() == Some(secret) {
            return true;
        }
        let stamp = now();
        c["clientAuth"]["secondarySecrets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["expiryTime"].as_str().is_none_or(|t| t > stamp.as_str()))
            .any(|e| {
                e["encryptedSecret"]
                    .as_str()
                    .and_then(|ct| s.cipher.decrypt(ct))
                    == Some(secret)
            })
    }

    /// The refresh-token behaviour an engine node applies to a client.
    pub fn engine_refresh_policy(&self, engine: usize, id: &str) -> Option<RefreshPolicy> {
        let s = self.lock();
        let c = engine_client_of(&s, engine, id)?;
        let settings = engine_settings_of(&s, engine)?;
        Some(refresh_policy(s.version, &c, settings))
    }
}

impl Cluster {
    fn clustered(&self) -> bool {
        self.deployment == Deployment::Clustered
    }

    fn auto_replicates_clients(&self) -> bool {
        self.clustered() && self.storage == ClientStorage::Xml && self.replicate_clients_on_save
    }
}

// ---------------------------------------------------------------------------------------------
// State helpers (secrets, replication, engine views)

fn primary_secret(cipher: &Cipher, client: &Value) -> Option<String> {
    client["clientAuth"]["encryptedSecret"]
        .as_str()
        .and_then(|ct| cipher.decrypt(ct))
        .map(str::to_string)
}

/// Minutes a replaced secret is retained: the client override or the server default.
fn retention_minutes(client: &Value, settings: &Value) -> i64 {
    if client["clientSecretRetentionPeriodType"] == "OVERRIDE_SERVER_DEFAULT" {
        client["clientSecretRetentionPeriod"].as_i64().unwrap_or(0)
    } else {
        settings["clientSecretRetentionPeriod"]
            .as_i64()
            .unwrap_or(0)
    }
}

/// Book-keeping when a client's secret changes from `old`: counts it and, with a retention
/// period, keeps the old secret as a secondary secret.
fn secret_changed(
    s: &mut SimState,
    client: &Value,
    old: Option<&str>,
    secondaries: &mut Vec<Value>,
) {
    s.secret_changes += 1;
    let minutes = retention_minutes(client, &s.settings);
    if let Some(old) = old
        && minutes > 0
    {
        let expiry = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(minutes.saturating_mul(60)))
            .unwrap_or(jiff::Timestamp::MAX);
        let ct = s.cipher.encrypt(old);
        secondaries.push(json!({
            "encryptedSecret": ct,
            "expiryTime": expiry.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        }));
    }
}

/// Stores a console-edited client: encrypts a plaintext secret, adopts unknown ciphertexts.
fn store_direct(s: &mut SimState, mut client: Value) {
    let id = client["clientId"].as_str().unwrap_or_default().to_string();
    let before = s
        .clients
        .get(&id)
        .and_then(|c| primary_secret(&s.cipher, c));
    let plaintext = client["clientAuth"]["secret"].as_str().map(str::to_string);
    if let Some(a) = client.get_mut("clientAuth").and_then(Value::as_object_mut) {
        a.remove("secret");
        if let Some(p) = &plaintext {
            let ct = s.cipher.encrypt(p);
            a.insert("encryptedSecret".into(), json!(ct));
        } else if let Some(ct) = a.get("encryptedSecret").and_then(Value::as_str) {
            let ct = ct.to_string();
            s.cipher.adopt(&ct);
        }
    }
    if let Some(p) = &plaintext
        && before.as_deref() != Some(p.as_str())
    {
        let mut secondaries = client["clientAuth"]["secondarySecrets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        secret_changed(s, &client, before.as_deref(), &mut secondaries);
        client["clientAuth"]["secondarySecrets"] = Value::Array(secondaries);
        if let Some(o) = client.as_object_mut() {
            o.insert("clientSecretChangedTime".into(), json!(now()));
        }
    }
    s.clients.insert(id.clone(), client);
    client_saved(s, &id);
}

/// Cluster effects of saving (or deleting) a client on the admin node.
fn client_saved(s: &mut SimState, id: &str) {
    let c = &mut s.cluster;
    if !c.clustered() {
        return;
    }
    c.last_config_update = now();
    match c.storage {
        ClientStorage::Database => {}
        ClientStorage::Xml if c.replicate_clients_on_save => {
            let client = s.clients.get(id).cloned();
            let mut all = true;
            for e in &mut c.engines {
                if !e.reachable {
                    all = false;
                    continue;
                }
                match &client {
                    Some(v) => e.clients.insert(id.to_string(), v.clone()),
                    None => e.clients.remove(id),
                };
            }
            match &client {
                Some(v) => c.published_clients.insert(id.to_string(), v.clone()),
                None => c.published_clients.remove(id),
            };
            if let Some(stored) = s.clients.get_mut(id).and_then(Value::as_object_mut) {
                stored.insert(
                    "replicationStatus".into(),
                    json!(if all { "REPLICATED" } else { "NOT_REPLICATED" }),
                );
                if let Some(p) = c.published_clients.get_mut(id) {
                    *p = Value::Object(stored.clone());
                }
                for e in c.engines.iter_mut().filter(|e| e.reachable) {
                    e.clients
                        .insert(id.to_string(), Value::Object(stored.clone()));
                }
            }
        }
        ClientStorage::Xml => c.replication_required = true,
    }
}

/// Cluster effects of changing authorization server settings or scopes on the admin node.
fn settings_saved(s: &mut SimState) {
    if s.cluster.clustered() {
        s.cluster.last_config_update = now();
        s.cluster.replication_required = true;
    }
}

/// Publishes the admin configuration as new replication data; reachable engines apply it.
fn publish(s: &mut SimState, initial: bool) {
    let stamp = now();
    let c = &mut s.cluster;
    c.generation += 1;
    c.published_clients = s.clients.clone();
    c.published_settings = s.settings.clone();
    c.replication_required = false;
    c.last_replication = stamp.clone();
    if initial {
        c.last_config_update = stamp.clone();
    }
    for e in c.engines.iter_mut().filter(|e| e.reachable || initial) {
        e.clients = c.published_clients.clone();
        e.settings = c.published_settings.clone();
        e.generation = c.generation;
        e.configuration_timestamp = stamp.clone();
    }
}

fn engine_client_of(s: &SimState, engine: usize, id: &str) -> Option<Value> {
    match s.cluster.deployment {
        Deployment::Standalone => (engine == 0).then(|| s.clients.get(id).cloned())?,
        Deployment::Clustered => {
            let e = s.cluster.engines.get(engine)?;
            match s.cluster.storage {
                ClientStorage::Database => s.clients.get(id).cloned(),
                ClientStorage::Xml => e.clients.get(id).cloned(),
            }
        }
    }
}

fn engine_settings_of(s: &SimState, engine: usize) -> Option<&Value> {
    match s.cluster.deployment {
        Deployment::Standalone => (engine == 0).then_some(&s.settings),
        Deployment::Clustered => s.cluster.engines.get(engine).map(|e| &e.settings),
    }
}

fn cluster_status(s: &SimState) -> Option<Value> {
    let c = &s.cluster;
    if !c.clustered() {
        return None;
    }
    let version = s.version.version_string();
    let mut nodes = vec![json!({
        "address": "10.0.0.10:7600",
        "mode": "CLUSTERED_CONSOLE",
        "index": 0,
        "nodeGroup": "",
        "version": version,
        "replicationStatus": "SUCCEEDED",
        "configurationTimestamp": c.last_config_update,
    })];
    for (i, e) in c.engines.iter().enumerate() {
        nodes.push(json!({
            "address": e.address,
            "mode": "CLUSTERED_ENGINE",
            "index": i + 1,
            "nodeGroup": "",
            "version": version,
            "replicationStatus": if e.generation < c.generation { "OUT_OF_DATE" } else { "SUCCEEDED" },
            "configurationTimestamp": e.configuration_timestamp,
        }));
    }
    let mut out = json!({
        "nodes": nodes,
        "lastConfigUpdateTime": c.last_config_update,
        "lastReplicationTime": c.last_replication,
        "replicationRequired": c.replication_required,
        "mixedMode": false,
    });
    if s.version == PfVersion::V12_1 {
        out["currentNodeIndex"] = json!(0);
    }
    Some(out)
}

fn seconds(amount: i64, unit: &Value) -> i64 {
    amount.saturating_mul(match unit.as_str() {
        Some("SECONDS") => 1,
        Some("MINUTES") => 60,
        Some("HOURS") => 3600,
        _ => 86_400,
    })
}

fn refresh_policy(version: PfVersion, c: &Value, settings: &Value) -> RefreshPolicy {
    let lifetime =
        |ty: &str, time: &str, unit: &str, server: &str, server_unit: &str| match c[ty].as_str() {
            Some("INDEFINITE_EXPIRY") => None,
            Some("OVERRIDE_SERVER_DEFAULT") => match c[time].as_i64() {
                Some(-1) | None => None,
                Some(t) => Some(seconds(t, &c[unit])),
            },
            _ => match settings[server].as_i64() {
                Some(-1) | None => None,
                Some(t) => Some(seconds(t, &settings[server_unit])),
            },
        };
    let offline_defined = ["scopes", "exclusiveScopes"]
        .iter()
        .any(|l| find_scope(settings, l, "offline_access").is_some());
    let offline_permitted = c["restrictScopes"] != true
        || c["restrictedScopes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "offline_access"));
    RefreshPolicy {
        refresh_token_grant: c["grantTypes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "REFRESH_TOKEN")),
        offline_access_allowed: offline_defined && offline_permitted,
        requires_offline_access_scope: version == PfVersion::V12_1
            && match c["requireOfflineAccessScopeToIssueRefreshTokens"].as_str() {
                Some("YES") => true,
                Some("NO") => false,
                _ => settings["requireOfflineAccessScopeToIssueRefreshTokens"] == true,
            },
        roll: match c["refreshRolling"].as_str() {
            Some("ROLL") => true,
            Some("DONT_ROLL") => false,
            _ => settings["rollRefreshTokenValues"].as_bool().unwrap_or(true),
        },
        rolling_grace_period_secs: if c["refreshTokenRollingGracePeriodType"]
            == "OVERRIDE_SERVER_DEFAULT"
        {
            c["refreshTokenRollingGracePeriod"].as_i64().unwrap_or(0)
        } else {
            settings["refreshTokenRollingGracePeriod"]
                .as_i64()
                .unwrap_or(60)
        },
        max_lifetime_secs: lifetime(
            "persistentGrantExpirationType",
            "persistentGrantExpirationTime",
            "persistentGrantExpirationTimeUnit",
            "persistentGrantLifetime",
            "persistentGrantLifetimeUnit",
        ),
        idle_timeout_secs: lifetime(
            "persistentGrantIdleTimeoutType",
            "persistentGrantIdleTimeout",
            "persistentGrantIdleTimeoutTimeUnit",
            "persistentGrantIdleTimeout",
            "persistentGrantIdleTimeoutTimeUnit",
        ),
    }
}

/// The `coder` client in its pre-refresh-token state, as stored (its `clientAuth.encryptedSecret`
/// is the at-rest ciphertext [`SEED_CIPHERTEXT`] of [`SEED_SECRET`]; a `GET` shows a fresh
/// ciphertext instead). 12.1: without `replicationStatus`, which PingFederate only reports with
/// XML client storage and "replicate clients on save" (see [`SimConfig::replicate_clients_on_save`]).
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
            "encryptedSecret": secrets::SEED_CIPHERTEXT,
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
        "rollRefreshTokenValues": true,
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

fn no_content() -> Answer {
    Answer {
        status: 204,
        body: None,
        retry_after: None,
    }
}

fn api_error(status: u16, result_id: &str, message: &str) -> Answer {
    ok(status, json!({"resultId": result_id, "message": message}))
}

fn not_found() -> Answer {
    api_error(404, "resource_not_found", "Resource not found.")
}

fn error_list(errors: &[FieldError]) -> Vec<Value> {
    errors
        .iter()
        .map(|e| json!({"errorId": e.error_id, "fieldPath": e.field_path, "message": e.message}))
        .collect()
}

fn validation_error(errors: &[FieldError]) -> Answer {
    ok(
        422,
        json!({
            "resultId": "validation_error",
            "message": "Validation error(s) occurred. Please review the error(s) and address accordingly.",
            "validationErrors": error_list(errors),
        }),
    )
}

/// Errors that stop the body from being read into the model at all (PingFederate: 400 "The
/// request was improperly formatted or contained invalid fields").
fn is_unreadable(e: &FieldError) -> bool {
    matches!(
        e.error_id.as_str(),
        "unrecognized_field" | "invalid_type" | "invalid_enum_value" | "invalid_number"
    )
}

fn bad_request(first: Option<&FieldError>) -> Answer {
    let mut body = json!({
        "resultId": "invalid_request_body",
        "message": "The request was improperly formatted or contained invalid fields.",
    });
    if let Some(e) = first {
        body["validationErrors"] = Value::Array(error_list(std::slice::from_ref(e)));
    }
    ok(400, body)
}

/// 400 for the first unreadable field, else 422 with every error, else `None`.
fn reject(errors: &[FieldError]) -> Option<Answer> {
    if errors.is_empty() {
        return None;
    }
    Some(match errors.iter().find(|e| is_unreadable(e)) {
        Some(e) => bad_request(Some(e)),
        None => validation_error(errors),
    })
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
        "/cluster/status" => ("/cluster/status", None),
        "/cluster/replicate" => ("/cluster/replicate", None),
        "/cluster/settings" => ("/cluster/settings", None),
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

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
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
    let hooks = lock(&shared).hooks.clone();
    hooks.delay().await;
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query());
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

    let mut guard = lock(&shared);
    let s = &mut *guard;
    let answer = process(
        s,
        Incoming {
            method: &method,
            route: route.clone(),
            query: &query,
            xsrf,
            creds: creds.as_ref(),
            json_content,
            bytes: &bytes,
        },
    );
    let template = route.map(|(t, _)| t).unwrap_or("(unknown)").to_string();
    s.hooks.count(&method, &template, answer.status);
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
    sim_kit::set_retry_after(&mut resp, answer.retry_after);
    if answer.status == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"PingFederate\""),
        );
    }
    resp
}

struct Incoming<'a> {
    method: &'a str,
    route: Option<(&'static str, Option<String>)>,
    query: &'a BTreeMap<String, String>,
    xsrf: bool,
    creds: Option<&'a (String, String)>,
    json_content: bool,
    bytes: &'a [u8],
}

fn process(s: &mut SimState, req: Incoming<'_>) -> Answer {
    let method = req.method;
    let Some((template, param)) = req.route else {
        return not_found();
    };
    if let Some(fault) = s.hooks.take_fault() {
        let mut a = api_error(fault.code, "simulated_failure", "Simulated failure.");
        a.retry_after = fault.retry_after;
        return a;
    }
    if !req.xsrf {
        return api_error(
            403,
            "missing_xsrf_header",
            "The X-XSRF-Header header is required on every administrative API request.",
        );
    }
    let role = match req.creds {
        Some((u, p)) => match s.accounts.get(u) {
            Some(a) if a.password == *p => a.role,
            _ => return api_error(401, "unauthorized", "Authentication failed."),
        },
        None => return api_error(401, "unauthorized", "Authentication required."),
    };
    let version = s.version;
    // Routes this version does not have at all.
    if template == "/cluster/settings" && version == PfVersion::V11_3 {
        return not_found();
    }
    let write = method != "GET" && method != "HEAD";
    if write && role != AdminRole::Admin {
        return api_error(
            403,
            "insufficient_privileges",
            "The account does not have the Administrator role required to change the configuration.",
        );
    }
    let takes_body = matches!(method, "PUT" | "POST") && template != "/cluster/replicate";
    let body: Option<Value> = if takes_body {
        if !req.json_content {
            return api_error(
                415,
                "unsupported_media_type",
                "Content-Type must be application/json.",
            );
        }
        match serde_json::from_slice::<Value>(req.bytes) {
            Ok(v) if v.is_object() => Some(v),
            _ => return bad_request(None),
        }
    } else {
        None
    };
    let id = param.unwrap_or_default();
    match (method, template) {
        ("GET", "/version") => ok(200, json!({"version": version.version_string()})),
        ("GET", "/oauth/clients") => list_clients(s, req.query),
        ("POST", "/oauth/clients") => save_client(s, None, body.unwrap_or_default()),
        ("GET", "/oauth/clients/{id}") => match s.clients.get(&id).cloned() {
            Some(c) => ok(200, render_client(s, &c)),
            None => not_found(),
        },
        ("PUT", "/oauth/clients/{id}") => save_client(s, Some(&id), body.unwrap_or_default()),
        ("DELETE", "/oauth/clients/{id}") => {
            if s.clients.remove(&id).is_none() {
                return not_found();
            }
            client_saved(s, &id);
            no_content()
        }
        ("GET", "/oauth/authServerSettings") => ok(200, s.settings.clone()),
        ("PUT", "/oauth/authServerSettings") => put_settings(s, body.unwrap_or_default()),
        ("GET", "/oauth/authServerSettings/scopes/commonScopes") if version != PfVersion::V11_3 => {
            list_scopes(s, req.query)
        }
        ("POST", "/oauth/authServerSettings/scopes/commonScopes") => {
            add_scope(s, None, body.unwrap_or_default())
        }
        ("GET", "/oauth/authServerSettings/scopes/commonScopes/{name}") => {
            match find_scope(&s.settings, "scopes", &id) {
                Some(i) => ok(200, s.settings["scopes"][i].clone()),
                None => not_found(),
            }
        }
        ("PUT", "/oauth/authServerSettings/scopes/commonScopes/{name}") => {
            add_scope(s, Some(&id), body.unwrap_or_default())
        }
        ("DELETE", "/oauth/authServerSettings/scopes/commonScopes/{name}") => {
            match find_scope(&s.settings, "scopes", &id) {
                Some(i) => {
                    if let Some(a) = s.settings["scopes"].as_array_mut() {
                        a.remove(i);
                    }
                    settings_saved(s);
                    no_content()
                }
                None => not_found(),
            }
        }
        ("GET", "/cluster/status") => match cluster_status(s) {
            Some(v) => ok(200, v),
            None => api_error(403, "not_clustered", NOT_CLUSTERED_MESSAGE),
        },
        ("POST", "/cluster/replicate") => {
            if !s.cluster.clustered() {
                return api_error(403, "not_clustered", NOT_CLUSTERED_MESSAGE);
            }
            publish(s, false);
            api_error(200, "success", "Replication completed successfully.")
        }
        ("GET", "/cluster/settings") => {
            if !s.cluster.clustered() {
                return api_error(403, "not_clustered", NOT_CLUSTERED_MESSAGE);
            }
            ok(200, cluster_settings(&s.cluster))
        }
        ("PUT", "/cluster/settings") => {
            if !s.cluster.clustered() {
                return api_error(403, "not_clustered", NOT_CLUSTERED_MESSAGE);
            }
            put_cluster_settings(s, body.unwrap_or_default())
        }
        _ => api_error(405, "method_not_allowed", "Method not allowed."),
    }
}

fn cluster_settings(c: &Cluster) -> Value {
    json!({
        "replicateClientsOnSave": c.replicate_clients_on_save,
        "replicateConnectionsOnSave": false,
    })
}

fn put_cluster_settings(s: &mut SimState, body: Value) -> Answer {
    let mut errors = Vec::new();
    for (k, v) in body.as_object().into_iter().flatten() {
        match k.as_str() {
            "replicateClientsOnSave" | "replicateConnectionsOnSave" => {
                if !v.is_boolean() && !v.is_null() {
                    errors.push(field_error(
                        k,
                        "invalid_type",
                        "Invalid value type: expected boolean.".into(),
                    ));
                }
            }
            _ => errors.push(field_error(
                k,
                "unrecognized_field",
                format!("Unrecognized field '{k}'."),
            )),
        }
    }
    if let Some(a) = reject(&errors) {
        return a;
    }
    s.cluster.replicate_clients_on_save = body["replicateClientsOnSave"] == true;
    ok(200, cluster_settings(&s.cluster))
}

fn positive_int(query: &BTreeMap<String, String>, key: &str) -> Result<Option<usize>, FieldError> {
    match query.get(key) {
        None => Ok(None),
        Some(v) => match v.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(Some(n as usize)),
            _ => Err(field_error(
                key,
                "invalid_query_parameter",
                format!("{key} must be a positive integer."),
            )),
        },
    }
}

/// `page` (1-based) and `numberPerPage` (everything when absent) over `items`.
fn paginate(
    items: Vec<Value>,
    query: &BTreeMap<String, String>,
) -> Result<Vec<Value>, Vec<FieldError>> {
    let page = positive_int(query, "page");
    let per = positive_int(query, "numberPerPage");
    let errors: Vec<FieldError> = [&page, &per]
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let (page, per) = (page.ok().flatten(), per.ok().flatten());
    let offset = match per {
        Some(n) => page.unwrap_or(1).saturating_sub(1).saturating_mul(n),
        None => 0,
    };
    Ok(sim_kit::window(items, offset, per))
}

fn list_clients(s: &mut SimState, query: &BTreeMap<String, String>) -> Answer {
    let filter = query.get("filter").map(|f| f.to_lowercase());
    let matching: Vec<Value> = s
        .clients
        .values()
        .filter(|c| {
            filter.as_deref().is_none_or(|f| {
                ["clientId", "name"]
                    .iter()
                    .any(|k| c[*k].as_str().is_some_and(|v| v.to_lowercase().contains(f)))
            })
        })
        .cloned()
        .collect();
    match paginate(matching, query) {
        Ok(page) => {
            let items: Vec<Value> = page.iter().map(|c| render_client(s, c)).collect();
            ok(200, json!({ "items": items }))
        }
        Err(errors) => validation_error(&errors),
    }
}

fn list_scopes(s: &SimState, query: &BTreeMap<String, String>) -> Answer {
    let filter = query.get("filter").map(|f| f.to_lowercase());
    let mut items: Vec<Value> = s.settings["scopes"].as_array().cloned().unwrap_or_default();
    if query.get("includeDefaultOpenId").map(String::as_str) == Some("true")
        && find_scope(&s.settings, "scopes", "openid").is_none()
    {
        items.push(
            json!({"name": "openid", "description": "Default OpenID scope", "dynamic": false}),
        );
    }
    items.retain(|e| {
        filter.as_deref().is_none_or(|f| {
            e["name"]
                .as_str()
                .is_some_and(|n| n.to_lowercase().contains(f))
        })
    });
    items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    match query.get("sortOrder").map(String::as_str) {
        None | Some("ASC") => {}
        Some("DESC") => items.reverse(),
        Some(_) => {
            return validation_error(&[field_error(
                "sortOrder",
                "invalid_query_parameter",
                "sortOrder must be ASC or DESC.".into(),
            )]);
        }
    }
    let total = items.len();
    match paginate(items, query) {
        Ok(page) => ok(200, json!({"items": page, "totalItems": total})),
        Err(errors) => validation_error(&errors),
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

/// A stored client as `GET` shows it: every secret ciphertext freshly re-encrypted, expired
/// secondary secrets gone.
fn render_client(s: &mut SimState, stored: &Value) -> Value {
    let mut c = stored.clone();
    let stamp = now();
    let Some(auth) = c.get_mut("clientAuth").and_then(Value::as_object_mut) else {
        return c;
    };
    if let Some(p) = auth
        .get("encryptedSecret")
        .and_then(Value::as_str)
        .and_then(|ct| s.cipher.decrypt(ct))
        .map(str::to_string)
    {
        let fresh = s.cipher.encrypt(&p);
        auth.insert("encryptedSecret".into(), json!(fresh));
    }
    if let Some(list) = auth
        .get_mut("secondarySecrets")
        .and_then(Value::as_array_mut)
    {
        list.retain(|e| e["expiryTime"].as_str().is_none_or(|t| t > stamp.as_str()));
        for e in list.iter_mut() {
            if let Some(p) = e["encryptedSecret"]
                .as_str()
                .and_then(|ct| s.cipher.decrypt(ct))
                .map(str::to_string)
            {
                e["encryptedSecret"] = json!(s.cipher.encrypt(&p));
            }
        }
    }
    c
}

/// Override type + value pairs: (type field, value field, unit field or "", allowed minimum).
const OVERRIDES: [(&str, &str, &str, i64); 5] = [
    (
        "persistentGrantExpirationType",
        "persistentGrantExpirationTime",
        "persistentGrantExpirationTimeUnit",
        1,
    ),
    (
        "persistentGrantIdleTimeoutType",
        "persistentGrantIdleTimeout",
        "persistentGrantIdleTimeoutTimeUnit",
        1,
    ),
    (
        "refreshTokenRollingIntervalType",
        "refreshTokenRollingInterval",
        "",
        0,
    ),
    (
        "refreshTokenRollingGracePeriodType",
        "refreshTokenRollingGracePeriod",
        "",
        0,
    ),
    (
        "clientSecretRetentionPeriodType",
        "clientSecretRetentionPeriod",
        "",
        0,
    ),
];

/// `PUT /oauth/clients/{id}` (`id` given) or `POST /oauth/clients`.
fn save_client(s: &mut SimState, id: Option<&str>, body: Value) -> Answer {
    let stored = match id {
        Some(id) => match s.clients.get(id).cloned() {
            Some(c) => Some(c),
            None => return not_found(),
        },
        None => None,
    };
    let mut errors = schema::validate(s.version, "Client", &body);
    if let Some(a) = errors
        .iter()
        .find(|e| is_unreadable(e))
        .map(|e| bad_request(Some(e)))
    {
        return a;
    }
    let id = match id {
        Some(id) => {
            if body["clientId"].as_str().is_some_and(|c| c != id) {
                errors.push(field_error(
                    "clientId",
                    "client_id_mismatch",
                    "The client ID in the body does not match the client ID in the path.".into(),
                ));
            }
            id.to_string()
        }
        None => {
            let new_id = body["clientId"].as_str().unwrap_or_default().to_string();
            if s.clients.contains_key(&new_id) {
                errors.push(field_error(
                    "clientId",
                    "duplicate_client_id",
                    format!("The client ID '{new_id}' is already in use."),
                ));
            }
            new_id
        }
    };
    for (list, field) in [
        ("scopes", "restrictedScopes"),
        ("exclusiveScopes", "exclusiveScopes"),
    ] {
        for (i, sc) in body[field].as_array().into_iter().flatten().enumerate() {
            if let Some(name) = sc.as_str()
                && !scope_defined(&s.settings, list, name)
                && !(field == "restrictedScopes"
                    && scope_defined(&s.settings, "exclusiveScopes", name))
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
    for (ty, value, unit, min) in OVERRIDES {
        if body[ty] != "OVERRIDE_SERVER_DEFAULT" {
            continue;
        }
        // -1 is "indefinite" for the grant lifetimes.
        let fine = |t: i64| t >= min || (min == 1 && t == -1);
        if body[value].as_i64().is_none_or(|t| !fine(t)) {
            errors.push(field_error(
                value,
                "invalid_value",
                if min == 1 {
                    format!(
                        "{value} must be a positive number, or -1 for indefinite, when {ty} is OVERRIDE_SERVER_DEFAULT."
                    )
                } else {
                    format!("{value} is required when {ty} is OVERRIDE_SERVER_DEFAULT.")
                },
            ));
        }
        if !unit.is_empty() && !body[unit].is_string() {
            errors.push(field_error(
                unit,
                "required_field_missing",
                format!("{unit} is required when {ty} is OVERRIDE_SERVER_DEFAULT."),
            ));
        }
    }
    // The secret: a plaintext sets a new one; otherwise any ciphertext this server issued.
    let auth = &body["clientAuth"];
    let plaintext = auth["secret"]
        .as_str()
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    let mut new_secret: Option<(String, Option<String>)> = None; // (plaintext, given ciphertext)
    if auth["type"] == "SECRET" || auth["type"] == "CLIENT_SECRET_JWT" {
        match (&plaintext, auth["encryptedSecret"].as_str()) {
            (Some(p), _) => new_secret = Some((p.clone(), None)),
            (None, None) => errors.push(field_error(
                "clientAuth.secret",
                "required_field_missing",
                "A client secret is required for client authentication type SECRET.".into(),
            )),
            (None, Some(ct)) => match s.cipher.decrypt(ct) {
                Some(p) => new_secret = Some((p.to_string(), Some(ct.to_string()))),
                None => errors.push(field_error(
                    "clientAuth.encryptedSecret",
                    "invalid_encrypted_secret",
                    "The encrypted secret could not be decrypted.".into(),
                )),
            },
        }
    }
    let mut secondaries = Vec::new();
    for (i, e) in auth["secondarySecrets"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("clientAuth.secondarySecrets[{i}]");
        if !e["expiryTime"].is_string() {
            errors.push(field_error(
                &format!("{path}.expiryTime"),
                "required_field_missing",
                "The expiry time of a secondary secret is required.".into(),
            ));
        }
        let ct = match (
            e["secret"].as_str().filter(|p| !p.is_empty()),
            e["encryptedSecret"].as_str(),
        ) {
            (Some(p), _) => Some(s.cipher.encrypt(p)),
            (None, Some(ct)) if s.cipher.decrypt(ct).is_some() => Some(ct.to_string()),
            (None, Some(_)) => {
                errors.push(field_error(
                    &format!("{path}.encryptedSecret"),
                    "invalid_encrypted_secret",
                    "The encrypted secret could not be decrypted.".into(),
                ));
                None
            }
            (None, None) => {
                errors.push(field_error(
                    &format!("{path}.secret"),
                    "required_field_missing",
                    "A secondary secret needs secret or encryptedSecret.".into(),
                ));
                None
            }
        };
        if let Some(ct) = ct {
            secondaries.push(json!({"encryptedSecret": ct, "expiryTime": e["expiryTime"]}));
        }
    }
    if let Some(a) = reject(&errors) {
        return a;
    }

    let stamp = now();
    let old_secret = stored.as_ref().and_then(|c| primary_secret(&s.cipher, c));
    let mut new = body;
    let secret_ct = match &new_secret {
        None => None,
        // Unchanged: keep the at-rest ciphertext.
        Some((p, _)) if old_secret.as_deref() == Some(p.as_str()) => stored
            .as_ref()
            .and_then(|c| c["clientAuth"]["encryptedSecret"].as_str())
            .map(str::to_string),
        Some((_, Some(ct))) => Some(ct.clone()),
        Some((p, None)) => Some(s.cipher.encrypt(p)),
    };
    let changed = new_secret.as_ref().map(|(p, _)| p.as_str()) != old_secret.as_deref();
    if changed && new_secret.is_some() {
        secret_changed(s, &new, old_secret.as_deref(), &mut secondaries);
    }
    if plaintext.is_some() {
        s.rotations += 1;
    }
    if let Some(o) = new.as_object_mut() {
        // Read-only fields are the server's.
        for ro in [
            "creationDate",
            "replicationStatus",
            "clientSecretChangedTime",
        ] {
            match stored.as_ref().and_then(|c| c.get(ro)) {
                Some(v) => {
                    o.insert(ro.into(), v.clone());
                }
                None => {
                    o.remove(ro);
                }
            }
        }
        if stored.is_none() {
            o.insert("creationDate".into(), json!(stamp));
        }
        o.insert("modificationDate".into(), json!(stamp));
        if changed && new_secret.is_some() {
            o.insert("clientSecretChangedTime".into(), json!(stamp));
        } else if new_secret.is_none() {
            o.remove("clientSecretChangedTime");
        }
        if let Some(a) = o.get_mut("clientAuth").and_then(Value::as_object_mut) {
            a.remove("secret");
            match &secret_ct {
                Some(ct) => {
                    a.insert("encryptedSecret".into(), json!(ct));
                }
                None => {
                    a.remove("encryptedSecret");
                }
            }
            if new_secret.is_some() || !secondaries.is_empty() {
                a.insert("secondarySecrets".into(), Value::Array(secondaries));
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
    s.clients.insert(id.clone(), new);
    client_saved(s, &id);
    let saved = s.clients.get(&id).cloned().unwrap_or_default();
    ok(
        if stored.is_some() { 200 } else { 201 },
        render_client(s, &saved),
    )
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
    for (field, unit) in [
        ("persistentGrantLifetime", "persistentGrantLifetimeUnit"),
        (
            "persistentGrantIdleTimeout",
            "persistentGrantIdleTimeoutTimeUnit",
        ),
    ] {
        if let Some(t) = body[field].as_i64()
            && t != -1
            && t < 1
        {
            errors.push(field_error(
                field,
                "invalid_value",
                format!("{field} must be a positive number, or -1 for indefinite."),
            ));
        }
        if body[field].as_i64().is_some_and(|t| t != -1) && !body[unit].is_string() {
            errors.push(field_error(
                unit,
                "required_field_missing",
                format!("{unit} is required when {field} is set."),
            ));
        }
    }
    if body["refreshTokenRollingGracePeriod"]
        .as_i64()
        .is_some_and(|t| t < 0)
    {
        errors.push(field_error(
            "refreshTokenRollingGracePeriod",
            "invalid_value",
            "refreshTokenRollingGracePeriod cannot be negative.".into(),
        ));
    }
    if let Some(a) = reject(&errors) {
        return a;
    }
    let mut new = body;
    if s.version == PfVersion::V12_1
        && let Some(o) = new.as_object_mut()
        && o.get("requireOfflineAccessScopeToIssueRefreshTokens") != Some(&json!(true))
    {
        o.insert("offlineAccessRequireConsentPrompt".into(), json!(false));
    }
    s.settings = new.clone();
    settings_saved(s);
    ok(200, new)
}

/// `POST …/commonScopes` (`name` absent) or `PUT …/commonScopes/{name}`.
fn add_scope(s: &mut SimState, name: Option<&str>, body: Value) -> Answer {
    let mut errors = schema::validate(s.version, "ScopeEntry", &body);
    let existing = name.map(|n| find_scope(&s.settings, "scopes", n));
    if existing == Some(None) {
        return not_found();
    }
    if let Some(n) = body["name"].as_str() {
        if n.is_empty() || n.contains(char::is_whitespace) {
            errors.push(field_error(
                "name",
                "invalid_scope_name",
                "Scope names cannot be empty or contain spaces.".into(),
            ));
        } else if let Some(path_name) = name {
            if n != path_name {
                errors.push(field_error(
                    "name",
                    "scope_name_mismatch",
                    "The scope name in the body does not match the name in the path.".into(),
                ));
            }
        } else if find_scope(&s.settings, "scopes", n).is_some()
            || find_scope(&s.settings, "exclusiveScopes", n).is_some()
        {
            errors.push(field_error(
                "name",
                "duplicate_scope",
                format!("The scope '{n}' already exists."),
            ));
        }
    }
    if let Some(a) = reject(&errors) {
        return a;
    }
    match existing.flatten() {
        Some(i) => s.settings["scopes"][i] = body.clone(),
        None => match s.settings.get_mut("scopes").and_then(Value::as_array_mut) {
            Some(a) => a.push(body.clone()),
            None => {
                if let Some(o) = s.settings.as_object_mut() {
                    o.insert("scopes".into(), json!([body.clone()]));
                }
            }
        },
    }
    settings_saved(s);
    ok(if name.is_some() { 200 } else { 201 }, body)
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
                "refreshTokenRollingIntervalTimeUnit",
                "enableCookielessAuthenticationApi",
                "requireOfflineAccessScopeToIssueRefreshTokens",
                "offlineAccessRequireConsentPrompt"
            ]
        );
    }

    #[test]
    fn routes_query_and_percent_decoding() {
        assert_eq!(
            route_of("/pf-admin-api/v1/oauth/clients/my%20client"),
            Some(("/oauth/clients/{id}", Some("my client".to_string())))
        );
        assert_eq!(route_of("/pf-admin-api/v1/oauth/clients/a/b"), None);
        assert_eq!(route_of("/other"), None);
        assert_eq!(
            route_of("/pf-admin-api/v1/cluster/status"),
            Some(("/cluster/status", None))
        );
        let q = parse_query(Some("filter=My+App&page=2&numberPerPage=%31"));
        assert_eq!(q["filter"], "My App");
        assert_eq!(q["numberPerPage"], "1");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn refresh_policy_resolves_server_defaults_and_overrides() {
        let settings = default_settings(PfVersion::V12_1);
        let mut c = seed_client(PfVersion::V12_1);
        let p = refresh_policy(PfVersion::V12_1, &c, &settings);
        assert!(p.roll, "rollRefreshTokenValues defaults to true");
        assert_eq!(p.rolling_grace_period_secs, 60);
        assert_eq!(p.max_lifetime_secs, None);
        assert_eq!(p.idle_timeout_secs, Some(30 * 86_400));
        assert!(!p.refresh_token_grant);
        assert!(p.reuse_allowed(60) && !p.reuse_allowed(61));
        c["refreshTokenRollingGracePeriodType"] = json!("OVERRIDE_SERVER_DEFAULT");
        c["refreshTokenRollingGracePeriod"] = json!(0);
        c["persistentGrantExpirationType"] = json!("OVERRIDE_SERVER_DEFAULT");
        c["persistentGrantExpirationTime"] = json!(-1);
        let p = refresh_policy(PfVersion::V12_1, &c, &settings);
        assert!(p.roll);
        assert!(
            !p.reuse_allowed(0),
            "no grace period: a concurrent second redemption fails"
        );
        c["refreshTokenRollingGracePeriod"] = json!(1);
        assert!(refresh_policy(PfVersion::V12_1, &c, &settings).reuse_allowed(0));
        c["refreshTokenRollingGracePeriod"] = json!(0);
        c["refreshRolling"] = json!("DONT_ROLL");
        let p = refresh_policy(PfVersion::V12_1, &c, &settings);
        assert_eq!(p.rolling_grace_period_secs, 0);
        assert_eq!(p.max_lifetime_secs, None);
        assert!(
            p.reuse_allowed(3600),
            "not rolled: the same token stays valid"
        );
    }
}
