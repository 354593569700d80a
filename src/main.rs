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
    /// Timeout of each identity-provider call (Kubernetes duration).
    #[arg(long, env = "PROVIDER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    provider_timeout: Duration,
    /// Identity-provider requests per second, per IdP host, across all policies (0: unlimited).
    #[arg(long, env = "PROVIDER_QPS", default_value_t = 300.0)]
    provider_qps: f64,
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
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
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
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
        ..controller::Settings::default()
    };
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
        .await
        .context("leader election")?;
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
