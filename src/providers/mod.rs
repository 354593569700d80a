//! Identity providers behind one narrow, domain-typed trait.
//!
//! Nothing outside this module knows the JSON of an identity provider. Every provider follows
//! the same three steps (see `docs/provider-contract.md`):
//!
//! 1. [`IdentityProvider::observe`] (I/O, reads only) returns a [`Snapshot`]: everything read,
//!    opaque to the rest of the operator.
//! 2. [`IdentityProvider::plan`] (pure: no I/O, no clock, no hidden state) turns a snapshot and
//!    the [`DesiredSettings`] into an [`IdpPlan`]: the pending changes field by field
//!    ([`Change`]: target, field, current, desired, why), findings, what Coder must send, and the
//!    writes as data.
//! 3. [`IdentityProvider::apply`] performs exactly the writes of a plan, reads back, and fails
//!    with [`ProviderError::NotPersisted`] when the read-back still differs.
//!
//! Provider objects keep no state between the steps: a plan carries everything `apply` needs.
//! Facts that belong to a whole server, realm or tenant are shared across policies through
//! [`ProviderDeps::facts`].

pub mod duende;
pub mod entra;
pub mod google;
pub mod http;
pub mod keycloak;
pub mod logto;
pub mod okta;
pub mod other_tools;
pub mod pingfederate;

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::crd::{ProviderSpec, Rotation};
use crate::metrics::Metrics;

/// Which identity provider a policy names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Google (no admin API).
    Google,
    /// Keycloak Admin REST API.
    Keycloak,
    /// PingFederate administrative API.
    PingFederate,
    /// Microsoft Entra ID through Microsoft Graph.
    EntraId,
    /// Logto Management API.
    Logto,
    /// Okta Management API.
    Okta,
    /// Duende IdentityServer (Skoruba admin API or configuration database).
    Duende,
}

impl ProviderKind {
    /// Stable label (metrics, status).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Google => "google",
            ProviderKind::Keycloak => "keycloak",
            ProviderKind::PingFederate => "pingFederate",
            ProviderKind::EntraId => "entraId",
            ProviderKind::Logto => "logto",
            ProviderKind::Okta => "okta",
            ProviderKind::Duende => "duende",
        }
    }

    /// Human name for messages.
    pub fn display_name(self) -> &'static str {
        match self {
            ProviderKind::Google => "Google",
            ProviderKind::Keycloak => "Keycloak",
            ProviderKind::PingFederate => "PingFederate",
            ProviderKind::EntraId => "Microsoft Entra ID",
            ProviderKind::Logto => "Logto",
            ProviderKind::Okta => "Okta",
            ProviderKind::Duende => "Duende IdentityServer",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

/// What the policy wants from the identity provider (parsed and validated `spec.refreshTokens`).
/// `None` means "leave the provider's value alone".
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DesiredSettings {
    /// Make `offline_access` available (and request it from Coder).
    pub offline_access: bool,
    /// Absolute refresh-token lifetime.
    pub lifetime: Option<Duration>,
    /// Refresh-token idle timeout.
    pub idle_timeout: Option<Duration>,
    /// Rotation.
    pub rotation: Option<Rotation>,
    /// Access-token lifetime.
    pub access_token_lifetime: Option<Duration>,
}

/// Normalized settings read from the identity provider. `None` means "not applicable or not
/// readable for this provider".
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct IdpSettings {
    /// The client may use the `refresh_token` grant.
    pub refresh_token_grant: Option<bool>,
    /// `offline_access` is available to the client.
    pub offline_access: Option<bool>,
    /// Effective absolute lifetime.
    pub lifetime: Option<Duration>,
    /// Effective idle timeout.
    pub idle_timeout: Option<Duration>,
    /// Effective rotation.
    pub rotation: Option<Rotation>,
    /// Effective access-token lifetime.
    pub access_token_lifetime: Option<Duration>,
    /// How long or how often a rotated refresh token can still be redeemed (the window that lets
    /// concurrent refreshes succeed), rendered for people: `5 reuses`, `60s`.
    pub rotation_window: Option<String>,
}

/// One setting that differs from what the policy wants: a line of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The object the setting belongs to, e.g. `Keycloak client "coder" in realm "coder"`.
    pub target: String,
    /// Short name of the setting, e.g. `attribute use.refresh.tokens`.
    pub setting: String,
    /// Current value, rendered for people.
    pub from: String,
    /// Wanted value, rendered for people.
    pub to: String,
    /// Why the policy needs it.
    pub why: String,
}

impl Change {
    /// A change of `setting` of `target` from `from` to `to`, because `why`.
    pub fn new(
        target: impl Into<String>,
        setting: impl Into<String>,
        from: impl Into<String>,
        to: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        Change {
            target: target.into(),
            setting: setting.into(),
            from: from.into(),
            to: to.into(),
            why: why.into(),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.setting, self.from, self.to)
    }
}

/// Something worth telling the user that needs no change by the operator (or cannot be changed
/// by it), e.g. a client secret that expires soon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// CamelCase reason, used for the Event.
    pub reason: &'static str,
    /// What it means and what to do.
    pub message: String,
    /// True when the finding keeps the provider from working (the condition goes False).
    pub blocking: bool,
    /// When the credential the finding is about expires (a client secret or certificate that
    /// expires soon or has expired): exported as a metric.
    pub expires_at: Option<jiff::Timestamp>,
}

/// What Coder must send for refresh tokens to work with this provider.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CoderNeeds {
    /// Scopes to ensure.
    pub add_scopes: Vec<String>,
    /// Scopes to remove (Google rejects `offline_access`).
    pub remove_scopes: Vec<String>,
    /// Auth URL parameters to ensure.
    pub params: BTreeMap<String, String>,
}

/// What a plan says, for people and for the controller.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Observation {
    /// Effective settings now.
    pub settings: IdpSettings,
    /// Changes the plan's writes make; empty when converged.
    pub changes: Vec<Change>,
    /// Things to report.
    pub findings: Vec<Finding>,
    /// What Coder must send.
    pub coder: CoderNeeds,
}

impl Observation {
    /// The pending changes as one line (`setting: from -> to; …`), for Events and errors.
    pub fn changes_line(&self) -> String {
        self.changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The outcome of writes that were read back and planned again as `after`: [`Applied`] with
/// `actions`, or [`ProviderError::NotPersisted`] while `after` still has changes.
pub fn applied_after(
    provider: ProviderKind,
    actions: Vec<String>,
    after: Observation,
) -> Result<Applied, ProviderError> {
    if !after.changes.is_empty() {
        return Err(ProviderError::NotPersisted {
            provider,
            detail: after.changes_line(),
        });
    }
    Ok(Applied {
        observation: after,
        actions,
    })
}

/// Everything a provider's [`IdentityProvider::observe`] read, opaque outside that provider.
pub struct Snapshot {
    kind: ProviderKind,
    read_at: jiff::Timestamp,
    state: Box<dyn Any + Send + Sync>,
}

impl Snapshot {
    /// Wraps a provider's own snapshot type, read now.
    pub fn new<S: Any + Send + Sync>(kind: ProviderKind, state: S) -> Self {
        Snapshot::read_at(kind, state, jiff::Timestamp::now())
    }

    /// Wraps a provider's own snapshot type, read at `read_at` (tests pin the time).
    pub fn read_at<S: Any + Send + Sync>(
        kind: ProviderKind,
        state: S,
        read_at: jiff::Timestamp,
    ) -> Self {
        Snapshot {
            kind,
            read_at,
            state: Box::new(state),
        }
    }

    /// When it was read (plans judge expiry dates against this, never against the clock).
    pub fn time(&self) -> jiff::Timestamp {
        self.read_at
    }

    /// The provider's own snapshot type.
    pub fn get<S: Any>(&self) -> Result<&S, ProviderError> {
        self.state.downcast_ref().ok_or_else(|| mismatch(self.kind))
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("kind", &self.kind)
            .field("read_at", &self.read_at)
            .finish_non_exhaustive()
    }
}

/// A provider's plan: what differs and the writes that fix it, as data. [`IdentityProvider::apply`]
/// performs exactly these writes.
#[derive(Clone)]
pub struct IdpPlan {
    /// Settings, pending changes, findings and what Coder must send.
    pub observation: Observation,
    kind: ProviderKind,
    desired: DesiredSettings,
    writes: Arc<dyn Any + Send + Sync>,
}

impl IdpPlan {
    /// A plan for `desired` with the provider's own write list.
    pub fn new<W: Any + Send + Sync>(
        kind: ProviderKind,
        desired: &DesiredSettings,
        observation: Observation,
        writes: W,
    ) -> Self {
        IdpPlan {
            observation,
            kind,
            desired: desired.clone(),
            writes: Arc::new(writes),
        }
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.observation.changes.is_empty()
    }

    /// The pending changes, field by field.
    pub fn changes(&self) -> &[Change] {
        &self.observation.changes
    }

    /// The settings the plan was made for (the read-back after `apply` is planned against them).
    pub fn desired(&self) -> &DesiredSettings {
        &self.desired
    }

    /// The plan left after its writes were made and read back: `observation` as read back, no
    /// writes.
    pub fn converged(&self, observation: Observation) -> IdpPlan {
        IdpPlan {
            observation,
            kind: self.kind,
            desired: self.desired.clone(),
            writes: Arc::new(()),
        }
    }

    /// The provider's own write list.
    pub fn writes<W: Any>(&self) -> Result<&W, ProviderError> {
        self.writes
            .downcast_ref()
            .ok_or_else(|| mismatch(self.kind))
    }
}

impl fmt::Debug for IdpPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdpPlan")
            .field("kind", &self.kind)
            .field("observation", &self.observation)
            .finish_non_exhaustive()
    }
}

fn mismatch(provider: ProviderKind) -> ProviderError {
    ProviderError::Protocol {
        provider,
        operation: "plan".into(),
        detail: "a snapshot or plan of another provider was passed in".into(),
    }
}

/// Result of applying a plan.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Applied {
    /// State read back after the writes, planned again: its `changes` are empty.
    pub observation: Observation,
    /// One line per write request made, for the Event (no secrets).
    pub actions: Vec<String>,
}

impl Applied {
    /// The outcome of applying an empty plan: nothing written, the plan's own view.
    pub fn unchanged(plan: &IdpPlan) -> Applied {
        Applied {
            observation: plan.observation.clone(),
            actions: Vec::new(),
        }
    }
}

/// An identity provider's admin API: observe (reads) → plan (pure) → apply (exactly the plan's
/// writes, then a read-back).
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// Settings this provider cannot honour, checked before any call. Pure.
    fn check(&self, desired: &DesiredSettings) -> Result<(), ProviderError>;

    /// Reads everything `plan` needs for `desired`. Makes no writes.
    async fn observe(&self, desired: &DesiredSettings) -> Result<Snapshot, ProviderError>;

    /// The writes that bring `snapshot` to `desired`, as data. Pure: no I/O, no clock. Errors
    /// for what the policy cannot get from this state (e.g. realm changes that are not allowed).
    fn plan(
        &self,
        snapshot: &Snapshot,
        desired: &DesiredSettings,
    ) -> Result<IdpPlan, ProviderError>;

    /// Performs exactly the writes of `plan` (none when it is empty), reads back and plans again;
    /// fails with [`ProviderError::NotPersisted`] when something still differs.
    async fn apply(&self, plan: &IdpPlan) -> Result<Applied, ProviderError>;

    /// Custom resources of other tools that may manage this provider's object (the reconciler
    /// lists them cluster-wide, only while their CRD is served). None by default.
    fn other_tools(&self) -> Vec<other_tools::ToolQuery> {
        Vec::new()
    }

    /// Blocking findings for the resources of `query` (as listed, opaque JSON) that manage the
    /// object `plan` would change in a way their tool would revert or could not declare. Pure.
    fn managed_by_other_tools(
        &self,
        _plan: &IdpPlan,
        _query: &other_tools::ToolQuery,
        _found: &[serde_json::Value],
    ) -> Vec<Finding> {
        Vec::new()
    }

    /// `check`, `observe` and `plan` in one call.
    async fn observe_plan(&self, desired: &DesiredSettings) -> Result<IdpPlan, ProviderError> {
        self.check(desired)?;
        let snapshot = self.observe(desired).await?;
        self.plan(&snapshot, desired)
    }

    /// `observe_plan` then `apply`: brings the provider to `desired`.
    async fn converge(&self, desired: &DesiredSettings) -> Result<Applied, ProviderError> {
        let plan = self.observe_plan(desired).await?;
        self.apply(&plan).await
    }
}

/// Reads back after a plan's writes: observes again and plans again; the new plan must be empty.
pub async fn read_back(
    provider: &(impl IdentityProvider + ?Sized),
    plan: &IdpPlan,
) -> Result<Observation, ProviderError> {
    let after = provider.observe(plan.desired()).await?;
    let left = provider.plan(&after, plan.desired())?;
    if !left.is_empty() {
        let list: Vec<String> = left.changes().iter().map(ToString::to_string).collect();
        return Err(ProviderError::NotPersisted {
            provider: provider.kind(),
            detail: format!("these settings still differ: {}", list.join("; ")),
        });
    }
    Ok(left.observation)
}

/// Credentials read from the policy's Secret: key to value. Values never appear in `Debug`.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Secret name (for messages).
    pub secret_name: String,
    /// `resourceVersion` of the Secret (token caches are keyed on it, so a rotated Secret is
    /// picked up without a restart).
    pub version: String,
    values: BTreeMap<String, SecretString>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("secret_name", &self.secret_name)
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// Builds credentials from decoded Secret data.
    pub fn new(secret_name: &str, version: &str, data: BTreeMap<String, Vec<u8>>) -> Self {
        let values = data
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    SecretString::from(String::from_utf8_lossy(&v).into_owned()),
                )
            })
            .collect();
        Credentials {
            secret_name: secret_name.to_string(),
            version: version.to_string(),
            values,
        }
    }

    /// A value, if present and not empty.
    pub fn get(&self, key: &str) -> Option<&SecretString> {
        use secrecy::ExposeSecret;
        self.values
            .get(key)
            .filter(|v| !v.expose_secret().trim().is_empty())
    }

    /// A required value, or an error naming the Secret and the missing keys (never values).
    pub fn require(
        &self,
        provider: ProviderKind,
        keys: &[&str],
    ) -> Result<Vec<&SecretString>, ProviderError> {
        let missing: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| self.get(k).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(ProviderError::InvalidSecret {
                provider,
                detail: format!(
                    "Secret {:?} has no non-empty {} (it has: {})",
                    self.secret_name,
                    missing.join(", "),
                    self.keys_for_message()
                ),
            });
        }
        Ok(keys.iter().filter_map(|k| self.get(k)).collect())
    }

    /// Key names, for messages.
    pub fn keys_for_message(&self) -> String {
        if self.values.is_empty() {
            "no keys".into()
        } else {
            self.values.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// Errors from identity providers. Messages name the provider, the operation and what to fix, and
/// never contain credentials.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 401 or a failed token request.
    #[error("{provider} rejected the admin credentials: {detail}")]
    AuthenticationFailed {
        /// Provider.
        provider: ProviderKind,
        /// What happened and what to fix.
        detail: String,
    },
    /// 403: the admin account lacks a permission.
    #[error("{provider} refused to {operation}: {detail}")]
    Forbidden {
        /// Provider.
        provider: ProviderKind,
        /// The operation.
        operation: String,
        /// Which permission or role is needed.
        detail: String,
    },
    /// The realm, tenant, application or client does not exist.
    #[error("{provider}: {what} not found: {detail}")]
    ClientNotFound {
        /// Provider.
        provider: ProviderKind,
        /// What was looked for.
        what: String,
        /// What to check.
        detail: String,
    },
    /// Network error, timeout or 5xx. Retried with backoff.
    #[error("{provider} is unreachable ({operation}): {detail}")]
    Unreachable {
        /// Provider.
        provider: ProviderKind,
        /// The operation.
        operation: String,
        /// Cause.
        detail: String,
    },
    /// 429 or 503 with `Retry-After`.
    #[error("{provider} is throttling requests ({operation}){}", retry_after.map(|d| format!("; retrying after {}s", d.as_secs().max(1))).unwrap_or_default())]
    Throttled {
        /// Provider.
        provider: ProviderKind,
        /// The operation.
        operation: String,
        /// Server-requested wait.
        retry_after: Option<Duration>,
    },
    /// The provider rejected a request as invalid (400/422). Not retried until something changes.
    #[error("{provider} rejected {operation}: {detail}")]
    Rejected {
        /// Provider.
        provider: ProviderKind,
        /// The operation.
        operation: String,
        /// The provider's message, with field paths when given.
        detail: String,
    },
    /// A setting this provider cannot honour.
    #[error("{provider} cannot honour this policy: {detail}")]
    Unsupported {
        /// Provider.
        provider: ProviderKind,
        /// What the provider does instead and what to change.
        detail: String,
    },
    /// The credentials Secret lacks keys or has unusable values.
    #[error("{provider} credentials: {detail}")]
    InvalidSecret {
        /// Provider.
        provider: ProviderKind,
        /// Which keys are missing (never values).
        detail: String,
    },
    /// An answer the operator could not understand. Retried with backoff.
    #[error("{provider} gave an unexpected answer to {operation}: {detail}")]
    Protocol {
        /// Provider.
        provider: ProviderKind,
        /// The operation.
        operation: String,
        /// What was unexpected.
        detail: String,
    },
    /// A write was accepted but reading back shows it did not take effect.
    #[error("{provider} accepted the change but reading it back shows {detail}")]
    NotPersisted {
        /// Provider.
        provider: ProviderKind,
        /// The settings that still differ.
        detail: String,
    },
}

impl ProviderError {
    /// Whether retrying later may help without a change by the user.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::Unreachable { .. }
                | ProviderError::Throttled { .. }
                | ProviderError::Protocol { .. }
                | ProviderError::NotPersisted { .. }
        )
    }

    /// Server-requested wait, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            ProviderError::AuthenticationFailed { .. } => "authentication_failed",
            ProviderError::Forbidden { .. } => "forbidden",
            ProviderError::ClientNotFound { .. } => "client_not_found",
            ProviderError::Unreachable { .. } => "unreachable",
            ProviderError::Throttled { .. } => "throttled",
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::Unsupported { .. } => "unsupported",
            ProviderError::InvalidSecret { .. } => "invalid_secret",
            ProviderError::Protocol { .. } => "protocol",
            ProviderError::NotPersisted { .. } => "not_persisted",
        }
    }
}

/// Shared resources every provider uses.
#[derive(Clone)]
pub struct ProviderDeps {
    /// Shared HTTP settings and client cache.
    pub http: Arc<http::HttpClients>,
    /// Admin token cache shared across reconciles.
    pub tokens: Arc<http::TokenCache>,
    /// Metrics for provider calls.
    pub metrics: Arc<Metrics>,
    /// Per-host request rate limit.
    pub limiter: Arc<http::RateLimiter>,
    /// Per-server, per-realm and per-tenant facts shared across policies.
    pub facts: Arc<http::FactCache>,
}

impl ProviderDeps {
    /// Fresh dependencies with the given request timeout.
    pub fn new(metrics: Arc<Metrics>, timeout: Duration) -> Self {
        ProviderDeps {
            http: Arc::new(http::HttpClients::new(timeout)),
            tokens: Arc::new(http::TokenCache::default()),
            metrics,
            limiter: Arc::new(http::RateLimiter::unlimited()),
            facts: Arc::new(http::FactCache::default()),
        }
    }

    /// The same, with a per-host rate limit of `qps` requests per second (bursts of `burst`).
    pub fn with_rate_limit(mut self, qps: f64, burst: u32) -> Self {
        self.limiter = Arc::new(http::RateLimiter::new(qps, burst));
        self
    }
}

/// Builds the provider a policy names. `credentials` is the content of the policy's
/// `credentialsSecret` (required by every provider but Google).
pub fn connect(
    spec: &ProviderSpec,
    credentials: Option<Credentials>,
    deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    if spec.google.is_some() {
        return Ok(Arc::new(google::Google));
    }
    if let Some(k) = &spec.keycloak {
        return keycloak::connect(k, credentials, deps);
    }
    if let Some(p) = &spec.ping_federate {
        return pingfederate::connect(p, credentials, deps);
    }
    if let Some(e) = &spec.entra_id {
        return entra::connect(e, credentials, deps);
    }
    if let Some(l) = &spec.logto {
        return logto::connect(l, credentials, deps);
    }
    if let Some(o) = &spec.okta {
        return okta::connect(o, credentials, deps);
    }
    if let Some(d) = &spec.duende {
        return duende::connect(d, credentials, deps);
    }
    Err(ProviderError::Unsupported {
        provider: ProviderKind::Google,
        detail: "spec.provider names no provider; set exactly one of google, keycloak, pingFederate, entraId, logto, okta or duende".into(),
    })
}

/// The identity-provider objects a policy makes the operator write, as stable keys computed from
/// the spec alone (no I/O, no credentials, nothing secret): the client, app registration or
/// application, plus realm-wide or server-wide settings when the policy may change them, e.g.
/// `keycloak:https://kc.example/realms/coder/clients/coder` and
/// `keycloak:https://kc.example/realms/coder/realm-settings`. Two policies whose keys overlap would
/// undo each other's settings, so the controller lets only the older one act. Settings a
/// provider only ever adds (never sets to a value that another policy could want otherwise), such
/// as a server-wide `offline_access` scope, are not claimed. Google has no admin API: no keys.
///
/// Every provider field of [`ProviderSpec`] is destructured here, so a new provider does not
/// compile until it says what it claims.
pub fn targets(spec: &ProviderSpec) -> Vec<String> {
    let ProviderSpec {
        google: _,
        keycloak,
        ping_federate,
        entra_id,
        logto,
        okta,
        duende,
    } = spec;
    let mut keys = Vec::new();
    if let Some(k) = keycloak {
        keys.extend(keycloak::targets(k));
    }
    if let Some(p) = ping_federate {
        keys.extend(pingfederate::targets(p));
    }
    if let Some(e) = entra_id {
        keys.extend(entra::targets(e));
    }
    if let Some(l) = logto {
        keys.extend(logto::targets(l));
    }
    if let Some(o) = okta {
        keys.extend(okta::targets(o));
    }
    if let Some(d) = duende {
        keys.extend(duende::targets(d));
    }
    keys
}

/// A target key (see [`targets`]): `<provider>:<base URL>/<part>/<part>…`, the base URL with its
/// scheme and host in lower case, its default port dropped and no trailing `/`; `%` and `/` in
/// each part escaped, so no two different paths give the same key.
pub fn target_key<'a>(
    provider: ProviderKind,
    base: &str,
    parts: impl IntoIterator<Item = &'a str>,
) -> String {
    let trimmed = base.trim();
    let base = match reqwest::Url::parse(trimmed) {
        Ok(u) => u.as_str().trim_end_matches('/').to_string(),
        Err(_) => trimmed.trim_end_matches('/').to_string(),
    };
    let mut key = format!("{}:{base}", provider.as_str());
    for part in parts {
        key.push('/');
        key.push_str(&part.replace('%', "%25").replace('/', "%2F"));
    }
    key
}

/// Error for a provider that needs credentials when the Secret was not given.
pub fn missing_credentials(provider: ProviderKind) -> ProviderError {
    ProviderError::InvalidSecret {
        provider,
        detail: "no credentials Secret was read".into(),
    }
}

/// `Ok` when `problems` is empty; else one [`ProviderError::Unsupported`] naming them all, so that
/// a spec beyond what the provider can do is fixed in one go.
pub fn unsupported_unless_none(
    provider: ProviderKind,
    problems: Vec<String>,
) -> Result<(), ProviderError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ProviderError::Unsupported {
            provider,
            detail: problems.join("; "),
        })
    }
}

/// The string member `k` of a JSON object (empty when absent or not a string).
pub fn json_str<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v.get(k)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
}

/// The strings of a JSON array (none when `v` is not an array; other items skipped).
pub fn json_strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(serde_json::Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Renders an optional duration for [`Change`] messages.
pub fn show_duration(d: Option<Duration>) -> String {
    d.map(crate::duration::format)
        .unwrap_or_else(|| "unset".into())
}
