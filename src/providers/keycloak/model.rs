//! The pure part of the Keycloak provider: what is read (realm settings, the client, its scope
//! links), what differs from the policy (the plan), the effective values and the findings.

use std::time::Duration;

use serde_json::{Value, json};

use super::OFFLINE_ACCESS;
use crate::crd::Rotation;
use crate::providers::{Change, DesiredSettings, Finding, IdpSettings};

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

/// Realm `refreshTokenMaxReuse` with `rotation: Rotate`: the number of uses of a refresh token
/// Keycloak allows after its first one (`TokenManager.validateTokenReuse`: a use fails when the
/// count of earlier uses exceeds it). Coder refreshes inside each request with no lock across
/// requests or replicas, so every request of a page load that arrives while the link's access
/// token is expired redeems the same refresh token; browsers open up to 6 connections per host
/// (more over HTTP/2), so 5 reuses let 6 simultaneous refreshes succeed. A failed reuse costs
/// the whole session (Keycloak detaches the client session, so the winners' new tokens die too),
/// while a larger count costs little: the window closes as soon as the successor token is used
/// (an older token is then a "Stale token"), and Coder is a confidential client whose refresh
/// tokens are useless without its secret.
pub const ROTATE_MAX_REUSE: u64 = 5;

/// Reason of the warning about strict one-time refresh tokens.
pub const STRICT_ROTATION: &str = "StrictRefreshTokenRotation";

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
    /// The realm's representation, as read: a realm update sends it back whole with only the
    /// changed fields replaced, because Keycloak resets realm settings a body leaves out (the
    /// device-authorization, CIBA and PAR settings).
    pub realm_json: Value,
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
    /// The `offline_access` realm role in the realm scope mappings of the `offline_access`
    /// client scope itself (`None`: not read). Keycloak's built-in scope carries it, and a
    /// requested client scope brings its scope mappings into the token's role scope, so with
    /// `fullScopeAllowed` off linking the scope is then enough.
    pub offline_scope_has_role: Option<bool>,
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

    pub(super) fn full_scope_allowed(&self) -> bool {
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
    /// False for the reuse window `rotation: Rotate` adds on top of what the policy asks: it is
    /// written only with `allowRealmChanges` (and not in realms keycloak-config-cli manages);
    /// otherwise a warning stands in for it instead of the policy stalling.
    pub required: bool,
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

    /// The changes, for people: target, field, current, desired and why.
    pub fn changes(&self, realm: &str, client_id: &str) -> Vec<Change> {
        let client = format!("Keycloak client {client_id:?} in realm {realm:?}");
        let mut out: Vec<Change> = self
            .attributes
            .iter()
            .map(|a| {
                Change::new(
                    &client,
                    format!("attribute {}", a.key),
                    a.from.clone().unwrap_or_else(|| "unset".into()),
                    &a.to,
                    attribute_why(a.key),
                )
            })
            .collect();
        if self.link_offline_scope {
            out.push(Change::new(
                &client,
                "client scope offline_access",
                "not linked",
                "optional",
                "Coder requests offline_access (spec.refreshTokens.offlineAccess), which Keycloak grants only to clients the scope is linked to",
            ));
        }
        if self.map_offline_role {
            out.push(Change::new(
                &client,
                "realm scope mapping offline_access",
                "absent",
                "present",
                "the client has fullScopeAllowed off, so its tokens carry only mapped roles and offline tokens need the offline_access role",
            ));
        }
        let realm_target = format!("Keycloak realm {realm:?}");
        out.extend(self.realm.iter().map(|r| {
            Change::new(
                &realm_target,
                r.field,
                r.from.to_string(),
                r.to.to_string(),
                realm_why(r.field, &r.to),
            )
        }));
        out
    }
}

/// Why the policy needs a client attribute.
fn attribute_why(key: &str) -> &'static str {
    match key {
        ATTR_USE_REFRESH_TOKENS => {
            "Keycloak issues refresh tokens to the client only when it is on"
        }
        ATTR_OFFLINE_IDLE | ATTR_SESSION_IDLE => "spec.refreshTokens.idleTimeout",
        ATTR_OFFLINE_MAX | ATTR_SESSION_MAX => "spec.refreshTokens.lifetime",
        ATTR_ACCESS_TOKEN => "spec.refreshTokens.accessTokenLifetime",
        _ => "the policy",
    }
}

/// Why the policy needs a realm setting.
fn realm_why(field: &str, to: &Value) -> String {
    if field == "refreshTokenMaxReuse" {
        return if to == &json!(0) {
            "spec.refreshTokens.rotation: RotateStrict: every refresh token usable exactly once (concurrent refreshes by Coder then sign users out)".into()
        } else {
            format!(
                "spec.refreshTokens.rotation: Rotate: {to} uses of a refresh token after its first, so that Coder's concurrent refreshes (several requests of a page load, several replicas, none waiting for the others) all succeed; a failed reuse ends the user's session. Set rotation: RotateStrict for strict one-time use"
            )
        };
    }
    match field {
        "offlineSessionIdleTimeout" | "ssoSessionIdleTimeout" => {
            "spec.refreshTokens.idleTimeout: the realm value caps the client's"
        }
        "ssoSessionMaxLifespan" | "offlineSessionMaxLifespan" => {
            "spec.refreshTokens.lifetime: the realm value caps the client's"
        }
        "offlineSessionMaxLifespanEnabled" => {
            "spec.refreshTokens.lifetime: offline sessions have a maximum lifespan only when the realm enables it"
        }
        "revokeRefreshToken" => "spec.refreshTokens.rotation",
        _ => "the policy",
    }
    .into()
}

/// The realm representation to PUT: the one read, with the plan's fields replaced.
pub fn realm_body(snap: &Snapshot, plan: &Plan) -> Value {
    let mut body = match &snap.realm_json {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    for c in &plan.realm {
        body.insert(c.field.to_string(), c.to.clone());
    }
    Value::Object(body)
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
                required: true,
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
    // Keycloak 22+ (`SessionExpirationUtils.calculateClientSessionMaxLifespanTimestamp`)
    // enforces a positive client `client.offline.session.max.lifespan` on its own; the realm
    // switch is never needed. Only when the switch is already on does the realm's
    // `offlineSessionMaxLifespan` cap the client value.
    if desired.offline_access && realm.offline_max_enabled {
        at_least(
            "offlineSessionMaxLifespan",
            realm.offline_max,
            desired.lifetime,
        );
    }
    match desired.rotation {
        Some(r @ (Rotation::Rotate | Rotation::RotateStrict)) => {
            if !realm.revoke_refresh_token {
                out.push(RealmChange {
                    field: "revokeRefreshToken",
                    from: json!(false),
                    to: json!(true),
                    required: true,
                });
            }
            let reuse = realm.refresh_token_max_reuse;
            if r == Rotation::Rotate && reuse < ROTATE_MAX_REUSE {
                // At least: a larger count an administrator chose is kept.
                out.push(RealmChange {
                    field: "refreshTokenMaxReuse",
                    from: json!(reuse),
                    to: json!(ROTATE_MAX_REUSE),
                    required: false,
                });
            }
            if r == Rotation::RotateStrict && reuse != 0 {
                out.push(RealmChange {
                    field: "refreshTokenMaxReuse",
                    from: json!(reuse),
                    to: json!(0),
                    required: true,
                });
            }
        }
        Some(Rotation::Reuse) if realm.revoke_refresh_token => out.push(RealmChange {
            field: "revokeRefreshToken",
            from: json!(true),
            to: json!(false),
            required: true,
        }),
        _ => {}
    }
    out
}

/// Drops the realm changes that are not required (the reuse window of `rotation: Rotate`) when
/// the operator may not change the realm: a warning stands in for them
/// ([`strict_rotation_finding`]). Returns the plan to make.
pub fn without_optional_realm_changes(mut plan: Plan) -> Plan {
    plan.realm.retain(|c| c.required);
    plan
}

/// `(revokeRefreshToken, refreshTokenMaxReuse)` once the plan is applied.
fn rotation_after(realm: &RealmSettings, plan: &Plan) -> (bool, u64) {
    let mut revoke = realm.revoke_refresh_token;
    let mut reuse = realm.refresh_token_max_reuse;
    for c in &plan.realm {
        match c.field {
            "revokeRefreshToken" => revoke = c.to.as_bool().unwrap_or(revoke),
            "refreshTokenMaxReuse" => reuse = c.to.as_u64().unwrap_or(reuse),
            _ => {}
        }
    }
    (revoke, reuse)
}

/// A warning when refresh tokens are strictly one-time once the plan is applied (realm
/// `revokeRefreshToken` on, `refreshTokenMaxReuse` 0): Coder refreshes inside each request
/// without coordinating requests or replicas, so concurrent refreshes redeem the same token and
/// all but one get `invalid_grant`, which signs the user out.
pub fn strict_rotation_finding(
    desired: &DesiredSettings,
    snap: &Snapshot,
    plan: &Plan,
    realm: &str,
    allow_realm_changes: bool,
) -> Option<Finding> {
    let (revoke, reuse) = rotation_after(&snap.realm, plan);
    if !revoke || reuse != 0 {
        return None;
    }
    let risk = "so when two of Coder's requests refresh a user's token at the same moment (requests of one page load, or requests on different Coder replicas; Coder does not coordinate them), the second gets invalid_grant, Keycloak ends the user's session and the user must sign in again";
    let message = if desired.rotation == Some(Rotation::RotateStrict) {
        format!(
            "spec.refreshTokens.rotation is RotateStrict: every refresh token of realm {realm} can be used exactly once (revokeRefreshToken on, refreshTokenMaxReuse 0), {risk}. Use rotation: Rotate to allow {ROTATE_MAX_REUSE} reuses"
        )
    } else {
        let fix = if allow_realm_changes {
            "set spec.refreshTokens.rotation: Rotate and the operator sets it".to_string()
        } else {
            "set spec.provider.keycloak.allowRealmChanges: true with rotation: Rotate and the operator sets it".to_string()
        };
        format!(
            "realm {realm} makes every refresh token usable exactly once (revokeRefreshToken on, refreshTokenMaxReuse 0), {risk}. Set the realm's refreshTokenMaxReuse to at least {ROTATE_MAX_REUSE} (admin console: Realm settings, Tokens tab, Refresh token max reuse), or {fix}"
        )
    };
    Some(Finding {
        reason: STRICT_ROTATION,
        message,
        blocking: false,
        expires_at: None,
    })
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
        && snap.offline_scope_has_role != Some(true)
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
    let client = attr_secs(client_attr)
        .filter(|n| *n > 0)
        .unwrap_or(realm_client_default);
    if client > 0 {
        client.min(user_session)
    } else {
        user_session
    }
}

/// Keycloak 22+'s offline max lifespan for a client
/// (`SessionExpirationUtils.calculateClientSessionMaxLifespanTimestamp`): with the realm switch
/// `offlineSessionMaxLifespanEnabled` off, a positive client attribute is the max and nothing
/// else is (`None`: no max); with it on, the attribute, else the realm's
/// `clientOfflineSessionMaxLifespan`, else `offlineSessionMaxLifespan`, capped by
/// `offlineSessionMaxLifespan`.
fn offline_lifetime(r: &RealmSettings, client_attr: Option<&str>) -> Option<u64> {
    let attr = attr_secs(client_attr).filter(|n| *n > 0);
    if !r.offline_max_enabled {
        return attr;
    }
    Some(capped(r.offline_max, client_attr, r.client_offline_max))
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
        (idle, offline_lifetime(r, snap.attr(ATTR_OFFLINE_MAX)))
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
    let role_ok = snap.full_scope_allowed()
        || snap.offline_scope_has_role == Some(true)
        || snap.offline_role_mapped == Some(true);
    IdpSettings {
        refresh_token_grant: Some(snap.attr(ATTR_USE_REFRESH_TOKENS) != Some("false")),
        offline_access: Some(linked && role_ok),
        lifetime: lifetime.map(Duration::from_secs),
        idle_timeout: Some(Duration::from_secs(idle)),
        rotation: Some(match (r.revoke_refresh_token, r.refresh_token_max_reuse) {
            (false, _) => Rotation::Reuse,
            (true, 0) => Rotation::RotateStrict,
            (true, _) => Rotation::Rotate,
        }),
        access_token_lifetime: Some(Duration::from_secs(access)),
        rotation_window: r
            .revoke_refresh_token
            .then(|| format!("{} reuses", r.refresh_token_max_reuse)),
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
                    expires_at: None,
                });
            }
            // Keycloak leaves out of scopes_supported every client scope whose attribute
            // include.in.openid.provider.metadata is "false"; such a scope still works when
            // requested. Whether the scope exists is checked through the admin API (below).
            if desired.offline_access
                && list_has("scopes_supported", OFFLINE_ACCESS) == Some(false)
                && snap.offline_scope_exists != Some(false)
            {
                out.push(Finding {
                    reason: "OfflineAccessNotAdvertised",
                    message: format!(
                        "the discovery document of realm {realm} does not list offline_access in scopes_supported; the client scope exists, so Coder can still request it (the scope's \"Include in OpenID Provider Metadata\" switch, include.in.openid.provider.metadata, is probably off). Turn it on if other clients discover scopes from the metadata"
                    ),
                    blocking: false,
                    expires_at: None,
                });
            }
        }
        Err(e) => out.push(Finding {
            reason: "DiscoveryUnavailable",
            message: format!("could not read the discovery document of realm {realm}: {e}"),
            blocking: false,
            expires_at: None,
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
            expires_at: None,
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
            expires_at: None,
        });
    }
    if let Some(f) = config_cli_finding(desired, snap, realm) {
        out.push(f);
    }
    let flag = |k: &str| snap.client.get(k).and_then(Value::as_bool);
    if flag("publicClient") == Some(true) {
        out.push(Finding {
            reason: "PublicClient",
            message: "the client is public (Client authentication off); Coder needs a confidential client with a secret".into(),
            blocking: false,
            expires_at: None,
        });
    }
    if flag("standardFlowEnabled") == Some(false) {
        out.push(Finding {
            reason: "StandardFlowDisabled",
            message: "the client has Standard flow (authorization code) disabled; Coder's OIDC sign-in needs it".into(),
            blocking: false,
            expires_at: None,
        });
    }
    if flag("enabled") == Some(false) {
        out.push(Finding {
            reason: "ClientDisabled",
            message: "the client is disabled in Keycloak; nobody can sign in to Coder".into(),
            blocking: false,
            expires_at: None,
        });
    }
    out
}

/// Prefix of the realm attributes keycloak-config-cli writes: its import checksums
/// (`de.adorsys.keycloak.config.import-checksum-<file>`, older releases without the suffix) and,
/// with remote state on, the state of what it manages (`de.adorsys.keycloak.config.state-…`).
pub const CONFIG_CLI_ATTRIBUTE_PREFIX: &str = "de.adorsys.keycloak.config.";

/// The keycloak-config-cli realm attributes of the realm, sorted.
pub fn config_cli_markers(realm_json: &Value) -> Vec<String> {
    let mut keys: Vec<String> = realm_json
        .get("attributes")
        .and_then(Value::as_object)
        .map(|a| {
            a.keys()
                .filter(|k| k.starts_with(CONFIG_CLI_ATTRIBUTE_PREFIX))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

/// The client-level changes of `todo` in the words of a client representation: the
/// `offline_access` optional client scope and the attributes to set.
pub(super) fn client_field_changes(todo: &Plan) -> Vec<String> {
    let mut fields = Vec::new();
    if todo.link_offline_scope {
        fields.push("add offline_access to optionalClientScopes".to_string());
    }
    if !todo.attributes.is_empty() {
        let attrs: Vec<String> = todo
            .attributes
            .iter()
            .map(|a| format!("{:?}: {:?}", a.key, a.to))
            .collect();
        fields.push(format!("set attributes {{{}}}", attrs.join(", ")));
    }
    fields
}

/// A realm imported by keycloak-config-cli: its next run puts back what its import file says
/// (it manages each client's client-scope lists in full, so it would unlink offline_access
/// again). Changing the client behind its back would be a fight; when something needs changing
/// the operator stalls and says what to add to the import file instead.
fn config_cli_finding(desired: &DesiredSettings, snap: &Snapshot, realm: &str) -> Option<Finding> {
    let markers = config_cli_markers(&snap.realm_json);
    let marker = markers.first()?;
    // The operator never writes the optional reuse window into such a realm; the strict-rotation
    // warning names it instead.
    let todo = without_optional_realm_changes(plan(desired, snap));
    if todo.is_empty() {
        return None;
    }
    let client_id = snap
        .client
        .get("clientId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let client_fields = client_field_changes(&todo);
    let mut parts = Vec::new();
    if !client_fields.is_empty() {
        parts.push(format!(
            "in clients[clientId={client_id}]: {}",
            client_fields.join(" and ")
        ));
    }
    if todo.map_offline_role {
        parts.push(format!(
            "in scopeMappings: {{\"client\": {client_id:?}, \"roles\": [\"offline_access\"]}}"
        ));
    }
    if !todo.realm.is_empty() {
        let fields: Vec<String> = todo
            .realm
            .iter()
            .map(|r| format!("\"{}\": {}", r.field, r.to))
            .collect();
        parts.push(format!("at the realm level: {}", fields.join(", ")));
    }
    Some(Finding {
        reason: "ManagedByKeycloakConfigCli",
        message: format!(
            "realm {realm} is managed by keycloak-config-cli (realm attribute {marker}), whose next import would undo the operator's changes (it manages each client's client-scope lists in full and would unlink offline_access again), so the operator changes nothing; add to the realm's import file {} and run the import; the operator then only checks the result",
            parts.join("; ")
        ),
        blocking: true,
        expires_at: None,
    })
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
            realm_json: json!({"ssoSessionIdleTimeout": 1800}),
            client,
            offline_scope: ScopeLink::Optional,
            offline_scope_id: None,
            offline_scope_exists: None,
            offline_role_mapped: None,
            offline_scope_has_role: None,
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
        let c = &p.changes("coder", "web")[0];
        assert_eq!(c.to_string(), "attribute use.refresh.tokens: false -> true");
        assert_eq!(c.target, r#"Keycloak client "web" in realm "coder""#);
        assert!(c.why.contains("refresh tokens"), "{}", c.why);

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
                ("revokeRefreshToken", json!(true)),
                ("refreshTokenMaxReuse", json!(ROTATE_MAX_REUSE)),
            ],
            "lifetime is the client attribute alone while the realm switch is off"
        );
        let switched_on = RealmSettings {
            offline_max_enabled: true,
            ..r.clone()
        };
        let fields: Vec<(&str, Value)> = realm_changes(&d, &switched_on)
            .into_iter()
            .map(|c| (c.field, c.to))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("offlineSessionIdleTimeout", json!(3_888_000)),
                ("offlineSessionMaxLifespan", json!(7_776_000)),
                ("revokeRefreshToken", json!(true)),
                ("refreshTokenMaxReuse", json!(ROTATE_MAX_REUSE)),
            ],
            "the switch is on and its 60 days cap the wanted 90"
        );
        let short = DesiredSettings {
            lifetime: Some(h(24 * 30)),
            idle_timeout: None,
            rotation: None,
            ..d.clone()
        };
        assert_eq!(realm_changes(&short, &switched_on), vec![]);
        assert!(
            realm_changes(&d, &r)
                .iter()
                .all(|c| c.field != "offlineSessionMaxLifespanEnabled")
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

    /// `rotation: Rotate` keeps a reuse window (at least `ROTATE_MAX_REUSE` uses after the
    /// first) so that Coder's concurrent refreshes do not sign users out; it is optional (dropped,
    /// with a warning, without allowRealmChanges), `RotateStrict` is required and warned about.
    #[test]
    fn rotate_keeps_a_reuse_window_and_strict_rotation_warns() {
        let rotate = DesiredSettings {
            rotation: Some(Rotation::Rotate),
            ..Default::default()
        };
        let mut s = snap(json!({"id": "1", "attributes": {"use.refresh.tokens": "true"}}));
        s.realm.revoke_refresh_token = true;
        let p = plan(&rotate, &s);
        assert_eq!(
            p.realm,
            vec![RealmChange {
                field: "refreshTokenMaxReuse",
                from: json!(0),
                to: json!(ROTATE_MAX_REUSE),
                required: false,
            }]
        );
        let c = &p.changes("coder", "coder")[0];
        assert_eq!(c.to_string(), "refreshTokenMaxReuse: 0 -> 5");
        assert!(c.why.contains("concurrent refreshes"), "{}", c.why);
        assert!(c.why.contains("RotateStrict"), "{}", c.why);
        assert!(
            strict_rotation_finding(&rotate, &s, &p, "coder", true).is_none(),
            "the plan opens the window"
        );

        // Without allowRealmChanges the window is not written: a warning instead of a stall.
        let limited = without_optional_realm_changes(p.clone());
        assert!(limited.is_empty());
        let f = strict_rotation_finding(&rotate, &s, &limited, "coder", false).unwrap();
        assert_eq!((f.reason, f.blocking), (STRICT_ROTATION, false));
        assert!(
            f.message.contains("refreshTokenMaxReuse to at least 5")
                && f.message.contains("allowRealmChanges")
                && f.message.contains("sign in again"),
            "{}",
            f.message
        );
        // Whatever the policy asks (rotation unset too), a strict realm is reported.
        let unset = DesiredSettings::default();
        assert!(plan(&unset, &s).is_empty());
        assert!(strict_rotation_finding(&unset, &s, &plan(&unset, &s), "coder", true).is_some());

        // A larger count an administrator chose is kept.
        s.realm.refresh_token_max_reuse = 10;
        assert!(plan(&rotate, &s).is_empty());
        assert_eq!(effective(&s, true).rotation, Some(Rotation::Rotate));

        // RotateStrict: one-time use, required, and warned about.
        let strict = DesiredSettings {
            rotation: Some(Rotation::RotateStrict),
            ..Default::default()
        };
        let p = plan(&strict, &s);
        assert_eq!(
            p.realm,
            vec![RealmChange {
                field: "refreshTokenMaxReuse",
                from: json!(10),
                to: json!(0),
                required: true,
            }]
        );
        assert_eq!(without_optional_realm_changes(p.clone()), p);
        let f = strict_rotation_finding(&strict, &s, &p, "coder", true).unwrap();
        assert!(
            f.message.contains("RotateStrict") && f.message.contains("invalid_grant"),
            "{}",
            f.message
        );
        // From no rotation at all, RotateStrict needs only revokeRefreshToken.
        s.realm = realm_defaults();
        let fields: Vec<_> = plan(&strict, &s)
            .realm
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields, ["revokeRefreshToken"]);
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
            "offline max lifespan disabled in the realm and no client value"
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
        assert_eq!(effective(&s, true).rotation, Some(Rotation::RotateStrict));
        s.realm.refresh_token_max_reuse = 1;
        assert_eq!(effective(&s, true).rotation, Some(Rotation::Rotate));
        s.client = json!({"fullScopeAllowed": false});
        s.offline_role_mapped = Some(false);
        assert_eq!(effective(&s, true).offline_access, Some(false));
    }

    /// `SessionExpirationUtils.calculateClientSessionMaxLifespanTimestamp` (Keycloak 22+):
    /// (realm switch, realm offlineSessionMaxLifespan, realm clientOfflineSessionMaxLifespan,
    /// client attribute) -> offline lifetime.
    #[test]
    fn offline_lifetime_follows_keycloak_22() {
        type Row<'a> = (bool, u64, u64, Option<&'a str>, Option<u64>, &'a str);
        let table: &[Row] = &[
            (
                false,
                5_184_000,
                0,
                None,
                None,
                "switch off, no attribute: no max",
            ),
            (
                false,
                5_184_000,
                0,
                Some(""),
                None,
                "blank attribute is unset",
            ),
            (
                false,
                5_184_000,
                0,
                Some("0"),
                None,
                "zero attribute is unset",
            ),
            (
                false,
                5_184_000,
                0,
                Some("soon"),
                None,
                "non-numeric is unset",
            ),
            (
                false,
                5_184_000,
                0,
                Some("2592000"),
                Some(2_592_000),
                "attribute alone",
            ),
            (
                false,
                86_400,
                0,
                Some("2592000"),
                Some(2_592_000),
                "realm max ignored while off",
            ),
            (
                false,
                5_184_000,
                604_800,
                None,
                None,
                "realm client default inert while off",
            ),
            (
                true,
                5_184_000,
                0,
                None,
                Some(5_184_000),
                "switch on: the realm max",
            ),
            (
                true,
                5_184_000,
                604_800,
                None,
                Some(604_800),
                "realm client default",
            ),
            (
                true,
                5_184_000,
                604_800,
                Some(""),
                Some(604_800),
                "blank inherits",
            ),
            (
                true,
                5_184_000,
                604_800,
                Some("0"),
                Some(604_800),
                "zero inherits",
            ),
            (
                true,
                5_184_000,
                604_800,
                Some("86400"),
                Some(86_400),
                "attribute wins",
            ),
            (
                true,
                86_400,
                0,
                Some("2592000"),
                Some(86_400),
                "capped by the realm max",
            ),
            (
                true,
                86_400,
                604_800,
                None,
                Some(86_400),
                "client default capped too",
            ),
        ];
        for (enabled, max, client_default, attr, want, why) in table {
            let mut s = snap(match attr {
                Some(v) => json!({"attributes": {"client.offline.session.max.lifespan": v}}),
                None => json!({"attributes": {}}),
            });
            s.realm.offline_max_enabled = *enabled;
            s.realm.offline_max = *max;
            s.realm.client_offline_max = *client_default;
            assert_eq!(
                effective(&s, true).lifetime,
                want.map(Duration::from_secs),
                "{why}"
            );
        }
    }

    /// With fullScopeAllowed off, the role reaches offline tokens through the client's own
    /// scope mappings or through those of the requested offline_access client scope.
    #[test]
    fn offline_role_through_the_scope_or_the_client() {
        let d = DesiredSettings {
            offline_access: true,
            ..Default::default()
        };
        let role = Some(json!({"id": "r1", "name": "offline_access"}));
        // (scope carries the role, client maps it) -> (map the role, offline access effective)
        let table: &[(Option<bool>, Option<bool>, bool, bool)] = &[
            (Some(true), None, false, true),
            (Some(false), Some(false), true, false),
            (Some(false), Some(true), false, true),
            (None, Some(false), true, false),
        ];
        for (scope_has, client_has, map, works) in table {
            let mut s = snap(
                json!({"id": "1", "fullScopeAllowed": false, "attributes": {"use.refresh.tokens": "true"}}),
            );
            s.offline_scope_has_role = *scope_has;
            s.offline_role_mapped = *client_has;
            s.offline_role = role.clone();
            assert_eq!(
                plan(&d, &s).map_offline_role,
                *map,
                "{scope_has:?} {client_has:?}"
            );
            assert_eq!(
                effective(&s, true).offline_access,
                Some(*works),
                "{scope_has:?} {client_has:?}"
            );
        }
    }

    #[test]
    fn keycloak_config_cli_realms_stall_with_what_to_import() {
        let d = DesiredSettings {
            offline_access: true,
            idle_timeout: Some(h(24)),
            ..Default::default()
        };
        let mut s = snap(json!({"id": "1", "clientId": "coder", "attributes": {}}));
        s.offline_scope = ScopeLink::None;
        s.offline_scope_id = Some("scope-1".into());
        assert!(findings(&d, &s, "coder").is_empty(), "no markers");
        s.realm_json = json!({"attributes": {
            "frontendUrl": "",
            "de.adorsys.keycloak.config.import-checksum-default": "6292be06",
        }});
        let f = findings(&d, &s, "coder");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].reason, "ManagedByKeycloakConfigCli");
        assert!(f[0].blocking);
        assert_eq!(
            f[0].message,
            "realm coder is managed by keycloak-config-cli (realm attribute de.adorsys.keycloak.config.import-checksum-default), whose next import would undo the operator's changes (it manages each client's client-scope lists in full and would unlink offline_access again), so the operator changes nothing; add to the realm's import file in clients[clientId=coder]: add offline_access to optionalClientScopes and set attributes {\"use.refresh.tokens\": \"true\", \"client.offline.session.idle.timeout\": \"86400\"} and run the import; the operator then only checks the result"
        );
        // Once the import carries the settings, nothing is reported.
        s.client = json!({"id": "1", "clientId": "coder", "attributes": {"use.refresh.tokens": "true", "client.offline.session.idle.timeout": "86400"}});
        s.offline_scope = ScopeLink::Optional;
        assert!(findings(&d, &s, "coder").is_empty());
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
                ("OfflineAccessNotAdvertised", false)
            ],
            "a scope hidden from the metadata still works"
        );
        s.offline_scope = ScopeLink::None;
        s.offline_scope_exists = Some(false);
        assert_eq!(
            findings(&d, &s, "coder")
                .iter()
                .map(|f| (f.reason, f.blocking))
                .collect::<Vec<_>>(),
            vec![
                ("RefreshGrantNotAdvertised", false),
                ("OfflineAccessScopeMissing", true)
            ],
            "a missing scope is told by the admin API"
        );
        s.offline_scope = ScopeLink::Optional;
        s.offline_scope_exists = None;
        s.discovery = Ok(json!({}));
        assert_eq!(
            findings(&d, &s, "coder"),
            vec![],
            "absent lists mean unknown, not no"
        );
    }
}
