//! Microsoft Entra ID (Azure AD) through Microsoft Graph v1.0.
//!
//! # Authentication
//! The policy's Secret holds `client-id` + `client-secret` of a *management* app registration
//! (optionally `ca.crt`, a PEM bundle for a TLS-inspecting proxy or a private sovereign cloud).
//! The operator gets a client-credentials token from
//! `{authorityHost}/{tenantId}/oauth2/v2.0/token` with scope `{graphEndpoint}/.default`, caches it
//! in [`ProviderDeps::tokens`] until shortly before it expires (keyed by authority, Graph
//! endpoint, tenant, Secret name, Secret `resourceVersion` and a hash of the credentials), and on a
//! 401 from Graph drops it, fetches a new one and retries the call once.
//!
//! Application permissions the management app needs (admin-consented):
//! `Application.ReadWrite.All` (or `Application.ReadWrite.OwnedBy` as an owner of Coder's app;
//! `Application.Read.All` is enough for `managementPolicy: Observe`); with `accessTokenLifetime`,
//! also `Policy.ReadWrite.ApplicationConfiguration` (and the tenant needs Entra ID P1); optionally
//! `DelegatedPermissionGrant.Read.All` so the operator can report missing admin consent.
//!
//! # What is configured
//! Coder's app registration is read through its alternate key
//! `GET /v1.0/applications(appId='…')` (never created or deleted). Updates are
//! `PATCH /v1.0/applications/{id}` with only the properties that change; Graph replaces
//! collections as a whole, so `requiredResourceAccess` is sent complete, with every other resource
//! and permission exactly as read. Everything is read back afterwards (a 404 right after a write is
//! retried: Graph is eventually consistent) and compared.
//!
//! | policy (`spec.refreshTokens`) | Entra ID / Graph |
//! |---|---|
//! | always | `requiredResourceAccess` holds Microsoft Graph's delegated `openid`, `profile`, `email`; `isFallbackPublicClient` is not `true` (Coder is a confidential client) |
//! | `offlineAccess: true` | also delegated `offline_access`; Coder requests scope `offline_access` |
//! | `accessTokenLifetime` | a token lifetime policy named `oidc-refresh-operator <appId>` with `AccessTokenLifetime`, assigned to the app (updated in place, never duplicated) |
//! | `lifetime`, `idleTimeout`, `rotation` | [`ProviderError::Unsupported`]: Entra ID fixed refresh-token lifetimes in January 2021 |
//!
//! Permission ids are looked up from Microsoft Graph's service principal
//! (`oauth2PermissionScopes`), with the well-known ids as fallback when that read is refused.
//!
//! Reported, never changed: Coder's callback under `spa.redirectUris` (refresh tokens then live
//! 24 h), client secrets that expire within 30 days or have all expired (blocking), and missing
//! tenant-wide admin consent for the delegated permissions (when the management app may read
//! `oauth2PermissionGrants`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::http::{self, error_for_status, truncate};
use super::{
    Applied, Change, CoderNeeds, Credentials, DesiredSettings, Finding, IdentityProvider,
    IdpSettings, Observation, ProviderDeps, ProviderError, ProviderKind, missing_credentials,
    show_duration,
};
use crate::crd::EntraIdSpec;

const KIND: ProviderKind = ProviderKind::EntraId;

/// `appId` of Microsoft Graph (the resource of the delegated OIDC permissions).
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// Default token authority (public cloud).
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Default Microsoft Graph endpoint (public cloud).
pub const DEFAULT_GRAPH: &str = "https://graph.microsoft.com";
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
const OTHER_KNOWN_SCOPES: [(&str, &str); 1] =
    [("User.Read", "e1fe6dd8-ba31-4d61-89e7-88639da4683d")];
/// Entra ID's fixed refresh-token inactivity window.
pub const REFRESH_TOKEN_INACTIVITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime of refresh tokens issued to SPA redirect URIs.
pub const SPA_REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A client secret expiring within this many days is reported.
pub const SECRET_WARNING_DAYS: i64 = 30;
/// Bounds of `AccessTokenLifetime` in a token lifetime policy.
pub const ACCESS_TOKEN_MIN: Duration = Duration::from_secs(600);
/// Upper bound of `AccessTokenLifetime`.
pub const ACCESS_TOKEN_MAX: Duration = Duration::from_secs(86_400);
/// Reads retried after a write that answer 404 (Graph replication).
const CONSISTENCY_RETRIES: u32 = 5;

/// Message for the refresh-token settings Entra ID cannot honour.
pub const UNSUPPORTED_REFRESH_SETTINGS: &str = "Microsoft Entra ID uses a fixed 90-day inactivity window for refresh tokens (24 h, not extended by use, for tokens issued to SPA redirect URIs); refresh-token lifetimes are not configurable since January 2021 (token lifetime policies ignore MaxInactiveTime and MaxAge*). Remove lifetime, idleTimeout and rotation from spec.refreshTokens and use Conditional Access sign-in frequency to force users to sign in again";

/// Builds the provider for a policy.
pub fn connect(
    spec: &EntraIdSpec,
    credentials: Option<Credentials>,
    deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    let credentials = credentials.ok_or_else(|| missing_credentials(KIND))?;
    for (field, value) in [
        ("tenantId", &spec.tenant_id),
        ("applicationId", &spec.application_id),
    ] {
        if !is_guid(value) {
            return Err(ProviderError::Unsupported {
                provider: KIND,
                detail: format!(
                    "spec.provider.entraId.{field} {value:?} is not a GUID; use the Directory (tenant) ID and the Application (client) ID shown on the app registration's Overview page"
                ),
            });
        }
    }
    let authority = normalize_url(
        "authorityHost",
        spec.authority_host.as_deref().unwrap_or(DEFAULT_AUTHORITY),
    )?;
    let graph = normalize_url(
        "graphEndpoint",
        spec.graph_endpoint.as_deref().unwrap_or(DEFAULT_GRAPH),
    )?;
    let v = credentials.require(KIND, &["client-id", "client-secret"])?;
    let (client_id, client_secret) = (v[0].clone(), v[1].clone());
    let ca = credentials
        .get("ca.crt")
        .map(|c| c.expose_secret().as_bytes().to_vec());
    let client = deps.http.client(KIND, ca.as_deref())?;
    let mut hasher = Sha256::new();
    for part in [&client_id, &client_secret] {
        hasher.update(part.expose_secret().as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    let token_key = format!(
        "entra|{authority}|{graph}|{}|{}|{}|{:x}",
        spec.tenant_id.to_ascii_lowercase(),
        credentials.secret_name,
        credentials.version,
        u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
    );
    Ok(Arc::new(EntraId {
        authority,
        graph,
        tenant: spec.tenant_id.to_ascii_lowercase(),
        app_id: spec.application_id.to_ascii_lowercase(),
        secret_name: credentials.secret_name.clone(),
        client_id,
        client_secret,
        http: client,
        deps: deps.clone(),
        token_key,
    }))
}

fn normalize_url(field: &str, url: &str) -> Result<String, ProviderError> {
    let u = url.trim().trim_end_matches('/').to_string();
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(u),
        _ => Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "spec.provider.entraId.{field} {url:?} is not an http(s) URL such as https://login.microsoftonline.com"
            ),
        }),
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` with hex digits.
pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

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

/// Extracts a readable message from a Graph error (`{"error":{"code","message"}}` →
/// `code: message`), a token-endpoint error (`{"error","error_description"}`, without the trace
/// lines) or plain text.
pub fn graph_message(body: &str) -> String {
    let body = body.trim();
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(body) {
        if let Some(Value::Object(e)) = o.get("error") {
            let s = |k: &str| e.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
            return match (s("code"), s("message")) {
                (Some(c), Some(m)) => truncate(&format!("{c}: {m}"), 400),
                (Some(c), None) => truncate(c, 400),
                (None, Some(m)) => truncate(m, 400),
                (None, None) => truncate(body, 400),
            };
        }
        let s = |k: &str| o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        if let Some(code) = s("error") {
            return match s("error_description") {
                Some(d) => truncate(&format!("{code}: {}", strip_trace(d)), 400),
                None => truncate(code, 400),
            };
        }
    }
    truncate(body, 400)
}

/// Drops the `Trace ID: … Correlation ID: … Timestamp: …` tail of an AAD error description.
fn strip_trace(d: &str) -> &str {
    let cut = ["\r\n", "\n", " Trace ID:"]
        .iter()
        .filter_map(|m| d.find(m))
        .min()
        .unwrap_or(d.len());
    d[..cut].trim()
}

fn oauth_error_code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .unwrap_or_default()
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
        });
    }
    let ends: Vec<(jiff::Timestamp, String)> = app
        .get("passwordCredentials")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
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
        .collect();
    if let Some((end, name)) = ends.iter().max_by_key(|(e, _)| *e) {
        let date = end.strftime("%Y-%m-%d %H:%M UTC");
        if *end <= now {
            out.push(Finding {
                reason: "ClientSecretExpired",
                message: format!(
                    "every client secret of app {app_id} has expired (the latest, {name}, on {date}): Coder cannot sign users in. Add a new client secret under App registrations > Certificates & secrets and update Coder's CODER_OIDC_CLIENT_SECRET"
                ),
                blocking: true,
            });
        } else {
            let left = end.duration_since(now).as_secs() / 86_400;
            if left < SECRET_WARNING_DAYS {
                out.push(Finding {
                    reason: "ClientSecretExpiring",
                    message: format!(
                        "the latest client secret of app {app_id} ({name}) expires on {date}, in {left} day{}: add a new client secret under App registrations > Certificates & secrets and update Coder's CODER_OIDC_CLIENT_SECRET before then",
                        if left == 1 { "" } else { "s" }
                    ),
                    blocking: false,
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
    fn object_id(&self) -> &str {
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

/// The changes of a plan, for people.
pub fn changes(plan: &Plan, snap: &Snapshot) -> Vec<Change> {
    let mut out = Vec::new();
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
        out.push(Change {
            setting: "requiredResourceAccess (Microsoft Graph delegated permissions)".into(),
            from: show(before),
            to: show(after),
        });
    }
    if plan.disable_public_client {
        out.push(Change {
            setting: "isFallbackPublicClient (allow public client flows)".into(),
            from: "true".into(),
            to: "false".into(),
        });
    }
    match &plan.policy {
        PolicyPlan::Keep => {}
        PolicyPlan::Create { lifetime } => out.push(Change {
            setting: "accessTokenLifetime (token lifetime policy)".into(),
            from: show_duration(snap.access_token_lifetime()),
            to: show_duration(Some(*lifetime)),
        }),
        PolicyPlan::Update {
            current, lifetime, ..
        } => out.push(Change {
            setting: "accessTokenLifetime (token lifetime policy)".into(),
            from: show_duration(*current),
            to: show_duration(Some(*lifetime)),
        }),
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
    let wanted: Vec<String> = wanted_scopes(desired, &snap.scope_ids)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    Observation {
        settings: IdpSettings {
            refresh_token_grant: Some(true),
            offline_access: Some(offline),
            lifetime: spa_only.then_some(SPA_REFRESH_TOKEN_LIFETIME),
            idle_timeout: (!spa_only).then_some(REFRESH_TOKEN_INACTIVITY),
            rotation: None,
            access_token_lifetime: snap.access_token_lifetime(),
        },
        changes: changes(plan, snap),
        findings: findings(&snap.app, app_id, &snap.consent, &wanted, now),
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

/// One kind of Graph call, for metrics and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    ReadApp,
    PatchApp,
    ReadGraphSp,
    ReadAppSp,
    ReadGrants,
    ReadAppPolicies,
    ListPolicies,
    CreatePolicy,
    PatchPolicy,
    AssignPolicy,
}

impl Op {
    fn metric(self) -> &'static str {
        match self {
            Op::ReadApp => "get_application",
            Op::PatchApp => "update_application",
            Op::ReadGraphSp => "get_graph_service_principal",
            Op::ReadAppSp => "get_service_principal",
            Op::ReadGrants => "list_permission_grants",
            Op::ReadAppPolicies => "get_application_token_lifetime_policies",
            Op::ListPolicies => "list_token_lifetime_policies",
            Op::CreatePolicy => "create_token_lifetime_policy",
            Op::PatchPolicy => "update_token_lifetime_policy",
            Op::AssignPolicy => "assign_token_lifetime_policy",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Op::ReadApp => "read the app registration",
            Op::PatchApp => "update the app registration",
            Op::ReadGraphSp => "read Microsoft Graph's permission catalogue",
            Op::ReadAppSp => "read the app's service principal",
            Op::ReadGrants => "read admin consent (oauth2PermissionGrants)",
            Op::ReadAppPolicies => "read the app's token lifetime policies",
            Op::ListPolicies => "list token lifetime policies",
            Op::CreatePolicy => "create a token lifetime policy",
            Op::PatchPolicy => "update a token lifetime policy",
            Op::AssignPolicy => "assign a token lifetime policy to the app",
        }
    }

    fn permission(self) -> &'static str {
        match self {
            Op::ReadApp | Op::ReadAppPolicies => {
                "the Microsoft Graph application permission Application.Read.All or Application.ReadWrite.All (or Application.ReadWrite.OwnedBy as an owner of the app)"
            }
            Op::PatchApp => {
                "the Microsoft Graph application permission Application.ReadWrite.All (or Application.ReadWrite.OwnedBy as an owner of the app)"
            }
            Op::ReadGraphSp | Op::ReadAppSp => {
                "the Microsoft Graph application permission Application.Read.All or Application.ReadWrite.All"
            }
            Op::ReadGrants => {
                "the Microsoft Graph application permission DelegatedPermissionGrant.Read.All"
            }
            Op::ListPolicies | Op::CreatePolicy | Op::PatchPolicy => {
                "the Microsoft Graph application permission Policy.ReadWrite.ApplicationConfiguration"
            }
            Op::AssignPolicy => {
                "the Microsoft Graph application permissions Policy.ReadWrite.ApplicationConfiguration and Application.ReadWrite.All"
            }
        }
    }

    /// What else the operation needs.
    fn note(self) -> &'static str {
        match self {
            Op::ListPolicies | Op::CreatePolicy | Op::PatchPolicy | Op::AssignPolicy => {
                "; token lifetime policies also need a Microsoft Entra ID P1 license in the tenant (or remove accessTokenLifetime from spec.refreshTokens)"
            }
            _ => "",
        }
    }
}

/// The Entra ID provider for one policy.
pub struct EntraId {
    authority: String,
    graph: String,
    tenant: String,
    app_id: String,
    secret_name: String,
    client_id: SecretString,
    client_secret: SecretString,
    http: reqwest::Client,
    deps: ProviderDeps,
    token_key: String,
}

impl std::fmt::Debug for EntraId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraId")
            .field("authority", &self.authority)
            .field("graph", &self.graph)
            .field("tenant", &self.tenant)
            .field("app_id", &self.app_id)
            .field("secret_name", &self.secret_name)
            .finish_non_exhaustive()
    }
}

/// Percent-encodes a query value (spaces as `%20`, as OData expects).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Outcome of one Graph call that may legitimately fail.
enum Answer {
    Ok(Option<Value>),
    Status(StatusCode, reqwest::header::HeaderMap, String),
}

impl EntraId {
    fn v1(&self, path: &str) -> String {
        format!("{}/v1.0{path}", self.graph)
    }

    async fn token(&self, force: bool) -> Result<SecretString, ProviderError> {
        if !force && let Some(t) = self.deps.tokens.get(&self.token_key) {
            return Ok(t);
        }
        let url = format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant);
        let scope = format!("{}/.default", self.graph);
        let form: [(&str, &str); 4] = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.expose_secret()),
            ("client_secret", self.client_secret.expose_secret()),
            ("scope", scope.as_str()),
        ];
        let req = self.http.post(url).form(&form);
        let (status, headers, body) = match http::request_token(
            &self.deps,
            KIND,
            "get a Microsoft Graph token",
            req,
            &self.token_key,
            Duration::from_secs(300),
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
        let msg = graph_message(&body);
        let code = oauth_error_code(&body);
        match status.as_u16() {
            400 | 401 if msg.contains("AADSTS90002") => Err(ProviderError::ClientNotFound {
                provider: KIND,
                what: format!("tenant {}", self.tenant),
                detail: format!(
                    "the token endpoint {} does not know this tenant ({msg}); check spec.provider.entraId.tenantId and authorityHost (national clouds have their own)",
                    self.authority
                ),
            }),
            400 | 401 => {
                let hint = match code.as_str() {
                    "invalid_client" => {
                        "; client-secret must be the secret's Value (not its Secret ID) and must not have expired"
                    }
                    "unauthorized_client" => {
                        "; client-id must be the Application (client) ID of a management app registered in this tenant"
                    }
                    "invalid_scope" => {
                        "; check spec.provider.entraId.graphEndpoint (the scope is <graphEndpoint>/.default)"
                    }
                    _ => "",
                };
                Err(ProviderError::AuthenticationFailed {
                    provider: KIND,
                    detail: format!(
                        "the token endpoint of tenant {} answered HTTP {} ({msg}); check client-id and client-secret in Secret {:?}{hint}",
                        self.tenant,
                        status.as_u16(),
                        self.secret_name
                    ),
                })
            }
            404 => Err(ProviderError::ClientNotFound {
                provider: KIND,
                what: format!("tenant {}", self.tenant),
                detail: format!(
                    "{}/{}/oauth2/v2.0/token answered 404 ({msg}); check spec.provider.entraId.authorityHost and tenantId",
                    self.authority, self.tenant
                ),
            }),
            _ => Err(error_for_status(
                KIND,
                "get a Microsoft Graph token",
                status,
                &headers,
                msg,
            )),
        }
    }

    /// One Graph call: token, send, one renewal on 401. Non-success statuses other than 401
    /// are returned for the caller to map.
    async fn send(
        &self,
        op: Op,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
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
            let resp = http::send(&self.deps, KIND, op.metric(), req).await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                self.deps.tokens.invalidate(&self.token_key);
                renewed = true;
                continue;
            }
            let headers = resp.headers().clone();
            let text = resp.text().await.map_err(|e| ProviderError::Unreachable {
                provider: KIND,
                operation: op.what().into(),
                detail: http::describe_reqwest_error(&e),
            })?;
            if status.is_success() {
                if text.trim().is_empty() {
                    return Ok(Answer::Ok(None));
                }
                return serde_json::from_str(&text)
                    .map(|v| Answer::Ok(Some(v)))
                    .map_err(|e| ProviderError::Protocol {
                        provider: KIND,
                        operation: op.what().into(),
                        detail: format!("the answer is not JSON: {e}"),
                    });
            }
            return Ok(Answer::Status(status, headers, text));
        }
    }

    /// A call whose every failure is an error.
    async fn call(
        &self,
        op: Op,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ProviderError> {
        match self.send(op, method, url, body).await? {
            Answer::Ok(v) => Ok(v),
            Answer::Status(s, h, t) => Err(self.error(op, s, &h, &t)),
        }
    }

    fn error(
        &self,
        op: Op,
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &str,
    ) -> ProviderError {
        let msg = graph_message(body);
        match status.as_u16() {
            401 => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "Microsoft Graph answered 401 to \"{}\" even with a fresh token ({msg}); check that the management app of Secret {:?} belongs to tenant {} and that spec.provider.entraId.graphEndpoint matches the authority's cloud",
                    op.what(),
                    self.secret_name,
                    self.tenant
                ),
            },
            403 => ProviderError::Forbidden {
                provider: KIND,
                operation: op.what().into(),
                detail: format!(
                    "{}; the management app of Secret {:?} needs {} with admin consent in tenant {}{}",
                    msg.trim_end_matches('.'),
                    self.secret_name,
                    op.permission(),
                    self.tenant,
                    op.note()
                ),
            },
            404 if op == Op::ReadApp || op == Op::PatchApp => self.app_not_found(&msg),
            504 if headers.contains_key(reqwest::header::RETRY_AFTER) => ProviderError::Throttled {
                provider: KIND,
                operation: op.what().into(),
                retry_after: http::retry_after(headers),
            },
            _ => error_for_status(KIND, op.what(), status, headers, msg),
        }
    }

    fn app_not_found(&self, msg: &str) -> ProviderError {
        ProviderError::ClientNotFound {
            provider: KIND,
            what: format!(
                "application (client) id {} in tenant {}",
                self.app_id, self.tenant
            ),
            detail: format!(
                "Microsoft Graph has no app registration with this appId visible to the management app ({msg}); check spec.provider.entraId.applicationId (the Application (client) ID Coder uses as CODER_OIDC_CLIENT_ID, not the Object ID) and tenantId, and that the management app of Secret {:?} has the Microsoft Graph application permission Application.Read.All or Application.ReadWrite.All with admin consent (with Application.ReadWrite.OwnedBy it must own the app); the operator never creates app registrations",
                self.secret_name
            ),
        }
    }

    /// Retries a read that answers 404 right after a write (Graph replication).
    async fn read_consistent(
        &self,
        op: Op,
        url: &str,
        after_write: bool,
    ) -> Result<Option<Value>, ProviderError> {
        let mut attempt = 0;
        loop {
            match self.send(op, Method::GET, url, None).await? {
                Answer::Ok(v) => return Ok(v),
                Answer::Status(s, _, _)
                    if s == StatusCode::NOT_FOUND
                        && after_write
                        && attempt < CONSISTENCY_RETRIES =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Answer::Status(s, h, t) => return Err(self.error(op, s, &h, &t)),
            }
        }
    }

    async fn read_app(&self, after_write: bool) -> Result<Value, ProviderError> {
        let url = self.v1(&format!(
            "/applications(appId='{}')?$select={}",
            self.app_id,
            enc("id,appId,displayName,requiredResourceAccess,isFallbackPublicClient,web,spa,publicClient,passwordCredentials,signInAudience")
        ));
        self.read_consistent(Op::ReadApp, &url, after_write)
            .await?
            .filter(|v| v.get("id").and_then(Value::as_str).is_some())
            .ok_or_else(|| ProviderError::Protocol {
                provider: KIND,
                operation: Op::ReadApp.what().into(),
                detail: "the answer has no object id".into(),
            })
    }

    async fn read_policies(
        &self,
        object_id: &str,
        needed: bool,
        after_write: bool,
    ) -> Result<Option<Vec<Value>>, ProviderError> {
        let url = self.v1(&format!("/applications/{object_id}/tokenLifetimePolicies"));
        match self
            .read_consistent(Op::ReadAppPolicies, &url, after_write)
            .await
        {
            Ok(v) => Ok(Some(
                v.and_then(|v| v.get("value").and_then(Value::as_array).cloned())
                    .unwrap_or_default(),
            )),
            Err(ProviderError::Forbidden { .. }) if !needed => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads everything needed. No writes.
    async fn read(
        &self,
        desired: &DesiredSettings,
        after_write: bool,
    ) -> Result<Snapshot, ProviderError> {
        let app = self.read_app(after_write).await?;
        let object_id = app
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();

        // Microsoft Graph's permission catalogue.
        let mut scope_ids = BTreeMap::new();
        let mut scope_names: BTreeMap<String, String> = WELL_KNOWN_SCOPES
            .iter()
            .chain(OTHER_KNOWN_SCOPES.iter())
            .map(|(n, id)| (id.to_string(), n.to_string()))
            .collect();
        let url = self.v1(&format!(
            "/servicePrincipals(appId='{GRAPH_APP_ID}')?$select={}",
            enc("id,appId,oauth2PermissionScopes")
        ));
        let mut graph_sp_id = None;
        match self.send(Op::ReadGraphSp, Method::GET, &url, None).await? {
            Answer::Ok(Some(sp)) => {
                graph_sp_id = sp.get("id").and_then(Value::as_str).map(str::to_string);
                for s in sp
                    .get("oauth2PermissionScopes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let (Some(v), Some(id)) = (
                        s.get("value").and_then(Value::as_str),
                        s.get("id").and_then(Value::as_str),
                    ) {
                        scope_names.insert(id.to_ascii_lowercase(), v.to_string());
                        if WELL_KNOWN_SCOPES.iter().any(|(n, _)| *n == v) {
                            scope_ids.insert(v.to_string(), id.to_string());
                        }
                    }
                }
            }
            Answer::Ok(None) => {}
            Answer::Status(s, _, _) if s == StatusCode::FORBIDDEN || s == StatusCode::NOT_FOUND => {
            }
            Answer::Status(s, h, t) => return Err(self.error(Op::ReadGraphSp, s, &h, &t)),
        }
        let scopes_from_graph = !scope_ids.is_empty();

        // Admin consent, when readable.
        let consent = match &graph_sp_id {
            None => Consent::NotChecked,
            Some(graph_sp_id) => {
                let url = self.v1(&format!(
                    "/servicePrincipals(appId='{}')?$select={}",
                    self.app_id,
                    enc("id,appId")
                ));
                match self.send(Op::ReadAppSp, Method::GET, &url, None).await? {
                    Answer::Ok(Some(sp)) => {
                        let sp_id = sp.get("id").and_then(Value::as_str).unwrap_or_default();
                        let url = self.v1(&format!(
                            "/oauth2PermissionGrants?$filter={}",
                            enc(&format!("clientId eq '{sp_id}'"))
                        ));
                        match self.send(Op::ReadGrants, Method::GET, &url, None).await? {
                            Answer::Ok(v) => Consent::Grants {
                                graph_sp_id: graph_sp_id.clone(),
                                grants: v
                                    .and_then(|v| v.get("value").and_then(Value::as_array).cloned())
                                    .unwrap_or_default(),
                            },
                            Answer::Status(s, _, _) if s == StatusCode::FORBIDDEN => {
                                Consent::NotChecked
                            }
                            Answer::Status(s, h, t) => {
                                return Err(self.error(Op::ReadGrants, s, &h, &t));
                            }
                        }
                    }
                    Answer::Ok(None) => Consent::NotChecked,
                    Answer::Status(s, _, _) if s == StatusCode::NOT_FOUND => {
                        Consent::NoServicePrincipal
                    }
                    Answer::Status(s, _, _) if s == StatusCode::FORBIDDEN => Consent::NotChecked,
                    Answer::Status(s, h, t) => return Err(self.error(Op::ReadAppSp, s, &h, &t)),
                }
            }
        };

        let policies = self
            .read_policies(
                &object_id,
                desired.access_token_lifetime.is_some(),
                after_write,
            )
            .await?;
        Ok(Snapshot {
            app,
            scope_ids,
            scope_names,
            scopes_from_graph,
            consent,
            policies,
        })
    }

    async fn write(&self, snap: &Snapshot, plan: &Plan) -> Result<Vec<String>, ProviderError> {
        let mut actions = Vec::new();
        let object_id = snap.object_id().to_string();
        let mut patch = serde_json::Map::new();
        if let Some(m) = &plan.required_resource_access {
            patch.insert("requiredResourceAccess".into(), m.value.clone());
        }
        if plan.disable_public_client {
            patch.insert("isFallbackPublicClient".into(), json!(false));
        }
        if !patch.is_empty() {
            let url = self.v1(&format!("/applications/{object_id}"));
            self.call(
                Op::PatchApp,
                Method::PATCH,
                &url,
                Some(&Value::Object(patch)),
            )
            .await?;
            if let Some(m) = &plan.required_resource_access {
                actions.push(format!(
                    "added Microsoft Graph delegated permission{} {} to app {}",
                    if m.added.len() == 1 { "" } else { "s" },
                    m.added.join(", "),
                    self.app_id
                ));
            }
            if plan.disable_public_client {
                actions.push(format!(
                    "turned off \"allow public client flows\" (isFallbackPublicClient) of app {}",
                    self.app_id
                ));
            }
        }
        match &plan.policy {
            PolicyPlan::Keep => {}
            PolicyPlan::Update { id, lifetime, .. } => {
                let url = self.v1(&format!("/policies/tokenLifetimePolicies/{id}"));
                let body = json!({"definition": [policy_definition(*lifetime)]});
                self.call(Op::PatchPolicy, Method::PATCH, &url, Some(&body))
                    .await?;
                actions.push(format!(
                    "set AccessTokenLifetime of token lifetime policy {:?} to {}",
                    policy_name(&self.app_id),
                    format_timespan(*lifetime)
                ));
            }
            PolicyPlan::Create { lifetime } => {
                let name = policy_name(&self.app_id);
                // Reuse an operator policy left unassigned by an interrupted run.
                let list_url = self.v1("/policies/tokenLifetimePolicies");
                let existing = self
                    .call(Op::ListPolicies, Method::GET, &list_url, None)
                    .await?
                    .and_then(|v| v.get("value").and_then(Value::as_array).cloned())
                    .unwrap_or_default()
                    .into_iter()
                    .find(|p| p.get("displayName").and_then(Value::as_str) == Some(name.as_str()));
                let id = match existing {
                    Some(p) => {
                        let id = p
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        if policy_access_token_lifetime(&p) != Some(*lifetime) {
                            let url = self.v1(&format!("/policies/tokenLifetimePolicies/{id}"));
                            let body = json!({"definition": [policy_definition(*lifetime)]});
                            self.call(Op::PatchPolicy, Method::PATCH, &url, Some(&body))
                                .await?;
                        }
                        id
                    }
                    None => {
                        let body = json!({
                            "definition": [policy_definition(*lifetime)],
                            "displayName": name,
                            "isOrganizationDefault": false,
                        });
                        let created = self
                            .call(Op::CreatePolicy, Method::POST, &list_url, Some(&body))
                            .await?;
                        created
                            .as_ref()
                            .and_then(|v| v.get("id").and_then(Value::as_str))
                            .map(str::to_string)
                            .ok_or_else(|| ProviderError::Protocol {
                                provider: KIND,
                                operation: Op::CreatePolicy.what().into(),
                                detail: "the answer has no policy id".into(),
                            })?
                    }
                };
                let url = self.v1(&format!(
                    "/applications/{object_id}/tokenLifetimePolicies/$ref"
                ));
                let body =
                    json!({"@odata.id": self.v1(&format!("/policies/tokenLifetimePolicies/{id}"))});
                // A policy created a moment ago may not be visible yet (Graph replication).
                let mut attempt = 0;
                loop {
                    match self
                        .send(Op::AssignPolicy, Method::POST, &url, Some(&body))
                        .await?
                    {
                        Answer::Ok(_) => break,
                        Answer::Status(s, _, _)
                            if s == StatusCode::NOT_FOUND && attempt < CONSISTENCY_RETRIES =>
                        {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt)))
                                .await;
                        }
                        Answer::Status(s, h, t) => {
                            return Err(self.error(Op::AssignPolicy, s, &h, &t));
                        }
                    }
                }
                actions.push(format!(
                    "assigned token lifetime policy {name:?} (AccessTokenLifetime {}) to app {}",
                    format_timespan(*lifetime),
                    self.app_id
                ));
            }
        }
        Ok(actions)
    }
}

#[async_trait]
impl IdentityProvider for EntraId {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    fn check(&self, desired: &DesiredSettings) -> Result<(), ProviderError> {
        let mut fields = Vec::new();
        if desired.lifetime.is_some() {
            fields.push("lifetime");
        }
        if desired.idle_timeout.is_some() {
            fields.push("idleTimeout");
        }
        if desired.rotation.is_some() {
            fields.push("rotation");
        }
        if !fields.is_empty() {
            return Err(ProviderError::Unsupported {
                provider: KIND,
                detail: format!(
                    "spec.refreshTokens.{} cannot be set: {UNSUPPORTED_REFRESH_SETTINGS}",
                    fields.join(", spec.refreshTokens.")
                ),
            });
        }
        if let Some(d) = desired.access_token_lifetime
            && !(ACCESS_TOKEN_MIN..=ACCESS_TOKEN_MAX).contains(&d)
        {
            return Err(ProviderError::Unsupported {
                provider: KIND,
                detail: format!(
                    "spec.refreshTokens.accessTokenLifetime {} is out of range: Entra ID token lifetime policies accept 10m to 24h",
                    crate::duration::format(d)
                ),
            });
        }
        Ok(())
    }

    async fn observe(&self, desired: &DesiredSettings) -> Result<Observation, ProviderError> {
        self.check(desired)?;
        let snap = self.read(desired, false).await?;
        let todo = plan(desired, &snap, &self.app_id)?;
        Ok(observation(
            desired,
            &snap,
            &todo,
            &self.app_id,
            jiff::Timestamp::now(),
        ))
    }

    async fn apply(&self, desired: &DesiredSettings) -> Result<Applied, ProviderError> {
        self.check(desired)?;
        let snap = self.read(desired, false).await?;
        let todo = plan(desired, &snap, &self.app_id)?;
        if todo.is_empty() {
            return Ok(Applied {
                observation: observation(
                    desired,
                    &snap,
                    &todo,
                    &self.app_id,
                    jiff::Timestamp::now(),
                ),
                actions: Vec::new(),
            });
        }
        let actions = self.write(&snap, &todo).await?;
        let after = self.read(desired, true).await?;
        let left = plan(desired, &after, &self.app_id)?;
        if !left.is_empty() {
            let list: Vec<String> = changes(&left, &after)
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(ProviderError::NotPersisted {
                provider: KIND,
                detail: format!("these settings still differ: {}", list.join("; ")),
            });
        }
        Ok(Applied {
            observation: observation(desired, &after, &left, &self.app_id, jiff::Timestamp::now()),
            actions,
        })
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

    #[test]
    fn graph_errors_show_their_code() {
        let body = r#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation.","innerError":{"date":"2026-01-01T00:00:00","request-id":"x"}}}"#;
        assert_eq!(
            graph_message(body),
            "Authorization_RequestDenied: Insufficient privileges to complete the operation."
        );
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1\r\nCorrelation ID: 2\r\nTimestamp: 3","error_codes":[7000215]}"#;
        assert_eq!(
            graph_message(body),
            "invalid_client: AADSTS7000215: Invalid client secret provided."
        );
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Trace ID: 1 Correlation ID: 2"}"#;
        assert_eq!(
            graph_message(body),
            "invalid_client: AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(
            graph_message("upstream connect error"),
            "upstream connect error"
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
        assert_eq!(
            c,
            vec![Change {
                setting: "accessTokenLifetime (token lifetime policy)".into(),
                from: "2h".into(),
                to: "1h".into()
            }]
        );
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
        assert_eq!(
            changes(&p, &s),
            vec![Change {
                setting: "requiredResourceAccess (Microsoft Graph delegated permissions)".into(),
                from: "openid, User.Read".into(),
                to: "email, offline_access, openid, profile, User.Read".into(),
            }]
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
    fn guids_and_urls() {
        assert!(is_guid(APP));
        assert!(!is_guid("coder"));
        assert_eq!(
            normalize_url("x", "https://login.microsoftonline.com/").unwrap(),
            "https://login.microsoftonline.com"
        );
        assert!(normalize_url("x", "login.microsoftonline.com").is_err());
        assert_eq!(enc("clientId eq 'a'"), "clientId%20eq%20%27a%27");
    }
}
