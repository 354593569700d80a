//! Run a simulator and write its kubeconfig: `cargo run -p kube-sim --example serve -- /tmp/kubeconfig`.
use kube_sim::{SimConfig, Simulator};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/kube-sim.kubeconfig".into());
    let sim = Simulator::start(SimConfig::default()).await?;
    std::fs::write(&path, sim.kubeconfig_yaml(Some("default")))?;
    println!("{} (kubeconfig: {path})", sim.base_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
