//! The Logto provider against the Logto simulator (`sim-logto`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use oidc_refresh_operator::crd::{LogtoSpec, Rotation};
use oidc_refresh_operator::providers::{
    self, Credentials, DesiredSettings, IdentityProvider, ProviderError,
};
use serde_json::{Value, json};
use sim_logto::{APP_ROUTE, SandboxSeed, SimConfig, SimHandle};

mod common;
use common::provider::{
    assert_bodies_valid, assert_no_secrets, changed_settings, credentials, deps, init,
};

const DAY: u64 = 86_400;

fn days(n: u64) -> Duration {
    Duration::from_secs(n * DAY)
}

/// What the sandbox asks: offline access, 90 days, rotation.
fn desired() -> DesiredSettings {
    DesiredSettings {
        offline_access: true,
        lifetime: Some(days(90)),
        rotation: Some(Rotation::Rotate),
        ..Default::default()
    }
}

struct Env {
    sim: SimHandle,
    seed: SandboxSeed,
    app_id: String,
}

impl Env {
    fn spec(&self) -> LogtoSpec {
        serde_json::from_value(self.seed.spec["logto"].clone()).unwrap()
    }

    fn secret(&self) -> String {
        self.seed.secret_data["client-secret"].clone()
    }

    fn creds_with(&self, client_id: &str, secret: &str) -> Credentials {
        credentials(
            &self.seed.secret_name,
            "1",
            &[("client-id", client_id), ("client-secret", secret)],
        )
    }

    fn provider_with(&self, spec: &LogtoSpec, creds: Credentials) -> Arc<dyn IdentityProvider> {
        providers::logto::connect(spec, Some(creds), &deps()).unwrap()
    }

    fn provider(&self) -> Arc<dyn IdentityProvider> {
        let c = self.creds_with(&self.seed.secret_data["client-id"], &self.secret());
        self.provider_with(&self.spec(), c)
    }

    fn app(&self) -> Value {
        self.sim.application(&self.app_id).unwrap()
    }

    fn patches(&self) -> u64 {
        self.sim.counters().calls("PATCH", APP_ROUTE)
    }

    fn assert_bodies_valid(&self) -> usize {
        assert_bodies_valid(self.sim.validate_recorded_bodies())
    }

    fn assert_no_secrets(&self, e: &ProviderError) {
        assert_no_secrets(e, &[&self.secret(), "wrong-secret-xyz", "eyJhbGci"]);
    }
}

async fn env_with(config: SimConfig) -> Env {
    init();
    let sim = sim_logto::start(config).await.unwrap();
    let seed = sim.seed_sandbox();
    let app_id = seed.spec["logto"]["applicationId"]
        .as_str()
        .unwrap()
        .to_string();
    Env { sim, seed, app_id }
}

async fn env() -> Env {
    env_with(SimConfig::default()).await
}

async fn err_of(p: &Arc<dyn IdentityProvider>, d: &DesiredSettings) -> ProviderError {
    p.converge(d).await.expect_err("must fail")
}

#[tokio::test]
async fn first_convergence_writes_exactly_the_plan_and_nothing_else() {
    let e = env().await;
    let before = e.app();
    let p = e.provider();
    let plan = p.observe_plan(&desired()).await.unwrap();
    let settings: Vec<(&str, &str, &str)> = plan
        .changes()
        .iter()
        .map(|c| (c.setting.as_str(), c.from.as_str(), c.to.as_str()))
        .collect();
    assert_eq!(
        settings,
        [
            (
                "customClientMetadata.refreshTokenTtlInDays",
                "unset (default 14)",
                "90"
            ),
            ("customClientMetadata.rotateRefreshToken", "false", "true"),
            (
                "customClientMetadata.alwaysIssueRefreshToken",
                "unset (default false)",
                "true"
            ),
        ]
    );
    for c in plan.changes() {
        assert_eq!(
            c.target,
            format!("Logto application \"Coder\" ({})", e.app_id)
        );
        assert!(!c.why.is_empty());
    }
    // What is seen now, before any write.
    let s = &plan.observation.settings;
    assert_eq!(s.lifetime, Some(days(14)));
    assert_eq!(s.rotation, Some(Rotation::Reuse));
    assert_eq!(
        (s.refresh_token_grant, s.offline_access),
        (Some(true), Some(true))
    );
    assert_eq!(s.idle_timeout, None);
    // Coder must ask for offline_access with prompt=consent.
    let needs = &plan.observation.coder;
    assert_eq!(needs.add_scopes, ["offline_access"]);
    assert_eq!(
        needs.params,
        BTreeMap::from([("prompt".to_string(), "consent".to_string())])
    );
    assert_eq!(e.sim.writes(), 0, "planning writes nothing");

    let applied = p.apply(&plan).await.unwrap();
    assert_eq!(applied.actions.len(), 1, "{:?}", applied.actions);
    assert_eq!(e.patches(), 1);
    // Exactly the owned keys changed; everything else is as it was.
    let after = e.app();
    let mut expected = before.clone();
    let cm = expected["customClientMetadata"].as_object_mut().unwrap();
    cm.insert("refreshTokenTtlInDays".into(), json!(90));
    cm.insert("rotateRefreshToken".into(), json!(true));
    cm.insert("alwaysIssueRefreshToken".into(), json!(true));
    assert_eq!(after, expected);
    assert_eq!(
        after["customClientMetadata"]["corsAllowedOrigins"],
        json!(["https://coder.example.com"])
    );
    assert_eq!(after["customClientMetadata"]["maxAllowedGrants"], 5);
    // The one PATCH sent customClientMetadata only, whole, and it validates.
    let bodies = e.sim.recorded_bodies();
    assert_eq!(bodies.len(), 1);
    assert_eq!(
        bodies[0].body,
        json!({"customClientMetadata": after["customClientMetadata"]})
    );
    assert_eq!(e.assert_bodies_valid(), 1);
    // The read-back shows the new settings.
    let s = &applied.observation.settings;
    assert_eq!(s.lifetime, Some(days(90)));
    assert_eq!(s.rotation, Some(Rotation::Rotate));
    // Logto would now issue Coder refresh tokens, with or without prompt=consent.
    let scopes = ["openid", "profile", "email", "offline_access"];
    assert!(
        e.sim
            .would_issue_refresh_token(&e.app_id, &scopes, Some("consent"))
    );
    assert!(e.sim.would_issue_refresh_token(&e.app_id, &scopes, None));
    // Logto's rotation threshold is reported, not hidden.
    assert!(
        applied
            .observation
            .findings
            .iter()
            .any(|f| f.reason == "LogtoRotationThreshold" && !f.blocking)
    );
}

#[tokio::test]
async fn a_second_pass_writes_nothing_and_reuses_the_token() {
    let e = env().await;
    let p = e.provider();
    p.converge(&desired()).await.unwrap();
    let (writes, tokens) = (e.sim.writes(), e.sim.counters().token_requests());
    let again = p.converge(&desired()).await.unwrap();
    assert!(again.actions.is_empty());
    assert_eq!(e.sim.writes(), writes);
    assert_eq!(e.sim.counters().token_requests(), tokens, "cached token");
    assert!(p.observe_plan(&desired()).await.unwrap().is_empty());
    // An expired token is renewed once, transparently.
    e.sim.expire_tokens();
    assert!(p.observe_plan(&desired()).await.unwrap().is_empty());
    assert_eq!(e.sim.counters().token_requests(), tokens + 1);
    e.assert_bodies_valid();
}

#[tokio::test]
async fn a_concurrent_edit_of_another_key_survives_and_of_an_owned_key_stops_the_write() {
    let e = env().await;
    let p = e.provider();
    let plan = p.observe_plan(&desired()).await.unwrap();
    e.sim.update_application(&e.app_id, |r| {
        r["customClientMetadata"]["corsAllowedOrigins"] = json!(["https://new.example.com"]);
    });
    p.apply(&plan).await.unwrap();
    assert_eq!(
        e.app()["customClientMetadata"]["corsAllowedOrigins"],
        json!(["https://new.example.com"])
    );

    let e = env().await;
    let p = e.provider();
    let plan = p.observe_plan(&desired()).await.unwrap();
    e.sim.update_application(&e.app_id, |r| {
        r["customClientMetadata"]["rotateRefreshToken"] = json!(true);
    });
    let err = p.apply(&plan).await.unwrap_err();
    assert!(matches!(err, ProviderError::Protocol { .. }), "{err}");
    assert!(err.is_transient());
    assert_eq!(e.patches(), 0);
}

#[tokio::test]
async fn offline_access_off_leaves_always_issue_alone_and_asks_nothing_of_coder() {
    let e = env().await;
    let d = DesiredSettings {
        offline_access: false,
        lifetime: Some(days(30)),
        ..Default::default()
    };
    let plan = e.provider().observe_plan(&d).await.unwrap();
    assert_eq!(
        changed_settings(&plan),
        ["customClientMetadata.refreshTokenTtlInDays"]
    );
    assert!(plan.observation.coder.add_scopes.is_empty());
    assert!(plan.observation.coder.params.is_empty());
}

#[tokio::test]
async fn lifetime_must_be_whole_days_from_1_to_180() {
    let e = env().await;
    let p = e.provider();
    for (lifetime, needle) in [
        (
            Duration::from_secs(36 * 3600),
            "use 24h (1 day) or 48h (2 days)",
        ),
        (Duration::from_secs(3600), "use 24h (1 day)"),
        (days(181), "1 to 180 days"),
    ] {
        let d = DesiredSettings {
            lifetime: Some(lifetime),
            ..desired()
        };
        let err = p.check(&d).unwrap_err();
        assert!(
            matches!(&err, ProviderError::Unsupported { detail, .. } if detail.contains(needle)),
            "{lifetime:?}: {err}"
        );
        assert!(!err.is_transient());
        assert_eq!(err_of(&p, &d).await, err);
    }
    for (field, d) in [
        (
            "idleTimeout",
            DesiredSettings {
                idle_timeout: Some(days(1)),
                ..desired()
            },
        ),
        (
            "accessTokenLifetime",
            DesiredSettings {
                access_token_lifetime: Some(Duration::from_secs(3600)),
                ..desired()
            },
        ),
        (
            "strict one-time use",
            DesiredSettings {
                rotation: Some(Rotation::RotateStrict),
                ..desired()
            },
        ),
    ] {
        let err = p.check(&d).unwrap_err();
        assert!(
            matches!(&err, ProviderError::Unsupported { detail, .. } if detail.contains(field)),
            "{err}"
        );
    }
    assert_eq!(e.sim.counters().total(), 0, "rejected before any request");
    let d = DesiredSettings {
        lifetime: Some(days(180)),
        ..desired()
    };
    p.converge(&d).await.unwrap();
    assert_eq!(
        e.app()["customClientMetadata"]["refreshTokenTtlInDays"],
        180
    );
    e.assert_bodies_valid();
}

#[tokio::test]
async fn a_logto_before_1_34_rejects_more_than_90_days_with_a_hint() {
    let e = env_with(SimConfig {
        max_ttl_days: sim_logto::LEGACY_MAX_TTL_DAYS,
        ..Default::default()
    })
    .await;
    let d = DesiredSettings {
        lifetime: Some(days(120)),
        ..desired()
    };
    let err = err_of(&e.provider(), &d).await;
    match &err {
        ProviderError::Rejected { detail, .. } => {
            assert!(detail.contains("guard.invalid_input"), "{detail}");
            assert!(detail.contains("before 1.34.0"), "{detail}");
        }
        other => panic!("{other}"),
    }
    assert!(!err.is_transient());
}

#[tokio::test]
async fn wrong_credentials_say_what_to_fix() {
    let e = env().await;
    let m2m = e.seed.secret_data["client-id"].clone();
    let p = e.provider_with(&e.spec(), e.creds_with(&m2m, "wrong-secret-xyz"));
    let err = err_of(&p, &desired()).await;
    assert!(
        matches!(&err, ProviderError::AuthenticationFailed { detail, .. }
            if detail.contains("invalid_client") && detail.contains("\"logto-m2m\"")),
        "{err}"
    );
    e.assert_no_secrets(&err);
    // The client id of Coder's own (Traditional) app.
    let p = e.provider_with(
        &e.spec(),
        e.creds_with(&e.app_id, "coder-oidc-client-secret"),
    );
    let err = err_of(&p, &desired()).await;
    assert!(
        matches!(&err, ProviderError::AuthenticationFailed { detail, .. }
            if detail.contains("machine-to-machine")),
        "{err}"
    );
    // A Secret without client-secret.
    let data = BTreeMap::from([("client-id".to_string(), m2m.into_bytes())]);
    let err = providers::logto::connect(
        &e.spec(),
        Some(Credentials::new("logto-m2m", "1", data)),
        &deps(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, ProviderError::InvalidSecret { .. }), "{err}");
    assert_eq!(e.sim.writes(), 0);
}

/// Client secrets with `+`, `%`, `:` and spaces reach Logto intact (HTTP Basic, form-URL-encoded
/// as RFC 6749 §2.3.1 says and node-oidc-provider decodes); one outside VSCHAR, which
/// node-oidc-provider refuses in Basic, goes in the form body.
#[tokio::test]
async fn secrets_with_reserved_and_non_ascii_characters_authenticate() {
    let e = env().await;
    let m2m = e.seed.secret_data["client-id"].clone();
    for secret in ["a+b%c:d e", "a+b%c:d é"] {
        e.sim.set_secret(&m2m, secret);
        let p = e.provider_with(&e.spec(), e.creds_with(&m2m, secret));
        let snap = p.observe(&desired()).await;
        assert!(snap.is_ok(), "{secret:?}: {}", snap.err().unwrap());
    }
    assert_eq!(e.sim.counters().token_requests(), 2);
}

#[tokio::test]
async fn missing_scope_all_is_forbidden_and_names_the_permission() {
    let e = env().await;
    e.sim
        .set_management_all(&e.seed.secret_data["client-id"], false);
    let err = err_of(&e.provider(), &desired()).await;
    assert!(
        matches!(&err, ProviderError::Forbidden { detail, .. }
            if detail.contains("auth.forbidden") && detail.contains("permission `all`")),
        "{err}"
    );
    assert!(!err.is_transient());
    e.assert_no_secrets(&err);
}

#[tokio::test]
async fn a_cloud_tenant_needs_its_own_resource_indicator() {
    let e = env_with(SimConfig {
        tenant_id: "acme42".into(),
        ..Default::default()
    })
    .await;
    // The endpoint (a loopback address here, a custom domain in real life) does not name the
    // tenant, so the provider asks for the OSS indicator.
    let err = err_of(&e.provider(), &desired()).await;
    assert!(
        matches!(&err, ProviderError::AuthenticationFailed { detail, .. }
            if detail.contains("invalid_target") && detail.contains("https://default.logto.app/api")
                && detail.contains("tenantId")),
        "{err}"
    );
    let mut spec = e.spec();
    spec.tenant_id = Some("acme42".into());
    let c = e.creds_with(&e.seed.secret_data["client-id"], &e.secret());
    e.provider_with(&spec, c)
        .converge(&desired())
        .await
        .unwrap();
    assert_eq!(e.app()["customClientMetadata"]["refreshTokenTtlInDays"], 90);
}

#[tokio::test]
async fn a_missing_app_or_a_machine_to_machine_app_stalls() {
    let e = env().await;
    let mut spec = e.spec();
    spec.application_id = "doesnotexist".into();
    let c = e.creds_with(&e.seed.secret_data["client-id"], &e.secret());
    let err = err_of(&e.provider_with(&spec, c.clone()), &desired()).await;
    assert!(
        matches!(&err, ProviderError::ClientNotFound { what, detail, .. }
            if what.contains("doesnotexist") && detail.contains("CODER_OIDC_CLIENT_ID")),
        "{err}"
    );
    assert!(!err.is_transient());
    // The operator's own M2M app named as Coder's.
    spec.application_id = e.seed.secret_data["client-id"].clone();
    let err = err_of(&e.provider_with(&spec, c), &desired()).await;
    assert!(
        matches!(&err, ProviderError::Unsupported { detail, .. }
            if detail.contains("machine-to-machine") && detail.contains("never issues it refresh tokens")),
        "{err}"
    );
    assert_eq!(e.sim.writes(), 0);
}

#[tokio::test]
async fn public_and_third_party_apps_get_warnings() {
    let e = env().await;
    e.sim.update_application(&e.app_id, |r| {
        r.insert("type".into(), json!("SPA"));
        r.insert("isThirdParty".into(), json!(true));
    });
    let plan = e.provider().observe_plan(&desired()).await.unwrap();
    let reasons: Vec<&str> = plan
        .observation
        .findings
        .iter()
        .filter(|f| !f.blocking)
        .map(|f| f.reason)
        .collect();
    assert_eq!(reasons, ["LogtoPublicClient", "LogtoThirdPartyConsent"]);
    // Native apps ignore alwaysIssueRefreshToken: the operator does not set it.
    e.sim.update_application(&e.app_id, |r| {
        r.insert("type".into(), json!("Native"));
    });
    let plan = e.provider().observe_plan(&desired()).await.unwrap();
    assert!(
        plan.changes()
            .iter()
            .all(|c| !c.setting.contains("alwaysIssueRefreshToken"))
    );
}

#[tokio::test]
async fn throttling_and_server_errors_are_transient() {
    let e = env().await;
    let p = e.provider();
    // A long Retry-After is not waited for inline.
    e.sim.fail_next(10, 429, Some(30));
    let err = err_of(&p, &desired()).await;
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err}");
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    e.sim.fail_next(0, 429, None);
    // A short one is.
    e.sim.fail_next(1, 429, Some(1));
    p.observe_plan(&desired()).await.unwrap();
    e.sim.fail_next(1, 500, None);
    let err = err_of(&p, &desired()).await;
    assert!(
        matches!(&err, ProviderError::Unreachable { detail, .. } if detail.contains("Internal server error")),
        "{err}"
    );
    assert!(err.is_transient());
    e.sim.fail_next(1, 503, Some(20));
    let err = err_of(&p, &desired()).await;
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err}");
    e.sim.fail_next(0, 500, None);
    p.converge(&desired()).await.unwrap();
    e.assert_bodies_valid();
}
