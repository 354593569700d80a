//! Shared helpers for the end-to-end tests: a simulated cluster with the CRD, a controller, and
//! small wrappers around kube and kubectl.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use oidc_refresh_operator::crd::OidcRefreshPolicy;
use oidc_refresh_operator::sandbox::{self, IdpSim, NAMESPACE, Sandbox};
use serde_json::Value;

pub mod provider;

/// Generous upper bound for anything the controller should do; tests normally finish far sooner.
pub const WAIT: Duration = Duration::from_secs(30);

/// A cluster with the CRD and namespace, and a running controller.
pub async fn cluster() -> Sandbox {
    let (sim, client) = Sandbox::start_cluster().await.expect("simulator starts");
    Sandbox::start_controller(sim, client)
}

/// A client of the simulator authenticating with `token`.
pub fn client_with_token(sim: &kube_sim::SimHandle, token: &str) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = kube::Config::new(sim.base_url().parse().unwrap());
    config.default_namespace = NAMESPACE.into();
    config.auth_info.token = Some(token.to_string().into());
    Client::try_from(config).unwrap()
}

/// A simulated cluster that enforces RBAC (rollouts take 300 ms), with the CRD installed, and a
/// client of its admin.
pub async fn rbac_cluster() -> (kube_sim::SimHandle, Client) {
    let sim = kube_sim::Simulator::start(kube_sim::SimConfig {
        rbac: true,
        rollout_delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await
    .unwrap();
    let admin = client_with_token(&sim, &sim.admin_token());
    Api::<CustomResourceDefinition>::all(admin.clone())
        .create(&PostParams::default(), &OidcRefreshPolicy::crd())
        .await
        .unwrap();
    (sim, admin)
}

/// Applies `body` to the Deployment as `manager` (server-side apply).
pub async fn apply_as(
    client: &Client,
    manager: &str,
    force: bool,
    body: Value,
) -> Result<Deployment, kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let mut pp = PatchParams::apply(manager);
    pp.force = force;
    api.patch(
        body["metadata"]["name"].as_str().unwrap(),
        &pp,
        &Patch::Apply(&body),
    )
    .await
}

/// Merge-patches the Deployment as `manager` (an imperative update, like `kubectl edit`).
pub async fn merge_patch_as(
    client: &Client,
    manager: &str,
    name: &str,
    patch: Value,
) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let pp = PatchParams {
        field_manager: Some(manager.into()),
        ..Default::default()
    };
    api.patch(name, &pp, &Patch::Strategic(&patch))
        .await
        .expect("patch")
}

/// Annotates the policy (no spec change, same generation): the controller runs one more pass.
pub async fn poke_policy(client: &Client, name: &str, value: &str) {
    let api: Api<OidcRefreshPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"poke": value}}})),
    )
    .await
    .expect("annotate the policy");
}

/// Waits for a condition of the policy's current generation to have `status` and `reason`.
pub async fn wait_reason(
    client: &Client,
    name: &str,
    t: &str,
    status: &str,
    reason: &str,
) -> OidcRefreshPolicy {
    let (t, status, reason) = (t.to_string(), status.to_string(), reason.to_string());
    sandbox::wait_policy(client, name, WAIT, move |p| {
        p.status.as_ref().is_some_and(|s| {
            s.observed_generation == p.metadata.generation
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == t && c.status == status && c.reason == reason)
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Waits for Ready=True.
pub async fn wait_ready(client: &Client, name: &str) -> OidcRefreshPolicy {
    sandbox::wait_policy(client, name, WAIT, sandbox::is_ready)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The policy's condition (status, reason, message).
pub fn cond(p: &OidcRefreshPolicy, t: &str) -> (String, String, String) {
    let c = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} condition"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// A local TCP port that was free a moment ago (for a child process's admin server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a kubeconfig for the simulator to a temp dir and returns its path (dir kept alive).
pub fn kubeconfig(sim: &kube_sim::SimHandle) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, sim.kubeconfig_yaml(Some(NAMESPACE))).unwrap();
    (dir, path)
}

/// Runs the real kubectl off the async runtime (the simulator serves on it); returns
/// (success, stdout, stderr). Panics if kubectl is missing.
pub async fn kubectl(
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let kubeconfig = kubeconfig.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl_blocking(&kubeconfig, &args, stdin.as_deref())
    })
    .await
    .expect("kubectl task")
}

fn kubectl_blocking(
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = std::process::Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("kubectl must be installed (it is part of this machine image)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the tests read from a running identity-provider simulator.
pub trait IdpSimExt {
    /// Admin-API writes received.
    fn writes(&self) -> u64;
    /// Admin-API requests received (reads, writes and token requests).
    fn requests(&self) -> u64;
    /// Validates every admin-API request body received against the provider's contract; returns
    /// how many were checked.
    fn validate_bodies(&self) -> Result<usize, Vec<String>>;
}

impl IdpSimExt for IdpSim {
    fn writes(&self) -> u64 {
        match self {
            IdpSim::None => 0,
            IdpSim::Keycloak(s) => s.counters().writes(),
            IdpSim::PingFederate(s) => s.counters().writes(),
            IdpSim::Entra(s) => s.counters().writes(),
            IdpSim::Logto(s) => s.counters().writes(),
            IdpSim::Okta(s) => s.counters().writes(),
            IdpSim::Duende(s) => s.writes(),
        }
    }

    fn requests(&self) -> u64 {
        match self {
            IdpSim::None => 0,
            IdpSim::Keycloak(s) => s.counters().total(),
            IdpSim::PingFederate(s) => s.counters().total(),
            IdpSim::Entra(s) => s.counters().total(),
            IdpSim::Logto(s) => s.counters().total(),
            IdpSim::Okta(s) => s.counters().total(),
            IdpSim::Duende(s) => s.counters().total(),
        }
    }

    fn validate_bodies(&self) -> Result<usize, Vec<String>> {
        match self {
            IdpSim::None => Ok(0),
            IdpSim::Keycloak(s) => s.validate_recorded_bodies(),
            IdpSim::PingFederate(s) => s.validate_recorded_bodies(),
            IdpSim::Entra(s) => s.validate_recorded_bodies(),
            IdpSim::Logto(s) => s.validate_recorded_bodies(),
            IdpSim::Okta(s) => s.validate_recorded_bodies(),
            IdpSim::Duende(s) => s.validate_recorded_bodies(),
        }
    }
}

/// A cluster with a controller, an identity-provider simulator, the Secret with its credentials
/// and a Coder Deployment named `coder`.
pub async fn cluster_with_idp(provider: sandbox::SandboxProvider) -> (Sandbox, sandbox::IdpSetup) {
    let sb = cluster().await;
    let idp = sandbox::start_idp(provider).await.unwrap();
    let (name, data) = idp.secret.clone().unwrap();
    sandbox::create_secret(&sb.client, &name, &data)
        .await
        .unwrap();
    sandbox::create_coder(
        &sb.client,
        sandbox::coder_deployment("coder", serde_json::json!([])),
    )
    .await
    .unwrap();
    (sb, idp)
}

/// Merge-patches the policy's spec (a new generation).
pub async fn patch_policy_spec(client: &Client, name: &str, spec: Value) {
    let api: Api<OidcRefreshPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "spec": spec })),
    )
    .await
    .expect("patch the policy's spec");
}

/// Waits until the policy has `n` Events with `reason` (failing on more, or after `within`);
/// returns their messages, oldest first.
pub async fn wait_event_messages(
    client: &Client,
    name: &str,
    reason: &str,
    n: usize,
    within: Duration,
) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let events = sandbox::policy_events(client, name).await.unwrap();
        let found: Vec<String> = events
            .iter()
            .filter(|e| e.1 == reason)
            .map(|e| e.2.clone())
            .collect();
        assert!(
            found.len() <= n,
            "more than {n} {reason} Events: {events:?}"
        );
        if found.len() == n {
            return found;
        }
        assert!(start.elapsed() < within, "{events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
