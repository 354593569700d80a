//! # kube-sim: an in-process Kubernetes API server simulator
//!
//! `kube-sim` serves a useful subset of the Kubernetes REST API over plain HTTP
//! from memory, faithfully enough that the real `kubectl` (v1.32) and
//! `kube-runtime`'s `Controller` work against it. It exists so the operator can
//! be tested end to end without a cluster: where a real API server would reject,
//! conflict or validate, the simulator does too.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use kube_sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::default()).await?;
//! println!("{}", sim.base_url());
//! std::fs::write("/tmp/kubeconfig", sim.kubeconfig_yaml(Some("default")))?;
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## What is served
//!
//! * core/v1 `namespaces`, `secrets`, `configmaps`, `events`, `serviceaccounts`,
//!   `services`, `pods`; `events.k8s.io/v1` `events` (the same objects as core
//!   Events, converted on the fly); `apps/v1` `deployments` (+`/status`);
//!   `coordination.k8s.io/v1` `leases`; `networking.k8s.io/v1` `networkpolicies`;
//!   `apiextensions.k8s.io/v1`
//!   `customresourcedefinitions` (+`/status`); `rbac.authorization.k8s.io/v1`
//!   roles/bindings (enforced with [`SimConfig::rbac`]); and every custom
//!   resource a CRD registers, as soon as the CRD is created (removed with it).
//! * Discovery (`/version`, `/api`, `/apis`, per group-version resource lists;
//!   legacy format only: aggregated discovery requests are answered with plain
//!   `application/json`, which makes kubectl fall back), OpenAPI v3
//!   (`/openapi/v3` and per group-version documents, built from CRD schemas and
//!   small hand-written built-in schemas), server-side `Table` printing and
//!   `PartialObjectMetadata(List)` answers.
//! * list (`limit`/`continue`, label and field selectors), watch (resume,
//!   410 Expired, bookmarks, `sendInitialEvents`, selector transitions),
//!   create/update/delete/deletecollection, merge/JSON/strategic-merge patches,
//!   server-side apply with managedFields and conflicts, `/status` subresources,
//!   finalizers, generateName, namespaces (terminating namespaces reject creates
//!   and are emptied), CRD schema validation, pruning, defaulting and CEL rules,
//!   and a Deployment rollout emulation.
//!
//! ## Known differences from a real API server
//!
//! * Authentication and authorization are off by default: every request is
//!   allowed (bearer tokens are still parsed into [`RequestUser`]). With
//!   [`SimConfig::rbac`] on, requests need a token the simulator issued
//!   ([`SimHandle::admin_token`], [`SimHandle::service_account_token`],
//!   [`SimHandle::user_token`]; anything else gets `401 Unauthorized`, there is
//!   no anonymous user, and `/healthz`, `/readyz`, `/livez` need no token) and
//!   are authorized by RBAC (module `rbac`): Roles, ClusterRoles,
//!   RoleBindings and ClusterRoleBindings with User, Group and ServiceAccount
//!   subjects; `apiGroups`, `resources` (`resource/subresource`,
//!   `*/subresource`, `*`), `verbs`, `resourceNames` (a `metadata.name` field
//!   selector names a list/watch, as in the real server); a RoleBinding to a
//!   ClusterRole grants in its namespace only; `system:masters` is always
//!   allowed; a server-side apply that creates also needs `create`. Denials
//!   are the real `403 Forbidden` Status (message, reason, details). Discovery
//!   and OpenAPI are allowed to every authenticated user; `nonResourceURLs`
//!   rules are ignored; no aggregated ClusterRoles, no escalation checks
//!   (anyone allowed to write Roles may grant anything), no impersonation, no
//!   `SelfSubjectAccessReview`/`SelfSubjectRulesReview` (`kubectl auth can-i`
//!   does not work); ServiceAccount tokens do not expire and are not checked
//!   against the ServiceAccount existing. The simulator serves plain HTTP and
//!   client-go (kubectl) sends credentials only over TLS, so kubectl needs a
//!   TLS-terminating proxy in front of an RBAC simulator (`tests/rbac.rs` has
//!   one); kube-rs clients send tokens over HTTP.
//! * JSON on the wire. YAML request bodies are accepted. Protobuf request
//!   bodies are decoded only for Namespace, ConfigMap, Secret and
//!   ServiceAccount (what `kubectl create namespace|configmap|secret|serviceaccount`
//!   send); other protobuf bodies get 415. Responses are always JSON, which
//!   clients that asked for protobuf accept. No `/openapi/v2` (kubectl uses
//!   `/openapi/v3`).
//! * `resourceVersion`/`resourceVersionMatch` on get and list are ignored: reads
//!   always return the latest state (the real server can serve older RVs
//!   from its watch cache or etcd).
//! * Validation order: all errors are collected, but within one object
//!   `required` errors are listed before the properties' errors (the real
//!   server's ordering may differ slightly). CEL rules of a node are skipped
//!   when the node or its children already failed schema validation.
//! * Events are validated as `pkg/apis/core/validation/events.go` does
//!   (legacy rules for core/v1, strict create/update rules through
//!   events.k8s.io/v1); see `docs/fidelity/kubernetes.md`.
//! * `/scale` is served for Deployments only (not for CRDs' scale subresource).
//! * Paginated lists do not serve a snapshot: continuation pages show the
//!   current state after the continue key (the real server reads the snapshot
//!   at the first page's resourceVersion from etcd). Continue tokens never expire.
//! * Built-in kinds are not schema-validated: only object names, metadata
//!   shapes, Secret immutability and a subset of the Deployment rules (selector
//!   required, non-empty and immutable, template labels matching it, container
//!   names and images, non-negative replicas) and the NetworkPolicy rules
//!   (ports, peers, CIDRs, policy types; with the server's defaults) are checked. Services get the
//!   server's defaults and a ClusterIP from 10.96.0.0/12 (single-stack IPv4; requested addresses
//!   checked, an allocated one immutable; no NodePort allocation). Their hand-written
//!   schemas are partial, so unknown fields in built-in objects are stored as
//!   given even with `fieldValidation=Strict`.
//! * Value validations `allOf`/`anyOf`/`oneOf`/`not` are checked with
//!   go-openapi-style messages; `x-kubernetes-validations` supports the CEL
//!   standard library plus the strings, lists and math extensions, not the
//!   Kubernetes-specific libraries (`quantity`, `url`, `ip`, `cidr`, `format`,
//!   `isSorted`...), and has no cost budget.
//! * An update that removes the last finalizer of an object being deleted
//!   deletes it; the DELETED event carries the last stored state (as the real
//!   registry does).
//! * Custom resources with several versions are stored once; reading another
//!   version only rewrites `apiVersion` (conversion strategy `None`); webhook
//!   conversion is not supported.
//! * Strategic merge patch: `$retainKeys` and `$deleteFromPrimitiveList` are
//!   ignored; `$patch: delete|replace|merge` and `$setElementOrder` are honoured
//!   for lists with a patch merge key.
//! * Server-side apply follows structured-merge-diff for the common cases
//!   (struct fields, granular maps, associative lists, sets, atomic lists) but
//!   does not implement unions, defaulting of removed fields or version
//!   conversion of managed field sets.
//! * Garbage collection is synchronous and simplified: when an object is
//!   deleted, dependents whose every owner reference points to a now missing
//!   uid are deleted too (background propagation); `Orphan` removes the
//!   owner's reference from its dependents, which survive; `Foreground` is
//!   treated as background.
//! * CRD deletion removes all its custom resources immediately (no
//!   `customresourcecleanup` finalizer phase); CRD validation is light (names,
//!   group, versions, exactly one storage version).
//! * Deployment controller emulation creates and scales `apps/v1`
//!   ReplicaSets (pod-template-hash, owner references, revision annotations,
//!   paused Deployments, history cleanup) and writes their status as if their
//!   pods became ready after the rollout delay; no Pods are created.
//! * The watch cache is a bounded event history (`watch_history` events); a
//!   watch from an older RV gets `410 Expired`. A watcher that falls too far
//!   behind the fan-out channel has its stream closed (clients re-watch).
//! * Namespace deletion empties the namespace synchronously.
//!
//! ## Request path
//!
//! `server` parses the REST path into an `ApiRequest` (verb, resource,
//! namespace, name, subresource, negotiated output, bearer token as
//! [`RequestUser`], authenticated by `rbac` when RBAC is on), passes the
//! authorization hook (RBAC, or allow-all),
//! counts the request by verb, resource/subresource and HTTP outcome, and
//! dispatches: `write` (get/list/create/update/patch/delete and the write
//! pipeline), `watch`, `discovery`, `openapi`. The write pipeline handles
//! metadata (uid, timestamps, generateName, generation), the status
//! subresource rules, kind-specific defaults (`deployment`, Secrets'
//! `stringData`, namespaces), custom resource pruning/defaulting/validation
//! (`schema`, `cel_rules`), managedFields (`ssa`), no-op detection,
//! finalizers, garbage collection and CRD registration. All state lives in
//! one `store::State` behind a mutex; watch fan-out uses a broadcast channel.
//!
//! ## Benchmark
//!
//! `benches/throughput.rs` (release profile, client and server in one process
//! on the same 2 cores, other builds running on the machine, 1,000 ConfigMaps
//! of ~64 bytes of data each; the client-side JSON parsing is included in the
//! list numbers). One run:
//!
//! | measurement                                        | result            |
//! |----------------------------------------------------|-------------------|
//! | direct creates (`SimHandle::create_object`)        | 8,923 objects/s   |
//! | full lists (1,000 items, no pagination)            | 57.9 lists/s      |
//! | paginated lists (`limit=100`, 10 pages per list)   | 33.0 lists/s (330 pages/s) |
//! | watch fan-out (100 watches x 200 patches)          | 28,229 events/s delivered (20,000 events) |

#![warn(missing_docs)]

mod builtin_schemas;
mod cel_rules;
mod counters;
mod deployment;
mod discovery;
mod errors;
mod events;
mod network_policy;
mod openapi;
mod patch;
mod proto;
mod rbac;
mod resources;
pub mod schema;
pub mod selectors;
mod server;
mod service;
pub use server::RequestUser;
mod ssa;
mod store;
mod table;
mod util;
mod watch;
mod write;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use counters::RequestCounters;
pub use errors::{FieldError, FieldErrorKind, SimError};
use serde_json::Value;
use tokio::sync::{Notify, broadcast, watch as tokio_watch};

/// Simulator configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Listen address; default `127.0.0.1:0` (a free port).
    pub addr: SocketAddr,
    /// Emulate the Deployment controller (status, rollouts). Default true.
    pub deployment_controller: bool,
    /// Time from a template change to the rollout completing. Default 200ms.
    pub rollout_delay: Duration,
    /// Events kept for watch resumption; older resourceVersions get 410 Gone. Default 10,000.
    pub watch_history: usize,
    /// Interval of BOOKMARK events for watches with `allowWatchBookmarks=true`. Default 5s (real: ~1 min).
    pub bookmark_interval: Duration,
    /// Authenticate requests by bearer token and authorize them with RBAC.
    /// Default false (every request is allowed, with or without a token).
    pub rbac: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            deployment_controller: true,
            rollout_delay: Duration::from_millis(200),
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(5),
            rbac: false,
        }
    }
}

pub(crate) struct Shared {
    pub state: Mutex<store::State>,
    pub tx: broadcast::Sender<Arc<store::WatchEvent>>,
    pub counters: Mutex<RequestCounters>,
    pub breaker: tokio_watch::Sender<u64>,
    pub shutdown: tokio_watch::Sender<bool>,
    pub rollout_delay: Mutex<Duration>,
    pub stuck: Mutex<HashSet<(String, String)>>,
    pub deploy_notify: Notify,
    pub config: SimConfig,
    pub server_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    pub tokens: rbac::Tokens,
    pub faults: Mutex<Vec<Fault>>,
}

/// Requests made to fail (see [`SimHandle::fail_requests`]).
#[derive(Clone, Debug)]
pub(crate) struct Fault {
    pub verb: String,
    pub resource: String,
    /// Matching requests still let through before failing.
    pub skip: usize,
    /// Matching requests still to fail after that.
    pub times: usize,
}

impl Shared {
    /// Whether this request is to fail (and counts it against the matching fault).
    pub(crate) fn take_fault(&self, verb: &str, resource: &str) -> bool {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        for f in faults.iter_mut() {
            if f.verb == verb && f.resource == resource {
                if f.skip > 0 {
                    f.skip -= 1;
                    return false;
                }
                if f.times > 0 {
                    f.times -= 1;
                    return true;
                }
            }
        }
        false
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, store::State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct DropGuard(tokio_watch::Sender<bool>);
impl Drop for DropGuard {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Bind and start serving in the background (requires a tokio runtime).
    pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let (tx, _) = broadcast::channel(65_536);
        let (breaker, _) = tokio_watch::channel(0u64);
        let (shutdown, _) = tokio_watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(store::State::new(config.watch_history, tx.clone())),
            tx,
            counters: Mutex::new(RequestCounters::default()),
            breaker,
            shutdown: shutdown.clone(),
            rollout_delay: Mutex::new(config.rollout_delay),
            stuck: Mutex::new(HashSet::new()),
            deploy_notify: Notify::new(),
            config: config.clone(),
            server_task: Mutex::new(None),
            tokens: rbac::Tokens::new(),
            faults: Mutex::new(Vec::new()),
        });
        write::bootstrap(&shared);
        let router = server::router(shared.clone());
        let mut rx = shared.shutdown.subscribe();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await;
        });
        *shared.server_task.lock().unwrap() = Some(task);
        if config.deployment_controller {
            tokio::spawn(deployment::run(shared.clone()));
        }
        tracing::debug!(%addr, "kube-sim listening");
        Ok(SimHandle {
            shared,
            addr,
            _guard: Arc::new(DropGuard(shutdown)),
        })
    }
}

/// Handle to a running simulator. Cheap to clone; the server stops on
/// [`SimHandle::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _guard: Arc<DropGuard>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SimHandle {
    /// Fault injection: after letting `skip` matching requests through, the next `times`
    /// requests with this verb (`create`, `patch`, ...) on this resource (`events`,
    /// `deployments`, `oidcrefreshpolicies/status`, ...) fail with 500 InternalError and change
    /// nothing, as when the API server or etcd fails. Replaces an earlier fault on the same verb
    /// and resource; `times == 0` removes it.
    pub fn fail_requests(&self, verb: &str, resource: &str, skip: usize, times: usize) {
        let mut faults = self.shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.retain(|f| !(f.verb == verb && f.resource == resource));
        if times > 0 {
            faults.push(Fault {
                verb: verb.to_string(),
                resource: resource.to_string(),
                skip,
                times,
            });
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at this simulator (context `sandbox`): no auth, or
    /// the cluster-admin token when RBAC is on.
    pub fn kubeconfig_yaml(&self, namespace: Option<&str>) -> String {
        if self.shared.config.rbac {
            return self.kubeconfig_yaml_with_token(namespace, &self.shared.tokens.admin);
        }
        self.kubeconfig(namespace, "{}")
    }

    /// A kubeconfig pointing at this simulator (context `sandbox`) that
    /// authenticates with `token`.
    pub fn kubeconfig_yaml_with_token(&self, namespace: Option<&str>, token: &str) -> String {
        self.kubeconfig(namespace, &format!("\n    token: {token}"))
    }

    fn kubeconfig(&self, namespace: Option<&str>, user: &str) -> String {
        let ns = namespace
            .map(|n| format!("\n    namespace: {n}"))
            .unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox{ns}\ncurrent-context: sandbox\nusers:\n- name: sandbox\n  user: {user}\npreferences: {{}}\n",
            self.base_url()
        )
    }

    /// The cluster-admin token (user `kubernetes-admin`, group
    /// `system:masters`: always allowed). Only checked when
    /// [`SimConfig::rbac`] is on.
    pub fn admin_token(&self) -> String {
        self.shared.tokens.admin.clone()
    }

    /// Issue a token for the ServiceAccount `namespace/name`: user
    /// `system:serviceaccount:<namespace>:<name>`, groups
    /// `system:serviceaccounts`, `system:serviceaccounts:<namespace>` and
    /// `system:authenticated`. A new token each call; tokens never expire.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        self.shared
            .tokens
            .issue(rbac::UserInfo::service_account(namespace, name))
    }

    /// Issue a token for user `name` in `groups` (plus `system:authenticated`).
    pub fn user_token(&self, name: &str, groups: &[&str]) -> String {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        self.shared.tokens.issue(rbac::UserInfo {
            name: name.into(),
            groups,
        })
    }

    /// Snapshot of the request counters.
    pub fn counters(&self) -> RequestCounters {
        self.shared.counters.lock().unwrap().clone()
    }

    /// Zero the request counters.
    pub fn reset_counters(&self) {
        *self.shared.counters.lock().unwrap() = RequestCounters::default();
    }

    /// Make the current/next rollout of a Deployment end in `ProgressDeadlineExceeded`
    /// (`stuck = true`), or let it complete (`stuck = false`).
    pub fn set_rollout_stuck(&self, namespace: &str, name: &str, stuck: bool) {
        {
            let mut s = self.shared.stuck.lock().unwrap();
            if stuck {
                s.insert((namespace.to_string(), name.to_string()));
            } else {
                s.remove(&(namespace.to_string(), name.to_string()));
            }
        }
        self.shared
            .lock()
            .rollout_queue
            .push((namespace.to_string(), name.to_string()));
        self.shared.deploy_notify.notify_one();
    }

    /// Change the rollout delay.
    pub fn set_rollout_delay(&self, d: Duration) {
        *self.shared.rollout_delay.lock().unwrap() = d;
    }

    /// Forget the watch history: watches resuming from an older RV get 410 Gone.
    pub fn compact_watch_history(&self) {
        self.shared.lock().compact();
    }

    /// End all open watch streams.
    pub fn break_watches(&self) {
        self.shared.breaker.send_modify(|v| *v += 1);
    }

    /// Stop the server (open watches are closed) and wait for it to finish.
    pub async fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
        let task = self.shared.server_task.lock().unwrap().take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }

    /// Create an object directly (same semantics as an HTTP create by manager `kube-sim`).
    pub fn create_object(
        &self,
        api_version: &str,
        kind: &str,
        obj: Value,
    ) -> Result<Value, SimError> {
        write::direct_create(&self.shared, api_version, kind, obj)
    }

    /// Get an object directly (as an HTTP get of that apiVersion would return it).
    pub fn get_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        write::direct_get(&self.shared, api_version, kind, namespace, name)
    }
}
