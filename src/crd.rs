//! The `OidcRefreshPolicy` custom resource (`oidcrefresh.dev/v1alpha1`): types, schema rules, and
//! the generated CRD. No I/O here.
//!
//! Everything the schema can reject is rejected at `kubectl apply` (patterns, enums, CEL rules);
//! what needs the outside world (Secrets, the Deployment, the identity provider) is reported by the
//! controller in conditions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Field manager used for every write the operator makes.
pub const FIELD_MANAGER: &str = "oidc-refresh-operator";
/// Default container name (the Coder Helm chart's).
pub const DEFAULT_CONTAINER: &str = "coder";
/// Default drift re-check period.
pub const DEFAULT_INTERVAL: &str = "10m";

/// Desired refresh-token setup for the OIDC client a Coder deployment uses, and the Coder
/// Deployment to wire to it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "oidcrefresh.dev",
    version = "v1alpha1",
    kind = "OidcRefreshPolicy",
    plural = "oidcrefreshpolicies",
    shortname = "orp",
    namespaced,
    status = "OidcRefreshPolicyStatus",
    category = "all",
    doc = "Makes OIDC refresh tokens work for a Coder deployment: configures the identity provider's client and merges CODER_OIDC_SCOPES / CODER_OIDC_AUTH_URL_PARAMS into the Coder Deployment.",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".status.provider","description":"Identity provider kind"}"#,
    printcolumn = r#"{"name":"Deployment","type":"string","jsonPath":".spec.coder.deployment","description":"Coder Deployment wired by this policy"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pendingChanges","description":"Changes the operator would make (Observe mode) or has still to make"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OidcRefreshPolicySpec {
    /// The identity provider that issues tokens to Coder. Set exactly one key.
    pub provider: ProviderSpec,
    /// Refresh-token settings wanted at the identity provider. Every field is optional; an unset
    /// field leaves the provider's current value alone.
    #[serde(default)]
    pub refresh_tokens: RefreshTokensSpec,
    /// The Coder Deployment whose `CODER_OIDC_SCOPES` and `CODER_OIDC_AUTH_URL_PARAMS` are managed.
    pub coder: CoderSpec,
    /// `Enforce` (default) changes the identity provider and the Deployment; `Observe` only
    /// reports in conditions what differs, and changes nothing.
    #[serde(default)]
    pub management_policy: ManagementPolicy,
    /// How often drift is re-checked when nothing else triggers a reconcile (Kubernetes duration,
    /// for example `10m`; at least `30s`).
    #[serde(default = "default_interval")]
    #[schemars(schema_with = "interval_schema")]
    pub interval: String,
}

fn default_interval() -> String {
    DEFAULT_INTERVAL.to_string()
}

/// Exactly one identity provider.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.google) ? 1 : 0) + (has(self.keycloak) ? 1 : 0) + (has(self.pingFederate) ? 1 : 0) + (has(self.entraId) ? 1 : 0) + (has(self.logto) ? 1 : 0) + (has(self.okta) ? 1 : 0) + (has(self.duende) ? 1 : 0) == 1",
    "message": "set exactly one provider: google, keycloak, pingFederate, entraId, logto, okta or duende"
}]))]
#[schemars(transform = harden_provider_schema)]
pub struct ProviderSpec {
    /// Google: no admin API; only Coder's side is configured (`access_type=offline`,
    /// `prompt=consent`, and no `offline_access` scope, which Google rejects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google: Option<GoogleSpec>,
    /// Keycloak, configured through its Admin REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keycloak: Option<KeycloakSpec>,
    /// PingFederate, configured through its administrative API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_federate: Option<PingFederateSpec>,
    /// Microsoft Entra ID, configured through Microsoft Graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_id: Option<EntraIdSpec>,
    /// Logto (self-hosted or a Logto Cloud tenant), configured through its Management API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logto: Option<LogtoSpec>,
    /// Okta, configured through its Management API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub okta: Option<OktaSpec>,
    /// Duende IdentityServer, configured through the Skoruba admin API or its configuration
    /// database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duende: Option<DuendeSpec>,
}

/// Google has no settings here.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct GoogleSpec {}

/// Keycloak connection and client.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeycloakSpec {
    /// Base URL of Keycloak, without `/admin` (a legacy `/auth` prefix is kept if given),
    /// for example `https://sso.example.com`.
    #[schemars(regex(pattern = URL_PATTERN), length(max = 2048))]
    pub url: String,
    /// Realm of the client Coder uses.
    #[schemars(schema_with = "realm_schema")]
    pub realm: String,
    /// The `clientId` Coder uses (not Keycloak's internal UUID).
    #[schemars(regex(pattern = NO_CONTROL_PATTERN), length(min = 1, max = 255))]
    pub client_id: String,
    /// Name of a Secret in this namespace with `client-id` + `client-secret` (client
    /// credentials) or `username` + `password` (password grant via `admin-cli`); optionally
    /// `ca.crt` with a PEM CA bundle for a Keycloak with a private CA.
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub credentials_secret: String,
    /// Realm the admin credentials live in (default: `realm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_realm_schema")]
    pub auth_realm: Option<String>,
    /// Allow changes to realm-wide settings (`offlineSessionMaxLifespanEnabled`,
    /// `revokeRefreshToken`, `refreshTokenMaxReuse`), which affect every client of the realm.
    /// When false (default) and such a change is needed, the policy stalls with `Unsupported`
    /// and says what to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_realm_changes: Option<bool>,
}

/// PingFederate connection and client.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PingFederateSpec {
    /// Admin base URL, for example `https://pf.example.com:9999`; `/pf-admin-api/v1` is appended.
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/[^\s]*)?$"))]
    pub admin_url: String,
    /// The OAuth client id Coder uses.
    #[schemars(length(min = 1))]
    pub client_id: String,
    /// Name of a Secret in this namespace with `username` + `password` (HTTP Basic) and
    /// optionally `ca.crt`.
    #[schemars(length(min = 1))]
    pub credentials_secret: String,
    /// Clustered PingFederate: how the operator's changes reach the engine nodes, which serve
    /// tokens from replicated configuration only. `Automatic` (default): after its own writes the
    /// operator replicates (`POST /cluster/replicate`, needs the Admin role) when
    /// `GET /cluster/status` says `replicationRequired`; if replication was already required before
    /// its writes (other administrators' pending console changes) it writes nothing, replicates
    /// nothing and reports `ReplicationPending` until an administrator has replicated them.
    /// `Manual`: the operator never replicates; while replication is required the identity
    /// provider is not Ready (`ReplicationPending`) until an administrator replicates. Ignored by a
    /// standalone server.
    #[serde(default)]
    pub replication: PingFederateReplication,
}

/// How PingFederate configuration changes are replicated to the engine nodes of a cluster.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PingFederateReplication {
    /// The operator replicates its own changes; it never pushes other pending changes.
    #[default]
    Automatic,
    /// An administrator replicates; the operator only reports until then.
    Manual,
}

/// Microsoft Entra ID tenant and app registration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntraIdSpec {
    /// Directory (tenant) id.
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub tenant_id: String,
    /// Application (client) id (`appId`) of Coder's app registration.
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub application_id: String,
    /// Name of a Secret in this namespace with `client-id` + `client-secret` of a management app
    /// allowed to update applications through Microsoft Graph.
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub credentials_secret: String,
    /// Token authority (default `https://login.microsoftonline.com`; set it for national clouds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = URL_PATTERN), length(max = 2048))]
    pub authority_host: Option<String>,
    /// Microsoft Graph endpoint (default `https://graph.microsoft.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = URL_PATTERN), length(max = 2048))]
    pub graph_endpoint: Option<String>,
}

/// Logto endpoint, Coder's application and the operator's machine-to-machine app.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogtoSpec {
    /// The Logto endpoint: a Cloud tenant's `https://<tenant-id>.logto.app` (or its custom
    /// domain), or a self-hosted Logto's core URL (port 3001 by default), without `/api`.
    #[schemars(regex(pattern = URL_PATTERN), length(max = 2048))]
    pub endpoint: String,
    /// App ID of the Traditional web application Coder signs in with (`CODER_OIDC_CLIENT_ID`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+$"), length(min = 1, max = 21))]
    pub application_id: String,
    /// Name of a Secret in this namespace with `client-id` + `client-secret` of a
    /// machine-to-machine app whose role grants the Logto Management API permission `all`, and
    /// optionally `ca.crt`.
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub credentials_secret: String,
    /// Logto Cloud tenant id, for a tenant behind a custom domain: the Management API resource
    /// indicator is `https://<tenantId>.logto.app/api`. Default: taken from an endpoint
    /// `https://<tenant-id>.logto.app`, else `default` (self-hosted Logto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]+$"), length(min = 1, max = 21))]
    pub tenant_id: Option<String>,
}

/// Okta org, Coder's app, the authorization server Coder uses and the operator's credentials.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OktaSpec {
    /// The Okta org URL, e.g. `https://example.okta.com` (no path).
    #[schemars(regex(pattern = URL_PATTERN), length(max = 2048))]
    pub org_url: String,
    /// Client ID of the OIDC web app Coder signs in with (`CODER_OIDC_CLIENT_ID`).
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9$_.+!*'(),-]+$"),
        length(min = 6, max = 100)
    )]
    pub client_id: String,
    /// ID of the custom authorization server Coder's issuer belongs to (`default` for
    /// `https://<org>/oauth2/default`). Leave it out when Coder uses the org authorization server
    /// (issuer `https://<org>`), whose token lifetimes are fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+$"), length(min = 1, max = 64))]
    pub authorization_server_id: Option<String>,
    /// Name of a Secret in this namespace with either `api-token` (an SSWS API token), or
    /// `client-id` + `private-key` (PEM, RSA or P-256) and optionally `key-id` of an API service
    /// app using `private_key_jwt` (DPoP is used when the app requires it); optionally `ca.crt`.
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub credentials_secret: String,
    /// Grace period, in seconds, during which a rotated refresh token still works (Okta's
    /// `leeway`, 0-60) with `rotation: Rotate` (default 30): it lets Coder's concurrent refreshes
    /// succeed. `RotateStrict` always uses 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub rotation_leeway_seconds: Option<u32>,
    /// Allow changing an access-policy rule that also applies to other apps (a policy for
    /// `ALL_CLIENTS` or for several clients). Off by default: the operator then reports which
    /// apps the change would affect and stalls.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_shared_rule: bool,
}

/// Duende IdentityServer: Coder's client and how to reach it, through exactly one backend.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.adminApi) ? 1 : 0) + (has(self.database) ? 1 : 0) == 1",
    "message": "set exactly one Duende backend: adminApi or database"
}]))]
pub struct DuendeSpec {
    /// `ClientId` of the client Coder signs in with (`CODER_OIDC_CLIENT_ID`). The operator never
    /// creates clients.
    #[schemars(length(min = 1, max = 200))]
    pub client_id: String,
    /// Name of a Secret in this namespace. Admin API backend: `client-id` + `client-secret` of an
    /// STS client allowed the admin API's scope and carrying the administration role claim
    /// (optionally `ca.crt`). Database backend: `connection-string`, a PostgreSQL connection URI
    /// or key=value string (optionally `ca.crt`).
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub credentials_secret: String,
    /// The Skoruba Duende.IdentityServer.Admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_api: Option<DuendeAdminApiSpec>,
    /// Duende's EF Core configuration database (`ConfigurationDbContext` tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DuendeDatabaseSpec>,
}

/// The Skoruba admin API and the STS that issues its tokens.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DuendeAdminApiSpec {
    /// Base URL of the admin API, without `/api` (for example `https://admin-api.example.com`).
    #[schemars(regex(pattern = URL_PATTERN), length(max = 2048))]
    pub url: String,
    /// Base URL of the IdentityServer (STS) the admin API trusts (its `IdentityServerBaseUrl`);
    /// tokens come from `{authority}/connect/token`.
    #[schemars(regex(pattern = URL_PATTERN), length(max = 2048))]
    pub authority: String,
    /// Scope to request, the admin API's `OidcApiName` (default `skoruba_identity_admin_api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[!#-\[\]-~]+$"), length(min = 1, max = 200))]
    pub scope: Option<String>,
}

/// Duende's configuration database.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DuendeDatabaseSpec {
    /// Database engine (only `PostgreSQL` for now).
    #[serde(default)]
    pub engine: DuendeDatabaseEngine,
    /// Schema of the `Clients` table (`ConfigurationStoreOptions.DefaultSchema`; default
    /// `public`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"),
        length(min = 1, max = 63)
    )]
    pub schema: Option<String>,
}

/// Database engines of the Duende database backend.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DuendeDatabaseEngine {
    /// PostgreSQL (Npgsql's EF Core provider).
    #[default]
    PostgreSQL,
}

/// Refresh-token settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.lifetime) || !has(self.idleTimeout) || duration(self.idleTimeout) <= duration(self.lifetime)",
    "message": "idleTimeout must not be longer than lifetime"
}]))]
pub struct RefreshTokensSpec {
    /// Make the `offline_access` scope available at the provider and request it from Coder
    /// (default true). Never used for Google, which uses `access_type=offline` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_access: Option<bool>,
    /// Absolute maximum lifetime of a refresh token (Kubernetes duration, e.g. `720h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "positive_duration_schema")]
    pub lifetime: Option<String>,
    /// A refresh token unused this long expires (e.g. `24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "positive_duration_schema")]
    pub idle_timeout: Option<String>,
    /// `Rotate`: a refresh token is replaced on use and the used one stays redeemable only for a
    /// short reuse window that covers concurrent refreshes (Keycloak: 5 extra uses, PingFederate:
    /// a 60 s grace period); `RotateStrict`: one-time use with no window, so two refreshes at the
    /// same moment sign the user out; `Reuse`: a refresh token stays valid across uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    /// Lifetime of access tokens issued to Coder (e.g. `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "positive_duration_schema")]
    pub access_token_lifetime: Option<String>,
}

/// Refresh-token rotation. `Rotate`: every refresh returns a new refresh token, and the used
/// one stays redeemable for a short window, so that refreshes racing each other (Coder refreshes
/// inside each request, with no lock across requests or replicas) all succeed: Keycloak
/// `refreshTokenMaxReuse` at least 5, PingFederate a rolling grace period of at least 60 s.
/// `RotateStrict`: strict one-time use (no reuse, no grace period); the loser of two concurrent
/// refreshes gets `invalid_grant` and the user is signed out (a warning says so). `Reuse`: the
/// same refresh token can be used again.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Rotation {
    /// Rotation with a reuse window that covers concurrent refreshes.
    Rotate,
    /// Strict one-time use: no reuse, no grace period.
    RotateStrict,
    /// The same refresh token can be used again.
    Reuse,
}

/// The Coder side.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoderSpec {
    /// Name of the Coder Deployment in this namespace.
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub deployment: String,
    /// Container that runs `coder server` (default `coder`, the Coder Helm chart's name).
    #[serde(default = "default_container")]
    #[schemars(regex(pattern = DNS_LABEL_PATTERN), length(min = 1, max = 63))]
    pub container: String,
    /// Extra scopes to ensure in `CODER_OIDC_SCOPES`. Scopes already set are always kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "scopes_schema")]
    pub scopes: Vec<String>,
    /// Extra parameters to ensure in `CODER_OIDC_AUTH_URL_PARAMS`. Parameters already set are
    /// always kept; these values win for the keys they name.
    #[serde(
        default,
        rename = "authURLParams",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(schema_with = "auth_url_params_schema")]
    pub auth_url_params: BTreeMap<String, String>,
    /// What to do when another declarative owner (Helm, Argo CD, Flux, any server-side applier)
    /// owns the env entries: `Report` (default) changes nothing and sets `CoderConfigured=False`
    /// with reason `FieldConflict`; `Force` takes ownership.
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,
}

fn default_container() -> String {
    DEFAULT_CONTAINER.to_string()
}

/// Handling of env entries owned by another declarative manager.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ConflictPolicy {
    /// Report the conflict and change nothing.
    #[default]
    Report,
    /// Take ownership of the entries.
    Force,
}

/// Whether the operator changes things or only reports.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ManagementPolicy {
    /// Change the identity provider and the Deployment to match the policy.
    #[default]
    Enforce,
    /// Report what differs; change nothing.
    Observe,
}

/// Observed state, written by the controller.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcRefreshPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Identity provider kind (`google`, `keycloak`, `pingFederate`, `entraId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Ready, Reconciling, Stalled, IdentityProviderConfigured, CoderConfigured, CoderRolledOut.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// What was observed at the identity provider after the last reconcile (no secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_provider: Option<IdentityProviderStatus>,
    /// The values Coder is configured with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coder: Option<CoderStatus>,
    /// Things worth knowing that do not block refresh tokens (for example a client secret that
    /// expires soon, or a consent that is missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<PolicyWarning>,
    /// When Coder first got settings that need every user to sign out and in again to obtain a
    /// refresh token (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_must_sign_in_again_since: Option<String>,
    /// Number of entries in `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_changes: Option<i64>,
    /// The changes still to make, field by field: in `Observe` mode everything the operator would
    /// write (a dry run), in `Enforce` mode what a pass could not write yet. Empty when converged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlannedChange>,
    /// Events not published yet: recorded before the operator writes to the identity provider
    /// or the Deployment, and kept while publishing fails, so that a restart (even a SIGKILL
    /// between a write and its Event) still announces what was done. Empty once published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub pending_announcements: Vec<PendingAnnouncement>,
}

/// An Event the operator still has to publish.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct PendingAnnouncement {
    /// Identifies the announcement, so that one operator process never publishes it twice.
    #[schemars(length(max = 32))]
    pub id: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// CamelCase reason of the Event, e.g. `IdentityProviderUpdated`.
    #[schemars(length(max = 128))]
    pub reason: String,
    /// The Event's message.
    #[schemars(length(max = 1024))]
    pub note: String,
}

/// One pending change.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct PlannedChange {
    /// The object changed: the identity provider's client, realm or server settings, or the Coder
    /// Deployment's container.
    pub target: String,
    /// The setting (attribute, field or env variable).
    pub field: String,
    /// Its value now.
    pub current: String,
    /// The value the policy needs.
    pub desired: String,
    /// Why the policy needs it.
    pub reason: String,
}

/// A non-blocking finding.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct PolicyWarning {
    /// CamelCase reason, e.g. `ClientSecretExpiring`.
    pub reason: String,
    /// What it means and what to do.
    pub message: String,
}

/// Observed identity-provider settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityProviderStatus {
    /// How long or how often a rotated refresh token can still be redeemed, so that Coder's
    /// concurrent refreshes succeed (`5 reuses` in Keycloak, `60s` in PingFederate; `0 reuses` or
    /// `0s` is strict one-time use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_window: Option<String>,
    /// The client may use the `refresh_token` grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_grant: Option<bool>,
    /// `offline_access` is available to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_access: Option<bool>,
    /// Effective absolute refresh-token lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<String>,
    /// Effective refresh-token idle timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Effective rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    /// Effective access-token lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_lifetime: Option<String>,
}

/// Values of Coder's two env entries.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoderStatus {
    /// `CODER_OIDC_SCOPES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<String>,
    /// `CODER_OIDC_AUTH_URL_PARAMS`.
    #[serde(
        default,
        rename = "authURLParams",
        skip_serializing_if = "Option::is_none"
    )]
    pub auth_url_params: Option<String>,
}

fn duration_schema(description_extra: Option<(&str, &str)>) -> schemars::Schema {
    let mut schema = schemars::json_schema!({
        "type": "string",
        "pattern": crate::duration::PATTERN,
    });
    if let Some((rule, message)) = description_extra {
        schema.insert(
            "x-kubernetes-validations".into(),
            serde_json::json!([{ "rule": rule, "message": message }]),
        );
    }
    schema
}

fn interval_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut s = duration_schema(Some((
        "duration(self) >= duration('30s')",
        "interval must be at least 30s",
    )));
    s.insert("default".into(), DEFAULT_INTERVAL.into());
    s.insert(
        "description".into(),
        "How often drift is re-checked when nothing else triggers a reconcile (Kubernetes duration, for example `10m`; at least `30s`).".into(),
    );
    s
}

fn positive_duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    duration_schema(Some((
        "duration(self) > duration('0s')",
        "must be longer than 0s",
    )))
}

/// An http(s) base URL: no user info (`user:pw@`), no query, no fragment, no whitespace.
pub const URL_PATTERN: &str = r"^https?://[^\s/@?#]+(/[^\s?#]*)?$";
/// A DNS-1123 subdomain (names of Deployments and Secrets).
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A DNS-1123 label (container names).
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Text without control characters.
pub const NO_CONTROL_PATTERN: &str = r"^[^\x00-\x1f\x7f]+$";
/// Most scopes in `coder.scopes`.
pub const MAX_SCOPES: u64 = 50;
/// Most entries in `coder.authURLParams`.
pub const MAX_AUTH_URL_PARAMS: u64 = 32;

fn realm_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[^/\\\\\\x00-\\x1f\\x7f]+$",
        "x-kubernetes-validations": [{
            "rule": "!self.contains('..')",
            "message": "a realm name contains no '..'"
        }]
    })
}

fn optional_realm_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut s = realm_schema(g);
    s.remove("minLength");
    s.insert("nullable".into(), true.into());
    s
}

fn auth_url_params_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_AUTH_URL_PARAMS,
        "additionalProperties": {
            "type": "string",
            "maxLength": 1024,
            "pattern": "^[^\\x00-\\x1f\\x7f]*$"
        },
        "x-kubernetes-validations": [{
            "rule": "self.all(k, size(k) >= 1 && size(k) <= 128 && k.matches('^[A-Za-z0-9_.~-]+$'))",
            "message": "authURLParams keys are 1 to 128 characters of letters, digits, '_', '.', '~' and '-'"
        }]
    })
}

fn scopes_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "set",
        "maxItems": MAX_SCOPES,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "pattern": "^[^,\\s\"\\x00-\\x1f\\x7f]+$"
        }
    })
}

/// Limits on the `pingFederate` block, whose struct is kept free of schema attributes: URL
/// shape and length, and names Kubernetes accepts.
fn harden_provider_schema(schema: &mut schemars::Schema) {
    let Some(pf) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("pingFederate"))
        .and_then(|p| p.get_mut("properties"))
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    let mut set = |field: &str, extra: serde_json::Value| {
        if let (Some(serde_json::Value::Object(f)), serde_json::Value::Object(extra)) =
            (pf.get_mut(field), extra)
        {
            f.extend(extra);
        }
    };
    set(
        "adminUrl",
        serde_json::json!({"pattern": URL_PATTERN, "maxLength": 2048}),
    );
    set(
        "clientId",
        serde_json::json!({"pattern": NO_CONTROL_PATTERN, "maxLength": 255}),
    );
    set(
        "credentialsSecret",
        serde_json::json!({"pattern": DNS_SUBDOMAIN_PATTERN, "maxLength": 253}),
    );
}

fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {"type": "string", "description": "Condition type."},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "observedGeneration": {"type": "integer", "format": "int64"},
                "lastTransitionTime": {"type": "string", "format": "date-time", "description": "When the status last changed."},
                "reason": {"type": "string", "description": "CamelCase reason."},
                "message": {"type": "string", "description": "What happened and what to do next."}
            }
        }
    })
}

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn crd_yaml() -> String {
    let crd = OidcRefreshPolicy::crd();
    let yaml = serde_saphyr::to_string(&crd).expect("the CRD serializes");
    format!("# Generated by `oidc-refresh-operator crd`. Do not edit.\n---\n{yaml}")
}

impl OidcRefreshPolicy {
    /// Provider kind name as shown in status (`google`, `keycloak`, `pingFederate`, `entraId`,
    /// `logto`, `okta`, `duende`).
    pub fn provider_name(&self) -> &'static str {
        self.spec.provider.kind_name()
    }
}

impl ProviderSpec {
    /// Name of the configured provider; `unknown` only for a spec that bypassed the schema.
    pub fn kind_name(&self) -> &'static str {
        if self.google.is_some() {
            "google"
        } else if self.keycloak.is_some() {
            "keycloak"
        } else if self.ping_federate.is_some() {
            "pingFederate"
        } else if self.entra_id.is_some() {
            "entraId"
        } else if self.logto.is_some() {
            "logto"
        } else if self.okta.is_some() {
            "okta"
        } else if self.duende.is_some() {
            "duende"
        } else {
            "unknown"
        }
    }

    /// Name of the Secret holding admin credentials, if the provider needs one.
    pub fn credentials_secret(&self) -> Option<&str> {
        if let Some(k) = &self.keycloak {
            Some(&k.credentials_secret)
        } else if let Some(p) = &self.ping_federate {
            Some(&p.credentials_secret)
        } else if let Some(l) = &self.logto {
            Some(&l.credentials_secret)
        } else if let Some(o) = &self.okta {
            Some(&o.credentials_secret)
        } else if let Some(d) = &self.duende {
            Some(&d.credentials_secret)
        } else {
            self.entra_id
                .as_ref()
                .map(|e| e.credentials_secret.as_str())
        }
    }

    /// Number of providers set (the schema requires exactly one).
    pub fn count(&self) -> usize {
        [
            self.google.is_some(),
            self.keycloak.is_some(),
            self.ping_federate.is_some(),
            self.entra_id.is_some(),
            self.logto.is_some(),
            self.okta.is_some(),
            self.duende.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_policy_gets_defaults() {
        let spec: OidcRefreshPolicySpec = serde_json::from_value(serde_json::json!({
            "provider": {"google": {}},
            "coder": {"deployment": "coder"}
        }))
        .unwrap();
        assert_eq!(spec.interval, "10m");
        assert_eq!(spec.coder.container, "coder");
        assert_eq!(spec.management_policy, ManagementPolicy::Enforce);
        assert_eq!(spec.coder.conflict_policy, ConflictPolicy::Report);
        assert_eq!(spec.provider.kind_name(), "google");
        assert_eq!(spec.provider.credentials_secret(), None);
    }

    #[test]
    fn crd_has_names_columns_and_rules() {
        let crd = serde_json::to_value(OidcRefreshPolicy::crd()).unwrap();
        assert_eq!(
            crd["metadata"]["name"],
            "oidcrefreshpolicies.oidcrefresh.dev"
        );
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "orp");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        let cols: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            cols,
            [
                "Provider",
                "Deployment",
                "Ready",
                "Reason",
                "Pending",
                "Age"
            ]
        );
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let provider_rules = &spec["properties"]["provider"]["x-kubernetes-validations"];
        assert!(
            provider_rules[0]["rule"]
                .as_str()
                .unwrap()
                .contains("has(self.entraId)")
        );
        let interval = &spec["properties"]["interval"];
        assert_eq!(interval["default"], "10m");
        assert_eq!(interval["pattern"], crate::duration::PATTERN);
        let conditions = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            ["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert!(version["subresources"]["status"].is_object());
    }
}
