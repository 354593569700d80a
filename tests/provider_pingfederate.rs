//! The PingFederate provider against the PingFederate simulator, for 11.3 and 12.1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use oidc_refresh_operator::crd::{PingFederateSpec, Rotation};
use oidc_refresh_operator::metrics::Metrics;
use oidc_refresh_operator::providers::{
    self, Credentials, DesiredSettings, IdentityProvider, IdpSettings, ProviderDeps, ProviderError,
};
use serde_json::{Value, json};
use sim_pingfederate::{AdminRole, PfVersion, SandboxSeed, SimConfig, SimHandle};

const VERSIONS: [PfVersion; 2] = [PfVersion::V11_3, PfVersion::V12_1];

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn deps(timeout: Duration) -> ProviderDeps {
    install_crypto();
    ProviderDeps::new(Arc::new(Metrics::new()), timeout)
}

async fn sim(version: PfVersion) -> (SimHandle, SandboxSeed) {
    let sim = sim_pingfederate::start(SimConfig {
        version,
        ..SimConfig::default()
    })
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
    }
}

fn credentials(seed: &SandboxSeed, user: &str, password: &str) -> Credentials {
    let data = BTreeMap::from([
        ("username".to_string(), user.as_bytes().to_vec()),
        ("password".to_string(), password.as_bytes().to_vec()),
    ]);
    Credentials::new(&seed.secret_name, "1", data)
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

fn assert_no_secrets(err: &ProviderError, secrets: &[&str]) {
    let shown = format!("{err} {err:?}");
    for s in secrets {
        assert!(!shown.contains(s), "secret value in error: {shown}");
    }
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
                rotation: Some(Rotation::Reuse),
                access_token_lifetime: None,
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
            ]
        );
        assert_eq!(applied.observation.changes, []);
        assert_eq!(applied.observation.settings, wanted_settings());
        assert_eq!(applied.observation.coder.add_scopes, ["offline_access"]);
        assert!(applied.observation.coder.params.is_empty());
        assert!(applied.observation.coder.remove_scopes.is_empty());
        let diff = sim.counters().diff(&before);
        assert_eq!(diff.writes(), 2, "{diff:?}");
        assert_eq!(
            (
                diff.get("GET", "/version"),
                diff.get("GET", "/oauth/clients/{id}"),
                diff.get("GET", "/oauth/authServerSettings")
            ),
            (0, 1, 1),
            "apply writes from what observe read; only the read-back reads: {diff:?}"
        );
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
        assert_eq!(applied.actions.len(), 1, "{:?}", applied.actions);
        assert_eq!(applied.observation.settings, wanted_settings());
        assert_eq!(sim.counters().diff(&before).writes(), 1);
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
    install_crypto();
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
    assert_eq!(pf.converge(&want()).await.unwrap().actions.len(), 2);
    // The scope exists, but the client was restored from an old export.
    sim.update_client("coder", |c| {
        *c = sim_pingfederate::seed_client(PfVersion::V12_1);
    });
    let before = sim.counters();
    let applied = pf.converge(&want()).await.unwrap();
    assert_eq!(
        applied.actions.len(),
        1,
        "only the client: {:?}",
        applied.actions
    );
    assert!(applied.actions[0].starts_with("updated PingFederate OAuth client \"coder\""));
    let diff = sim.counters().diff(&before);
    assert_eq!(diff.writes(), 1);
    assert_eq!(diff.get("PUT", "/oauth/clients/{id}"), 1);
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
    install_crypto();
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
