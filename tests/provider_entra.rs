//! The Microsoft Entra ID provider against the Microsoft Graph simulator (`sim-entra`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use oidc_refresh_operator::crd::{EntraIdSpec, Rotation};
use oidc_refresh_operator::providers::{
    self, Credentials, DesiredSettings, IdentityProvider, ProviderDeps, ProviderError,
};
use serde_json::{Value, json};
use sim_entra::permissions as perm;
use sim_entra::{SandboxSeed, SimConfig, SimHandle};

mod common;
use common::provider::{assert_bodies_valid, assert_no_secrets, credentials, deps, init};

const GRAPH: &str = "00000003-0000-0000-c000-000000000000";
const OFFLINE: &str = "7427e0e9-2fba-42fe-b0c0-848c9e6a8182";
const CALLBACK: &str = "https://coder.example.com/api/v2/users/oidc/callback";
const APP_ROUTE: &str = "/v1.0/applications(appId='{appId}')";
const PATCH_ROUTE: &str = "/v1.0/applications/{id}";

struct Env {
    sim: SimHandle,
    seed: SandboxSeed,
    tenant: String,
    app_id: String,
    mgmt: String,
}

impl Env {
    fn spec(&self) -> EntraIdSpec {
        serde_json::from_value(self.seed.spec["entraId"].clone()).unwrap()
    }

    fn secret(&self) -> String {
        self.seed.secret_data["client-secret"].clone()
    }

    fn creds(&self, version: &str, secret: &str) -> Credentials {
        credentials(
            &self.seed.secret_name,
            version,
            &[("client-id", &self.mgmt), ("client-secret", secret)],
        )
    }

    fn provider(&self, deps: &ProviderDeps) -> Arc<dyn IdentityProvider> {
        providers::entra::connect(&self.spec(), Some(self.creds("1", &self.secret())), deps)
            .unwrap()
    }

    fn app(&self) -> Value {
        self.sim.application(&self.tenant, &self.app_id).unwrap()
    }

    fn edit(&self, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
        self.sim.update_application(&self.tenant, &self.app_id, f);
    }

    fn permissions(&self, perms: &[&str]) {
        self.sim.set_permissions(&self.tenant, &self.mgmt, perms);
    }

    /// The management app may read grants, and the app has tenant-wide consent for `scopes`.
    fn consented(&self, scopes: &str) {
        self.permissions(&[
            perm::APPLICATION_READWRITE_ALL,
            perm::DELEGATED_PERMISSION_GRANT_READ_ALL,
        ]);
        self.sim
            .add_permission_grant(&self.tenant, &self.app_id, "AllPrincipals", scopes);
    }

    /// No secret value (client secret or any issued token) in an error's Display or Debug.
    fn assert_no_secrets(&self, e: &ProviderError) {
        assert_no_secrets(e, &[&self.secret(), "wrong-secret-xyz", "eyJ0eXAiOiJKV1Qi"]);
    }

    fn assert_bodies_valid(&self) -> usize {
        assert_bodies_valid(self.sim.validate_recorded_bodies())
    }
}

async fn env_with(config: SimConfig) -> Env {
    init();
    let sim = sim_entra::start(config).await.unwrap();
    let seed = sim.seed_sandbox();
    let tenant = seed.spec["entraId"]["tenantId"]
        .as_str()
        .unwrap()
        .to_string();
    let app_id = seed.spec["entraId"]["applicationId"]
        .as_str()
        .unwrap()
        .to_string();
    let mgmt = seed.secret_data["client-id"].clone();
    Env {
        sim,
        seed,
        tenant,
        app_id,
        mgmt,
    }
}

async fn env() -> Env {
    env_with(SimConfig::default()).await
}

fn offline() -> DesiredSettings {
    DesiredSettings {
        offline_access: true,
        ..DesiredSettings::default()
    }
}

fn with_access_token(secs: u64) -> DesiredSettings {
    DesiredSettings {
        access_token_lifetime: Some(Duration::from_secs(secs)),
        ..offline()
    }
}

fn without(app: &Value, keys: &[&str]) -> Value {
    let mut m = app.as_object().unwrap().clone();
    for k in keys {
        m.remove(*k);
    }
    Value::Object(m)
}

#[tokio::test]
async fn first_apply_converges_and_keeps_everything_else() {
    let e = env().await;
    let before = e.app();
    let p = e.provider(&deps());
    let applied = p.converge(&offline()).await.unwrap();
    assert_eq!(applied.actions.len(), 2, "{:?}", applied.actions);
    assert!(applied.actions[0].contains("offline_access"));
    assert!(applied.observation.changes.is_empty());
    assert_eq!(applied.observation.settings.offline_access, Some(true));
    assert_eq!(applied.observation.settings.refresh_token_grant, Some(true));
    assert_eq!(
        applied.observation.settings.idle_timeout,
        Some(Duration::from_secs(90 * 86400))
    );
    assert_eq!(applied.observation.settings.lifetime, None);
    assert_eq!(applied.observation.coder.add_scopes, vec!["offline_access"]);
    assert!(
        applied.observation.findings.is_empty(),
        "{:?}",
        applied.observation.findings
    );

    let after = e.app();
    assert_eq!(
        after["requiredResourceAccess"],
        json!([
            {"resourceAppId": GRAPH, "resourceAccess": [
                {"id": "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "type": "Scope"},
                {"id": "37f7f235-527c-4136-accd-4a02d197296e", "type": "Scope"},
                {"id": "14dad69e-099b-42c9-810b-d002981feec1", "type": "Scope"},
                {"id": "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0", "type": "Scope"},
                {"id": "5b567255-7703-4780-807c-7be8301ae99b", "type": "Role"},
                {"id": OFFLINE, "type": "Scope"}]},
            {"resourceAppId": "797f4846-ba00-4fd7-ba43-dac1f8f63013", "resourceAccess": [
                {"id": "41094075-9dad-400e-a0bd-54e686782033", "type": "Scope"}]}
        ])
    );
    assert_eq!(after["isFallbackPublicClient"], json!(false));
    assert_eq!(
        without(
            &after,
            &["requiredResourceAccess", "isFallbackPublicClient"]
        ),
        without(
            &before,
            &["requiredResourceAccess", "isFallbackPublicClient"]
        ),
        "every other property is unchanged"
    );

    // One PATCH with only the two properties that change, valid against the contract.
    let c = e.sim.counters();
    assert_eq!(
        c.by_route.get(&("PATCH".into(), PATCH_ROUTE.into(), 204)),
        Some(&1)
    );
    assert_eq!(c.writes(), 1);
    let bodies = e.sim.recorded_bodies();
    assert_eq!(bodies.len(), 1);
    let keys: Vec<&String> = bodies[0].body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        vec!["requiredResourceAccess", "isFallbackPublicClient"]
    );
    assert_eq!(e.assert_bodies_valid(), 1);
}

#[tokio::test]
async fn second_apply_writes_nothing() {
    let e = env().await;
    let p = e.provider(&deps());
    p.converge(&offline()).await.unwrap();
    e.sim.reset_counters();
    let again = p.converge(&offline()).await.unwrap();
    assert!(again.actions.is_empty());
    assert!(again.observation.changes.is_empty());
    let c = e.sim.counters();
    assert_eq!(c.writes(), 0, "{c:?}");
    assert_eq!(c.token_requests(), 0, "the cached token is reused");
    assert!(c.reads() > 0);
}

#[tokio::test]
async fn observe_reports_changes_and_writes_nothing() {
    let e = env().await;
    let p = e.provider(&deps());
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    let shown: Vec<String> = o.changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            "requiredResourceAccess (Microsoft Graph delegated permissions): email, openid, profile, User.Read -> email, offline_access, openid, profile, User.Read",
            "isFallbackPublicClient (allow public client flows): true -> false",
        ]
    );
    assert_eq!(o.settings.offline_access, Some(false));
    assert_eq!(e.sim.writes(), 0);
}

#[tokio::test]
async fn drift_is_detected_and_fixed_keeping_new_foreign_entries() {
    let e = env().await;
    let p = e.provider(&deps());
    p.converge(&offline()).await.unwrap();
    // Someone removes offline_access, turns public client flows back on and adds another API.
    e.edit(|a| {
        let rra = a["requiredResourceAccess"].as_array_mut().unwrap();
        rra[0]["resourceAccess"]
            .as_array_mut()
            .unwrap()
            .retain(|x| x["id"] != OFFLINE);
        rra.push(json!({"resourceAppId": "00000002-0000-0ff1-ce00-000000000000",
                        "resourceAccess": [{"id": "6223a6a7-8f95-4d4a-b5a7-2f2e9f0c2a3b", "type": "Role"}]}));
        a.insert("isFallbackPublicClient".into(), json!(true));
    });
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    assert_eq!(o.changes.len(), 2);
    assert_eq!(o.settings.offline_access, Some(false));
    e.sim.reset_counters();
    let applied = p.converge(&offline()).await.unwrap();
    assert_eq!(applied.actions.len(), 2);
    assert_eq!(e.sim.writes(), 1);
    let app = e.app();
    assert_eq!(app["isFallbackPublicClient"], json!(false));
    let rra = app["requiredResourceAccess"].as_array().unwrap();
    assert_eq!(rra.len(), 3, "the new foreign entry is kept");
    assert_eq!(
        rra[2]["resourceAppId"],
        json!("00000002-0000-0ff1-ce00-000000000000")
    );
    assert_eq!(
        rra[0]["resourceAccess"].as_array().unwrap().last().unwrap()["id"],
        json!(OFFLINE)
    );
    e.assert_bodies_valid();
}

#[tokio::test]
async fn without_offline_access_only_oidc_permissions_are_ensured() {
    let e = env().await;
    e.edit(|a| {
        a.insert("isFallbackPublicClient".into(), json!(null));
    });
    let p = e.provider(&deps());
    let d = DesiredSettings::default();
    let applied = p.converge(&d).await.unwrap();
    assert!(
        applied.actions.is_empty(),
        "openid, profile and email are already there"
    );
    assert_eq!(applied.observation.settings.offline_access, Some(false));
    assert!(applied.observation.coder.add_scopes.is_empty());
    assert_eq!(e.sim.writes(), 0);
}

#[tokio::test]
async fn spa_callback_is_reported_not_changed() {
    let e = env().await;
    e.edit(|a| {
        a.insert("spa".into(), json!({"redirectUris": [CALLBACK]}));
        a.insert("web".into(), json!({"redirectUris": [], "implicitGrantSettings": {"enableIdTokenIssuance": false, "enableAccessTokenIssuance": false}}));
    });
    let p = e.provider(&deps());
    let applied = p.converge(&offline()).await.unwrap();
    let f = &applied.observation.findings;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].reason, f[0].blocking), ("SpaRedirectUri", false));
    assert!(f[0].message.contains(CALLBACK) && f[0].message.contains("24 hours"));
    assert_eq!(
        applied.observation.settings.lifetime,
        Some(Duration::from_secs(86400))
    );
    assert_eq!(
        e.app()["spa"],
        json!({"redirectUris": [CALLBACK]}),
        "redirect URIs untouched"
    );
    let body = &e.sim.recorded_bodies()[0].body;
    assert!(body.get("spa").is_none() && body.get("web").is_none());
}

fn secret_ending(days: i64, name: &str) -> Value {
    let end = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .unwrap();
    sim_entra::password_credential(name, end)
}

#[tokio::test]
async fn expiring_and_expired_client_secrets_are_reported() {
    let e = env().await;
    let p = e.provider(&deps());
    e.edit(|a| {
        a.insert(
            "passwordCredentials".into(),
            json!([secret_ending(-100, "old"), secret_ending(10, "current")]),
        );
    });
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    assert_eq!(o.findings.len(), 1, "{:?}", o.findings);
    assert_eq!(
        (o.findings[0].reason, o.findings[0].blocking),
        ("ClientSecretExpiring", false)
    );
    assert!(o.findings[0].message.contains("\"current\""));
    assert!(
        o.findings[0].message.contains("in 9 days") || o.findings[0].message.contains("in 10 days")
    );

    e.edit(|a| {
        a.insert(
            "passwordCredentials".into(),
            json!([secret_ending(-100, "old"), secret_ending(-1, "current")]),
        );
    });
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    assert_eq!(o.findings.len(), 1);
    assert_eq!(
        (o.findings[0].reason, o.findings[0].blocking),
        ("ClientSecretExpired", true)
    );
    assert!(o.findings[0].message.contains("CODER_OIDC_CLIENT_SECRET"));
    assert_eq!(e.sim.writes(), 0);

    // Coder may sign in with a certificate instead: a valid one turns the stall into a warning,
    // and its own expiry is reported.
    let cert_ending = |days: i64, usage: &str| {
        let end = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24 * days))
            .unwrap();
        sim_entra::key_credential("coder-cert", usage, end)
    };
    e.edit(|a| {
        a.insert("keyCredentials".into(), json!([cert_ending(20, "Verify")]));
    });
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    let found: Vec<(&str, bool)> = o.findings.iter().map(|f| (f.reason, f.blocking)).collect();
    assert_eq!(
        found,
        [
            ("ClientSecretExpired", false),
            ("ClientCertificateExpiring", false)
        ]
    );
    assert!(
        o.findings[1]
            .message
            .contains("CODER_OIDC_CLIENT_CERT_FILE")
    );
    e.edit(|a| {
        a.insert(
            "keyCredentials".into(),
            json!([cert_ending(-2, "Verify"), cert_ending(300, "Sign")]),
        );
    });
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    let found: Vec<(&str, bool)> = o.findings.iter().map(|f| (f.reason, f.blocking)).collect();
    assert_eq!(
        found,
        [
            ("ClientSecretExpired", true),
            ("ClientCertificateExpired", true)
        ]
    );
}

#[tokio::test]
async fn refresh_token_lifetimes_are_unsupported_with_the_reason() {
    let e = env().await;
    let p = e.provider(&deps());
    for d in [
        DesiredSettings {
            lifetime: Some(Duration::from_secs(720 * 3600)),
            ..offline()
        },
        DesiredSettings {
            idle_timeout: Some(Duration::from_secs(86400)),
            ..offline()
        },
        DesiredSettings {
            rotation: Some(Rotation::Rotate),
            ..offline()
        },
    ] {
        let err = p.check(&d).unwrap_err();
        assert!(matches!(err, ProviderError::Unsupported { .. }), "{err:?}");
        let msg = err.to_string();
        for needle in [
            "90-day inactivity",
            "24 h",
            "January 2021",
            "Conditional Access sign-in frequency",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing in {msg}");
        }
        assert!(matches!(
            p.converge(&d).await,
            Err(ProviderError::Unsupported { .. })
        ));
    }
    let err = p.check(&with_access_token(300)).unwrap_err();
    assert!(err.to_string().contains("10m to 24h"), "{err}");
    assert_eq!(
        e.sim.counters().total(),
        0,
        "nothing is called for an unsupported policy"
    );
    p.check(&with_access_token(3600)).unwrap();
}

#[tokio::test]
async fn access_token_lifetime_uses_one_policy_created_once_and_updated() {
    let e = env().await;
    e.permissions(&[
        perm::APPLICATION_READWRITE_ALL,
        perm::POLICY_READWRITE_APPLICATIONCONFIGURATION,
    ]);
    let p = e.provider(&deps());
    let applied = p.converge(&with_access_token(3600)).await.unwrap();
    // The policy does not set the lifetime of the (Microsoft Graph) access token Coder
    // refreshes: nothing is reported as effective, and a warning says what the policy changes.
    assert_eq!(applied.observation.settings.access_token_lifetime, None);
    let f: Vec<_> = applied
        .observation
        .findings
        .iter()
        .map(|f| (f.reason, f.blocking))
        .collect();
    assert_eq!(f, [("AccessTokenLifetimeNotForGraph", false)]);
    let msg = &applied.observation.findings[0].message;
    for needle in ["ID tokens", "Microsoft Graph", "60-90 minutes", "01:00:00"] {
        assert!(msg.contains(needle), "{needle:?} missing in {msg}");
    }
    assert!(
        applied
            .actions
            .iter()
            .any(|a| a.contains("assigned token lifetime policy"))
    );
    let policies = e.sim.token_lifetime_policies(&e.tenant);
    assert_eq!(policies.len(), 1);
    assert_eq!(
        policies[0]["definition"],
        json!(["{\"TokenLifetimePolicy\":{\"Version\":1,\"AccessTokenLifetime\":\"01:00:00\"}}"])
    );
    assert_eq!(
        policies[0]["displayName"],
        json!(format!("oidc-refresh-operator {}", e.app_id))
    );
    assert_eq!(policies[0]["isOrganizationDefault"], json!(false));
    assert_eq!(e.sim.assigned_policies(&e.tenant, &e.app_id).len(), 1);

    // Converged: nothing written.
    e.sim.reset_counters();
    let again = p.converge(&with_access_token(3600)).await.unwrap();
    assert!(again.actions.is_empty());
    assert_eq!(e.sim.writes(), 0);

    // A new value updates the same policy.
    let changed = p.converge(&with_access_token(7200)).await.unwrap();
    assert!(changed.observation.changes.is_empty());
    let c = e.sim.counters();
    assert_eq!(c.writes(), 1, "{c:?}");
    assert_eq!(
        c.calls("PATCH", "/v1.0/policies/tokenLifetimePolicies/{id}"),
        1
    );
    let policies = e.sim.token_lifetime_policies(&e.tenant);
    assert_eq!(policies.len(), 1, "no duplicate policy");
    assert_eq!(
        policies[0]["definition"],
        json!(["{\"TokenLifetimePolicy\":{\"Version\":1,\"AccessTokenLifetime\":\"02:00:00\"}}"])
    );
    let assigned = e.sim.assigned_policies(&e.tenant, &e.app_id);
    assert_eq!(assigned.len(), 1);
    assert_eq!(assigned[0]["id"], policies[0]["id"]);

    // Bodies: the app PATCH, the policy POST, the $ref POST and the policy PATCH.
    let bodies = e.sim.recorded_bodies();
    let kinds: Vec<(&str, &str)> = bodies
        .iter()
        .map(|b| (b.method.as_str(), b.entity.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("PATCH", "application"),
            ("POST", "tokenLifetimePolicy"),
            ("POST", "$ref"),
            ("PATCH", "tokenLifetimePolicy")
        ]
    );
    assert_eq!(
        bodies[2].body,
        json!({"@odata.id": format!("{}/v1.0/policies/tokenLifetimePolicies/{}", e.sim.base_url(), policies[0]["id"].as_str().unwrap())})
    );
    assert_eq!(e.assert_bodies_valid(), 4);
}

#[tokio::test]
async fn an_unassigned_operator_policy_is_reused_not_duplicated() {
    let e = env().await;
    e.permissions(&[
        perm::APPLICATION_READWRITE_ALL,
        perm::POLICY_READWRITE_APPLICATIONCONFIGURATION,
    ]);
    let name = format!("oidc-refresh-operator {}", e.app_id);
    let id = e.sim.add_token_lifetime_policy(
        &e.tenant,
        &name,
        "{\"TokenLifetimePolicy\":{\"Version\":1,\"AccessTokenLifetime\":\"03:00:00\"}}",
    );
    let p = e.provider(&deps());
    p.converge(&with_access_token(3600)).await.unwrap();
    let policies = e.sim.token_lifetime_policies(&e.tenant);
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0]["id"], json!(id));
    assert_eq!(
        e.sim.assigned_policies(&e.tenant, &e.app_id)[0]["id"],
        json!(id)
    );
    assert_eq!(
        e.sim
            .counters()
            .calls("POST", "/v1.0/policies/tokenLifetimePolicies"),
        0
    );
}

#[tokio::test]
async fn a_foreign_policy_is_not_replaced() {
    let e = env().await;
    e.permissions(&[
        perm::APPLICATION_READWRITE_ALL,
        perm::POLICY_READWRITE_APPLICATIONCONFIGURATION,
    ]);
    let id = e.sim.add_token_lifetime_policy(
        &e.tenant,
        "corporate",
        "{\"TokenLifetimePolicy\":{\"Version\":1,\"AccessTokenLifetime\":\"04:00:00\"}}",
    );
    e.sim.assign_policy(&e.tenant, &e.app_id, &id);
    let p = e.provider(&deps());
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    assert_eq!(o.settings.access_token_lifetime, None);
    let err = p.converge(&with_access_token(3600)).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported { .. }));
    assert!(err.to_string().contains("\"corporate\""), "{err}");
    assert_eq!(e.sim.writes(), 0);
}

#[tokio::test]
async fn policy_without_permission_is_forbidden_naming_it() {
    let e = env().await;
    let p = e.provider(&deps());
    let err = p.converge(&with_access_token(3600)).await.unwrap_err();
    assert!(matches!(err, ProviderError::Forbidden { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("Policy.ReadWrite.ApplicationConfiguration"),
        "{msg}"
    );
    assert!(msg.contains("P1"), "{msg}");
    assert!(
        msg.contains("Authorization_RequestDenied: Insufficient privileges"),
        "{msg}"
    );
    assert!(msg.contains("\"graph-admin\""), "{msg}");
    e.assert_no_secrets(&err);
    assert!(e.sim.token_lifetime_policies(&e.tenant).is_empty());
    // Reading the app's policies needs an Application write permission and a policy
    // permission, exactly as Graph's reference says (Application.Read.All is not enough).
    assert!(
        msg.contains("refused to read the app's token lifetime policies")
            && msg.contains("Application.ReadWrite.All")
            && msg.contains("Policy.Read.All or Policy.ReadWrite.ApplicationConfiguration")
            && msg.contains("Application.Read.All is not enough"),
        "{msg}"
    );

    // With Application.Read.All and a policy permission, the same read is refused, and the
    // message names the Application write permission.
    e.permissions(&[
        perm::APPLICATION_READ_ALL,
        perm::POLICY_READWRITE_APPLICATIONCONFIGURATION,
    ]);
    let err = p.observe_plan(&with_access_token(3600)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("Application.ReadWrite.All (or Application.ReadWrite.OwnedBy as an owner"),
        "{err}"
    );
    // Policy.Read.All with an Application write permission reads and assigns; creating a
    // policy needs Policy.ReadWrite.ApplicationConfiguration, and the message says so.
    e.permissions(&[perm::APPLICATION_READWRITE_ALL, perm::POLICY_READ_ALL]);
    let err = p.converge(&with_access_token(3600)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ProviderError::Forbidden { .. })
            && msg.contains("create a token lifetime policy")
            && msg.contains("needs the Microsoft Graph application permission Policy.ReadWrite.ApplicationConfiguration"),
        "{msg}"
    );
}

#[tokio::test]
async fn missing_write_permission_is_forbidden_and_read_only_observe_works() {
    let e = env().await;
    e.permissions(&[perm::APPLICATION_READ_ALL]);
    let p = e.provider(&deps());
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    assert_eq!(o.changes.len(), 2);
    let err = p.converge(&offline()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Forbidden { .. }));
    assert!(
        err.to_string().contains("Application.ReadWrite.All"),
        "{err}"
    );
    e.assert_no_secrets(&err);
}

#[tokio::test]
async fn token_is_renewed_once_on_401() {
    let e = env().await;
    let p = e.provider(&deps());
    p.converge(&offline()).await.unwrap();
    assert_eq!(e.sim.counters().token_requests(), 1);
    e.sim.expire_tokens();
    e.sim.reset_counters();
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    assert!(o.changes.is_empty());
    let c = e.sim.counters();
    assert_eq!(c.token_requests(), 1);
    assert_eq!(c.with_status(401), 1);
    assert_eq!(e.sim.live_tokens(), 1);
}

#[tokio::test]
async fn throttling_is_surfaced_with_retry_after_and_survived() {
    let e = env().await;
    let p = e.provider(&deps());
    e.sim.fail_next(1, 429, Some(30));
    let err = p.converge(&offline()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));
    assert!(err.is_transient());
    e.sim.fail_next(1, 503, Some(20));
    let err = p.converge(&offline()).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(20)));
    e.sim.fail_next(1, 504, Some(4));
    let err = p.converge(&offline()).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(4)));
    e.sim.fail_next(1, 502, None);
    let err = p.converge(&offline()).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Unreachable { .. }) && err.is_transient(),
        "{err:?}"
    );
    assert_eq!(e.sim.writes(), 0);
    let applied = p.converge(&offline()).await.unwrap();
    assert!(applied.observation.changes.is_empty());
    assert_eq!(e.app()["isFallbackPublicClient"], json!(false));
}

#[tokio::test]
async fn a_404_right_after_a_write_is_retried() {
    let e = env_with(SimConfig {
        replication_delay: true,
        ..SimConfig::default()
    })
    .await;
    e.permissions(&[
        perm::APPLICATION_READWRITE_ALL,
        perm::POLICY_READWRITE_APPLICATIONCONFIGURATION,
    ]);
    let p = e.provider(&deps());
    let applied = p.converge(&with_access_token(3600)).await.unwrap();
    assert!(applied.observation.changes.is_empty());
    let c = e.sim.counters();
    assert_eq!(
        c.by_route.get(&("GET".into(), APP_ROUTE.into(), 404)),
        Some(&1),
        "{c:?}"
    );
    assert_eq!(
        c.by_route.get(&(
            "POST".into(),
            "/v1.0/applications/{id}/tokenLifetimePolicies/$ref".into(),
            404
        )),
        Some(&1),
        "the assignment of the new policy is retried"
    );
    assert_eq!(e.sim.assigned_policies(&e.tenant, &e.app_id).len(), 1);
    assert_eq!(e.sim.token_lifetime_policies(&e.tenant).len(), 1);
    // Without a write, a 404 is not retried and names what to check.
    let other = EntraIdSpec {
        application_id: "11111111-2222-4333-8444-555555555555".into(),
        ..e.spec()
    };
    let p = providers::entra::connect(&other, Some(e.creds("1", &e.secret())), &deps()).unwrap();
    e.sim.reset_counters();
    let err = p.observe_plan(&offline()).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::ClientNotFound { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("11111111-2222-4333-8444-555555555555") && msg.contains(&e.tenant),
        "{msg}"
    );
    assert!(
        msg.contains("Application.Read.All") && msg.contains("Application.ReadWrite.All"),
        "{msg}"
    );
    assert_eq!(e.sim.counters().calls("GET", APP_ROUTE), 1);
}

#[tokio::test]
async fn wrong_credentials_fail_naming_the_secret_only() {
    let e = env().await;
    let p = providers::entra::connect(&e.spec(), Some(e.creds("1", "wrong-secret-xyz")), &deps())
        .unwrap();
    let err = p.observe_plan(&offline()).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::AuthenticationFailed { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("\"graph-admin\"") && msg.contains("AADSTS7000215"),
        "{msg}"
    );
    assert!(!msg.contains("Trace ID"), "{msg}");
    e.assert_no_secrets(&err);

    // Missing keys name the keys, not values.
    let data = BTreeMap::from([("client-id".to_string(), e.mgmt.as_bytes().to_vec())]);
    let err = providers::entra::connect(
        &e.spec(),
        Some(Credentials::new("graph-admin", "1", data)),
        &deps(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, ProviderError::InvalidSecret { .. })
            && err.to_string().contains("client-secret")
    );

    // A rotated Secret (new resourceVersion) is used at once.
    e.sim
        .set_management_secret(&e.tenant, &e.mgmt, "rotated-secret-1");
    let deps = deps();
    let p = providers::entra::connect(&e.spec(), Some(e.creds("2", "rotated-secret-1")), &deps)
        .unwrap();
    p.observe_plan(&offline()).await.unwrap();

    // Unknown tenant.
    let other = EntraIdSpec {
        tenant_id: "99999999-2222-4333-8444-555555555555".into(),
        ..e.spec()
    };
    let p = providers::entra::connect(&other, Some(e.creds("1", &e.secret())), &deps).unwrap();
    let err = p.observe_plan(&offline()).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::ClientNotFound { .. })
            && err.to_string().contains("AADSTS90002"),
        "{err}"
    );
    e.assert_no_secrets(&err);
}

#[tokio::test]
async fn permission_ids_come_from_graph_with_well_known_fallback() {
    // Ids published by Graph's service principal win.
    let e = env().await;
    let custom = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    e.sim
        .set_graph_scope_id(&e.tenant, "offline_access", custom);
    e.provider(&deps()).converge(&offline()).await.unwrap();
    let rra = e.app()["requiredResourceAccess"].clone();
    assert_eq!(
        rra[0]["resourceAccess"].as_array().unwrap().last().unwrap(),
        &json!({"id": custom, "type": "Scope"})
    );

    // Application.ReadWrite.OwnedBy reads every service principal, Microsoft Graph's included
    // (permissions reference), so the ids still come from Graph. It may not read grants: they are
    // asked for (refused) and admin consent is not reported. It writes the app it owns.
    let e = env().await;
    e.permissions(&[perm::APPLICATION_READWRITE_OWNEDBY]);
    e.sim.add_owner(&e.tenant, &e.app_id, &e.mgmt);
    e.sim
        .set_graph_scope_id(&e.tenant, "offline_access", custom);
    let applied = e.provider(&deps()).converge(&offline()).await.unwrap();
    assert!(applied.observation.findings.is_empty());
    let c = e.sim.counters();
    assert_eq!(
        c.calls("GET", "/v1.0/servicePrincipals(appId='{appId}')"),
        2,
        "{c:?}"
    );
    assert_eq!(
        c.by_route
            .get(&("GET".into(), "/v1.0/oauth2PermissionGrants".into(), 403)),
        Some(&2),
        "{c:?}"
    );
    let rra = e.app()["requiredResourceAccess"].clone();
    assert_eq!(
        rra[0]["resourceAccess"].as_array().unwrap().last().unwrap(),
        &json!({"id": custom, "type": "Scope"})
    );
    e.assert_bodies_valid();
}

#[tokio::test]
async fn missing_admin_consent_is_reported_when_readable() {
    let e = env().await;
    let p = e.provider(&deps());
    // Without DelegatedPermissionGrant.Read.All the grants are not read: silently skipped.
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    assert!(o.findings.is_empty());
    assert_eq!(
        e.sim
            .counters()
            .calls("GET", "/v1.0/oauth2PermissionGrants"),
        1
    );

    e.consented("openid profile email User.Read");
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    assert_eq!(o.findings.len(), 1, "{:?}", o.findings);
    assert_eq!(
        (o.findings[0].reason, o.findings[0].blocking),
        ("ConsentMissing", false)
    );
    assert!(
        o.findings[0].message.contains("offline_access")
            && !o.findings[0].message.contains("openid,")
    );

    e.sim
        .add_permission_grant(&e.tenant, &e.app_id, "AllPrincipals", "offline_access");
    assert!(
        p.observe_plan(&offline())
            .await
            .unwrap()
            .observation
            .findings
            .is_empty()
    );

    e.sim.remove_service_principal(&e.tenant, &e.app_id);
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    assert_eq!(o.findings[0].reason, "ConsentMissing");
    assert!(o.findings[0].message.contains("no enterprise application"));
}

#[tokio::test]
async fn sandbox_seed_describes_before_and_after() {
    let e = env().await;
    let before: BTreeMap<String, String> = e.sim.describe_client().into_iter().collect();
    assert_eq!(
        before["Microsoft Graph delegated permissions"],
        "User.Read, openid, profile, email"
    );
    assert_eq!(
        before["isFallbackPublicClient (allow public client flows)"],
        "true"
    );
    assert_eq!(before["web.redirectUris"], CALLBACK);
    e.provider(&deps()).converge(&offline()).await.unwrap();
    let after: BTreeMap<String, String> = e.sim.describe_client().into_iter().collect();
    assert_eq!(
        after["Microsoft Graph delegated permissions"],
        "User.Read, openid, profile, email, offline_access"
    );
    assert_eq!(
        after["isFallbackPublicClient (allow public client flows)"],
        "false"
    );
}

#[tokio::test]
async fn timeouts_are_unreachable() {
    let e = env().await;
    let deps = common::provider::deps_timing_out(Duration::from_millis(300));
    let p = e.provider(&deps);
    p.observe_plan(&offline()).await.unwrap();
    e.sim.set_latency(Duration::from_secs(2));
    let err = p.observe_plan(&offline()).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Unreachable { .. }) && err.is_transient(),
        "{err:?}"
    );
    e.assert_no_secrets(&err);
    e.sim.set_latency(Duration::ZERO);
    p.observe_plan(&offline()).await.unwrap();
}

#[tokio::test]
async fn forbidden_reads_name_the_permission_exactly() {
    let e = env().await;
    e.permissions(&[]);
    let err = e
        .provider(&deps())
        .observe_plan(&offline())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Microsoft Entra ID refused to read the app registration: Authorization_RequestDenied: Insufficient privileges to complete the operation; the management app of Secret \"graph-admin\" needs one of the Microsoft Graph application permissions Application.Read.All, Application.ReadWrite.OwnedBy (which reads every app registration) or Application.ReadWrite.All with admin consent in tenant {}",
            e.tenant
        )
    );
    e.assert_no_secrets(&err);
}

#[tokio::test]
async fn the_graph_catalogue_and_the_service_principal_id_are_shared_per_tenant() {
    let e = env().await;
    e.consented("openid profile email offline_access");
    let shared = deps();
    let sp_reads = || {
        e.sim
            .counters()
            .calls("GET", "/v1.0/servicePrincipals(appId='{appId}')")
    };
    e.provider(&shared).observe_plan(&offline()).await.unwrap();
    assert_eq!(sp_reads(), 2, "Microsoft Graph's and the app's");
    // The next reconcile (a new provider object with the same dependencies) reads neither,
    // but still reads the app and its grants.
    let grants = e
        .sim
        .counters()
        .calls("GET", "/v1.0/oauth2PermissionGrants");
    e.provider(&shared).observe_plan(&offline()).await.unwrap();
    assert_eq!(sp_reads(), 2);
    assert_eq!(
        e.sim
            .counters()
            .calls("GET", "/v1.0/oauth2PermissionGrants"),
        grants + 1
    );
    // Separate dependencies start from scratch.
    e.provider(&deps()).observe_plan(&offline()).await.unwrap();
    assert_eq!(sp_reads(), 4);
    // Without any grant, the remembered service principal is checked before consent is
    // reported missing.
    e.sim.remove_service_principal(&e.tenant, &e.app_id);
    let o = e
        .provider(&shared)
        .observe_plan(&offline())
        .await
        .unwrap()
        .observation;
    assert_eq!(sp_reads(), 5);
    assert!(o.findings[0].message.contains("no enterprise application"));
}

fn add_policies(e: &Env, names: &[&str], lifetime: &str) -> Vec<String> {
    let definition = format!(
        "{{\"TokenLifetimePolicy\":{{\"Version\":1,\"AccessTokenLifetime\":\"{lifetime}\"}}}}"
    );
    names
        .iter()
        .map(|n| e.sim.add_token_lifetime_policy(&e.tenant, n, &definition))
        .collect()
}

#[tokio::test]
async fn grants_are_read_page_by_page_and_only_tenant_wide_ones() {
    let e = env().await;
    e.consented("openid");
    // Tenant-wide consent split over several grants (several pages of two) ...
    for scope in ["profile", "email", "User.Read", "offline_access"] {
        e.sim
            .add_permission_grant(&e.tenant, &e.app_id, "AllPrincipals", scope);
    }
    // ... and far more per-user consents than the page cap could hold: filtered out by Graph.
    for _ in 0..150 {
        e.sim
            .add_permission_grant(&e.tenant, &e.app_id, "Principal", "offline_access");
    }
    let p = e.provider(&deps());
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    assert!(o.findings.is_empty(), "{:?}", o.findings);
    assert_eq!(
        e.sim
            .counters()
            .calls("GET", "/v1.0/oauth2PermissionGrants"),
        3,
        "five tenant-wide grants in pages of two"
    );

    // Bounded: a collection longer than the page cap is a Protocol error, not an endless loop.
    e.sim.set_page_size(1);
    for _ in 0..50 {
        e.sim
            .add_permission_grant(&e.tenant, &e.app_id, "AllPrincipals", "openid");
    }
    e.sim.reset_counters();
    let err = p.observe_plan(&offline()).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Protocol { .. }) && err.to_string().contains("50 pages"),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(
        e.sim
            .counters()
            .calls("GET", "/v1.0/oauth2PermissionGrants"),
        50
    );
}

#[tokio::test]
async fn the_operator_policy_is_found_among_many_by_name_never_duplicated() {
    let e = env().await;
    e.permissions(&[
        perm::APPLICATION_READWRITE_ALL,
        perm::POLICY_READWRITE_APPLICATIONCONFIGURATION,
    ]);
    let others: Vec<String> = (0..9).map(|i| format!("corp policy {i}")).collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    add_policies(&e, &others, "04:00:00");
    let name = format!("oidc-refresh-operator {}", e.app_id);
    let ours = add_policies(&e, &[&name], "03:00:00")[0].clone();
    let p = e.provider(&deps());
    p.converge(&with_access_token(3600)).await.unwrap();
    assert_eq!(
        e.sim
            .counters()
            .calls("POST", "/v1.0/policies/tokenLifetimePolicies"),
        0,
        "no second policy"
    );
    assert_eq!(
        e.sim
            .counters()
            .calls("GET", "/v1.0/policies/tokenLifetimePolicies"),
        1,
        "looked up by displayName, not by reading every policy of the tenant"
    );
    assert_eq!(e.sim.token_lifetime_policies(&e.tenant).len(), 10);
    let assigned = e.sim.assigned_policies(&e.tenant, &e.app_id);
    assert_eq!(assigned.len(), 1);
    assert_eq!(assigned[0]["id"], json!(ours));
    assert_eq!(
        assigned[0]["definition"],
        json!(["{\"TokenLifetimePolicy\":{\"Version\":1,\"AccessTokenLifetime\":\"01:00:00\"}}"])
    );
    e.assert_bodies_valid();
}

#[tokio::test]
async fn a_stale_read_back_does_not_fail_an_accepted_write() {
    let e = env().await;
    // A few stale reads: read back again until Graph shows the write.
    e.sim.set_stale_reads(3);
    let p = e.provider(&deps());
    let applied = p.converge(&offline()).await.unwrap();
    assert!(applied.observation.changes.is_empty());
    assert_eq!(applied.actions.len(), 2, "{:?}", applied.actions);
    assert_eq!(applied.observation.settings.offline_access, Some(true));
    let c = e.sim.counters();
    assert_eq!(c.calls("PATCH", PATCH_ROUTE), 1);
    assert!(c.calls("GET", APP_ROUTE) >= 3, "{c:?}");

    // Still stale after every read-back: the write (2xx) counts as done for this pass, its
    // actions are kept for the Event, and the pending changes stay in the result so that the
    // next pass verifies.
    let e = env().await;
    e.sim.set_stale_reads(100);
    let p = e.provider(&deps());
    let started = std::time::Instant::now();
    let applied = p.converge(&offline()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(applied.actions.len(), 2, "{:?}", applied.actions);
    assert!(!applied.observation.changes.is_empty());
    let c = e.sim.counters();
    assert_eq!(c.calls("PATCH", PATCH_ROUTE), 1);
    assert_eq!(c.calls("GET", APP_ROUTE), 6, "one read and five read-backs");
    assert_eq!(e.app()["isFallbackPublicClient"], json!(false));
}

#[tokio::test]
async fn an_assignment_a_stale_read_does_not_show_is_not_posted_twice() {
    let e = env().await;
    e.permissions(&[
        perm::APPLICATION_READWRITE_ALL,
        perm::POLICY_READWRITE_APPLICATIONCONFIGURATION,
    ]);
    let name = format!("oidc-refresh-operator {}", e.app_id);
    let id = add_policies(&e, &[&name], "03:00:00")[0].clone();
    e.sim.set_stale_reads(30);
    let shared = deps();
    let p = e.provider(&shared);
    let first = p.converge(&with_access_token(3600)).await.unwrap();
    assert!(
        first
            .actions
            .iter()
            .any(|a| a.contains("assigned token lifetime policy")),
        "{:?}",
        first.actions
    );
    // The next pass still reads the app without its policy: it plans the assignment again,
    // and Graph's 400 "already exist" for the same reference counts as done.
    let second = e.provider(&shared).converge(&with_access_token(3600)).await;
    assert!(second.is_ok(), "{second:?}");
    let c = e.sim.counters();
    let ref_route = "/v1.0/applications/{id}/tokenLifetimePolicies/$ref";
    assert_eq!(
        c.by_route.get(&("POST".into(), ref_route.into(), 204)),
        Some(&1),
        "{c:?}"
    );
    assert_eq!(
        c.by_route.get(&("POST".into(), ref_route.into(), 400)),
        Some(&1),
        "{c:?}"
    );
    assert_eq!(c.calls("POST", "/v1.0/policies/tokenLifetimePolicies"), 0);
    let assigned = e.sim.assigned_policies(&e.tenant, &e.app_id);
    assert_eq!(assigned.len(), 1);
    assert_eq!(assigned[0]["id"], json!(id));
    assert_eq!(e.sim.token_lifetime_policies(&e.tenant).len(), 1);
}

#[tokio::test]
async fn a_policy_created_but_not_listed_yet_is_assigned_not_created_again() {
    let e = env().await;
    e.permissions(&[
        perm::APPLICATION_READWRITE_ALL,
        perm::POLICY_READWRITE_APPLICATIONCONFIGURATION,
    ]);
    // Graph does not show the new policy for a while: the assignment fails this pass.
    e.sim.set_stale_reads(10);
    let shared = deps();
    let err = e
        .provider(&shared)
        .converge(&with_access_token(3600))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::NotPersisted { .. }) && err.is_transient(),
        "{err:?}"
    );
    assert_eq!(e.sim.token_lifetime_policies(&e.tenant).len(), 1);
    // The next pass lists no policy by that name yet, but assigns the one it created.
    e.provider(&shared)
        .converge(&with_access_token(3600))
        .await
        .unwrap();
    assert_eq!(
        e.sim
            .counters()
            .calls("POST", "/v1.0/policies/tokenLifetimePolicies"),
        1
    );
    assert_eq!(
        e.sim.token_lifetime_policies(&e.tenant).len(),
        1,
        "no duplicate"
    );
    assert_eq!(e.sim.assigned_policies(&e.tenant, &e.app_id).len(), 1);
}

#[tokio::test]
async fn key_credentials_are_read_without_the_throttled_select() {
    let e = env().await;
    let soon = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * 5))
        .unwrap();
    e.edit(|a| {
        a.insert("passwordCredentials".into(), json!([]));
        a.insert(
            "keyCredentials".into(),
            json!([sim_entra::key_credential("coder-cert", "Verify", soon)]),
        );
    });
    // Graph's budget for $select=keyCredentials is used up: the provider does not need it.
    e.sim.set_key_credentials_per_minute(0);
    let p = e.provider(&deps());
    for _ in 0..3 {
        let o = p.observe_plan(&offline()).await.unwrap().observation;
        let found: Vec<(&str, bool)> = o.findings.iter().map(|f| (f.reason, f.blocking)).collect();
        assert_eq!(found, [("ClientCertificateExpiring", false)]);
    }
    assert_eq!(e.sim.counters().with_status(429), 0);
    // A 429 on that read is Throttled with Graph's wait.
    e.sim.fail_next(1, 429, Some(17));
    let err = p.observe_plan(&offline()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
}

#[tokio::test]
async fn an_app_managed_by_bicep_stalls_naming_what_to_declare() {
    let e = env().await;
    e.edit(|a| {
        a.insert("uniqueName".into(), json!("coder-oidc"));
    });
    let p = e.provider(&deps());
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    let blocking: Vec<_> = o.findings.iter().filter(|f| f.blocking).collect();
    assert_eq!(blocking.len(), 1, "{:?}", o.findings);
    assert_eq!(blocking[0].reason, "ManagedByBicep");
    let msg = &blocking[0].message;
    for needle in [
        "Bicep",
        "'coder-oidc'",
        "requiredResourceAccess",
        GRAPH,
        OFFLINE,
        "(offline_access)",
        "isFallbackPublicClient: false",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing in {msg}");
    }
    assert_eq!(e.sim.writes(), 0);
    // Once the template declares it, nothing conflicts.
    e.edit(|a| {
        a.insert("isFallbackPublicClient".into(), json!(false));
        a["requiredResourceAccess"][0]["resourceAccess"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": OFFLINE, "type": "Scope"}));
    });
    let o = p.observe_plan(&offline()).await.unwrap().observation;
    assert!(o.changes.is_empty() && o.findings.is_empty(), "{o:?}");
}
