//! Leader election against the Kubernetes API simulator: clock skew cannot hand a live Lease to a
//! standby, a dead leader's Lease is taken over, and a replica that may no longer lead writes
//! nothing.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::{WAIT, poke_policy, wait_ready};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};
use oidc_refresh_operator::controller::{self, Settings};
use oidc_refresh_operator::crd::OidcRefreshPolicy;
use oidc_refresh_operator::leader::{Elector, LEASE_NAME, Leadership, Timing};
use oidc_refresh_operator::metrics::Metrics;
use oidc_refresh_operator::sandbox::{self, NAMESPACE, Sandbox};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

const TIMING: Timing = Timing {
    lease_duration: Duration::from_secs(3),
    renew_deadline: Duration::from_secs(2),
    retry_period: Duration::from_millis(100),
};

struct Candidate {
    leading: watch::Receiver<bool>,
    leadership: Leadership,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn campaign(client: &Client, identity: &str, skew: SignedDuration) -> Candidate {
    let elector = Elector::new(client.clone(), NAMESPACE, identity, TIMING)
        .with_clock(Arc::new(move || Timestamp::now() + skew));
    let leadership = elector.leadership();
    let (tx, leading) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(elector.run(tx, stop_rx));
    Candidate {
        leading,
        leadership,
        stop,
        task,
    }
}

async fn wait_leading(c: &mut Candidate, what: &str) {
    tokio::time::timeout(WAIT, c.leading.wait_for(|l| *l))
        .await
        .unwrap_or_else(|_| panic!("{what} never led"))
        .unwrap();
}

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    leases.get(LEASE_NAME).await.ok()?.spec?.holder_identity
}

#[tokio::test]
async fn a_standby_ahead_of_the_leader_by_an_hour_waits_for_the_lease_to_stop_changing() {
    let (sim, client) = Sandbox::start_cluster().await.unwrap();
    // The leader's clock is an hour behind: every renewTime it writes is an hour "old" to the
    // standby's wall clock.
    let mut a = campaign(&client, "replica-a", SignedDuration::from_hours(-1));
    wait_leading(&mut a, "replica-a").await;
    let mut b = campaign(&client, "replica-b", SignedDuration::ZERO);
    // Twice the lease duration: the standby must keep its hands off while the leader renews.
    let watched = Instant::now();
    while watched.elapsed() < TIMING.lease_duration * 2 {
        assert!(!*b.leading.borrow(), "the standby took a live lease");
        assert!(!b.leadership.is_leader());
        assert!(a.leadership.is_leader(), "the leader stopped leading");
        assert_eq!(holder(&client).await.as_deref(), Some("replica-a"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The leader dies without releasing the Lease: the standby takes it over once it has seen no
    // renewal for the lease duration by its own clock, and not before.
    a.task.abort();
    let died = Instant::now();
    wait_leading(&mut b, "replica-b").await;
    assert!(
        died.elapsed() >= TIMING.lease_duration - TIMING.retry_period,
        "taken over {:?} after the last renewal",
        died.elapsed()
    );
    assert_eq!(holder(&client).await.as_deref(), Some("replica-b"));
    assert!(b.leadership.is_leader());
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let spec = leases.get(LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(spec.lease_transitions, Some(1));
    // Stopping releases the Lease at once.
    let _ = b.stop.send(true);
    b.task.await.unwrap();
    assert!(!b.leadership.is_leader());
    assert_eq!(holder(&client).await, None);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_writing_before_the_lease_can_be_taken() {
    let (sim, client) = Sandbox::start_cluster().await.unwrap();
    let mut a = campaign(&client, "replica-a", SignedDuration::ZERO);
    wait_leading(&mut a, "replica-a").await;
    // Let it renew a few times, then cut it off: no renewal succeeds after this instant.
    tokio::time::sleep(TIMING.retry_period * 5).await;
    let cut = Instant::now();
    sim.shutdown().await;
    // A standby that saw the last renewal can take over lease_duration after it at the earliest;
    // the old leader's writes stop renew_deadline after the last renewal it sent, which was
    // before the cut.
    tokio::time::sleep_until(cut + TIMING.renew_deadline + Duration::from_millis(20)).await;
    assert!(
        !a.leadership.is_leader(),
        "still writing after the renew deadline"
    );
    assert!(a.leadership.check().is_err());
    tokio::time::timeout(WAIT, a.leading.wait_for(|l| !*l))
        .await
        .expect("the controllers are told to stop")
        .unwrap();
    let _ = a.stop.send(true);
    let _ = tokio::time::timeout(WAIT, a.task).await;
}

#[tokio::test]
async fn a_replica_that_does_not_lead_writes_nothing_and_reports_no_failure() {
    let (sim, client) = Sandbox::start_cluster().await.unwrap();
    sandbox::create_coder(&client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let leadership = Leadership::elected();
    let metrics = Arc::new(Metrics::new());
    let settings = Settings {
        backoff_base: Duration::from_millis(200),
        allow_insecure_http: true,
        leadership: leadership.clone(),
        ..Settings::default()
    };
    let (stop, mut stop_rx) = watch::channel(false);
    let run = tokio::spawn(controller::run(
        client.clone(),
        settings,
        metrics.clone(),
        Arc::new(AtomicBool::new(false)),
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    sandbox::create_policy(
        &client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    let started = Instant::now();
    while !metrics
        .encode()
        .contains(r#"oidc_refresh_reconcile_errors_total{category="not_leader"} 1"#)
    {
        assert!(started.elapsed() < WAIT, "{}", metrics.encode());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The pass stopped before its first write: no env, no status, no Event, and no retry.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let env = serde_json::to_string(&deployments.get("coder").await.unwrap().spec).unwrap();
    assert!(!env.contains("CODER_OIDC_SCOPES"), "{env}");
    let policies: Api<OidcRefreshPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    assert_eq!(policies.get("coder").await.unwrap().status, None);
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    assert!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        metrics
            .encode()
            .contains(r#"oidc_refresh_reconcile_errors_total{category="not_leader"} 1"#),
        "a replica that does not lead retried: {}",
        metrics.encode()
    );
    // Once it leads, the next pass converges.
    leadership.renewed(Instant::now(), Duration::from_secs(3600));
    poke_policy(&client, "coder", "1").await;
    wait_ready(&client, "coder").await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(WAIT, run).await;
    sim.shutdown().await;
}
