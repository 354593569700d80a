//! `oidc-refresh-operator`: `run` (the controller), `crd` (print the CRD), `sandbox` (the whole
//! system on this machine with simulators).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use oidc_refresh_operator::telemetry::{self, LogFormat};
use oidc_refresh_operator::{admin, controller, crd, duration, leader, metrics::Metrics};

/// glibc's malloc raises its mmap threshold every time a large block is freed, after which the
/// watches' list pages (a few hundred KiB each) come from the heap and leave it fragmented, so
/// peak memory grew with the number of Deployments and Secrets listed. A fixed threshold keeps
/// such blocks in their own mappings, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Makes OIDC refresh tokens work for Coder: configures the identity provider and the Coder Deployment declaratively."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller (in-cluster config or KUBECONFIG).
    Run(RunArgs),
    /// Print the CustomResourceDefinition YAML.
    Crd,
    /// Run the whole system on this machine with simulators, no cluster needed.
    #[cfg(feature = "sandbox")]
    Sandbox(oidc_refresh_operator::sandbox::SandboxArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Watch only these namespaces, comma-separated (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Elect a leader through a Lease so only one replica reconciles.
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: SocketAddr,
    /// Policies reconciled concurrently.
    #[arg(long, env = "CONCURRENCY", default_value_t = 32)]
    concurrency: u16,
    /// Timeout of each identity-provider call (Kubernetes duration, more than 0s, at most 10m).
    #[arg(long, env = "PROVIDER_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    provider_timeout: Duration,
    /// Longest one reconcile may run before it is cancelled and retried with backoff
    /// (Kubernetes duration; default: 4 × --provider-timeout, at least 20s).
    #[arg(long, env = "RECONCILE_TIMEOUT", value_parser = parse_timeout)]
    reconcile_timeout: Option<Duration>,
    /// Identity-provider requests per second, per IdP host, across all policies (0: unlimited).
    #[arg(long, env = "PROVIDER_QPS", default_value_t = 300.0, value_parser = parse_qps)]
    provider_qps: f64,
    /// Identity-provider requests in flight at once, per IdP host, across all policies
    /// (0: unlimited).
    #[arg(long, env = "PROVIDER_MAX_IN_FLIGHT_PER_HOST", default_value_t = 8)]
    provider_max_in_flight_per_host: usize,
    /// Use a Secret as identity-provider credentials only when it carries the label
    /// `oidcrefresh.dev/credentials: "true"`.
    #[arg(long, env = "REQUIRE_CREDENTIALS_LABEL", default_value_t = true, action = clap::ArgAction::Set)]
    require_credentials_label: bool,
    /// Allow plain http to identity providers on a loopback address (development only; never to
    /// any other address).
    #[arg(long, env = "ALLOW_INSECURE_HTTP")]
    allow_insecure_http: bool,
    /// Host suffixes identity providers may be at, comma-separated (`example.com` allows
    /// `sso.example.com`; IP addresses exactly). Empty: any public host. Listed hosts may also be
    /// otherwise-denied addresses (link-local, the Kubernetes API server).
    #[arg(long, env = "ALLOWED_IDP_HOSTS", value_delimiter = ',')]
    allowed_idp_hosts: Vec<String>,
    /// Requests allowed in a burst above `--provider-qps`.
    #[arg(long, env = "PROVIDER_BURST", default_value_t = 600)]
    provider_burst: u32,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Pod name, reported in Events.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = duration::parse(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be longer than 0s".into());
    }
    if d > Duration::from_secs(600) {
        return Err("must be at most 10m".into());
    }
    Ok(d)
}

fn parse_qps(s: &str) -> Result<f64, String> {
    let q: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if !q.is_finite() || q < 0.0 {
        return Err("must be a finite number, 0 or more".into());
    }
    Ok(q)
}

/// Panics are caught per reconcile; their text may quote remote answers or a Secret, so only
/// the location is logged (and a message that is a compile-time string).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info.payload().downcast_ref::<&'static str>().copied();
        tracing::error!(
            location,
            message = message.unwrap_or("(formatted message withheld)"),
            "panic"
        );
    }));
}

/// The host (and `host:port`) of the Kubernetes API server, which no policy may point the
/// operator at.
fn api_server_hosts(config: &kube::Config) -> Vec<String> {
    let mut hosts = Vec::new();
    if let Some(host) = config.cluster_url.host() {
        let port = config.cluster_url.port_u16().unwrap_or(443);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        hosts.push(format!("{host}:{port}"));
    }
    if let Ok(host) = std::env::var("KUBERNETES_SERVICE_HOST") {
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        hosts.push(format!("{host}:{port}"));
    }
    hosts
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli
        .command
        .unwrap_or(Command::Run(RunArgs::parse_from(["run"])))
    {
        Command::Crd => {
            print!("{}", crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => match runtime().block_on(run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => runtime().block_on(oidc_refresh_operator::sandbox::main(args)),
    }
}

impl RunArgs {
    fn parse_from<'a>(args: impl IntoIterator<Item = &'a str>) -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: RunArgs,
        }
        Wrapper::parse_from(args).args
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, "info,kube=warn,hyper=warn");
    install_panic_hook();
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let denied_idp_hosts = api_server_hosts(&config);
    let client = kube::Client::try_from(config).context("Kubernetes client")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    let admin_stop = wait_for(rx.clone());
    let admin = tokio::spawn(admin::serve(
        args.admin_addr,
        metrics.clone(),
        ready.clone(),
        admin_stop,
    ));
    let settings = controller::Settings {
        namespaces: args
            .watch_namespaces
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        concurrency: args.concurrency.max(1),
        provider_timeout: args.provider_timeout,
        instance: args.pod_name.clone(),
        provider_qps: args.provider_qps,
        provider_burst: args.provider_burst,
        reconcile_timeout: args.reconcile_timeout,
        require_credentials_label: args.require_credentials_label,
        allow_insecure_http: args.allow_insecure_http,
        allowed_idp_hosts: args
            .allowed_idp_hosts
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        denied_idp_hosts,
        max_in_flight_per_host: args.provider_max_in_flight_per_host,
        ..controller::Settings::default()
    };
    tracing::info!(
        require_credentials_label = settings.require_credentials_label,
        allow_insecure_http = settings.allow_insecure_http,
        allowed_idp_hosts = ?settings.allowed_idp_hosts,
        reconcile_timeout_s = settings.reconcile_deadline().as_secs(),
        "tenant safety settings"
    );
    if args.leader_elect {
        let identity = args
            .pod_name
            .clone()
            .unwrap_or_else(|| format!("oidc-refresh-operator-{}", std::process::id()));
        leader::run_elected(
            client,
            &args.lease_namespace,
            &identity,
            settings,
            metrics,
            ready,
            rx,
        )
        .await;
    } else {
        controller::run(client, settings, metrics, ready, wait_for(rx)).await;
    }
    admin
        .await
        .context("admin server task")?
        .context("admin server")?;
    Ok(())
}

async fn wait_for(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
