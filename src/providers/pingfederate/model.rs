//! The pure part of the PingFederate provider: what is read (server version, the OAuth client,
//! the authorization server settings), unit conversions, effective values, findings and the plan
//! (the client written back whole, with only the owned fields changed).

use std::time::Duration;

use serde_json::{Value, json};

use super::{KIND, OFFLINE_ACCESS};
use crate::crd::{PingFederateReplication, Rotation};
use crate::providers::{
    Change, CoderNeeds, DesiredSettings, Finding, IdpSettings, Observation, ProviderError,
    json_strings, unsupported_unless_none,
};

const REFRESH_TOKEN: &str = "REFRESH_TOKEN";
const OVERRIDE: &str = "OVERRIDE_SERVER_DEFAULT";
const GRACE_TYPE: &str = "refreshTokenRollingGracePeriodType";
const GRACE: &str = "refreshTokenRollingGracePeriod";

/// Rolling grace period (seconds) with `rotation: Rotate`: how long a rolled refresh token stays
/// redeemable. Coder refreshes inside each request with no lock across requests or replicas, so
/// requests arriving while a user's access token is expired all redeem the same refresh token
/// within the time of one refresh (a token-endpoint round trip and Coder's database write,
/// well under a second, seconds with retries). 60 s covers that with a wide margin, is
/// PingFederate's own server default (a server on defaults needs no change), and keeps the window
/// short; Coder is a confidential client, so a leaked token is useless without its secret.
pub const ROTATE_GRACE_PERIOD_SECS: i64 = 60;

/// Reason of the warning about strict one-time refresh tokens.
pub const STRICT_ROTATION: &str = "StrictRefreshTokenRotation";

/// Major and minor version of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ServerVersion(pub(super) u32, pub(super) u32);

impl ServerVersion {
    /// 12.1 added the client-level `offline_access` controls.
    pub(super) fn has_offline_controls(self) -> bool {
        self >= ServerVersion(12, 1)
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('.');
        let major = parts.next()?.trim().parse().ok()?;
        let minor = parts.next().unwrap_or("0").trim().parse().ok()?;
        Some(ServerVersion(major, minor))
    }
}

/// How the server is deployed, from `GET /cluster/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Cluster {
    /// One node (`/cluster/status` answers 403 "not deployed in clustered mode"): changes take
    /// effect at once.
    Standalone,
    /// An administrative console plus engine nodes that serve replicated configuration only.
    Clustered {
        /// The console has changes the engines do not have (`replicationRequired`).
        replication_required: bool,
        /// Engine nodes whose `replicationStatus` is not `SUCCEEDED` (address and status).
        lagging: Vec<String>,
    },
}

impl Cluster {
    /// Reads a `ClusterStatus` body.
    pub(super) fn from_status(status: &Value) -> Self {
        let lagging = status["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["mode"].as_str() != Some("CLUSTERED_CONSOLE"))
            .filter_map(|n| {
                let st = n["replicationStatus"].as_str()?;
                (st != "SUCCEEDED").then(|| {
                    format!(
                        "{} ({st})",
                        n["address"].as_str().unwrap_or("an engine node")
                    )
                })
            })
            .collect();
        Cluster::Clustered {
            replication_required: status["replicationRequired"].as_bool() == Some(true),
            lagging,
        }
    }

    pub(super) fn replication_required(&self) -> bool {
        matches!(
            self,
            Cluster::Clustered {
                replication_required: true,
                ..
            }
        )
    }
}

/// State read from the server.
#[derive(Clone)]
pub(super) struct Snapshot {
    pub(super) version: ServerVersion,
    pub(super) client: Value,
    pub(super) settings: Value,
    pub(super) cluster: Cluster,
}

/// Reason of the finding (and of the transient error) while the engines do not serve the
/// console's configuration.
pub(super) const REPLICATION_PENDING: &str = "ReplicationPending";

const REPLICATE_HOWTO: &str = "an administrator must review and replicate them (administrative console: \
    System > Server > Cluster Management > Replicate Configuration, or POST /pf-admin-api/v1/cluster/replicate)";

/// The message while replication is required and the operator does not replicate.
pub(super) fn replication_pending_message(
    mode: PingFederateReplication,
    own_changes: bool,
) -> String {
    let head = "PingFederate's administrative console has configuration changes that are not replicated to \
                the engine nodes yet (GET /cluster/status: replicationRequired), so the engines may not serve \
                this client's refresh-token settings";
    match (mode, own_changes) {
        (PingFederateReplication::Manual, _) => format!(
            "{head}. spec.provider.pingFederate.replication is Manual, so the operator does not replicate: \
             {REPLICATE_HOWTO}. Checked again until replicated"
        ),
        (PingFederateReplication::Automatic, false) => format!(
            "{head}. They may be other administrators' changes, so the operator does not replicate them: \
             {REPLICATE_HOWTO}. Checked again until replicated"
        ),
        (PingFederateReplication::Automatic, true) => format!(
            "{head}. They may be other administrators' changes, so the operator neither replicates them nor \
             makes its own changes (it would have to replicate them too): {REPLICATE_HOWTO}. The operator \
             makes and replicates its changes once nothing else is pending"
        ),
    }
}

/// Settings PingFederate cannot honour.
pub(super) fn check_desired(desired: &DesiredSettings) -> Result<(), ProviderError> {
    let mut problems = Vec::new();
    if desired.access_token_lifetime.is_some() {
        problems.push(
            "spec.refreshTokens.accessTokenLifetime cannot be set per client: in PingFederate the access-token \
             lifetime belongs to the access token manager, which many clients share, so changing it would change \
             every client using that manager. Remove accessTokenLifetime from the policy and set the lifetime on \
             the access token manager Coder's client uses (Applications > OAuth > Access Token Management)"
                .to_string(),
        );
    }
    for (name, d) in [
        ("lifetime", desired.lifetime),
        ("idleTimeout", desired.idle_timeout),
    ] {
        if let Some(d) = d
            && grant_time(d).is_none()
        {
            problems.push(format!(
                "spec.refreshTokens.{name} ({}) is not a positive whole number of minutes; PingFederate stores \
                 persistent-grant times in MINUTES, HOURS or DAYS",
                crate::duration::format(d)
            ));
        }
    }
    unsupported_unless_none(KIND, problems)
}

/// The largest unit that represents `d` exactly: `(value, unit)`; `None` unless a positive whole
/// number of minutes.
fn grant_time(d: Duration) -> Option<(i64, &'static str)> {
    if d.subsec_nanos() != 0 || d.as_secs() == 0 || !d.as_secs().is_multiple_of(60) {
        return None;
    }
    let secs = d.as_secs();
    let (n, unit) = if secs.is_multiple_of(86_400) {
        (secs / 86_400, "DAYS")
    } else if secs.is_multiple_of(3_600) {
        (secs / 3_600, "HOURS")
    } else {
        (secs / 60, "MINUTES")
    };
    Some((i64::try_from(n).ok()?, unit))
}

/// A `(time, unit)` pair as a duration; `None` for -1 (indefinite), 0, or an unknown unit.
fn duration_of(time: &Value, unit: &Value) -> Option<Duration> {
    let n = u64::try_from(time.as_i64()?).ok().filter(|n| *n > 0)?;
    let secs = match unit.as_str()? {
        "SECONDS" => 1,
        "MINUTES" => 60,
        "HOURS" => 3_600,
        "DAYS" => 86_400,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

fn show(d: Option<Duration>) -> String {
    d.map(crate::duration::format)
        .unwrap_or_else(|| "indefinite".into())
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

/// When the client secret last changed (the only way to tell: `encryptedSecret` is a new
/// ciphertext on every read).
pub(super) fn secret_changed_time(client: &Value) -> Option<&str> {
    client["clientSecretChangedTime"].as_str()
}

fn has_scope(settings: &Value, list: &str, name: &str) -> bool {
    settings[list]
        .as_array()
        .is_some_and(|a| a.iter().any(|e| e["name"].as_str() == Some(name)))
}

/// One persistent-grant time: the client fields and the server-default fields.
struct GrantTime {
    ty: &'static str,
    time: &'static str,
    unit: &'static str,
    server_time: &'static str,
    server_unit: &'static str,
}

const LIFETIME: GrantTime = GrantTime {
    ty: "persistentGrantExpirationType",
    time: "persistentGrantExpirationTime",
    unit: "persistentGrantExpirationTimeUnit",
    server_time: "persistentGrantLifetime",
    server_unit: "persistentGrantLifetimeUnit",
};

const IDLE: GrantTime = GrantTime {
    ty: "persistentGrantIdleTimeoutType",
    time: "persistentGrantIdleTimeout",
    unit: "persistentGrantIdleTimeoutTimeUnit",
    server_time: "persistentGrantIdleTimeout",
    server_unit: "persistentGrantIdleTimeoutTimeUnit",
};

impl GrantTime {
    fn kind<'a>(&self, client: &'a Value) -> &'a str {
        client[self.ty].as_str().unwrap_or("SERVER_DEFAULT")
    }

    /// The effective value (`None` = indefinite).
    fn effective(&self, client: &Value, settings: &Value) -> Option<Duration> {
        match self.kind(client) {
            "INDEFINITE_EXPIRY" => None,
            OVERRIDE => duration_of(&client[self.time], &client[self.unit]),
            _ => duration_of(&settings[self.server_time], &settings[self.server_unit]),
        }
    }

    /// Sets the override in `new` when the client does not already override with `want`.
    fn ensure(
        &self,
        client: &Value,
        settings: &Value,
        want: Duration,
        new: &mut Value,
        changes: &mut Vec<Change>,
        (target, why): (&str, &str),
    ) {
        let current = duration_of(&client[self.time], &client[self.unit]);
        if self.kind(client) == OVERRIDE && current == Some(want) {
            return;
        }
        let Some((n, unit)) = grant_time(want) else {
            return;
        };
        new[self.ty] = json!(OVERRIDE);
        new[self.time] = json!(n);
        new[self.unit] = json!(unit);
        changes.push(Change::new(
            target,
            format!("{}, {}, {}", self.ty, self.time, self.unit),
            format!(
                "{} ({})",
                self.kind(client),
                show(self.effective(client, settings))
            ),
            format!("{OVERRIDE} ({n} {unit})"),
            why,
        ));
    }
}

/// Whether refresh tokens roll: the client's `refreshRolling`, else the server's
/// `rollRefreshTokenValues` (true when absent).
fn rolls(client: &Value, settings: &Value) -> bool {
    match client["refreshRolling"].as_str() {
        Some("ROLL") => true,
        Some("DONT_ROLL") => false,
        _ => settings["rollRefreshTokenValues"].as_bool().unwrap_or(true),
    }
}

/// The effective rolling grace period in seconds: the client override, else the server's
/// `refreshTokenRollingGracePeriod` (60 when absent, its documented default).
fn grace_period(client: &Value, settings: &Value) -> i64 {
    if client[GRACE_TYPE].as_str() == Some(OVERRIDE) {
        client[GRACE].as_i64().unwrap_or(0)
    } else {
        settings[GRACE].as_i64().unwrap_or(ROTATE_GRACE_PERIOD_SECS)
    }
}

fn rotation_of(client: &Value, settings: &Value) -> Option<Rotation> {
    Some(if !rolls(client, settings) {
        Rotation::Reuse
    } else if grace_period(client, settings) > 0 {
        Rotation::Rotate
    } else {
        Rotation::RotateStrict
    })
}

/// The effective minimum age before a refresh token rolls, when not zero. The value is in hours
/// unless a 12.1 unit field says otherwise.
fn rolling_interval(client: &Value, settings: &Value) -> Option<Duration> {
    let hours = json!("HOURS");
    let (time, unit) = if client["refreshTokenRollingIntervalType"].as_str() == Some(OVERRIDE) {
        (
            &client["refreshTokenRollingInterval"],
            client.get("refreshTokenRollingIntervalTimeUnit"),
        )
    } else {
        (
            &settings["refreshRollingInterval"],
            settings.get("refreshRollingIntervalTimeUnit"),
        )
    };
    duration_of(time, unit.filter(|u| u.is_string()).unwrap_or(&hours))
}

/// 12.1 client values `SERVER_DEFAULT|YES|NO` resolved against the server's boolean.
fn tri_state(client: &Value, settings: &Value, field: &str) -> bool {
    match client[field].as_str() {
        Some("YES") => true,
        Some("NO") => false,
        _ => settings[field].as_bool().unwrap_or(false),
    }
}

/// `(offline_access required for refresh tokens, prompt=consent required for offline_access)`.
fn offline_controls(client: &Value, settings: &Value) -> (bool, bool) {
    let required = tri_state(
        client,
        settings,
        "requireOfflineAccessScopeToIssueRefreshTokens",
    );
    let consent = required && tri_state(client, settings, "offlineAccessRequireConsentPrompt");
    (required, consent)
}

/// `rotation: Rotate` wants a rolling grace period of at least [`ROTATE_GRACE_PERIOD_SECS`]
/// (a longer one an administrator chose is kept); `RotateStrict` wants none. Set as the client
/// override (11.3 and 12.1 both have it); on a server whose client representation lacks the
/// override the server-wide value applies, which is reported, not changed.
fn ensure_grace_period(
    r: Rotation,
    client: &Value,
    settings: &Value,
    new: &mut Value,
    changes: &mut Vec<Change>,
    findings: &mut Vec<Finding>,
    target: &str,
) {
    let now = grace_period(client, settings);
    let want = match r {
        Rotation::Rotate if now < ROTATE_GRACE_PERIOD_SECS => ROTATE_GRACE_PERIOD_SECS,
        Rotation::RotateStrict if now != 0 => 0,
        _ => return,
    };
    if client.get(GRACE_TYPE).is_none() {
        findings.push(Finding {
            reason: "RollingGracePeriodNotSet",
            message: format!(
                "this PingFederate version has no per-client refresh token rolling grace period, so the server's ({now} s) applies; spec.refreshTokens.rotation wants {want} s. Change it under System > OAuth Settings > Authorization Server Settings (refreshTokenRollingGracePeriod) if every client may have it"
            ),
            blocking: false,
            expires_at: None,
        });
        return;
    }
    let kind = client[GRACE_TYPE].as_str().unwrap_or("SERVER_DEFAULT");
    new[GRACE_TYPE] = json!(OVERRIDE);
    new[GRACE] = json!(want);
    let why = if want == 0 {
        "spec.refreshTokens.rotation: RotateStrict: a rolled refresh token is invalid at once (concurrent refreshes by Coder then sign users out)".to_string()
    } else {
        format!(
            "spec.refreshTokens.rotation: Rotate: a rolled refresh token stays valid {want} s, so that Coder's concurrent refreshes (several requests of a page load, several replicas, none waiting for the others) all succeed instead of signing the user out. Set rotation: RotateStrict for strict one-time use"
        )
    };
    changes.push(Change::new(
        target,
        format!("{GRACE_TYPE}, {GRACE}"),
        format!("{kind} ({now} s)"),
        format!("{OVERRIDE} ({want} s)"),
        why,
    ));
}

/// A warning when refresh tokens roll with no grace period once the client (`new`, as it will be
/// written) is saved: Coder refreshes inside each request without coordinating requests or
/// replicas, so concurrent refreshes redeem the same token and all but one fail.
fn strict_rotation_finding(
    desired: &DesiredSettings,
    new: &Value,
    settings: &Value,
) -> Option<Finding> {
    if !rolls(new, settings) || grace_period(new, settings) > 0 {
        return None;
    }
    let risk = "so when two of Coder's requests refresh a user's token at the same moment (requests of one page load, or requests on different Coder replicas; Coder does not coordinate them), the second gets invalid_grant and the user must sign in again";
    let message = if desired.rotation == Some(Rotation::RotateStrict) {
        format!(
            "spec.refreshTokens.rotation is RotateStrict: PingFederate rolls the client's refresh tokens with no grace period, {risk}. Use rotation: Rotate for a {ROTATE_GRACE_PERIOD_SECS} s grace period"
        )
    } else {
        format!(
            "PingFederate rolls the client's refresh tokens with no grace period (refreshTokenRollingGracePeriod 0), {risk}. Set spec.refreshTokens.rotation: Rotate (the operator sets a {ROTATE_GRACE_PERIOD_SECS} s grace period) or Reuse"
        )
    };
    Some(Finding {
        reason: STRICT_ROTATION,
        message,
        blocking: false,
        expires_at: None,
    })
}

/// What to do, computed from a snapshot.
pub(super) struct Plan {
    pub(super) observation: Observation,
    pub(super) client_changes: Vec<Change>,
    pub(super) client_update: Option<Value>,
    pub(super) add_scope: bool,
    /// Clustered with `Automatic` replication and nothing else pending: after the writes, replicate
    /// when the cluster status says so.
    pub(super) replicate: bool,
}

pub(super) fn plan(
    snap: &Snapshot,
    desired: &DesiredSettings,
    replication: PingFederateReplication,
) -> Plan {
    let (client, settings) = (&snap.client, &snap.settings);
    let mut new = client.clone();
    let mut client_changes = Vec::new();
    let target = format!(
        "PingFederate OAuth client {:?}",
        client["clientId"].as_str().unwrap_or_default()
    );
    let server = "PingFederate authorization server settings";

    let grants = json_strings(&client["grantTypes"]);
    let has_refresh = grants.iter().any(|g| g == REFRESH_TOKEN);
    if !has_refresh {
        let mut wanted = grants.clone();
        wanted.push(REFRESH_TOKEN.into());
        new["grantTypes"] = json!(wanted);
        client_changes.push(Change::new(
            &target,
            "grantTypes",
            list(&grants),
            list(&wanted),
            "Coder refreshes tokens with the refresh_token grant, which the client must allow",
        ));
    }

    let common = has_scope(settings, "scopes", OFFLINE_ACCESS);
    let exclusive = has_scope(settings, "exclusiveScopes", OFFLINE_ACCESS);
    let restricts = client["restrictScopes"].as_bool() == Some(true);
    let restricted = json_strings(&client["restrictedScopes"]);
    let client_exclusive = json_strings(&client["exclusiveScopes"]);
    let offline_now = (common && (!restricts || restricted.iter().any(|s| s == OFFLINE_ACCESS)))
        || (exclusive && client_exclusive.iter().any(|s| s == OFFLINE_ACCESS));
    let mut add_scope = false;
    let mut scope_changes = Vec::new();
    if desired.offline_access && !offline_now {
        if exclusive {
            let mut wanted = client_exclusive.clone();
            wanted.push(OFFLINE_ACCESS.into());
            new["exclusiveScopes"] = json!(wanted);
            client_changes.push(Change::new(
                &target,
                "exclusiveScopes",
                list(&client_exclusive),
                list(&wanted),
                "offline_access is an exclusive scope of the server, so the client must list it to get it (spec.refreshTokens.offlineAccess)",
            ));
        } else {
            if !common {
                add_scope = true;
                scope_changes.push(Change::new(
                    server,
                    "common scope offline_access",
                    "not defined",
                    "defined",
                    "Coder requests offline_access (spec.refreshTokens.offlineAccess), which the server must know",
                ));
            }
            if restricts && !restricted.iter().any(|s| s == OFFLINE_ACCESS) {
                let mut wanted = restricted.clone();
                wanted.push(OFFLINE_ACCESS.into());
                new["restrictedScopes"] = json!(wanted);
                client_changes.push(Change::new(
                    &target,
                    "restrictedScopes",
                    list(&restricted),
                    list(&wanted),
                    "the client is restricted to listed scopes and Coder requests offline_access (spec.refreshTokens.offlineAccess)",
                ));
            }
        }
    }

    if let Some(d) = desired.lifetime {
        LIFETIME.ensure(
            client,
            settings,
            d,
            &mut new,
            &mut client_changes,
            (&target, "spec.refreshTokens.lifetime"),
        );
    }
    if let Some(d) = desired.idle_timeout {
        IDLE.ensure(
            client,
            settings,
            d,
            &mut new,
            &mut client_changes,
            (&target, "spec.refreshTokens.idleTimeout"),
        );
    }
    let mut findings = Vec::new();
    if let Some(r) = desired.rotation {
        let want = match r {
            Rotation::Rotate | Rotation::RotateStrict => "ROLL",
            Rotation::Reuse => "DONT_ROLL",
        };
        let current = client["refreshRolling"]
            .as_str()
            .unwrap_or("SERVER_DEFAULT");
        if current != want {
            new["refreshRolling"] = json!(want);
            client_changes.push(Change::new(
                &target,
                "refreshRolling",
                current,
                want,
                "spec.refreshTokens.rotation",
            ));
        }
        if r != Rotation::Reuse {
            ensure_grace_period(
                r,
                client,
                settings,
                &mut new,
                &mut client_changes,
                &mut findings,
                &target,
            );
        }
    }
    if let Some(f) = strict_rotation_finding(desired, &new, settings) {
        findings.push(f);
    }
    let mut coder = CoderNeeds::default();
    if desired.offline_access {
        coder.add_scopes.push(OFFLINE_ACCESS.into());
    }
    if snap.version.has_offline_controls() {
        let (required, consent) = offline_controls(client, settings);
        if required && !desired.offline_access {
            findings.push(Finding {
                reason: "OfflineAccessRequired",
                message: "PingFederate issues refresh tokens to this client only when offline_access is requested \
                          (requireOfflineAccessScopeToIssueRefreshTokens); set spec.refreshTokens.offlineAccess to true"
                    .into(),
                blocking: true,
                expires_at: None,
            });
        }
        if consent && desired.offline_access {
            coder.params.insert("prompt".into(), "consent".into());
            findings.push(Finding {
                reason: "ConsentPromptRequired",
                message: "PingFederate requires prompt=consent with offline_access for this client \
                          (offlineAccessRequireConsentPrompt), so Coder sends prompt=consent and users see the \
                          consent page at each sign-in"
                    .into(),
                blocking: false,
                expires_at: None,
            });
        }
    }

    if desired.rotation == Some(Rotation::Rotate)
        && let Some(interval) = rolling_interval(client, settings)
    {
        findings.push(Finding {
            reason: "RefreshRollingInterval",
            message: format!(
                "PingFederate replaces a refresh token on use only once it is at least {} old \
                 (refresh token rolling interval); until then refreshing returns the same token",
                crate::duration::format(interval)
            ),
            blocking: false,
            expires_at: None,
        });
    }

    let settings_now = IdpSettings {
        refresh_token_grant: Some(has_refresh),
        offline_access: Some(offline_now),
        lifetime: LIFETIME.effective(client, settings),
        idle_timeout: IDLE.effective(client, settings),
        rotation: rotation_of(client, settings),
        access_token_lifetime: None,
        rotation_window: rolls(client, settings)
            .then(|| format!("{}s", grace_period(client, settings).max(0))),
    };

    let client_update = (!client_changes.is_empty()).then(|| {
        // GET never returns a plaintext secret; make sure none is ever sent back (it would rotate
        // the secret Coder uses). `encryptedSecret` stays as read.
        if let Some(auth) = new.get_mut("clientAuth").and_then(Value::as_object_mut) {
            auth.remove("secret");
        }
        new
    });
    let mut changes = scope_changes;
    changes.extend(client_changes.iter().cloned());

    let mut replicate = false;
    if let Cluster::Clustered {
        replication_required,
        lagging,
    } = &snap.cluster
    {
        let automatic = replication == PingFederateReplication::Automatic;
        if *replication_required && (automatic || changes.is_empty()) {
            // Automatic: never push others' pending changes; Manual with changes to make: write
            // them (apply then reports ReplicationPending).
            findings.push(Finding {
                reason: REPLICATION_PENDING,
                message: replication_pending_message(replication, !changes.is_empty()),
                blocking: true,
                expires_at: None,
            });
        }
        replicate = automatic && !*replication_required;
        if !*replication_required && !lagging.is_empty() {
            findings.push(Finding {
                reason: "ReplicationIncomplete",
                message: format!(
                    "PingFederate engine node(s) {} have not applied the replicated configuration yet; they \
                     serve the previous one until they fetch it (engines poll the cluster periodically). Check \
                     that these nodes are running and reach the cluster",
                    lagging.join(", ")
                ),
                blocking: false,
                expires_at: None,
            });
        }
    }
    Plan {
        observation: Observation {
            settings: settings_now,
            changes,
            findings,
            coder,
        },
        client_changes,
        client_update,
        add_scope,
        replicate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 86_400)
    }

    fn client() -> Value {
        json!({
            "clientId": "coder", "name": "Coder",
            "grantTypes": ["AUTHORIZATION_CODE", "CLIENT_CREDENTIALS"],
            "restrictScopes": true, "restrictedScopes": ["openid", "profile", "email"],
            "refreshRolling": "SERVER_DEFAULT",
            "persistentGrantExpirationType": "SERVER_DEFAULT",
            "persistentGrantExpirationTime": 0, "persistentGrantExpirationTimeUnit": "DAYS",
            "persistentGrantIdleTimeoutType": "SERVER_DEFAULT",
            "persistentGrantIdleTimeout": 0, "persistentGrantIdleTimeoutTimeUnit": "DAYS",
            "clientAuth": {"type": "SECRET", "encryptedSecret": "OBF:JWE:abc.def"},
            "futureField": {"kept": [1, 2]}
        })
    }

    fn settings() -> Value {
        json!({
            "scopes": [{"name": "profile", "description": "p"}, {"name": "email", "description": "e"}],
            "exclusiveScopes": [],
            "persistentGrantLifetime": -1, "persistentGrantLifetimeUnit": "DAYS",
            "persistentGrantIdleTimeout": 30, "persistentGrantIdleTimeoutTimeUnit": "DAYS",
            "rollRefreshTokenValues": false,
            "requireOfflineAccessScopeToIssueRefreshTokens": false,
            "offlineAccessRequireConsentPrompt": false
        })
    }

    fn snap(client: Value, settings: Value, v: ServerVersion) -> Snapshot {
        Snapshot {
            version: v,
            client,
            settings,
            cluster: Cluster::Standalone,
        }
    }

    fn plan(s: &Snapshot, d: &DesiredSettings) -> Plan {
        super::plan(s, d, PingFederateReplication::Automatic)
    }

    fn want() -> DesiredSettings {
        DesiredSettings {
            offline_access: true,
            lifetime: Some(days(90)),
            idle_timeout: Some(Duration::from_secs(36 * 3600)),
            rotation: Some(Rotation::Rotate),
            access_token_lifetime: None,
        }
    }

    /// `rotation: Rotate` keeps a rolling grace period of at least 60 s (client override when
    /// the effective one is shorter); `RotateStrict` sets none and is warned about, as is a
    /// client that rolls with no grace period whatever the policy asks.
    #[test]
    fn rotate_keeps_a_grace_period_and_strict_rotation_warns() {
        let rotate = DesiredSettings {
            rotation: Some(Rotation::Rotate),
            ..Default::default()
        };
        let mut c = client();
        c["grantTypes"] = json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"]);
        c["refreshRolling"] = json!("ROLL");
        c[GRACE_TYPE] = json!("SERVER_DEFAULT");
        let mut st = settings();
        st[GRACE] = json!(0);
        let strict_reasons = |p: &Plan| -> Vec<&str> {
            p.observation
                .findings
                .iter()
                .map(|f| f.reason)
                .filter(|r| *r == STRICT_ROTATION)
                .collect()
        };
        let v = ServerVersion(11, 3);
        let unset = DesiredSettings::default();
        let p = plan(&snap(c.clone(), st.clone(), v), &unset);
        assert_eq!(
            p.observation.settings.rotation,
            Some(Rotation::RotateStrict)
        );
        assert!(p.client_update.is_none(), "{:?}", p.client_changes);
        assert_eq!(
            strict_reasons(&p),
            [STRICT_ROTATION],
            "reported, not changed"
        );

        let p = plan(&snap(c.clone(), st.clone(), v), &rotate);
        assert_eq!(
            p.client_changes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "refreshTokenRollingGracePeriodType, refreshTokenRollingGracePeriod: SERVER_DEFAULT (0 s) -> OVERRIDE_SERVER_DEFAULT (60 s)"
            ]
        );
        assert!(p.client_changes[0].why.contains("concurrent refreshes"));
        let body = p.client_update.clone().unwrap();
        assert_eq!(
            (&body[GRACE_TYPE], &body[GRACE], &body["futureField"]),
            (&json!(OVERRIDE), &json!(60), &json!({"kept": [1, 2]}))
        );
        assert!(
            strict_reasons(&p).is_empty(),
            "the plan sets a grace period"
        );

        // The server default (60 s) is enough: nothing to write.
        st[GRACE] = json!(60);
        assert!(
            plan(&snap(c.clone(), st.clone(), v), &rotate)
                .client_update
                .is_none()
        );
        // A longer override an administrator chose is kept.
        c[GRACE_TYPE] = json!(OVERRIDE);
        c[GRACE] = json!(300);
        let p = plan(&snap(c.clone(), st.clone(), v), &rotate);
        assert!(p.client_update.is_none());
        assert_eq!(p.observation.settings.rotation, Some(Rotation::Rotate));

        // RotateStrict: no grace period, with a warning.
        let strict = DesiredSettings {
            rotation: Some(Rotation::RotateStrict),
            ..Default::default()
        };
        let p = plan(&snap(c.clone(), st.clone(), ServerVersion(12, 1)), &strict);
        assert_eq!(p.client_update.as_ref().unwrap()[GRACE], json!(0));
        let f = p
            .observation
            .findings
            .iter()
            .find(|f| f.reason == STRICT_ROTATION)
            .unwrap();
        assert!(
            !f.blocking
                && f.message.contains("RotateStrict")
                && f.message.contains("invalid_grant")
        );

        // A client representation without the override: the server value is reported.
        let mut old = client();
        old["grantTypes"] = json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"]);
        old["refreshRolling"] = json!("ROLL");
        st[GRACE] = json!(10);
        let p = plan(&snap(old, st, v), &rotate);
        assert!(p.client_update.is_none());
        assert!(
            p.observation
                .findings
                .iter()
                .any(|f| f.reason == "RollingGracePeriodNotSet" && !f.blocking)
        );
    }

    #[test]
    fn unit_selection_uses_the_largest_exact_unit() {
        assert_eq!(grant_time(days(90)), Some((90, "DAYS")));
        assert_eq!(
            grant_time(Duration::from_secs(36 * 3600)),
            Some((36, "HOURS"))
        );
        assert_eq!(
            grant_time(Duration::from_secs(90 * 60)),
            Some((90, "MINUTES"))
        );
        assert_eq!(grant_time(Duration::from_secs(90)), None);
        assert_eq!(grant_time(Duration::ZERO), None);
        assert_eq!(grant_time(Duration::from_millis(60_500)), None);
    }

    #[test]
    fn check_rejects_access_token_lifetime_and_sub_minute_values() {
        let err = check_desired(&DesiredSettings {
            access_token_lifetime: Some(Duration::from_secs(3600)),
            lifetime: Some(Duration::from_secs(90)),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, ProviderError::Unsupported { .. }));
        let msg = err.to_string();
        assert!(msg.contains("access token manager"), "{msg}");
        assert!(msg.contains("spec.refreshTokens.lifetime"), "{msg}");
        assert!(check_desired(&want()).is_ok());
    }

    #[test]
    fn effective_values_resolve_server_defaults() {
        let s = snap(client(), settings(), ServerVersion(12, 1));
        let obs = plan(&s, &DesiredSettings::default()).observation;
        assert_eq!(
            obs.settings,
            IdpSettings {
                refresh_token_grant: Some(false),
                offline_access: Some(false),
                lifetime: None,
                idle_timeout: Some(days(30)),
                rotation: Some(Rotation::Reuse),
                access_token_lifetime: None,
                rotation_window: None,
            }
        );
        assert_eq!(
            obs.changes.len(),
            1,
            "only the refresh grant: {:?}",
            obs.changes
        );
        let mut c = client();
        c["persistentGrantExpirationType"] = json!("OVERRIDE_SERVER_DEFAULT");
        c["persistentGrantExpirationTime"] = json!(12);
        c["persistentGrantExpirationTimeUnit"] = json!("HOURS");
        c["persistentGrantIdleTimeoutType"] = json!("INDEFINITE_EXPIRY");
        c["refreshRolling"] = json!("ROLL");
        let obs = plan(
            &snap(c, settings(), ServerVersion(11, 3)),
            &DesiredSettings::default(),
        )
        .observation;
        assert_eq!(obs.settings.lifetime, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(obs.settings.idle_timeout, None);
        assert_eq!(obs.settings.rotation, Some(Rotation::Rotate));
    }

    #[test]
    fn plan_changes_only_owned_fields_and_keeps_the_rest() {
        let s = snap(client(), settings(), ServerVersion(12, 1));
        let p = plan(&s, &want());
        let changes: Vec<String> = p
            .observation
            .changes
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            changes,
            [
                "common scope offline_access: not defined -> defined",
                "grantTypes: AUTHORIZATION_CODE, CLIENT_CREDENTIALS -> AUTHORIZATION_CODE, CLIENT_CREDENTIALS, REFRESH_TOKEN",
                "restrictedScopes: openid, profile, email -> openid, profile, email, offline_access",
                "persistentGrantExpirationType, persistentGrantExpirationTime, persistentGrantExpirationTimeUnit: SERVER_DEFAULT (indefinite) -> OVERRIDE_SERVER_DEFAULT (90 DAYS)",
                "persistentGrantIdleTimeoutType, persistentGrantIdleTimeout, persistentGrantIdleTimeoutTimeUnit: SERVER_DEFAULT (720h) -> OVERRIDE_SERVER_DEFAULT (36 HOURS)",
                "refreshRolling: SERVER_DEFAULT -> ROLL",
            ]
        );
        assert!(p.add_scope);
        let mut expected = client();
        expected["grantTypes"] =
            json!(["AUTHORIZATION_CODE", "CLIENT_CREDENTIALS", "REFRESH_TOKEN"]);
        expected["restrictedScopes"] = json!(["openid", "profile", "email", "offline_access"]);
        expected["persistentGrantExpirationType"] = json!("OVERRIDE_SERVER_DEFAULT");
        expected["persistentGrantExpirationTime"] = json!(90);
        expected["persistentGrantIdleTimeoutType"] = json!("OVERRIDE_SERVER_DEFAULT");
        expected["persistentGrantIdleTimeout"] = json!(36);
        expected["persistentGrantIdleTimeoutTimeUnit"] = json!("HOURS");
        expected["refreshRolling"] = json!("ROLL");
        assert_eq!(p.client_update, Some(expected.clone()));
        assert_eq!(p.observation.coder.add_scopes, ["offline_access"]);
        assert!(p.observation.coder.params.is_empty());

        // Converged: nothing to do, even when the override uses another unit.
        let mut done = expected;
        done["persistentGrantIdleTimeout"] = json!(36 * 60);
        done["persistentGrantIdleTimeoutTimeUnit"] = json!("MINUTES");
        let mut st = settings();
        st["scopes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "offline_access", "description": "o"}));
        let p = plan(&snap(done, st, ServerVersion(12, 1)), &want());
        assert_eq!(p.observation.changes, []);
        assert_eq!(p.client_update, None);
        assert!(!p.add_scope);
        assert_eq!(p.observation.settings.offline_access, Some(true));
    }

    #[test]
    fn plaintext_secret_is_never_sent_back() {
        let mut c = client();
        c["clientAuth"]["secret"] = json!("plain");
        let p = plan(&snap(c, settings(), ServerVersion(11, 3)), &want());
        let body = p.client_update.unwrap();
        assert_eq!(
            body["clientAuth"],
            json!({"type": "SECRET", "encryptedSecret": "OBF:JWE:abc.def"})
        );
    }

    #[test]
    fn consent_prompt_and_required_offline_access_on_12_1() {
        let mut c = client();
        c["requireOfflineAccessScopeToIssueRefreshTokens"] = json!("YES");
        c["offlineAccessRequireConsentPrompt"] = json!("YES");
        let p = plan(&snap(c.clone(), settings(), ServerVersion(12, 1)), &want());
        assert_eq!(
            p.observation.coder.params.get("prompt").map(String::as_str),
            Some("consent")
        );
        // Consent from the server default applies only when offline_access is required.
        let mut st = settings();
        st["offlineAccessRequireConsentPrompt"] = json!(true);
        c["offlineAccessRequireConsentPrompt"] = json!("SERVER_DEFAULT");
        assert_eq!(offline_controls(&c, &st), (true, true));
        c["requireOfflineAccessScopeToIssueRefreshTokens"] = json!("NO");
        assert_eq!(offline_controls(&c, &st), (false, false));
        c["requireOfflineAccessScopeToIssueRefreshTokens"] = json!("SERVER_DEFAULT");
        st["requireOfflineAccessScopeToIssueRefreshTokens"] = json!(true);
        assert_eq!(offline_controls(&c, &st), (true, true));
        // Without offline_access wanted this blocks.
        let p = plan(
            &snap(c.clone(), st.clone(), ServerVersion(12, 1)),
            &DesiredSettings::default(),
        );
        assert_eq!(p.observation.findings.len(), 1);
        assert_eq!(p.observation.findings[0].reason, "OfflineAccessRequired");
        assert!(p.observation.findings[0].blocking);
        // 11.3 has no such controls: the fields are ignored.
        let p = plan(&snap(c, st, ServerVersion(11, 3)), &want());
        assert!(p.observation.coder.params.is_empty());
        assert!(p.observation.findings.is_empty());
    }

    #[test]
    fn exclusive_offline_access_scope_goes_to_exclusive_scopes() {
        let mut st = settings();
        st["exclusiveScopes"] = json!([{"name": "offline_access", "description": "o"}]);
        let p = plan(
            &snap(client(), st, ServerVersion(12, 1)),
            &DesiredSettings {
                offline_access: true,
                ..Default::default()
            },
        );
        assert!(!p.add_scope);
        assert_eq!(
            p.client_update.unwrap()["exclusiveScopes"],
            json!(["offline_access"])
        );
    }

    #[test]
    fn rolling_interval_is_reported_when_rotation_is_wanted() {
        let mut st = settings();
        st["refreshRollingInterval"] = json!(2);
        let p = plan(&snap(client(), st.clone(), ServerVersion(11, 3)), &want());
        assert_eq!(p.observation.findings.len(), 1);
        assert_eq!(p.observation.findings[0].reason, "RefreshRollingInterval");
        assert!(
            p.observation.findings[0].message.contains("2h"),
            "{:?}",
            p.observation.findings
        );
        let mut c = client();
        c["refreshTokenRollingIntervalType"] = json!(OVERRIDE);
        c["refreshTokenRollingInterval"] = json!(30);
        c["refreshTokenRollingIntervalTimeUnit"] = json!("MINUTES");
        assert_eq!(rolling_interval(&c, &st), Some(Duration::from_secs(1800)));
        c["refreshTokenRollingInterval"] = json!(0);
        assert_eq!(rolling_interval(&c, &st), None);
        let reuse = DesiredSettings {
            rotation: Some(Rotation::Reuse),
            ..want()
        };
        assert!(
            plan(&snap(client(), st, ServerVersion(11, 3)), &reuse)
                .observation
                .findings
                .is_empty()
        );
    }

    #[test]
    fn server_defaults_roll_and_minus_one_is_indefinite() {
        let mut st = settings();
        st.as_object_mut().unwrap().remove("rollRefreshTokenValues");
        let mut c = client();
        c["persistentGrantExpirationType"] = json!(OVERRIDE);
        c["persistentGrantExpirationTime"] = json!(-1);
        let p = plan(&snap(c, st, ServerVersion(11, 3)), &want());
        assert_eq!(p.observation.settings.rotation, Some(Rotation::Rotate));
        assert_eq!(p.observation.settings.lifetime, None);
        assert!(
            p.observation
                .changes
                .iter()
                .any(|c| c.from == "OVERRIDE_SERVER_DEFAULT (indefinite)"
                    && c.to == "OVERRIDE_SERVER_DEFAULT (90 DAYS)"),
            "{:?}",
            p.observation.changes
        );
    }

    #[test]
    fn replication_is_planned_only_when_nothing_else_is_pending() {
        let status = |required: bool| {
            Cluster::from_status(&json!({
                "replicationRequired": required,
                "nodes": [
                    {"address": "a:7600", "mode": "CLUSTERED_CONSOLE", "replicationStatus": "SUCCEEDED"},
                    {"address": "b:7600", "mode": "CLUSTERED_ENGINE", "replicationStatus": "SUCCEEDED"},
                ]
            }))
        };
        let with = |cluster: Cluster, converged: bool, mode| {
            let mut s = snap(client(), settings(), ServerVersion(12, 1));
            s.cluster = cluster;
            let d = if converged {
                DesiredSettings::default()
            } else {
                want()
            };
            let mut s2 = s.clone();
            if converged {
                s2.client["grantTypes"] = json!(["REFRESH_TOKEN"]);
            }
            let p = super::plan(&s2, &d, mode);
            let found: Vec<_> = p
                .observation
                .findings
                .iter()
                .map(|f| (f.reason, f.blocking))
                .collect();
            (p.replicate, p.observation.changes.is_empty(), found)
        };
        use PingFederateReplication::{Automatic, Manual};
        assert_eq!(with(status(false), false, Automatic), (true, false, vec![]));
        assert_eq!(
            with(status(true), false, Automatic),
            (false, false, vec![(REPLICATION_PENDING, true)])
        );
        assert_eq!(with(status(false), false, Manual), (false, false, vec![]));
        // Manual with changes: written, then apply reports the pending replication.
        assert_eq!(with(status(true), false, Manual), (false, false, vec![]));
        assert_eq!(
            with(status(true), true, Manual),
            (false, true, vec![(REPLICATION_PENDING, true)])
        );
        assert_eq!(
            with(status(true), true, Automatic),
            (false, true, vec![(REPLICATION_PENDING, true)])
        );
        assert_eq!(
            with(Cluster::Standalone, false, Automatic),
            (false, false, vec![])
        );
        assert_eq!(
            with(Cluster::Standalone, true, Manual),
            (false, true, vec![])
        );
    }

    #[test]
    fn versions_parse() {
        assert_eq!(ServerVersion::parse("12.1.0.4"), Some(ServerVersion(12, 1)));
        assert!(ServerVersion(12, 1).has_offline_controls());
        assert!(ServerVersion(13, 0).has_offline_controls());
        assert!(
            !ServerVersion::parse("11.3.5")
                .unwrap()
                .has_offline_controls()
        );
        assert!(!ServerVersion(12, 0).has_offline_controls());
        assert_eq!(ServerVersion::parse("x"), None);
    }
}
