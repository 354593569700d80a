//! The Okta provider against the Okta simulator (`sim-okta`).

use std::sync::Arc;
use std::time::Duration;

use oidc_refresh_operator::crd::{OktaSpec, Rotation};
use oidc_refresh_operator::providers::{
    self, Credentials, DesiredSettings, IdentityProvider, ProviderDeps, ProviderError,
};
use serde_json::{Value, json};
use sim_okta::{APP_ROUTE, RULE_ROUTE, SandboxSeed, SimConfig, SimHandle, TOKEN_ROUTE};

mod common;
use common::provider::{assert_bodies_valid, changed_settings, credentials, deps, init};

const APP_ID: &str = "0oacoder4sandbox7x1";
const SERVER: &str = "aus1coder4sandbox0x1";
const API_TOKEN: &str = "00ssws-api-token-for-tests";

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

/// What the sandbox asks.
fn desired() -> DesiredSettings {
    DesiredSettings {
        offline_access: true,
        lifetime: Some(hours(2160)),
        idle_timeout: Some(hours(720)),
        rotation: Some(Rotation::Rotate),
        access_token_lifetime: None,
    }
}

struct Env {
    sim: SimHandle,
    seed: SandboxSeed,
    deps: ProviderDeps,
}

impl Env {
    fn spec(&self) -> OktaSpec {
        serde_json::from_value(self.seed.spec["okta"].clone()).unwrap()
    }

    fn creds(&self, data: &[(&str, &str)]) -> Credentials {
        credentials(&self.seed.secret_name, "1", data)
    }

    fn service_creds(&self) -> Credentials {
        let s = &self.seed.secret_data;
        self.creds(&[
            ("client-id", &s["client-id"]),
            ("private-key", &s["private-key"]),
            ("key-id", &s["key-id"]),
        ])
    }

    fn provider_with(&self, spec: &OktaSpec, creds: Credentials) -> Arc<dyn IdentityProvider> {
        providers::okta::connect(spec, Some(creds), &self.deps).unwrap()
    }

    fn provider(&self) -> Arc<dyn IdentityProvider> {
        self.provider_with(&self.spec(), self.service_creds())
    }

    fn app(&self) -> Value {
        self.sim.app(APP_ID).unwrap()
    }

    fn rule(&self) -> Value {
        self.sim.rule(SERVER, "00p1coder", "0pr1coder").unwrap()
    }

    /// Plans from the drift of the grant, the leeway and the rule's lifetime (those three
    /// settings and nothing else), and applies the plan.
    async fn restore_drift(&self) {
        let plan = self.provider().observe_plan(&desired()).await.unwrap();
        assert_eq!(
            changed_settings(&plan),
            [
                "settings.oauthClient.grant_types",
                "settings.oauthClient.refresh_token",
                "actions.token.refreshTokenLifetimeMinutes"
            ]
        );
        self.provider().apply(&plan).await.unwrap();
    }

    fn writes(&self) -> (u64, u64) {
        let c = self.sim.counters();
        (c.calls("PUT", APP_ROUTE), c.calls("PUT", RULE_ROUTE))
    }

    fn assert_bodies_valid(&self) -> usize {
        assert_bodies_valid(self.sim.validate_recorded_bodies())
    }
}

async fn env_with(config: SimConfig) -> Env {
    init();
    let sim = sim_okta::start(config).await.unwrap();
    let seed = sim.seed_sandbox();
    sim.add_api_token(API_TOKEN);
    Env {
        sim,
        seed,
        deps: deps(),
    }
}

async fn env() -> Env {
    env_with(SimConfig::default()).await
}

async fn err_of(p: &Arc<dyn IdentityProvider>, d: &DesiredSettings) -> ProviderError {
    p.converge(d).await.unwrap_err()
}

#[tokio::test]
async fn first_convergence_writes_the_app_and_the_rule_and_nothing_else() {
    let e = env().await;
    let before = e.sim.sandbox_state();
    let other_app = e.sim.app("0oaother2app5sandbox").unwrap();
    let applied = e.provider().converge(&desired()).await.unwrap();
    assert_eq!(e.writes(), (1, 1));
    assert_eq!(applied.actions.len(), 2, "{:?}", applied.actions);
    let oc = &e.app()["settings"]["oauthClient"];
    assert_eq!(
        oc["grant_types"],
        json!([
            "authorization_code",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "refresh_token"
        ])
    );
    assert_eq!(
        oc["refresh_token"],
        json!({"rotation_type": "ROTATE", "leeway": 30})
    );
    assert_eq!(
        oc["redirect_uris"], before["app"]["settings"]["oauthClient"]["redirect_uris"],
        "nothing the app had is lost"
    );
    assert_eq!(
        e.sim.app_secret(APP_ID).as_deref(),
        Some("coder-oidc-client-secret-0123456789")
    );
    // Only owned app fields changed.
    let mut app_now = e.app();
    let mut app_before = before["app"].clone();
    for a in [&mut app_now, &mut app_before] {
        let oc = a["settings"]["oauthClient"].as_object_mut().unwrap();
        oc.remove("grant_types");
        oc.remove("refresh_token");
        a.as_object_mut().unwrap().remove("lastUpdated");
    }
    assert_eq!(app_now, app_before);
    let rule = e.rule();
    assert_eq!(
        rule["conditions"]["scopes"]["include"],
        json!(["openid", "profile", "email", "groups", "offline_access"])
    );
    assert_eq!(
        rule["actions"]["token"],
        json!({"accessTokenLifetimeMinutes": 60, "refreshTokenLifetimeMinutes": 129600,
               "refreshTokenWindowMinutes": 43200})
    );
    assert_eq!(
        rule["conditions"]["people"],
        before["policies"][0]["rules"][0]["conditions"]["people"]
    );
    // The shared policy's rule and the other app are untouched.
    let after = e.sim.sandbox_state();
    assert_eq!(after["policies"][1], before["policies"][1]);
    assert_eq!(e.sim.app("0oaother2app5sandbox").unwrap(), other_app);
    let s = &applied.observation.settings;
    assert_eq!(s.rotation, Some(Rotation::Rotate));
    assert_eq!(s.rotation_window.as_deref(), Some("30s"));
    assert_eq!(s.lifetime, Some(hours(2160)));
    assert_eq!(s.idle_timeout, Some(hours(720)));
    assert_eq!(s.offline_access, Some(true));
    assert_eq!(applied.observation.coder.add_scopes, ["offline_access"]);
    assert_eq!(e.assert_bodies_valid(), 2);
    // Okta shows the client secret in its answer to the PUT; it goes nowhere.
    let shown = format!("{applied:?}");
    assert!(!shown.contains("coder-oidc-client-secret"), "{shown}");
}

#[tokio::test]
async fn a_second_pass_writes_nothing_and_reuses_the_token_and_the_app_id() {
    let e = env().await;
    e.provider().converge(&desired()).await.unwrap();
    e.sim.reset_counters();
    let plan = e.provider().observe_plan(&desired()).await.unwrap();
    assert!(plan.is_empty(), "{:?}", plan.changes());
    e.provider().apply(&plan).await.unwrap();
    let c = e.sim.counters();
    assert_eq!(c.writes(), 0);
    assert_eq!(c.token_requests(), 0, "the DPoP-bound token is reused");
    assert_eq!(
        c.calls("GET", sim_okta::APPS_ROUTE),
        0,
        "the app id found is remembered"
    );
    assert_eq!(c.total(), 3, "app, policies, rules");
}

#[tokio::test]
async fn drift_is_restored_without_touching_anything_else() {
    let e = env().await;
    e.provider().converge(&desired()).await.unwrap();
    let converged = e.sim.sandbox_state();
    // An admin removes the grant, shortens the leeway and changes the rule's lifetime.
    e.sim.update_app(APP_ID, |a| {
        a["settings"]["oauthClient"]["grant_types"] = json!([
            "authorization_code",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ]);
        a["settings"]["oauthClient"]["refresh_token"]["leeway"] = json!(5);
    });
    e.sim.update_rule(SERVER, "00p1coder", "0pr1coder", |r| {
        r["actions"]["token"]["refreshTokenLifetimeMinutes"] = json!(10080);
    });
    e.restore_drift().await;
    let mut restored = e.sim.sandbox_state();
    assert_eq!(restored["policies"], converged["policies"]);
    restored["app"]
        .as_object_mut()
        .unwrap()
        .remove("lastUpdated");
    assert_eq!(restored["app"], converged["app"]);
    e.assert_bodies_valid();
}

#[tokio::test]
async fn a_rule_shared_with_other_apps_is_reported_and_changed_only_when_allowed() {
    let e = env().await;
    e.sim.update_policy(SERVER, "00p1coder", |p| {
        p["conditions"]["clients"]["include"] =
            json!(["coder-workspaces-oidc", "0oaother2app5sandbox"]);
    });
    let err = err_of(&e.provider(), &desired()).await;
    assert!(matches!(err, ProviderError::Unsupported { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("0oaother2app5sandbox") && msg.contains("allowSharedRule"),
        "{msg}"
    );
    assert!(
        msg.contains("refreshTokenLifetimeMinutes"),
        "it says what would change: {msg}"
    );
    assert_eq!(e.writes(), (0, 0), "nothing is written, not even the app");
    let mut spec = e.spec();
    spec.allow_shared_rule = true;
    e.provider_with(&spec, e.service_creds())
        .converge(&desired())
        .await
        .unwrap();
    assert_eq!(e.writes(), (1, 1));
}

#[tokio::test]
async fn an_api_token_works_and_a_bad_one_says_what_to_fix() {
    let e = env().await;
    e.provider_with(&e.spec(), e.creds(&[("api-token", API_TOKEN)]))
        .converge(&desired())
        .await
        .unwrap();
    assert_eq!(e.sim.counters().token_requests(), 0);
    let err = err_of(
        &e.provider_with(&e.spec(), e.creds(&[("api-token", "00wrong-token-value")])),
        &desired(),
    )
    .await;
    assert!(
        matches!(err, ProviderError::AuthenticationFailed { .. }),
        "{err}"
    );
    let msg = format!("{err} {err:?}");
    assert!(msg.contains("E0000011") && msg.contains("30 days"), "{msg}");
    assert!(!msg.contains("00wrong-token-value"), "{msg}");
}

#[tokio::test]
async fn bad_service_app_credentials_say_what_to_fix() {
    let e = env().await;
    let spec = e.spec();
    let missing = providers::okta::connect(&spec, Some(e.creds(&[("client-id", "x")])), &e.deps)
        .err()
        .unwrap();
    assert!(
        matches!(missing, ProviderError::InvalidSecret { .. }),
        "{missing}"
    );
    let garbage = providers::okta::connect(
        &spec,
        Some(e.creds(&[("client-id", "x"), ("private-key", "not a key")])),
        &e.deps,
    )
    .err()
    .unwrap();
    assert!(garbage.to_string().contains("private-key"), "{garbage}");
    // Another key than the one registered.
    let (other_pem, _) = sim_okta::jose::generate_es256();
    let client = e.seed.secret_data["client-id"].clone();
    let err = err_of(
        &e.provider_with(
            &spec,
            e.creds(&[("client-id", &client), ("private-key", &other_pem)]),
        ),
        &desired(),
    )
    .await;
    assert!(
        matches!(err, ProviderError::AuthenticationFailed { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert!(!format!("{err:?}").contains("PRIVATE KEY"));
}

#[tokio::test]
async fn the_rate_limit_is_honoured_before_okta_answers_429() {
    let e = env().await;
    e.sim.set_rate_limit(6, Duration::from_secs(1));
    e.provider().converge(&desired()).await.unwrap();
    let c = e.sim.counters();
    assert_eq!(c.with_status(429), 0, "the provider waited for the reset");
    assert_eq!(e.writes(), (1, 1));
}

#[tokio::test]
async fn a_429_waits_for_the_reset_and_a_long_reset_is_throttled() {
    let e = env().await;
    e.sim.set_rate_limit(600, Duration::from_secs(1));
    e.sim.fail_next(1, 429, None);
    e.provider().converge(&desired()).await.unwrap();
    assert_eq!(e.sim.counters().with_status(429), 1);
    // A window far in the future: nothing waits inline; the error carries Okta's wait.
    let e = env().await;
    e.sim.set_rate_limit(1, Duration::from_secs(60));
    let err = err_of(&e.provider(), &desired()).await;
    match err {
        ProviderError::Throttled {
            retry_after: Some(d),
            ..
        } => {
            assert!(
                d > Duration::from_secs(50) && d <= Duration::from_secs(62),
                "{d:?}"
            )
        }
        other => panic!("{other}"),
    }
    assert!(e.sim.counters().with_status(429) <= 1);
}

#[tokio::test]
async fn the_org_authorization_server_has_fixed_lifetimes() {
    let e = env().await;
    let mut spec = e.spec();
    spec.authorization_server_id = None;
    let p = e.provider_with(&spec, e.service_creds());
    let err = err_of(&p, &desired()).await;
    assert!(matches!(err, ProviderError::Unsupported { .. }), "{err}");
    assert!(
        err.to_string().contains("org authorization server"),
        "{err}"
    );
    assert_eq!(e.sim.counters().total(), 0, "refused before any call");
    let d = DesiredSettings {
        offline_access: true,
        rotation: Some(Rotation::Rotate),
        ..Default::default()
    };
    let applied = p.converge(&d).await.unwrap();
    assert_eq!(e.writes(), (1, 0), "only the app");
    assert_eq!(
        applied.observation.settings.lifetime,
        Some(Duration::from_secs(90 * 86_400))
    );
}

#[tokio::test]
async fn an_unknown_client_or_a_missing_policy_stalls() {
    let e = env().await;
    let mut spec = e.spec();
    spec.client_id = "no-such-client".into();
    let err = err_of(&e.provider_with(&spec, e.service_creds()), &desired()).await;
    assert!(matches!(err, ProviderError::ClientNotFound { .. }), "{err}");
    assert!(err.to_string().contains("no-such-client"), "{err}");
    e.sim
        .update_policy(SERVER, "00p1coder", |p| p["status"] = json!("INACTIVE"));
    e.sim
        .update_policy(SERVER, "00p2everyone", |p| p["status"] = json!("INACTIVE"));
    let err = err_of(&e.provider(), &desired()).await;
    assert!(matches!(err, ProviderError::ClientNotFound { .. }), "{err}");
    assert!(err.to_string().contains("access policy"), "{err}");
    assert_eq!(e.writes(), (0, 0));
}

#[tokio::test]
async fn an_expired_token_is_renewed_once() {
    let e = env().await;
    let p = e.provider();
    p.observe_plan(&desired()).await.unwrap();
    let tokens = e.sim.counters().calls("POST", TOKEN_ROUTE);
    e.sim.expire_tokens();
    p.converge(&desired()).await.unwrap();
    assert_eq!(
        e.sim.counters().calls("POST", TOKEN_ROUTE),
        tokens + 2,
        "a new token, with the DPoP nonce handshake"
    );
}

#[tokio::test]
async fn strict_rotation_and_reuse_map_to_the_leeway_and_static() {
    let e = env().await;
    let strict = DesiredSettings {
        rotation: Some(Rotation::RotateStrict),
        ..desired()
    };
    let applied = e.provider().converge(&strict).await.unwrap();
    assert_eq!(
        e.app()["settings"]["oauthClient"]["refresh_token"],
        json!({"rotation_type": "ROTATE", "leeway": 0})
    );
    assert!(
        applied
            .observation
            .findings
            .iter()
            .any(|f| f.reason == "StrictRefreshTokenRotation" && !f.blocking)
    );
    let reuse = DesiredSettings {
        rotation: Some(Rotation::Reuse),
        ..desired()
    };
    e.provider().converge(&reuse).await.unwrap();
    assert_eq!(
        e.app()["settings"]["oauthClient"]["refresh_token"]["rotation_type"],
        "STATIC"
    );
    let mut spec = e.spec();
    spec.rotation_leeway_seconds = Some(45);
    e.provider_with(&spec, e.service_creds())
        .converge(&desired())
        .await
        .unwrap();
    assert_eq!(
        e.app()["settings"]["oauthClient"]["refresh_token"],
        json!({"rotation_type": "ROTATE", "leeway": 45})
    );
    e.assert_bodies_valid();
}

/// Runs `drift.mjs` of the Okta conformance suite (Okta's official Node.js SDK) against `sim`.
fn drift_with_the_official_sdk(sim: &SimHandle) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/okta");
    if !dir.join("node_modules/@okta/okta-sdk-nodejs").exists() {
        let ok = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "npm ci in {} failed", dir.display());
    }
    let out = std::process::Command::new("node")
        .arg("drift.mjs")
        .current_dir(&dir)
        .env("ORG_URL", sim.base_url())
        .env("API_TOKEN", API_TOKEN)
        .env("APP_ID", APP_ID)
        .env("SERVER_ID", SERVER)
        .env("POLICY_ID", "00p1coder")
        .env("RULE_ID", "0pr1coder")
        .output()
        .expect("Node.js is needed on PATH to drive the simulator with Okta's SDK");
    assert!(
        out.status.success(),
        "drift.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_made_with_the_official_sdk_is_restored_and_every_body_fits_the_contract() {
    let e = env().await;
    e.provider().converge(&desired()).await.unwrap();
    let converged = e.sim.sandbox_state();
    let sim = e.sim.clone();
    tokio::task::spawn_blocking(move || drift_with_the_official_sdk(&sim))
        .await
        .unwrap();
    let drifted = e.sim.sandbox_state();
    assert_ne!(drifted, converged);
    e.restore_drift().await;
    assert_eq!(
        e.sim.sandbox_state(),
        converged,
        "restored, nothing else touched"
    );
    // The operator's bodies and the SDK's.
    assert_eq!(e.assert_bodies_valid(), 7);
    e.sim.reset_counters();
    assert!(
        e.provider()
            .observe_plan(&desired())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_app_whose_client_id_is_its_app_id_is_read_directly() {
    let e = env().await;
    e.sim.add_app(
        sim_okta::web_app("0oadirect1app", "0oadirect1app", "Direct"),
        Some("direct-client-secret-0123456789"),
    );
    let mut spec = e.spec();
    spec.client_id = "0oadirect1app".into();
    spec.authorization_server_id = None;
    let d = DesiredSettings {
        offline_access: true,
        rotation: Some(Rotation::Rotate),
        ..Default::default()
    };
    e.provider_with(&spec, e.service_creds())
        .converge(&d)
        .await
        .unwrap();
    let c = e.sim.counters();
    assert_eq!(c.calls("GET", sim_okta::APPS_ROUTE), 0, "no listing");
    assert_eq!(c.calls("PUT", APP_ROUTE), 1);
    let app = e.sim.app("0oadirect1app").unwrap();
    assert_eq!(
        app["settings"]["oauthClient"]["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(
        e.sim.app_secret("0oadirect1app").as_deref(),
        Some("direct-client-secret-0123456789")
    );
    assert_eq!(
        e.app()["settings"]["oauthClient"].get("refresh_token"),
        None,
        "Coder's sandbox app is untouched"
    );
}

#[tokio::test]
async fn a_resource_server_dpop_nonce_is_answered_once_and_reused() {
    let e = env().await;
    e.sim.require_resource_dpop_nonce(true);
    e.provider().converge(&desired()).await.unwrap();
    let c = e.sim.counters();
    assert_eq!(
        c.with_status(401),
        1,
        "only the first call is asked for the nonce: {c:?}"
    );
    assert_eq!(e.writes(), (1, 1));
    e.assert_bodies_valid();
}
