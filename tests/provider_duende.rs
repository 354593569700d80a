//! The Duende provider's admin API backend against the Skoruba admin API simulator (`sim-duende`).

use std::sync::Arc;
use std::time::Duration;

use oidc_refresh_operator::crd::{DuendeSpec, Rotation};
use oidc_refresh_operator::providers::{
    self, Credentials, DesiredSettings, IdentityProvider, ProviderDeps, ProviderError,
};
use serde_json::{Value, json};
use sim_duende::{CLIENT_ROUTE, CLIENTS_ROUTE, SandboxSeed, SimConfig, SimHandle};

mod common;
use common::provider::{
    assert_bodies_valid, assert_no_secrets, changed_settings, credentials, deps, init,
};

const DAY: u64 = 86_400;
const OWNED: [&str; 6] = [
    "allowOfflineAccess",
    "absoluteRefreshTokenLifetime",
    "slidingRefreshTokenLifetime",
    "refreshTokenUsage",
    "refreshTokenExpiration",
    "accessTokenLifetime",
];

/// What the sandbox asks.
fn desired() -> DesiredSettings {
    DesiredSettings {
        offline_access: true,
        lifetime: Some(Duration::from_secs(90 * DAY)),
        idle_timeout: Some(Duration::from_secs(30 * DAY)),
        rotation: Some(Rotation::Reuse),
        access_token_lifetime: Some(Duration::from_secs(900)),
    }
}

struct Env {
    sim: SimHandle,
    seed: SandboxSeed,
    id: i64,
    deps: ProviderDeps,
}

async fn env() -> Env {
    init();
    let sim = sim_duende::start(SimConfig::default()).await.unwrap();
    let seed = sim.seed_sandbox();
    let id = sim.id_of("coder").unwrap();
    Env {
        sim,
        seed,
        id,
        deps: deps(),
    }
}

/// `v` without the owned fields and the ids of child rows (re-created by every full replace).
fn others(v: &Value) -> Value {
    let mut v = v.clone();
    let m = v.as_object_mut().unwrap();
    for k in OWNED {
        m.remove(k);
    }
    for k in ["claims", "properties"] {
        for c in m[k].as_array_mut().unwrap() {
            c.as_object_mut().unwrap().remove("id");
        }
    }
    v
}

impl Env {
    fn spec(&self) -> DuendeSpec {
        let mut s = self.seed.spec["duende"].clone();
        s["clientId"] = json!("coder");
        serde_json::from_value(s).unwrap()
    }

    fn creds_with(&self, id: &str, secret: &str) -> Credentials {
        credentials(
            &self.seed.secret_name,
            "1",
            &[("client-id", id), ("client-secret", secret)],
        )
    }

    fn provider_with(&self, spec: &DuendeSpec, creds: Credentials) -> Arc<dyn IdentityProvider> {
        providers::duende::connect(spec, Some(creds), &self.deps).unwrap()
    }

    /// A provider for `spec` with the operator's credentials of the sandbox.
    fn provider_for(&self, spec: &DuendeSpec) -> Arc<dyn IdentityProvider> {
        let c = self.creds_with(
            &self.seed.secret_data["client-id"],
            &self.seed.secret_data["client-secret"],
        );
        self.provider_with(spec, c)
    }

    fn provider(&self) -> Arc<dyn IdentityProvider> {
        self.provider_for(&self.spec())
    }

    fn client(&self) -> Value {
        self.sim.client(self.id).unwrap()
    }

    fn puts(&self) -> u64 {
        self.sim.counters().calls("PUT", CLIENTS_ROUTE)
    }

    fn assert_bodies_valid(&self) -> usize {
        assert_bodies_valid(self.sim.validate_recorded_bodies())
    }

    fn assert_no_secrets(&self, e: &ProviderError) {
        assert_no_secrets(e, &[self.seed.secret_data["client-secret"].as_str()]);
    }
}

#[tokio::test]
async fn converges_changing_only_the_refresh_fields_then_writes_nothing() {
    let e = env().await;
    let before = e.client();
    let p = e.provider();
    let applied = p.converge(&desired()).await.unwrap();
    assert_eq!(applied.actions.len(), 1, "{applied:?}");
    let after = e.client();
    assert_eq!(after["allowOfflineAccess"], json!(true));
    assert_eq!(after["absoluteRefreshTokenLifetime"], json!(90 * DAY));
    assert_eq!(after["slidingRefreshTokenLifetime"], json!(30 * DAY));
    assert_eq!(after["refreshTokenExpiration"], json!(sim_duende::SLIDING));
    assert_eq!(after["refreshTokenUsage"], json!(sim_duende::REUSE));
    assert_eq!(after["accessTokenLifetime"], json!(900));
    // PUT is a full replace: everything else must be exactly as it was.
    assert_eq!(others(&after), others(&before));
    assert_eq!(after["requirePkce"], json!(true));
    assert_eq!(after["requireConsent"], json!(false));
    assert_eq!(after["claims"][0]["value"], json!("platform"));
    assert_eq!(after["updated"], before["updated"]);
    // Coder may ask for offline_access: the client allows it, as read back.
    assert_eq!(
        e.sim.authorize_scopes(e.id, &["openid", "offline_access"]),
        Ok(())
    );
    assert_eq!(applied.observation.coder.add_scopes, ["offline_access"]);
    assert_eq!(applied.observation.settings.offline_access, Some(true));
    assert_eq!(applied.observation.settings.rotation, Some(Rotation::Reuse));
    assert!(applied.observation.findings.is_empty());
    assert_eq!(e.assert_bodies_valid(), 1);
    // Other clients are untouched.
    let other = e.sim.id_of("coder-staging").unwrap();
    assert_eq!(
        e.sim.client(other).unwrap()["allowOfflineAccess"],
        json!(false)
    );

    // A second pass (same dependencies: token and id remembered) reads once and writes nothing.
    e.sim.reset_counters();
    let again = e.provider().converge(&desired()).await.unwrap();
    assert!(again.actions.is_empty());
    assert_eq!(e.sim.writes(), 0);
    let c = e.sim.counters();
    assert_eq!(c.total(), 1, "{c:?}");
    assert_eq!(c.calls("GET", CLIENT_ROUTE), 1);
}

#[tokio::test]
async fn drift_is_restored_without_touching_anything_else() {
    let e = env().await;
    e.provider().converge(&desired()).await.unwrap();
    e.sim.update_client(e.id, |c| {
        c.insert("allowOfflineAccess".into(), json!(false));
        c.insert("refreshTokenUsage".into(), json!(sim_duende::ONE_TIME_ONLY));
        c.insert("clientUri".into(), json!("https://coder.example.com"));
    });
    let drifted = e.client();
    let p = e.provider();
    let plan = p.observe_plan(&desired()).await.unwrap();
    assert_eq!(
        changed_settings(&plan),
        ["AllowOfflineAccess", "RefreshTokenUsage"]
    );
    p.apply(&plan).await.unwrap();
    let after = e.client();
    assert_eq!(others(&after), others(&drifted));
    assert_eq!(after["clientUri"], json!("https://coder.example.com"));
    assert_eq!(after["allowOfflineAccess"], json!(true));
    assert_eq!(after["refreshTokenUsage"], json!(sim_duende::REUSE));
    e.assert_bodies_valid();
}

#[tokio::test]
async fn a_change_between_plan_and_write_is_not_overwritten() {
    let e = env().await;
    let p = e.provider();
    let plan = p.observe_plan(&desired()).await.unwrap();
    // Someone else turns offline access on and edits the description meanwhile.
    e.sim.update_client(e.id, |c| {
        c.insert("allowOfflineAccess".into(), json!(true));
        c.insert("description".into(), json!("edited"));
    });
    let err = p.apply(&plan).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Protocol { .. }) && err.is_transient(),
        "{err}"
    );
    assert_eq!(e.puts(), 0);
    // The next pass writes the rest and keeps the other edit.
    p.converge(&desired()).await.unwrap();
    assert_eq!(e.client()["description"], json!("edited"));
}

#[tokio::test]
async fn the_client_is_found_by_exact_client_id_across_pages() {
    let e = env().await;
    for n in 0..120 {
        e.sim
            .add_client(sim_duende::web_client(&format!("xcoderx-{n}"), "noise"));
    }
    e.sim.remove_client(e.id);
    let mut moved = sim_duende::web_client("coder", "Coder");
    moved["description"] = json!("recreated");
    let id = e.sim.add_client(moved);
    e.provider().converge(&desired()).await.unwrap();
    assert_eq!(e.sim.client(id).unwrap()["allowOfflineAccess"], json!(true));
    // Searched page by page (50 a page) until the total was seen.
    assert!(e.sim.counters().calls("GET", CLIENTS_ROUTE) >= 3);

    // A remembered id whose client is gone is searched again.
    e.sim.remove_client(id);
    let again = e.sim.add_client(sim_duende::web_client("coder", "Coder"));
    e.provider().converge(&desired()).await.unwrap();
    assert_eq!(
        e.sim.client(again).unwrap()["allowOfflineAccess"],
        json!(true)
    );

    // No exact match: not found, nothing written.
    let mut spec = e.spec();
    spec.client_id = "code".into();
    let err = e
        .provider_for(&spec)
        .converge(&desired())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::ClientNotFound { .. }), "{err}");
}

#[tokio::test]
async fn credentials_scope_and_role_errors_say_what_to_fix() {
    let e = env().await;
    let err = e
        .provider_with(&e.spec(), e.creds_with("oidc-refresh-operator", "wrong"))
        .converge(&desired())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::AuthenticationFailed { .. }),
        "{err}"
    );
    e.assert_no_secrets(&err);

    // Scope not allowed to the STS client.
    e.sim.add_sts_client("no-scope", "s1", &["other"], &[]);
    let err = e
        .provider_with(&e.spec(), e.creds_with("no-scope", "s1"))
        .converge(&desired())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("AllowedScopes"), "{err}");

    // The scope but not the administration role: 403.
    e.sim
        .add_sts_client("no-role", "s2", &[sim_duende::API_NAME], &[]);
    let err = e
        .provider_with(&e.spec(), e.creds_with("no-role", "s2"))
        .converge(&desired())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Forbidden { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("SkorubaIdentityAdminAdministrator")
    );
    assert_eq!(e.sim.writes(), 0);
}

#[tokio::test]
async fn throttling_expired_tokens_and_bad_urls() {
    let e = env().await;
    let p = e.provider();
    // Longer than the operator waits inline: reported with the server's wait.
    e.sim.fail_next(1, 503, Some(20));
    let err = p.converge(&desired()).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(20)), "{err}");
    assert_eq!(e.sim.writes(), 0);
    // An expired token is renewed once, transparently.
    p.converge(&desired()).await.unwrap();
    e.sim.expire_tokens();
    e.sim.update_client(e.id, |c| {
        c.insert("allowOfflineAccess".into(), json!(false));
    });
    p.converge(&desired()).await.unwrap();
    assert_eq!(e.client()["allowOfflineAccess"], json!(true));
    // The admin API URL pointing elsewhere (404): named in the error.
    let mut spec = e.spec();
    spec.admin_api.as_mut().unwrap().url = format!("{}/nothing-here", e.sim.base_url());
    let err = e
        .provider_for(&spec)
        .converge(&desired())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.provider.duende.adminApi.url"),
        "{err}"
    );
}

#[tokio::test]
async fn one_time_only_is_reported_and_sub_second_lifetimes_refused() {
    let e = env().await;
    let d = DesiredSettings {
        rotation: Some(Rotation::RotateStrict),
        ..desired()
    };
    let applied = e.provider().converge(&d).await.unwrap();
    assert_eq!(
        e.client()["refreshTokenUsage"],
        json!(sim_duende::ONE_TIME_ONLY)
    );
    let f = &applied.observation.findings;
    assert!(
        f.iter()
            .any(|f| f.reason == "StrictRefreshTokenRotation" && !f.blocking),
        "{f:?}"
    );
    assert_eq!(
        applied.observation.settings.rotation_window.as_deref(),
        Some("0s")
    );
    let d = DesiredSettings {
        lifetime: Some(Duration::from_millis(1500)),
        ..desired()
    };
    let err = e.provider().converge(&d).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_made_with_the_published_admin_client_is_restored_and_nothing_else_changes() {
    let e = env().await;
    e.provider().converge(&desired()).await.unwrap();
    let converged = e.client();
    // An administrator turns offline access off and flips the usage with Skoruba's own client
    // (read, change, PUT the whole client as that library serializes it).
    let env = vec![
        ("DUENDE_URL", e.sim.base_url()),
        ("OP_ID", e.seed.secret_data["client-id"].clone()),
        ("OP_SECRET", e.seed.secret_data["client-secret"].clone()),
        ("CLIENT_ID", "coder".to_string()),
    ];
    let (ok, out) =
        tokio::task::spawn_blocking(move || sim_duende::node::node(&["drift.mjs"], &env))
            .await
            .unwrap();
    assert!(ok, "drift.mjs failed:\n{out}");
    let by_the_library = e.sim.recorded_bodies().len() - 1;
    let drifted = e.client();
    assert_eq!(drifted["allowOfflineAccess"], json!(false));
    assert_eq!(
        drifted["refreshTokenUsage"],
        json!(sim_duende::ONE_TIME_ONLY)
    );
    assert_eq!(others(&drifted), others(&converged), "the drift itself");
    let puts_before = e.puts();
    let applied = e.provider().converge(&desired()).await.unwrap();
    assert_eq!(applied.actions.len(), 1);
    assert_eq!(e.puts(), puts_before + 1);
    let restored = e.client();
    assert_eq!(restored["allowOfflineAccess"], json!(true));
    assert_eq!(restored["refreshTokenUsage"], json!(sim_duende::REUSE));
    // Every other field is exactly as the administrator left it.
    assert_eq!(others(&restored), others(&drifted));
    for k in OWNED {
        assert_eq!(restored[k], converged[k], "{k}");
    }
    // The operator's bodies are whole clients (the library's own leaves out what is null).
    for (i, b) in e.sim.recorded_bodies().iter().enumerate() {
        if i != by_the_library {
            sim_duende::dto::validate_strict(&b.body).unwrap_or_else(|e| panic!("{e:?}"));
        }
    }
}
