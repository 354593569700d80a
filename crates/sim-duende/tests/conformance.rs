//! Runs the conformance suite (`tests/conformance/duende`) against the simulator: Skoruba's
//! published `@skoruba/duende.identityserver.admin.api.client` drives it through every call the
//! operator makes and the errors around them. Needs Node.js (≥ 18); installs the pinned client
//! with `npm ci` when it is missing.

use std::time::Instant;

use sim_duende::{API_NAME, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_api_client_conformance() {
    let sim = sim_duende::start(SimConfig::default()).await.unwrap();
    let seed = sim.seed_sandbox();
    for n in 0..12 {
        sim.add_client(sim_duende::web_client(&format!("coder-extra-{n}"), "Extra"));
    }
    sim.add_sts_client("no-role", "no-role-secret", &[API_NAME], &[]);
    let env = vec![
        ("DUENDE_URL", sim.base_url()),
        ("OP_ID", seed.secret_data["client-id"].clone()),
        ("OP_SECRET", seed.secret_data["client-secret"].clone()),
    ];
    let started = Instant::now();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        sim_duende::node::node(&["--test", "--test-reporter=spec", "suite.test.mjs"], &env)
    })
    .await
    .unwrap();
    sim.shutdown().await;
    assert!(ok, "the Duende conformance suite failed:\n{out}");
    eprintln!(
        "Duende conformance suite passed in {:?}\n{out}",
        started.elapsed()
    );
}
