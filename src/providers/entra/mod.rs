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
//! Application permissions the management app needs (admin-consented), as Graph's reference
//! pages list them (`docs/fidelity/entra.md`, rows 8–14):
//! - `Application.ReadWrite.All`, or `Application.ReadWrite.OwnedBy` as an owner of Coder's app
//!   (it reads every app and service principal of the tenant, but writes only the apps it owns);
//!   `Application.Read.All` is enough for `managementPolicy: Observe` without
//!   `accessTokenLifetime`;
//! - with `accessTokenLifetime`: reading and assigning the app's token lifetime policy needs an
//!   Application *write* permission (above; `Application.Read.All` is not enough, even to read)
//!   and `Policy.Read.All` or `Policy.ReadWrite.ApplicationConfiguration`; creating or updating
//!   the policy needs `Policy.ReadWrite.ApplicationConfiguration`; the tenant needs Entra ID P1;
//! - optionally `DelegatedPermissionGrant.Read.All`, so the operator can report missing admin
//!   consent.
//!
//! # What is configured
//! Coder's app registration is read through its alternate key
//! `GET /v1.0/applications(appId='…')` (never created or deleted), without `$select`: Graph then
//! returns `keyCredentials` without their `key`, enough for expiry dates, and that read is not
//! subject to Graph's 150-per-minute limit on `$select=keyCredentials`. Updates are
//! `PATCH /v1.0/applications/{id}` with only the properties that change; Graph replaces
//! collections as a whole, so `requiredResourceAccess` is sent complete, with every other resource
//! and permission exactly as read.
//!
//! | policy (`spec.refreshTokens`) | Entra ID / Graph |
//! |---|---|
//! | always | `requiredResourceAccess` holds Microsoft Graph's delegated `openid`, `profile`, `email`; `isFallbackPublicClient` is not `true` (Coder is a confidential client) |
//! | `offlineAccess: true` | also delegated `offline_access`; Coder requests scope `offline_access` |
//! | `accessTokenLifetime` | a token lifetime policy named `oidc-refresh-operator <appId>` with `AccessTokenLifetime` (`1.00:00:00` at the one-day maximum), assigned to the app (updated in place, never duplicated). It sets the lifetime of ID tokens issued to Coder and of access tokens *for Coder's own API*, not of the Microsoft Graph access token Coder refreshes with OIDC scopes only; a non-blocking finding (`AccessTokenLifetimeNotForGraph`) says so and `status.identityProvider.accessTokenLifetime` stays empty (see [`access_token_lifetime_finding`]) |
//! | `lifetime`, `idleTimeout`, `rotation` | [`ProviderError::Unsupported`]: Entra ID fixed refresh-token lifetimes in January 2021 |
//!
//! Permission ids are looked up from Microsoft Graph's service principal
//! (`oauth2PermissionScopes`), with the well-known ids as fallback when that read is refused.
//!
//! # Graph's collections and eventual consistency
//! Every list follows `@odata.nextLink` (which must stay on the Graph endpoint), at most
//! [`MAX_PAGES`] pages, beyond which the answer is a [`ProviderError::Protocol`]. Grants are asked
//! for with `$filter=clientId eq '…' and consentType eq 'AllPrincipals'` (per-user consents can be
//! many); the operator's policy is looked up with `$filter=displayName eq '…'`.
//!
//! Graph may answer a read right after a write with the object as it was before. After its
//! writes, `apply` reads back up to [`READ_BACK_ATTEMPTS`] times, [`READ_BACK_WAIT`] apart; if Graph
//! still shows the old state, the accepted writes count as done for this pass (their actions are
//! kept, the read-back's pending changes too, so the next pass reads and verifies again). A 404
//! right after a write is retried. A `$ref` POST that Graph answers with 400 "already exist"
//! (an assignment a stale read did not show) counts as done; the id of a policy the operator
//! created is remembered for a while ([`ProviderDeps::facts`]) so that a pass whose list does not
//! show it yet assigns it instead of creating another.
//!
//! # Reported, never changed
//! Coder's callback under `spa.redirectUris` (refresh tokens then live 24 h), client secrets and
//! sign-in certificates (`keyCredentials` with usage `Verify`, for Coder's
//! `CODER_OIDC_CLIENT_KEY_FILE`/`CODER_OIDC_CLIENT_CERT_FILE`) that expire within 30 days or have
//! all expired (blocking only when neither kind has a valid credential left), missing tenant-wide
//! admin consent for the delegated permissions (when the management app may read
//! `oauth2PermissionGrants`), and (blocking, reason `ManagedByBicep`) an app registration with
//! `uniqueName` set, i.e. managed by a Bicep template, when the operator would change its
//! properties: the finding lists what to declare in the template instead (see [`bicep_finding`]).
//! An app an Azure Service Operator `Application` resource manages (looked up by the reconciler
//! when that CRD is served) is not changed when that resource's spec sets
//! `isFallbackPublicClient: true`, the one property both write: the plan then carries the
//! blocking finding `ManagedByAzureServiceOperator` naming the resource and the field to set in
//! it (see [`aso_finding`]). ASO's `Application` has no `requiredResourceAccess` and never sends
//! one, so the permissions the operator adds do not conflict with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::http::{self, BearerAnswer as Answer};
use super::other_tools::ToolQuery;
use super::{
    Applied, Credentials, DesiredSettings, Finding, IdentityProvider, IdpPlan, ProviderDeps,
    ProviderError, ProviderKind, Snapshot as AnySnapshot, missing_credentials,
};
use crate::crd::EntraIdSpec;

mod errors;
mod model;
mod other_tools;

use model::OTHER_KNOWN_SCOPES;

pub use errors::graph_message;
pub use model::{
    CALLBACK_PATH, Consent, GRAPH_APP_ID, POLICY_SETTING, POLICY_WHY, Plan, PolicyPlan,
    REFRESH_TOKEN_INACTIVITY, RraMerge, SECRET_WARNING_DAYS, SPA_REFRESH_TOKEN_LIFETIME, Snapshot,
    WELL_KNOWN_SCOPES, access_token_lifetime_finding, bicep_finding, bicep_unique_name, changes,
    findings, format_timespan, graph_scope_names, merge_required_resource_access, missing_consent,
    observation, parse_timespan, plan, policy_access_token_lifetime, policy_definition,
    policy_name, wanted_scopes,
};
pub use other_tools::{ASO_APPLICATION, ASO_RESOURCE_ID_ANNOTATION, aso_finding};

const KIND: ProviderKind = ProviderKind::EntraId;

/// Default token authority (public cloud).
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Default Microsoft Graph endpoint (public cloud).
pub const DEFAULT_GRAPH: &str = "https://graph.microsoft.com";
/// Bounds of `AccessTokenLifetime` in a token lifetime policy.
pub const ACCESS_TOKEN_MIN: Duration = Duration::from_secs(600);
/// Upper bound of `AccessTokenLifetime`.
pub const ACCESS_TOKEN_MAX: Duration = Duration::from_secs(86_400);
/// Reads retried after a write that answer 404 (Graph replication).
const CONSISTENCY_RETRIES: u32 = 5;
/// Most pages of one collection the provider follows through `@odata.nextLink` (Graph's pages
/// hold 100 directory objects by default, so 50 pages are far more than any list the provider
/// reads should have).
pub const MAX_PAGES: usize = 50;
/// Read-backs after a write (Graph is eventually consistent: a read right after a write may
/// answer 200 with the object as it was before). Graph offers no header asking for a consistent
/// read of a directory object (`ConsistencyLevel: eventual` only unlocks advanced queries), so
/// the provider reads again, at most this many times, [`READ_BACK_WAIT`] apart.
pub const READ_BACK_ATTEMPTS: u32 = 5;
/// Wait between two read-backs.
pub const READ_BACK_WAIT: Duration = Duration::from_millis(200);
/// How long the id of a token lifetime policy the operator created is remembered (through
/// [`ProviderDeps::facts`]), so that a later pass whose list of policies does not show it yet
/// (replication) assigns it instead of creating a second one.
const CREATED_POLICY_TTL: Duration = Duration::from_secs(600);

/// Message for the refresh-token settings Entra ID cannot honour.
pub const UNSUPPORTED_REFRESH_SETTINGS: &str = "Microsoft Entra ID uses a fixed 90-day inactivity window for refresh tokens (24 h, not extended by use, for tokens issued to SPA redirect URIs); refresh-token lifetimes are not configurable since January 2021 (token lifetime policies ignore MaxInactiveTime and MaxAge*). Remove lifetime, idleTimeout and rotation from spec.refreshTokens and use Conditional Access sign-in frequency to force users to sign in again";

/// The objects a policy makes the operator write (see [`super::targets`]): the app registration
/// (its token lifetime policy is the operator's own, assigned to that application only).
pub fn targets(spec: &EntraIdSpec) -> Vec<String> {
    let graph = spec.graph_endpoint.as_deref().unwrap_or(DEFAULT_GRAPH);
    vec![super::target_key(
        KIND,
        graph,
        [
            "tenants",
            spec.tenant_id.trim().to_ascii_lowercase().as_str(),
            "applications",
            spec.application_id.trim().to_ascii_lowercase().as_str(),
        ],
    )]
}

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
    let client = deps.http.client_for(KIND, &credentials)?;
    let token_key = format!(
        "entra|{authority}|{graph}|{}|{}|{}|{}",
        spec.tenant_id.to_ascii_lowercase(),
        credentials.secret_name,
        credentials.version,
        http::credentials_fingerprint(&[&client_id, &client_secret])
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

    /// The Microsoft Graph application permissions the call needs, as each call's reference
    /// page lists them (see `docs/fidelity/entra.md`, rows 8–14).
    fn permission(self) -> &'static str {
        match self {
            Op::ReadApp => {
                "one of the Microsoft Graph application permissions Application.Read.All, Application.ReadWrite.OwnedBy (which reads every app registration) or Application.ReadWrite.All"
            }
            Op::PatchApp => {
                "the Microsoft Graph application permission Application.ReadWrite.All (or Application.ReadWrite.OwnedBy as an owner of the app)"
            }
            Op::ReadGraphSp | Op::ReadAppSp => {
                "one of the Microsoft Graph application permissions Application.Read.All, Application.ReadWrite.OwnedBy or Application.ReadWrite.All"
            }
            Op::ReadGrants => {
                "the Microsoft Graph application permission DelegatedPermissionGrant.Read.All"
            }
            Op::ReadAppPolicies | Op::AssignPolicy => {
                "both Microsoft Graph application permissions Application.ReadWrite.All (or Application.ReadWrite.OwnedBy as an owner of the app; Application.Read.All is not enough) and Policy.Read.All or Policy.ReadWrite.ApplicationConfiguration"
            }
            Op::ListPolicies => {
                "the Microsoft Graph application permission Policy.ReadWrite.ApplicationConfiguration (Policy.Read.All or Policy.Read.ApplicationConfiguration only read policies)"
            }
            Op::CreatePolicy | Op::PatchPolicy => {
                "the Microsoft Graph application permission Policy.ReadWrite.ApplicationConfiguration"
            }
        }
    }

    /// What else the operation needs.
    fn note(self) -> &'static str {
        match self {
            Op::ReadAppPolicies
            | Op::ListPolicies
            | Op::CreatePolicy
            | Op::PatchPolicy
            | Op::AssignPolicy => {
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

/// Microsoft Graph's permission catalogue as the provider uses it.
#[derive(Clone, Debug)]
struct GraphCatalogue {
    /// Object id of Microsoft Graph's service principal in the tenant.
    graph_sp_id: Option<String>,
    /// Ids of the well-known delegated scopes, by name, as the tenant's catalogue lists them.
    scope_ids: BTreeMap<String, String>,
    /// Scope names by lower-case id (catalogue and built-in).
    scope_names: BTreeMap<String, String>,
}

/// The app's service principal.
enum AppSp {
    Id(String),
    /// The app has no service principal (enterprise application) in the tenant.
    Missing,
    /// Not readable by the management app.
    Unreadable,
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
        Err(self.token_error(status, &headers, &body))
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
        let call = http::BearerCall {
            metric: op.metric(),
            what: op.what(),
            method,
            url,
            body,
        };
        let token = |force| self.token(force);
        http::bearer_call(&self.deps, &self.http, KIND, &self.token_key, token, call).await
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

    /// Every item of a collection: the first page at `url`, then every `@odata.nextLink`
    /// (absolute and opaque; it must stay on the Graph endpoint, which gets the token), at most
    /// [`MAX_PAGES`] pages. A status other than success on any page is returned for the caller
    /// to map.
    async fn list(&self, op: Op, url: &str) -> Result<Result<Vec<Value>, Answer>, ProviderError> {
        let mut items = Vec::new();
        let mut next = url.to_string();
        for _ in 0..MAX_PAGES {
            let page = match self.send(op, Method::GET, &next, None).await? {
                Answer::Ok(v) => v.unwrap_or(Value::Null),
                status => return Ok(Err(status)),
            };
            let Some(value) = page.get("value").and_then(Value::as_array) else {
                return Err(ProviderError::Protocol {
                    provider: KIND,
                    operation: op.what().into(),
                    detail: "the answer is not a collection (no \"value\" array)".into(),
                });
            };
            items.extend(value.iter().cloned());
            match page.get("@odata.nextLink").and_then(Value::as_str) {
                None => return Ok(Ok(items)),
                Some(link) if link.starts_with(&format!("{}/", self.graph)) => {
                    next = link.to_string();
                }
                Some(link) => {
                    return Err(ProviderError::Protocol {
                        provider: KIND,
                        operation: op.what().into(),
                        detail: format!(
                            "the next page is not on {} (@odata.nextLink {})",
                            self.graph,
                            http::truncate(link, 200)
                        ),
                    });
                }
            }
        }
        Err(ProviderError::Protocol {
            provider: KIND,
            operation: op.what().into(),
            detail: format!(
                "the collection has more than {MAX_PAGES} pages (@odata.nextLink kept coming); the operator stops there"
            ),
        })
    }

    /// Coder's app registration. Read without `$select`: Graph then returns `keyCredentials`
    /// without their `key` (enough for expiry dates), and that read is not subject to the
    /// 150-per-minute-per-tenant limit of `$select=keyCredentials` (ledger row 17). A 429 with
    /// `Retry-After` becomes [`ProviderError::Throttled`].
    async fn read_app(&self, after_write: bool) -> Result<Value, ProviderError> {
        let url = self.v1(&format!("/applications(appId='{}')", self.app_id));
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
        // Only `accessTokenLifetime` needs them (the lifetime they set is not reported: see
        // `access_token_lifetime_finding`).
        if !needed {
            return Ok(None);
        }
        let url = self.v1(&format!("/applications/{object_id}/tokenLifetimePolicies"));
        let mut attempt = 0;
        loop {
            match self.list(Op::ReadAppPolicies, &url).await? {
                Ok(items) => return Ok(Some(items)),
                Err(Answer::Status(s, _, _))
                    if s == StatusCode::NOT_FOUND
                        && after_write
                        && attempt < CONSISTENCY_RETRIES =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(Answer::Status(s, h, t)) => {
                    return Err(self.error(Op::ReadAppPolicies, s, &h, &t));
                }
                Err(Answer::Ok(_)) => return Ok(Some(Vec::new())),
            }
        }
    }

    /// Tenant-wide (`AllPrincipals`) delegated permission grants of the app's service principal,
    /// every page (apps with many per-user consents have many grants; only tenant-wide ones are
    /// asked for). `None` when the management app may not read grants.
    async fn read_grants(&self, sp_id: &str) -> Result<Option<Vec<Value>>, ProviderError> {
        let url = self.v1(&format!(
            "/oauth2PermissionGrants?$filter={}",
            enc(&format!(
                "clientId eq '{sp_id}' and consentType eq 'AllPrincipals'"
            ))
        ));
        match self.list(Op::ReadGrants, &url).await? {
            Ok(items) => Ok(Some(items)),
            Err(Answer::Status(s, _, _)) if s == StatusCode::FORBIDDEN => Ok(None),
            Err(Answer::Status(s, h, t)) => Err(self.error(Op::ReadGrants, s, &h, &t)),
            Err(Answer::Ok(_)) => Ok(Some(Vec::new())),
        }
    }

    /// Token lifetime policies named `name` (the operator's own), every page.
    async fn policies_named(&self, name: &str) -> Result<Vec<Value>, ProviderError> {
        let url = self.v1(&format!(
            "/policies/tokenLifetimePolicies?$filter={}",
            enc(&format!("displayName eq '{}'", name.replace('\'', "''")))
        ));
        match self.list(Op::ListPolicies, &url).await? {
            Ok(items) => Ok(items
                .into_iter()
                .filter(|p| p.get("displayName").and_then(Value::as_str) == Some(name))
                .collect()),
            Err(Answer::Status(s, h, t)) => Err(self.error(Op::ListPolicies, s, &h, &t)),
            Err(Answer::Ok(_)) => Ok(Vec::new()),
        }
    }

    /// Microsoft Graph's permission catalogue (the same for every app of the tenant), shared
    /// for [`http::FACT_TTL`]; the built-in ids when it cannot be read.
    async fn graph_catalogue(&self) -> Result<GraphCatalogue, ProviderError> {
        let key = format!("entra-graph-catalogue|{}|{}", self.graph, self.tenant);
        if let Some(c) = self.deps.facts.get::<GraphCatalogue>(&key) {
            return Ok(c);
        }
        let mut catalogue = GraphCatalogue {
            graph_sp_id: None,
            scope_ids: BTreeMap::new(),
            scope_names: WELL_KNOWN_SCOPES
                .iter()
                .chain(OTHER_KNOWN_SCOPES.iter())
                .map(|(n, id)| (id.to_string(), n.to_string()))
                .collect(),
        };
        let url = self.v1(&format!(
            "/servicePrincipals(appId='{GRAPH_APP_ID}')?$select={}",
            enc("id,appId,oauth2PermissionScopes")
        ));
        match self.send(Op::ReadGraphSp, Method::GET, &url, None).await? {
            Answer::Ok(Some(sp)) => {
                catalogue.graph_sp_id = sp.get("id").and_then(Value::as_str).map(str::to_string);
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
                        catalogue
                            .scope_names
                            .insert(id.to_ascii_lowercase(), v.to_string());
                        if WELL_KNOWN_SCOPES.iter().any(|(n, _)| *n == v) {
                            catalogue.scope_ids.insert(v.to_string(), id.to_string());
                        }
                    }
                }
                if catalogue.graph_sp_id.is_some() {
                    self.deps.facts.put(&key, catalogue.clone(), http::FACT_TTL);
                }
            }
            Answer::Ok(None) => {}
            Answer::Status(s, _, _) if s == StatusCode::FORBIDDEN || s == StatusCode::NOT_FOUND => {
            }
            Answer::Status(s, h, t) => return Err(self.error(Op::ReadGraphSp, s, &h, &t)),
        }
        Ok(catalogue)
    }

    /// The object id of the app's service principal (stable for the life of the enterprise
    /// application), shared for [`http::FACT_TTL`] once found.
    /// With `fresh`, the remembered id is checked against Graph.
    async fn app_service_principal(&self, fresh: bool) -> Result<AppSp, ProviderError> {
        let key = format!(
            "entra-app-sp|{}|{}|{}",
            self.graph, self.tenant, self.app_id
        );
        if fresh {
            self.deps.facts.invalidate(&key);
        } else if let Some(id) = self.deps.facts.get::<String>(&key) {
            return Ok(AppSp::Id(id));
        }
        let url = self.v1(&format!(
            "/servicePrincipals(appId='{}')?$select={}",
            self.app_id,
            enc("id,appId")
        ));
        Ok(
            match self.send(Op::ReadAppSp, Method::GET, &url, None).await? {
                Answer::Ok(Some(sp)) => match sp.get("id").and_then(Value::as_str) {
                    Some(id) if !id.is_empty() => {
                        self.deps.facts.put(&key, id.to_string(), http::FACT_TTL);
                        AppSp::Id(id.to_string())
                    }
                    _ => AppSp::Unreadable,
                },
                Answer::Ok(None) => AppSp::Unreadable,
                Answer::Status(s, _, _) if s == StatusCode::NOT_FOUND => AppSp::Missing,
                Answer::Status(s, _, _) if s == StatusCode::FORBIDDEN => AppSp::Unreadable,
                Answer::Status(s, h, t) => return Err(self.error(Op::ReadAppSp, s, &h, &t)),
            },
        )
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

        let catalogue = self.graph_catalogue().await?;
        let scopes_from_graph = !catalogue.scope_ids.is_empty();

        // Admin consent, when readable.
        let consent = match &catalogue.graph_sp_id {
            None => Consent::NotChecked,
            Some(graph_sp_id) => match self.app_service_principal(false).await? {
                AppSp::Id(sp_id) => match self.read_grants(&sp_id).await? {
                    // No grants for a remembered service principal: make sure it still exists
                    // before reporting missing consent.
                    Some(grants)
                        if grants.is_empty()
                            && !matches!(
                                self.app_service_principal(true).await?,
                                AppSp::Id(ref id) if *id == sp_id
                            ) =>
                    {
                        Consent::NoServicePrincipal
                    }
                    Some(grants) => Consent::Grants {
                        graph_sp_id: graph_sp_id.clone(),
                        grants,
                    },
                    None => Consent::NotChecked,
                },
                AppSp::Missing => Consent::NoServicePrincipal,
                AppSp::Unreadable => Consent::NotChecked,
            },
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
            scope_ids: catalogue.scope_ids,
            scope_names: catalogue.scope_names,
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
                let remembered_key = format!(
                    "entra-created-policy|{}|{}|{}",
                    self.graph, self.tenant, self.app_id
                );
                // Reuse an operator policy left unassigned by an interrupted run (found by its
                // display name, every page), or the one this operator created a moment ago that
                // Graph does not list yet: never a second one.
                let existing = self.policies_named(&name).await?.into_iter().next();
                let source = match (
                    &existing,
                    self.deps.facts.get::<(String, Duration)>(&remembered_key),
                ) {
                    (Some(_), _) => PolicySource::Listed,
                    (None, Some(_)) => PolicySource::Remembered,
                    (None, None) => PolicySource::Created,
                };
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
                    None => match self.deps.facts.get::<(String, Duration)>(&remembered_key) {
                        Some((id, written)) => {
                            if written != *lifetime {
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
                            let list_url = self.v1("/policies/tokenLifetimePolicies");
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
                    },
                };
                self.deps
                    .facts
                    .put(&remembered_key, (id.clone(), *lifetime), CREATED_POLICY_TTL);
                let url = self.v1(&format!(
                    "/applications/{object_id}/tokenLifetimePolicies/$ref"
                ));
                let body =
                    json!({"@odata.id": self.v1(&format!("/policies/tokenLifetimePolicies/{id}"))});
                // A policy created a moment ago may not be visible yet (Graph replication): a 404
                // is retried. A 400 saying the reference already exists means an earlier pass
                // assigned it and the read did not show it yet: done.
                let mut attempt = 0;
                loop {
                    match self
                        .send(Op::AssignPolicy, Method::POST, &url, Some(&body))
                        .await?
                    {
                        Answer::Ok(_) => break,
                        Answer::Status(s, _, t)
                            if s == StatusCode::BAD_REQUEST && already_assigned(&t) =>
                        {
                            break;
                        }
                        Answer::Status(s, _, _)
                            if s == StatusCode::NOT_FOUND && attempt < CONSISTENCY_RETRIES =>
                        {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt)))
                                .await;
                        }
                        Answer::Status(s, _, t) if s == StatusCode::NOT_FOUND => {
                            // A policy remembered from an earlier pass that is still not found
                            // may have been deleted: forget it, so that the next pass creates
                            // one. One created in this pass is kept (replication).
                            if source == PolicySource::Remembered {
                                self.deps.facts.invalidate(&remembered_key);
                            }
                            return Err(ProviderError::NotPersisted {
                                provider: KIND,
                                detail: format!(
                                    "token lifetime policy {id} could not be assigned to app {} yet: Microsoft Graph does not find it ({}); the next pass assigns it",
                                    self.app_id,
                                    graph_message(&t)
                                ),
                            });
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

    async fn observe(&self, desired: &DesiredSettings) -> Result<AnySnapshot, ProviderError> {
        self.check(desired)?;
        Ok(AnySnapshot::new(KIND, self.read(desired, false).await?))
    }

    fn plan(
        &self,
        snapshot: &AnySnapshot,
        desired: &DesiredSettings,
    ) -> Result<IdpPlan, ProviderError> {
        self.check(desired)?;
        let snap: &Snapshot = snapshot.get()?;
        let todo = plan(desired, snap, &self.app_id)?;
        let seen = observation(desired, snap, &todo, &self.app_id, snapshot.time());
        let writes = Writes {
            snap: snap.clone(),
            plan: todo,
        };
        Ok(IdpPlan::new(KIND, desired, seen, writes))
    }

    fn other_tools(&self) -> Vec<ToolQuery> {
        vec![other_tools::query()]
    }

    fn managed_by_other_tools(
        &self,
        plan: &IdpPlan,
        query: &ToolQuery,
        found: &[Value],
    ) -> Vec<Finding> {
        super::other_tools::judge(plan, query, ASO_APPLICATION, |w: &Writes| {
            aso_finding(&w.plan, &w.snap, &self.app_id, found)
        })
    }

    async fn apply(&self, todo: &IdpPlan) -> Result<Applied, ProviderError> {
        if todo.is_empty() {
            return Ok(Applied::unchanged(todo));
        }
        let Writes { snap, plan: p } = todo.writes()?;
        let desired = todo.desired();
        let actions = self.write(snap, p).await?;
        // Graph answered every write with a success. Its reads are eventually consistent: one
        // right after a write may answer 200 with the object as it was before. Read back up to
        // READ_BACK_ATTEMPTS times, READ_BACK_WAIT apart (about a second in all). If Graph still
        // shows the old state, the writes count as done for this pass (Graph accepted them; a
        // write Graph refuses fails above): the result keeps the read-back's pending changes, so
        // the controller does not remember it as verified and the next pass reads and checks
        // again, and the actions (the Event) are kept. `NotPersisted` is not used here: it would
        // drop the Event and retry writes Graph has already accepted.
        let mut attempt = 1;
        loop {
            let after = AnySnapshot::new(KIND, self.read(desired, true).await?);
            let left = self.plan(&after, desired)?;
            if left.is_empty() || attempt >= READ_BACK_ATTEMPTS {
                if !left.is_empty() {
                    tracing::info!(
                        app_id = %self.app_id,
                        reads = attempt,
                        "Microsoft Graph accepted the writes but still reads back the earlier state (replication); the next pass verifies"
                    );
                }
                return Ok(Applied {
                    observation: left.observation,
                    actions,
                });
            }
            attempt += 1;
            tokio::time::sleep(READ_BACK_WAIT).await;
        }
    }
}

/// Where the policy an assignment names comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PolicySource {
    /// Graph lists it by its display name.
    Listed,
    /// Created by an earlier pass, not listed yet.
    Remembered,
    /// Created by this pass.
    Created,
}

/// Whether a 400 answer to `POST …/tokenLifetimePolicies/$ref` says the reference exists
/// already (Graph: "One or more added object references already exist for the following
/// modified properties: 'tokenLifetimePolicies'.").
fn already_assigned(body: &str) -> bool {
    let msg = graph_message(body).to_ascii_lowercase();
    msg.contains("already exist")
}

/// The writes of an Entra ID plan, with the snapshot they were planned from.
struct Writes {
    snap: Snapshot,
    plan: Plan,
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "3d7f2b9a-6c41-4e85-a0d2-9b1c7e5f4a68";

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

    #[test]
    fn a_duplicate_reference_is_recognised_but_a_second_policy_is_not() {
        assert!(already_assigned(
            r#"{"error":{"code":"Request_BadRequest","message":"One or more added object references already exist for the following modified properties: 'tokenLifetimePolicies'."}}"#
        ));
        assert!(!already_assigned(
            r#"{"error":{"code":"Request_BadRequest","message":"An application can have only one token lifetime policy; policy 'x' is already assigned."}}"#
        ));
    }
}
