//! Controller wiring: the policy watch, metadata-only watches of Deployments and Secrets mapped
//! back to the policies that reference them (no cache of every Deployment or Secret in the
//! cluster: only a stream of metadata), concurrency, graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::crd::OidcRefreshPolicy;
use crate::error::Error;
use crate::events::Publisher;
use crate::metrics::Metrics;
use crate::providers::ProviderDeps;
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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespaces: Vec::new(),
            concurrency: 32,
            provider_timeout: Duration::from_secs(30),
            instance: None,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            provider_qps: 200.0,
            provider_burst: 400,
        }
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
    let runs = namespaces.into_iter().map(|ns| {
        let mut rx = rx.clone();
        run_one(
            client.clone(),
            ns,
            settings.clone(),
            metrics.clone(),
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            },
        )
    });
    ready.store(true, Ordering::SeqCst);
    let all = futures::future::join_all(runs);
    tokio::pin!(all);
    tokio::select! {
        _ = &mut all => {}
        () = shutdown => {
            let _ = tx.send(true);
            all.await;
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
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let policies: Api<OidcRefreshPolicy> = api(&client, &namespace);
    let deployments: Api<PartialObjectMeta<Deployment>> = api(&client, &namespace);
    let secrets: Api<PartialObjectMeta<Secret>> = api(&client, &namespace);

    let events = Publisher::new(client.clone(), settings.instance.clone());
    let deps = ProviderDeps::new(metrics.clone(), settings.provider_timeout)
        .with_rate_limit(settings.provider_qps, settings.provider_burst);
    let mut context = Context::new(client.clone(), events, metrics.clone(), deps);
    context.backoff_base = settings.backoff_base;
    context.backoff_max = settings.backoff_max;
    let ctx = Arc::new(context);

    let controller = Controller::new(policies, watcher::Config::default().any_semantic())
        .with_config(
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
        .watches(
            deployments,
            watcher::Config::default().any_semantic(),
            move |d| {
                referencing(&s1, d.namespace(), d.name_any(), |p| {
                    Some(p.spec.coder.deployment.as_str())
                })
            },
        )
        .watches(
            secrets,
            watcher::Config::default().any_semantic(),
            move |s| {
                referencing(&s2, s.namespace(), s.name_any(), |p| {
                    p.spec.provider.credentials_secret()
                })
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                match e {
                    controller::Error::ReconcilerFailed(err, obj) => {
                        warn!(policy = %obj, error = %err, "reconcile failed")
                    }
                    controller::Error::ObjectNotFound(obj) => {
                        tracing::debug!(policy = %obj, "policy gone")
                    }
                    other => warn!(error = %other, "controller event"),
                }
            }
        })
        .await;
}

/// Kubernetes API failures: retried with backoff per policy.
fn error_policy(policy: Arc<OidcRefreshPolicy>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = (policy.namespace().unwrap_or_default(), policy.name_any());
    let delay = ctx.next_backoff(&key, None);
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
