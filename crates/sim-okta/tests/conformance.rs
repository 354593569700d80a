//! Runs the official-SDK conformance suite (`tests/conformance/okta`) against the simulator:
//! Okta's own `@okta/okta-sdk-nodejs` (pinned 8.1.0) drives it through every call the operator
//! makes and asserts what Okta answers.
//!
//! Needs Node.js (≥ 18) on `PATH`; fails when it is missing. Installs the suite's pinned
//! dependencies with `npm ci` when `node_modules` is absent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sim_okta::{SimConfig, SimHandle, jose};

const APP_ID: &str = "0oaconform1app";
const CLIENT_ID: &str = "conformance-coder";
const SERVER_ID: &str = "ausconform1";
const RULE_ID: &str = "0prconform1";
const API_TOKEN: &str = "00conformance-api-token";

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/okta")
}

/// Seeds the fixtures the suite expects (documented at the top of `suite.test.mjs`).
fn seed(sim: &SimHandle, dir: &Path) {
    sim.add_api_token(API_TOKEN);
    sim.add_app(
        sim_okta::web_app(APP_ID, CLIENT_ID, "Coder"),
        Some("conformance-secret-0123456789"),
    );
    for n in 0..5 {
        let id = format!("0oaconformextra{n}");
        sim.add_app(sim_okta::web_app(&id, &id, &format!("Extra {n}")), None);
    }
    sim.add_auth_server(SERVER_ID, "conformance");
    sim.add_policy(
        SERVER_ID,
        sim_okta::access_policy("00pshared", "Shared", 2, &["ALL_CLIENTS"]),
    );
    sim.add_policy(
        SERVER_ID,
        sim_okta::access_policy("00pconform", "Conformance", 1, &[CLIENT_ID]),
    );
    sim.add_rule(
        SERVER_ID,
        "00pconform",
        sim_okta::access_rule(RULE_ID, "Coder users", 1, &["openid", "profile", "email"]),
    );
    let pem = std::fs::read_to_string(dir.join("fixtures/service-app-test-key.pem"))
        .expect("the suite's test key");
    let mut jwk = jose::public_jwk_of_pem(&pem).expect("an RSA PKCS#8 key");
    jwk["kid"] = json!("conformance-key");
    let scopes = [
        "okta.apps.read",
        "okta.apps.manage",
        "okta.authorizationServers.read",
        "okta.authorizationServers.manage",
    ];
    sim.add_service_app("0oaconformsvc", jwk.clone(), false, &scopes);
    sim.add_service_app("0oaconformdpop", jwk, true, &scopes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_conformance() {
    let dir = suite_dir();
    let sim = sim_okta::start(SimConfig::default()).await.unwrap();
    seed(&sim, &dir);
    let rated = sim_okta::start(SimConfig {
        rate_limit: 2,
        rate_window: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    rated.add_api_token(API_TOKEN);
    rated.add_app(sim_okta::web_app(APP_ID, CLIENT_ID, "Coder"), None);
    let envs = [
        ("ORG_URL", sim.base_url()),
        ("RATE_ORG_URL", rated.base_url()),
        ("API_TOKEN", API_TOKEN.into()),
        ("APP_ID", APP_ID.into()),
        ("CLIENT_ID", CLIENT_ID.into()),
        ("SERVER_ID", SERVER_ID.into()),
        ("RULE_ID", RULE_ID.into()),
        ("SVC_CLIENT", "0oaconformsvc".into()),
        ("DPOP_CLIENT", "0oaconformdpop".into()),
    ];
    let out = tokio::task::spawn_blocking(move || {
        if !dir
            .join("node_modules/@okta/okta-sdk-nodejs/package.json")
            .exists()
        {
            let npm = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .output()
                .expect("npm is needed to install the Okta SDK for the conformance suite");
            assert!(
                npm.status.success(),
                "npm ci failed:\n{}",
                String::from_utf8_lossy(&npm.stderr)
            );
        }
        Command::new("node")
            .args([
                "--test",
                "--test-reporter=spec",
                "--test-timeout=60000",
                "suite.test.mjs",
            ])
            .current_dir(&dir)
            .envs(envs)
            .env("NO_COLOR", "1")
            .output()
            .expect("Node.js (18 or later) is needed on PATH for the Okta conformance suite")
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the Okta conformance suite failed:\n{text}\n{:#?}",
        sim.counters()
    );
    // The SDK met the rate limit, got 429s with Okta's headers, waited and succeeded.
    let c = rated.counters();
    assert!(c.with_status(429) >= 1, "{c:?}");
    assert_eq!(c.with_status(200), 3, "{c:?}");
    // Every body the SDK sent fits the contract, except the leeway the suite sends out of range
    // on purpose.
    let errors = sim.validate_recorded_bodies().err().unwrap_or_default();
    assert!(!errors.is_empty(), "the out-of-range leeway is reported");
    assert!(
        errors.iter().all(|e| e.contains("refresh_token.leeway")),
        "{errors:#?}"
    );
    sim.shutdown().await;
    rated.shutdown().await;
}
