//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager, server-side apply),
//! so that with several replicas only one reconciles. A replica that loses the lease stops its
//! controllers and waits to win it again.
//!
//! `/readyz` answers 200 on a healthy standby too: readiness means "this replica works", and a
//! standby that never became ready would stall rolling updates (the new pod cannot take the Lease
//! while the old leader holds it) and Argo CD's health of the operator's Deployment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

use crate::controller::{self, Settings};
use crate::crd::FIELD_MANAGER;
use crate::metrics::Metrics;

/// Lease name.
pub const LEASE_NAME: &str = "oidc-refresh-operator";

/// Runs the controllers while this replica holds the lease, until `stop` turns true.
pub async fn run_elected(
    client: Client,
    namespace: &str,
    identity: &str,
    settings: Settings,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), kube_lease_manager::LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .with_field_manager(FIELD_MANAGER)
        .build()
        .await?;
    let (mut leader, task) = manager.watch().await;
    ready.store(true, Ordering::SeqCst);
    // The controllers' own readiness flag; this replica's readiness is `ready`.
    let running = Arc::new(AtomicBool::new(false));
    loop {
        // Wait to lead (or to stop).
        tokio::select! {
            res = leader.wait_for(|l| *l) => { if res.is_err() { break; } }
            _ = stop.wait_for(|s| *s) => break,
        }
        info!(identity, "acquired leadership");
        let mut lost = leader.clone();
        let mut stop2 = stop.clone();
        controller::run(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            running.clone(),
            async move {
                tokio::select! {
                    _ = lost.wait_for(|l| !*l) => warn!("lost leadership; stopping controllers"),
                    _ = stop2.wait_for(|s| *s) => {},
                }
            },
        )
        .await;
        if *stop.borrow() {
            break;
        }
    }
    ready.store(false, Ordering::SeqCst);
    drop(leader);
    match task.await {
        Ok(Ok(_)) => info!("released the lease"),
        Ok(Err(e)) => warn!(error = %e, "could not release the lease"),
        Err(e) => warn!(error = %e, "lease task failed"),
    }
    Ok(())
}
