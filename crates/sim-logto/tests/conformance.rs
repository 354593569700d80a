//! Runs the official-client conformance suite (`tests/conformance/logto`) against the simulator:
//! Logto's own Management API client `@logto/api` drives it through every call the operator makes
//! (the client-credentials token, `GET` and `PATCH /api/applications/{id}`) and the calls around
//! them, asserting what Logto answers, and `@logto/schemas`' zod guards check every request body,
//! answer and stored application.
//!
//! Needs Node.js (≥ 18) on `PATH`; fails when it is missing. Installs the suite's pinned
//! dependencies with `npm ci` when `node_modules` is absent.

use std::time::{Duration, Instant};

use serde_json::json;
use sim_logto::{SimConfig, SimHandle, conformance, traditional_app};

const SUITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Seeds the fixtures the suite expects (documented at the top of `suite.test.mjs`).
fn seed(sim: &SimHandle) {
    sim.add_m2m_app("operator-m2m", "operator-secret", true);
    sim.add_m2m_app("no-role-m2m", "no-role-secret", false);
    let mut coder = traditional_app("coder-app", "Coder");
    coder["customClientMetadata"] = json!({
        "corsAllowedOrigins": ["https://coder.example.com"],
        "idTokenTtl": 3600,
        "rotateRefreshToken": false,
        "maxAllowedGrants": 5
    });
    coder["customData"] = json!({"team": "platform"});
    sim.add_application(coder, Some("coder-secret"));
    sim.add_application(
        traditional_app("scratch-app", "Scratch"),
        Some("scratch-secret"),
    );
    let mut saml = traditional_app("saml-app", "SAML");
    saml["type"] = json!("SAML");
    sim.add_application(saml, None);
    let mut third = traditional_app("third-party-app", "Third party");
    third["isThirdParty"] = json!(true);
    sim.add_application(third, Some("third-party-secret"));
    let mut protected = traditional_app("protected-app", "Docs behind Logto");
    protected["type"] = json!("Protected");
    protected["oidcClientMetadata"]["redirectUris"] = json!([]);
    protected["protectedAppMetadata"] = json!({
        "host": "docs.example.com",
        "origin": "https://docs.internal.example.com",
        "sessionDuration": 3600,
        "pageRules": []
    });
    sim.add_application(protected, Some("protected-secret"));
    let mut device = traditional_app("device-app", "TV");
    device["type"] = json!("Native");
    device["customClientMetadata"] = json!({"isDeviceFlow": true});
    device["oidcClientMetadata"]["redirectUris"] = json!([]);
    sim.add_application(device, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_management_client_conformance() {
    let sim = sim_logto::start(SimConfig::default()).await.unwrap();
    seed(&sim);
    let url = sim.base_url();
    let started = Instant::now();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        conformance::node(
            &["--test", "--test-reporter=spec", "suite.test.mjs"],
            &[("LOGTO_URL", &url)],
            SUITE_TIMEOUT,
        )
    })
    .await
    .unwrap();
    assert!(ok, "the Logto conformance suite failed:\n{out}");
    eprintln!(
        "Logto conformance suite passed in {:?}\n{out}",
        started.elapsed()
    );
    // What the suite set through the API has the effect Logto gives it: a machine-to-machine app
    // never gets a refresh token, even with `alwaysIssueRefreshToken` stored.
    let m2m = sim.application("no-role-m2m").unwrap();
    assert_eq!(
        m2m["customClientMetadata"]["alwaysIssueRefreshToken"],
        json!(true),
        "the suite stores alwaysIssueRefreshToken on the M2M app"
    );
    assert!(!sim.would_issue_refresh_token(
        "no-role-m2m",
        &["openid", "offline_access"],
        Some("consent")
    ));
    sim.shutdown().await;
}
