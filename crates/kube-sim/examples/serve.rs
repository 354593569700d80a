//! Run a simulator and write its kubeconfig: `cargo run -p kube-sim --example serve -- /tmp/kubeconfig`.
//!
//! Environment (for tests driving it from another process):
//! - `KUBE_SIM_ROLLOUT_DELAY_MS`: time from a Deployment template change to its rollout
//!   completing (default 200);
//! - `KUBE_SIM_STUCK_ROLLOUTS`: `namespace/name,...` of Deployments whose rollouts end in
//!   `ProgressDeadlineExceeded` instead of completing.
use std::time::Duration;

use kube_sim::{SimConfig, Simulator};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/kube-sim.kubeconfig".into());
    let mut config = SimConfig::default();
    if let Some(ms) = std::env::var("KUBE_SIM_ROLLOUT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.rollout_delay = Duration::from_millis(ms);
    }
    let sim = Simulator::start(config).await?;
    for deployment in std::env::var("KUBE_SIM_STUCK_ROLLOUTS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|d| d.split_once('/'))
    {
        sim.set_rollout_stuck(deployment.0, deployment.1, true);
    }
    std::fs::write(&path, sim.kubeconfig_yaml(Some("default")))?;
    println!("{} (kubeconfig: {path})", sim.base_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
