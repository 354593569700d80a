//! Drift made in Logto with Logto's own Management API client (`@logto/api`, through
//! `tests/conformance/logto/drift.mjs`) is put back by the controller: the refresh-token TTL and
//! rotation return to what the policy asks, a customClientMetadata key someone added stays, and
//! the reconcile after that writes nothing.
//!
//! Needs Node.js on `PATH` (the suite's pinned dependencies are installed with `npm ci` when
//! missing).

mod common;

use std::time::{Duration, Instant};

use common::*;
use oidc_refresh_operator::sandbox::{self, IdpSim, Sandbox, SandboxProvider};
use serde_json::{Value, json};
use sim_logto::{APP_ROUTE, conformance};

const NODE_TIMEOUT: Duration = Duration::from_secs(60);

/// Changes the app's customClientMetadata through `@logto/api` with the operator's own M2M
/// credentials (an administrator's script would use its own app; the API is the same).
async fn drift_through_official_client(
    url: String,
    client_id: String,
    secret: String,
    app_id: String,
    changes: Value,
) -> Value {
    let (ok, out) = tokio::task::spawn_blocking(move || {
        conformance::node(
            &["drift.mjs", &app_id, &changes.to_string()],
            &[
                ("LOGTO_URL", &url),
                ("LOGTO_CLIENT_ID", &client_id),
                ("LOGTO_CLIENT_SECRET", &secret),
            ],
            NODE_TIMEOUT,
        )
    })
    .await
    .unwrap();
    assert!(ok, "drift.mjs failed:\n{out}");
    let last = out
        .lines()
        .rfind(|l| l.starts_with('{'))
        .unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("drift.mjs printed no JSON ({e}):\n{out}"))
}

/// Waits until `f` holds for the app's customClientMetadata.
async fn wait_metadata(
    sim: &sim_logto::SimHandle,
    app: &str,
    what: &str,
    f: impl Fn(&Value) -> bool,
) {
    let start = Instant::now();
    loop {
        let cm = sim.application(app).unwrap()["customClientMetadata"].clone();
        if f(&cm) {
            return;
        }
        assert!(start.elapsed() < WAIT, "{what}: {cm}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_made_with_the_official_client_is_restored_keeping_the_added_key() {
    let (sb, idp) = cluster_with_idp(SandboxProvider::Logto).await;
    let IdpSim::Logto(logto) = &idp.sim else {
        unreachable!()
    };
    let secret_data = idp.secret.clone().unwrap().1;
    let mut policy = sandbox::example_policy("coder", idp.provider.clone());
    policy["spec"]["refreshTokens"] =
        json!({"offlineAccess": true, "lifetime": "2160h", "rotation": "Rotate"});
    policy["spec"]["interval"] = json!("10m");
    sandbox::create_policy(&sb.client, policy).await.unwrap();
    wait_ready(&sb.client, "coder").await;

    let app = idp.provider["logto"]["applicationId"]
        .as_str()
        .unwrap()
        .to_string();
    let converged = logto.application(&app).unwrap()["customClientMetadata"].clone();
    assert_eq!(converged["refreshTokenTtlInDays"], json!(90));
    assert_eq!(converged["rotateRefreshToken"], json!(true));
    assert_eq!(converged["alwaysIssueRefreshToken"], json!(true));
    assert!(converged.get("allowTokenExchange").is_none());

    // Someone shortens the TTL, turns rotation off and adds a key, with Logto's own client.
    let patches_before = logto.counters().calls("PATCH", APP_ROUTE);
    let drifted = drift_through_official_client(
        logto.base_url(),
        secret_data["client-id"].clone(),
        secret_data["client-secret"].clone(),
        app.clone(),
        json!({"refreshTokenTtlInDays": 30, "rotateRefreshToken": false, "allowTokenExchange": true}),
    )
    .await;
    assert_eq!(
        logto.counters().calls("PATCH", APP_ROUTE),
        patches_before + 1,
        "the drift was written through the Management API"
    );
    let mut expected_drift = converged.clone();
    expected_drift["refreshTokenTtlInDays"] = json!(30);
    expected_drift["rotateRefreshToken"] = json!(false);
    expected_drift["allowTokenExchange"] = json!(true);
    assert_eq!(drifted, expected_drift);
    assert_eq!(
        logto.application(&app).unwrap()["customClientMetadata"],
        expected_drift
    );

    // The operator reconciles (a spec change: the policy's generation moves on, so the identity
    // provider is read again rather than trusted from the last pass).
    patch_policy_spec(&sb.client, "coder", json!({"interval": "11m"})).await;
    wait_metadata(logto, &app, "TTL and rotation restored", |cm| {
        cm["refreshTokenTtlInDays"] == json!(90) && cm["rotateRefreshToken"] == json!(true)
    })
    .await;
    let restored = logto.application(&app).unwrap()["customClientMetadata"].clone();
    let mut expected = converged.clone();
    expected["allowTokenExchange"] = json!(true);
    assert_eq!(
        restored, expected,
        "TTL and rotation back, the added key and everything else kept"
    );
    let p = wait_ready(&sb.client, "coder").await;
    assert_eq!(
        p.status.as_ref().unwrap().observed_generation,
        p.metadata.generation
    );
    let updates =
        wait_event_messages(&sb.client, "coder", "IdentityProviderUpdated", 2, WAIT).await;
    assert!(
        updates[1].contains("customClientMetadata.refreshTokenTtlInDays: 30 -> 90")
            && updates[1].contains("customClientMetadata.rotateRefreshToken: false -> true")
            && !updates[1].contains("allowTokenExchange"),
        "{updates:?}"
    );
    // Every body the operator and the official client sent validates against Logto's contract.
    idp.sim
        .validate_bodies()
        .unwrap_or_else(|e| panic!("{e:#?}"));

    // The next reconcile (a restarted controller: nothing remembered) reads Logto and writes
    // nothing, to Logto or to Kubernetes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (kube, client) = (sb.kube.clone(), sb.client.clone());
    sb.stop_controller_only().await;
    let (k_before, l_before) = (kube.counters(), logto.counters());
    let sb = Sandbox::start_controller(kube.clone(), client);
    let start = Instant::now();
    while logto.counters().calls("GET", APP_ROUTE) == l_before.calls("GET", APP_ROUTE)
        || !sb
            .metrics
            .encode()
            .lines()
            .any(|l| l.starts_with("oidc_refresh_reconciles_total ") && !l.ends_with(" 0"))
    {
        assert!(
            start.elapsed() < WAIT,
            "the restarted controller finished no pass that read Logto"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        logto.counters().writes(),
        l_before.writes(),
        "no Logto writes"
    );
    let diff = kube.counters().diff(&k_before);
    assert_eq!(
        diff.writes(),
        0,
        "no Kubernetes writes: {:?}",
        diff.entries()
    );
    assert_eq!(
        logto.application(&app).unwrap()["customClientMetadata"],
        expected
    );
    sb.stop().await;
    idp.sim.shutdown().await;
}
