//! The PingFederate provider against the PingFederate simulator, for 11.3 and 12.1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use oidc_refresh_operator::crd::{PingFederateReplication, PingFederateSpec, Rotation};
use oidc_refresh_operator::providers::{
    self, Credentials, DesiredSettings, IdentityProvider, IdpSettings, ProviderDeps, ProviderError,
};
use serde_json::{Value, json};
use sim_pingfederate::{AdminRole, Deployment, PfVersion, SandboxSeed, SimConfig, SimHandle};

mod common;
use common::provider::{assert_no_secrets, deps_timing_out, init};

const VERSIONS: [PfVersion; 2] = [PfVersion::V11_3, PfVersion::V12_1];

fn deps(timeout: Duration) -> ProviderDeps {
    init();
    deps_timing_out(timeout)
}

/// A clustered server (console and two engines, the simulator's default), seeded.
async fn sim(version: PfVersion) -> (SimHandle, SandboxSeed) {
    sim_with(SimConfig {
        version,
        ..SimConfig::default()
    })
    .await
}

async fn sim_with(config: SimConfig) -> (SimHandle, SandboxSeed) {
    let sim = sim_pingfederate::start(config)
        .await
        .expect("simulator starts");
    let seed = sim.seed_sandbox();
    (sim, seed)
}

fn spec(sim: &SimHandle, seed: &SandboxSeed, client_id: &str) -> PingFederateSpec {
    PingFederateSpec {
        // A trailing slash must not matter.
        admin_url: format!("{}/", sim.base_url()),
        client_id: client_id.into(),
        credentials_secret: seed.secret_name.clone(),
        replication: PingFederateReplication::Automatic,
    }
}

fn credentials(seed: &SandboxSeed, user: &str, password: &str) -> Credentials {
    common::provider::credentials(
        &seed.secret_name,
        "1",
        &[("username", user), ("password", password)],
    )
}

fn connect_as(
    sim: &SimHandle,
    seed: &SandboxSeed,
    user: &str,
    password: &str,
    deps: &ProviderDeps,
) -> Arc<dyn IdentityProvider> {
    pingfederate_connect(
        &spec(sim, seed, "coder"),
        credentials(seed, user, password),
        deps,
    )
    .expect("connect")
}

fn pingfederate_connect(
    spec: &PingFederateSpec,
    creds: Credentials,
    deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    providers::pingfederate::connect(spec, Some(creds), deps)
}

fn connect(sim: &SimHandle, seed: &SandboxSeed) -> Arc<dyn IdentityProvider> {
    connect_as(
        sim,
        seed,
        &seed.secret_data["username"],
        &seed.secret_data["password"],
        &deps(Duration::from_secs(10)),
    )
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

fn want() -> DesiredSettings {
    DesiredSettings {
        offline_access: true,
        lifetime: Some(days(90)),
        idle_timeout: Some(Duration::from_secs(36 * 3600)),
        rotation: Some(Rotation::Rotate),
        access_token_lifetime: None,
    }
}

fn wanted_settings() -> IdpSettings {
    IdpSettings {
        refresh_token_grant: Some(true),
        offline_access: Some(true),
        lifetime: Some(days(90)),
        idle_timeout: Some(Duration::from_secs(36 * 3600)),
        rotation: Some(Rotation::Rotate),
        access_token_lifetime: None,
        rotation_window: Some("60s".into()),
    }
}

/// The seeded client with exactly the refresh-token changes.
fn expected_client(version: PfVersion) -> Value {
    let mut c = sim_pingfederate::seed_client(version);
    c["grantTypes"] = json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"]);
    c["restrictedScopes"] = json!(["openid", "profile", "email", "offline_access"]);
    c["persistentGrantExpirationType"] = json!("OVERRIDE_SERVER_DEFAULT");
    c["persistentGrantExpirationTime"] = json!(90);
    c["persistentGrantExpirationTimeUnit"] = json!("DAYS");
    c["persistentGrantIdleTimeoutType"] = json!("OVERRIDE_SERVER_DEFAULT");
    c["persistentGrantIdleTimeout"] = json!(36);
    c["persistentGrantIdleTimeoutTimeUnit"] = json!("HOURS");
    c["refreshRolling"] = json!("ROLL");
    c
}

/// The client without the server-maintained `modificationDate`.
fn without_mtime(mut c: Value) -> Value {
    if let Some(o) = c.as_object_mut() {
        o.remove("modificationDate");
    }
    c
}

fn seeded_secret(version: PfVersion) -> String {
    sim_pingfederate::seed_client(version)["clientAuth"]["encryptedSecret"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every body the simulator received validates against the contract of its version, and none
/// carries a plaintext `secret` anywhere.
fn assert_bodies_valid(sim: &SimHandle) {
    fn has_secret_key(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.iter().any(|(k, v)| k == "secret" || has_secret_key(v)),
            Value::Array(a) => a.iter().any(has_secret_key),
            _ => false,
        }
    }
    let version = sim.version();
    let mut checked = 0;
    for r in sim.requests() {
        assert!(
            r.xsrf_header,
            "{} {} without X-XSRF-Header",
            r.method, r.path
        );
        let Some(body) = &r.body else { continue };
        let schema = match (r.method.as_str(), r.route.as_str()) {
            ("PUT", "/oauth/clients/{id}") => "Client",
            ("POST", "/oauth/authServerSettings/scopes/commonScopes") => "ScopeEntry",
            ("PUT", "/oauth/authServerSettings") => "AuthorizationServerSettings",
            other => panic!("unexpected body for {other:?}"),
        };
        assert_eq!(
            sim_pingfederate::validate(version, schema, body),
            [],
            "{} {}",
            r.method,
            r.path
        );
        assert!(!has_secret_key(body), "plaintext secret sent: {}", r.path);
        checked += 1;
    }
    assert!(checked > 0, "no bodies were checked");
}

#[tokio::test]
async fn first_convergence_then_nothing_to_write() {
    for version in VERSIONS {
        let (sim, seed) = sim(version).await;
        let pf = connect(&sim, &seed);

        // Observe and plan report every change and write nothing.
        let plan = pf.observe_plan(&want()).await.unwrap();
        let obs = plan.observation.clone();
        let changes: Vec<String> = obs.changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            changes,
            [
                "common scope offline_access: not defined -> defined",
                "grantTypes: AUTHORIZATION_CODE -> AUTHORIZATION_CODE, REFRESH_TOKEN",
                "restrictedScopes: openid, profile, email -> openid, profile, email, offline_access",
                "persistentGrantExpirationType, persistentGrantExpirationTime, persistentGrantExpirationTimeUnit: SERVER_DEFAULT (indefinite) -> OVERRIDE_SERVER_DEFAULT (90 DAYS)",
                "persistentGrantIdleTimeoutType, persistentGrantIdleTimeout, persistentGrantIdleTimeoutTimeUnit: SERVER_DEFAULT (720h) -> OVERRIDE_SERVER_DEFAULT (36 HOURS)",
                "refreshRolling: SERVER_DEFAULT -> ROLL",
            ],
            "{version}"
        );
        assert_eq!(
            obs.settings,
            IdpSettings {
                refresh_token_grant: Some(false),
                offline_access: Some(false),
                lifetime: None,
                idle_timeout: Some(days(30)),
                // rollRefreshTokenValues: the server default is true.
                rotation: Some(Rotation::Rotate),
                access_token_lifetime: None,
                rotation_window: Some("60s".into()),
            }
        );
        assert_eq!(sim.counters().writes(), 0, "observe writes nothing");

        let before = sim.counters();
        let applied = pf.apply(&plan).await.unwrap();
        assert_eq!(
            applied.actions,
            [
                "added the common scope offline_access to the PingFederate authorization server settings".to_string(),
                "updated PingFederate OAuth client \"coder\": grantTypes: AUTHORIZATION_CODE -> AUTHORIZATION_CODE, REFRESH_TOKEN; \
                 restrictedScopes: openid, profile, email -> openid, profile, email, offline_access; \
                 persistentGrantExpirationType, persistentGrantExpirationTime, persistentGrantExpirationTimeUnit: SERVER_DEFAULT (indefinite) -> OVERRIDE_SERVER_DEFAULT (90 DAYS); \
                 persistentGrantIdleTimeoutType, persistentGrantIdleTimeout, persistentGrantIdleTimeoutTimeUnit: SERVER_DEFAULT (720h) -> OVERRIDE_SERVER_DEFAULT (36 HOURS); \
                 refreshRolling: SERVER_DEFAULT -> ROLL".to_string(),
                "replicated the PingFederate configuration to the engine nodes (POST /cluster/replicate)".to_string(),
            ]
        );
        assert_eq!(applied.observation.changes, []);
        assert_eq!(applied.observation.settings, wanted_settings());
        assert_eq!(applied.observation.coder.add_scopes, ["offline_access"]);
        assert!(applied.observation.coder.params.is_empty());
        assert!(applied.observation.coder.remove_scopes.is_empty());
        let diff = sim.counters().diff(&before);
        assert_eq!(diff.writes(), 3, "{diff:?}");
        assert_eq!(
            (
                diff.get("GET", "/version"),
                diff.get("GET", "/oauth/clients/{id}"),
                diff.get("GET", "/oauth/authServerSettings"),
                diff.get("GET", "/cluster/status"),
            ),
            (0, 2, 1, 2),
            "apply reads the client right before its PUT and the cluster status after the writes, \
             and reads back: {diff:?}"
        );
        assert_eq!(diff.get("POST", "/cluster/replicate"), 1);
        assert!(!sim.replication_required());
        for engine in 0..2 {
            assert_eq!(
                without_mtime(sim.engine_client(engine, "coder").unwrap()),
                without_mtime(expected_client(version)),
                "engine {engine} serves the change"
            );
        }
        assert_eq!(
            diff.get("POST", "/oauth/authServerSettings/scopes/commonScopes"),
            1
        );
        assert_eq!(diff.get("PUT", "/oauth/clients/{id}"), 1);
        assert_eq!(diff.get("PUT", "/oauth/authServerSettings"), 0);

        // The exact client: every other field unchanged, the secret untouched.
        let client = sim.client("coder").unwrap();
        assert_eq!(
            without_mtime(client.clone()),
            without_mtime(expected_client(version)),
            "{version}"
        );
        assert_eq!(
            client["clientAuth"]["encryptedSecret"].as_str(),
            Some(seeded_secret(version).as_str())
        );
        assert_eq!(sim.secret_rotations(), 0);

        // The server settings: only the scope was added.
        let mut settings = sim_pingfederate::default_settings(version);
        settings["scopes"].as_array_mut().unwrap().push(json!({
            "name": "offline_access",
            "description": "Keep access while you are signed out (refresh tokens)",
            "dynamic": false
        }));
        assert_eq!(sim.auth_server_settings(), settings);

        // A second apply writes nothing.
        let before = sim.counters();
        let again = pf.converge(&want()).await.unwrap();
        assert_eq!(again.actions, Vec::<String>::new());
        assert_eq!(again.observation, applied.observation);
        let diff = sim.counters().diff(&before);
        assert_eq!(diff.writes(), 0, "{diff:?}");
        assert_eq!(
            diff.get("GET", "/version"),
            0,
            "the version is known: {diff:?}"
        );

        // Another provider object sharing the dependencies (the next reconcile, another policy
        // of the server) knows the version too; one with its own dependencies reads it.
        let shared = deps(Duration::from_secs(10));
        let user = &seed.secret_data["username"];
        let password = &seed.secret_data["password"];
        let before = sim.counters();
        connect_as(&sim, &seed, user, password, &shared)
            .observe_plan(&want())
            .await
            .unwrap();
        connect_as(&sim, &seed, user, password, &shared)
            .observe_plan(&want())
            .await
            .unwrap();
        let diff = sim.counters().diff(&before);
        assert_eq!(diff.get("GET", "/version"), 1, "{diff:?}");
        assert_eq!(diff.get("GET", "/oauth/clients/{id}"), 2, "{diff:?}");

        assert_bodies_valid(&sim);
        let described: BTreeMap<String, String> = sim.describe_client().into_iter().collect();
        assert_eq!(described["grantTypes"], "AUTHORIZATION_CODE, REFRESH_TOKEN");
        assert_eq!(described["persistentGrantExpiration"], "90 DAYS");
        assert_eq!(described["client secret"], "unchanged");
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn drift_is_detected_and_corrected() {
    for version in VERSIONS {
        let (sim, seed) = sim(version).await;
        let pf = connect(&sim, &seed);
        pf.converge(&want()).await.unwrap();

        // An administrator edits the client in the console.
        sim.update_client("coder", |c| {
            c["grantTypes"] = json!(["AUTHORIZATION_CODE"]);
            c["refreshRolling"] = json!("DONT_ROLL");
            c["persistentGrantIdleTimeoutType"] = json!("SERVER_DEFAULT");
        });
        // ... and replicates the edit.
        sim.replicate();
        let obs = pf.observe_plan(&want()).await.unwrap().observation;
        let changes: Vec<String> = obs.changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            changes,
            [
                "grantTypes: AUTHORIZATION_CODE -> AUTHORIZATION_CODE, REFRESH_TOKEN",
                "persistentGrantIdleTimeoutType, persistentGrantIdleTimeout, persistentGrantIdleTimeoutTimeUnit: SERVER_DEFAULT (720h) -> OVERRIDE_SERVER_DEFAULT (36 HOURS)",
                "refreshRolling: DONT_ROLL -> ROLL",
            ]
        );
        assert_eq!(obs.settings.refresh_token_grant, Some(false));
        assert_eq!(obs.settings.rotation, Some(Rotation::Reuse));

        let before = sim.counters();
        let applied = pf.converge(&want()).await.unwrap();
        assert_eq!(
            applied.actions.len(),
            2,
            "client and replication: {:?}",
            applied.actions
        );
        assert_eq!(applied.observation.settings, wanted_settings());
        assert_eq!(sim.counters().diff(&before).writes(), 2);
        assert_eq!(
            without_mtime(sim.client("coder").unwrap()),
            without_mtime(expected_client(version))
        );
        assert_eq!(sim.secret_rotations(), 0);
        assert_bodies_valid(&sim);
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn missing_xsrf_header_is_rejected_by_the_simulator() {
    init();
    let (sim, seed) = sim(PfVersion::V12_1).await;
    let http = reqwest::Client::new();
    let url = format!("{}/pf-admin-api/v1/oauth/clients/coder", sim.base_url());
    let resp = http
        .get(&url)
        .basic_auth(
            &seed.secret_data["username"],
            Some(&seed.secret_data["password"]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["resultId"], "missing_xsrf_header");
    let resp = http
        .get(&url)
        .basic_auth(
            &seed.secret_data["username"],
            Some(&seed.secret_data["password"]),
        )
        .header("X-XSRF-Header", "PingFederate")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn validation_errors_are_shown_with_field_paths() {
    for version in VERSIONS {
        let (sim, seed) = sim(version).await;
        let pf = connect(&sim, &seed);
        // The `email` scope was deleted at the server while the client still allows it.
        sim.update_auth_server_settings(|s| {
            s["scopes"]
                .as_array_mut()
                .unwrap()
                .retain(|e| e["name"] != "email");
        });
        sim.replicate();
        let err = pf.converge(&want()).await.unwrap_err();
        assert!(matches!(err, ProviderError::Rejected { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "PingFederate rejected update the OAuth client: Validation error(s) occurred. Please review the error(s) \
             and address accordingly.: restrictedScopes[2]: The scope 'email' is not defined in the authorization \
             server settings. [invalid_scope]"
        );
        assert_no_secrets(
            &err,
            &[&seed.secret_data["password"], &seeded_secret(version)],
        );
        assert_eq!(sim.secret_rotations(), 0);
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn auditor_can_observe_but_not_write() {
    for version in VERSIONS {
        let (sim, seed) = sim(version).await;
        sim.add_admin("auditor", "auditor-pass-123", AdminRole::Auditor);
        let pf = connect_as(
            &sim,
            &seed,
            "auditor",
            "auditor-pass-123",
            &deps(Duration::from_secs(10)),
        );
        let obs = pf.observe_plan(&want()).await.unwrap().observation;
        assert_eq!(obs.changes.len(), 6);
        let err = pf.converge(&want()).await.unwrap_err();
        assert!(matches!(err, ProviderError::Forbidden { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("Secret \"pingfederate-admin\""),
            "names the Secret: {msg}"
        );
        assert!(msg.contains("needs the Admin role"), "{msg}");
        assert!(msg.contains("Auditor role is read-only"), "{msg}");
        assert_no_secrets(&err, &["auditor-pass-123", &seeded_secret(version)]);
        assert_eq!(
            without_mtime(sim.client("coder").unwrap()),
            without_mtime(sim_pingfederate::seed_client(version))
        );
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn wrong_password_is_an_authentication_failure_naming_the_secret() {
    let (sim, seed) = sim(PfVersion::V12_1).await;
    let pf = connect_as(
        &sim,
        &seed,
        "oidc-refresh-operator",
        "wrong-password-xyz",
        &deps(Duration::from_secs(10)),
    );
    let err = pf.observe_plan(&want()).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::AuthenticationFailed { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Secret \"pingfederate-admin\""));
    assert!(!err.is_transient());
    assert_no_secrets(&err, &["wrong-password-xyz", &seed.secret_data["password"]]);
    sim.shutdown().await;
}

#[tokio::test]
async fn missing_credentials_keys_are_named() {
    let (sim, seed) = sim(PfVersion::V12_1).await;
    let creds = Credentials::new(
        "pingfederate-admin",
        "1",
        BTreeMap::from([("username".to_string(), b"x".to_vec())]),
    );
    let err = pingfederate_connect(
        &spec(&sim, &seed, "coder"),
        creds,
        &deps(Duration::from_secs(10)),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, ProviderError::InvalidSecret { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("password"), "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_client_is_client_not_found() {
    let (sim, seed) = sim(PfVersion::V11_3).await;
    let pf = pingfederate_connect(
        &spec(&sim, &seed, "not-coder"),
        credentials(
            &seed,
            &seed.secret_data["username"],
            &seed.secret_data["password"],
        ),
        &deps(Duration::from_secs(10)),
    )
    .unwrap();
    let err = pf.observe_plan(&want()).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::ClientNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"not-coder\""), "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn throttling_and_outages_are_transient_and_recover() {
    for version in VERSIONS {
        let (sim, seed) = sim(version).await;
        let pf = connect(&sim, &seed);

        sim.fail_next(1, 429, Some(30));
        let err = pf.converge(&want()).await.unwrap_err();
        assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
        assert!(err.is_transient());

        sim.fail_next(1, 503, None);
        let err = pf.converge(&want()).await.unwrap_err();
        assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");
        assert!(err.is_transient());

        sim.fail_next(1, 500, None);
        let err = pf.observe_plan(&want()).await.unwrap_err();
        assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");

        // Recovery: converges, nothing was written by the failed attempts.
        assert_eq!(sim.counters().writes(), 0);
        let applied = pf.converge(&want()).await.unwrap();
        assert_eq!(applied.observation.settings, wanted_settings());
        assert_eq!(
            without_mtime(sim.client("coder").unwrap()),
            without_mtime(expected_client(version))
        );
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn partial_state_converges_with_only_the_missing_writes() {
    let (sim, seed) = sim(PfVersion::V12_1).await;
    let pf = connect(&sim, &seed);
    assert_eq!(pf.converge(&want()).await.unwrap().actions.len(), 3);
    // The scope exists, but the client was restored from an old export.
    sim.update_client("coder", |c| {
        *c = sim_pingfederate::seed_client(PfVersion::V12_1);
    });
    sim.replicate();
    let before = sim.counters();
    let applied = pf.converge(&want()).await.unwrap();
    assert_eq!(
        applied.actions.len(),
        2,
        "only the client, replicated: {:?}",
        applied.actions
    );
    assert!(applied.actions[0].starts_with("updated PingFederate OAuth client \"coder\""));
    let diff = sim.counters().diff(&before);
    assert_eq!(diff.writes(), 2, "{diff:?}");
    assert_eq!(diff.get("PUT", "/oauth/clients/{id}"), 1);
    assert_eq!(diff.get("POST", "/cluster/replicate"), 1);
    assert_bodies_valid(&sim);
    sim.shutdown().await;
}

#[tokio::test]
async fn timeouts_are_unreachable() {
    let (sim, seed) = sim(PfVersion::V12_1).await;
    let pf = connect_as(
        &sim,
        &seed,
        &seed.secret_data["username"],
        &seed.secret_data["password"],
        &deps(Duration::from_millis(200)),
    );
    sim.set_latency(Duration::from_secs(3));
    let err = pf.observe_plan(&want()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    sim.set_latency(Duration::ZERO);
    sim.shutdown().await;
}

#[tokio::test]
async fn consent_prompt_is_required_by_12_1() {
    let (sim, seed) = sim(PfVersion::V12_1).await;
    sim.update_client("coder", |c| {
        c["requireOfflineAccessScopeToIssueRefreshTokens"] = json!("YES");
        c["offlineAccessRequireConsentPrompt"] = json!("YES");
    });
    sim.replicate();
    let pf = connect(&sim, &seed);
    let applied = pf.converge(&want()).await.unwrap();
    assert_eq!(applied.observation.coder.add_scopes, ["offline_access"]);
    assert_eq!(
        applied.observation.coder.params,
        BTreeMap::from([("prompt".to_string(), "consent".to_string())])
    );
    let reasons: Vec<&str> = applied
        .observation
        .findings
        .iter()
        .map(|f| f.reason)
        .collect();
    assert_eq!(reasons, ["ConsentPromptRequired"]);
    assert!(!applied.observation.findings[0].blocking);
    // The 12.1 fields were sent back unchanged.
    let client = sim.client("coder").unwrap();
    assert_eq!(
        client["requireOfflineAccessScopeToIssueRefreshTokens"],
        "YES"
    );
    assert_eq!(client["offlineAccessRequireConsentPrompt"], "YES");
    assert_bodies_valid(&sim);

    // Server-wide default: require offline_access and consent for every client.
    sim.update_client("coder", |c| {
        c["requireOfflineAccessScopeToIssueRefreshTokens"] = json!("SERVER_DEFAULT");
        c["offlineAccessRequireConsentPrompt"] = json!("SERVER_DEFAULT");
    });
    sim.update_auth_server_settings(|s| {
        s["requireOfflineAccessScopeToIssueRefreshTokens"] = json!(true);
        s["offlineAccessRequireConsentPrompt"] = json!(true);
    });
    sim.replicate();
    let obs = pf.observe_plan(&want()).await.unwrap().observation;
    assert_eq!(obs.coder.params["prompt"], "consent");
    // Without offline_access the client gets no refresh token: blocking finding.
    let obs = pf
        .observe_plan(&DesiredSettings {
            offline_access: false,
            ..want()
        })
        .await
        .unwrap()
        .observation;
    assert!(obs.coder.params.is_empty());
    assert_eq!(obs.findings.len(), 1);
    assert_eq!(obs.findings[0].reason, "OfflineAccessRequired");
    assert!(obs.findings[0].blocking);
    sim.shutdown().await;
}

#[tokio::test]
async fn no_consent_prompt_by_default_and_on_11_3() {
    for version in VERSIONS {
        let (sim, seed) = sim(version).await;
        let pf = connect(&sim, &seed);
        let obs = pf.observe_plan(&want()).await.unwrap().observation;
        assert!(obs.coder.params.is_empty(), "{version}");
        assert!(obs.findings.is_empty(), "{version}");
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn access_token_lifetime_is_unsupported_before_any_call() {
    let (sim, seed) = sim(PfVersion::V12_1).await;
    let pf = connect(&sim, &seed);
    let desired = DesiredSettings {
        access_token_lifetime: Some(Duration::from_secs(3600)),
        ..want()
    };
    let err = pf.check(&desired).unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported { .. }));
    assert!(err.to_string().contains("access token manager"), "{err}");
    assert!(pf.converge(&desired).await.is_err());
    assert_eq!(sim.counters().total(), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_secret_would_rotate_the_secret_in_the_simulator() {
    // Guards the guard: the simulator really catches the mistake the provider avoids.
    init();
    let (sim, seed) = sim(PfVersion::V11_3).await;
    let mut body = sim.client("coder").unwrap();
    body["clientAuth"]["secret"] = json!("new-plaintext");
    let resp = reqwest::Client::new()
        .put(format!(
            "{}/pf-admin-api/v1/oauth/clients/coder",
            sim.base_url()
        ))
        .basic_auth(
            &seed.secret_data["username"],
            Some(&seed.secret_data["password"]),
        )
        .header("X-XSRF-Header", "PingFederate")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(sim.secret_rotations(), 1);
    assert_ne!(
        sim.client("coder").unwrap()["clientAuth"]["encryptedSecret"].as_str(),
        Some(seeded_secret(PfVersion::V11_3).as_str())
    );
    let described: BTreeMap<String, String> = sim.describe_client().into_iter().collect();
    assert_eq!(described["client secret"], "CHANGED");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_unusable_ca_bundle_is_an_invalid_secret() {
    let (sim, seed) = sim(PfVersion::V12_1).await;
    let mut data: BTreeMap<String, Vec<u8>> = seed
        .secret_data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    data.insert("ca.crt".into(), b"not a certificate".to_vec());
    let err = pingfederate_connect(
        &spec(&sim, &seed, "coder"),
        Credentials::new(&seed.secret_name, "1", data),
        &deps(Duration::from_secs(10)),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, ProviderError::InvalidSecret { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("ca.crt"), "{err}");
    assert_no_secrets(&err, &[&seed.secret_data["password"]]);
    assert_eq!(sim.counters().total(), 0);
    sim.shutdown().await;
}

fn connect_with(
    sim: &SimHandle,
    seed: &SandboxSeed,
    replication: PingFederateReplication,
) -> Arc<dyn IdentityProvider> {
    let spec = PingFederateSpec {
        replication,
        ..spec(sim, seed, "coder")
    };
    pingfederate_connect(
        &spec,
        credentials(
            seed,
            &seed.secret_data["username"],
            &seed.secret_data["password"],
        ),
        &deps(Duration::from_secs(10)),
    )
    .unwrap()
}

fn reasons(o: &providers::Observation) -> Vec<(&'static str, bool)> {
    o.findings.iter().map(|f| (f.reason, f.blocking)).collect()
}

#[tokio::test]
async fn a_converged_policy_stays_ready_across_fresh_ciphertexts() {
    init();
    for version in VERSIONS {
        let (sim, seed) = sim(version).await;
        let pf = connect(&sim, &seed);
        let applied = pf.converge(&want()).await.unwrap();
        assert_eq!(applied.actions.len(), 3, "{version}: {:?}", applied.actions);

        // Every read shows another ciphertext of the same secret.
        let url = format!("{}/pf-admin-api/v1/oauth/clients/coder", sim.base_url());
        let mut seen = Vec::new();
        for _ in 0..2 {
            let c: Value = reqwest::Client::new()
                .get(&url)
                .basic_auth(
                    &seed.secret_data["username"],
                    Some(&seed.secret_data["password"]),
                )
                .header("X-XSRF-Header", "PingFederate")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            seen.push(c["clientAuth"]["encryptedSecret"].clone());
        }
        assert_ne!(seen[0], seen[1]);

        // Converged: nothing to change or report, pass after pass; the write is announced once.
        for _ in 0..3 {
            let plan = pf.observe_plan(&want()).await.unwrap();
            assert_eq!(plan.changes(), [], "{version}");
            assert_eq!(reasons(&plan.observation), [], "{version}");
            let again = pf.apply(&plan).await.unwrap();
            assert_eq!(again.actions, Vec::<String>::new());
            let again = pf.converge(&want()).await.unwrap();
            assert_eq!(again.actions, Vec::<String>::new());
            assert_eq!(again.observation.settings, wanted_settings());
        }
        assert_eq!(sim.secret_changes(), 0);
        assert_eq!(
            sim.client_secret("coder").as_deref(),
            Some(sim_pingfederate::SEED_SECRET)
        );
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn a_secret_rotated_between_observe_and_apply_is_kept() {
    for version in VERSIONS {
        let (sim, seed) = sim_with(SimConfig {
            version,
            deployment: Deployment::Standalone,
            ..SimConfig::default()
        })
        .await;
        let pf = connect(&sim, &seed);
        let plan = pf.observe_plan(&want()).await.unwrap();
        let changed_at = sim.client("coder").unwrap()["clientSecretChangedTime"].clone();
        tokio::time::sleep(Duration::from_millis(5)).await;
        // An administrator rotates the secret (and Coder gets the new one) meanwhile.
        sim.rotate_client_secret("coder", "rotated-by-an-admin-4711");
        assert_ne!(
            sim.client("coder").unwrap()["clientSecretChangedTime"],
            changed_at
        );
        let applied = pf.apply(&plan).await.unwrap();
        assert_eq!(applied.actions.len(), 2, "{version}: {:?}", applied.actions);
        assert_eq!(applied.observation.settings, wanted_settings());
        assert_eq!(
            sim.client_secret("coder").as_deref(),
            Some("rotated-by-an-admin-4711"),
            "{version}: the rotation was undone"
        );
        assert_eq!(sim.secret_changes(), 1, "only the administrator's rotation");
        let mut expected = without_mtime(expected_client(version));
        let client = without_mtime(sim.client("coder").unwrap());
        for key in ["clientAuth", "clientSecretChangedTime"] {
            expected[key] = client[key].clone();
        }
        assert_eq!(client, expected, "{version}: the owned fields are set");
        assert_bodies_valid(&sim);
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn a_client_edited_between_observe_and_apply_is_planned_again() {
    let (sim, seed) = sim_with(SimConfig {
        deployment: Deployment::Standalone,
        ..SimConfig::default()
    })
    .await;
    let pf = connect(&sim, &seed);
    let plan = pf.observe_plan(&want()).await.unwrap();
    // Someone else already enabled the refresh grant: the planned change is no longer the change.
    sim.update_client("coder", |c| {
        c["grantTypes"] = json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"]);
        c["name"] = json!("Coder (edited)");
    });
    let before = sim.counters();
    let err = pf.apply(&plan).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("changed by someone else"), "{err}");
    assert_eq!(
        sim.counters()
            .diff(&before)
            .get("PUT", "/oauth/clients/{id}"),
        0
    );
    // The next pass plans from the new state and keeps the edit.
    pf.converge(&want()).await.unwrap();
    assert_eq!(sim.client("coder").unwrap()["name"], "Coder (edited)");
    sim.shutdown().await;
}

#[tokio::test]
async fn others_pending_changes_are_never_replicated() {
    for version in VERSIONS {
        let (sim, seed) = sim(version).await;
        let pf = connect(&sim, &seed);
        // Another administrator changed the server settings and has not replicated yet.
        sim.update_auth_server_settings(|s| {
            s["refreshTokenRollingGracePeriod"] = json!(5);
        });
        assert!(sim.replication_required());

        let plan = pf.observe_plan(&want()).await.unwrap();
        // Six, plus the client's grace period: the server's 5 s is shorter than Rotate's 60 s.
        assert_eq!(plan.changes().len(), 7, "{version}");
        assert_eq!(
            reasons(&plan.observation),
            [("ReplicationPending", true)],
            "{version}"
        );
        let msg = &plan.observation.findings[0].message;
        assert!(msg.contains("other administrators' changes"), "{msg}");
        assert!(msg.contains("Replicate"), "{msg}");

        // Applying anyway (a plan made before the edit, or a direct call) writes nothing.
        let before = sim.counters();
        let err = pf.apply(&plan).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(err.to_string().contains("ReplicationPending"), "{err}");
        assert_eq!(sim.counters().diff(&before).writes(), 0);
        assert!(sim.replication_required());
        assert_eq!(
            sim.engine_auth_server_settings(0).unwrap()["refreshTokenRollingGracePeriod"],
            sim_pingfederate::default_settings(version)["refreshTokenRollingGracePeriod"],
            "the other change was not pushed"
        );

        // The administrator replicates: the operator writes and replicates its own changes.
        sim.replicate();
        let applied = pf.converge(&want()).await.unwrap();
        assert!(applied.actions.last().unwrap().starts_with("replicated"));
        assert_eq!(reasons(&applied.observation), []);
        for engine in 0..2 {
            let c = sim.engine_client(engine, "coder").unwrap();
            assert_eq!(
                c["grantTypes"],
                json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"])
            );
        }

        // A converged client with replication pending (a console edit) is not Ready.
        sim.update_client("coder", |c| c["description"] = json!("edited"));
        let obs = pf.observe_plan(&want()).await.unwrap().observation;
        assert_eq!(obs.changes, []);
        assert_eq!(reasons(&obs), [("ReplicationPending", true)]);
        sim.replicate();
        let obs = pf.observe_plan(&want()).await.unwrap().observation;
        assert_eq!(reasons(&obs), []);
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn manual_replication_waits_for_an_administrator() {
    for version in VERSIONS {
        let (sim, seed) = sim(version).await;
        let pf = connect_with(&sim, &seed, PingFederateReplication::Manual);
        let plan = pf.observe_plan(&want()).await.unwrap();
        assert_eq!(reasons(&plan.observation), []);
        let before = sim.counters();
        let err = pf.apply(&plan).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("ReplicationPending"), "{msg}");
        assert!(msg.contains("replication is Manual"), "{msg}");
        let diff = sim.counters().diff(&before);
        assert_eq!(diff.get("POST", "/cluster/replicate"), 0, "{diff:?}");
        assert_eq!(diff.writes(), 2, "{diff:?}");
        // Written on the console, not served by the engines.
        assert_eq!(
            without_mtime(sim.client("coder").unwrap()),
            without_mtime(expected_client(version))
        );
        assert_eq!(
            sim.engine_client(0, "coder").unwrap()["grantTypes"],
            json!(["AUTHORIZATION_CODE"])
        );

        // Next passes: nothing to write, not Ready until someone replicates.
        let obs = pf.observe_plan(&want()).await.unwrap().observation;
        assert_eq!(obs.changes, []);
        assert_eq!(reasons(&obs), [("ReplicationPending", true)]);
        assert!(obs.findings[0].message.contains("Manual"));
        sim.replicate();
        let applied = pf.converge(&want()).await.unwrap();
        assert_eq!(applied.actions, Vec::<String>::new());
        assert_eq!(reasons(&applied.observation), []);
        assert_eq!(
            sim.engine_client(1, "coder").unwrap()["grantTypes"],
            json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"])
        );
        assert_eq!(sim.counters().get("POST", "/cluster/replicate"), 0);
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn a_standalone_server_needs_no_replication() {
    for version in VERSIONS {
        let (sim, seed) = sim_with(SimConfig {
            version,
            deployment: Deployment::Standalone,
            ..SimConfig::default()
        })
        .await;
        let pf = connect(&sim, &seed);
        let applied = pf.converge(&want()).await.unwrap();
        assert_eq!(applied.actions.len(), 2, "{:?}", applied.actions);
        assert_eq!(reasons(&applied.observation), []);
        pf.converge(&want()).await.unwrap();
        let counters = sim.counters();
        assert_eq!(counters.get("POST", "/cluster/replicate"), 0);
        assert_eq!(
            counters.get("GET", "/cluster/status"),
            1,
            "standalone is remembered: {counters:?}"
        );
        assert_eq!(
            sim.engine_client(0, "coder").unwrap()["grantTypes"],
            json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"])
        );
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn an_engine_that_misses_the_replication_is_reported() {
    let (sim, seed) = sim(PfVersion::V12_1).await;
    sim.set_engine_reachable(1, false);
    let pf = connect(&sim, &seed);
    let applied = pf.converge(&want()).await.unwrap();
    assert_eq!(
        reasons(&applied.observation),
        [("ReplicationIncomplete", false)]
    );
    assert!(
        applied.observation.findings[0]
            .message
            .contains("10.0.0.12:7600 (OUT_OF_DATE)"),
        "{:?}",
        applied.observation.findings
    );
    sim.set_engine_reachable(1, true);
    let obs = pf.observe_plan(&want()).await.unwrap().observation;
    assert_eq!(reasons(&obs), []);
    sim.shutdown().await;
}

#[tokio::test]
async fn unreadable_bodies_are_rejected_with_the_field_path() {
    // 11.3 does not know the 12.1 offline_access controls: a client carrying one cannot be read
    // into the model (400).
    let (sim, seed) = sim(PfVersion::V11_3).await;
    sim.update_client("coder", |c| {
        c["requireOfflineAccessScopeToIssueRefreshTokens"] = json!("YES");
    });
    sim.replicate();
    let pf = connect(&sim, &seed);
    let err = pf.converge(&want()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(
        err.to_string()
            .contains("requireOfflineAccessScopeToIssueRefreshTokens"),
        "{err}"
    );
    sim.shutdown().await;
}

/// `rotation: Rotate` gives the client a rolling grace period of 60 s when the server's is
/// shorter, so an engine accepts a second redemption of a rolled refresh token at the same
/// moment (two of Coder's requests or replicas refreshing at once); `RotateStrict` sets none,
/// warns, and the second redemption fails.
#[tokio::test]
async fn rotate_sets_a_grace_period_that_covers_concurrent_refreshes() {
    for version in VERSIONS {
        let (sim, seed) = sim(version).await;
        sim.update_auth_server_settings(|s| {
            s["refreshTokenRollingGracePeriod"] = json!(0);
        });
        assert!(sim.replicate());
        let pf = connect(&sim, &seed);
        let rotate = DesiredSettings {
            rotation: Some(Rotation::Rotate),
            ..want()
        };
        let plan = pf.observe_plan(&rotate).await.unwrap();
        let grace: Vec<_> = plan
            .observation
            .changes
            .iter()
            .filter(|c| c.setting.contains("refreshTokenRollingGracePeriod"))
            .collect();
        assert_eq!(grace.len(), 1, "{version}");
        assert_eq!(
            grace[0].to_string(),
            "refreshTokenRollingGracePeriodType, refreshTokenRollingGracePeriod: SERVER_DEFAULT (0 s) -> OVERRIDE_SERVER_DEFAULT (60 s)"
        );
        assert!(grace[0].why.contains("concurrent refreshes"));
        let applied = pf.apply(&plan).await.unwrap();
        let c = sim.client("coder").unwrap();
        assert_eq!(
            (
                &c["refreshTokenRollingGracePeriodType"],
                &c["refreshTokenRollingGracePeriod"]
            ),
            (&json!("OVERRIDE_SERVER_DEFAULT"), &json!(60)),
            "{version}"
        );
        assert_eq!(
            applied.observation.settings.rotation,
            Some(Rotation::Rotate)
        );
        assert!(
            applied
                .observation
                .findings
                .iter()
                .all(|f| f.reason != "StrictRefreshTokenRotation")
        );
        let engine = sim.engine_refresh_policy(0, "coder").unwrap();
        assert!(engine.roll && engine.reuse_allowed(0) && engine.reuse_allowed(30));

        let strict = DesiredSettings {
            rotation: Some(Rotation::RotateStrict),
            ..want()
        };
        let applied = pf.converge(&strict).await.unwrap();
        assert_eq!(
            sim.client("coder").unwrap()["refreshTokenRollingGracePeriod"],
            json!(0)
        );
        assert_eq!(
            applied.observation.settings.rotation,
            Some(Rotation::RotateStrict)
        );
        let warning = applied
            .observation
            .findings
            .iter()
            .find(|f| f.reason == "StrictRefreshTokenRotation")
            .expect("a warning");
        assert!(!warning.blocking && warning.message.contains("invalid_grant"));
        let engine = sim.engine_refresh_policy(0, "coder").unwrap();
        assert!(engine.roll && !engine.reuse_allowed(0), "{version}");
        sim.shutdown().await;
    }
}
