//! The pure part of the Logto provider: the application read, effective values (Logto's runtime
//! defaults resolved), findings and the plan (`customClientMetadata` sent back whole, as read,
//! with only the owned keys changed, because Logto's PATCH replaces a JSONB object wholesale).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::KIND;
use crate::crd::Rotation;
use crate::providers::{
    Change, CoderNeeds, DesiredSettings, Finding, IdpSettings, Observation, ProviderError,
    json_str, show_duration, unsupported_unless_none,
};

/// Seconds in a day.
const DAY: u64 = 86_400;
/// `refreshTokenTtlInDays` when the key is absent (`customClientMetadataDefault`).
pub const DEFAULT_TTL_DAYS: u64 = 14;
/// Largest `refreshTokenTtlInDays` (Logto 1.34.0 and later; 90 before).
pub const MAX_TTL_DAYS: u64 = 180;
/// Largest `refreshTokenTtlInDays` before Logto 1.34.0.
pub const LEGACY_MAX_TTL_DAYS: u64 = 90;
/// Logto's fixed grant lifetime (since 1.34.0): no refresh token outlives it.
pub const GRANT_TTL_DAYS: u64 = 180;

/// The `customClientMetadata` keys the operator owns.
pub const TTL_KEY: &str = "refreshTokenTtlInDays";
/// Rotation.
pub const ROTATE_KEY: &str = "rotateRefreshToken";
/// Refresh tokens without `offline_access`/`prompt=consent` (web apps only).
pub const ALWAYS_KEY: &str = "alwaysIssueRefreshToken";

/// Reason of the finding for SPA and native apps.
pub const PUBLIC_CLIENT: &str = "LogtoPublicClient";
/// Reason of the finding about when Logto rotates.
pub const ROTATION_THRESHOLD: &str = "LogtoRotationThreshold";
/// Reason of the finding for third-party apps.
pub const THIRD_PARTY: &str = "LogtoThirdPartyConsent";

/// What `observe` read: Coder's application as `GET /api/applications/{id}` returns it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The application.
    pub app: Value,
}

/// A plan: the changes and, when there are any, the PATCH body.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Settings, changes, findings, Coder's needs.
    pub observation: Observation,
    /// `{"customClientMetadata": {…}}`: the whole object as read, owned keys changed.
    pub body: Option<Value>,
}

/// `lifetime` as whole days within Logto's range, or why not.
pub fn ttl_days(lifetime: Duration) -> Result<u64, String> {
    let secs = lifetime.as_secs();
    let shown = show_duration(Some(lifetime));
    if lifetime.subsec_nanos() != 0 || !secs.is_multiple_of(DAY) {
        let down = secs / DAY;
        let up = down + 1;
        let n_days = |n: u64| {
            if n == 1 {
                "1 day".to_string()
            } else {
                format!("{n} days")
            }
        };
        let options = if down == 0 {
            "24h (1 day)".to_string()
        } else {
            format!(
                "{}h ({}) or {}h ({})",
                down * 24,
                n_days(down),
                up * 24,
                n_days(up)
            )
        };
        return Err(format!(
            "spec.refreshTokens.lifetime {shown} is not a whole number of days: Logto's refreshTokenTtlInDays counts \
             whole days and the operator does not round it; use {options}"
        ));
    }
    let days = secs / DAY;
    if !(1..=MAX_TTL_DAYS).contains(&days) {
        return Err(format!(
            "spec.refreshTokens.lifetime {shown} ({days} days) is outside Logto's range for refreshTokenTtlInDays, \
             1 to {MAX_TTL_DAYS} days (24h to {}h; at most {LEGACY_MAX_TTL_DAYS} days before Logto 1.34.0)",
            MAX_TTL_DAYS * 24
        ));
    }
    Ok(days)
}

/// Settings Logto cannot honour (pure, before any request).
pub fn check_desired(desired: &DesiredSettings) -> Result<(), ProviderError> {
    let mut problems = Vec::new();
    if desired.idle_timeout.is_some() {
        problems.push(
            "Logto has no refresh-token idle timeout (no inactivity window and no reuse grace period): a refresh \
             token lives refreshTokenTtlInDays from when it was issued. Remove idleTimeout from spec.refreshTokens and \
             use lifetime"
                .to_string(),
        );
    }
    if desired.access_token_lifetime.is_some() {
        problems.push(
            "Logto sets access-token lifetimes per API resource (its Token expiration time, default 1 hour), not per \
             application. Remove accessTokenLifetime from spec.refreshTokens and set it on the API resource in the \
             Logto Console (API resources > the resource > Token expiration time)"
                .to_string(),
        );
    }
    if desired.rotation == Some(Rotation::RotateStrict) {
        problems.push(
            "Logto has no strict one-time use of refresh tokens: with rotateRefreshToken a Traditional web app's \
             refresh token is replaced only once 70% of its lifetime has passed, and returned unchanged before that. \
             Use rotation: Rotate (rotateRefreshToken: true) or Reuse"
                .to_string(),
        );
    }
    if let Some(l) = desired.lifetime
        && let Err(e) = ttl_days(l)
    {
        problems.push(e);
    }
    unsupported_unless_none(KIND, problems)
}

/// `Logto application "Coder" (id)`.
pub fn target(app: &Value) -> String {
    format!(
        "Logto application {:?} ({})",
        json_str(app, "name"),
        json_str(app, "id")
    )
}

/// The stored `customClientMetadata` (an empty object when absent).
pub fn custom_metadata(app: &Value) -> Map<String, Value> {
    app.get("customClientMetadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Effective refresh-token lifetime: `refreshTokenTtlInDays`, else the deprecated
/// `refreshTokenTtl` (seconds), else 14 days.
pub fn effective_lifetime(cm: &Map<String, Value>) -> Duration {
    if let Some(d) = cm.get(TTL_KEY).and_then(Value::as_u64) {
        return Duration::from_secs(d * DAY);
    }
    if let Some(s) = cm
        .get("refreshTokenTtl")
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s > 0.0)
    {
        return Duration::from_secs(s as u64);
    }
    Duration::from_secs(DEFAULT_TTL_DAYS * DAY)
}

/// Effective rotation (`rotateRefreshToken`, default true).
pub fn effective_rotation(cm: &Map<String, Value>) -> Rotation {
    match cm.get(ROTATE_KEY).and_then(Value::as_bool) {
        Some(false) => Rotation::Reuse,
        _ => Rotation::Rotate,
    }
}

fn shown(cm: &Map<String, Value>, key: &str, default: &str) -> String {
    match cm.get(key) {
        Some(v) => v.to_string(),
        None => format!("unset (default {default})"),
    }
}

/// Checks the application type: refresh tokens need a Traditional web, SPA or native app.
fn check_type(app: &Value) -> Result<&str, ProviderError> {
    let kind = json_str(app, "type");
    let id = json_str(app, "id");
    let why = match kind {
        "Traditional" | "SPA" | "Native" => return Ok(kind),
        "MachineToMachine" => {
            "a machine-to-machine app: its only grant is client_credentials, so Logto never issues it refresh \
             tokens (and an app's type cannot be changed)"
        }
        "Protected" => {
            "a Protected app (Logto's authenticating proxy), not an OIDC client Coder can use"
        }
        "SAML" => "a SAML app, not an OIDC client",
        _ => "of an unknown type",
    };
    Err(ProviderError::Unsupported {
        provider: KIND,
        detail: format!(
            "Logto application {id} ({kind}) is {why}. spec.provider.logto.applicationId must be the App ID of the \
             Traditional web app Coder signs in with (CODER_OIDC_CLIENT_ID); create one in the Logto Console \
             (Applications > Traditional web) if Coder has none"
        ),
    })
}

/// The plan for `desired` from `snap`. Errors for apps that can never get refresh tokens.
pub fn plan(snap: &Snapshot, desired: &DesiredSettings) -> Result<Plan, ProviderError> {
    check_desired(desired)?;
    let app = &snap.app;
    let kind = check_type(app)?;
    let web = matches!(kind, "Traditional" | "SPA");
    let target = target(app);
    let cm = custom_metadata(app);
    let mut next = cm.clone();
    let mut changes = Vec::new();
    let mut set = |key: &str, to: Value, default: &str, why: &str| {
        if cm.get(key) != Some(&to) {
            changes.push(Change::new(
                &target,
                format!("customClientMetadata.{key}"),
                shown(&cm, key, default),
                to.to_string(),
                why,
            ));
            next.insert(key.to_string(), to);
        }
    };
    if let Some(l) = desired.lifetime {
        // check_desired accepted it.
        let days = ttl_days(l).unwrap_or(DEFAULT_TTL_DAYS);
        set(
            TTL_KEY,
            json!(days),
            &DEFAULT_TTL_DAYS.to_string(),
            "spec.refreshTokens.lifetime",
        );
    }
    if let Some(r) = desired.rotation {
        set(
            ROTATE_KEY,
            json!(r != Rotation::Reuse),
            "true",
            "spec.refreshTokens.rotation",
        );
    }
    if desired.offline_access && web {
        set(
            ALWAYS_KEY,
            json!(true),
            "false",
            "spec.refreshTokens.offlineAccess: Logto then issues Coder a refresh token even for an authorization \
             request without prompt=consent (it drops offline_access from those)",
        );
    }
    let mut findings = Vec::new();
    if !web {
        findings.push(Finding {
            reason: PUBLIC_CLIENT,
            message: format!(
                "{target} is a {kind} app, a public client: Logto rotates its refresh tokens on every use and \
                 ignores alwaysIssueRefreshToken. Coder is a confidential client; use a Traditional web app"
            ),
            blocking: false,
            expires_at: None,
        });
    } else if kind == "SPA" {
        findings.push(Finding {
            reason: PUBLIC_CLIENT,
            message: format!(
                "{target} is a single-page app, a public client: Logto rotates its refresh tokens on every use and a \
                 rotated token keeps the remaining lifetime of the one it replaces. Coder is a confidential client; \
                 use a Traditional web app"
            ),
            blocking: false,
            expires_at: None,
        });
    }
    if effective_rotation(&next) == Rotation::Rotate && kind == "Traditional" {
        findings.push(Finding {
            reason: ROTATION_THRESHOLD,
            message: format!(
                "Logto rotates a Traditional web app's refresh token once 70% of its lifetime has passed (before \
                 that, a refresh returns the same token), and a session that keeps refreshing lasts at most Logto's \
                 fixed {GRANT_TTL_DAYS}-day grant lifetime. Logto has no reuse window: a rotated token presented \
                 again revokes the user's whole grant, so two of Coder's concurrent refreshes (the requests of one \
                 page load, several replicas) after that point sign the user out. spec.refreshTokens.rotation: \
                 Reuse (rotateRefreshToken false) avoids it; Coder is a confidential client, so its refresh tokens \
                 are useless without its client secret"
            ),
            blocking: false,
            expires_at: None,
        });
    }
    if app.get("isThirdParty") == Some(&json!(true)) && desired.offline_access {
        findings.push(Finding {
            reason: THIRD_PARTY,
            message: format!(
                "{target} is a third-party app: Logto shows its users a consent screen, and with prompt=consent (which \
                 Logto needs to grant offline_access) they see it at every sign-in"
            ),
            blocking: false,
            expires_at: None,
        });
    }
    let mut coder = CoderNeeds::default();
    if desired.offline_access {
        coder.add_scopes.push("offline_access".into());
        coder.params.insert("prompt".into(), "consent".into());
    }
    let observation = Observation {
        settings: IdpSettings {
            refresh_token_grant: Some(true),
            offline_access: Some(true),
            lifetime: Some(effective_lifetime(&cm)),
            idle_timeout: None,
            rotation: Some(effective_rotation(&cm)),
            access_token_lifetime: None,
            // Logto has no reuse window: a rotated token is single-use.
            rotation_window: (effective_rotation(&cm) == Rotation::Rotate)
                .then(|| "0s".to_string()),
        },
        changes,
        findings,
        coder,
    };
    let body = (!observation.changes.is_empty())
        .then(|| json!({"customClientMetadata": Value::Object(next)}));
    Ok(Plan { observation, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(cm: Value, kind: &str) -> Snapshot {
        Snapshot {
            app: json!({"id": "app1", "name": "Coder", "type": kind, "customClientMetadata": cm,
                        "oidcClientMetadata": {"redirectUris": [], "postLogoutRedirectUris": []}}),
        }
    }

    #[test]
    fn ttl_days_accepts_whole_days_in_range_only() {
        assert_eq!(ttl_days(Duration::from_secs(DAY)), Ok(1));
        assert_eq!(ttl_days(Duration::from_secs(180 * DAY)), Ok(180));
        assert!(ttl_days(Duration::from_secs(181 * DAY)).is_err());
        assert!(ttl_days(Duration::from_secs(DAY + 1)).is_err());
        assert!(ttl_days(Duration::from_millis(DAY * 1000 + 1)).is_err());
    }

    #[test]
    fn the_body_is_the_whole_object_with_owned_keys_changed() {
        let cm = json!({"corsAllowedOrigins": ["https://x"], "futureKey": {"a": 1},
                        "refreshTokenTtl": 100, "rotateRefreshToken": true});
        let d = DesiredSettings {
            offline_access: true,
            lifetime: Some(Duration::from_secs(30 * DAY)),
            rotation: Some(Rotation::Rotate),
            ..Default::default()
        };
        let p = plan(&snap(cm, "Traditional"), &d).unwrap();
        assert_eq!(
            p.body.unwrap(),
            json!({"customClientMetadata": {"corsAllowedOrigins": ["https://x"], "futureKey": {"a": 1},
                   "refreshTokenTtl": 100, "rotateRefreshToken": true,
                   "refreshTokenTtlInDays": 30, "alwaysIssueRefreshToken": true}})
        );
        // The deprecated seconds value is the effective lifetime until the days are set.
        assert_eq!(
            p.observation.settings.lifetime,
            Some(Duration::from_secs(100))
        );
        assert_eq!(p.observation.changes.len(), 2);
    }

    #[test]
    fn converged_state_plans_nothing_and_defaults_are_resolved() {
        let d = DesiredSettings {
            offline_access: false,
            ..Default::default()
        };
        let p = plan(&snap(json!({}), "Traditional"), &d).unwrap();
        assert!(p.body.is_none() && p.observation.changes.is_empty());
        assert_eq!(
            p.observation.settings.lifetime,
            Some(Duration::from_secs(14 * DAY))
        );
        assert_eq!(p.observation.settings.rotation, Some(Rotation::Rotate));
        for kind in ["MachineToMachine", "Protected", "SAML", "Weird"] {
            assert!(matches!(
                plan(&snap(json!({}), kind), &d),
                Err(ProviderError::Unsupported { .. })
            ));
        }
    }

    #[test]
    fn rotation_without_a_reuse_window_is_reported_whatever_the_policy_asks() {
        let warned = |p: &Plan| {
            p.observation
                .findings
                .iter()
                .any(|f| f.reason == ROTATION_THRESHOLD && f.message.contains("no reuse window"))
        };
        // Logto rotates by default: reported even when the policy says nothing about rotation.
        let p = plan(&snap(json!({}), "Traditional"), &DesiredSettings::default()).unwrap();
        assert!(warned(&p));
        assert_eq!(
            p.observation.settings.rotation_window.as_deref(),
            Some("0s")
        );
        // Reuse turns rotation off: no warning once it is planned.
        let reuse = DesiredSettings {
            rotation: Some(Rotation::Reuse),
            ..Default::default()
        };
        let p = plan(&snap(json!({}), "Traditional"), &reuse).unwrap();
        assert!(!warned(&p));
        let p = plan(
            &snap(json!({"rotateRefreshToken": false}), "Traditional"),
            &reuse,
        )
        .unwrap();
        assert!(!warned(&p));
        assert_eq!(p.observation.settings.rotation_window, None);
    }
}
