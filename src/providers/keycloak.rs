//! Keycloak (24–26) through its Admin REST API.
//!
//! # Authentication
//! The policy's Secret holds either `client-id` + `client-secret` (client-credentials grant of a
//! confidential client with a service account) or `username` + `password` (password grant through
//! the public `admin-cli` client), and optionally `ca.crt` (PEM bundle for a private CA; TLS
//! verification is never switched off). Tokens come from
//! `{url}/realms/{authRealm}/protocol/openid-connect/token` (`authRealm` defaults to `realm`) and
//! are cached in [`ProviderDeps::tokens`] until shortly before they expire, keyed by URL, auth
//! realm, Secret name, Secret `resourceVersion` and a hash of the credentials, so a rotated Secret
//! is picked up at once. A 401 from the admin API drops the token, fetches a new one and retries
//! the call once.
//!
//! Roles the admin account needs (realm-management client roles of the target realm, or of the
//! `<realm>-realm` client when it lives in `master`): `view-clients` (find the client, its scopes
//! and scope mappings), `manage-clients` (update the client, link the scope, map the role),
//! `view-realm` (read token settings and the `offline_access` role) and, only with
//! `allowRealmChanges`, `manage-realm`. `realm-admin` covers all of them.
//!
//! # What is configured
//! The client is found by `clientId` (never created or deleted). Updates read the client, change
//! only the attributes below and PUT the whole representation back (as `serde_json::Value`, so
//! every other field, attribute, redirect URI, the secret and fields this code does not know
//! survive untouched); everything is read back afterwards and compared.
//!
//! | policy (`spec.refreshTokens`) | Keycloak setting |
//! |---|---|
//! | always | client attribute `use.refresh.tokens` = `"true"` |
//! | `offlineAccess: true` | client scope `offline_access` linked to the client (optional, or already default); realm role `offline_access` in the client's realm scope mappings when `fullScopeAllowed` is false; Coder requests scope `offline_access` |
//! | `idleTimeout`, offline | client attribute `client.offline.session.idle.timeout` (seconds); realm `offlineSessionIdleTimeout` must be at least as long |
//! | `lifetime`, offline | client attribute `client.offline.session.max.lifespan` (seconds); realm `offlineSessionMaxLifespanEnabled` must be true and realm `offlineSessionMaxLifespan` at least as long |
//! | `idleTimeout`, not offline | client attribute `client.session.idle.timeout` (ordinary refresh tokens live in the SSO session); realm `ssoSessionIdleTimeout` must be at least as long |
//! | `lifetime`, not offline | client attribute `client.session.max.lifespan`; realm `ssoSessionMaxLifespan` must be at least as long |
//! | `accessTokenLifetime` | client attribute `access.token.lifespan` (seconds) |
//! | `rotation: Rotate` | realm `revokeRefreshToken` = true and `refreshTokenMaxReuse` = 0 |
//! | `rotation: Reuse` | realm `revokeRefreshToken` = false |
//!
//! With `offlineAccess: true` Coder gets offline tokens, governed by the realm's offline-session
//! settings; without it, ordinary refresh tokens that end with the SSO session, so the client
//! session attributes are the ones that apply. Realm settings affect every client of the realm:
//! they are changed (a partial realm PUT with only those fields) only when
//! `spec.provider.keycloak.allowRealmChanges` is true; otherwise `observe` and `apply` fail with
//! [`ProviderError::Unsupported`] naming each realm setting and the value it needs.
//!
//! Effective values follow Keycloak's rules: a client value (attribute, or the realm's
//! `client*` default when the attribute is unset or empty) caps the user-session value, and the
//! smaller one wins; the offline absolute lifetime applies only when the realm enables it.
//!
//! The realm's discovery document is checked too: `refresh_token` in `grant_types_supported` and
//! `offline_access` in `scopes_supported` (blocking when offline access is wanted).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::http::{self, error_for_status, truncate};
use super::{
    Applied, Change, CoderNeeds, Credentials, DesiredSettings, Finding, IdentityProvider,
    IdpSettings, Observation, ProviderDeps, ProviderError, ProviderKind, missing_credentials,
    show_duration,
};
use crate::crd::{KeycloakSpec, Rotation};

const KIND: ProviderKind = ProviderKind::Keycloak;
const OFFLINE_ACCESS: &str = "offline_access";

/// Client attribute: issue refresh tokens.
pub const ATTR_USE_REFRESH_TOKENS: &str = "use.refresh.tokens";
/// Client attribute: offline-session idle timeout (seconds).
pub const ATTR_OFFLINE_IDLE: &str = "client.offline.session.idle.timeout";
/// Client attribute: offline-session max lifespan (seconds).
pub const ATTR_OFFLINE_MAX: &str = "client.offline.session.max.lifespan";
/// Client attribute: client-session idle timeout (seconds).
pub const ATTR_SESSION_IDLE: &str = "client.session.idle.timeout";
/// Client attribute: client-session max lifespan (seconds).
pub const ATTR_SESSION_MAX: &str = "client.session.max.lifespan";
/// Client attribute: access-token lifespan (seconds).
pub const ATTR_ACCESS_TOKEN: &str = "access.token.lifespan";

/// Builds the provider for a policy.
pub fn connect(
    spec: &KeycloakSpec,
    credentials: Option<Credentials>,
    deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    let credentials = credentials.ok_or_else(|| missing_credentials(KIND))?;
    let base = normalize_base_url(&spec.url)?;
    let auth_realm = spec
        .auth_realm
        .clone()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| spec.realm.clone());
    let admin = AdminCredentials::from_secret(&credentials)?;
    let ca = credentials
        .get("ca.crt")
        .map(|c| c.expose_secret().as_bytes().to_vec());
    let client = deps.http.client(KIND, ca.as_deref())?;
    let mut hasher = Sha256::new();
    for part in admin.parts() {
        hasher.update(part.expose_secret().as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    let token_key = format!(
        "keycloak|{base}|{auth_realm}|{}|{}|{:x}",
        credentials.secret_name,
        credentials.version,
        u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
    );
    Ok(Arc::new(Keycloak {
        base,
        realm: spec.realm.clone(),
        client_id: spec.client_id.clone(),
        auth_realm,
        allow_realm_changes: spec.allow_realm_changes.unwrap_or(false),
        secret_name: credentials.secret_name.clone(),
        admin,
        http: client,
        deps: deps.clone(),
        token_key,
    }))
}

/// Normalizes the base URL: trims whitespace and trailing slashes and a trailing `/admin`; keeps a
/// legacy `/auth` prefix.
pub fn normalize_base_url(url: &str) -> Result<String, ProviderError> {
    let mut u = url.trim().trim_end_matches('/').to_string();
    if let Some(stripped) = u.strip_suffix("/admin") {
        u = stripped.trim_end_matches('/').to_string();
    }
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(u),
        _ => Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "spec.provider.keycloak.url {url:?} is not an http(s) URL such as https://sso.example.com"
            ),
        }),
    }
}

enum AdminCredentials {
    ClientCredentials {
        client_id: SecretString,
        client_secret: SecretString,
    },
    Password {
        username: SecretString,
        password: SecretString,
    },
}

impl AdminCredentials {
    fn from_secret(c: &Credentials) -> Result<Self, ProviderError> {
        let has = |k: &str| c.get(k).is_some();
        if has("client-id") || has("client-secret") {
            let v = c.require(KIND, &["client-id", "client-secret"])?;
            return Ok(AdminCredentials::ClientCredentials {
                client_id: v[0].clone(),
                client_secret: v[1].clone(),
            });
        }
        if has("username") || has("password") {
            let v = c.require(KIND, &["username", "password"])?;
            return Ok(AdminCredentials::Password {
                username: v[0].clone(),
                password: v[1].clone(),
            });
        }
        Err(ProviderError::InvalidSecret {
            provider: KIND,
            detail: format!(
                "Secret {:?} needs client-id + client-secret (client credentials of a client with a service account) or username + password (password grant through admin-cli); it has: {}",
                c.secret_name,
                c.keys_for_message()
            ),
        })
    }

    fn parts(&self) -> [&SecretString; 2] {
        match self {
            AdminCredentials::ClientCredentials {
                client_id,
                client_secret,
            } => [client_id, client_secret],
            AdminCredentials::Password { username, password } => [username, password],
        }
    }

    fn keys(&self) -> &'static str {
        match self {
            AdminCredentials::ClientCredentials { .. } => "client-id and client-secret",
            AdminCredentials::Password { .. } => "username and password",
        }
    }
}

/// Extracts Keycloak's message from an error body: `{"error","error_description"}`,
/// `{"errorMessage"}`, or plain text.
pub fn keycloak_message(body: &str) -> String {
    let body = body.trim();
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(body) {
        let s = |k: &str| o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        if let Some(m) = s("errorMessage") {
            return truncate(m, 300);
        }
        return match (s("error"), s("error_description")) {
            (Some(e), Some(d)) => truncate(&format!("{e}: {d}"), 300),
            (Some(e), None) => truncate(e, 300),
            (None, Some(d)) => truncate(d, 300),
            (None, None) => truncate(body, 300),
        };
    }
    truncate(body, 300)
}

/// The `error` code of a token-endpoint answer.
fn oauth_error_code(body: &str) -> Option<String> {
    serde_json::from_str::<Value>(body)
        .ok()?
        .get("error")?
        .as_str()
        .map(str::to_string)
}

/// Realm token/session settings (seconds).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RealmSettings {
    /// `accessTokenLifespan`.
    pub access_token_lifespan: u64,
    /// `ssoSessionIdleTimeout`.
    pub sso_idle: u64,
    /// `ssoSessionMaxLifespan`.
    pub sso_max: u64,
    /// `clientSessionIdleTimeout` (0 = none).
    pub client_session_idle: u64,
    /// `clientSessionMaxLifespan` (0 = none).
    pub client_session_max: u64,
    /// `offlineSessionIdleTimeout`.
    pub offline_idle: u64,
    /// `offlineSessionMaxLifespanEnabled`.
    pub offline_max_enabled: bool,
    /// `offlineSessionMaxLifespan`.
    pub offline_max: u64,
    /// `clientOfflineSessionIdleTimeout` (0 = none).
    pub client_offline_idle: u64,
    /// `clientOfflineSessionMaxLifespan` (0 = none).
    pub client_offline_max: u64,
    /// `revokeRefreshToken`.
    pub revoke_refresh_token: bool,
    /// `refreshTokenMaxReuse`.
    pub refresh_token_max_reuse: u64,
}

impl RealmSettings {
    /// Reads the settings from a `RealmRepresentation`; `None` when it is the brief
    /// representation Keycloak gives admins without `view-realm`. Absent fields other than the
    /// marker take Keycloak's defaults.
    pub fn from_json(v: &Value) -> Option<RealmSettings> {
        v.get("ssoSessionIdleTimeout")?;
        let n = |k: &str, d: u64| v.get(k).and_then(Value::as_u64).unwrap_or(d);
        let b = |k: &str, d: bool| v.get(k).and_then(Value::as_bool).unwrap_or(d);
        Some(RealmSettings {
            access_token_lifespan: n("accessTokenLifespan", 300),
            sso_idle: n("ssoSessionIdleTimeout", 1800),
            sso_max: n("ssoSessionMaxLifespan", 36000),
            client_session_idle: n("clientSessionIdleTimeout", 0),
            client_session_max: n("clientSessionMaxLifespan", 0),
            offline_idle: n("offlineSessionIdleTimeout", 2_592_000),
            offline_max_enabled: b("offlineSessionMaxLifespanEnabled", false),
            offline_max: n("offlineSessionMaxLifespan", 5_184_000),
            client_offline_idle: n("clientOfflineSessionIdleTimeout", 0),
            client_offline_max: n("clientOfflineSessionMaxLifespan", 0),
            revoke_refresh_token: b("revokeRefreshToken", false),
            refresh_token_max_reuse: n("refreshTokenMaxReuse", 0),
        })
    }
}

/// How the `offline_access` client scope is linked to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeLink {
    /// Default scope (always in tokens).
    Default,
    /// Optional scope (when requested).
    Optional,
    /// Not linked.
    None,
}

/// Everything read from Keycloak for one observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Realm settings.
    pub realm: RealmSettings,
    /// The client's representation, as read.
    pub client: Value,
    /// Link of the `offline_access` client scope.
    pub offline_scope: ScopeLink,
    /// Id of the realm's `offline_access` client scope (read only when a link is needed).
    pub offline_scope_id: Option<String>,
    /// Whether the realm has an `offline_access` client scope (`None`: not looked up).
    pub offline_scope_exists: Option<bool>,
    /// `offline_access` realm role in the client's realm scope mappings (`None`: not read
    /// because `fullScopeAllowed` is true).
    pub offline_role_mapped: Option<bool>,
    /// The realm's `offline_access` role (read only when a mapping is needed).
    pub offline_role: Option<Value>,
    /// The discovery document, or why it could not be read.
    pub discovery: Result<Value, String>,
}

impl Snapshot {
    fn attr(&self, key: &str) -> Option<&str> {
        self.client
            .get("attributes")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    }

    fn full_scope_allowed(&self) -> bool {
        self.client
            .get("fullScopeAllowed")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }
}

/// A client attribute to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrChange {
    /// Attribute key.
    pub key: &'static str,
    /// Current value (`None`: absent).
    pub from: Option<String>,
    /// Wanted value.
    pub to: String,
}

/// A realm setting to set.
#[derive(Clone, Debug, PartialEq)]
pub struct RealmChange {
    /// `RealmRepresentation` field.
    pub field: &'static str,
    /// Current value.
    pub from: Value,
    /// Wanted value.
    pub to: Value,
}

/// What differs between the policy and Keycloak.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Plan {
    /// Client attributes to set.
    pub attributes: Vec<AttrChange>,
    /// Link the `offline_access` client scope as optional.
    pub link_offline_scope: bool,
    /// Add the `offline_access` realm role to the client's realm scope mappings.
    pub map_offline_role: bool,
    /// Realm-wide settings to change.
    pub realm: Vec<RealmChange>,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty()
            && !self.link_offline_scope
            && !self.map_offline_role
            && self.realm.is_empty()
    }

    /// The changes, for people.
    pub fn changes(&self, realm: &str) -> Vec<Change> {
        let mut out: Vec<Change> = self
            .attributes
            .iter()
            .map(|a| Change {
                setting: format!("client attribute {}", a.key),
                from: a.from.clone().unwrap_or_else(|| "unset".into()),
                to: a.to.clone(),
            })
            .collect();
        if self.link_offline_scope {
            out.push(Change {
                setting: "client scope offline_access".into(),
                from: "not linked".into(),
                to: "optional".into(),
            });
        }
        if self.map_offline_role {
            out.push(Change {
                setting: "realm role offline_access in the client's scope mappings".into(),
                from: "absent".into(),
                to: "present".into(),
            });
        }
        out.extend(self.realm.iter().map(|r| Change {
            setting: format!("realm {realm} {}", r.field),
            from: r.from.to_string(),
            to: r.to.to_string(),
        }));
        out
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

/// Client attributes the policy wants, in a fixed order.
pub fn desired_attributes(desired: &DesiredSettings) -> Vec<(&'static str, String)> {
    let mut out = vec![(ATTR_USE_REFRESH_TOKENS, "true".to_string())];
    let (idle_key, max_key) = if desired.offline_access {
        (ATTR_OFFLINE_IDLE, ATTR_OFFLINE_MAX)
    } else {
        (ATTR_SESSION_IDLE, ATTR_SESSION_MAX)
    };
    if let Some(d) = desired.idle_timeout {
        out.push((idle_key, secs(d).to_string()));
    }
    if let Some(d) = desired.lifetime {
        out.push((max_key, secs(d).to_string()));
    }
    if let Some(d) = desired.access_token_lifetime {
        out.push((ATTR_ACCESS_TOKEN, secs(d).to_string()));
    }
    out
}

/// Realm settings the policy needs, given the current ones.
pub fn realm_changes(desired: &DesiredSettings, realm: &RealmSettings) -> Vec<RealmChange> {
    let mut out = Vec::new();
    let mut at_least = |field: &'static str, current: u64, want: Option<Duration>| {
        if let Some(w) = want.map(secs)
            && current < w
        {
            out.push(RealmChange {
                field,
                from: json!(current),
                to: json!(w),
            });
        }
    };
    if desired.offline_access {
        at_least(
            "offlineSessionIdleTimeout",
            realm.offline_idle,
            desired.idle_timeout,
        );
    } else {
        at_least(
            "ssoSessionIdleTimeout",
            realm.sso_idle,
            desired.idle_timeout,
        );
        at_least("ssoSessionMaxLifespan", realm.sso_max, desired.lifetime);
    }
    if desired.offline_access && desired.lifetime.is_some() {
        if !realm.offline_max_enabled {
            out.push(RealmChange {
                field: "offlineSessionMaxLifespanEnabled",
                from: json!(false),
                to: json!(true),
            });
        }
        if let Some(w) = desired.lifetime.map(secs)
            && realm.offline_max < w
        {
            out.push(RealmChange {
                field: "offlineSessionMaxLifespan",
                from: json!(realm.offline_max),
                to: json!(w),
            });
        }
    }
    match desired.rotation {
        Some(Rotation::Rotate) => {
            if !realm.revoke_refresh_token {
                out.push(RealmChange {
                    field: "revokeRefreshToken",
                    from: json!(false),
                    to: json!(true),
                });
            }
            if realm.refresh_token_max_reuse != 0 {
                out.push(RealmChange {
                    field: "refreshTokenMaxReuse",
                    from: json!(realm.refresh_token_max_reuse),
                    to: json!(0),
                });
            }
        }
        Some(Rotation::Reuse) if realm.revoke_refresh_token => out.push(RealmChange {
            field: "revokeRefreshToken",
            from: json!(true),
            to: json!(false),
        }),
        _ => {}
    }
    out
}

/// Computes what differs (pure).
pub fn plan(desired: &DesiredSettings, snap: &Snapshot) -> Plan {
    let attributes = desired_attributes(desired)
        .into_iter()
        .filter_map(|(key, to)| {
            let from = snap.attr(key).map(str::to_string);
            (from.as_deref() != Some(to.as_str())).then_some(AttrChange { key, from, to })
        })
        .collect();
    let link_offline_scope = desired.offline_access
        && snap.offline_scope == ScopeLink::None
        && snap.offline_scope_id.is_some();
    let map_offline_role = desired.offline_access
        && !snap.full_scope_allowed()
        && snap.offline_role_mapped == Some(false)
        && snap.offline_role.is_some();
    Plan {
        attributes,
        link_offline_scope,
        map_offline_role,
        realm: realm_changes(desired, &snap.realm),
    }
}

/// Parses a duration attribute: `None` when unset, empty or not a number.
fn attr_secs(v: Option<&str>) -> Option<u64> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse::<i64>().ok())
        .map(|n| n.max(0) as u64)
}

/// Keycloak's rule: the client value (attribute, else the realm's client default) caps the
/// user-session value when it is positive.
fn capped(user_session: u64, client_attr: Option<&str>, realm_client_default: u64) -> u64 {
    let client = attr_secs(client_attr).unwrap_or(realm_client_default);
    if client > 0 {
        client.min(user_session)
    } else {
        user_session
    }
}

/// Effective settings (pure). `offline` selects offline tokens (Coder requests `offline_access`)
/// or ordinary refresh tokens.
pub fn effective(snap: &Snapshot, offline: bool) -> IdpSettings {
    let r = &snap.realm;
    let (idle, lifetime) = if offline {
        let idle = capped(
            r.offline_idle,
            snap.attr(ATTR_OFFLINE_IDLE),
            r.client_offline_idle,
        );
        let lifetime = r.offline_max_enabled.then(|| {
            capped(
                r.offline_max,
                snap.attr(ATTR_OFFLINE_MAX),
                r.client_offline_max,
            )
        });
        (idle, lifetime)
    } else {
        (
            capped(
                r.sso_idle,
                snap.attr(ATTR_SESSION_IDLE),
                r.client_session_idle,
            ),
            Some(capped(
                r.sso_max,
                snap.attr(ATTR_SESSION_MAX),
                r.client_session_max,
            )),
        )
    };
    let access = attr_secs(snap.attr(ATTR_ACCESS_TOKEN))
        .filter(|n| *n > 0)
        .unwrap_or(r.access_token_lifespan);
    let linked = snap.offline_scope != ScopeLink::None;
    let role_ok = snap.full_scope_allowed() || snap.offline_role_mapped == Some(true);
    IdpSettings {
        refresh_token_grant: Some(snap.attr(ATTR_USE_REFRESH_TOKENS) != Some("false")),
        offline_access: Some(linked && role_ok),
        lifetime: lifetime.map(Duration::from_secs),
        idle_timeout: Some(Duration::from_secs(idle)),
        rotation: Some(
            if r.revoke_refresh_token && r.refresh_token_max_reuse == 0 {
                Rotation::Rotate
            } else {
                Rotation::Reuse
            },
        ),
        access_token_lifetime: Some(Duration::from_secs(access)),
    }
}

/// Findings to report (pure).
pub fn findings(desired: &DesiredSettings, snap: &Snapshot, realm: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    match &snap.discovery {
        Ok(doc) => {
            let list_has = |field: &str, item: &str| -> Option<bool> {
                doc.get(field)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().any(|v| v.as_str() == Some(item)))
            };
            if list_has("grant_types_supported", "refresh_token") == Some(false) {
                out.push(Finding {
                    reason: "RefreshGrantNotAdvertised",
                    message: format!(
                        "the discovery document of realm {realm} does not list refresh_token in grant_types_supported; check that nothing in front of Keycloak rewrites it"
                    ),
                    blocking: false,
                });
            }
            if desired.offline_access && list_has("scopes_supported", OFFLINE_ACCESS) == Some(false)
            {
                out.push(Finding {
                    reason: "OfflineAccessNotSupported",
                    message: format!(
                        "the discovery document of realm {realm} does not list offline_access in scopes_supported, so Coder's sign-in would fail with invalid_scope; restore the offline_access client scope in the realm or set spec.refreshTokens.offlineAccess: false"
                    ),
                    blocking: true,
                });
            }
        }
        Err(e) => out.push(Finding {
            reason: "DiscoveryUnavailable",
            message: format!("could not read the discovery document of realm {realm}: {e}"),
            blocking: false,
        }),
    }
    if desired.offline_access
        && snap.offline_scope == ScopeLink::None
        && snap.offline_scope_exists == Some(false)
    {
        out.push(Finding {
            reason: "OfflineAccessScopeMissing",
            message: format!(
                "realm {realm} has no client scope named offline_access (Keycloak creates it in every realm); recreate it under Client scopes, or set spec.refreshTokens.offlineAccess: false"
            ),
            blocking: true,
        });
    }
    if desired.offline_access
        && !snap.full_scope_allowed()
        && snap.offline_role_mapped == Some(false)
        && snap.offline_role.is_none()
    {
        out.push(Finding {
            reason: "OfflineAccessRoleMissing",
            message: format!(
                "realm {realm} has no realm role offline_access, which users need for offline tokens; recreate it and add it to default-roles-{realm}, or set spec.refreshTokens.offlineAccess: false"
            ),
            blocking: true,
        });
    }
    let flag = |k: &str| snap.client.get(k).and_then(Value::as_bool);
    if flag("publicClient") == Some(true) {
        out.push(Finding {
            reason: "PublicClient",
            message: "the client is public (Client authentication off); Coder needs a confidential client with a secret".into(),
            blocking: false,
        });
    }
    if flag("standardFlowEnabled") == Some(false) {
        out.push(Finding {
            reason: "StandardFlowDisabled",
            message: "the client has Standard flow (authorization code) disabled; Coder's OIDC sign-in needs it".into(),
            blocking: false,
        });
    }
    if flag("enabled") == Some(false) {
        out.push(Finding {
            reason: "ClientDisabled",
            message: "the client is disabled in Keycloak; nobody can sign in to Coder".into(),
            blocking: false,
        });
    }
    out
}

/// What a 404 means for a call.
#[derive(Clone, Copy)]
enum NotFound {
    Realm,
    Client,
    Other,
}

/// One admin-API operation: metric label, description, role needed, meaning of 404.
struct Op {
    metric: &'static str,
    what: String,
    role: &'static str,
    not_found: NotFound,
}

struct Keycloak {
    base: String,
    realm: String,
    client_id: String,
    auth_realm: String,
    allow_realm_changes: bool,
    secret_name: String,
    admin: AdminCredentials,
    http: reqwest::Client,
    deps: ProviderDeps,
    token_key: String,
}

impl Keycloak {
    fn admin_url(&self, path: &str) -> String {
        format!("{}/admin/realms/{}{path}", self.base, enc(&self.realm))
    }

    fn op(&self, metric: &'static str, what: &str, role: &'static str, nf: NotFound) -> Op {
        Op {
            metric,
            what: what.to_string(),
            role,
            not_found: nf,
        }
    }

    async fn token(&self, force: bool) -> Result<SecretString, ProviderError> {
        if !force && let Some(t) = self.deps.tokens.get(&self.token_key) {
            return Ok(t);
        }
        let url = format!(
            "{}/realms/{}/protocol/openid-connect/token",
            self.base,
            enc(&self.auth_realm)
        );
        let form: Vec<(&str, &str)> = match &self.admin {
            AdminCredentials::ClientCredentials {
                client_id,
                client_secret,
            } => vec![
                ("grant_type", "client_credentials"),
                ("client_id", client_id.expose_secret()),
                ("client_secret", client_secret.expose_secret()),
            ],
            AdminCredentials::Password { username, password } => vec![
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", username.expose_secret()),
                ("password", password.expose_secret()),
            ],
        };
        let req = self.http.post(url).form(&form);
        let (status, headers, body) = match http::request_token(
            &self.deps,
            KIND,
            "get an admin token",
            req,
            &self.token_key,
            Duration::from_secs(60),
        )
        .await?
        {
            http::TokenAnswer::Token(token) => return Ok(token),
            http::TokenAnswer::Refused {
                status,
                headers,
                body,
            } => (status, headers, body),
        };
        let msg = keycloak_message(&body);
        match status.as_u16() {
            400 | 401 => {
                let code = oauth_error_code(&body).unwrap_or_default();
                let hint = match (&self.admin, code.as_str()) {
                    (AdminCredentials::ClientCredentials { .. }, "unauthorized_client") => {
                        " and that the client has Client authentication and Service accounts roles enabled"
                    }
                    (AdminCredentials::Password { .. }, "unauthorized_client") => {
                        " and that the admin-cli client allows Direct access grants"
                    }
                    _ => "",
                };
                Err(ProviderError::AuthenticationFailed {
                    provider: KIND,
                    detail: format!(
                        "the token endpoint of realm {:?} answered HTTP {} ({msg}); check {} in Secret {:?}, that they belong to realm {:?} (spec.provider.keycloak.authRealm){hint}",
                        self.auth_realm,
                        status.as_u16(),
                        self.admin.keys(),
                        self.secret_name,
                        self.auth_realm,
                    ),
                })
            }
            404 => Err(ProviderError::ClientNotFound {
                provider: KIND,
                what: format!(
                    "realm {:?} (where the admin credentials live)",
                    self.auth_realm
                ),
                detail: format!(
                    "{} has no such realm ({msg}); check spec.provider.keycloak.url and spec.provider.keycloak.authRealm (default: realm)",
                    self.base
                ),
            }),
            _ => Err(error_for_status(
                KIND,
                "get an admin token",
                status,
                &headers,
                msg,
            )),
        }
    }

    /// One admin call: token, send, one renewal on 401, error mapping. Returns the JSON body
    /// (`None` for an empty body such as 204).
    async fn call(
        &self,
        op: &Op,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ProviderError> {
        let mut renewed = false;
        loop {
            let token = self.token(renewed).await?;
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token.expose_secret())
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = http::send(&self.deps, KIND, op.metric, req).await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                self.deps.tokens.invalidate(&self.token_key);
                renewed = true;
                continue;
            }
            let headers = resp.headers().clone();
            let text = resp.text().await.map_err(|e| ProviderError::Unreachable {
                provider: KIND,
                operation: op.what.clone(),
                detail: http::describe_reqwest_error(&e),
            })?;
            if status.is_success() {
                if text.trim().is_empty() {
                    return Ok(None);
                }
                return serde_json::from_str(&text).map(Some).map_err(|e| {
                    ProviderError::Protocol {
                        provider: KIND,
                        operation: op.what.clone(),
                        detail: format!("the answer is not JSON: {e}"),
                    }
                });
            }
            return Err(self.error(op, status, &headers, &text));
        }
    }

    fn error(
        &self,
        op: &Op,
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &str,
    ) -> ProviderError {
        let msg = keycloak_message(body);
        match status.as_u16() {
            401 => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "Keycloak answered 401 to {} even with a fresh token from realm {:?} ({msg}); check the admin credentials in Secret {:?} and that tokens of realm {:?} may manage realm {:?} (only master may manage other realms)",
                    op.what, self.auth_realm, self.secret_name, self.auth_realm, self.realm
                ),
            },
            403 => ProviderError::Forbidden {
                provider: KIND,
                operation: op.what.clone(),
                detail: format!(
                    "the admin account of Secret {:?} lacks the realm-management client role {} for realm {:?} ({msg}); assign it to the account's service-account user (or user) in realm {:?}{}, or assign realm-admin. The operator needs view-clients, manage-clients and view-realm{}",
                    self.secret_name,
                    op.role,
                    self.realm,
                    self.auth_realm,
                    if self.auth_realm != self.realm {
                        format!(
                            " (in {:?} the role belongs to the client {:?})",
                            self.auth_realm,
                            format!("{}-realm", self.realm)
                        )
                    } else {
                        String::new()
                    },
                    if self.allow_realm_changes {
                        ", plus manage-realm because allowRealmChanges is true"
                    } else {
                        ""
                    }
                ),
            },
            404 => match op.not_found {
                NotFound::Realm => self.realm_not_found(&msg),
                NotFound::Client => self.client_not_found(),
                NotFound::Other => ProviderError::ClientNotFound {
                    provider: KIND,
                    what: op.what.clone(),
                    detail: format!("Keycloak answered 404 ({msg})"),
                },
            },
            _ => error_for_status(KIND, &op.what, status, headers, msg),
        }
    }

    fn realm_not_found(&self, msg: &str) -> ProviderError {
        ProviderError::ClientNotFound {
            provider: KIND,
            what: format!("realm {:?}", self.realm),
            detail: format!(
                "{} has no realm {:?} ({msg}); check spec.provider.keycloak.realm (the realm name, not its display name) and spec.provider.keycloak.url",
                self.base, self.realm
            ),
        }
    }

    fn client_not_found(&self) -> ProviderError {
        ProviderError::ClientNotFound {
            provider: KIND,
            what: format!("client {:?} in realm {:?}", self.client_id, self.realm),
            detail: "no client has this clientId; check spec.provider.keycloak.clientId (the Client ID Coder uses as CODER_OIDC_CLIENT_ID, not Keycloak's internal UUID) and spec.provider.keycloak.realm; the operator never creates clients".into(),
        }
    }

    /// Reads everything needed for `desired`. No writes.
    async fn read(&self, desired: &DesiredSettings) -> Result<Snapshot, ProviderError> {
        let realm_json = self
            .call(
                &self.op(
                    "get_realm",
                    &format!("read realm {:?}", self.realm),
                    "view-realm",
                    NotFound::Realm,
                ),
                Method::GET,
                &self.admin_url(""),
                None,
            )
            .await?
            .unwrap_or(Value::Null);
        let realm = RealmSettings::from_json(&realm_json).ok_or_else(|| ProviderError::Forbidden {
            provider: KIND,
            operation: format!("read the token settings of realm {:?}", self.realm),
            detail: format!(
                "Keycloak gave only the brief realm representation, so the admin account of Secret {:?} lacks the realm-management client role view-realm for realm {:?}; assign it (or realm-admin)",
                self.secret_name, self.realm
            ),
        })?;
        let list_url = format!(
            "{}?clientId={}",
            self.admin_url("/clients"),
            enc(&self.client_id)
        );
        let clients = self
            .call(
                &self.op(
                    "find_client",
                    &format!("find client {:?}", self.client_id),
                    "view-clients",
                    NotFound::Realm,
                ),
                Method::GET,
                &list_url,
                None,
            )
            .await?
            .unwrap_or(Value::Null);
        let client = clients
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|c| c.get("clientId").and_then(Value::as_str) == Some(&self.client_id))
            })
            .cloned()
            .ok_or_else(|| self.client_not_found())?;
        let id = client
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::Protocol {
                provider: KIND,
                operation: format!("find client {:?}", self.client_id),
                detail: "the client representation has no id".into(),
            })?
            .to_string();
        let client_url = self.admin_url(&format!("/clients/{}", enc(&id)));
        let scopes_of = |kind: &str| format!("{client_url}/{kind}-client-scopes");
        let read_scopes = self.op(
            "get_client_scopes",
            &format!("read the client scopes of client {:?}", self.client_id),
            "view-clients",
            NotFound::Client,
        );
        let has_offline = |v: Option<Value>| {
            v.and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .any(|s| s.get("name").and_then(Value::as_str) == Some(OFFLINE_ACCESS))
        };
        let default = has_offline(
            self.call(&read_scopes, Method::GET, &scopes_of("default"), None)
                .await?,
        );
        let optional = has_offline(
            self.call(&read_scopes, Method::GET, &scopes_of("optional"), None)
                .await?,
        );
        let offline_scope = if default {
            ScopeLink::Default
        } else if optional {
            ScopeLink::Optional
        } else {
            ScopeLink::None
        };
        let mut snap = Snapshot {
            realm,
            client,
            offline_scope,
            offline_scope_id: None,
            offline_scope_exists: None,
            offline_role_mapped: None,
            offline_role: None,
            discovery: Err("not read".into()),
        };
        if desired.offline_access && offline_scope == ScopeLink::None {
            let all = self
                .call(
                    &self.op(
                        "list_client_scopes",
                        &format!("list the client scopes of realm {:?}", self.realm),
                        "view-clients",
                        NotFound::Realm,
                    ),
                    Method::GET,
                    &self.admin_url("/client-scopes"),
                    None,
                )
                .await?;
            snap.offline_scope_id = all
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .find(|s| s.get("name").and_then(Value::as_str) == Some(OFFLINE_ACCESS))
                .and_then(|s| s.get("id").and_then(Value::as_str).map(str::to_string));
            snap.offline_scope_exists = Some(snap.offline_scope_id.is_some());
        }
        if !snap.full_scope_allowed() {
            let mapped = self
                .call(
                    &self.op(
                        "get_scope_mappings",
                        &format!(
                            "read the realm scope mappings of client {:?}",
                            self.client_id
                        ),
                        "view-clients",
                        NotFound::Client,
                    ),
                    Method::GET,
                    &format!("{client_url}/scope-mappings/realm"),
                    None,
                )
                .await?;
            let mapped = mapped
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .any(|r| r.get("name").and_then(Value::as_str) == Some(OFFLINE_ACCESS));
            snap.offline_role_mapped = Some(mapped);
            if desired.offline_access && !mapped {
                let role = self
                    .call(
                        &self.op(
                            "get_role",
                            &format!("read realm role offline_access of realm {:?}", self.realm),
                            "view-realm",
                            NotFound::Other,
                        ),
                        Method::GET,
                        &self.admin_url("/roles/offline_access"),
                        None,
                    )
                    .await;
                snap.offline_role = match role {
                    Ok(r) => r,
                    Err(ProviderError::ClientNotFound { .. }) => None,
                    Err(e) => return Err(e),
                };
            }
        }
        snap.discovery = self.discovery().await;
        Ok(snap)
    }

    async fn discovery(&self) -> Result<Value, String> {
        let url = format!(
            "{}/realms/{}/.well-known/openid-configuration",
            self.base,
            enc(&self.realm)
        );
        let resp = http::send(&self.deps, KIND, "discovery", self.http.get(url))
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| http::describe_reqwest_error(&e))?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", keycloak_message(&text)));
        }
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
    }

    fn refuse_realm_changes(&self, plan: &Plan) -> Result<(), ProviderError> {
        if plan.realm.is_empty() || self.allow_realm_changes {
            return Ok(());
        }
        let list: Vec<String> = plan
            .realm
            .iter()
            .map(|c| format!("{} to {} (now {})", c.field, c.to, c.from))
            .collect();
        Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "the policy needs realm-wide settings of realm {:?}, which affect every client in it: set {} (admin console: Realm settings, Sessions and Tokens tabs), or set spec.provider.keycloak.allowRealmChanges: true to let the operator change them",
                self.realm,
                list.join(", ")
            ),
        })
    }

    fn observation(&self, desired: &DesiredSettings, snap: &Snapshot, plan: &Plan) -> Observation {
        Observation {
            settings: effective(snap, desired.offline_access),
            changes: plan.changes(&self.realm),
            findings: findings(desired, snap, &self.realm),
            coder: CoderNeeds {
                add_scopes: if desired.offline_access {
                    vec![OFFLINE_ACCESS.to_string()]
                } else {
                    Vec::new()
                },
                remove_scopes: Vec::new(),
                params: BTreeMap::new(),
            },
        }
    }

    async fn write(&self, snap: &Snapshot, plan: &Plan) -> Result<Vec<String>, ProviderError> {
        let mut actions = Vec::new();
        if !plan.realm.is_empty() {
            let body: Map<String, Value> = plan
                .realm
                .iter()
                .map(|c| (c.field.to_string(), c.to.clone()))
                .collect();
            self.call(
                &self.op(
                    "update_realm",
                    &format!("update the token settings of realm {:?}", self.realm),
                    "manage-realm",
                    NotFound::Realm,
                ),
                Method::PUT,
                &self.admin_url(""),
                Some(&Value::Object(body)),
            )
            .await?;
            actions.extend(plan.realm.iter().map(|c| {
                format!(
                    "set realm {} {} to {} (was {})",
                    self.realm, c.field, c.to, c.from
                )
            }));
        }
        let id = snap
            .client
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let client_url = self.admin_url(&format!("/clients/{}", enc(&id)));
        if !plan.attributes.is_empty() {
            let mut body = snap.client.clone();
            let Some(obj) = body.as_object_mut() else {
                return Err(ProviderError::Protocol {
                    provider: KIND,
                    operation: format!("update client {:?}", self.client_id),
                    detail: "the client representation is not a JSON object".into(),
                });
            };
            let attrs = obj
                .entry("attributes")
                .or_insert_with(|| Value::Object(Map::new()));
            if !attrs.is_object() {
                *attrs = Value::Object(Map::new());
            }
            if let Some(a) = attrs.as_object_mut() {
                for c in &plan.attributes {
                    a.insert(c.key.to_string(), Value::String(c.to.clone()));
                }
            }
            self.call(
                &self.op(
                    "update_client",
                    &format!("update client {:?}", self.client_id),
                    "manage-clients",
                    NotFound::Client,
                ),
                Method::PUT,
                &client_url,
                Some(&body),
            )
            .await?;
            actions.extend(plan.attributes.iter().map(|c| {
                format!(
                    "set client attribute {} to {} (was {})",
                    c.key,
                    c.to,
                    c.from.as_deref().unwrap_or("unset")
                )
            }));
        }
        if plan.link_offline_scope
            && let Some(scope_id) = &snap.offline_scope_id
        {
            self.call(
                &self.op(
                    "link_client_scope",
                    &format!(
                        "link client scope offline_access to client {:?}",
                        self.client_id
                    ),
                    "manage-clients",
                    NotFound::Other,
                ),
                Method::PUT,
                &format!("{client_url}/optional-client-scopes/{}", enc(scope_id)),
                None,
            )
            .await?;
            actions.push("linked client scope offline_access to the client as optional".into());
        }
        if plan.map_offline_role
            && let Some(role) = &snap.offline_role
        {
            let mut r = Map::new();
            for k in [
                "id",
                "name",
                "description",
                "composite",
                "clientRole",
                "containerId",
            ] {
                if let Some(v) = role.get(k) {
                    r.insert(k.to_string(), v.clone());
                }
            }
            self.call(
                &self.op(
                    "add_scope_mapping",
                    &format!(
                        "add realm role offline_access to the scope mappings of client {:?}",
                        self.client_id
                    ),
                    "manage-clients",
                    NotFound::Other,
                ),
                Method::POST,
                &format!("{client_url}/scope-mappings/realm"),
                Some(&Value::Array(vec![Value::Object(r)])),
            )
            .await?;
            actions.push("added realm role offline_access to the client's scope mappings".into());
        }
        Ok(actions)
    }
}

/// Percent-encodes one path or query component.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl IdentityProvider for Keycloak {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    fn check(&self, desired: &DesiredSettings) -> Result<(), ProviderError> {
        let fields = [
            ("lifetime", desired.lifetime),
            ("idleTimeout", desired.idle_timeout),
            ("accessTokenLifetime", desired.access_token_lifetime),
        ];
        for (name, d) in fields {
            let Some(d) = d else { continue };
            if d.subsec_nanos() != 0 || d.is_zero() || d.as_secs() > i32::MAX as u64 {
                return Err(ProviderError::Unsupported {
                    provider: KIND,
                    detail: format!(
                        "spec.refreshTokens.{name} is {}: Keycloak stores lifetimes as whole seconds between 1s and {}s",
                        show_duration(Some(d)),
                        i32::MAX
                    ),
                });
            }
        }
        Ok(())
    }

    async fn observe(&self, desired: &DesiredSettings) -> Result<Observation, ProviderError> {
        self.check(desired)?;
        let snap = self.read(desired).await?;
        let plan = plan(desired, &snap);
        self.refuse_realm_changes(&plan)?;
        Ok(self.observation(desired, &snap, &plan))
    }

    async fn apply(&self, desired: &DesiredSettings) -> Result<Applied, ProviderError> {
        self.check(desired)?;
        let snap = self.read(desired).await?;
        let todo = plan(desired, &snap);
        self.refuse_realm_changes(&todo)?;
        if todo.is_empty() {
            return Ok(Applied {
                observation: self.observation(desired, &snap, &todo),
                actions: Vec::new(),
            });
        }
        let actions = self.write(&snap, &todo).await?;
        let after = self.read(desired).await?;
        let left = plan(desired, &after);
        if !left.is_empty() {
            let list: Vec<String> = left
                .changes(&self.realm)
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(ProviderError::NotPersisted {
                provider: KIND,
                detail: format!("these settings still differ: {}", list.join("; ")),
            });
        }
        Ok(Applied {
            observation: self.observation(desired, &after, &left),
            actions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realm_defaults() -> RealmSettings {
        RealmSettings::from_json(&json!({"ssoSessionIdleTimeout": 1800})).unwrap()
    }

    fn snap(client: Value) -> Snapshot {
        Snapshot {
            realm: realm_defaults(),
            client,
            offline_scope: ScopeLink::Optional,
            offline_scope_id: None,
            offline_scope_exists: None,
            offline_role_mapped: None,
            offline_role: None,
            discovery: Ok(
                json!({"grant_types_supported": ["refresh_token"], "scopes_supported": ["openid", "offline_access"]}),
            ),
        }
    }

    fn h(n: u64) -> Duration {
        Duration::from_secs(n * 3600)
    }

    #[test]
    fn base_urls_are_normalized() {
        assert_eq!(
            normalize_base_url("https://sso.example.com/").unwrap(),
            "https://sso.example.com"
        );
        assert_eq!(
            normalize_base_url(" https://sso.example.com/auth// ").unwrap(),
            "https://sso.example.com/auth"
        );
        assert_eq!(
            normalize_base_url("https://sso.example.com/auth/admin/").unwrap(),
            "https://sso.example.com/auth"
        );
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(matches!(
            normalize_base_url("sso.example.com"),
            Err(ProviderError::Unsupported { .. })
        ));
        assert!(normalize_base_url("https:///x").is_err());
    }

    #[test]
    fn error_bodies_in_both_shapes() {
        assert_eq!(
            keycloak_message(
                r#"{"error":"invalid_client","error_description":"Invalid client or Invalid client credentials"}"#
            ),
            "invalid_client: Invalid client or Invalid client credentials"
        );
        assert_eq!(
            keycloak_message(r#"{"errorMessage":"Client coder already exists"}"#),
            "Client coder already exists"
        );
        assert_eq!(
            keycloak_message(r#"{"error":"HTTP 403 Forbidden"}"#),
            "HTTP 403 Forbidden"
        );
        assert_eq!(
            keycloak_message("  <html>bad gateway</html> "),
            "<html>bad gateway</html>"
        );
        assert_eq!(keycloak_message(""), "");
        assert_eq!(
            oauth_error_code(r#"{"error":"invalid_grant"}"#).as_deref(),
            Some("invalid_grant")
        );
    }

    #[test]
    fn attribute_mapping_depends_on_offline_access() {
        let mut d = DesiredSettings {
            offline_access: true,
            lifetime: Some(h(720)),
            idle_timeout: Some(h(24)),
            rotation: None,
            access_token_lifetime: Some(h(1)),
        };
        assert_eq!(
            desired_attributes(&d),
            vec![
                ("use.refresh.tokens", "true".to_string()),
                ("client.offline.session.idle.timeout", "86400".to_string()),
                ("client.offline.session.max.lifespan", "2592000".to_string()),
                ("access.token.lifespan", "3600".to_string()),
            ]
        );
        d.offline_access = false;
        d.access_token_lifetime = None;
        assert_eq!(
            desired_attributes(&d),
            vec![
                ("use.refresh.tokens", "true".to_string()),
                ("client.session.idle.timeout", "86400".to_string()),
                ("client.session.max.lifespan", "2592000".to_string()),
            ]
        );
    }

    #[test]
    fn plan_lists_only_what_differs() {
        let d = DesiredSettings {
            offline_access: true,
            idle_timeout: Some(h(24)),
            ..Default::default()
        };
        let mut s =
            snap(json!({"id": "1", "attributes": {"use.refresh.tokens": "false", "other": "x"}}));
        s.offline_scope = ScopeLink::None;
        s.offline_scope_id = Some("scope-1".into());
        let p = plan(&d, &s);
        assert_eq!(
            p.attributes,
            vec![
                AttrChange {
                    key: "use.refresh.tokens",
                    from: Some("false".into()),
                    to: "true".into()
                },
                AttrChange {
                    key: "client.offline.session.idle.timeout",
                    from: None,
                    to: "86400".into()
                },
            ]
        );
        assert!(p.link_offline_scope);
        assert!(!p.map_offline_role, "fullScopeAllowed defaults to true");
        assert!(p.realm.is_empty());
        assert_eq!(
            p.changes("coder")[0].to_string(),
            "client attribute use.refresh.tokens: false -> true"
        );

        let converged = snap(
            json!({"id": "1", "attributes": {"use.refresh.tokens": "true", "client.offline.session.idle.timeout": "86400"}}),
        );
        assert!(plan(&d, &converged).is_empty());

        let mut no_full = snap(
            json!({"id": "1", "fullScopeAllowed": false, "attributes": {"use.refresh.tokens": "true", "client.offline.session.idle.timeout": "86400"}}),
        );
        no_full.offline_role_mapped = Some(false);
        no_full.offline_role = Some(json!({"id": "r1", "name": "offline_access"}));
        assert!(plan(&d, &no_full).map_offline_role);
    }

    #[test]
    fn realm_changes_for_lifetime_rotation_and_caps() {
        let r = realm_defaults();
        let d = DesiredSettings {
            offline_access: true,
            lifetime: Some(h(24 * 90)),
            idle_timeout: Some(h(24 * 45)),
            rotation: Some(Rotation::Rotate),
            access_token_lifetime: None,
        };
        let fields: Vec<(&str, Value)> = realm_changes(&d, &r)
            .into_iter()
            .map(|c| (c.field, c.to))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("offlineSessionIdleTimeout", json!(3_888_000)),
                ("offlineSessionMaxLifespanEnabled", json!(true)),
                ("offlineSessionMaxLifespan", json!(7_776_000)),
                ("revokeRefreshToken", json!(true)),
            ]
        );
        let online = DesiredSettings {
            offline_access: false,
            idle_timeout: Some(h(1)),
            lifetime: Some(h(8)),
            rotation: Some(Rotation::Reuse),
            ..Default::default()
        };
        let fields: Vec<&str> = realm_changes(&online, &r)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            vec!["ssoSessionIdleTimeout"],
            "1h > 30m idle; 8h < 10h max; Reuse is the default"
        );
    }

    #[test]
    fn effective_values_take_the_smaller_cap() {
        let mut s = snap(
            json!({"attributes": {"client.offline.session.idle.timeout": "86400", "client.offline.session.max.lifespan": "", "access.token.lifespan": "600"}}),
        );
        let e = effective(&s, true);
        assert_eq!(e.idle_timeout, Some(h(24)));
        assert_eq!(
            e.lifetime, None,
            "offline max lifespan disabled in the realm"
        );
        assert_eq!(e.access_token_lifetime, Some(Duration::from_secs(600)));
        assert_eq!(
            e.refresh_token_grant,
            Some(true),
            "absent use.refresh.tokens means true"
        );
        assert_eq!(e.offline_access, Some(true));
        assert_eq!(e.rotation, Some(Rotation::Reuse));
        s.realm.offline_max_enabled = true;
        s.realm.client_offline_max = 86400 * 7;
        assert_eq!(
            effective(&s, true).lifetime,
            Some(h(24 * 7)),
            "empty attribute inherits the realm's client default"
        );
        s.client = json!({"attributes": {"client.offline.session.idle.timeout": "99999999", "client.session.idle.timeout": "600", "use.refresh.tokens": "false"}});
        assert_eq!(
            effective(&s, true).idle_timeout,
            Some(Duration::from_secs(2_592_000)),
            "realm cap wins"
        );
        let online = effective(&s, false);
        assert_eq!(online.idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(online.lifetime, Some(Duration::from_secs(36000)));
        assert_eq!(online.refresh_token_grant, Some(false));
        s.realm.revoke_refresh_token = true;
        assert_eq!(effective(&s, true).rotation, Some(Rotation::Rotate));
        s.client = json!({"fullScopeAllowed": false});
        s.offline_role_mapped = Some(false);
        assert_eq!(effective(&s, true).offline_access, Some(false));
    }

    #[test]
    fn brief_realm_representation_is_detected() {
        assert_eq!(
            RealmSettings::from_json(&json!({"id": "x", "realm": "coder"})),
            None
        );
        let r = RealmSettings::from_json(
            &json!({"ssoSessionIdleTimeout": 60, "revokeRefreshToken": true}),
        )
        .unwrap();
        assert_eq!(
            (r.sso_idle, r.revoke_refresh_token, r.offline_idle),
            (60, true, 2_592_000)
        );
    }

    #[test]
    fn discovery_findings() {
        let d = DesiredSettings {
            offline_access: true,
            ..Default::default()
        };
        let mut s = snap(json!({}));
        assert_eq!(findings(&d, &s, "coder"), vec![]);
        s.discovery = Ok(
            json!({"grant_types_supported": ["authorization_code"], "scopes_supported": ["openid"]}),
        );
        let f = findings(&d, &s, "coder");
        assert_eq!(
            f.iter().map(|f| (f.reason, f.blocking)).collect::<Vec<_>>(),
            vec![
                ("RefreshGrantNotAdvertised", false),
                ("OfflineAccessNotSupported", true)
            ]
        );
        s.discovery = Ok(json!({}));
        assert_eq!(
            findings(&d, &s, "coder"),
            vec![],
            "absent lists mean unknown, not no"
        );
    }

    #[test]
    fn path_components_are_encoded() {
        assert_eq!(enc("my realm/x"), "my%20realm%2Fx");
        assert_eq!(enc("coder-1_a.b~"), "coder-1_a.b~");
    }
}
