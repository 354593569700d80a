//! The Keycloak provider against the Keycloak simulator (`sim-keycloak`).

use std::sync::Arc;
use std::time::Duration;

use oidc_refresh_operator::crd::{KeycloakSpec, Rotation};
use oidc_refresh_operator::providers::{
    self, Credentials, DesiredSettings, IdentityProvider, ProviderDeps, ProviderError,
};
use serde_json::{Value, json};
use sim_keycloak::{SimConfig, SimHandle};

mod common;
use common::provider::{credentials, deps, init};

const REALM: &str = "coder";
const OPERATOR_SECRET: &str = "op-secret-5f2b9c";
const CODER_SECRET: &str = "coder-client-secret-8d1e";
const ADMIN_PASSWORD: &str = "admin-password-77aa";
const ALL_ROLES: [&str; 3] = ["view-clients", "manage-clients", "view-realm"];

/// Coder's client as an admin would have it before the operator: refresh tokens off, the
/// offline_access scope unlinked, plus fields that must survive (mappers, unknown fields).
fn coder_client() -> Value {
    let mut c = sim_keycloak::stock_client("coder");
    let o = c.as_object_mut().unwrap();
    o.insert("secret".into(), json!(CODER_SECRET));
    o.insert("name".into(), json!("Coder"));
    o.insert(
        "redirectUris".into(),
        json!([
            "https://coder.example.com/api/v2/users/oidc/callback",
            "https://coder.example.com/*"
        ]),
    );
    o.insert("webOrigins".into(), json!(["+"]));
    o.insert(
        "protocolMappers".into(),
        json!([{"id": "5d0c8e3e-0000-4000-8000-000000000001", "name": "groups", "protocol": "openid-connect",
                "protocolMapper": "oidc-group-membership-mapper", "consentRequired": false,
                "config": {"full.path": "false", "claim.name": "groups", "id.token.claim": "true"}}]),
    );
    o.insert(
        "futureKeycloakField".into(),
        json!({"nested": [1, 2, {"x": null}]}),
    );
    let a = o.get_mut("attributes").unwrap().as_object_mut().unwrap();
    a.insert("use.refresh.tokens".into(), json!("false"));
    a.insert("pkce.code.challenge.method".into(), json!("S256"));
    a.insert("client.session.idle.timeout".into(), json!(""));
    c
}

async fn sim_with(config: SimConfig) -> SimHandle {
    init();
    let sim = sim_keycloak::start(config).await.unwrap();
    sim.add_realm(REALM);
    sim.add_client(REALM, coder_client());
    sim.unlink_client_scope(REALM, "coder", "offline_access");
    sim.add_service_account(REALM, "coder-operator", OPERATOR_SECRET, REALM, &ALL_ROLES);
    sim
}

async fn sim() -> SimHandle {
    sim_with(SimConfig::default()).await
}

fn spec(sim: &SimHandle) -> KeycloakSpec {
    KeycloakSpec {
        url: sim.base_url(),
        realm: REALM.into(),
        client_id: "coder".into(),
        credentials_secret: "keycloak-admin".into(),
        auth_realm: None,
        allow_realm_changes: None,
    }
}

fn creds(version: &str, pairs: &[(&str, &str)]) -> Credentials {
    credentials("keycloak-admin", version, pairs)
}

fn operator_creds() -> Credentials {
    creds(
        "1",
        &[
            ("client-id", "coder-operator"),
            ("client-secret", OPERATOR_SECRET),
        ],
    )
}

fn connect(
    spec: &KeycloakSpec,
    creds: Credentials,
    deps: &ProviderDeps,
) -> Arc<dyn IdentityProvider> {
    providers::keycloak::connect(spec, Some(creds), deps).unwrap()
}

fn wanted() -> DesiredSettings {
    DesiredSettings {
        offline_access: true,
        lifetime: None,
        idle_timeout: Some(Duration::from_secs(86400)),
        rotation: None,
        access_token_lifetime: Some(Duration::from_secs(3600)),
    }
}

/// No secret value in an error's Display or Debug.
fn assert_no_secrets(e: &ProviderError) {
    common::provider::assert_no_secrets(
        e,
        &[
            OPERATOR_SECRET,
            CODER_SECRET,
            ADMIN_PASSWORD,
            "wrong-secret-xyz",
        ],
    );
}

fn assert_bodies_valid(sim: &SimHandle) -> usize {
    common::provider::assert_bodies_valid(sim.validate_recorded_bodies())
}

#[tokio::test]
async fn first_convergence_with_client_credentials_touches_nothing_else() {
    let sim = sim().await;
    let before = sim.client(REALM, "coder").unwrap();
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);

    // Observe reads and plans; it writes nothing.
    let plan = kc.observe_plan(&wanted()).await.unwrap();
    let obs = plan.observation.clone();
    assert_eq!(sim.writes(), 0);
    let changes: Vec<String> = obs.changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        changes,
        vec![
            "attribute use.refresh.tokens: false -> true",
            "attribute client.offline.session.idle.timeout: unset -> 86400",
            "attribute access.token.lifespan: unset -> 3600",
            "client scope offline_access: not linked -> optional",
        ]
    );
    assert_eq!(obs.settings.offline_access, Some(false));
    assert_eq!(obs.settings.refresh_token_grant, Some(false));
    assert_eq!(obs.coder.add_scopes, vec!["offline_access".to_string()]);
    assert!(obs.coder.params.is_empty());
    assert_eq!(obs.findings, vec![]);
    let c = sim.counters();
    assert_eq!(
        c.reads(),
        4,
        "realm, client (with its linked scope names), the realm's client scopes, discovery"
    );

    // Apply writes the plan (built from what observe read moments before), then reads back.
    sim.reset_counters();
    let applied = kc.apply(&plan).await.unwrap();
    assert_eq!(
        sim.counters().reads(),
        2,
        "only the read-back: realm and client (discovery is shared per realm)"
    );
    assert_eq!(
        applied.actions,
        vec![
            "set client attribute use.refresh.tokens to true (was false)",
            "set client attribute client.offline.session.idle.timeout to 86400 (was unset)",
            "set client attribute access.token.lifespan to 3600 (was unset)",
            "linked client scope offline_access to the client as optional",
        ]
    );
    assert_eq!(applied.observation.changes, vec![]);
    let s = &applied.observation.settings;
    assert_eq!(s.refresh_token_grant, Some(true));
    assert_eq!(s.offline_access, Some(true));
    assert_eq!(s.idle_timeout, Some(Duration::from_secs(86400)));
    assert_eq!(s.access_token_lifetime, Some(Duration::from_secs(3600)));
    assert_eq!(s.lifetime, None, "offline max lifespan is off in the realm");
    assert_eq!(s.rotation, Some(Rotation::Reuse));
    assert_eq!(sim.writes(), 2, "one client PUT and one scope link");

    // The exact representation: only our three attributes and the scope link differ, byte for
    // byte (order of fields included), secret and redirect URIs unchanged.
    let after = sim.client(REALM, "coder").unwrap();
    let mut expected = before.clone();
    let attrs = expected["attributes"].as_object_mut().unwrap();
    // Sent back as read, an empty attribute is deleted by Keycloak (it meant "unset" anyway).
    attrs.remove("client.session.idle.timeout");
    attrs.insert("use.refresh.tokens".into(), json!("true"));
    attrs.insert("client.offline.session.idle.timeout".into(), json!("86400"));
    attrs.insert("access.token.lifespan".into(), json!("3600"));
    expected["optionalClientScopes"] =
        json!(["address", "microprofile-jwt", "phone", "offline_access"]);
    assert_eq!(
        serde_json::to_string(&after).unwrap(),
        serde_json::to_string(&expected).unwrap()
    );
    assert_eq!(after["secret"], json!(CODER_SECRET));
    assert_eq!(after["redirectUris"], before["redirectUris"]);
    assert_eq!(
        sim.client_scope_links(REALM, "coder"),
        (
            vec!["acr", "basic", "email", "profile", "roles", "web-origins"]
                .into_iter()
                .map(String::from)
                .collect(),
            vec!["address", "microprofile-jwt", "offline_access", "phone"]
                .into_iter()
                .map(String::from)
                .collect()
        )
    );

    // A second apply reads and writes nothing.
    sim.reset_counters();
    let again = kc.converge(&wanted()).await.unwrap();
    assert_eq!(again.actions, Vec::<String>::new());
    assert_eq!(again.observation, applied.observation);
    let c = sim.counters();
    assert_eq!(c.writes(), 0);
    assert_eq!(c.token_requests(), 0, "the cached token is reused");
    assert_eq!(
        c.reads(),
        2,
        "realm and client; nothing to write, nothing to read back"
    );

    // Another provider object (the next reconcile, or another policy of the realm) shares the
    // discovery document; one with its own dependencies reads it.
    sim.reset_counters();
    let next = connect(&spec(&sim), operator_creds(), &deps);
    next.observe_plan(&wanted()).await.unwrap();
    assert_eq!(sim.counters().reads(), 2, "realm and client");
    let elsewhere = connect(&spec(&sim), operator_creds(), &self::deps());
    elsewhere.observe_plan(&wanted()).await.unwrap();
    assert_eq!(
        sim.counters()
            .calls("GET", "/realms/{realm}/.well-known/openid-configuration"),
        1
    );
    assert!(assert_bodies_valid(&sim) >= 1);
}

#[tokio::test]
async fn password_grant_from_master_and_legacy_auth_prefix() {
    let sim = sim_with(SimConfig {
        path_prefix: "/auth".into(),
        ..SimConfig::default()
    })
    .await;
    sim.add_admin_user("master", "ops-admin", ADMIN_PASSWORD, REALM, &ALL_ROLES);
    let mut spec = spec(&sim);
    spec.auth_realm = Some("master".into());
    assert!(sim.base_url().ends_with("/auth"));
    spec.url = format!("{}/", sim.base_url());
    let deps = deps();
    let kc = connect(
        &spec,
        creds(
            "7",
            &[("username", "ops-admin"), ("password", ADMIN_PASSWORD)],
        ),
        &deps,
    );
    let applied = kc.converge(&wanted()).await.unwrap();
    assert_eq!(applied.actions.len(), 4);
    assert_eq!(applied.observation.settings.offline_access, Some(true));
    assert_eq!(sim.counters().calls("POST", sim_keycloak::TOKEN_ROUTE), 1);
    sim.reset_counters();
    assert_eq!(kc.converge(&wanted()).await.unwrap().actions.len(), 0);
    assert_eq!(sim.writes(), 0);

    // A wrong password names the Secret and the auth realm, never the value.
    let kc = connect(
        &spec,
        creds(
            "8",
            &[("username", "ops-admin"), ("password", "wrong-secret-xyz")],
        ),
        &deps,
    );
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "Keycloak rejected the admin credentials: the token endpoint of realm \"master\" answered HTTP 401 (invalid_grant: Invalid user credentials); check username and password in Secret \"keycloak-admin\", that they belong to realm \"master\" (spec.provider.keycloak.authRealm)"
    );
    assert_no_secrets(&e);
}

#[tokio::test]
async fn drift_is_detected_and_corrected() {
    let sim = sim().await;
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    kc.converge(&wanted()).await.unwrap();

    // Someone switches refresh tokens off in the admin console.
    sim.update_client(REALM, "coder", |c| {
        c["attributes"]["use.refresh.tokens"] = json!("false");
    });
    sim.reset_counters();
    let obs = kc.observe_plan(&wanted()).await.unwrap().observation;
    assert_eq!(
        obs.changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["attribute use.refresh.tokens: false -> true"]
    );
    assert_eq!(obs.settings.refresh_token_grant, Some(false));
    assert_eq!(sim.writes(), 0, "observe writes nothing");
    let applied = kc.converge(&wanted()).await.unwrap();
    assert_eq!(
        applied.actions,
        vec!["set client attribute use.refresh.tokens to true (was false)"]
    );
    assert_eq!(sim.writes(), 1);
    assert_eq!(
        sim.client(REALM, "coder").unwrap()["attributes"]["use.refresh.tokens"],
        json!("true")
    );

    // The scope is unlinked in the console: linked again.
    sim.unlink_client_scope(REALM, "coder", "offline_access");
    let applied = kc.converge(&wanted()).await.unwrap();
    assert_eq!(
        applied.actions,
        vec!["linked client scope offline_access to the client as optional"]
    );
}

#[tokio::test]
async fn realm_changes_need_the_opt_in() {
    let sim = sim().await;
    sim.set_admin_roles(
        REALM,
        "coder-operator",
        REALM,
        &[
            "view-clients",
            "manage-clients",
            "view-realm",
            "manage-realm",
        ],
    );
    let deps = deps();
    let desired = DesiredSettings {
        lifetime: Some(Duration::from_secs(720 * 3600)),
        rotation: Some(Rotation::Rotate),
        ..wanted()
    };
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    let realm_before = sim.realm(REALM).unwrap();
    for result in [
        kc.observe_plan(&desired).await.map(|_| ()),
        kc.converge(&desired).await.map(|_| ()),
    ] {
        let e = result.unwrap_err();
        assert!(matches!(e, ProviderError::Unsupported { .. }));
        assert_eq!(
            e.to_string(),
            "Keycloak cannot honour this policy: the policy needs realm-wide settings of realm \"coder\", which affect every client in it: set revokeRefreshToken to true (now false), refreshTokenMaxReuse to 5 (now 0) (admin console: Realm settings, Sessions and Tokens tabs), or set spec.provider.keycloak.allowRealmChanges: true to let the operator change them"
        );
    }
    assert_eq!(sim.writes(), 0);

    let mut opted_in = spec(&sim);
    opted_in.allow_realm_changes = Some(true);
    let kc = connect(&opted_in, operator_creds(), &deps);
    let applied = kc.converge(&desired).await.unwrap();
    assert_eq!(
        &applied.actions[..2],
        &[
            "set realm coder revokeRefreshToken to true (was false)",
            "set realm coder refreshTokenMaxReuse to 5 (was 0)"
        ]
    );
    let realm = sim.realm(REALM).unwrap();
    assert_eq!(
        realm["offlineSessionMaxLifespanEnabled"],
        json!(false),
        "the client attribute is enforced without the realm switch"
    );
    assert_eq!(realm["revokeRefreshToken"], json!(true));
    assert_eq!(
        realm["offlineSessionMaxLifespan"],
        json!(5_184_000),
        "untouched"
    );
    assert_eq!(realm["ssoSessionIdleTimeout"], json!(1800), "untouched");
    let s = &applied.observation.settings;
    assert_eq!(s.lifetime, Some(Duration::from_secs(720 * 3600)));
    assert_eq!(s.rotation, Some(Rotation::Rotate));
    assert_eq!(
        sim.client(REALM, "coder").unwrap()["attributes"]["client.offline.session.max.lifespan"],
        json!("2592000")
    );
    // The realm PUT sends back the whole representation read, with only the two fields changed:
    // Keycloak resets realm settings a body leaves out (device authorization, CIBA, PAR).
    let realm_puts: Vec<Value> = sim
        .recorded_bodies()
        .into_iter()
        .filter(|b| b.route == "/admin/realms/{realm}")
        .map(|b| b.body)
        .collect();
    let mut expected = realm_before.clone();
    expected["revokeRefreshToken"] = json!(true);
    expected["refreshTokenMaxReuse"] = json!(5);
    assert_eq!(realm_puts, vec![expected]);
    let after = sim.realm(REALM).unwrap();
    for (k, v) in realm_before.as_object().unwrap() {
        if k != "revokeRefreshToken" && k != "refreshTokenMaxReuse" {
            assert_eq!(after.get(k), Some(v), "realm {k} unchanged");
        }
    }
    sim.reset_counters();
    assert_eq!(kc.converge(&desired).await.unwrap().actions.len(), 0);
    assert_eq!(sim.writes(), 0);
    assert_bodies_valid(&sim);
}

/// Signs a user in, then redeems the refresh token twice at the same moment, as two of Coder's
/// requests (or replicas) do when the access token has expired: the two token-endpoint answers
/// (Ok: the new refresh token; Err: the error description).
async fn concurrent_refreshes(sim: &SimHandle) -> [Result<String, String>; 2] {
    let (status, v) = user_grant(sim, "openid offline_access").await;
    assert_eq!(status, 200, "{v}");
    let rt = v["refresh_token"].as_str().unwrap().to_string();
    let refresh = || async {
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/realms/{REALM}/protocol/openid-connect/token",
                sim.base_url()
            ))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "coder"),
                ("client_secret", CODER_SECRET),
                ("refresh_token", rt.as_str()),
            ])
            .send()
            .await
            .unwrap();
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.unwrap();
        if ok {
            Ok(v["refresh_token"].as_str().unwrap().to_string())
        } else {
            Err(v["error_description"]
                .as_str()
                .unwrap_or_default()
                .to_string())
        }
    };
    let (a, b) = tokio::join!(refresh(), refresh());
    [a, b]
}

/// `rotation: Rotate` rotates with a reuse window (realm `refreshTokenMaxReuse` 5), so two
/// concurrent refreshes of one token both succeed; `RotateStrict` is one-time use, with a
/// warning, and one of them fails. Without `allowRealmChanges` the window is not written and a
/// strict realm is a warning, not a stall.
#[tokio::test]
async fn rotate_survives_concurrent_refreshes_and_strict_warns() {
    let sim = sim().await;
    sim.set_admin_roles(
        REALM,
        "coder-operator",
        REALM,
        &[
            "view-clients",
            "manage-clients",
            "view-realm",
            "manage-realm",
        ],
    );
    let deps = deps();
    let rotate = DesiredSettings {
        rotation: Some(Rotation::Rotate),
        ..wanted()
    };
    let strict_warnings = |o: &providers::Observation| -> Vec<String> {
        o.findings
            .iter()
            .filter(|f| f.reason == "StrictRefreshTokenRotation" && !f.blocking)
            .map(|f| f.message.clone())
            .collect()
    };

    // A realm an administrator made strictly one-time; no allowRealmChanges: a warning.
    sim.update_realm(REALM, |r| {
        r.insert("revokeRefreshToken".into(), json!(true));
        r.insert("refreshTokenMaxReuse".into(), json!(0));
    });
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    let applied = kc.converge(&rotate).await.unwrap();
    assert_eq!(sim.realm(REALM).unwrap()["refreshTokenMaxReuse"], json!(0));
    let w = strict_warnings(&applied.observation);
    assert_eq!(w.len(), 1, "{:?}", applied.observation.findings);
    assert!(w[0].contains("allowRealmChanges"), "{}", w[0]);
    assert_eq!(
        applied.observation.settings.rotation,
        Some(Rotation::RotateStrict)
    );
    let [a, b] = concurrent_refreshes(&sim).await;
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");

    // With allowRealmChanges: the plan says what it sets and why, apply writes exactly that.
    let mut opted_in = spec(&sim);
    opted_in.allow_realm_changes = Some(true);
    let kc = connect(&opted_in, operator_creds(), &deps);
    let plan = kc.observe_plan(&rotate).await.unwrap();
    let realm_changes: Vec<_> = plan
        .observation
        .changes
        .iter()
        .filter(|c| c.target.starts_with("Keycloak realm"))
        .collect();
    assert_eq!(realm_changes.len(), 1);
    assert_eq!(realm_changes[0].to_string(), "refreshTokenMaxReuse: 0 -> 5");
    assert!(realm_changes[0].why.contains("concurrent refreshes"));
    sim.reset_counters();
    let applied = kc.apply(&plan).await.unwrap();
    assert!(
        applied
            .actions
            .contains(&"set realm coder refreshTokenMaxReuse to 5 (was 0)".to_string()),
        "{:?}",
        applied.actions
    );
    assert_eq!(sim.realm(REALM).unwrap()["refreshTokenMaxReuse"], json!(5));
    assert!(strict_warnings(&applied.observation).is_empty());
    assert_eq!(
        applied.observation.settings.rotation,
        Some(Rotation::Rotate)
    );
    let [a, b] = concurrent_refreshes(&sim).await;
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");

    // RotateStrict: one-time use, warned about; the loser of two concurrent refreshes fails.
    let strict = DesiredSettings {
        rotation: Some(Rotation::RotateStrict),
        ..wanted()
    };
    let applied = kc.converge(&strict).await.unwrap();
    assert_eq!(sim.realm(REALM).unwrap()["refreshTokenMaxReuse"], json!(0));
    let w = strict_warnings(&applied.observation);
    assert!(w.len() == 1 && w[0].contains("RotateStrict"), "{w:?}");
    let [a, b] = concurrent_refreshes(&sim).await;
    let refused = if a.is_ok() { b } else { a };
    assert_eq!(
        refused,
        Err("Maximum allowed refresh token reuse exceeded".into())
    );
    assert_bodies_valid(&sim);
}

/// Signs a user in to Coder's client with the password grant and `scope`, as Keycloak would
/// for Coder's code flow: the token endpoint's answer (status, body).
async fn user_grant(sim: &SimHandle, scope: &str) -> (u16, Value) {
    if sim.client(REALM, "coder").unwrap()["directAccessGrantsEnabled"] != json!(true) {
        sim.update_client(REALM, "coder", |c| {
            c.insert("directAccessGrantsEnabled".into(), json!(true));
        });
        sim.add_admin_user(REALM, "alice", ADMIN_PASSWORD, REALM, &[]);
    }
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/realms/{REALM}/protocol/openid-connect/token",
            sim.base_url()
        ))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "coder"),
            ("client_secret", CODER_SECRET),
            ("username", "alice"),
            ("password", ADMIN_PASSWORD),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn full_scope_off_maps_the_offline_access_role() {
    let sim = sim().await;
    sim.update_client(REALM, "coder", |c| {
        c.insert("fullScopeAllowed".into(), json!(false));
    });
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);

    // Keycloak's built-in offline_access client scope carries the offline_access role in its own
    // scope mappings, and a requested scope brings them into the token: linking it is enough.
    let obs = kc.observe_plan(&wanted()).await.unwrap().observation;
    assert!(
        obs.changes.iter().all(|c| !c.setting.contains("mapping")),
        "{:?}",
        obs.changes
    );
    let applied = kc.converge(&wanted()).await.unwrap();
    assert_eq!(
        applied.actions.last().unwrap(),
        "linked client scope offline_access to the client as optional"
    );
    assert_eq!(
        sim.client_realm_scope_mappings(REALM, "coder"),
        Vec::<String>::new(),
        "no redundant role mapping"
    );
    assert_eq!(applied.observation.settings.offline_access, Some(true));
    let (status, token) = user_grant(&sim, "openid offline_access").await;
    assert_eq!(status, 200, "{token}");
    assert!(token["refresh_token"].is_string());

    // A realm whose offline_access scope was stripped of the role: the role is mapped to the
    // client.
    sim.set_client_scope_realm_roles(REALM, "offline_access", &[]);
    assert_eq!(
        user_grant(&sim, "openid offline_access").await.0,
        400,
        "not_allowed"
    );
    let obs = kc.observe_plan(&wanted()).await.unwrap().observation;
    assert_eq!(obs.settings.offline_access, Some(false));
    assert_eq!(
        obs.changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["realm scope mapping offline_access: absent -> present"]
    );
    let applied = kc.converge(&wanted()).await.unwrap();
    assert_eq!(
        applied.actions,
        vec!["added realm role offline_access to the client's scope mappings"]
    );
    assert_eq!(
        sim.client_realm_scope_mappings(REALM, "coder"),
        vec!["offline_access".to_string()]
    );
    assert_eq!(applied.observation.settings.offline_access, Some(true));
    assert_eq!(user_grant(&sim, "openid offline_access").await.0, 200);
    sim.reset_counters();
    assert!(kc.converge(&wanted()).await.unwrap().actions.is_empty());
    assert_eq!(sim.writes(), 0);
    let bodies: Vec<_> = sim
        .recorded_bodies()
        .into_iter()
        .filter(|b| b.route.ends_with("/scope-mappings/realm"))
        .collect();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0].method, "POST");
    assert_eq!(bodies[0].body[0]["name"], json!("offline_access"));
    assert_bodies_valid(&sim);
}

#[tokio::test]
async fn lifetime_is_the_client_attribute_without_the_realm_switch() {
    let sim = sim().await;
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    let week = Duration::from_secs(7 * 86400);
    let desired = DesiredSettings {
        lifetime: Some(week),
        idle_timeout: None,
        ..wanted()
    };
    // The realm switch offlineSessionMaxLifespanEnabled is off (Keycloak's default): Keycloak
    // 22+ enforces a positive client attribute on its own, so no realm change and no opt-in.
    let realm_before = sim.realm(REALM).unwrap();
    assert_eq!(
        realm_before["offlineSessionMaxLifespanEnabled"],
        json!(false)
    );
    let applied = kc.converge(&desired).await.unwrap();
    assert!(
        applied.actions.iter().all(|a| !a.contains("realm")),
        "{:?}",
        applied.actions
    );
    assert_eq!(sim.realm(REALM).unwrap(), realm_before);
    assert_eq!(
        sim.client(REALM, "coder").unwrap()["attributes"]["client.offline.session.max.lifespan"],
        json!("604800")
    );
    assert_eq!(applied.observation.settings.lifetime, Some(week));
    // The token endpoint agrees: the offline session ends after the week (the realm's idle
    // timeout is 30 days).
    let (status, token) = user_grant(&sim, "openid offline_access").await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["refresh_expires_in"], json!(604_800));

    // With the switch already on, the realm's offlineSessionMaxLifespan caps the client: below
    // the lifetime it needs raising, which is a realm change.
    sim.update_realm(REALM, |r| {
        r.insert("offlineSessionMaxLifespanEnabled".into(), json!(true));
        r.insert("offlineSessionMaxLifespan".into(), json!(86400));
    });
    let e = kc.observe_plan(&desired).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("set offlineSessionMaxLifespan to 604800 (now 86400)"),
        "{e}"
    );
    assert!(
        !e.to_string().contains("offlineSessionMaxLifespanEnabled"),
        "{e}"
    );
}

#[tokio::test]
async fn authorization_services_survive_the_update() {
    let sim = sim().await;
    // A body without "authorizationServicesEnabled": true turns them off: the operator sends
    // the whole representation back.
    sim.update_client(REALM, "coder", |c| {
        c.insert("serviceAccountsEnabled".into(), json!(true));
        c.insert("authorizationServicesEnabled".into(), json!(true));
    });
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    let applied = kc.converge(&wanted()).await.unwrap();
    assert!(!applied.actions.is_empty());
    let after = sim.client(REALM, "coder").unwrap();
    assert_eq!(after["authorizationServicesEnabled"], json!(true));
    assert_eq!(after["serviceAccountsEnabled"], json!(true));
    assert_eq!(after["attributes"]["use.refresh.tokens"], json!("true"));
    assert_bodies_valid(&sim);
}

#[tokio::test]
async fn query_clients_without_view_clients_is_a_permission_problem() {
    let sim = sim().await;
    // query-clients may list clients, but Keycloak leaves out those it cannot view: 200 [].
    sim.set_admin_roles(
        REALM,
        "coder-operator",
        REALM,
        &["query-clients", "view-realm"],
    );
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert!(matches!(e, ProviderError::Forbidden { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "Keycloak refused to find client \"coder\": Keycloak lists no client at all in realm \"coder\" to the admin account of Secret \"keycloak-admin\", although every realm has built-in clients: the account may query clients (query-clients) but not view them; assign it the realm-management client role view-clients (or realm-admin), or with fine-grained admin permissions the view permission on client \"coder\""
    );
    assert_no_secrets(&e);
    assert_eq!(sim.writes(), 0);

    // With view-clients, an unknown clientId is what it is.
    sim.set_admin_roles(REALM, "coder-operator", REALM, &ALL_ROLES);
    let mut s = spec(&sim);
    s.client_id = "ghost".into();
    let e = connect(&s, operator_creds(), &deps)
        .observe_plan(&wanted())
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::ClientNotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn offline_access_hidden_from_discovery_still_works() {
    let sim = sim().await;
    // include.in.openid.provider.metadata=false leaves the scope out of scopes_supported; it
    // can still be requested.
    sim.set_client_scope_attribute(
        REALM,
        "offline_access",
        "include.in.openid.provider.metadata",
        Some("false"),
    );
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    let applied = kc.converge(&wanted()).await.unwrap();
    let found: Vec<(&str, bool)> = applied
        .observation
        .findings
        .iter()
        .map(|f| (f.reason, f.blocking))
        .collect();
    assert_eq!(found, vec![("OfflineAccessNotAdvertised", false)]);
    assert!(
        applied.observation.findings[0]
            .message
            .contains("include.in.openid.provider.metadata"),
        "{}",
        applied.observation.findings[0].message
    );
    assert_eq!(applied.observation.settings.offline_access, Some(true));
    let (status, token) = user_grant(&sim, "openid offline_access").await;
    assert_eq!(status, 200, "{token}");
}

#[tokio::test]
async fn a_realm_imported_by_keycloak_config_cli_is_not_fought_over() {
    let sim = sim().await;
    sim.update_realm(REALM, |r| {
        let attrs = r
            .entry("attributes")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap();
        attrs.insert(
            "de.adorsys.keycloak.config.import-checksum-default".into(),
            json!("6292be0628c50ff8fc02bd4092f48a731133e4802e158e7bc2ba174524b4ccf1"),
        );
    });
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    let obs = kc.observe_plan(&wanted()).await.unwrap().observation;
    let blocking: Vec<_> = obs.findings.iter().filter(|f| f.blocking).collect();
    assert_eq!(blocking.len(), 1, "{:?}", obs.findings);
    assert_eq!(blocking[0].reason, "ManagedByKeycloakConfigCli");
    for needle in [
        "keycloak-config-cli",
        "de.adorsys.keycloak.config.import-checksum-default",
        "clients[clientId=coder]",
        "add offline_access to optionalClientScopes",
        "\"use.refresh.tokens\": \"true\"",
        "\"access.token.lifespan\": \"3600\"",
    ] {
        assert!(
            blocking[0].message.contains(needle),
            "{needle}: {}",
            blocking[0].message
        );
    }
    assert_eq!(sim.writes(), 0);

    // Once its import carries the settings, the operator only observes.
    sim.update_client(REALM, "coder", |c| {
        let a = c["attributes"].as_object_mut().unwrap();
        a.insert("use.refresh.tokens".into(), json!("true"));
        a.insert("client.offline.session.idle.timeout".into(), json!("86400"));
        a.insert("access.token.lifespan".into(), json!("3600"));
    });
    sim.link_client_scope(REALM, "coder", "offline_access", false);
    let obs = kc.observe_plan(&wanted()).await.unwrap().observation;
    assert_eq!(obs.changes, vec![]);
    assert_eq!(obs.findings, vec![]);
}

#[tokio::test]
async fn expired_token_is_renewed_once_and_rotated_secret_is_picked_up() {
    let sim = sim().await;
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    kc.observe_plan(&wanted()).await.unwrap();
    assert_eq!(sim.counters().token_requests(), 1);
    sim.expire_tokens();
    sim.reset_counters();
    kc.observe_plan(&wanted()).await.unwrap();
    let c = sim.counters();
    assert_eq!(c.with_status(401), 1, "one 401, then a fresh token");
    assert_eq!(c.token_requests(), 1);

    // The admin Secret is rotated: the old secret stops working, the new Secret version works
    // with the same deps (no restart).
    sim.set_client_secret(REALM, "coder-operator", "rotated-secret-1");
    sim.expire_tokens();
    let rotated = creds(
        "2",
        &[
            ("client-id", "coder-operator"),
            ("client-secret", "rotated-secret-1"),
        ],
    );
    let kc2 = connect(&spec(&sim), rotated, &deps);
    kc2.observe_plan(&wanted()).await.unwrap();
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::AuthenticationFailed { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("Secret \"keycloak-admin\""));
    assert!(!e.to_string().contains("rotated-secret-1"));
}

#[tokio::test]
async fn missing_roles_answer_forbidden_naming_the_role() {
    let sim = sim().await;
    let deps = deps();
    sim.set_admin_roles(REALM, "coder-operator", REALM, &["view-clients"]);
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert!(matches!(e, ProviderError::Forbidden { .. }));
    assert!(
        e.to_string().starts_with(
            "Keycloak refused to read the token settings of realm \"coder\": Keycloak gave only the brief realm representation"
        ),
        "{e}"
    );
    assert!(e.to_string().contains("view-realm"));

    sim.set_admin_roles(
        REALM,
        "coder-operator",
        REALM,
        &["view-clients", "view-realm"],
    );
    let e = kc.converge(&wanted()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "Keycloak refused to update client \"coder\": the admin account of Secret \"keycloak-admin\" lacks the realm-management client role manage-clients for realm \"coder\" (HTTP 403 Forbidden); assign it to the account's service-account user (or user) in realm \"coder\", or assign realm-admin. The operator needs view-clients, manage-clients and view-realm"
    );
    assert_no_secrets(&e);
    assert_eq!(sim.writes(), 1, "the refused PUT");
    assert_eq!(sim.counters().with_status(403), 1);

    sim.set_admin_roles(REALM, "coder-operator", REALM, &[]);
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert!(matches!(e, ProviderError::Forbidden { .. }), "{e}");
    assert!(e.to_string().contains("view-realm"), "{e}");

    // realm-admin covers everything.
    sim.set_admin_roles(REALM, "coder-operator", REALM, &["realm-admin"]);
    kc.converge(&wanted()).await.unwrap();
}

#[tokio::test]
async fn missing_realm_and_missing_client_are_told_apart() {
    let sim = sim().await;
    sim.add_service_account("master", "ops", OPERATOR_SECRET, "nope", &["realm-admin"]);
    let deps = deps();
    let ops = creds(
        "1",
        &[("client-id", "ops"), ("client-secret", OPERATOR_SECRET)],
    );

    let mut s = spec(&sim);
    s.realm = "nope".into();
    s.auth_realm = Some("master".into());
    let e = connect(&s, ops, &deps)
        .observe_plan(&wanted())
        .await
        .unwrap_err();
    match &e {
        ProviderError::ClientNotFound { what, detail, .. } => {
            assert_eq!(what, "realm \"nope\"");
            assert!(
                detail.contains("check spec.provider.keycloak.realm"),
                "{detail}"
            );
        }
        other => panic!("{other:?}"),
    }

    // The auth realm itself is missing (authRealm defaults to realm).
    let mut s = spec(&sim);
    s.realm = "nope".into();
    let e = connect(&s, operator_creds(), &deps)
        .observe_plan(&wanted())
        .await
        .unwrap_err();
    match &e {
        ProviderError::ClientNotFound { what, .. } => {
            assert_eq!(what, "realm \"nope\" (where the admin credentials live)")
        }
        other => panic!("{other:?}"),
    }

    let mut s = spec(&sim);
    s.client_id = "ghost".into();
    let e = connect(&s, operator_creds(), &deps)
        .observe_plan(&wanted())
        .await
        .unwrap_err();
    assert_no_secrets(&e);
    match &e {
        ProviderError::ClientNotFound { what, detail, .. } => {
            assert_eq!(what, "client \"ghost\" in realm \"coder\"");
            assert!(detail.contains("spec.provider.keycloak.clientId"));
            assert!(detail.contains("never creates clients"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.writes(), 0);
}

#[tokio::test]
async fn throttling_and_server_errors() {
    let sim = sim().await;
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    // A Retry-After longer than a call may wait is surfaced for the controller to requeue.
    sim.fail_next(1, 429, Some(30));
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    assert!(e.is_transient());
    assert_eq!(
        e.to_string(),
        "Keycloak is throttling requests (read realm \"coder\"); retrying after 30s"
    );
    assert_no_secrets(&e);

    sim.fail_next(1, 502, None);
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unreachable { .. }), "{e}");
    assert!(e.is_transient());
    assert!(e.to_string().contains("HTTP 502 Bad Gateway"), "{e}");

    // 503 with Retry-After is throttling too; afterwards it recovers.
    sim.fail_next(1, 503, Some(20));
    let e = kc.converge(&wanted()).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(20)));
    kc.converge(&wanted()).await.unwrap();
}

#[tokio::test]
async fn short_throttling_is_waited_out_inside_one_call() {
    let sim = sim().await;
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    // Two 429s with Retry-After: 1: the call waits and retries, and the apply succeeds.
    sim.fail_next(2, 429, Some(1));
    let started = std::time::Instant::now();
    let applied = kc.converge(&wanted()).await.expect("throttling waited out");
    assert!(applied.observation.changes.is_empty());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "honoured Retry-After"
    );
    assert_eq!(sim.counters().with_status(429), 2);
    // Persistent throttling gives up after the retry budget and surfaces Throttled.
    sim.fail_next(10, 429, Some(1));
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert!(matches!(e, ProviderError::Throttled { .. }), "{e}");
    assert_eq!(
        sim.counters().with_status(429),
        2 + 4,
        "one call and three retries"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn timeouts_are_unreachable() {
    let sim = sim().await;
    let deps = common::provider::deps_timing_out(Duration::from_millis(200));
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    sim.set_latency(Duration::from_secs(2));
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
}

#[tokio::test]
async fn bad_secrets_are_invalid_secret_without_values() {
    let sim = sim().await;
    let deps = deps();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("client-id", "coder-operator")],
            "Keycloak credentials: Secret \"keycloak-admin\" has no non-empty client-secret (it has: client-id)",
        ),
        (
            &[("password", ADMIN_PASSWORD)],
            "Keycloak credentials: Secret \"keycloak-admin\" has no non-empty username (it has: password)",
        ),
        (
            &[("token", OPERATOR_SECRET)],
            "Keycloak credentials: Secret \"keycloak-admin\" needs client-id + client-secret (client credentials of a client with a service account) or username + password (password grant through admin-cli); it has: token",
        ),
        (
            &[
                ("client-id", "coder-operator"),
                ("client-secret", OPERATOR_SECRET),
                ("ca.crt", "not a certificate"),
            ],
            "Keycloak credentials: ca.crt holds no PEM certificate",
        ),
    ];
    for (pairs, message) in cases {
        let e = providers::keycloak::connect(&spec(&sim), Some(creds("1", pairs)), &deps)
            .err()
            .expect("connect fails");
        assert!(matches!(e, ProviderError::InvalidSecret { .. }));
        assert_eq!(e.to_string(), message);
        assert_no_secrets(&e);
    }
    let e = providers::keycloak::connect(&spec(&sim), None, &deps)
        .err()
        .unwrap();
    assert!(matches!(e, ProviderError::InvalidSecret { .. }));

    // A wrong client secret: AuthenticationFailed naming the Secret and the auth realm.
    let kc = connect(
        &spec(&sim),
        creds(
            "1",
            &[
                ("client-id", "coder-operator"),
                ("client-secret", "wrong-secret-xyz"),
            ],
        ),
        &deps,
    );
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::AuthenticationFailed { .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "Keycloak rejected the admin credentials: the token endpoint of realm \"coder\" answered HTTP 401 (unauthorized_client: Invalid client or Invalid client credentials): the client named by client-id exists in realm \"coder\" but client-secret in Secret \"keycloak-admin\" is wrong; copy the client's current secret (Credentials tab) into the Secret"
    );
    assert_no_secrets(&e);

    // An unknown client id: invalid_client.
    let kc = connect(
        &spec(&sim),
        creds(
            "1",
            &[
                ("client-id", "nobody"),
                ("client-secret", "wrong-secret-xyz"),
            ],
        ),
        &deps,
    );
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("realm \"coder\" has no enabled client with the client-id"),
        "{e}"
    );
    assert_no_secrets(&e);

    // The right secret of a client without service accounts.
    sim.update_client(REALM, "coder-operator", |c| {
        c.insert("serviceAccountsEnabled".into(), json!(false));
    });
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::AuthenticationFailed { .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(
            "(unauthorized_client: Client not enabled to retrieve service account): the client named by client-id in Secret \"keycloak-admin\" has service accounts turned off; enable Service accounts roles"
        ),
        "{e}"
    );
    assert_no_secrets(&e);
}

#[tokio::test]
async fn discovery_and_missing_scope_are_findings() {
    let sim = sim().await;
    sim.remove_client_scope(REALM, "offline_access");
    sim.set_grant_types_supported(REALM, Some(vec!["authorization_code".into()]));
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    let obs = kc.observe_plan(&wanted()).await.unwrap().observation;
    let found: Vec<(&str, bool)> = obs
        .findings
        .iter()
        .map(|f| (f.reason, f.blocking))
        .collect();
    assert_eq!(
        found,
        vec![
            ("RefreshGrantNotAdvertised", false),
            ("OfflineAccessScopeMissing", true),
        ]
    );
    assert!(obs.changes.iter().all(|c| !c.setting.contains("scope")));
    // Without offline access nothing blocks and the session attributes are used.
    let online = DesiredSettings {
        offline_access: false,
        idle_timeout: Some(Duration::from_secs(1200)),
        ..wanted()
    };
    let applied = kc.converge(&online).await.unwrap();
    assert!(applied.observation.findings.iter().all(|f| !f.blocking));
    assert!(applied.observation.coder.add_scopes.is_empty());
    let attrs = sim.client(REALM, "coder").unwrap()["attributes"].clone();
    assert_eq!(attrs["client.session.idle.timeout"], json!("1200"));
    assert_eq!(attrs.get("client.offline.session.idle.timeout"), None);
}

#[tokio::test]
async fn every_body_sent_validates_against_the_contract() {
    // A run that exercises every write the provider can make.
    let sim = sim().await;
    sim.update_client(REALM, "coder", |c| {
        c.insert("fullScopeAllowed".into(), json!(false));
    });
    // A realm whose offline_access scope lacks the role, so the role mapping is written too.
    sim.set_client_scope_realm_roles(REALM, "offline_access", &[]);
    sim.set_admin_roles(REALM, "coder-operator", REALM, &["realm-admin"]);
    let mut s = spec(&sim);
    s.allow_realm_changes = Some(true);
    let deps = deps();
    let kc = connect(&s, operator_creds(), &deps);
    let desired = DesiredSettings {
        offline_access: true,
        lifetime: Some(Duration::from_secs(90 * 86400)),
        idle_timeout: Some(Duration::from_secs(45 * 86400)),
        rotation: Some(Rotation::Rotate),
        access_token_lifetime: Some(Duration::from_secs(600)),
    };
    let applied = kc.converge(&desired).await.unwrap();
    assert_eq!(applied.observation.changes, vec![]);
    assert_eq!(
        applied.observation.settings.lifetime,
        Some(Duration::from_secs(90 * 86400))
    );
    assert_eq!(
        applied.observation.settings.idle_timeout,
        Some(Duration::from_secs(45 * 86400))
    );
    let routes: Vec<(String, String)> = sim
        .recorded_bodies()
        .into_iter()
        .map(|b| (b.method, b.route))
        .collect();
    assert_eq!(
        routes,
        vec![
            ("PUT".to_string(), "/admin/realms/{realm}".to_string()),
            (
                "PUT".to_string(),
                "/admin/realms/{realm}/clients/{id}".to_string()
            ),
            (
                "POST".to_string(),
                "/admin/realms/{realm}/clients/{id}/scope-mappings/realm".to_string()
            ),
        ]
    );
    assert_eq!(assert_bodies_valid(&sim), 3);
    // The scope link carries no body.
    assert_eq!(
        sim.counters().calls(
            "PUT",
            "/admin/realms/{realm}/clients/{id}/optional-client-scopes/{scope}"
        ),
        1
    );
}

#[tokio::test]
async fn sandbox_seed_converges() {
    init();
    let sim = sim_keycloak::start(SimConfig::default()).await.unwrap();
    let seed = sim.seed_sandbox();
    let before = sim.describe_client();
    assert!(before.contains(&("use.refresh.tokens".to_string(), "false".to_string())));
    let spec: KeycloakSpec = serde_json::from_value(seed.spec["keycloak"].clone()).unwrap();
    let data: Vec<(&str, &str)> = seed
        .secret_data
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let deps = deps();
    let kc = connect(&spec, creds("1", &data), &deps);
    let desired = DesiredSettings {
        lifetime: Some(Duration::from_secs(720 * 3600)),
        rotation: Some(Rotation::Rotate),
        ..wanted()
    };
    let applied = kc.converge(&desired).await.unwrap();
    assert_eq!(applied.observation.settings.offline_access, Some(true));
    let after = sim.describe_client();
    assert!(after.contains(&("use.refresh.tokens".to_string(), "true".to_string())));
    assert!(after.contains(&(
        "offline_access client scope".to_string(),
        "optional".to_string()
    )));
    assert!(after.contains(&(
        "offline_access role in the offline_access client scope".to_string(),
        "yes".to_string()
    )));
    assert!(
        after.contains(&(
            "offline_access role in scope mappings".to_string(),
            "no".to_string()
        )),
        "the scope carries the role: no mapping on the client"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_write_that_does_not_stick_is_not_persisted() {
    let sim = sim().await;
    sim.ignore_client_updates(true);
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    let e = kc.converge(&wanted()).await.unwrap_err();
    assert!(matches!(e, ProviderError::NotPersisted { .. }));
    assert!(e.is_transient());
    assert_eq!(
        e.to_string(),
        "Keycloak accepted the change but reading it back shows these settings still differ: attribute use.refresh.tokens: false -> true; attribute client.offline.session.idle.timeout: unset -> 86400; attribute access.token.lifespan: unset -> 3600"
    );
    assert_no_secrets(&e);
    sim.ignore_client_updates(false);
    let applied = kc.converge(&wanted()).await.unwrap();
    assert_eq!(applied.actions.len(), 3, "the scope link had stuck already");
}

#[tokio::test]
async fn a_second_401_after_renewal_is_authentication_failed() {
    let sim = sim().await;
    let deps = deps();
    let kc = connect(&spec(&sim), operator_creds(), &deps);
    sim.fail_next(2, 401, None);
    let e = kc.observe_plan(&wanted()).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::AuthenticationFailed { .. }),
        "{e}"
    );
    assert!(
        e.to_string().starts_with(
            "Keycloak rejected the admin credentials: Keycloak answered 401 to read realm \"coder\" even with a fresh token from realm \"coder\""
        ),
        "{e}"
    );
    assert_no_secrets(&e);
    let c = sim.counters();
    assert_eq!(c.token_requests(), 2, "renewed exactly once");
    assert_eq!(c.with_status(401), 2);
}
