//! A stateful simulator of the parts of Microsoft Graph v1.0 and the Microsoft Entra ID token
//! service that the oidc-refresh-operator uses, for tests and the `sandbox` command. Both are
//! served on one port, over http or (with [`SimConfig::tls`]) https: `POST
//! /{tenant}/oauth2/v2.0/token`, `GET /{tenant}/v2.0/.well-known/openid-configuration`, `GET
//! /common/discovery/instance` and `/v1.0/...`.
//!
//! It models Graph adversarially, as documented by Microsoft (see `docs/fidelity/entra.md` for
//! every known difference):
//! - tenants, each with app registrations (kept as JSON objects, so every property round-trips),
//!   service principals (one per app, plus Microsoft Graph's with its `oauth2PermissionScopes`),
//!   delegated permission grants (`oauth2PermissionGrants`), token lifetime policies and their
//!   assignment to applications;
//! - management apps (client id + secret) with application permissions (app roles); the
//!   client-credentials grant issues opaque expiring tokens bound to the tenant; every Graph
//!   call checks the permissions its reference page lists (403 `Authorization_RequestDenied`
//!   otherwise): `Application.ReadWrite.OwnedBy` reads every application and service principal
//!   but writes only owned applications; an application's token lifetime policies (list,
//!   assign, remove) need an Application *write* permission and `Policy.Read.All` or
//!   `Policy.ReadWrite.ApplicationConfiguration`; grants need `DelegatedPermissionGrant.*` or
//!   `Directory.*`;
//! - collections page: [`SimConfig::page_size`] items (default [`DEFAULT_PAGE_SIZE`]) unless
//!   `$top` (1–999, else 400 `Request_UnsupportedQuery`) says otherwise, with an absolute
//!   `@odata.nextLink` carrying an opaque `$skiptoken`;
//! - OData query options are validated: `$filter` only on the properties and operators Graph
//!   supports without advanced queries (400 `Request_UnsupportedQuery` otherwise), `$select`
//!   only of known properties (400 `BadRequest`), `$search` and the `$count` segment only with
//!   `ConsistencyLevel: eventual` (`$count=true` is ignored without it), no `$orderby`;
//! - `GET/PATCH /applications/{id}` and the alternate key `/applications(appId='…')`; PATCH
//!   follows Graph: a JSON `Content-Type` is required, only the properties sent change,
//!   collections are replaced as a whole, complex properties (`web`, `spa`…) are merged
//!   property by property, unknown properties answer 400 `Request_BadRequest`, types are
//!   checked against the CSDL contract, read-only properties are refused,
//!   `requiredResourceAccess` is capped at 50 resources and 400 permissions (400
//!   `Directory_QuotaExceeded`); 204 on success;
//! - `GET /servicePrincipals(appId='…')`, `/servicePrincipals/{id}`, `/servicePrincipals`,
//!   `GET /oauth2PermissionGrants?$filter=clientId eq '…' and consentType eq '…'`;
//! - `$select=keyCredentials` on applications and service principals is throttled per tenant
//!   ([`SimConfig::key_credentials_per_minute`], 150 as documented): 429 with `Retry-After`;
//! - `GET/POST /policies/tokenLifetimePolicies`, `GET/PATCH/DELETE
//!   /policies/tokenLifetimePolicies/{id}` (definitions are checked: one JSON string with
//!   `TokenLifetimePolicy.Version` 1 and an `AccessTokenLifetime` between 00:10:00 and 1.00:00:00),
//!   `GET /applications/{id}/tokenLifetimePolicies`, `POST …/tokenLifetimePolicies/$ref`, `DELETE
//!   …/tokenLifetimePolicies/{policyId}/$ref` (one policy per application);
//! - eventual consistency: with [`SimConfig::stale_reads`] (or
//!   [`SimHandle::set_stale_reads`]) the next N reads of an object after a write answer 200 with
//!   the object as it was before the write (a policy just created is absent); with
//!   [`SimConfig::replication_delay`] the first read of an application after a write, and the
//!   first assignment of a policy just created, answer 404;
//! - Graph's error shape `{"error":{"code","message","innerError":{…}}}` and the token endpoint's
//!   OAuth shape with `AADSTS` codes.
//!
//! Test hooks: injectable latency, `fail_next` (5xx, 429 with `Retry-After`) for Graph calls,
//! token expiry, request counters per (method, route template, status), a record of every
//! Graph request body with contract validation, and direct state edits.

#![recursion_limit = "256"]

pub mod query;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sim_kit::{CountRules, Harness, Listener, Observe, Recorded, Tokens, lock, percent_decode};

pub use sim_kit::{SandboxSeed, TlsIdentity};

/// `appId` of Microsoft Graph.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// Object id of Microsoft Graph's service principal in every simulated tenant.
pub const GRAPH_SP_ID: &str = "5f0e9a1c-2b3d-4c6e-8f70-91a2b3c4d5e6";

/// Microsoft Graph delegated permissions the simulator's Graph service principal publishes:
/// (value, id, type).
pub const GRAPH_SCOPES: [(&str, &str, &str); 6] = [
    ("openid", "37f7f235-527c-4136-accd-4a02d197296e", "User"),
    ("profile", "14dad69e-099b-42c9-810b-d002981feec1", "User"),
    ("email", "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0", "User"),
    (
        "offline_access",
        "7427e0e9-2fba-42fe-b0c0-848c9e6a8182",
        "User",
    ),
    ("User.Read", "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "User"),
    (
        "Directory.Read.All",
        "06da0dbc-49e2-44d2-8312-53f166ab848a",
        "Admin",
    ),
];

/// Route template of the token endpoint.
pub const TOKEN_ROUTE: &str = "/{tenant}/oauth2/v2.0/token";

/// Application permissions (app roles) the simulator checks.
pub mod permissions {
    /// Read all applications.
    pub const APPLICATION_READ_ALL: &str = "Application.Read.All";
    /// Read and write all applications.
    pub const APPLICATION_READWRITE_ALL: &str = "Application.ReadWrite.All";
    /// Read and write applications the management app owns.
    pub const APPLICATION_READWRITE_OWNEDBY: &str = "Application.ReadWrite.OwnedBy";
    /// Read the directory.
    pub const DIRECTORY_READ_ALL: &str = "Directory.Read.All";
    /// Read and write the directory.
    pub const DIRECTORY_READWRITE_ALL: &str = "Directory.ReadWrite.All";
    /// Read delegated permission grants.
    pub const DELEGATED_PERMISSION_GRANT_READ_ALL: &str = "DelegatedPermissionGrant.Read.All";
    /// Manage delegated permission grants.
    pub const DELEGATED_PERMISSION_GRANT_READWRITE_ALL: &str =
        "DelegatedPermissionGrant.ReadWrite.All";
    /// Read policies.
    pub const POLICY_READ_ALL: &str = "Policy.Read.All";
    /// Read application configuration policies.
    pub const POLICY_READ_APPLICATIONCONFIGURATION: &str = "Policy.Read.ApplicationConfiguration";
    /// Create, update and assign token lifetime policies.
    pub const POLICY_READWRITE_APPLICATIONCONFIGURATION: &str =
        "Policy.ReadWrite.ApplicationConfiguration";
}
use permissions as p;

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Listen address (default `127.0.0.1:0`).
    pub addr: SocketAddr,
    /// Delay before every answer (default none).
    pub latency: Duration,
    /// When true, the first read of an application (or its policy assignments) after a write to
    /// it, and the first assignment of a token lifetime policy just created, answer 404
    /// `Request_ResourceNotFound` (default false).
    pub replication_delay: bool,
    /// `expires_in` of issued tokens (default 3599 s).
    pub token_lifetime: Duration,
    /// Page size of collections when the client sends no `$top` (default
    /// [`DEFAULT_PAGE_SIZE`], far below Graph's 100 so that clients must follow
    /// `@odata.nextLink`).
    pub page_size: usize,
    /// After a write, the next `stale_reads` reads of the written object (an application with
    /// its policy assignments, or a token lifetime policy) answer 200 with the object as it was
    /// before the write, as Graph's eventual consistency does (default 0).
    pub stale_reads: usize,
    /// Requests selecting `keyCredentials` (applications and service principals) each tenant
    /// may make per minute before 429 (Graph documents 150).
    pub key_credentials_per_minute: usize,
    /// Serve https with this identity instead of http.
    pub tls: Option<TlsIdentity>,
}

/// Default of [`SimConfig::page_size`].
pub const DEFAULT_PAGE_SIZE: usize = 2;

/// Graph's documented limit of `$select=keyCredentials` requests per tenant and minute.
pub const KEY_CREDENTIALS_PER_MINUTE: usize = 150;

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            addr: sim_kit::LOOPBACK,
            latency: Duration::ZERO,
            replication_delay: false,
            token_lifetime: Duration::from_secs(3599),
            page_size: DEFAULT_PAGE_SIZE,
            stale_reads: 0,
            key_credentials_per_minute: KEY_CREDENTIALS_PER_MINUTE,
            tls: None,
        }
    }
}

/// Request counts by (method, route template, status), e.g.
/// `("PATCH", "/v1.0/applications/{id}", 204)`.
pub type SimCounters = sim_kit::Counters<GraphRoutes>;

/// The counting rules of Graph and the token service: token requests are [`TOKEN_ROUTE`],
/// reads are `GET` and `HEAD` (the kit's rule).
#[derive(Clone, Copy, Debug)]
pub struct GraphRoutes;

impl CountRules for GraphRoutes {
    const TOKEN_ROUTE: Option<&'static str> = Some(TOKEN_ROUTE);
}

/// One Graph request body the simulator received.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedBody {
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// Contract entity type the body must match (`application`, `tokenLifetimePolicy`), or
    /// `$ref` for an OData reference body.
    pub entity: String,
    /// The body (a JSON string holding the raw text when it was not JSON).
    pub body: Value,
}

/// Validates a body against an entity type of the contract (or `$ref`).
pub fn validate_body(entity: &str, body: &Value) -> Result<(), Vec<String>> {
    if entity == "$ref" {
        let ok = body
            .as_object()
            .is_some_and(|o| o.len() == 1 && o.get("@odata.id").and_then(Value::as_str).is_some());
        return if ok {
            Ok(())
        } else {
            Err(vec![format!(
                "a reference body must be {{\"@odata.id\": \"<url>\"}}, got {body}"
            )])
        };
    }
    schema::contract().validate_entity(entity, body)
}

#[derive(Clone, Debug)]
struct ManagementApp {
    secret: String,
    permissions: BTreeSet<String>,
}

#[derive(Clone, Debug, Default)]
struct Tenant {
    /// Applications by object id.
    apps: BTreeMap<String, Map<String, Value>>,
    /// Owners (management client ids) by application object id.
    owners: BTreeMap<String, BTreeSet<String>>,
    /// Service principals by object id.
    sps: BTreeMap<String, Map<String, Value>>,
    grants: Vec<Map<String, Value>>,
    /// Token lifetime policies by id.
    policies: BTreeMap<String, Map<String, Value>>,
    /// Policy ids assigned to each application (by object id).
    assigned: BTreeMap<String, Vec<String>>,
    /// Management apps by client id.
    management: BTreeMap<String, ManagementApp>,
}

impl Tenant {
    fn app_id_of(&self, app_id: &str) -> Option<String> {
        self.apps
            .iter()
            .find(|(_, a)| str_field(a, "appId").eq_ignore_ascii_case(app_id))
            .map(|(id, _)| id.clone())
    }
    fn sp_by_app_id(&self, app_id: &str) -> Option<&Map<String, Value>> {
        self.sps
            .values()
            .find(|s| str_field(s, "appId").eq_ignore_ascii_case(app_id))
    }
}

#[derive(Clone, Debug)]
struct Token {
    tenant: String,
    client_id: String,
}

struct SimState {
    tenants: BTreeMap<String, Tenant>,
    tokens: Tokens<Token>,
    replication_delay: bool,
    /// (tenant, application object id) written and not yet read since.
    stale: HashSet<(String, String)>,
    token_lifetime: Duration,
    sandbox: Option<(String, String)>,
    page_size: usize,
    stale_reads: usize,
    /// Pre-write versions of applications still served by reads, by (tenant, object id).
    stale_apps: HashMap<(String, String), StaleApp>,
    /// Pre-write versions of policies (`None`: did not exist) still served, by (tenant, id).
    stale_policies: HashMap<(String, String), StalePolicy>,
    key_credentials_per_minute: usize,
    /// When each tenant selected `keyCredentials` in the last minute.
    key_credential_reads: HashMap<String, std::collections::VecDeque<Instant>>,
}

/// Reads left and a policy as it was before a write (`None`: it did not exist).
type StalePolicy = (usize, Option<Map<String, Value>>);

/// An application as it was before a write, served to the next `remaining` reads.
#[derive(Clone, Debug)]
struct StaleApp {
    remaining: usize,
    app: Map<String, Value>,
    assigned: Vec<String>,
}

struct Inner {
    state: Mutex<SimState>,
    kit: Harness<GraphRoutes, RecordedBody>,
}

/// Handle to a running simulator. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

/// The test hooks every simulator shares (`counters`, `writes`, `reset_counters`,
/// `recorded_bodies`, `validate_recorded_bodies`, `set_latency`, `fail_next`, `set_throttle`,
/// `shutdown`): scripted failures and throttling hit Graph (paths under `/v1.0/`) only, never the
/// token service, and answer with a Graph error body. Token requests are not recorded: they hold
/// secrets.
impl std::ops::Deref for SimHandle {
    type Target = Harness<GraphRoutes, RecordedBody>;

    fn deref(&self) -> &Self::Target {
        &self.inner.kit
    }
}

impl Recorded for RecordedBody {
    fn label(&self) -> String {
        format!("{} {} ({})", self.method, self.route, self.entity)
    }

    fn validate(&self) -> Result<(), Vec<String>> {
        validate_body(&self.entity, &self.body)
    }
}

type Sim = Arc<Inner>;

/// Starts the simulator on the current tokio runtime. No tenant exists until one is added.
pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = Listener::bind_tls(config.addr, config.tls.as_ref()).await?;
    let inner = Arc::new(Inner {
        state: Mutex::new(SimState {
            tenants: BTreeMap::new(),
            tokens: Tokens::default(),
            replication_delay: config.replication_delay,
            stale: HashSet::new(),
            token_lifetime: config.token_lifetime,
            sandbox: None,
            page_size: config.page_size.clamp(1, 999),
            stale_reads: config.stale_reads,
            stale_apps: HashMap::new(),
            stale_policies: HashMap::new(),
            key_credentials_per_minute: config.key_credentials_per_minute,
            key_credential_reads: HashMap::new(),
        }),
        kit: Harness::new(listener.base_url(), config.latency),
    });
    let app = observed(&inner).apply(Router::new().fallback(dispatch).with_state(inner.clone()));
    inner.kit.serve(listener, app);
    Ok(SimHandle { inner })
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// An app registration as the Entra admin center creates it ("Accounts in this organizational
/// directory only", no platform), with the given `appId` and display name, requesting Microsoft
/// Graph `User.Read`. Change what the test needs and pass it to [`SimHandle::add_application`].
pub fn stock_application(app_id: &str, display_name: &str) -> Value {
    json!({
        "id": new_id(),
        "deletedDateTime": null,
        "appId": app_id,
        "applicationTemplateId": null,
        "disabledByMicrosoftStatus": null,
        "createdDateTime": "2025-03-04T10:11:12Z",
        "displayName": display_name,
        "description": null,
        "groupMembershipClaims": null,
        "identifierUris": [],
        "isDeviceOnlyAuthSupported": null,
        "isFallbackPublicClient": null,
        "nativeAuthenticationApisEnabled": null,
        "notes": null,
        "publisherDomain": "contoso.onmicrosoft.com",
        "serviceManagementReference": null,
        "signInAudience": "AzureADMyOrg",
        "tags": [],
        "tokenEncryptionKeyId": null,
        "uniqueName": null,
        "samlMetadataUrl": null,
        "defaultRedirectUri": null,
        "certification": null,
        "optionalClaims": null,
        "requestSignatureVerification": null,
        "servicePrincipalLockConfiguration": {"isEnabled": true, "allProperties": true,
            "credentialsWithUsageVerify": true, "credentialsWithUsageSign": true, "tokenEncryptionKeyId": true},
        "addIns": [],
        "api": {"acceptMappedClaims": null, "knownClientApplications": [], "requestedAccessTokenVersion": null,
                "oauth2PermissionScopes": [], "preAuthorizedApplications": []},
        "appRoles": [],
        "info": {"logoUrl": null, "marketingUrl": null, "privacyStatementUrl": null, "supportUrl": null,
                 "termsOfServiceUrl": null},
        "keyCredentials": [],
        "parentalControlSettings": {"countriesBlockedForMinors": [], "legalAgeGroupRule": "Allow"},
        "passwordCredentials": [],
        "publicClient": {"redirectUris": []},
        "requiredResourceAccess": [{"resourceAppId": GRAPH_APP_ID,
            "resourceAccess": [{"id": "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "type": "Scope"}]}],
        "verifiedPublisher": {"displayName": null, "verifiedPublisherId": null, "addedDateTime": null},
        "web": {"homePageUrl": null, "logoutUrl": null, "redirectUris": [], "redirectUriSettings": [],
                "implicitGrantSettings": {"enableAccessTokenIssuance": false, "enableIdTokenIssuance": false}},
        "spa": {"redirectUris": []}
    })
}

/// A certificate credential as Graph reports it (`key` null on read), ending at `end`; `usage`
/// is `Verify` for sign-in certificates, `Sign` for token-signing keys.
pub fn key_credential(display_name: &str, usage: &str, end: jiff::Timestamp) -> Value {
    let start = end
        .checked_sub(jiff::SignedDuration::from_hours(24 * 365))
        .unwrap_or(end);
    json!({
        "customKeyIdentifier": "NkE3RjQ0QjE5QjkzOEQ2NkI4MTk5RjI1",
        "displayName": display_name,
        "endDateTime": end.to_string(),
        "key": null,
        "keyId": new_id(),
        "startDateTime": start.to_string(),
        "type": "AsymmetricX509Cert",
        "usage": usage,
    })
}

/// A client secret as `addPassword` reports it (`secretText` null on read), ending at `end`.
pub fn password_credential(display_name: &str, end: jiff::Timestamp) -> Value {
    let start = end
        .checked_sub(jiff::SignedDuration::from_hours(24 * 365))
        .unwrap_or(end);
    json!({
        "customKeyIdentifier": null,
        "displayName": display_name,
        "endDateTime": end.to_string(),
        "hint": "Q~x",
        "keyId": new_id(),
        "secretText": null,
        "startDateTime": start.to_string(),
    })
}

fn graph_service_principal() -> Map<String, Value> {
    let scopes: Vec<Value> = GRAPH_SCOPES
        .iter()
        .map(|(value, id, ty)| {
            json!({"adminConsentDescription": format!("Allows the app to use {value}."),
                   "adminConsentDisplayName": value, "id": id, "isEnabled": true, "origin": "Application",
                   "type": ty, "userConsentDescription": format!("Allows the app to use {value}."),
                   "userConsentDisplayName": value, "value": value})
        })
        .collect();
    obj(json!({
        "id": GRAPH_SP_ID,
        "deletedDateTime": null,
        "accountEnabled": true,
        "appDisplayName": "Microsoft Graph",
        "appId": GRAPH_APP_ID,
        "appOwnerOrganizationId": "f8cdef31-a31e-4b4a-93e4-5f571e91255a",
        "displayName": "Microsoft Graph",
        "servicePrincipalType": "Application",
        "signInAudience": "AzureADMultipleOrgs",
        "servicePrincipalNames": ["https://graph.microsoft.com", GRAPH_APP_ID],
        "appRoles": [],
        "oauth2PermissionScopes": scopes,
    }))
}

fn app_service_principal(app: &Map<String, Value>) -> Map<String, Value> {
    obj(json!({
        "id": new_id(),
        "deletedDateTime": null,
        "accountEnabled": true,
        "appDisplayName": app.get("displayName").cloned().unwrap_or(Value::Null),
        "appId": str_field(app, "appId"),
        "displayName": app.get("displayName").cloned().unwrap_or(Value::Null),
        "servicePrincipalType": "Application",
        "signInAudience": app.get("signInAudience").cloned().unwrap_or(Value::Null),
        "servicePrincipalNames": [str_field(app, "appId")],
        "appRoles": [],
        "oauth2PermissionScopes": [],
    }))
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "innerError": {
        "date": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S").to_string(),
        "request-id": new_id(), "client-request-id": new_id()}}});
    (status, axum::Json(body)).into_response()
}

fn denied() -> Response {
    graph_error(
        StatusCode::FORBIDDEN,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

fn not_found(id: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

fn bad_request(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn ok_json(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// AAD token-endpoint error.
fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M:%SZ")
        .to_string();
    let trace = new_id();
    let correlation = new_id();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {now}"),
        "error_codes": [code],
        "timestamp": now,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": "https://login.microsoftonline.com/error?code={code}",
    });
    (status, axum::Json(body)).into_response()
}

impl SimHandle {
    fn state(&self) -> MutexGuard<'_, SimState> {
        lock(&self.inner.state)
    }

    /// `http://127.0.0.1:PORT` (`https://` with [`SimConfig::tls`]): both the `authorityHost` and
    /// the `graphEndpoint` of the spec.
    pub fn base_url(&self) -> String {
        self.inner.kit.base_url().to_string()
    }

    /// Adds a tenant (idempotent) with Microsoft Graph's service principal.
    pub fn add_tenant(&self, tenant_id: &str) {
        let mut st = self.state();
        st.tenants.entry(tenant_id.to_string()).or_insert_with(|| {
            let mut t = Tenant::default();
            t.sps
                .insert(GRAPH_SP_ID.to_string(), graph_service_principal());
            t
        });
    }

    fn with_tenant<R>(&self, tenant: &str, f: impl FnOnce(&mut Tenant) -> R) -> R {
        let mut st = self.state();
        let t = st
            .tenants
            .get_mut(tenant)
            .unwrap_or_else(|| panic!("no tenant {tenant} in the simulator"));
        f(t)
    }

    /// Adds an app registration (a JSON object with at least `appId`; `id` is generated when
    /// absent) and its service principal. Returns the object id.
    pub fn add_application(&self, tenant: &str, app: Value) -> String {
        let mut app = obj(app);
        let id = match app.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => {
                let id = new_id();
                app.insert("id".into(), json!(id));
                id
            }
        };
        self.with_tenant(tenant, |t| {
            let sp = app_service_principal(&app);
            t.sps.insert(str_field(&sp, "id").to_string(), sp);
            t.apps.insert(id.clone(), app);
        });
        id
    }

    /// Removes the service principal of an application (as if nobody had consented yet).
    pub fn remove_service_principal(&self, tenant: &str, app_id: &str) {
        // Like Entra ID, deleting the service principal deletes its delegated permission grants.
        self.with_tenant(tenant, |t| {
            let gone: Vec<String> = t
                .sps
                .values()
                .filter(|s| str_field(s, "appId") == app_id)
                .map(|s| str_field(s, "id").to_string())
                .collect();
            t.sps.retain(|_, s| str_field(s, "appId") != app_id);
            t.grants
                .retain(|g| !gone.iter().any(|id| str_field(g, "clientId") == id));
        });
    }

    /// Object id of an application's service principal.
    pub fn service_principal_id(&self, tenant: &str, app_id: &str) -> Option<String> {
        self.with_tenant(tenant, |t| {
            t.sp_by_app_id(app_id)
                .map(|s| str_field(s, "id").to_string())
        })
    }

    /// Adds a management app (client-credentials principal) with application permissions.
    pub fn add_management_app(&self, tenant: &str, client_id: &str, secret: &str, perms: &[&str]) {
        self.with_tenant(tenant, |t| {
            t.management.insert(
                client_id.to_string(),
                ManagementApp {
                    secret: secret.to_string(),
                    permissions: perms.iter().map(|s| s.to_string()).collect(),
                },
            );
        });
    }

    /// Replaces a management app's application permissions.
    pub fn set_permissions(&self, tenant: &str, client_id: &str, perms: &[&str]) {
        self.with_tenant(tenant, |t| {
            if let Some(m) = t.management.get_mut(client_id) {
                m.permissions = perms.iter().map(|s| s.to_string()).collect();
            }
        });
    }

    /// Replaces a management app's secret.
    pub fn set_management_secret(&self, tenant: &str, client_id: &str, secret: &str) {
        self.with_tenant(tenant, |t| {
            if let Some(m) = t.management.get_mut(client_id) {
                m.secret = secret.to_string();
            }
        });
    }

    /// Makes a management app an owner of an application (for `Application.ReadWrite.OwnedBy`).
    pub fn add_owner(&self, tenant: &str, app_id: &str, client_id: &str) {
        self.with_tenant(tenant, |t| {
            if let Some(id) = t.app_id_of(app_id) {
                t.owners
                    .entry(id)
                    .or_default()
                    .insert(client_id.to_string());
            }
        });
    }

    /// The application with this `appId`, as stored.
    pub fn application(&self, tenant: &str, app_id: &str) -> Option<Value> {
        self.with_tenant(tenant, |t| {
            t.app_id_of(app_id)
                .and_then(|id| t.apps.get(&id).cloned())
                .map(Value::Object)
        })
    }

    /// Edits an application directly (drift, test setup). No counters, no replication delay.
    pub fn update_application(
        &self,
        tenant: &str,
        app_id: &str,
        f: impl FnOnce(&mut Map<String, Value>),
    ) {
        self.with_tenant(tenant, |t| {
            if let Some(id) = t.app_id_of(app_id)
                && let Some(a) = t.apps.get_mut(&id)
            {
                f(a);
            }
        });
    }

    /// Changes the id Microsoft Graph's service principal publishes for a delegated permission.
    pub fn set_graph_scope_id(&self, tenant: &str, value: &str, id: &str) {
        self.with_tenant(tenant, |t| {
            if let Some(sp) = t.sps.get_mut(GRAPH_SP_ID)
                && let Some(Value::Array(scopes)) = sp.get_mut("oauth2PermissionScopes")
            {
                for s in scopes.iter_mut() {
                    if s.get("value").and_then(Value::as_str) == Some(value) {
                        s["id"] = json!(id);
                    }
                }
            }
        });
    }

    /// Adds a delegated permission grant to Microsoft Graph for an application's service
    /// principal. `consent_type` is `AllPrincipals` (tenant-wide admin consent) or `Principal`.
    pub fn add_permission_grant(
        &self,
        tenant: &str,
        app_id: &str,
        consent_type: &str,
        scope: &str,
    ) -> String {
        let gid = new_id();
        self.with_tenant(tenant, |t| {
            let client = t
                .sp_by_app_id(app_id)
                .map(|s| str_field(s, "id").to_string())
                .unwrap_or_default();
            let principal = if consent_type == "AllPrincipals" {
                Value::Null
            } else {
                json!(new_id())
            };
            t.grants.push(obj(json!({
                "id": gid, "clientId": client, "consentType": consent_type, "principalId": principal,
                "resourceId": GRAPH_SP_ID, "scope": scope,
            })));
        });
        gid
    }

    /// Every token lifetime policy of the tenant.
    pub fn token_lifetime_policies(&self, tenant: &str) -> Vec<Value> {
        self.with_tenant(tenant, |t| {
            t.policies.values().cloned().map(Value::Object).collect()
        })
    }

    /// The token lifetime policies assigned to an application.
    pub fn assigned_policies(&self, tenant: &str, app_id: &str) -> Vec<Value> {
        self.with_tenant(tenant, |t| {
            let Some(id) = t.app_id_of(app_id) else {
                return Vec::new();
            };
            t.assigned
                .get(&id)
                .into_iter()
                .flatten()
                .filter_map(|pid| t.policies.get(pid).cloned().map(Value::Object))
                .collect()
        })
    }

    /// Creates a token lifetime policy directly. Returns its id.
    pub fn add_token_lifetime_policy(
        &self,
        tenant: &str,
        display_name: &str,
        definition: &str,
    ) -> String {
        let id = new_id();
        self.with_tenant(tenant, |t| {
            t.policies.insert(
                id.clone(),
                obj(json!({"id": id, "deletedDateTime": null, "definition": [definition],
                           "description": null, "displayName": display_name, "isOrganizationDefault": false})),
            );
        });
        id
    }

    /// Assigns a policy to an application directly.
    pub fn assign_policy(&self, tenant: &str, app_id: &str, policy_id: &str) {
        self.with_tenant(tenant, |t| {
            if let Some(id) = t.app_id_of(app_id) {
                t.assigned
                    .entry(id)
                    .or_default()
                    .push(policy_id.to_string());
            }
        });
    }

    /// Turns the simulated replication delay on or off.
    pub fn set_replication_delay(&self, on: bool) {
        let mut st = self.state();
        st.replication_delay = on;
        if !on {
            st.stale.clear();
        }
    }

    /// From now on, after each write the next `n` reads of the written object answer 200 with
    /// the object as it was before the write (`0` turns it off and drops pending stale views).
    pub fn set_stale_reads(&self, n: usize) {
        let mut st = self.state();
        st.stale_reads = n;
        if n == 0 {
            st.stale_apps.clear();
            st.stale_policies.clear();
        }
    }

    /// Page size of collections read without `$top` (1–999).
    pub fn set_page_size(&self, n: usize) {
        self.state().page_size = n.clamp(1, 999);
    }

    /// Requests selecting `keyCredentials` each tenant may make per minute before 429.
    pub fn set_key_credentials_per_minute(&self, n: usize) {
        let mut st = self.state();
        st.key_credentials_per_minute = n;
        st.key_credential_reads.clear();
    }

    /// Expires every issued token (the next Graph call with one answers 401).
    pub fn expire_tokens(&self) {
        self.state().tokens.expire_all(Instant::now());
    }

    /// Tokens issued and not expired.
    pub fn live_tokens(&self) -> usize {
        self.state().tokens.live_count(Instant::now())
    }

    /// Seeds a realistic tenant: Coder's app registration before the operator (Microsoft Graph
    /// `User.Read`, `openid`, `profile`, `email` but no `offline_access`, a `Role` permission and
    /// another API's permission that must survive, "allow public client flows" on, Coder's
    /// callback under `web`, one client secret valid for 200 more days) and a management app
    /// with `Application.ReadWrite.All`.
    pub fn seed_sandbox(&self) -> SandboxSeed {
        let tenant = "8f0c6c0e-5a53-4d2a-9c1e-2b7d4a6e9f31";
        let app_id = "3d7f2b9a-6c41-4e85-a0d2-9b1c7e5f4a68";
        let mgmt = "c5a1e7d3-2f84-4b96-8e0a-71d3f9b2c645";
        let secret = format!("sim~{}", uuid::Uuid::new_v4().simple());
        self.add_tenant(tenant);
        let mut app = obj(stock_application(app_id, "Coder"));
        let end = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24 * 200))
            .unwrap_or_else(|_| jiff::Timestamp::now());
        app.insert(
            "passwordCredentials".into(),
            json!([password_credential("coder-oidc", end)]),
        );
        app.insert("isFallbackPublicClient".into(), json!(true));
        app.insert("groupMembershipClaims".into(), json!("SecurityGroup"));
        app.insert("tags".into(), json!(["coder", "sso"]));
        app.insert(
            "web".into(),
            json!({"homePageUrl": "https://coder.example.com", "logoutUrl": null,
                   "redirectUris": ["https://coder.example.com/api/v2/users/oidc/callback"],
                   "redirectUriSettings": [{"uri": "https://coder.example.com/api/v2/users/oidc/callback", "index": null}],
                   "implicitGrantSettings": {"enableAccessTokenIssuance": false, "enableIdTokenIssuance": false}}),
        );
        app.insert(
            "optionalClaims".into(),
            json!({"accessToken": [], "saml2Token": [],
                   "idToken": [{"name": "groups", "source": null, "essential": false, "additionalProperties": []}]}),
        );
        app.insert(
            "requiredResourceAccess".into(),
            json!([
                {"resourceAppId": GRAPH_APP_ID, "resourceAccess": [
                    {"id": "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "type": "Scope"},
                    {"id": "37f7f235-527c-4136-accd-4a02d197296e", "type": "Scope"},
                    {"id": "14dad69e-099b-42c9-810b-d002981feec1", "type": "Scope"},
                    {"id": "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0", "type": "Scope"},
                    {"id": "5b567255-7703-4780-807c-7be8301ae99b", "type": "Role"}]},
                {"resourceAppId": "797f4846-ba00-4fd7-ba43-dac1f8f63013", "resourceAccess": [
                    {"id": "41094075-9dad-400e-a0bd-54e686782033", "type": "Scope"}]}
            ]),
        );
        self.add_application(tenant, Value::Object(app));
        self.add_management_app(tenant, mgmt, &secret, &[p::APPLICATION_READWRITE_ALL]);
        self.state().sandbox = Some((tenant.to_string(), app_id.to_string()));
        let base = self.base_url();
        SandboxSeed {
            spec: json!({"entraId": {"tenantId": tenant, "applicationId": app_id,
                         "credentialsSecret": "graph-admin", "authorityHost": base, "graphEndpoint": base}}),
            secret_name: "graph-admin".into(),
            secret_data: BTreeMap::from([
                ("client-id".to_string(), mgmt.to_string()),
                ("client-secret".to_string(), secret),
            ]),
        }
    }

    /// After [`seed_sandbox`](Self::seed_sandbox): the refresh-relevant settings of Coder's app
    /// registration as (setting, value) lines.
    pub fn describe_client(&self) -> Vec<(String, String)> {
        let Some((tenant, app_id)) = self.state().sandbox.clone() else {
            return Vec::new();
        };
        self.describe(&tenant, &app_id)
    }

    /// The refresh-relevant settings of an application as (setting, value) lines.
    pub fn describe(&self, tenant: &str, app_id: &str) -> Vec<(String, String)> {
        let Some(app) = self.application(tenant, app_id) else {
            return vec![("application".into(), format!("{app_id} not found"))];
        };
        let names: HashMap<&str, &str> = GRAPH_SCOPES.iter().map(|(v, id, _)| (*id, *v)).collect();
        let mut graph = Vec::new();
        let mut others = Vec::new();
        for r in app
            .get("requiredResourceAccess")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let res = r
                .get("resourceAppId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for a in r
                .get("resourceAccess")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let id = a.get("id").and_then(Value::as_str).unwrap_or_default();
                let ty = a.get("type").and_then(Value::as_str).unwrap_or_default();
                if res == GRAPH_APP_ID && ty == "Scope" {
                    graph.push(
                        names
                            .get(id)
                            .map(|s| s.to_string())
                            .unwrap_or(id.to_string()),
                    );
                } else {
                    others.push(format!("{res}/{id} ({ty})"));
                }
            }
        }
        let list = |v: Option<&Value>| -> String {
            let items: Vec<String> = v
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            if items.is_empty() {
                "none".into()
            } else {
                items.join(", ")
            }
        };
        let secrets: Vec<String> = app
            .get("passwordCredentials")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{} (expires {})",
                    c.get("displayName")
                        .and_then(Value::as_str)
                        .unwrap_or("unnamed"),
                    c.get("endDateTime")
                        .and_then(Value::as_str)
                        .unwrap_or("never")
                )
            })
            .collect();
        let policies: Vec<String> = self
            .assigned_policies(tenant, app_id)
            .iter()
            .map(|p| {
                format!(
                    "{}: {}",
                    p.get("displayName")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    list(p.get("definition"))
                )
            })
            .collect();
        vec![
            (
                "displayName".into(),
                app.get("displayName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            ("appId".into(), app_id.to_string()),
            (
                "Microsoft Graph delegated permissions".into(),
                if graph.is_empty() {
                    "none".into()
                } else {
                    graph.join(", ")
                },
            ),
            (
                "other API permissions".into(),
                if others.is_empty() {
                    "none".into()
                } else {
                    others.join(", ")
                },
            ),
            (
                "isFallbackPublicClient (allow public client flows)".into(),
                app.get("isFallbackPublicClient")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "null".into()),
            ),
            (
                "web.redirectUris".into(),
                list(app.get("web").and_then(|w| w.get("redirectUris"))),
            ),
            (
                "spa.redirectUris".into(),
                list(app.get("spa").and_then(|w| w.get("redirectUris"))),
            ),
            (
                "client secrets".into(),
                if secrets.is_empty() {
                    "none".into()
                } else {
                    secrets.join(", ")
                },
            ),
            (
                "token lifetime policy".into(),
                if policies.is_empty() {
                    "none (access tokens live 60-90 min)".into()
                } else {
                    policies.join("; ")
                },
            ),
            (
                "refresh tokens".into(),
                "90-day inactivity window, fixed by Microsoft (24 h for SPA redirect URIs)".into(),
            ),
        ]
    }
}

fn segments(path: &str) -> Vec<String> {
    path.trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect()
}

/// `applications(appId='x')` → `("applications", "appId", "x")`.
fn alternate_key(seg: &str) -> Option<(&str, &str, &str)> {
    let (set, rest) = seg.split_once('(')?;
    let inner = rest.strip_suffix(')')?;
    let (key, value) = inner.split_once('=')?;
    let value = value.strip_prefix('\'')?.strip_suffix('\'')?;
    Some((set, key, value))
}

/// The route template of a path, for counters.
pub fn route_template(path: &str) -> String {
    let segs = segments(path);
    if segs.len() == 4 && segs[1] == "oauth2" && segs[2] == "v2.0" && segs[3] == "token" {
        return TOKEN_ROUTE.to_string();
    }
    if segs.first().map(String::as_str) != Some("v1.0") {
        return "<unmatched>".into();
    }
    let mut out = String::from("/v1.0");
    let mut prev = "";
    for s in &segs[1..] {
        let t = if let Some((set, key, _)) = alternate_key(s) {
            format!("{set}({key}='{{{key}}}')")
        } else if s.starts_with('$') {
            s.clone()
        } else {
            match prev {
                "applications" | "servicePrincipals" | "oauth2PermissionGrants" => "{id}".into(),
                "tokenLifetimePolicies" if out.starts_with("/v1.0/policies") => "{id}".into(),
                "tokenLifetimePolicies" => "{policyId}".into(),
                _ => s.clone(),
            }
        };
        out.push('/');
        out.push_str(&t);
        prev = s;
    }
    out
}

/// Latency, failure injection (Graph calls only, with Graph's error body) and counters around
/// every call.
fn observed(sim: &Sim) -> Observe {
    sim.kit
        .observe(route_template)
        .faults_on(|route| route.starts_with("/v1.0/"))
        .fault_answer(|status| {
            let (code, msg) = match status.as_u16() {
                429 => (
                    "TooManyRequests",
                    "Too many requests. Please try again later.",
                ),
                503 => ("serviceNotAvailable", "Service is temporarily unavailable."),
                504 => ("UnknownError", "Gateway timeout."),
                _ => ("UnknownError", "An internal server error occurred."),
            };
            graph_error(status, code, msg)
        })
}

fn query_params(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
}

fn query<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

fn unsupported_query(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "Request_UnsupportedQuery", message)
}

/// Properties of `oAuth2PermissionGrant` (not in the contract excerpt).
const GRANT_PROPERTIES: [&str; 6] = [
    "id",
    "clientId",
    "consentType",
    "principalId",
    "resourceId",
    "scope",
];

/// The `$select` list, checked against the entity type's properties.
#[allow(clippy::result_large_err)]
fn parse_select(q: &[(String, String)], entity: &str) -> Result<Option<Vec<String>>, Response> {
    let Some(sel) = query(q, "$select") else {
        return Ok(None);
    };
    let contract = schema::contract();
    let mut keys = Vec::new();
    for k in sel.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let known = if entity == "oAuth2PermissionGrant" {
            GRANT_PROPERTIES.contains(&k)
        } else {
            contract.property(entity, k).is_some()
                || contract.entity_navigation(entity).iter().any(|n| n == k)
        };
        if !known {
            return Err(graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "Parsing OData Select and Expand failed: Could not find a property named '{k}' on type 'microsoft.graph.{entity}'."
                ),
            ));
        }
        keys.push(k.to_string());
    }
    Ok(Some(keys))
}

fn project(v: &Map<String, Value>, keys: Option<&[String]>) -> Map<String, Value> {
    match keys {
        Some(keys) => v
            .iter()
            .filter(|(k, _)| k.as_str() == "id" || keys.iter().any(|s| s == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        None => v.clone(),
    }
}

/// The `$filter` clauses, checked against the properties Graph can filter on without advanced
/// query parameters: `eq` on `eq_props`, `startswith` on `startswith_props`.
#[allow(clippy::result_large_err)]
fn parse_filter_for(
    q: &[(String, String)],
    resource: &str,
    eq_props: &[&str],
    startswith_props: &[&str],
) -> Result<Vec<query::Clause>, Response> {
    let Some(f) = query(q, "$filter") else {
        return Ok(Vec::new());
    };
    let clauses = query::parse_filter(f).map_err(|e| match e {
        query::FilterError::Syntax(m) => graph_error(StatusCode::BAD_REQUEST, "BadRequest", &m),
        query::FilterError::Unsupported(m) => unsupported_query(&m),
    })?;
    for c in &clauses {
        let ok = match c {
            query::Clause::Eq(p, _) => eq_props.contains(&p.as_str()),
            query::Clause::StartsWith(p, _) => startswith_props.contains(&p.as_str()),
        };
        if !ok {
            return Err(unsupported_query(&format!(
                "Unsupported or invalid query filter clause specified for property '{}' of resource '{resource}'.",
                c.property()
            )));
        }
    }
    Ok(clauses)
}

/// Checks the query options of a Graph request. `search` tells whether the collection
/// supports `$search` (with `ConsistencyLevel: eventual`).
#[allow(clippy::result_large_err)]
fn check_options(q: &[(String, String)], advanced: bool, search: bool) -> Result<(), Response> {
    for (k, _) in q {
        if !k.starts_with('$') {
            continue;
        }
        match k.to_ascii_lowercase().as_str() {
            "$select" | "$filter" | "$top" | "$skiptoken" | "$count" | "$expand" => {}
            "$search" if !advanced => {
                return Err(unsupported_query(
                    "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
                ));
            }
            "$search" if !search => return Err(unsupported_query("Unsupported Query.")),
            "$search" => {}
            "$orderby" => {
                return Err(unsupported_query(
                    "Sorting not supported for current query.",
                ));
            }
            "$skip" => {
                return Err(graph_error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    "'$skip' is not supported by the service.",
                ));
            }
            _ => {
                return Err(graph_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("Query option '{k}' is not allowed."),
                ));
            }
        }
    }
    if let Some(top) = query(q, "$top")
        && query::parse_top(top).is_none()
    {
        return Err(unsupported_query(&format!(
            "Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive."
        )));
    }
    if let Some(t) = query(q, "$skiptoken")
        && query::parse_skiptoken(t).is_none()
    {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "Skip token is null or invalid.",
        ));
    }
    Ok(())
}

/// `$search="prop:text"` on directory objects (a substring match on `prop`).
fn search_matches(q: &[(String, String)], obj: &Map<String, Value>) -> bool {
    let Some(s) = query(q, "$search") else {
        return true;
    };
    let s = s.trim().trim_matches('"');
    let (prop, text) = s.split_once(':').unwrap_or(("displayName", s));
    obj.get(prop.trim())
        .and_then(Value::as_str)
        .is_some_and(|v| v.to_lowercase().contains(&text.trim().to_lowercase()))
}

/// The OpenID Connect discovery document of a tenant, shaped like the Microsoft identity
/// platform's v2.0 one.
fn openid_configuration(base: &str, tenant: &str) -> Value {
    json!({
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{tenant}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid",
            "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": format!("{base}/{tenant}/kerberos"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net"
    })
}

/// The token service's own endpoints: discovery, instance discovery and the token endpoint.
fn token_service(
    sim: &Sim,
    method: &Method,
    uri: &Uri,
    segs: &[String],
    body: &[u8],
) -> Option<Response> {
    let base = sim.kit.base_url().to_string();
    let parts: Vec<&str> = segs.iter().map(String::as_str).collect();
    match parts.as_slice() {
        [tenant, "oauth2", "v2.0", "token"] => Some(if *method != Method::POST {
            aad_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                900561,
                "The endpoint only accepts POST requests.",
            )
        } else {
            token(sim, tenant, body)
        }),
        [tenant, "v2.0", ".well-known", "openid-configuration"] => {
            let known = lock(&sim.state).tenants.contains_key(*tenant);
            Some(if known || matches!(*tenant, "common" | "organizations") {
                ok_json(openid_configuration(&base, tenant))
            } else {
                aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_tenant",
                    90002,
                    &format!(
                        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
                    ),
                )
            })
        }
        ["common", "discovery", "instance"] => {
            let q = query_params(uri);
            let authz = query(&q, "authorization_endpoint").unwrap_or_default();
            let host = base
                .split_once("://")
                .map(|(_, h)| h.to_string())
                .unwrap_or_default();
            // The tenant is the first path segment of the authorization endpoint.
            let tenant = authz
                .split_once("://")
                .and_then(|(_, rest)| rest.split('/').nth(1))
                .unwrap_or("common")
                .to_string();
            Some(ok_json(json!({
                "tenant_discovery_endpoint": format!("{base}/{tenant}/v2.0/.well-known/openid-configuration"),
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}]
            })))
        }
        _ => None,
    }
}

async fn dispatch(
    State(sim): State<Sim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let segs = segments(uri.path());
    if let Some(r) = token_service(&sim, &method, &uri, &segs, &body) {
        return r;
    }
    if segs.first().map(String::as_str) != Some("v1.0") {
        return graph_error(
            StatusCode::NOT_FOUND,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                segs.first().cloned().unwrap_or_default()
            ),
        );
    }
    let mut st = lock(&sim.state);
    // Authentication.
    let bearer = sim_kit::bearer_token(&headers)
        .unwrap_or_default()
        .to_string();
    if bearer.is_empty() {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        );
    }
    let Some(tok) = st.tokens.get(&bearer).cloned() else {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "IDX14100: JWT is not well formed.",
        );
    };
    if !tok.live_at(Instant::now()) {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Lifetime validation failed, the token is expired.",
        );
    }
    // Graph reads a request body only as JSON.
    if (method == Method::PATCH || method == Method::POST) && !sim_kit::is_json(&headers) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        );
    }
    let q = query_params(&uri);
    let advanced = headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"));
    let route = route_template(uri.path());
    // Everything but the query, for nextLinks.
    let path = uri.path().to_string();
    let mut ctx = Ctx {
        st: &mut st,
        tenant: tok.grant.tenant.clone(),
        client: tok.grant.client_id.clone(),
        base: sim.kit.base_url().to_string(),
        kit: &sim.kit,
        route,
        method: method.clone(),
        advanced,
        path,
    };
    // Normalize `applications(appId='x')` into `applications/{id}`.
    let mut rest: Vec<String> = segs[1..].to_vec();
    if let Some(first) = rest.first().cloned()
        && let Some((set, key, value)) = alternate_key(&first)
    {
        match (set, key) {
            ("applications", "appId") => match ctx.tenant_mut().app_id_of(value) {
                Some(id) => {
                    rest.splice(0..1, ["applications".to_string(), id]);
                }
                None => {
                    return if ctx.can_read_apps() {
                        not_found(&format!("appId '{value}'"))
                    } else {
                        denied()
                    };
                }
            },
            ("servicePrincipals", "appId") => match ctx.tenant_mut().sp_by_app_id(value) {
                Some(sp) => {
                    let id = str_field(sp, "id").to_string();
                    rest.splice(0..1, ["servicePrincipals".to_string(), id]);
                }
                None => {
                    return if ctx.can_read_sps() {
                        not_found(&format!("appId '{value}'"))
                    } else {
                        denied()
                    };
                }
            },
            _ => return bad_request(&format!("Invalid key '{key}' for entity set '{set}'.")),
        }
    }
    let parts: Vec<&str> = rest.iter().map(String::as_str).collect();
    let search = matches!(parts.as_slice(), ["applications"] | ["servicePrincipals"]);
    if let Err(r) = check_options(&q, advanced, search) {
        return r;
    }
    match (method.clone(), parts.as_slice()) {
        (Method::GET, ["applications"]) => ctx.list_apps(&q),
        (Method::GET, ["applications", "$count"]) => ctx.count("applications"),
        (Method::GET, ["servicePrincipals", "$count"]) => ctx.count("servicePrincipals"),
        (Method::GET, ["applications", id]) => ctx.get_app(id, &q),
        (Method::PATCH, ["applications", id]) => ctx.patch_app(id, &body),
        (Method::GET, ["applications", id, "tokenLifetimePolicies"]) => ctx.app_policies(id, &q),
        (Method::POST, ["applications", id, "tokenLifetimePolicies", "$ref"]) => {
            ctx.assign(id, &body)
        }
        (Method::DELETE, ["applications", id, "tokenLifetimePolicies", pid, "$ref"]) => {
            ctx.unassign(id, pid)
        }
        (Method::GET, ["servicePrincipals"]) => ctx.list_sps(&q),
        (Method::GET, ["servicePrincipals", id]) => ctx.get_sp(id, &q),
        (Method::GET, ["oauth2PermissionGrants"]) => ctx.list_grants(&q),
        (Method::GET, ["policies", "tokenLifetimePolicies"]) => ctx.list_policies(&q),
        (Method::POST, ["policies", "tokenLifetimePolicies"]) => ctx.create_policy(&body),
        (Method::GET, ["policies", "tokenLifetimePolicies", id]) => ctx.get_policy(id, &q),
        (Method::PATCH, ["policies", "tokenLifetimePolicies", id]) => ctx.patch_policy(id, &body),
        (Method::DELETE, ["policies", "tokenLifetimePolicies", id]) => ctx.delete_policy(id),
        (
            _,
            ["applications"]
            | ["applications", _]
            | ["applications", _, "tokenLifetimePolicies", ..]
            | ["servicePrincipals", ..]
            | ["oauth2PermissionGrants"]
            | ["policies", "tokenLifetimePolicies", ..],
        ) => method_not_allowed(),
        _ => graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                rest.last().cloned().unwrap_or_default()
            ),
        ),
    }
}

fn method_not_allowed() -> Response {
    graph_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "The HTTP method is not allowed for the requested resource.",
    )
}

fn token(sim: &Sim, tenant: &str, body: &[u8]) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let mut st = lock(&sim.state);
    let Some(t) = st.tenants.get(tenant) else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    };
    if field("grant_type") != "client_credentials" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let client_id = field("client_id");
    let Some(m) = t.management.get(client_id) else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
            ),
        );
    };
    if field("client_secret").is_empty() {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    }
    if m.secret != field("client_secret") {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        );
    }
    let scope = field("scope");
    let resource = scope.strip_suffix("/.default").unwrap_or_default();
    if resource != sim.kit.base_url() && resource != "https://graph.microsoft.com" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    }
    let access = format!("eyJ0eXAiOiJKV1Qi.sim.{}", uuid::Uuid::new_v4().simple());
    let (lifetime, now) = (st.token_lifetime, Instant::now());
    st.tokens.insert(
        access.clone(),
        Token {
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
        },
        now + lifetime,
        now,
    );
    ok_json(
        json!({"token_type": "Bearer", "expires_in": lifetime.as_secs(),
                   "ext_expires_in": lifetime.as_secs(), "access_token": access}),
    )
}

/// Definition check for token lifetime policies: one JSON string with
/// `{"TokenLifetimePolicy":{"Version":1,...}}`; `AccessTokenLifetime` between 10 minutes and 1 day.
pub fn check_definition(definition: &Value) -> Result<(), String> {
    let Some(items) = definition.as_array() else {
        return Err("definition must be an array of strings".into());
    };
    let [Value::String(text)] = items.as_slice() else {
        return Err("definition must hold exactly one JSON string".into());
    };
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("definition is not valid JSON: {e}"))?;
    let Some(tlp) = v.get("TokenLifetimePolicy").and_then(Value::as_object) else {
        return Err("definition lacks the TokenLifetimePolicy object".into());
    };
    if tlp.get("Version").and_then(Value::as_i64) != Some(1) {
        return Err("TokenLifetimePolicy.Version must be 1".into());
    }
    if let Some(at) = tlp.get("AccessTokenLifetime") {
        let secs = at.as_str().and_then(parse_timespan).ok_or_else(|| {
            format!("AccessTokenLifetime {at} is not a timespan such as 01:00:00")
        })?;
        if !(600..=86_400).contains(&secs) {
            return Err(format!(
                "AccessTokenLifetime {at} is out of range: it must be between 00:10:00 and 1.00:00:00"
            ));
        }
    }
    Ok(())
}

/// Parses a .NET `TimeSpan` (`[d.]hh:mm:ss[.fffffff]`) into whole seconds.
pub fn parse_timespan(s: &str) -> Option<u64> {
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
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// One Graph call being served.
struct Ctx<'a> {
    st: &'a mut SimState,
    kit: &'a Harness<GraphRoutes, RecordedBody>,
    tenant: String,
    client: String,
    base: String,
    route: String,
    method: Method,
    /// `ConsistencyLevel: eventual` was sent.
    advanced: bool,
    /// The request path, for `@odata.nextLink`.
    path: String,
}

impl Ctx<'_> {
    fn tenant_mut(&mut self) -> &mut Tenant {
        self.st.tenants.entry(self.tenant.clone()).or_default()
    }

    fn perms(&self) -> BTreeSet<String> {
        self.st
            .tenants
            .get(&self.tenant)
            .and_then(|t| t.management.get(&self.client))
            .map(|m| m.permissions.clone())
            .unwrap_or_default()
    }

    fn has_any(&self, perms: &[&str]) -> bool {
        let mine = self.perms();
        perms.iter().any(|p| mine.contains(*p))
    }

    fn owns(&self, app: &str) -> bool {
        self.st
            .tenants
            .get(&self.tenant)
            .and_then(|t| t.owners.get(app))
            .is_some_and(|o| o.contains(&self.client))
    }

    /// Reading applications (get and list). `Application.ReadWrite.OwnedBy` reads every
    /// application of the tenant, as the permissions reference says.
    fn can_read_apps(&self) -> bool {
        self.has_any(&[
            p::APPLICATION_READ_ALL,
            p::APPLICATION_READWRITE_ALL,
            p::APPLICATION_READWRITE_OWNEDBY,
            p::DIRECTORY_READ_ALL,
            p::DIRECTORY_READWRITE_ALL,
        ])
    }

    /// Reading service principals (get and list).
    fn can_read_sps(&self) -> bool {
        self.can_read_apps()
    }

    fn can_write_app(&self, app: &str) -> bool {
        self.has_any(&[p::APPLICATION_READWRITE_ALL])
            || (self.has_any(&[p::APPLICATION_READWRITE_OWNEDBY]) && self.owns(app))
    }

    /// Reading, assigning or removing an application's token lifetime policies: a write
    /// permission on the application (`Application.Read.All` is not enough) and a policy
    /// permission (`Policy.Read.All` is enough, even to assign).
    fn can_manage_app_policies(&self, app: &str) -> bool {
        self.can_write_app(app)
            && self.has_any(&[
                p::POLICY_READ_ALL,
                p::POLICY_READWRITE_APPLICATIONCONFIGURATION,
            ])
    }

    fn policy_reader(&self) -> bool {
        self.has_any(&[
            p::POLICY_READ_ALL,
            p::POLICY_READ_APPLICATIONCONFIGURATION,
            p::POLICY_READWRITE_APPLICATIONCONFIGURATION,
        ])
    }

    fn policy_writer(&self) -> bool {
        self.has_any(&[p::POLICY_READWRITE_APPLICATIONCONFIGURATION])
    }

    // A Graph error answer is the natural error here; these run once per request.
    #[allow(clippy::result_large_err)]
    fn record(&mut self, entity: &str, body: &[u8]) -> Result<Value, Response> {
        let parsed = serde_json::from_slice::<Value>(body);
        let recorded = match &parsed {
            Ok(v) => v.clone(),
            Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
        };
        self.kit.record(RecordedBody {
            method: self.method.to_string(),
            route: self.route.clone(),
            entity: entity.to_string(),
            body: recorded,
        });
        parsed.map_err(|e| {
            bad_request(&format!(
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format. ({e})"
            ))
        })
    }

    /// Consumes a pending replication delay for an object: true means "answer 404 now".
    fn stale(&mut self, id: &str) -> bool {
        self.st.stale.remove(&(self.tenant.clone(), id.to_string()))
    }

    fn written(&mut self, id: &str) {
        if self.st.replication_delay {
            self.st.stale.insert((self.tenant.clone(), id.to_string()));
        }
    }

    /// Before a write to an application: keep its current version for stale reads.
    fn before_app_write(&mut self, id: &str) {
        let n = self.st.stale_reads;
        if n == 0 {
            return;
        }
        let key = (self.tenant.clone(), id.to_string());
        let t = self.tenant_mut();
        let app = t.apps.get(id).cloned().unwrap_or_default();
        let assigned = t.assigned.get(id).cloned().unwrap_or_default();
        let entry = self.st.stale_apps.entry(key).or_insert(StaleApp {
            remaining: n,
            app,
            assigned,
        });
        entry.remaining = n;
    }

    /// Before a write to a policy (`None`: it is being created).
    fn before_policy_write(&mut self, id: &str, current: Option<Map<String, Value>>) {
        let n = self.st.stale_reads;
        if n == 0 {
            return;
        }
        let key = (self.tenant.clone(), id.to_string());
        let entry = self.st.stale_policies.entry(key).or_insert((n, current));
        entry.0 = n;
    }

    /// An application as this read sees it (with its assigned policy ids); consumes one
    /// stale read when one is pending.
    fn view_app(&mut self, id: &str) -> Option<(Map<String, Value>, Vec<String>)> {
        let key = (self.tenant.clone(), id.to_string());
        if let Some(s) = self.st.stale_apps.get_mut(&key) {
            s.remaining = s.remaining.saturating_sub(1);
            let out = (s.app.clone(), s.assigned.clone());
            if s.remaining == 0 {
                self.st.stale_apps.remove(&key);
            }
            return Some(out);
        }
        let t = self.tenant_mut();
        let app = t.apps.get(id).cloned()?;
        Some((app, t.assigned.get(id).cloned().unwrap_or_default()))
    }

    /// A policy as this read sees it; consumes one stale read when one is pending.
    fn view_policy(&mut self, id: &str) -> Option<Map<String, Value>> {
        let key = (self.tenant.clone(), id.to_string());
        if let Some(s) = self.st.stale_policies.get_mut(&key) {
            s.0 = s.0.saturating_sub(1);
            let out = s.1.clone();
            if s.0 == 0 {
                self.st.stale_policies.remove(&key);
            }
            return out;
        }
        self.tenant_mut().policies.get(id).cloned()
    }

    /// Graph throttles `$select=keyCredentials` per tenant: 429 with `Retry-After` past the
    /// limit.
    fn key_credentials_throttle(&mut self, select: Option<&[String]>) -> Option<Response> {
        if !select.is_some_and(|s| s.iter().any(|k| k == "keyCredentials")) {
            return None;
        }
        let limit = self.st.key_credentials_per_minute;
        let now = Instant::now();
        let window = Duration::from_secs(60);
        let hits = self
            .st
            .key_credential_reads
            .entry(self.tenant.clone())
            .or_default();
        while hits
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            hits.pop_front();
        }
        if hits.len() >= limit {
            let wait = hits
                .front()
                .map(|t| window.saturating_sub(now.duration_since(*t)))
                .unwrap_or(window);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut resp = graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests selecting keyCredentials for this tenant. Please retry after the time in the Retry-After header.",
            );
            sim_kit::set_retry_after(&mut resp, Some(secs.max(1)));
            return Some(resp);
        }
        hits.push_back(now);
        None
    }

    /// One page of a collection: `$top` (or the simulator's page size), `$skiptoken`,
    /// `@odata.nextLink` (absolute, carrying the other query options) and, for advanced
    /// queries, `@odata.count`.
    fn page(&self, q: &[(String, String)], context: &str, items: Vec<Value>) -> Response {
        let size = query(q, "$top")
            .and_then(query::parse_top)
            .unwrap_or(self.st.page_size);
        let offset = query(q, "$skiptoken")
            .and_then(query::parse_skiptoken)
            .unwrap_or(0);
        let total = items.len();
        let end = (offset + size).min(total);
        let value = sim_kit::window(items, offset, Some(end.saturating_sub(offset)));
        let mut out = Map::new();
        out.insert(
            "@odata.context".into(),
            json!(format!("{}/v1.0/$metadata#{context}", self.base)),
        );
        let count = query(q, "$count").is_some_and(|c| c.eq_ignore_ascii_case("true"));
        if count && self.advanced {
            out.insert("@odata.count".into(), json!(total));
        }
        if end < total {
            let mut link: Vec<String> = q
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("$skiptoken"))
                .map(|(k, v)| format!("{}={}", query::encode(k), query::encode(v)))
                .collect();
            link.push(format!("$skiptoken={}", query::skiptoken(end)));
            out.insert(
                "@odata.nextLink".into(),
                json!(format!("{}{}?{}", self.base, self.path, link.join("&"))),
            );
        }
        out.insert("value".into(), Value::Array(value));
        ok_json(Value::Object(out))
    }

    fn count(&mut self, set: &str) -> Response {
        if !self.advanced {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                "$count is not currently supported.",
            );
        }
        let allowed = if set == "applications" {
            self.can_read_apps()
        } else {
            self.can_read_sps()
        };
        if !allowed {
            return denied();
        }
        let t = self.tenant_mut();
        let n = if set == "applications" {
            t.apps.len()
        } else {
            t.sps.len()
        };
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            n.to_string(),
        )
            .into_response()
    }

    fn list_apps(&mut self, q: &[(String, String)]) -> Response {
        if !self.can_read_apps() {
            return denied();
        }
        let keys = match parse_select(q, "application") {
            Ok(k) => k,
            Err(r) => return r,
        };
        let clauses = match parse_filter_for(
            q,
            "Application",
            &[
                "id",
                "appId",
                "displayName",
                "publisherDomain",
                "signInAudience",
                "uniqueName",
            ],
            &["displayName"],
        ) {
            Ok(c) => c,
            Err(r) => return r,
        };
        if let Some(r) = self.key_credentials_throttle(keys.as_deref()) {
            return r;
        }
        let ids: Vec<String> = self.tenant_mut().apps.keys().cloned().collect();
        let mut value = Vec::new();
        for id in ids {
            let Some((app, _)) = self.view_app(&id) else {
                continue;
            };
            if clauses.iter().all(|c| c.matches(&app)) && search_matches(q, &app) {
                value.push(Value::Object(project(&app, keys.as_deref())));
            }
        }
        self.page(q, "applications", value)
    }

    fn get_app(&mut self, id: &str, q: &[(String, String)]) -> Response {
        if !self.can_read_apps() {
            return denied();
        }
        let keys = match parse_select(q, "application") {
            Ok(k) => k,
            Err(r) => return r,
        };
        if !self.tenant_mut().apps.contains_key(id) || self.stale(id) {
            return not_found(id);
        }
        if let Some(r) = self.key_credentials_throttle(keys.as_deref()) {
            return r;
        }
        let base = self.base.clone();
        let (app, _) = self.view_app(id).unwrap_or_default();
        let mut out = Map::new();
        out.insert(
            "@odata.context".into(),
            json!(format!("{base}/v1.0/$metadata#applications/$entity")),
        );
        out.extend(project(&app, keys.as_deref()));
        ok_json(Value::Object(out))
    }

    fn patch_app(&mut self, id: &str, body: &[u8]) -> Response {
        let exists = self.tenant_mut().apps.contains_key(id);
        if !exists {
            return if self.can_read_apps() {
                not_found(id)
            } else {
                denied()
            };
        }
        if !self.can_write_app(id) {
            return denied();
        }
        let patch = match self.record("application", body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if let Err(errors) = schema::contract().validate_entity("application", &patch) {
            return bad_request(&errors.join(" "));
        }
        let Some(patch) = patch.as_object() else {
            return bad_request("The request body must be a JSON object.");
        };
        for ro in [
            "id",
            "appId",
            "createdDateTime",
            "deletedDateTime",
            "publisherDomain",
            "passwordCredentials",
        ] {
            if patch.contains_key(ro) {
                return bad_request(&format!(
                    "Property '{ro}' is read-only and cannot be set{}.",
                    if ro == "passwordCredentials" {
                        "; use addPassword and removePassword"
                    } else {
                        ""
                    }
                ));
            }
        }
        if let Some(Value::Array(rra)) = patch.get("requiredResourceAccess")
            && let Err(r) = check_required_resource_access(rra)
        {
            return r;
        }
        self.before_app_write(id);
        let contract = schema::contract();
        let t = self.tenant_mut();
        let Some(app) = t.apps.get_mut(id) else {
            return not_found(id);
        };
        for (k, v) in patch {
            if k.starts_with('@') {
                continue;
            }
            let collection = contract
                .property("application", k)
                .is_some_and(|p| p.ty.starts_with("Collection("));
            match (app.get_mut(k), v) {
                (Some(Value::Object(cur)), Value::Object(new)) if !collection => {
                    merge_complex(cur, new)
                }
                _ => {
                    app.insert(k.clone(), v.clone());
                }
            }
        }
        self.written(id);
        no_content()
    }

    fn app_policies(&mut self, id: &str, q: &[(String, String)]) -> Response {
        let exists = self.tenant_mut().apps.contains_key(id);
        if !exists {
            return if self.can_read_apps() {
                not_found(id)
            } else {
                denied()
            };
        }
        if !self.can_manage_app_policies(id) {
            return denied();
        }
        if let Err(r) = parse_select(q, "tokenLifetimePolicy") {
            return r;
        }
        if self.stale(id) {
            return not_found(id);
        }
        let (_, assigned) = self.view_app(id).unwrap_or_default();
        let t = self.tenant_mut();
        let value: Vec<Value> = assigned
            .iter()
            .filter_map(|pid| t.policies.get(pid))
            .map(|p| {
                let mut m = Map::new();
                m.insert(
                    "@odata.type".into(),
                    json!("#microsoft.graph.tokenLifetimePolicy"),
                );
                m.extend(p.clone());
                Value::Object(m)
            })
            .collect();
        self.page(q, "policies/tokenLifetimePolicies", value)
    }

    fn assign(&mut self, id: &str, body: &[u8]) -> Response {
        let exists = self.tenant_mut().apps.contains_key(id);
        if !exists {
            return if self.can_read_apps() {
                not_found(id)
            } else {
                denied()
            };
        }
        if !self.can_manage_app_policies(id) {
            return denied();
        }
        let v = match self.record("$ref", body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if let Err(e) = validate_body("$ref", &v) {
            return bad_request(&e.join(" "));
        }
        let url = v
            .get("@odata.id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(pid) = url
            .rsplit_once("/policies/tokenLifetimePolicies/")
            .map(|(_, pid)| pid.trim_end_matches('/').to_string())
        else {
            return bad_request(&format!("Invalid object identifier '{url}'."));
        };
        if self.stale(&pid) || self.view_policy(&pid).is_none() {
            return not_found(&pid);
        }
        let current = self
            .tenant_mut()
            .assigned
            .get(id)
            .cloned()
            .unwrap_or_default();
        if current.contains(&pid) {
            return bad_request(
                "One or more added object references already exist for the following modified properties: 'tokenLifetimePolicies'.",
            );
        }
        if let Some(other) = current.first() {
            return bad_request(&format!(
                "An application can have only one token lifetime policy; policy '{other}' is already assigned."
            ));
        }
        self.before_app_write(id);
        self.tenant_mut()
            .assigned
            .entry(id.to_string())
            .or_default()
            .push(pid);
        self.written(id);
        no_content()
    }

    fn unassign(&mut self, id: &str, pid: &str) -> Response {
        let exists = self.tenant_mut().apps.contains_key(id);
        if !exists {
            return not_found(id);
        }
        if !self.can_manage_app_policies(id) {
            return denied();
        }
        let assigned = self
            .tenant_mut()
            .assigned
            .get(id)
            .is_some_and(|l| l.iter().any(|x| x == pid));
        if !assigned {
            return not_found(pid);
        }
        self.before_app_write(id);
        if let Some(list) = self.tenant_mut().assigned.get_mut(id) {
            list.retain(|x| x != pid);
        }
        self.written(id);
        no_content()
    }

    fn list_sps(&mut self, q: &[(String, String)]) -> Response {
        if !self.can_read_sps() {
            return denied();
        }
        let keys = match parse_select(q, "servicePrincipal") {
            Ok(k) => k,
            Err(r) => return r,
        };
        let clauses = match parse_filter_for(
            q,
            "ServicePrincipal",
            &[
                "id",
                "appId",
                "displayName",
                "servicePrincipalType",
                "accountEnabled",
                "appOwnerOrganizationId",
            ],
            &["displayName"],
        ) {
            Ok(c) => c,
            Err(r) => return r,
        };
        if let Some(r) = self.key_credentials_throttle(keys.as_deref()) {
            return r;
        }
        let t = self.tenant_mut();
        let value: Vec<Value> = t
            .sps
            .values()
            .filter(|s| clauses.iter().all(|c| c.matches(s)) && search_matches(q, s))
            .map(|s| Value::Object(project(s, keys.as_deref())))
            .collect();
        self.page(q, "servicePrincipals", value)
    }

    fn get_sp(&mut self, id: &str, q: &[(String, String)]) -> Response {
        if !self.can_read_sps() {
            return denied();
        }
        let keys = match parse_select(q, "servicePrincipal") {
            Ok(k) => k,
            Err(r) => return r,
        };
        if !self.tenant_mut().sps.contains_key(id) {
            return not_found(id);
        }
        if let Some(r) = self.key_credentials_throttle(keys.as_deref()) {
            return r;
        }
        let base = self.base.clone();
        let sp = self.tenant_mut().sps.get(id).cloned().unwrap_or_default();
        let mut out = Map::new();
        out.insert(
            "@odata.context".into(),
            json!(format!("{base}/v1.0/$metadata#servicePrincipals/$entity")),
        );
        out.extend(project(&sp, keys.as_deref()));
        ok_json(Value::Object(out))
    }

    fn list_grants(&mut self, q: &[(String, String)]) -> Response {
        if !self.has_any(&[
            p::DIRECTORY_READ_ALL,
            p::DELEGATED_PERMISSION_GRANT_READ_ALL,
            p::DELEGATED_PERMISSION_GRANT_READWRITE_ALL,
            p::DIRECTORY_READWRITE_ALL,
        ]) {
            return denied();
        }
        let keys = match parse_select(q, "oAuth2PermissionGrant") {
            Ok(k) => k,
            Err(r) => return r,
        };
        let clauses = match parse_filter_for(
            q,
            "OAuth2PermissionGrant",
            &["clientId", "consentType", "principalId", "resourceId"],
            &[],
        ) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let t = self.tenant_mut();
        let value: Vec<Value> = t
            .grants
            .iter()
            .filter(|g| clauses.iter().all(|c| c.matches(g)))
            .map(|g| Value::Object(project(g, keys.as_deref())))
            .collect();
        self.page(q, "oauth2PermissionGrants", value)
    }

    fn list_policies(&mut self, q: &[(String, String)]) -> Response {
        if !self.policy_reader() {
            return denied();
        }
        let keys = match parse_select(q, "tokenLifetimePolicy") {
            Ok(k) => k,
            Err(r) => return r,
        };
        let clauses = match parse_filter_for(
            q,
            "TokenLifetimePolicy",
            &["id", "displayName", "isOrganizationDefault"],
            &["displayName"],
        ) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let mut ids: Vec<String> = self.tenant_mut().policies.keys().cloned().collect();
        // Policies created a moment ago may still be invisible; deleted ones still listed.
        for (t, id) in self.st.stale_policies.keys() {
            if *t == self.tenant && !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids.sort();
        let mut value = Vec::new();
        for id in ids {
            if let Some(p) = self.view_policy(&id)
                && clauses.iter().all(|c| c.matches(&p))
            {
                value.push(Value::Object(project(&p, keys.as_deref())));
            }
        }
        self.page(q, "policies/tokenLifetimePolicies", value)
    }

    fn get_policy(&mut self, id: &str, q: &[(String, String)]) -> Response {
        if !self.policy_reader() {
            return denied();
        }
        let keys = match parse_select(q, "tokenLifetimePolicy") {
            Ok(k) => k,
            Err(r) => return r,
        };
        match self.view_policy(id) {
            Some(p) => {
                let mut out = Map::new();
                out.insert(
                    "@odata.context".into(),
                    json!(format!(
                        "{}/v1.0/$metadata#policies/tokenLifetimePolicies/$entity",
                        self.base
                    )),
                );
                out.extend(project(&p, keys.as_deref()));
                ok_json(Value::Object(out))
            }
            None => not_found(id),
        }
    }

    #[allow(clippy::result_large_err)]
    fn check_policy_body(&self, v: &Value, create: bool) -> Result<(), Response> {
        if let Err(e) = schema::contract().validate_entity("tokenLifetimePolicy", v) {
            return Err(bad_request(&e.join(" ")));
        }
        for ro in ["id", "deletedDateTime"] {
            if v.get(ro).is_some() {
                return Err(bad_request(&format!(
                    "Property '{ro}' is read-only and cannot be set."
                )));
            }
        }
        match v.get("definition") {
            Some(d) => check_definition(d)
                .map_err(|e| bad_request(&format!("Invalid policy definition: {e}")))?,
            None if create => return Err(bad_request("Property 'definition' is required.")),
            None => {}
        }
        if create
            && v.get("displayName")
                .and_then(Value::as_str)
                .is_none_or(|s| s.trim().is_empty())
        {
            return Err(bad_request("Property 'displayName' is required."));
        }
        Ok(())
    }

    fn create_policy(&mut self, body: &[u8]) -> Response {
        if !self.policy_writer() {
            return denied();
        }
        let v = match self.record("tokenLifetimePolicy", body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if let Err(r) = self.check_policy_body(&v, true) {
            return r;
        }
        let id = new_id();
        let mut policy = obj(
            json!({"id": id, "deletedDateTime": null, "definition": [], "description": null,
                                    "displayName": null, "isOrganizationDefault": false}),
        );
        for (k, val) in v.as_object().into_iter().flatten() {
            if !k.starts_with('@') {
                policy.insert(k.clone(), val.clone());
            }
        }
        let base = self.base.clone();
        self.before_policy_write(&id, None);
        self.tenant_mut()
            .policies
            .insert(id.clone(), policy.clone());
        self.written(&id);
        let mut out = Map::new();
        out.insert(
            "@odata.context".into(),
            json!(format!(
                "{base}/v1.0/$metadata#policies/tokenLifetimePolicies/$entity"
            )),
        );
        out.extend(policy);
        (StatusCode::CREATED, axum::Json(Value::Object(out))).into_response()
    }

    fn patch_policy(&mut self, id: &str, body: &[u8]) -> Response {
        if !self.policy_writer() {
            return denied();
        }
        let Some(current) = self.tenant_mut().policies.get(id).cloned() else {
            return not_found(id);
        };
        let v = match self.record("tokenLifetimePolicy", body) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if let Err(r) = self.check_policy_body(&v, false) {
            return r;
        }
        self.before_policy_write(id, Some(current));
        if let Some(p) = self.tenant_mut().policies.get_mut(id) {
            for (k, val) in v.as_object().into_iter().flatten() {
                if !k.starts_with('@') {
                    p.insert(k.clone(), val.clone());
                }
            }
        }
        no_content()
    }

    fn delete_policy(&mut self, id: &str) -> Response {
        if !self.policy_writer() {
            return denied();
        }
        let Some(current) = self.tenant_mut().policies.get(id).cloned() else {
            return not_found(id);
        };
        self.before_policy_write(id, Some(current));
        let t = self.tenant_mut();
        t.policies.remove(id);
        for list in t.assigned.values_mut() {
            list.retain(|x| x != id);
        }
        no_content()
    }
}

/// Most resources (APIs) one `requiredResourceAccess` may name.
pub const MAX_REQUIRED_RESOURCES: usize = 50;

/// Most permissions one `requiredResourceAccess` may hold in total.
pub const MAX_REQUIRED_PERMISSIONS: usize = 400;

/// Graph's checks of a `requiredResourceAccess` collection: `type` Scope or Role, no
/// duplicates, at most [`MAX_REQUIRED_RESOURCES`] resources and [`MAX_REQUIRED_PERMISSIONS`]
/// permissions.
#[allow(clippy::result_large_err)]
fn check_required_resource_access(rra: &[Value]) -> Result<(), Response> {
    let mut total = 0;
    for r in rra {
        let mut seen = BTreeSet::new();
        for a in r
            .get("resourceAccess")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ty = a.get("type").and_then(Value::as_str).unwrap_or_default();
            if ty != "Scope" && ty != "Role" {
                return Err(bad_request(&format!(
                    "Invalid value specified for property 'type' of resource 'ResourceAccess': {ty:?} (Scope or Role)."
                )));
            }
            let key = (
                a.get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                ty.to_string(),
            );
            if !seen.insert(key.clone()) {
                return Err(bad_request(&format!(
                    "Duplicate resourceAccess entry {} ({}) in requiredResourceAccess.",
                    key.0, key.1
                )));
            }
            total += 1;
        }
    }
    if rra.len() > MAX_REQUIRED_RESOURCES || total > MAX_REQUIRED_PERMISSIONS {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "Directory_QuotaExceeded",
            "This configuration exceeds the global application object limit. Remove some items and retry your request.",
        ));
    }
    Ok(())
}

/// Graph merges complex-typed properties property by property; collections inside are replaced.
fn merge_complex(cur: &mut Map<String, Value>, new: &Map<String, Value>) {
    for (k, v) in new {
        match (cur.get_mut(k), v) {
            (Some(Value::Object(c)), Value::Object(n)) => merge_complex(c, n),
            _ => {
                cur.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates() {
        assert_eq!(route_template("/abc/oauth2/v2.0/token"), TOKEN_ROUTE);
        assert_eq!(
            route_template("/v1.0/applications(appId='3d7f2b9a-6c41-4e85-a0d2-9b1c7e5f4a68')"),
            "/v1.0/applications(appId='{appId}')"
        );
        assert_eq!(
            route_template("/v1.0/applications(appId=%273d7f%27)"),
            "/v1.0/applications(appId='{appId}')"
        );
        assert_eq!(
            route_template("/v1.0/applications/x"),
            "/v1.0/applications/{id}"
        );
        assert_eq!(
            route_template("/v1.0/applications/x/tokenLifetimePolicies/$ref"),
            "/v1.0/applications/{id}/tokenLifetimePolicies/$ref"
        );
        assert_eq!(
            route_template("/v1.0/applications/x/tokenLifetimePolicies/y/$ref"),
            "/v1.0/applications/{id}/tokenLifetimePolicies/{policyId}/$ref"
        );
        assert_eq!(
            route_template("/v1.0/policies/tokenLifetimePolicies/y"),
            "/v1.0/policies/tokenLifetimePolicies/{id}"
        );
        assert_eq!(
            route_template("/v1.0/oauth2PermissionGrants"),
            "/v1.0/oauth2PermissionGrants"
        );
    }

    #[test]
    fn timespans_and_definitions() {
        assert_eq!(parse_timespan("01:00:00"), Some(3600));
        assert_eq!(parse_timespan("1.00:00:00"), Some(86_400));
        assert_eq!(parse_timespan("00:10:00.0000000"), Some(600));
        assert_eq!(parse_timespan("1:2"), None);
        assert_eq!(parse_timespan("00:61:00"), None);
        check_definition(&json!([
            "{\"TokenLifetimePolicy\":{\"Version\":1,\"AccessTokenLifetime\":\"02:00:00\"}}"
        ]))
        .unwrap();
        assert!(
            check_definition(&json!([
                "{\"TokenLifetimePolicy\":{\"Version\":1,\"AccessTokenLifetime\":\"00:05:00\"}}"
            ]))
            .is_err()
        );
        assert!(check_definition(&json!(["{\"TokenLifetimePolicy\":{\"Version\":2}}"])).is_err());
        assert!(check_definition(&json!([{"TokenLifetimePolicy": {"Version": 1}}])).is_err());
        assert!(check_definition(&json!(["a", "b"])).is_err());
    }

    #[test]
    fn complex_properties_merge_and_collections_replace() {
        let mut cur = obj(
            json!({"redirectUris": ["a"], "implicitGrantSettings": {"enableIdTokenIssuance": true, "enableAccessTokenIssuance": false}}),
        );
        merge_complex(
            &mut cur,
            &obj(
                json!({"redirectUris": ["b"], "implicitGrantSettings": {"enableIdTokenIssuance": false}}),
            ),
        );
        assert_eq!(
            Value::Object(cur),
            json!({"redirectUris": ["b"], "implicitGrantSettings": {"enableIdTokenIssuance": false, "enableAccessTokenIssuance": false}})
        );
    }

    #[test]
    fn stock_application_round_trips_known_types() {
        let app = stock_application("3d7f2b9a-6c41-4e85-a0d2-9b1c7e5f4a68", "Coder");
        schema::contract()
            .validate_entity("application", &app)
            .unwrap();
    }
}
