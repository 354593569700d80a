//! The per-policy metrics alerts rely on, against the Kubernetes API simulator with the controller
//! in-process: the readiness series follows the Ready condition (one series per policy), the rollout
//! wait is exported while the Deployment rolls out and counted when it ends, and both go with the
//! policy.

mod common;

use std::time::Duration;

use common::*;
use kube::Api;
use kube::api::DeleteParams;
use oidc_refresh_operator::crd::OidcRefreshPolicy;
use oidc_refresh_operator::sandbox::{self, NAMESPACE, Sandbox};
use serde_json::json;

fn series(sb: &Sandbox, name: &str) -> Vec<String> {
    sb.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(str::to_string)
        .collect()
}

/// Waits until the series of metric `name` are exactly `want` (label sets and values).
async fn wait_series(sb: &Sandbox, name: &str, want: &[&str]) {
    let start = std::time::Instant::now();
    loop {
        let got = series(sb, name);
        if got == want {
            return;
        }
        assert!(start.elapsed() < WAIT, "{name}: want {want:?}, got {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readiness_and_rollout_wait_series_follow_the_policy_and_go_with_it() {
    let sb = cluster().await;
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    // Let the initial rollout finish, then make the one the policy triggers get stuck.
    tokio::time::sleep(Duration::from_millis(600)).await;
    sb.kube.set_rollout_stuck(NAMESPACE, "coder", true);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    sandbox::create_policy(
        &sb.client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    wait_reason(&sb.client, "coder", "Ready", "False", "RolloutFailed").await;
    wait_series(
        &sb,
        "oidc_refresh_policy_ready",
        &[r#"oidc_refresh_policy_ready{policy_namespace="coder",policy="coder",status="False",reason="RolloutFailed"} 1"#],
    )
    .await;
    let waiting = series(&sb, "oidc_refresh_rollout_waiting_since_timestamp_seconds");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(
        waiting[0].starts_with(
            r#"oidc_refresh_rollout_waiting_since_timestamp_seconds{policy_namespace="coder",policy="coder"} "#
        ),
        "{waiting:?}"
    );
    let since: u64 = waiting[0].rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        since >= before && since <= before + 30,
        "the wait starts with the operator's write: {since} vs {before}"
    );

    sb.kube.set_rollout_stuck(NAMESPACE, "coder", false);
    wait_ready(&sb.client, "coder").await;
    wait_series(
        &sb,
        "oidc_refresh_policy_ready",
        &[r#"oidc_refresh_policy_ready{policy_namespace="coder",policy="coder",status="True",reason="Configured"} 1"#],
    )
    .await;
    wait_series(
        &sb,
        "oidc_refresh_rollout_waiting_since_timestamp_seconds",
        &[],
    )
    .await;
    wait_series(
        &sb,
        "oidc_refresh_rollout_wait_duration_seconds_count",
        &[r#"oidc_refresh_rollout_wait_duration_seconds_count{outcome="complete"} 1"#],
    )
    .await;

    let api: Api<OidcRefreshPolicy> = Api::namespaced(sb.client.clone(), NAMESPACE);
    api.delete("coder", &DeleteParams::default()).await.unwrap();
    wait_series(&sb, "oidc_refresh_policy_ready", &[]).await;
    sb.stop().await;
}
