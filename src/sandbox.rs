//! `sandbox`: the whole system on this machine with no cluster: the Kubernetes API simulator
//! (with its Deployment controller emulation), an identity-provider simulator, a Coder Deployment
//! shaped like the Coder Helm chart's, an example policy, and the controller.
//!
//! Without `--serve` it prints what it did and exits 0 once the policy is Ready, non-zero with
//! the reason otherwise. With `--serve` it writes a kubeconfig and keeps serving until
//! interrupted, so `kubectl` works against it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::{Value, json};

use crate::coder::{PARAMS_ENV, SCOPES_ENV};
use crate::controller::{self, Settings};
use crate::crd::OidcRefreshPolicy;
use crate::metrics::Metrics;
use crate::providers::http::CREDENTIALS_LABEL;
use crate::status::{self, ConditionType};

/// Namespace the sandbox uses.
pub const NAMESPACE: &str = "coder";

/// Identity providers the sandbox can simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxProvider {
    /// Google (no admin API).
    Google,
    /// Keycloak (Admin REST API simulator).
    Keycloak,
    /// PingFederate 12.1 (administrative API simulator).
    Pingfederate,
    /// PingFederate 11.3.
    Pingfederate11,
    /// Microsoft Entra ID (Microsoft Graph simulator).
    EntraId,
    /// Logto (Management API simulator).
    Logto,
    /// Okta (Management API simulator).
    Okta,
    /// Duende IdentityServer (Skoruba admin API simulator).
    Duende,
}

/// A running identity-provider simulator.
pub enum IdpSim {
    /// No simulator (Google).
    None,
    /// Keycloak.
    Keycloak(sim_keycloak::SimHandle),
    /// PingFederate.
    PingFederate(sim_pingfederate::SimHandle),
    /// Microsoft Graph.
    Entra(sim_entra::SimHandle),
    /// Logto.
    Logto(sim_logto::SimHandle),
    /// Okta.
    Okta(sim_okta::SimHandle),
    /// Duende IdentityServer.
    Duende(sim_duende::SimHandle),
}

/// What the sandbox puts into the policy and the Secret for a provider.
pub struct IdpSetup {
    /// The simulator.
    pub sim: IdpSim,
    /// `spec.provider`.
    pub provider: Value,
    /// The credentials Secret, if any.
    pub secret: Option<(String, BTreeMap<String, String>)>,
}

impl IdpSim {
    /// Refresh-relevant settings of Coder's client.
    pub fn describe(&self) -> Vec<(String, String)> {
        match self {
            IdpSim::None => Vec::new(),
            IdpSim::Keycloak(s) => s.describe_client(),
            IdpSim::PingFederate(s) => s.describe_client(),
            IdpSim::Entra(s) => s.describe_client(),
            IdpSim::Logto(s) => s.describe_client(),
            IdpSim::Okta(s) => s.describe_client(),
            IdpSim::Duende(s) => s.describe_client(),
        }
    }

    /// Stops the simulator.
    pub async fn shutdown(&self) {
        match self {
            IdpSim::None => {}
            IdpSim::Keycloak(s) => s.shutdown().await,
            IdpSim::PingFederate(s) => s.shutdown().await,
            IdpSim::Entra(s) => s.shutdown().await,
            IdpSim::Logto(s) => s.shutdown().await,
            IdpSim::Okta(s) => s.shutdown().await,
            IdpSim::Duende(s) => s.shutdown().await,
        }
    }
}

/// Starts and seeds the simulator for `provider`.
pub async fn start_idp(provider: SandboxProvider) -> anyhow::Result<IdpSetup> {
    Ok(match provider {
        SandboxProvider::Google => IdpSetup {
            sim: IdpSim::None,
            provider: json!({"google": {}}),
            secret: None,
        },
        SandboxProvider::Keycloak => {
            let sim = sim_keycloak::start(sim_keycloak::SimConfig::default()).await?;
            let seed = sim.seed_sandbox();
            IdpSetup {
                sim: IdpSim::Keycloak(sim),
                provider: seed.spec,
                secret: Some((seed.secret_name, seed.secret_data)),
            }
        }
        SandboxProvider::EntraId => {
            let sim = sim_entra::start(sim_entra::SimConfig::default()).await?;
            let seed = sim.seed_sandbox();
            IdpSetup {
                sim: IdpSim::Entra(sim),
                provider: seed.spec,
                secret: Some((seed.secret_name, seed.secret_data)),
            }
        }
        SandboxProvider::Logto => {
            let sim = sim_logto::start(sim_logto::SimConfig::default()).await?;
            let seed = sim.seed_sandbox();
            IdpSetup {
                sim: IdpSim::Logto(sim),
                provider: seed.spec,
                secret: Some((seed.secret_name, seed.secret_data)),
            }
        }
        SandboxProvider::Okta => {
            let sim = sim_okta::start(sim_okta::SimConfig::default()).await?;
            let seed = sim.seed_sandbox();
            IdpSetup {
                sim: IdpSim::Okta(sim),
                provider: seed.spec,
                secret: Some((seed.secret_name, seed.secret_data)),
            }
        }
        SandboxProvider::Duende => {
            let sim = sim_duende::start(sim_duende::SimConfig::default()).await?;
            let seed = sim.seed_sandbox();
            IdpSetup {
                sim: IdpSim::Duende(sim),
                provider: seed.spec,
                secret: Some((seed.secret_name, seed.secret_data)),
            }
        }
        SandboxProvider::Pingfederate | SandboxProvider::Pingfederate11 => {
            let version = if provider == SandboxProvider::Pingfederate11 {
                sim_pingfederate::PfVersion::V11_3
            } else {
                sim_pingfederate::PfVersion::V12_1
            };
            let sim = sim_pingfederate::start(sim_pingfederate::SimConfig {
                version,
                ..Default::default()
            })
            .await?;
            let seed = sim.seed_sandbox();
            IdpSetup {
                sim: IdpSim::PingFederate(sim),
                provider: seed.spec,
                secret: Some((seed.secret_name, seed.secret_data)),
            }
        }
    })
}

/// `sandbox` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Identity provider to simulate.
    #[arg(long, value_enum, default_value = "google")]
    pub provider: SandboxProvider,
    /// Keep serving after the policy is Ready (until interrupted).
    #[arg(long)]
    pub serve: bool,
    /// Where `--serve` writes the kubeconfig.
    #[arg(long, default_value = "sandbox.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// How long to wait for Ready (Kubernetes duration).
    #[arg(long, default_value = "60s", value_parser = |s: &str| crate::duration::parse(s).map_err(|e| e.to_string()))]
    pub timeout: Duration,
}

/// A running sandbox.
pub struct Sandbox {
    /// The Kubernetes API simulator.
    pub kube: kube_sim::SimHandle,
    /// A client for it.
    pub client: Client,
    /// Stops the controller.
    stop: tokio::sync::watch::Sender<bool>,
    controller: tokio::task::JoinHandle<()>,
    /// Controller metrics.
    pub metrics: Arc<Metrics>,
}

/// Builds a kube client for a simulator.
pub fn client_for(sim: &kube_sim::SimHandle) -> anyhow::Result<Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = kube::Config::new(sim.base_url().parse()?);
    config.default_namespace = NAMESPACE.into();
    Ok(Client::try_from(config)?)
}

impl Sandbox {
    /// Starts the Kubernetes API simulator with the CRD and namespace, and no controller.
    pub async fn start_cluster() -> anyhow::Result<(kube_sim::SimHandle, Client)> {
        let sim = kube_sim::Simulator::start(kube_sim::SimConfig {
            rollout_delay: Duration::from_millis(300),
            ..Default::default()
        })
        .await?;
        let client = client_for(&sim)?;
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(client.clone());
        crds.create(&PostParams::default(), &OidcRefreshPolicy::crd())
            .await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
            )
            .await?;
        // The policy resource is served as soon as the CRD exists; wait until discovery has it.
        let policies: Api<OidcRefreshPolicy> = Api::namespaced(client.clone(), NAMESPACE);
        let started = Instant::now();
        while policies.list(&ListParams::default()).await.is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "the CRD was not served"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((sim, client))
    }

    /// Starts the controller against a simulator.
    pub fn start_controller(sim: kube_sim::SimHandle, client: Client) -> Sandbox {
        let metrics = Arc::new(Metrics::new());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let mut rx2 = rx.clone();
        let settings = Settings {
            concurrency: 4,
            provider_timeout: Duration::from_secs(5),
            instance: Some("sandbox".into()),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(5),
            // The simulators listen on loopback over plain http.
            allow_insecure_http: true,
            require_credentials_label: true,
            ..Settings::default()
        };
        let controller = tokio::spawn(controller::run(
            client.clone(),
            settings,
            metrics.clone(),
            Arc::new(AtomicBool::new(false)),
            async move {
                let _ = rx2.wait_for(|s| *s).await;
            },
        ));
        drop(rx);
        Sandbox {
            kube: sim,
            client,
            stop,
            controller,
            metrics,
        }
    }

    /// Stops the controller, leaving the simulator running.
    pub async fn stop_controller_only(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.controller).await;
    }

    /// Stops the controller and the simulator.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.controller).await;
        self.kube.shutdown().await;
    }
}

/// A Coder Deployment shaped like the one the Coder Helm chart renders.
pub fn coder_deployment(name: &str, extra_env: Value) -> Value {
    let mut env = vec![
        json!({"name": "CODER_HTTP_ADDRESS", "value": "0.0.0.0:8080"}),
        json!({"name": "CODER_PROMETHEUS_ADDRESS", "value": "0.0.0.0:2112"}),
        json!({"name": "CODER_ACCESS_URL", "value": "https://coder.example.com"}),
        json!({"name": "CODER_PG_CONNECTION_URL", "valueFrom": {"secretKeyRef": {"name": "coder-db-url", "key": "url"}}}),
        json!({"name": "CODER_OIDC_ISSUER_URL", "value": "https://accounts.google.com"}),
        json!({"name": "CODER_OIDC_CLIENT_ID", "value": "coder"}),
        json!({"name": "CODER_OIDC_CLIENT_SECRET", "valueFrom": {"secretKeyRef": {"name": "coder-oidc", "key": "client-secret"}}}),
    ];
    if let Value::Array(extra) = extra_env {
        env.extend(extra);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/name": "coder", "app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": name, "meta.helm.sh/release-namespace": NAMESPACE}
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "coder", "app.kubernetes.io/instance": name}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "coder", "app.kubernetes.io/instance": name}},
                "spec": {
                    "serviceAccountName": "coder",
                    "containers": [{
                        "name": "coder",
                        "image": "ghcr.io/coder/coder:v2.27.0",
                        "args": ["server"],
                        "env": env,
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}
                    }]
                }
            }
        }
    })
}

/// Creates the Coder Deployment as Helm does (field manager `helm`).
pub async fn create_coder(client: &Client, deployment: Value) -> anyhow::Result<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let pp = PostParams {
        field_manager: Some("helm".into()),
        ..Default::default()
    };
    Ok(api
        .create(&pp, &serde_json::from_value(deployment)?)
        .await?)
}

/// Creates a Secret in the sandbox namespace.
pub async fn create_secret(
    client: &Client,
    name: &str,
    data: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    // Labelled as identity-provider credentials, as the operator requires of every Secret a
    // policy names.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {CREDENTIALS_LABEL: "true"}},
        "stringData": data,
    }))?;
    api.create(&PostParams::default(), &secret).await?;
    Ok(())
}

/// The example policy for a provider block.
pub fn example_policy(name: &str, provider: Value) -> Value {
    json!({
        "apiVersion": "oidcrefresh.dev/v1alpha1",
        "kind": "OidcRefreshPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "provider": provider,
            "coder": {"deployment": "coder", "scopes": ["groups"], "authURLParams": {"hd": "example.com"}},
            "interval": "10m"
        }
    })
}

/// Refresh-token settings the sandbox asks of each provider: what that provider can honour.
pub fn example_refresh_tokens(provider: SandboxProvider) -> Value {
    match provider {
        SandboxProvider::Google => json!({}),
        // Entra ID fixes refresh-token lifetimes; only offline_access applies.
        SandboxProvider::EntraId => json!({"offlineAccess": true}),
        // Logto has no idle timeout; lifetimes are whole days (90 here).
        // Logto has no reuse window for rotated refresh tokens: Reuse keeps Coder's concurrent
        // refreshes from signing users out (Coder is a confidential client).
        SandboxProvider::Logto => {
            json!({"offlineAccess": true, "lifetime": "2160h", "rotation": "Reuse"})
        }
        // Duende has no reuse window for OneTimeOnly refresh tokens: ReUse, as Duende recommends
        // for a confidential client such as Coder.
        SandboxProvider::Duende => {
            json!({"offlineAccess": true, "idleTimeout": "720h", "lifetime": "2160h", "rotation": "Reuse"})
        }
        _ => {
            json!({"offlineAccess": true, "idleTimeout": "720h", "lifetime": "2160h", "rotation": "Rotate"})
        }
    }
}

/// Creates a policy.
pub async fn create_policy(client: &Client, policy: Value) -> anyhow::Result<OidcRefreshPolicy> {
    let api: Api<OidcRefreshPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    Ok(api
        .create(&PostParams::default(), &serde_json::from_value(policy)?)
        .await?)
}

/// Waits until `check` accepts the policy, or `timeout`.
pub async fn wait_policy(
    client: &Client,
    name: &str,
    timeout: Duration,
    check: impl Fn(&OidcRefreshPolicy) -> bool,
) -> anyhow::Result<OidcRefreshPolicy> {
    let api: Api<OidcRefreshPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    loop {
        let p = api.get(name).await?;
        if check(&p) {
            return Ok(p);
        }
        if started.elapsed() > timeout {
            return Err(anyhow::anyhow!(
                "timed out after {}s; last status: {}",
                timeout.as_secs(),
                serde_json::to_string_pretty(&p.status)?
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// True when the policy's Ready condition is True for its current generation.
pub fn is_ready(p: &OidcRefreshPolicy) -> bool {
    condition(p, ConditionType::Ready)
        .is_some_and(|c| c.status == "True" && c.observed_generation == p.metadata.generation)
}

/// True when the policy is Stalled for its current generation.
pub fn is_stalled(p: &OidcRefreshPolicy) -> bool {
    condition(p, ConditionType::Stalled)
        .is_some_and(|c| c.status == "True" && c.observed_generation == p.metadata.generation)
}

/// A condition of the policy.
pub fn condition(
    p: &OidcRefreshPolicy,
    t: ConditionType,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    p.status
        .as_ref()
        .and_then(|s| status::find(&s.conditions, t))
}

/// The two env values of the Coder container (None when absent).
pub async fn coder_env(
    client: &Client,
    name: &str,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let d = api.get(name).await?;
    let env = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().find(|c| c.name == "coder"))
        .and_then(|c| c.env)
        .unwrap_or_default();
    let get = |n: &str| {
        env.iter()
            .find(|e| e.name == n)
            .and_then(|e| e.value.clone())
    };
    Ok((get(SCOPES_ENV), get(PARAMS_ENV)))
}

/// Events regarding a policy, oldest first, as (type, reason, note).
pub async fn policy_events(
    client: &Client,
    name: &str,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let api: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let mut events: Vec<Event> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("OidcRefreshPolicy")
        })
        .collect();
    events.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    });
    Ok(events
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect())
}

fn show(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("<unset: Coder default>")
}

/// The `sandbox` command.
pub async fn main(args: SandboxArgs) -> ExitCode {
    crate::telemetry::init(crate::telemetry::LogFormat::Text, "warn");
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sandbox failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let (sim, client) = Sandbox::start_cluster().await?;
    println!("Kubernetes API simulator: {}", sim.base_url());
    let idp = start_idp(args.provider).await?;
    if let Some((name, data)) = &idp.secret {
        create_secret(&client, name, data).await?;
    }
    let before_idp = idp.sim.describe();
    create_coder(&client, coder_deployment("coder", json!([]))).await?;
    let before = coder_env(&client, "coder").await?;
    let mut policy = example_policy("coder", idp.provider.clone());
    policy["spec"]["refreshTokens"] = example_refresh_tokens(args.provider);
    println!(
        "\nPolicy:\n{}",
        serde_json::to_string_pretty(&policy["spec"])?
    );
    create_policy(&client, policy).await?;

    let sandbox = Sandbox::start_controller(sim.clone(), client.clone());
    let outcome = wait_policy(&client, "coder", args.timeout, |p| {
        is_ready(p) || is_stalled(p)
    })
    .await;
    let after = coder_env(&client, "coder").await?;

    println!("\nCoder Deployment env (before -> after):");
    println!("  {SCOPES_ENV}: {} -> {}", show(&before.0), show(&after.0));
    println!("  {PARAMS_ENV}: {} -> {}", show(&before.1), show(&after.1));
    if !before_idp.is_empty() {
        println!("\nIdentity provider client (before -> after):");
        let after_idp: BTreeMap<String, String> = idp.sim.describe().into_iter().collect();
        for (k, v) in &before_idp {
            println!(
                "  {k}: {v} -> {}",
                after_idp.get(k).map(String::as_str).unwrap_or("?")
            );
        }
    }
    let policy = match outcome {
        Ok(p) => p,
        Err(e) => {
            println!("\nThe policy did not settle: {e:#}");
            sandbox.stop().await;
            idp.sim.shutdown().await;
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("\nConditions:");
    for c in policy
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
    {
        println!(
            "  {:<27} {:<7} {:<27} {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    if let Some(s) = policy
        .status
        .as_ref()
        .and_then(|s| s.users_must_sign_in_again_since.as_ref())
    {
        println!("\nUsers must sign in again since: {s}");
    }
    println!("\nEvents:");
    for (t, reason, note) in policy_events(&client, "coder").await? {
        println!("  {t:<8} {reason:<24} {note}");
    }
    let ready = is_ready(&policy);
    if args.serve {
        // Written beside and renamed into place: a reader never sees half a kubeconfig.
        let partial = args.kubeconfig.with_extension("partial");
        std::fs::write(&partial, sim.kubeconfig_yaml(Some(NAMESPACE)))?;
        std::fs::rename(&partial, &args.kubeconfig)?;
        println!(
            "\nServing. Try: kubectl --kubeconfig {} get orp,deploy   (Ctrl-C to stop)",
            args.kubeconfig.display()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    sandbox.stop().await;
    idp.sim.shutdown().await;
    if ready {
        println!("\nReady.");
        Ok(ExitCode::SUCCESS)
    } else {
        let reason = condition(&policy, ConditionType::Ready)
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_default();
        println!("\nNot ready: {reason}");
        Ok(ExitCode::FAILURE)
    }
}
