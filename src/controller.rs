//! Controller wiring: the policy watch, metadata-only watches of Deployments and Secrets mapped
//! back to the policies that reference them (no cache of every Deployment or Secret in the
//! cluster: only a stream of metadata), concurrency, graceful shutdown.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use kube::core::NamespaceResourceScope;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Deserializer};
use tracing::{info, warn};

use crate::crd::{OidcRefreshPolicy, OidcRefreshPolicySpec, OidcRefreshPolicyStatus};
use crate::error::Error;
use crate::events::Publisher;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::providers::ProviderDeps;
use crate::providers::http::{CREDENTIALS_LABEL, HttpClients, TenantPolicy};
use crate::reconcile::memo::MemoKey;
use crate::reconcile::{self, Context};

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only these namespaces (empty: all namespaces). One controller runs per namespace,
    /// so the operator needs only namespaced Roles there.
    pub namespaces: Vec<String>,
    /// Policies reconciled at once.
    pub concurrency: u16,
    /// Timeout of every identity-provider call.
    pub provider_timeout: Duration,
    /// Reporting instance for Events (pod name).
    pub instance: Option<String>,
    /// First retry delay after a transient failure (doubles per attempt up to `backoff_max`).
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Identity-provider requests per second per host (0: unlimited).
    pub provider_qps: f64,
    /// Burst allowed above `provider_qps`.
    pub provider_burst: u32,
    /// Longest a single reconcile may run before it is cancelled and retried with backoff
    /// (`None`: [`RECONCILE_TIMEOUT_FACTOR`] × `provider_timeout`, at least
    /// [`MIN_RECONCILE_TIMEOUT`]).
    pub reconcile_timeout: Option<Duration>,
    /// Use a Secret as identity-provider credentials only when it carries the label
    /// `oidcrefresh.dev/credentials: "true"` (see `docs/security.md`). `run` defaults to true.
    pub require_credentials_label: bool,
    /// Allow plain `http` to loopback identity providers (tests, the sandbox). Never to any other
    /// address. `run` defaults to false.
    pub allow_insecure_http: bool,
    /// Host suffixes identity providers may be at (empty: any host that is not denied).
    pub allowed_idp_hosts: Vec<String>,
    /// Hosts never called on a policy's behalf unless listed in `allowed_idp_hosts`: the
    /// Kubernetes API server (`host` or `host:port`).
    pub denied_idp_hosts: Vec<String>,
    /// Requests in flight to one identity-provider host at a time (0: unlimited).
    pub max_in_flight_per_host: usize,
    /// Checked before every write: with leader election, writes stop as soon as this replica may
    /// no longer lead (see [`crate::leader`]).
    pub leadership: Leadership,
}

/// Default reconcile deadline, in units of the provider timeout.
pub const RECONCILE_TIMEOUT_FACTOR: u32 = 4;

/// How long in-flight reconciles may run on after shutdown is requested before they are
/// cancelled (well inside Kubernetes' default 30 s termination grace period).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Shortest default reconcile deadline.
pub const MIN_RECONCILE_TIMEOUT: Duration = Duration::from_secs(20);

impl Default for Settings {
    /// Library defaults. The tenant-safety settings are permissive here (loopback http allowed,
    /// no credentials label required) so tests and the sandbox work with their loopback
    /// simulators; `oidc-refresh-operator run` sets them from its flags, which default to strict.
    fn default() -> Self {
        let tenant = TenantPolicy::default();
        Settings {
            namespaces: Vec::new(),
            concurrency: 32,
            provider_timeout: Duration::from_secs(30),
            instance: None,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            provider_qps: 300.0,
            provider_burst: 600,
            reconcile_timeout: None,
            require_credentials_label: tenant.require_credentials_label,
            allow_insecure_http: tenant.allow_insecure_http,
            allowed_idp_hosts: tenant.allowed_hosts,
            denied_idp_hosts: tenant.denied_hosts,
            max_in_flight_per_host: tenant.max_in_flight_per_host,
            leadership: Leadership::unelected(),
        }
    }
}

impl Settings {
    /// The reconcile deadline in effect.
    pub fn reconcile_deadline(&self) -> Duration {
        self.reconcile_timeout.unwrap_or_else(|| {
            self.provider_timeout
                .saturating_mul(RECONCILE_TIMEOUT_FACTOR)
                .max(MIN_RECONCILE_TIMEOUT)
        })
    }

    /// What policies may make the operator do over the network.
    pub fn tenant_policy(&self) -> TenantPolicy {
        TenantPolicy {
            allow_insecure_http: self.allow_insecure_http,
            allowed_hosts: self.allowed_idp_hosts.clone(),
            denied_hosts: self.denied_idp_hosts.clone(),
            require_credentials_label: self.require_credentials_label,
            max_in_flight_per_host: self.max_in_flight_per_host,
        }
    }

    /// Provider dependencies for these settings.
    pub fn provider_deps(&self, metrics: Arc<Metrics>) -> ProviderDeps {
        let mut deps = ProviderDeps::new(metrics, self.provider_timeout)
            .with_rate_limit(self.provider_qps, self.provider_burst);
        deps.http = Arc::new(HttpClients::with_policy(
            self.provider_timeout,
            self.tenant_policy(),
        ));
        deps
    }
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Annotation in which `kubectl apply` keeps a full copy of the last applied object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what the reconciler never reads from a policy before it enters the cache:
/// `metadata.managedFields` (one entry per field manager, status writes included) and the
/// `kubectl apply` copy of the object. The status is written by server-side apply without a
/// `resourceVersion` precondition, so neither is needed to write it back.
fn slim(policy: &mut OidcRefreshPolicy) {
    policy.metadata.managed_fields = None;
    if let Some(annotations) = policy.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            policy.metadata.annotations = None;
        }
    }
}

/// A related object (Deployment, Secret) as the watches need it: name, namespace and
/// `resourceVersion`, from the API server's metadata-only answers. Every other field, above all
/// `managedFields`, is skipped while decoding rather than built and dropped.
#[derive(Clone, Debug)]
struct Related<K> {
    metadata: ObjectMeta,
    kind: PhantomData<fn() -> K>,
}

impl<'de, K> Deserialize<'de> for Related<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Meta {
            name: Option<String>,
            namespace: Option<String>,
            resource_version: Option<String>,
        }
        #[derive(Deserialize)]
        struct Object {
            metadata: Meta,
        }
        let Object {
            metadata:
                Meta {
                    name,
                    namespace,
                    resource_version,
                },
        } = Object::deserialize(d)?;
        Ok(Related {
            metadata: ObjectMeta {
                name,
                namespace,
                resource_version,
                ..ObjectMeta::default()
            },
            kind: PhantomData,
        })
    }
}

impl<K: Resource> Resource for Related<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn metadata_api() -> bool {
        true
    }
    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// `ObjectMeta` without `managedFields`: the field is skipped while decoding.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PolicyMeta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

/// A policy as read from the API server, decoded without `metadata.managedFields`, so a list page
/// never holds the field managers' trees of hundreds of policies. Decoding never fails on a
/// policy's spec or status: one object that no longer matches the operator's types (stored before
/// a CRD schema change, or written while the schema was looser) is kept as its metadata and the
/// reason, so it cannot fail the list, and with it the watch, of every other policy.
#[derive(Clone, Debug)]
// Nearly every object decodes: boxing that variant would cost an allocation per policy listed.
#[allow(clippy::large_enum_variant)]
enum WatchedPolicy {
    Decoded(OidcRefreshPolicy),
    Undecodable {
        metadata: ObjectMeta,
        reason: String,
    },
}

impl PolicyMeta {
    fn into_object_meta(self) -> ObjectMeta {
        ObjectMeta {
            annotations: self.annotations,
            creation_timestamp: self.creation_timestamp,
            deletion_grace_period_seconds: self.deletion_grace_period_seconds,
            deletion_timestamp: self.deletion_timestamp,
            finalizers: self.finalizers,
            generate_name: self.generate_name,
            generation: self.generation,
            labels: self.labels,
            managed_fields: None,
            name: self.name,
            namespace: self.namespace,
            owner_references: self.owner_references,
            resource_version: self.resource_version,
            self_link: self.self_link,
            uid: self.uid,
        }
    }
}

impl<'de> Deserialize<'de> for WatchedPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object {
            #[serde(default)]
            metadata: PolicyMeta,
            #[serde(default)]
            spec: Option<serde_json::Value>,
            #[serde(default)]
            status: Option<serde_json::Value>,
        }
        let Object {
            metadata,
            spec,
            status,
        } = Object::deserialize(d)?;
        let metadata = metadata.into_object_meta();
        let spec = spec
            .ok_or_else(|| "spec: missing".to_string())
            .and_then(|s| OidcRefreshPolicySpec::deserialize(s).map_err(|e| format!("spec: {e}")));
        Ok(match spec {
            Ok(spec) => {
                let mut policy = OidcRefreshPolicy::new("", spec);
                policy.metadata = metadata;
                // A status the operator's types no longer read (written by another version) is
                // read as none: the next pass writes the whole status again.
                policy.status = status.and_then(|s| OidcRefreshPolicyStatus::deserialize(s).ok());
                WatchedPolicy::Decoded(policy)
            }
            Err(reason) => WatchedPolicy::Undecodable { metadata, reason },
        })
    }
}

impl Resource for WatchedPolicy {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        OidcRefreshPolicy::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        OidcRefreshPolicy::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        OidcRefreshPolicy::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        OidcRefreshPolicy::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            WatchedPolicy::Decoded(p) => &p.metadata,
            WatchedPolicy::Undecodable { metadata, .. } => metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            WatchedPolicy::Decoded(p) => &mut p.metadata,
            WatchedPolicy::Undecodable { metadata, .. } => metadata,
        }
    }
}

/// Longest decoding reason logged (serde's messages quote the offending value).
const MAX_REASON: usize = 200;

/// Turns watch events of decoded-or-not policies into the events the cache takes. An undecodable
/// policy is left out of the cache (dropped from it if an earlier version was there, so the
/// controller stops acting on a spec the object no longer has) and logged at WARN once per
/// `resourceVersion`: a re-list after a watch restart repeats nothing.
#[derive(Default)]
struct Undecodable {
    /// `resourceVersion` last reported per undecodable policy (namespace, name).
    reported: std::collections::HashMap<(String, String), Option<String>>,
}

impl Undecodable {
    fn sort(
        &mut self,
        event: watcher::Event<WatchedPolicy>,
    ) -> Option<watcher::Event<OidcRefreshPolicy>> {
        use watcher::Event as E;
        Some(match event {
            E::Init => E::Init,
            E::InitDone => E::InitDone,
            E::InitApply(WatchedPolicy::Decoded(p)) => {
                self.cleared(&p.metadata);
                E::InitApply(p)
            }
            E::Apply(WatchedPolicy::Decoded(p)) => {
                self.cleared(&p.metadata);
                E::Apply(p)
            }
            E::Delete(WatchedPolicy::Decoded(p)) => {
                self.cleared(&p.metadata);
                E::Delete(p)
            }
            E::Delete(WatchedPolicy::Undecodable { metadata, .. }) => {
                self.cleared(&metadata);
                E::Delete(tombstone(metadata))
            }
            E::InitApply(WatchedPolicy::Undecodable { metadata, reason }) => {
                self.report(&metadata, &reason);
                return None;
            }
            E::Apply(WatchedPolicy::Undecodable { metadata, reason }) => {
                self.report(&metadata, &reason);
                E::Delete(tombstone(metadata))
            }
        })
    }

    fn key(meta: &ObjectMeta) -> (String, String) {
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    fn cleared(&mut self, meta: &ObjectMeta) {
        if !self.reported.is_empty() {
            self.reported.remove(&Self::key(meta));
        }
    }

    fn report(&mut self, meta: &ObjectMeta, reason: &str) {
        let key = Self::key(meta);
        if self.reported.get(&key) == Some(&meta.resource_version) {
            return;
        }
        warn!(
            policy.namespace = %key.0,
            policy.name = %key.1,
            resource_version = meta.resource_version.as_deref().unwrap_or(""),
            reason = %crate::providers::http::truncate(reason, MAX_REASON),
            "policy does not decode and is skipped until it is fixed (every other policy is reconciled as usual); re-apply it against the current CRD"
        );
        self.reported.insert(key, meta.resource_version.clone());
    }
}

/// The policy that drops an undecodable one from the cache (only its key is used).
fn tombstone(metadata: ObjectMeta) -> OidcRefreshPolicy {
    let spec = OidcRefreshPolicySpec {
        provider: Default::default(),
        refresh_tokens: Default::default(),
        coder: crate::crd::CoderSpec {
            deployment: String::new(),
            container: String::new(),
            scopes: Vec::new(),
            auth_url_params: BTreeMap::new(),
            conflict_policy: Default::default(),
        },
        management_policy: Default::default(),
        interval: String::new(),
    };
    let mut policy = OidcRefreshPolicy::new("", spec);
    policy.metadata = metadata;
    policy
}

/// Watch settings of the related objects. Their lists are only read, never cached, so small pages
/// keep the decoded list that is alive at any one time small in clusters with many Deployments and
/// Secrets.
fn related_watch() -> watcher::Config {
    watcher::Config::default().any_semantic().page_size(100)
}

/// Watch settings of Secrets. With the credentials label required (the default of `run`), only
/// Secrets labelled `oidcrefresh.dev/credentials=true` are listed and watched: the only ones a
/// policy may use, so the operator's traffic and memory do not grow with the cluster's other
/// Secrets, even though RBAC (which cannot select by label) lets it read them all cluster-wide.
fn secret_watch(settings: &Settings) -> watcher::Config {
    let config = related_watch();
    if settings.require_credentials_label {
        config.labels(&format!("{CREDENTIALS_LABEL}=true"))
    } else {
        config
    }
}

/// The policy cache and the stream of applied policies that triggers reconciles. Every policy is
/// slimmed before the cache sees it, so the cache and the reconciler hold only slim copies.
fn cached_policies(
    events: impl Stream<Item = Result<watcher::Event<OidcRefreshPolicy>, watcher::Error>>
    + Send
    + 'static,
) -> (
    Store<OidcRefreshPolicy>,
    impl Stream<Item = Result<OidcRefreshPolicy, watcher::Error>> + Send + 'static,
) {
    let (store, writer) = reflector::store();
    (
        store,
        reflector(writer, events.modify(slim)).applied_objects(),
    )
}

/// Policies in `store` that reference `name` in `namespace` through `pick`.
fn referencing(
    store: &Store<OidcRefreshPolicy>,
    namespace: Option<String>,
    name: String,
    pick: fn(&OidcRefreshPolicy) -> Option<&str>,
) -> Vec<ObjectRef<OidcRefreshPolicy>> {
    store
        .state()
        .into_iter()
        .filter(|p| p.namespace() == namespace && pick(p) == Some(name.as_str()))
        .map(|p| ObjectRef::from(p.as_ref()))
        .collect()
}

/// Runs the controller(s) until `shutdown` resolves: one for all namespaces, or one per listed
/// namespace. `ready` turns true once they are running.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let namespaces: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    // Ready once every controller's policy cache has synced (its first list is complete).
    let total = namespaces.len();
    let synced = Arc::new(AtomicUsize::new(0));
    let runs = namespaces.into_iter().map(|ns| {
        let mut rx = rx.clone();
        let (synced, ready) = (synced.clone(), ready.clone());
        let once = AtomicBool::new(false);
        let on_synced = move || {
            if !once.swap(true, Ordering::SeqCst)
                && synced.fetch_add(1, Ordering::SeqCst) + 1 == total
            {
                ready.store(true, Ordering::SeqCst);
                info!("policy caches synced; ready");
            }
        };
        run_one(
            client.clone(),
            ns,
            settings.clone(),
            metrics.clone(),
            on_synced,
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            },
        )
    });
    let all = futures::future::join_all(runs);
    tokio::pin!(all);
    tokio::select! {
        _ = &mut all => {}
        () = shutdown => {
            let _ = tx.send(true);
            // In-flight reconciles get a short grace to finish what they are writing; one stuck
            // on a slow or silent identity provider is then cancelled rather than holding the
            // process past the pod's termination grace period (it runs again on the next start:
            // reconciles are level-triggered and announcements are kept in status).
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut all).await.is_err() {
                warn!(
                    grace_seconds = SHUTDOWN_GRACE.as_secs(),
                    "reconciles still running at shutdown were cancelled"
                );
            }
        }
    }
    ready.store(false, Ordering::SeqCst);
    info!("controller stopped");
}

async fn run_one(
    client: Client,
    namespace: Option<String>,
    settings: Settings,
    metrics: Arc<Metrics>,
    on_synced: impl Fn() + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let policies: Api<WatchedPolicy> = api(&client, &namespace);
    let deployments: Api<Related<Deployment>> = api(&client, &namespace);
    let secrets: Api<Related<Secret>> = api(&client, &namespace);

    let events = Publisher::new(client.clone(), settings.instance.clone());
    let deps = settings.provider_deps(metrics.clone());
    // The context is built after the cache it points at; the watch hook reaches it through this.
    let shared: Arc<OnceLock<Arc<Context>>> = Arc::new(OnceLock::new());
    let hook = shared.clone();
    let mut undecodable = Undecodable::default();
    let (store, policy_events) = cached_policies(
        watcher(policies, watcher::Config::default().any_semantic())
            .try_filter_map(move |event| futures::future::ready(Ok(undecodable.sort(event))))
            .inspect(move |event| match event {
                Ok(watcher::Event::InitDone) => on_synced(),
                Ok(watcher::Event::Delete(p)) => {
                    if let Some(ctx) = hook.get() {
                        forget_policy(ctx, p.namespace().unwrap_or_default(), p.name_any());
                    }
                }
                _ => {}
            }),
    );
    let mut context = Context::new(client.clone(), events, metrics.clone(), deps);
    context.backoff = reconcile::backoff::Backoff::new(settings.backoff_base, settings.backoff_max);
    context.policies = Some(store.clone());
    context.leadership = settings.leadership.clone();
    let ctx = Arc::new(context);
    let _ = shared.set(ctx.clone());
    let forget_ctx = ctx.clone();
    let deadline = settings.reconcile_deadline();

    let controller = Controller::for_stream(policy_events, store).with_config(
        controller::Config::default()
            .concurrency(settings.concurrency)
            .debounce(Duration::from_millis(500)),
    );
    let store = controller.store();
    let (s1, s2) = (store.clone(), store);
    info!(
        namespace = namespace.as_deref().unwrap_or("<all>"),
        "starting controller"
    );
    controller
        .watches(deployments, related_watch(), move |d| {
            referencing(&s1, d.namespace(), d.name_any(), |p| {
                Some(p.spec.coder.deployment.as_str())
            })
        })
        .watches(secrets, secret_watch(&settings), move |s| {
            referencing(&s2, s.namespace(), s.name_any(), |p| {
                p.spec.provider.credentials_secret()
            })
        })
        .graceful_shutdown_on(shutdown)
        .run(
            move |policy, ctx| guarded_reconcile(policy, ctx, deadline),
            error_policy,
            ctx,
        )
        .for_each(move |res| {
            let ctx = forget_ctx.clone();
            async move {
                if let Err(e) = res {
                    match e {
                        controller::Error::ReconcilerFailed(Error::NotLeader, obj) => {
                            info!(policy = %obj, "reconcile stopped: this replica no longer leads")
                        }
                        controller::Error::ReconcilerFailed(err, obj) => {
                            warn!(policy = %obj, error = %err, "reconcile failed")
                        }
                        controller::Error::ObjectNotFound(obj) => {
                            tracing::debug!(policy = %obj, "policy gone");
                            forget_policy(&ctx, obj.namespace.unwrap_or_default(), obj.name);
                        }
                        other => warn!(error = %other, "controller event"),
                    }
                }
            }
        })
        .await;
}

/// Drops what the controller remembers about a deleted policy.
fn forget_policy(ctx: &Context, namespace: String, name: String) {
    let key = (namespace, name);
    ctx.metrics.forget_policy(&key.0, &key.1);
    ctx.backoff.reset(&key);
    ctx.announced.forget(&key);
    ctx.memos.forget(&MemoKey {
        policy: key,
        generation: 0,
        window: Duration::ZERO,
    });
}

/// One reconcile, contained: a panic inside it is caught (counted as a `panic` reconcile error,
/// logged without its text, which may hold remote text) and a reconcile that outlives `deadline`
/// (a tarpit identity provider, a hung API call) is cancelled; both are retried with backoff by
/// [`error_policy`], and every other policy keeps being reconciled.
async fn guarded_reconcile(
    policy: Arc<OidcRefreshPolicy>,
    ctx: Arc<Context>,
    deadline: Duration,
) -> Result<Action, Error> {
    guarded(policy, ctx, deadline, reconcile::reconcile).await
}

/// `run` contained as [`guarded_reconcile`] says; a run abandoned at its deadline or on a panic
/// is reported in the policy's status (`ReconcileTimeout`, `InternalError`).
pub(crate) async fn guarded<F, Fut>(
    policy: Arc<OidcRefreshPolicy>,
    ctx: Arc<Context>,
    deadline: Duration,
    run: F,
) -> Result<Action, Error>
where
    F: FnOnce(Arc<OidcRefreshPolicy>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let metrics = ctx.metrics.clone();
    let result = contain(
        run(policy.clone(), ctx.clone()),
        deadline,
        &metrics,
        &ns,
        &name,
    )
    .await;
    if let Err(e) = &result {
        reconcile::abandoned::report(&policy, &ctx, e).await;
    }
    result
}

/// Runs `reconcile` with a panic guard and a deadline (see [`guarded_reconcile`]).
async fn contain(
    reconcile: impl Future<Output = Result<Action, Error>>,
    deadline: Duration,
    metrics: &Metrics,
    ns: &str,
    name: &str,
) -> Result<Action, Error> {
    let started = Instant::now();
    let run = AssertUnwindSafe(reconcile).catch_unwind();
    match tokio::time::timeout(deadline, run).await {
        Ok(Ok(result)) => result,
        Ok(Err(_panic)) => {
            metrics.reconciled(started.elapsed(), Some(Error::Panicked.category()));
            tracing::error!(policy.namespace = %ns, policy.name = %name, "reconcile panicked (a bug); the controller keeps running and retries this policy with backoff");
            Err(Error::Panicked)
        }
        Err(_elapsed) => {
            let err = Error::DeadlineExceeded(deadline);
            metrics.reconciled(started.elapsed(), Some(err.category()));
            warn!(policy.namespace = %ns, policy.name = %name, deadline_s = deadline.as_secs(), "reconcile cancelled at its deadline");
            Err(err)
        }
    }
}

/// Kubernetes API failures: retried with backoff per policy.
fn error_policy(policy: Arc<OidcRefreshPolicy>, err: &Error, ctx: Arc<Context>) -> Action {
    if matches!(err, Error::NotLeader) {
        // The controllers stop with the leadership; the leader reconciles this policy.
        return Action::await_change();
    }
    let key = (policy.namespace().unwrap_or_default(), policy.name_any());
    let delay = ctx.backoff.next_delay(&key, None);
    warn!(policy.namespace = %key.0, policy.name = %key.1, error = %err, delay_s = delay.as_secs_f64(), "retrying after error");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    fn policy(ns: &str, name: &str, deployment: &str, secret: Option<&str>) -> OidcRefreshPolicy {
        let provider = match secret {
            Some(s) => {
                serde_json::json!({"keycloak": {"url": "https://kc", "realm": "r", "clientId": "c", "credentialsSecret": s}})
            }
            None => serde_json::json!({"google": {}}),
        };
        serde_json::from_value(serde_json::json!({
            "apiVersion": "oidcrefresh.dev/v1alpha1", "kind": "OidcRefreshPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"provider": provider, "coder": {"deployment": deployment}}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn cached_policies_drop_managed_fields_and_the_last_applied_copy() {
        let fat = |name: &str| {
            let mut p = policy("a", name, "coder", Some("kc"));
            p.metadata.managed_fields = Some(vec![
                serde_json::from_value(serde_json::json!({
                    "manager": "kubectl", "operation": "Apply", "apiVersion": "oidcrefresh.dev/v1alpha1",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:interval": {}}}
                }))
                .unwrap(),
            ]);
            let copy = serde_json::to_string(&p).unwrap();
            p.metadata.annotations = Some(
                [
                    (LAST_APPLIED.to_string(), copy),
                    ("team".to_string(), "blue".to_string()),
                ]
                .into(),
            );
            p
        };
        let events = futures::stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(fat("p1"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(fat("p2"))),
        ]);
        let (store, triggers) = cached_policies(events);
        let triggered: Vec<OidcRefreshPolicy> = triggers.map(|r| r.unwrap()).collect().await;
        let cached: Vec<OidcRefreshPolicy> = store.state().iter().map(|p| (**p).clone()).collect();
        assert_eq!(cached.len(), 2);
        assert_eq!(triggered.len(), 2);
        for p in cached.iter().chain(&triggered) {
            assert_eq!(p.metadata.managed_fields, None);
            let annotations = p.metadata.annotations.as_ref().unwrap();
            assert!(!annotations.contains_key(LAST_APPLIED));
            assert_eq!(annotations.get("team").map(String::as_str), Some("blue"));
            assert_eq!(p.spec.coder.deployment, "coder");
        }
    }

    #[test]
    fn watched_policies_decode_everything_but_managed_fields() {
        let full = serde_json::json!({
            "apiVersion": "oidcrefresh.dev/v1alpha1", "kind": "OidcRefreshPolicy",
            "metadata": {
                "name": "p", "namespace": "a", "uid": "u-1", "resourceVersion": "42", "generation": 3,
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "labels": {"app": "coder"}, "annotations": {"team": "blue"},
                "finalizers": ["example.com/f"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u-2"}],
                "managedFields": [{
                    "manager": "kubectl", "operation": "Apply", "apiVersion": "oidcrefresh.dev/v1alpha1",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:interval": {}}}
                }]
            },
            "spec": {"provider": {"google": {}}, "coder": {"deployment": "coder"}},
            "status": {"observedGeneration": 2, "provider": "google"}
        });
        let WatchedPolicy::Decoded(decoded) = serde_json::from_value(full.clone()).unwrap() else {
            panic!("not decoded")
        };
        let mut expected: OidcRefreshPolicy = serde_json::from_value(full).unwrap();
        assert!(expected.metadata.managed_fields.is_some());
        expected.metadata.managed_fields = None;
        assert_eq!(decoded.metadata, expected.metadata);
        assert_eq!(decoded.spec, expected.spec);
        assert_eq!(decoded.status, expected.status);
        assert_eq!(
            decoded.status.as_ref().and_then(|s| s.observed_generation),
            Some(2)
        );
    }

    fn undecodable(name: &str, rv: &str) -> WatchedPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "oidcrefresh.dev/v1alpha1", "kind": "OidcRefreshPolicy",
            "metadata": {"name": name, "namespace": "a", "resourceVersion": rv},
            "spec": {"provider": {"google": {}}, "coder": {"deployment": 42}}
        }))
        .unwrap()
    }

    #[test]
    fn a_policy_that_does_not_decode_is_kept_as_its_metadata_and_a_short_reason() {
        let WatchedPolicy::Undecodable { metadata, reason } = undecodable("p", "7") else {
            panic!("decoded")
        };
        assert_eq!(metadata.name.as_deref(), Some("p"));
        assert_eq!(metadata.resource_version.as_deref(), Some("7"));
        assert!(
            reason.starts_with("spec: invalid type: integer `42`"),
            "{reason}"
        );
        // One such object no longer fails a whole list page.
        let list: kube::core::ObjectList<WatchedPolicy> =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "oidcrefresh.dev/v1alpha1", "kind": "OidcRefreshPolicyList",
                "metadata": {"resourceVersion": "9"},
                "items": [
                    {"metadata": {"name": "bad", "namespace": "a"}, "spec": {"coder": "x"}},
                    {"metadata": {"name": "good", "namespace": "a"},
                     "spec": {"provider": {"google": {}}, "coder": {"deployment": "coder"}},
                     "status": {"observedGeneration": "not a number"}}
                ]
            }))
            .unwrap();
        assert!(matches!(&list.items[0], WatchedPolicy::Undecodable { .. }));
        let WatchedPolicy::Decoded(good) = &list.items[1] else {
            panic!("the good policy did not decode")
        };
        assert_eq!(good.status, None, "an unreadable status is read as none");
    }

    #[test]
    fn undecodable_policies_stay_out_of_the_cache_and_leave_it_when_they_break() {
        let mut u = Undecodable::default();
        assert!(
            u.sort(watcher::Event::InitApply(undecodable("p", "1")))
                .is_none()
        );
        assert_eq!(u.reported.len(), 1);
        // A version that broke: the cache drops the policy it had.
        match u.sort(watcher::Event::Apply(undecodable("p", "2"))) {
            Some(watcher::Event::Delete(p)) => assert_eq!(p.name_any(), "p"),
            other => panic!("{other:?}"),
        }
        assert_eq!(u.reported[&("a".into(), "p".into())].as_deref(), Some("2"));
        // Fixed: forgotten, passed on.
        let fixed = WatchedPolicy::Decoded(policy("a", "p", "coder", None));
        assert!(matches!(
            u.sort(watcher::Event::Apply(fixed)),
            Some(watcher::Event::Apply(_))
        ));
        assert!(u.reported.is_empty());
    }

    #[test]
    fn related_objects_decode_only_name_namespace_and_version() {
        let related: Related<Deployment> = serde_json::from_value(serde_json::json!({
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": {
                "name": "coder", "namespace": "a", "resourceVersion": "7", "uid": "u",
                "labels": {"app": "coder"},
                "managedFields": [{"manager": "helm", "operation": "Update", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
            }
        }))
        .unwrap();
        assert_eq!(
            related.metadata,
            ObjectMeta {
                name: Some("coder".into()),
                namespace: Some("a".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            }
        );
        assert!(Related::<Deployment>::metadata_api());
        assert_eq!(
            Related::<Secret>::url_path(&(), Some("a")),
            Secret::url_path(&(), Some("a"))
        );
    }

    #[tokio::test]
    async fn a_panicking_reconcile_is_contained_and_counted() {
        let metrics = Metrics::new();
        let boom = async {
            if std::hint::black_box(true) {
                panic!("boom with remote text");
            }
            Ok(Action::await_change())
        };
        let r = contain(boom, Duration::from_secs(5), &metrics, "a", "p").await;
        assert!(matches!(r, Err(Error::Panicked)), "{r:?}");
        assert!(
            metrics
                .encode()
                .contains(r#"oidc_refresh_reconcile_errors_total{category="panic"} 1"#),
            "{}",
            metrics.encode()
        );
        let fine = contain(
            async { Ok(Action::await_change()) },
            Duration::from_secs(5),
            &metrics,
            "a",
            "p",
        )
        .await;
        assert!(fine.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_past_its_deadline_is_cancelled() {
        let metrics = Metrics::new();
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Action::await_change())
        };
        let r = contain(slow, Duration::from_secs(40), &metrics, "a", "p").await;
        assert!(matches!(r, Err(Error::DeadlineExceeded(_))), "{r:?}");
        assert!(
            metrics
                .encode()
                .contains(r#"oidc_refresh_reconcile_errors_total{category="deadline"} 1"#)
        );
    }

    #[test]
    fn the_reconcile_deadline_follows_the_provider_timeout() {
        let s = Settings::default();
        assert_eq!(s.reconcile_deadline(), Duration::from_secs(120));
        let s = Settings {
            provider_timeout: Duration::from_secs(1),
            ..Settings::default()
        };
        assert_eq!(s.reconcile_deadline(), MIN_RECONCILE_TIMEOUT);
        let s = Settings {
            reconcile_timeout: Some(Duration::from_secs(7)),
            ..Settings::default()
        };
        assert_eq!(s.reconcile_deadline(), Duration::from_secs(7));
    }

    #[test]
    fn only_labelled_secrets_are_watched_when_the_label_is_required() {
        let strict = Settings {
            require_credentials_label: true,
            ..Settings::default()
        };
        assert_eq!(
            secret_watch(&strict).label_selector.as_deref(),
            Some("oidcrefresh.dev/credentials=true")
        );
        let lax = Settings {
            require_credentials_label: false,
            ..Settings::default()
        };
        assert_eq!(secret_watch(&lax).label_selector, None);
        assert_eq!(related_watch().label_selector, None);
    }

    #[test]
    fn slim_removes_an_emptied_annotation_map() {
        let mut p = policy("a", "p", "coder", None);
        p.metadata.annotations = Some([(LAST_APPLIED.to_string(), "{}".to_string())].into());
        slim(&mut p);
        assert_eq!(p.metadata.annotations, None);
    }

    #[test]
    fn related_objects_map_to_the_policies_in_their_namespace_only() {
        let (store, mut writer) = reflector::store::<OidcRefreshPolicy>();
        for p in [
            policy("a", "p1", "coder", Some("kc")),
            policy("a", "p2", "coder", None),
            policy("a", "p3", "other", Some("kc")),
            policy("b", "p4", "coder", Some("kc")),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(p));
        }
        let names = |refs: Vec<ObjectRef<OidcRefreshPolicy>>| {
            let mut n: Vec<String> = refs.into_iter().map(|r| r.name).collect();
            n.sort();
            n
        };
        let by_deployment = referencing(&store, Some("a".into()), "coder".into(), |p| {
            Some(p.spec.coder.deployment.as_str())
        });
        assert_eq!(names(by_deployment), ["p1", "p2"]);
        let by_secret = referencing(&store, Some("a".into()), "kc".into(), |p| {
            p.spec.provider.credentials_secret()
        });
        assert_eq!(names(by_secret), ["p1", "p3"]);
        assert!(
            referencing(&store, Some("c".into()), "coder".into(), |p| Some(
                p.spec.coder.deployment.as_str()
            ))
            .is_empty()
        );
    }
}
