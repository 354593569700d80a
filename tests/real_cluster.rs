//! Opt-in: the real `run` binary against a real cluster (kind, k3d, minikube, any conformant
//! cluster). Never part of the default test run and never counted as passing: it is `#[ignore]`d
//! and refuses to start without `ORO_REAL_CLUSTER=1`.
//!
//! ```sh
//! ORO_REAL_CLUSTER=1 KUBECONFIG=~/.kube/config \
//!   cargo test --test real_cluster -- --ignored --nocapture
//! ```
//!
//! What it needs: rights to apply the CRD and to create and delete a namespace (a throwaway
//! cluster's admin), and nodes that can pull `registry.k8s.io/pause:3.10` (the stand-in for Coder's
//! container; the operator only reads and patches the Deployment). It uses the Google provider,
//! which has no admin API, so no identity provider is needed. It creates the namespace
//! `oro-e2e-<unique>` and deletes it at the end, pass or fail; the CRD is left installed.
//!
//! What it checks, on a real API server, scheduler and kubelet: the policy becomes Ready; the two
//! env entries are merged into the Deployment, keeping what was there; the rollout is followed to
//! `RolloutComplete`; a second pass writes nothing (the Deployment's and the policy's
//! resourceVersions stay); the binary stops cleanly on SIGTERM.

mod common;

use std::panic::AssertUnwindSafe;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use oidc_refresh_operator::crd::OidcRefreshPolicy;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_oidc-refresh-operator");
/// Image pulls and a real rollout take longer than the simulator's.
const WAIT: Duration = Duration::from_secs(300);
const MANAGER: &str = "oidc-refresh-operator-e2e";

#[tokio::test]
#[ignore = "needs a real cluster: ORO_REAL_CLUSTER=1 cargo test --test real_cluster -- --ignored"]
async fn google_policy_converges_on_a_real_cluster() {
    assert_eq!(
        std::env::var("ORO_REAL_CLUSTER").as_deref(),
        Ok("1"),
        "set ORO_REAL_CLUSTER=1 (and KUBECONFIG) to run this test against the cluster of your kubeconfig"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default()
        .await
        .expect("a kubeconfig (KUBECONFIG or ~/.kube/config) for the cluster to test");
    let ns = format!(
        "oro-e2e-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 100_000
    );
    install_crd(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("create the test namespace");
    let outcome = AssertUnwindSafe(scenario(&client, &ns))
        .catch_unwind()
        .await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(client: &Client, ns: &str) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments
        .create(
            // Created imperatively (as `kubectl create` does), so the operator may take the two
            // entries over; a Deployment Helm or Argo CD applied would be a FieldConflict.
            &PostParams {
                field_manager: Some("kubectl-create".into()),
                ..Default::default()
            },
            &serde_json::from_value(coder_deployment()).unwrap(),
        )
        .await
        .expect("create the Coder stand-in");
    let mut operator = Operator::start(ns);

    let policies: Api<OidcRefreshPolicy> = Api::namespaced(client.clone(), ns);
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "oidcrefresh.dev/v1alpha1",
                "kind": "OidcRefreshPolicy",
                "metadata": {"name": "coder"},
                "spec": {
                    "provider": {"google": {}},
                    "coder": {"deployment": "coder", "scopes": ["groups"], "authURLParams": {"hd": "example.com"}}
                }
            }))
            .unwrap(),
        )
        .await
        .expect("create the policy");

    let policy = wait_for(&policies, &mut operator, |p| {
        condition(p, "Ready").is_some_and(|c| c["status"] == "True")
            && condition(p, "CoderRolledOut").is_some_and(|c| c["reason"] == "RolloutComplete")
    })
    .await;
    let deployment = deployments.get("coder").await.unwrap();
    let env = |name: &str| {
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    // Kept from the Deployment, offline_access dropped for Google, the policy's scope appended.
    assert_eq!(
        env("CODER_OIDC_SCOPES").as_deref(),
        Some("openid,profile,email,teams,groups")
    );
    assert_eq!(
        env("CODER_OIDC_AUTH_URL_PARAMS").as_deref(),
        Some(r#"{"access_type":"offline","hd":"example.com","prompt":"consent"}"#)
    );
    assert_eq!(
        env("CODER_ACCESS_URL").as_deref(),
        Some("https://coder.example.com")
    );
    let status = deployment.status.clone().unwrap_or_default();
    assert_eq!(status.observed_generation, deployment.metadata.generation);
    assert_eq!(status.updated_replicas, Some(1));

    // A second pass over the converged policy writes nothing.
    let (deployment_rv, policy_rv) = (
        deployment.metadata.resource_version.clone(),
        policy.metadata.resource_version.clone(),
    );
    policies
        .patch(
            "coder",
            &PatchParams::apply(MANAGER),
            &Patch::Apply(json!({
                "apiVersion": "oidcrefresh.dev/v1alpha1",
                "kind": "OidcRefreshPolicy",
                "metadata": {"name": "coder", "annotations": {"example.com/poke": "1"}}
            })),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    operator.assert_alive();
    assert_eq!(
        deployments
            .get("coder")
            .await
            .unwrap()
            .metadata
            .resource_version,
        deployment_rv,
        "the Deployment was written again"
    );
    let after = policies.get("coder").await.unwrap();
    assert_ne!(
        after.metadata.resource_version, policy_rv,
        "the annotation landed"
    );
    assert_eq!(
        after
            .status
            .as_ref()
            .map(|s| serde_json::to_value(s).unwrap()),
        policy
            .status
            .as_ref()
            .map(|s| serde_json::to_value(s).unwrap()),
        "the status was rewritten"
    );
    operator.stop();
}

/// A Deployment shaped like Coder's chart renders it, running `pause` so any cluster can run it,
/// with a restricted-profile security context so Pod Security admission lets it in.
fn coder_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "coder", "labels": {"app.kubernetes.io/name": "coder"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "coder"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "coder"}},
                "spec": {
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65535, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "coder",
                        "image": "registry.k8s.io/pause:3.10",
                        "env": [
                            {"name": "CODER_ACCESS_URL", "value": "https://coder.example.com"},
                            {"name": "CODER_OIDC_ISSUER_URL", "value": "https://accounts.google.com"},
                            {"name": "CODER_OIDC_SCOPES", "value": "openid,profile,email,offline_access,teams"}
                        ],
                        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
                    }]
                }
            }
        }
    })
}

/// Applies the CRD (server-side) and waits until it is served.
async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = OidcRefreshPolicy::crd();
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the CRD (needs rights on customresourcedefinitions)");
    let start = Instant::now();
    loop {
        let established = crds
            .get(&name)
            .await
            .ok()
            .and_then(|c| c.status)
            .is_some_and(|s| {
                s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return;
        }
        assert!(start.elapsed() < WAIT, "the CRD was not established");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The policy's condition `kind` for its current generation.
fn condition(p: &OidcRefreshPolicy, kind: &str) -> Option<Value> {
    let status = serde_json::to_value(p.status.as_ref()?).ok()?;
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["observedGeneration"] == json!(p.metadata.generation))
        .cloned()
}

async fn wait_for(
    policies: &Api<OidcRefreshPolicy>,
    operator: &mut Operator,
    done: impl Fn(&OidcRefreshPolicy) -> bool,
) -> OidcRefreshPolicy {
    let start = Instant::now();
    loop {
        let p = policies.get("coder").await.unwrap();
        if done(&p) {
            return p;
        }
        operator.assert_alive();
        assert!(
            start.elapsed() < WAIT,
            "not converged within {WAIT:?}; last status: {}",
            serde_json::to_string_pretty(&p.status).unwrap()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The operator binary, limited to the test namespace.
struct Operator(Child);

impl Operator {
    fn start(ns: &str) -> Operator {
        let port = free_port();
        let child = Command::new(BIN)
            .args(["run", "--watch-namespaces", ns])
            .args(["--admin-addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the operator");
        Operator(child)
    }

    fn assert_alive(&mut self) {
        if let Some(status) = self.0.try_wait().unwrap() {
            panic!("the operator exited: {status}");
        }
    }

    fn stop(mut self) {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(status.success(), "exit status on SIGTERM: {status}");
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
