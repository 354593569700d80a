//! The pure part of the Entra ID provider: .NET `TimeSpan`s and token lifetime policy
//! definitions, the merge of `requiredResourceAccess`, admin consent, the findings about the app
//! registration, what is read (the snapshot), the plan, its changes and the observation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::KIND;
use crate::providers::{
    Change, CoderNeeds, DesiredSettings, Finding, IdpSettings, Observation, ProviderError,
    show_duration,
};

/// `appId` of Microsoft Graph (the resource of the delegated OIDC permissions).
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// Coder's OIDC callback path.
pub const CALLBACK_PATH: &str = "/api/v2/users/oidc/callback";
/// Well-known ids of Microsoft Graph's delegated OIDC permissions (stable across tenants), used
/// when Graph's service principal cannot be read.
pub const WELL_KNOWN_SCOPES: [(&str, &str); 4] = [
    ("openid", "37f7f235-527c-4136-accd-4a02d197296e"),
    ("profile", "14dad69e-099b-42c9-810b-d002981feec1"),
    ("email", "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0"),
    ("offline_access", "7427e0e9-2fba-42fe-b0c0-848c9e6a8182"),
];
/// Other well-known Microsoft Graph delegated permission ids, for readable messages.
pub(super) const OTHER_KNOWN_SCOPES: [(&str, &str); 1] =
    [("User.Read", "e1fe6dd8-ba31-4d61-89e7-88639da4683d")];
/// Entra ID's fixed refresh-token inactivity window.
pub const REFRESH_TOKEN_INACTIVITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime of refresh tokens issued to SPA redirect URIs.
pub const SPA_REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A client secret expiring within this many days is reported.
pub const SECRET_WARNING_DAYS: i64 = 30;

/// Formats a duration as a .NET `TimeSpan` (`hh:mm:ss`, or `d.hh:mm:ss` from one day on).
pub fn format_timespan(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, h, m, s) = (
        secs / 86_400,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
    );
    if days > 0 {
        format!("{days}.{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// Parses a .NET `TimeSpan` (`[d.]hh:mm:ss[.fffffff]`), ignoring fractions of a second.
pub fn parse_timespan(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (days, rest) = match s.split_once(':') {
        Some((head, _)) if head.contains('.') => {
            let (d, _) = head.split_once('.')?;
            (d.parse::<u64>().ok()?, &s[d.len() + 1..])
        }
        _ => (0, s),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let [h, m, sec] = parts.as_slice() else {
        return None;
    };
    let sec = sec.split('.').next()?;
    let (h, m, sec): (u64, u64, u64) = (h.parse().ok()?, m.parse().ok()?, sec.parse().ok()?);
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some(Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + sec))
}

/// The token lifetime policy definition string for an access-token lifetime.
pub fn policy_definition(access_token_lifetime: Duration) -> String {
    json!({"TokenLifetimePolicy": {"Version": 1, "AccessTokenLifetime": format_timespan(access_token_lifetime)}})
        .to_string()
}

/// `AccessTokenLifetime` of a token lifetime policy (its `definition` strings), if set.
pub fn policy_access_token_lifetime(policy: &Value) -> Option<Duration> {
    policy
        .get("definition")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|d| {
            d.get("TokenLifetimePolicy")?
                .get("AccessTokenLifetime")?
                .as_str()
                .and_then(parse_timespan)
        })
}

/// Display name of the token lifetime policy the operator creates for an application.
pub fn policy_name(app_id: &str) -> String {
    format!("oidc-refresh-operator {app_id}")
}

/// Result of merging the wanted delegated permissions into `requiredResourceAccess`.
#[derive(Clone, Debug, PartialEq)]
pub struct RraMerge {
    /// The complete new array (every other resource and permission as read).
    pub value: Value,
    /// Names of the permissions added.
    pub added: Vec<String>,
}

/// Merges Microsoft Graph delegated permissions `(name, id)` into `requiredResourceAccess`:
/// appends the missing ones to the (first) Microsoft Graph entry, or adds that entry, keeping
/// every other entry, permission and property exactly. `None` when nothing is missing.
pub fn merge_required_resource_access(
    current: Option<&Value>,
    wanted: &[(String, String)],
) -> Option<RraMerge> {
    let mut list: Vec<Value> = current
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let graph_idx = list
        .iter()
        .position(|r| r.get("resourceAppId").and_then(Value::as_str) == Some(GRAPH_APP_ID));
    let present = |r: &Value, id: &str| {
        r.get("resourceAccess")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter().any(|x| {
                    x.get("type").and_then(Value::as_str) == Some("Scope")
                        && x.get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|x| x.eq_ignore_ascii_case(id))
                })
            })
    };
    let missing: Vec<&(String, String)> = wanted
        .iter()
        .filter(|(_, id)| {
            !list.iter().any(|r| {
                r.get("resourceAppId").and_then(Value::as_str) == Some(GRAPH_APP_ID)
                    && present(r, id)
            })
        })
        .collect();
    if missing.is_empty() {
        return None;
    }
    let items: Vec<Value> = missing
        .iter()
        .map(|(_, id)| json!({"id": id, "type": "Scope"}))
        .collect();
    match graph_idx {
        Some(i) => {
            let entry = &mut list[i];
            match entry
                .get_mut("resourceAccess")
                .and_then(Value::as_array_mut)
            {
                Some(a) => a.extend(items),
                None => entry["resourceAccess"] = Value::Array(items),
            }
        }
        None => list.push(json!({"resourceAppId": GRAPH_APP_ID, "resourceAccess": items})),
    }
    Some(RraMerge {
        value: Value::Array(list),
        added: missing.iter().map(|(n, _)| n.clone()).collect(),
    })
}

/// Names of the Microsoft Graph delegated permissions in `requiredResourceAccess`, sorted
/// (unknown ids as themselves).
pub fn graph_scope_names(rra: Option<&Value>, names: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = rra
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r.get("resourceAppId").and_then(Value::as_str) == Some(GRAPH_APP_ID))
        .flat_map(|r| {
            r.get("resourceAccess")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter(|a| a.get("type").and_then(Value::as_str) == Some("Scope"))
        .filter_map(|a| {
            a.get("id")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
        })
        .map(|id| names.get(&id).cloned().unwrap_or(id))
        .collect();
    out.sort_by_key(|s| s.to_ascii_lowercase());
    out.dedup();
    out
}

/// What is known about tenant-wide admin consent.
#[derive(Clone, Debug, PartialEq)]
pub enum Consent {
    /// Not readable by the management app (or Graph's service principal unknown): not reported.
    NotChecked,
    /// The app has no service principal (enterprise application) in the tenant yet.
    NoServicePrincipal,
    /// Delegated permission grants of the app's service principal, and the object id of
    /// Microsoft Graph's service principal.
    Grants {
        /// Object id of Microsoft Graph's service principal (grants' `resourceId`).
        graph_sp_id: String,
        /// `oauth2PermissionGrants` with `clientId` = the app's service principal.
        grants: Vec<Value>,
    },
}

/// The two kinds of credentials a confidential client signs in with.
#[derive(Clone, Copy)]
enum CredentialKind {
    Secret,
    Certificate,
}

impl CredentialKind {
    /// Noun, Coder's setting, and where in the portal.
    fn words(self) -> (&'static str, &'static str, &'static str) {
        match self {
            CredentialKind::Secret => ("client secret", "CODER_OIDC_CLIENT_SECRET", ""),
            CredentialKind::Certificate => (
                "certificate credential",
                "CODER_OIDC_CLIENT_KEY_FILE and CODER_OIDC_CLIENT_CERT_FILE",
                " (Certificates tab)",
            ),
        }
    }

    fn other_env(self) -> &'static str {
        match self {
            CredentialKind::Secret => CredentialKind::Certificate.words().1,
            CredentialKind::Certificate => CredentialKind::Secret.words().1,
        }
    }

    fn expired_reason(self) -> &'static str {
        match self {
            CredentialKind::Secret => "ClientSecretExpired",
            CredentialKind::Certificate => "ClientCertificateExpired",
        }
    }

    fn expiring_reason(self) -> &'static str {
        match self {
            CredentialKind::Secret => "ClientSecretExpiring",
            CredentialKind::Certificate => "ClientCertificateExpiring",
        }
    }
}

/// The credential of `field` (`passwordCredentials` or `keyCredentials`) that `keep` accepts and
/// that expires last, with a name for messages.
fn latest_credential(
    app: &Value,
    field: &str,
    keep: impl Fn(&Value) -> bool,
) -> Option<(jiff::Timestamp, String)> {
    app.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| keep(c))
        .filter_map(|c| {
            let end = c
                .get("endDateTime")?
                .as_str()?
                .parse::<jiff::Timestamp>()
                .ok()?;
            let name = c
                .get("displayName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| format!("{s:?}"))
                .or_else(|| {
                    c.get("keyId")
                        .and_then(Value::as_str)
                        .map(|k| format!("with key id {k}"))
                })
                .unwrap_or_else(|| "without a name".into());
            Some((end, name))
        })
        .max_by_key(|(end, _)| *end)
}

/// Delegated permissions (of `wanted`) not covered by tenant-wide (`AllPrincipals`) consent.
pub fn missing_consent(consent: &Consent, wanted: &[String]) -> Option<Vec<String>> {
    match consent {
        Consent::NotChecked => None,
        Consent::NoServicePrincipal => Some(wanted.to_vec()),
        Consent::Grants {
            graph_sp_id,
            grants,
        } => {
            let granted: Vec<&str> = grants
                .iter()
                .filter(|g| g.get("consentType").and_then(Value::as_str) == Some("AllPrincipals"))
                .filter(|g| {
                    g.get("resourceId")
                        .and_then(Value::as_str)
                        .is_some_and(|r| r.eq_ignore_ascii_case(graph_sp_id))
                })
                .filter_map(|g| g.get("scope").and_then(Value::as_str))
                .flat_map(str::split_whitespace)
                .collect();
            let missing: Vec<String> = wanted
                .iter()
                .filter(|w| !granted.iter().any(|g| g.eq_ignore_ascii_case(w)))
                .cloned()
                .collect();
            (!missing.is_empty()).then_some(missing)
        }
    }
}

/// Where Coder's callback is registered.
fn callbacks(app: &Value, platform: &str) -> Vec<String> {
    app.get(platform)
        .and_then(|p| p.get("redirectUris"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|u| {
            u.split(['?', '#'])
                .next()
                .is_some_and(|u| u.trim_end_matches('/').ends_with(CALLBACK_PATH))
        })
        .map(str::to_string)
        .collect()
}

/// Findings about the app registration that the operator reports but never changes: Coder's
/// callback under `spa`, client-secret expiry, admin consent. `now` is passed in (pure).
pub fn findings(
    app: &Value,
    app_id: &str,
    consent: &Consent,
    wanted_scopes: &[String],
    now: jiff::Timestamp,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let spa = callbacks(app, "spa");
    if !spa.is_empty() {
        out.push(Finding {
            reason: "SpaRedirectUri",
            message: format!(
                "Coder's callback {} is registered as a single-page-application redirect URI (spa.redirectUris) of app {app_id}: Entra ID limits refresh tokens issued to SPA redirect URIs to 24 hours. Move it to the Web platform (web.redirectUris) under App registrations > Authentication; the operator does not change redirect URIs",
                spa.join(", ")
            ),
            blocking: false,
            expires_at: None,
        });
    }
    // Coder authenticates with a client secret (CODER_OIDC_CLIENT_SECRET) or a certificate
    // (CODER_OIDC_CLIENT_KEY_FILE + CODER_OIDC_CLIENT_CERT_FILE); the app is unusable only when
    // neither kind has a valid credential left.
    let secret = latest_credential(app, "passwordCredentials", |_| true);
    let certificate = latest_credential(app, "keyCredentials", |c| {
        c.get("usage").and_then(Value::as_str) == Some("Verify")
    });
    let valid = |latest: &Option<(jiff::Timestamp, String)>| {
        latest.as_ref().is_some_and(|(end, _)| *end > now)
    };
    for (kind, latest, other_valid) in [
        (CredentialKind::Secret, &secret, valid(&certificate)),
        (CredentialKind::Certificate, &certificate, valid(&secret)),
    ] {
        let Some((end, name)) = latest else { continue };
        let date = end.strftime("%Y-%m-%d %H:%M UTC");
        let (noun, env, where_) = kind.words();
        if *end <= now {
            let (blocking, consequence) = if other_valid {
                (
                    false,
                    format!(
                        "Coder signs users in only if it uses the app's other, still valid kind of credential instead ({})",
                        kind.other_env()
                    ),
                )
            } else {
                (true, "Coder cannot sign users in".to_string())
            };
            out.push(Finding {
                reason: kind.expired_reason(),
                message: format!(
                    "every {noun} of app {app_id} has expired (the latest, {name}, on {date}): {consequence}. Add a new {noun} under App registrations > Certificates & secrets{where_} and update Coder's {env}"
                ),
                blocking,
                expires_at: Some(*end),
            });
        } else {
            let left = end.duration_since(now).as_secs() / 86_400;
            if left < SECRET_WARNING_DAYS {
                out.push(Finding {
                    reason: kind.expiring_reason(),
                    message: format!(
                        "the latest {noun} of app {app_id} ({name}) expires on {date}, in {left} day{}: add a new {noun} under App registrations > Certificates & secrets{where_} and update Coder's {env} before then",
                        if left == 1 { "" } else { "s" }
                    ),
                    blocking: false,
                    expires_at: Some(*end),
                });
            }
        }
    }
    if let Some(missing) = missing_consent(consent, wanted_scopes) {
        let why = if matches!(consent, Consent::NoServicePrincipal) {
            "the app has no enterprise application (service principal) in the tenant yet, so nobody has consented"
        } else {
            "tenant-wide admin consent does not cover them"
        };
        out.push(Finding {
            reason: "ConsentMissing",
            message: format!(
                "Microsoft Graph delegated permissions {} of app {app_id} lack admin consent ({why}); users are asked to consent at sign-in, or blocked when user consent is disabled. Grant admin consent under App registrations > API permissions > Grant admin consent",
                missing.join(", ")
            ),
            blocking: false,
            expires_at: None,
        });
    }
    out
}

/// Everything read from Graph for one observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The application as read (`$select`ed properties).
    pub app: Value,
    /// Ids of Microsoft Graph's delegated permissions: name → id.
    pub scope_ids: BTreeMap<String, String>,
    /// id (lower case) → name, for messages.
    pub scope_names: BTreeMap<String, String>,
    /// Whether the ids come from Graph's service principal (false: well-known fallback).
    pub scopes_from_graph: bool,
    /// Admin consent.
    pub consent: Consent,
    /// Token lifetime policies assigned to the app (`None`: not readable).
    pub policies: Option<Vec<Value>>,
}

impl Snapshot {
    pub(super) fn object_id(&self) -> &str {
        self.app
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn access_token_lifetime(&self) -> Option<Duration> {
        self.policies
            .as_ref()?
            .iter()
            .find_map(policy_access_token_lifetime)
    }
}

/// What to do about the token lifetime policy.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyPlan {
    /// Nothing.
    Keep,
    /// Create (or reuse an unassigned operator policy) and assign.
    Create {
        /// Wanted `AccessTokenLifetime`.
        lifetime: Duration,
    },
    /// PATCH the assigned operator policy.
    Update {
        /// Policy id.
        id: String,
        /// Current value.
        current: Option<Duration>,
        /// Wanted value.
        lifetime: Duration,
    },
}

/// Writes needed.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// New `requiredResourceAccess`.
    pub required_resource_access: Option<RraMerge>,
    /// `isFallbackPublicClient` must become false.
    pub disable_public_client: bool,
    /// Token lifetime policy.
    pub policy: PolicyPlan,
}

impl Plan {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.required_resource_access.is_none()
            && !self.disable_public_client
            && self.policy == PolicyPlan::Keep
    }
}

/// Microsoft Graph delegated permissions wanted: (name, id).
pub fn wanted_scopes(
    desired: &DesiredSettings,
    ids: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    WELL_KNOWN_SCOPES
        .iter()
        .filter(|(n, _)| desired.offline_access || *n != "offline_access")
        .map(|(n, fallback)| {
            (
                n.to_string(),
                ids.get(*n).cloned().unwrap_or_else(|| fallback.to_string()),
            )
        })
        .collect()
}

/// Computes the writes needed (pure). Errors when another token lifetime policy is assigned.
pub fn plan(
    desired: &DesiredSettings,
    snap: &Snapshot,
    app_id: &str,
) -> Result<Plan, ProviderError> {
    let wanted = wanted_scopes(desired, &snap.scope_ids);
    let required_resource_access =
        merge_required_resource_access(snap.app.get("requiredResourceAccess"), &wanted);
    let disable_public_client = snap
        .app
        .get("isFallbackPublicClient")
        .and_then(Value::as_bool)
        == Some(true);
    let policy = match (desired.access_token_lifetime, &snap.policies) {
        (None, _) => PolicyPlan::Keep,
        (Some(_), None) => PolicyPlan::Keep,
        (Some(want), Some(assigned)) => {
            let name = policy_name(app_id);
            let ours = assigned
                .iter()
                .find(|p| p.get("displayName").and_then(Value::as_str) == Some(name.as_str()));
            match ours {
                Some(p) => {
                    let current = policy_access_token_lifetime(p);
                    if current == Some(want) {
                        PolicyPlan::Keep
                    } else {
                        PolicyPlan::Update {
                            id: p
                                .get("id")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            current,
                            lifetime: want,
                        }
                    }
                }
                None => match assigned.first() {
                    None => PolicyPlan::Create { lifetime: want },
                    Some(p) if policy_access_token_lifetime(p) == Some(want) => PolicyPlan::Keep,
                    Some(p) => {
                        return Err(ProviderError::Unsupported {
                            provider: KIND,
                            detail: format!(
                                "app {app_id} already has the token lifetime policy {:?} (id {}, AccessTokenLifetime {}) that the operator did not create, and an application can have only one. Set its AccessTokenLifetime to {} yourself, unassign it from the app, or remove accessTokenLifetime from spec.refreshTokens",
                                p.get("displayName")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default(),
                                p.get("id").and_then(Value::as_str).unwrap_or_default(),
                                policy_access_token_lifetime(p)
                                    .map(format_timespan)
                                    .unwrap_or_else(|| "unset".into()),
                                format_timespan(want)
                            ),
                        });
                    }
                },
            }
        }
    };
    Ok(Plan {
        required_resource_access,
        disable_public_client,
        policy,
    })
}

/// The setting a token lifetime policy change is shown as.
pub const POLICY_SETTING: &str = "AccessTokenLifetime of the app's token lifetime policy (ID tokens issued to Coder, access tokens for Coder's own API)";
/// Why the policy changes.
pub const POLICY_WHY: &str = "spec.refreshTokens.accessTokenLifetime; on Entra ID it does not change the Microsoft Graph access token Coder refreshes";

/// What `spec.refreshTokens.accessTokenLifetime` does on Entra ID, as a non-blocking finding.
///
/// A token lifetime policy applies to the *resource* a token is for (its audience), not to the
/// client that asks for it (`docs/fidelity/entra.md`, "Token lifetime policies and the access
/// token Coder refreshes"). With OIDC scopes only (`openid profile email offline_access`), the
/// access token Coder receives and refreshes is for Microsoft Graph, which keeps Graph's own
/// lifetime (a random 60–90 minutes); a policy on Coder's app registration cannot change it. It
/// changes the ID token Coder receives and access tokens *for* Coder's app, i.e. when Coder also
/// requests a scope of its own API (`api://<appId>/…` or `<appId>/.default`).
///
/// The provider keeps the setting (it is the only lever Entra ID has, and it does what it says
/// for Coder deployments that request their own API's scope, which the provider cannot see) but
/// tells the truth about it: the plan's change names what it sets,
/// `status.identityProvider.accessTokenLifetime` stays empty (the lifetime of the token Coder
/// refreshes is Graph's, neither readable nor set by the operator), and this finding says what
/// the policy does and does not change.
pub fn access_token_lifetime_finding(desired: &DesiredSettings, app_id: &str) -> Option<Finding> {
    let want = desired.access_token_lifetime?;
    Some(Finding {
        reason: "AccessTokenLifetimeNotForGraph",
        message: format!(
            "spec.refreshTokens.accessTokenLifetime {} is applied as the token lifetime policy {:?} (AccessTokenLifetime {}) of app {app_id}. Entra ID applies it to the ID tokens Coder receives and to access tokens for Coder's own API (only when Coder also requests a scope such as api://{app_id}/<scope> or {app_id}/.default, e.g. through spec.coder.scopes); with OIDC scopes only, the access token Coder refreshes is for Microsoft Graph and keeps Graph's own lifetime (a random 60-90 minutes), which no policy on Coder's app changes. Remove accessTokenLifetime if that is the token you meant",
            crate::duration::format(want),
            policy_name(app_id),
            format_timespan(want)
        ),
        blocking: false,
        expires_at: None,
    })
}

/// `uniqueName` of the app, when set: the Microsoft Graph Bicep extension addresses the apps it
/// manages by it (`applications(uniqueName='…')`, a client-provided key it must set).
pub fn bicep_unique_name(app: &Value) -> Option<&str> {
    app.get("uniqueName")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A blocking finding when the plan would change an app registration that a Bicep template
/// manages (the Microsoft Graph Bicep extension; the app has `uniqueName`): its next deployment
/// replaces `requiredResourceAccess` and the other properties it declares, so the operator's
/// writes would be reverted and written again, pass after pass. The finding says what to add to
/// the Bicep source instead. Token lifetime policy assignments are not properties of the
/// application resource Bicep declares, so they do not conflict. (Azure Service Operator's
/// `Application` custom resources are handled by [`super::aso_finding`].)
pub fn bicep_finding(
    snap: &Snapshot,
    plan: &Plan,
    wanted: &[(String, String)],
    app_id: &str,
) -> Option<Finding> {
    let unique = bicep_unique_name(&snap.app)?;
    if plan.required_resource_access.is_none() && !plan.disable_public_client {
        return None;
    }
    let mut fields = Vec::new();
    if let Some(m) = &plan.required_resource_access {
        let entries: Vec<String> = m
            .added
            .iter()
            .filter_map(|n| wanted.iter().find(|(w, _)| w == n))
            .map(|(n, id)| format!("{{id: '{id}', type: 'Scope'}} ({n})"))
            .collect();
        fields.push(format!(
            "in requiredResourceAccess, the entry with resourceAppId '{GRAPH_APP_ID}' (Microsoft Graph) must list in resourceAccess {}",
            entries.join(", ")
        ));
    }
    if plan.disable_public_client {
        fields.push("isFallbackPublicClient: false".to_string());
    }
    Some(Finding {
        reason: "ManagedByBicep",
        message: format!(
            "app registration {app_id} has uniqueName {unique:?}: it is managed by a Bicep template (a Microsoft.Graph/applications resource of the Microsoft Graph Bicep extension), whose next deployment would revert what the operator writes, so the operator changes nothing. Add this to the resource with uniqueName '{unique}' in the Bicep source and deploy it: {}",
            fields.join("; ")
        ),
        blocking: true,
        expires_at: None,
    })
}

/// The changes of a plan, for people.
pub fn changes(plan: &Plan, snap: &Snapshot) -> Vec<Change> {
    let mut out = Vec::new();
    let target = format!(
        "Entra ID app registration {:?}",
        snap.app
            .get("appId")
            .and_then(Value::as_str)
            .unwrap_or_else(|| snap.object_id())
    );
    if let Some(m) = &plan.required_resource_access {
        let before = graph_scope_names(snap.app.get("requiredResourceAccess"), &snap.scope_names);
        let after = graph_scope_names(Some(&m.value), &snap.scope_names);
        let show = |v: Vec<String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        out.push(Change::new(
            &target,
            "requiredResourceAccess (Microsoft Graph delegated permissions)",
            show(before),
            show(after),
            "Coder requests these Microsoft Graph permissions (offline_access for refresh tokens, spec.refreshTokens.offlineAccess)",
        ));
    }
    if plan.disable_public_client {
        out.push(Change::new(
            &target,
            "isFallbackPublicClient (allow public client flows)",
            "true",
            "false",
            "a public client cannot use Coder's client secret, so its refresh tokens fail at the token endpoint",
        ));
    }
    match &plan.policy {
        PolicyPlan::Keep => {}
        PolicyPlan::Create { lifetime } => out.push(Change::new(
            &target,
            POLICY_SETTING,
            show_duration(snap.access_token_lifetime()),
            show_duration(Some(*lifetime)),
            POLICY_WHY,
        )),
        PolicyPlan::Update {
            current, lifetime, ..
        } => out.push(Change::new(
            &target,
            POLICY_SETTING,
            show_duration(*current),
            show_duration(Some(*lifetime)),
            POLICY_WHY,
        )),
    }
    out
}

/// Builds the observation from a snapshot and a plan (pure; `now` for secret expiry).
pub fn observation(
    desired: &DesiredSettings,
    snap: &Snapshot,
    plan: &Plan,
    app_id: &str,
    now: jiff::Timestamp,
) -> Observation {
    let offline_id = snap
        .scope_ids
        .get("offline_access")
        .cloned()
        .unwrap_or_else(|| WELL_KNOWN_SCOPES[3].1.to_string());
    let offline = merge_required_resource_access(
        snap.app.get("requiredResourceAccess"),
        &[("offline_access".into(), offline_id)],
    )
    .is_none();
    let spa_only =
        !callbacks(&snap.app, "spa").is_empty() && callbacks(&snap.app, "web").is_empty();
    let wanted = wanted_scopes(desired, &snap.scope_ids);
    let wanted_names: Vec<String> = wanted.iter().map(|(n, _)| n.clone()).collect();
    let mut found = findings(&snap.app, app_id, &snap.consent, &wanted_names, now);
    found.extend(bicep_finding(snap, plan, &wanted, app_id));
    found.extend(access_token_lifetime_finding(desired, app_id));
    Observation {
        settings: IdpSettings {
            refresh_token_grant: Some(true),
            offline_access: Some(offline),
            lifetime: spa_only.then_some(SPA_REFRESH_TOKEN_LIFETIME),
            idle_timeout: (!spa_only).then_some(REFRESH_TOKEN_INACTIVITY),
            rotation: None,
            // The access token Coder refreshes is Microsoft Graph's: its lifetime is Graph's
            // (60-90 minutes), neither read nor set by a policy on Coder's app (see
            // `access_token_lifetime_finding`).
            access_token_lifetime: None,
            rotation_window: None,
        },
        changes: changes(plan, snap),
        findings: found,
        coder: CoderNeeds {
            add_scopes: if desired.offline_access {
                vec!["offline_access".into()]
            } else {
                Vec::new()
            },
            remove_scopes: Vec::new(),
            params: BTreeMap::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFLINE: &str = "7427e0e9-2fba-42fe-b0c0-848c9e6a8182";
    const OPENID: &str = "37f7f235-527c-4136-accd-4a02d197296e";
    const USER_READ: &str = "e1fe6dd8-ba31-4d61-89e7-88639da4683d";
    const APP: &str = "3d7f2b9a-6c41-4e85-a0d2-9b1c7e5f4a68";

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn wanted_all() -> Vec<(String, String)> {
        WELL_KNOWN_SCOPES
            .iter()
            .map(|(n, id)| (n.to_string(), id.to_string()))
            .collect()
    }

    #[test]
    fn merge_keeps_every_other_resource_and_permission() {
        let current = json!([
            {"resourceAppId": "797f4846-ba00-4fd7-ba43-dac1f8f63013",
             "resourceAccess": [{"id": "41094075-9dad-400e-a0bd-54e686782033", "type": "Scope"}]},
            {"resourceAppId": GRAPH_APP_ID, "resourceAccess": [
                {"id": USER_READ, "type": "Scope"},
                {"id": OPENID, "type": "Scope"},
                {"id": "5b567255-7703-4780-807c-7be8301ae99b", "type": "Role"}]}
        ]);
        let m = merge_required_resource_access(Some(&current), &wanted_all()).unwrap();
        assert_eq!(m.added, vec!["profile", "email", "offline_access"]);
        assert_eq!(
            m.value,
            json!([
                {"resourceAppId": "797f4846-ba00-4fd7-ba43-dac1f8f63013",
                 "resourceAccess": [{"id": "41094075-9dad-400e-a0bd-54e686782033", "type": "Scope"}]},
                {"resourceAppId": GRAPH_APP_ID, "resourceAccess": [
                    {"id": USER_READ, "type": "Scope"},
                    {"id": OPENID, "type": "Scope"},
                    {"id": "5b567255-7703-4780-807c-7be8301ae99b", "type": "Role"},
                    {"id": "14dad69e-099b-42c9-810b-d002981feec1", "type": "Scope"},
                    {"id": "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0", "type": "Scope"},
                    {"id": OFFLINE, "type": "Scope"}]}
            ])
        );
        assert_eq!(
            merge_required_resource_access(Some(&m.value), &wanted_all()),
            None
        );
    }

    #[test]
    fn merge_adds_a_graph_entry_and_treats_roles_as_different() {
        let m = merge_required_resource_access(None, &wanted_all()[3..]).unwrap();
        assert_eq!(
            m.value,
            json!([{"resourceAppId": GRAPH_APP_ID, "resourceAccess": [{"id": OFFLINE, "type": "Scope"}]}])
        );
        // The same id as an application permission (Role) is not the delegated permission.
        let current = json!([{"resourceAppId": GRAPH_APP_ID, "resourceAccess": [{"id": OFFLINE, "type": "Role"}]}]);
        let m = merge_required_resource_access(Some(&current), &wanted_all()[3..]).unwrap();
        assert_eq!(m.value[0]["resourceAccess"].as_array().unwrap().len(), 2);
        // Ids compare case-insensitively.
        let current = json!([{"resourceAppId": GRAPH_APP_ID, "resourceAccess": [{"id": OFFLINE.to_uppercase(), "type": "Scope"}]}]);
        assert_eq!(
            merge_required_resource_access(Some(&current), &wanted_all()[3..]),
            None
        );
    }

    #[test]
    fn merge_sees_permissions_in_any_graph_entry() {
        let current = json!([
            {"resourceAppId": GRAPH_APP_ID, "resourceAccess": [{"id": OPENID, "type": "Scope"}]},
            {"resourceAppId": GRAPH_APP_ID, "resourceAccess": [{"id": OFFLINE, "type": "Scope"}]}
        ]);
        let m = merge_required_resource_access(Some(&current), &wanted_all()).unwrap();
        assert_eq!(m.added, vec!["profile", "email"]);
        assert_eq!(m.value[1], current[1]);
        assert_eq!(m.value[0]["resourceAccess"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn timespans_round_trip() {
        for (secs, text) in [
            (3600, "01:00:00"),
            (600, "00:10:00"),
            (86_400, "1.00:00:00"),
            (5430, "01:30:30"),
            (90_061, "1.01:01:01"),
        ] {
            assert_eq!(format_timespan(Duration::from_secs(secs)), text);
            assert_eq!(parse_timespan(text), Some(Duration::from_secs(secs)));
        }
        assert_eq!(
            parse_timespan("02:00:00.0000000"),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(parse_timespan("2h"), None);
        assert_eq!(parse_timespan("24:00:00"), None);
        assert_eq!(
            policy_definition(Duration::from_secs(3600)),
            r#"{"TokenLifetimePolicy":{"Version":1,"AccessTokenLifetime":"01:00:00"}}"#
        );
        let p = json!({"definition": [policy_definition(Duration::from_secs(7200))]});
        assert_eq!(
            policy_access_token_lifetime(&p),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(
            policy_access_token_lifetime(
                &json!({"definition": ["{\"TokenLifetimePolicy\":{\"Version\":1}}"]})
            ),
            None
        );
    }

    fn app_with(secrets: Value, web: Value, spa: Value) -> Value {
        json!({"id": "o", "appId": APP, "passwordCredentials": secrets,
               "web": {"redirectUris": web}, "spa": {"redirectUris": spa}})
    }

    fn secret(name: &str, end: &str) -> Value {
        json!({"displayName": name, "keyId": "k", "endDateTime": end, "hint": "abc", "secretText": null})
    }

    #[test]
    fn secret_expiry_findings_from_dates() {
        let now = ts("2026-11-22T00:00:00Z");
        let cb = json!(["https://coder.example.com/api/v2/users/oidc/callback"]);
        let none = json!([]);
        // Latest in 200 days: nothing.
        let app = app_with(
            json!([
                secret("old", "2026-01-01T00:00:00Z"),
                secret("new", "2027-06-10T00:00:00Z")
            ]),
            cb.clone(),
            none.clone(),
        );
        assert_eq!(findings(&app, APP, &Consent::NotChecked, &[], now), vec![]);
        // Latest in 10 days.
        let app = app_with(
            json!([
                secret("old", "2026-01-01T00:00:00Z"),
                secret("soon", "2026-12-02T00:00:00Z")
            ]),
            cb.clone(),
            none.clone(),
        );
        let f = findings(&app, APP, &Consent::NotChecked, &[], now);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].reason, f[0].blocking),
            ("ClientSecretExpiring", false)
        );
        assert_eq!(f[0].expires_at, Some(ts("2026-12-02T00:00:00Z")));
        assert!(
            f[0].message.contains("\"soon\"")
                && f[0].message.contains("2026-12-02")
                && f[0].message.contains("in 10 days"),
            "{}",
            f[0].message
        );
        // All expired.
        let app = app_with(
            json!([
                secret("a", "2026-01-01T00:00:00Z"),
                secret("b", "2026-11-21T00:00:00Z")
            ]),
            cb.clone(),
            none.clone(),
        );
        let f = findings(&app, APP, &Consent::NotChecked, &[], now);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].reason, f[0].blocking), ("ClientSecretExpired", true));
        assert_eq!(f[0].expires_at, Some(ts("2026-11-21T00:00:00Z")));
        assert!(
            f[0].message.contains("\"b\"") && f[0].message.contains("2026-11-21"),
            "{}",
            f[0].message
        );
        assert!(!f[0].message.contains("abc"), "the hint is not shown");
        // No secrets (certificate or federated credential): nothing.
        let app = app_with(json!([]), cb, none);
        assert_eq!(findings(&app, APP, &Consent::NotChecked, &[], now), vec![]);
    }

    fn certificate(name: &str, usage: &str, end: &str) -> Value {
        json!({"displayName": name, "keyId": "c", "type": "AsymmetricX509Cert", "usage": usage,
               "endDateTime": end, "startDateTime": "2025-01-01T00:00:00Z", "key": null,
               "customKeyIdentifier": "QUJD"})
    }

    #[test]
    fn certificate_expiry_findings_and_either_kind_keeps_coder_signing_in() {
        let now = ts("2026-11-22T00:00:00Z");
        let with = |secrets: Value, certs: Value| {
            let mut app = app_with(secrets, json!([]), json!([]));
            app["keyCredentials"] = certs;
            findings(&app, APP, &Consent::NotChecked, &[], now)
        };
        let reasons = |f: &[Finding]| -> Vec<(&str, bool)> {
            f.iter().map(|f| (f.reason, f.blocking)).collect()
        };
        // A certificate that expires in 5 days, no secret.
        let f = with(
            json!([]),
            json!([certificate("coder-cert", "Verify", "2026-11-27T00:00:00Z")]),
        );
        assert_eq!(reasons(&f), [("ClientCertificateExpiring", false)]);
        assert!(
            f[0].message.contains("\"coder-cert\"")
                && f[0].message.contains("in 5 days")
                && f[0].message.contains("CODER_OIDC_CLIENT_KEY_FILE"),
            "{}",
            f[0].message
        );
        // Every certificate expired, no secret: Coder cannot sign in.
        let f = with(
            json!([]),
            json!([certificate("coder-cert", "Verify", "2026-11-01T00:00:00Z")]),
        );
        assert_eq!(reasons(&f), [("ClientCertificateExpired", true)]);
        assert!(
            f[0].message.contains("cannot sign users in"),
            "{}",
            f[0].message
        );
        // An expired certificate next to a valid secret: a warning, not a stall.
        let f = with(
            json!([secret("s", "2027-11-01T00:00:00Z")]),
            json!([certificate("coder-cert", "Verify", "2026-11-01T00:00:00Z")]),
        );
        assert_eq!(reasons(&f), [("ClientCertificateExpired", false)]);
        assert!(
            f[0].message.contains("CODER_OIDC_CLIENT_SECRET"),
            "{}",
            f[0].message
        );
        // Expired secrets next to a valid certificate: a warning, not a stall.
        let f = with(
            json!([secret("s", "2026-11-01T00:00:00Z")]),
            json!([certificate("coder-cert", "Verify", "2027-11-01T00:00:00Z")]),
        );
        assert_eq!(reasons(&f), [("ClientSecretExpired", false)]);
        // Both expired: both block.
        let f = with(
            json!([secret("s", "2026-11-01T00:00:00Z")]),
            json!([certificate("coder-cert", "Verify", "2026-11-02T00:00:00Z")]),
        );
        assert_eq!(
            reasons(&f),
            [
                ("ClientSecretExpired", true),
                ("ClientCertificateExpired", true)
            ]
        );
        // Signing (token encryption) keys are not sign-in credentials.
        let f = with(
            json!([]),
            json!([certificate("enc", "Sign", "2026-11-01T00:00:00Z")]),
        );
        assert_eq!(reasons(&f), []);
    }

    #[test]
    fn spa_callback_and_consent_findings() {
        let now = ts("2026-11-22T00:00:00Z");
        let app = app_with(
            json!([]),
            json!([]),
            json!(["https://coder.example.com/api/v2/users/oidc/callback"]),
        );
        let f = findings(&app, APP, &Consent::NotChecked, &[], now);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].reason, f[0].blocking), ("SpaRedirectUri", false));
        assert!(f[0].message.contains("24 hours") && f[0].message.contains("web.redirectUris"));

        let wanted: Vec<String> = ["openid", "profile", "email", "offline_access"]
            .map(String::from)
            .to_vec();
        let grants = Consent::Grants {
            graph_sp_id: "g".into(),
            grants: vec![
                json!({"consentType": "AllPrincipals", "resourceId": "g", "scope": "openid profile email User.Read"}),
                json!({"consentType": "Principal", "resourceId": "g", "scope": "offline_access"}),
            ],
        };
        assert_eq!(
            missing_consent(&grants, &wanted),
            Some(vec!["offline_access".to_string()])
        );
        let app = app_with(json!([]), json!([]), json!([]));
        let f = findings(&app, APP, &grants, &wanted, now);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].reason, f[0].blocking), ("ConsentMissing", false));
        assert!(
            f[0].message.contains("offline_access") && f[0].message.contains("Grant admin consent")
        );
        let full = Consent::Grants {
            graph_sp_id: "g".into(),
            grants: vec![
                json!({"consentType": "AllPrincipals", "resourceId": "g", "scope": " openid profile email offline_access "}),
            ],
        };
        assert_eq!(missing_consent(&full, &wanted), None);
        assert_eq!(missing_consent(&Consent::NotChecked, &wanted), None);
        assert_eq!(
            missing_consent(&Consent::NoServicePrincipal, &wanted[3..]),
            Some(vec!["offline_access".to_string()])
        );
    }

    fn snap(app: Value, policies: Option<Vec<Value>>) -> Snapshot {
        Snapshot {
            app,
            scope_ids: BTreeMap::new(),
            scope_names: WELL_KNOWN_SCOPES
                .iter()
                .map(|(n, id)| (id.to_string(), n.to_string()))
                .collect(),
            scopes_from_graph: false,
            consent: Consent::NotChecked,
            policies,
        }
    }

    #[test]
    fn plans_policies_without_duplicates() {
        let rra = json!([{"resourceAppId": GRAPH_APP_ID, "resourceAccess": WELL_KNOWN_SCOPES.iter().map(|(_, id)| json!({"id": id, "type": "Scope"})).collect::<Vec<_>>()}]);
        let app = json!({"id": "o", "requiredResourceAccess": rra, "isFallbackPublicClient": null});
        let d = DesiredSettings {
            offline_access: true,
            access_token_lifetime: Some(Duration::from_secs(3600)),
            ..DesiredSettings::default()
        };
        let p = plan(&d, &snap(app.clone(), Some(vec![])), APP).unwrap();
        assert_eq!(
            p.policy,
            PolicyPlan::Create {
                lifetime: Duration::from_secs(3600)
            }
        );
        assert!(p.required_resource_access.is_none() && !p.disable_public_client);
        let ours = json!({"id": "p1", "displayName": policy_name(APP), "definition": [policy_definition(Duration::from_secs(7200))]});
        let p = plan(&d, &snap(app.clone(), Some(vec![ours.clone()])), APP).unwrap();
        assert_eq!(
            p.policy,
            PolicyPlan::Update {
                id: "p1".into(),
                current: Some(Duration::from_secs(7200)),
                lifetime: Duration::from_secs(3600)
            }
        );
        let s = snap(app.clone(), Some(vec![ours]));
        let c = changes(&p, &s);
        let shown: Vec<(&str, &str, &str, &str)> = c
            .iter()
            .map(|c| {
                (
                    c.target.as_str(),
                    c.setting.as_str(),
                    c.from.as_str(),
                    c.to.as_str(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [(
                r#"Entra ID app registration "o""#,
                POLICY_SETTING,
                "2h",
                "1h"
            )]
        );
        assert_eq!(c[0].why, POLICY_WHY);
        let same = json!({"id": "p1", "displayName": policy_name(APP), "definition": [policy_definition(Duration::from_secs(3600))]});
        assert!(
            plan(&d, &snap(app.clone(), Some(vec![same])), APP)
                .unwrap()
                .is_empty()
        );
        let foreign = json!({"id": "f", "displayName": "corp", "definition": [policy_definition(Duration::from_secs(7200))]});
        let e = plan(&d, &snap(app.clone(), Some(vec![foreign])), APP).unwrap_err();
        assert!(
            matches!(e, ProviderError::Unsupported { .. }) && e.to_string().contains("\"corp\""),
            "{e}"
        );
        let public = json!({"id": "o", "requiredResourceAccess": app["requiredResourceAccess"], "isFallbackPublicClient": true});
        let p = plan(
            &DesiredSettings {
                offline_access: true,
                ..DesiredSettings::default()
            },
            &snap(public, None),
            APP,
        )
        .unwrap();
        assert!(p.disable_public_client && p.policy == PolicyPlan::Keep);
    }

    #[test]
    fn changes_name_the_permissions() {
        let app = json!({"id": "o", "requiredResourceAccess": [{"resourceAppId": GRAPH_APP_ID, "resourceAccess": [
            {"id": USER_READ, "type": "Scope"}, {"id": OPENID, "type": "Scope"}]}]});
        let mut s = snap(app, None);
        s.scope_names.insert(USER_READ.into(), "User.Read".into());
        let p = plan(
            &DesiredSettings {
                offline_access: true,
                ..DesiredSettings::default()
            },
            &s,
            APP,
        )
        .unwrap();
        let c = changes(&p, &s);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].setting.as_str(), c[0].from.as_str(), c[0].to.as_str()),
            (
                "requiredResourceAccess (Microsoft Graph delegated permissions)",
                "openid, User.Read",
                "email, offline_access, openid, profile, User.Read",
            )
        );
        let o = observation(
            &DesiredSettings {
                offline_access: true,
                ..DesiredSettings::default()
            },
            &s,
            &p,
            APP,
            ts("2026-01-01T00:00:00Z"),
        );
        assert_eq!(o.settings.offline_access, Some(false));
        assert_eq!(o.settings.idle_timeout, Some(REFRESH_TOKEN_INACTIVITY));
        assert_eq!(o.coder.add_scopes, vec!["offline_access".to_string()]);
    }

    #[test]
    fn bicep_managed_apps_block_only_when_the_operator_would_change_them() {
        let d = DesiredSettings {
            offline_access: true,
            ..DesiredSettings::default()
        };
        let rra = json!([{"resourceAppId": GRAPH_APP_ID, "resourceAccess": [{"id": OPENID, "type": "Scope"}]}]);
        let app = json!({"id": "o", "appId": APP, "uniqueName": "coder-app", "requiredResourceAccess": rra});
        let s = snap(app, None);
        let p = plan(&d, &s, APP).unwrap();
        let o = observation(&d, &s, &p, APP, ts("2026-01-01T00:00:00Z"));
        let f: Vec<_> = o.findings.iter().filter(|f| f.blocking).collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].reason, "ManagedByBicep");
        for needle in [
            "uniqueName \"coder-app\"",
            "Bicep",
            GRAPH_APP_ID,
            OFFLINE,
            "(offline_access)",
            "(profile)",
        ] {
            assert!(
                f[0].message.contains(needle),
                "{needle:?} in {}",
                f[0].message
            );
        }
        assert!(!f[0].message.contains("isFallbackPublicClient"));
        assert!(
            !f[0].message.contains(&format!("{OPENID}'")),
            "present ones are not listed"
        );
        // Nothing to change: no conflict.
        let full = json!([{"resourceAppId": GRAPH_APP_ID, "resourceAccess": WELL_KNOWN_SCOPES.iter().map(|(_, id)| json!({"id": id, "type": "Scope"})).collect::<Vec<_>>()}]);
        let s = snap(
            json!({"id": "o", "uniqueName": "coder-app", "requiredResourceAccess": full}),
            None,
        );
        let p = plan(&d, &s, APP).unwrap();
        assert!(bicep_finding(&s, &p, &wanted_scopes(&d, &s.scope_ids), APP).is_none());
        // No uniqueName (or an empty one): not Bicep.
        for unique in [Value::Null, json!(""), json!("  ")] {
            let s = snap(json!({"id": "o", "uniqueName": unique}), None);
            let p = plan(&d, &s, APP).unwrap();
            assert!(bicep_finding(&s, &p, &wanted_scopes(&d, &s.scope_ids), APP).is_none());
        }
    }

    #[test]
    fn access_token_lifetime_says_what_the_policy_changes() {
        let d = DesiredSettings {
            offline_access: true,
            access_token_lifetime: Some(Duration::from_secs(86_400)),
            ..DesiredSettings::default()
        };
        let f = access_token_lifetime_finding(&d, APP).unwrap();
        assert!(!f.blocking);
        for needle in [
            "1.00:00:00",
            "ID tokens",
            "Microsoft Graph",
            &format!("api://{APP}/"),
        ] {
            assert!(f.message.contains(needle), "{needle:?} in {}", f.message);
        }
        let mut without = d.clone();
        without.access_token_lifetime = None;
        assert!(access_token_lifetime_finding(&without, APP).is_none());
        // The assigned policy's value is not reported as the lifetime of Coder's access token.
        let ours = json!({"id": "p1", "displayName": policy_name(APP), "definition": [policy_definition(Duration::from_secs(86_400))]});
        let s = snap(json!({"id": "o"}), Some(vec![ours]));
        let p = plan(&d, &s, APP).unwrap();
        assert_eq!(p.policy, PolicyPlan::Keep);
        let o = observation(&d, &s, &p, APP, ts("2026-01-01T00:00:00Z"));
        assert_eq!(o.settings.access_token_lifetime, None);
        assert!(
            o.findings
                .iter()
                .any(|f| f.reason == "AccessTokenLifetimeNotForGraph")
        );
    }
}
