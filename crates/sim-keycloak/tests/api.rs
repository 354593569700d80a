//! The simulator over HTTP: status codes, error shapes, role checks and Keycloak's semantics.

use std::sync::Once;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sim_keycloak::{SimConfig, SimHandle, TOKEN_ROUTE};

fn client() -> reqwest::Client {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn sim() -> SimHandle {
    let sim = sim_keycloak::start(SimConfig::default()).await.unwrap();
    sim.add_realm("coder");
    let mut c = sim_keycloak::stock_client("coder");
    c["secret"] = json!("coder-secret");
    c["attributes"]["keep.me"] = json!("1");
    sim.add_client("coder", c);
    sim.add_service_account(
        "coder",
        "op",
        "op-secret",
        "coder",
        &["manage-clients", "view-realm"],
    );
    sim
}

async fn token(sim: &SimHandle, realm: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = client()
        .post(format!(
            "{}/realms/{realm}/protocol/openid-connect/token",
            sim.base_url()
        ))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn op_token(sim: &SimHandle) -> String {
    let (s, v) = token(
        sim,
        "coder",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "op"),
            ("client_secret", "op-secret"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    v["access_token"].as_str().unwrap().to_string()
}

async fn call(
    sim: &SimHandle,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut req = client()
        .request(method, format!("{}{path}", sim.base_url()))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

fn client_id(sim: &SimHandle, client_id: &str) -> String {
    sim.client("coder", client_id).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn token_endpoint_grants_and_errors() {
    let sim = sim().await;
    sim.add_admin_user("coder", "alice", "pw", "coder", &["view-clients"]);
    let (s, v) = token(
        &sim,
        "coder",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "op"),
            ("client_secret", "op-secret"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["expires_in"], json!(300));
    assert_eq!(v["token_type"], json!("Bearer"));
    let (s, v) = token(
        &sim,
        "coder",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "op"),
            ("client_secret", "nope"),
        ],
    )
    .await;
    assert_eq!(
        (s, v),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"}),
        ),
        "a wrong secret is unauthorized_client (ClientIdAndSecretAuthenticator)"
    );
    let (s, v) = token(
        &sim,
        "coder",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "coder"),
            ("client_secret", "coder-secret"),
        ],
    )
    .await;
    assert_eq!(
        (s, v["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized_client"))
    );
    let (s, _) = token(
        &sim,
        "coder",
        &[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", "alice"),
            ("password", "pw"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = token(
        &sim,
        "coder",
        &[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", "alice"),
            ("password", "x"),
        ],
    )
    .await;
    assert_eq!(
        (s, v),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_grant", "error_description": "Invalid user credentials"})
        )
    );
    let (s, v) = token(&sim, "nope", &[("grant_type", "client_credentials")]).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::NOT_FOUND,
            json!({"error": "Realm does not exist"})
        )
    );
    let (s, v) = token(&sim, "coder", &[]).await;
    assert_eq!(
        (s, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_request"))
    );
    assert_eq!(sim.counters().token_requests(), 7);
    assert_eq!(sim.counters().writes(), 0, "token requests are not writes");
    sim.shutdown().await;
}

#[tokio::test]
async fn admin_calls_check_tokens_realms_and_roles() {
    let sim = sim().await;
    let (s, b) = call(
        &sim,
        reqwest::Method::GET,
        "/admin/realms/coder/clients",
        "bogus",
        None,
    )
    .await;
    assert_eq!(
        (s, b.as_str()),
        (
            StatusCode::UNAUTHORIZED,
            r#"{"error":"HTTP 401 Unauthorized"}"#
        )
    );
    let t = op_token(&sim).await;
    let (s, _) = call(
        &sim,
        reqwest::Method::GET,
        "/admin/realms/coder/clients?clientId=coder",
        &t,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "manage-clients implies view-clients");
    let (s, b) = call(&sim, reqwest::Method::GET, "/admin/realms/nope", &t, None).await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::NOT_FOUND, r#"{"error":"Realm not found."}"#)
    );
    let (s, b) = call(
        &sim,
        reqwest::Method::PUT,
        "/admin/realms/coder",
        &t,
        Some(json!({"revokeRefreshToken": true})),
    )
    .await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::FORBIDDEN, r#"{"error":"HTTP 403 Forbidden"}"#)
    );
    // Without view-realm the realm comes back brief.
    sim.set_admin_roles("coder", "op", "coder", &["view-clients"]);
    let (s, b) = call(&sim, reqwest::Method::GET, "/admin/realms/coder", &t, None).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v.get("ssoSessionIdleTimeout"), None);
    assert_eq!(v["realm"], json!("coder"));
    sim.set_admin_roles("coder", "op", "coder", &["manage-realm"]);
    let (s, b) = call(
        &sim,
        reqwest::Method::PUT,
        "/admin/realms/coder",
        &t,
        Some(json!({"revokeRefreshToken": true, "realm": "coder"})),
    )
    .await;
    assert_eq!((s, b.as_str()), (StatusCode::NO_CONTENT, ""));
    let realm = sim.realm("coder").unwrap();
    assert_eq!(
        (
            realm["revokeRefreshToken"].clone(),
            realm["ssoSessionIdleTimeout"].clone()
        ),
        (json!(true), json!(1800))
    );
    // A token of another non-master realm may not manage this one.
    sim.add_realm("other");
    sim.add_service_account("other", "x", "x-secret", "coder", &["realm-admin"]);
    let (_, v) = token(
        &sim,
        "other",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "x"),
            ("client_secret", "x-secret"),
        ],
    )
    .await;
    let other = v["access_token"].as_str().unwrap().to_string();
    let (s, _) = call(
        &sim,
        reqwest::Method::GET,
        "/admin/realms/coder",
        &other,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Expired tokens answer 401.
    sim.expire_tokens();
    let (s, _) = call(&sim, reqwest::Method::GET, "/admin/realms/coder", &t, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(sim.live_tokens(), 0);
}

#[tokio::test]
async fn client_put_binds_like_jackson_merges_and_keeps_the_secret() {
    let sim = sim().await;
    let t = op_token(&sim).await;
    let id = client_id(&sim, "coder");
    let path = format!("/admin/realms/coder/clients/{id}");
    // Jackson coerces a boolean into a string attribute value: accepted and stored as "true".
    let (s, b) = call(
        &sim,
        reqwest::Method::PUT,
        &path,
        &t,
        Some(json!({"attributes": {"use.refresh.tokens": true}})),
    )
    .await;
    assert_eq!((s, b.as_str()), (StatusCode::NO_CONTENT, ""));
    assert_eq!(
        sim.client("coder", "coder").unwrap()["attributes"]["use.refresh.tokens"],
        json!("true")
    );
    // An unknown field is rejected (FAIL_ON_UNKNOWN_PROPERTIES), nothing is stored.
    let (s, b) = call(
        &sim,
        reqwest::Method::PUT,
        &path,
        &t,
        Some(json!({"newField": [1], "description": "y"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let err = serde_json::from_str::<Value>(&b).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with(r#"Unrecognized field "newField" (class org.keycloak.representations.idm.ClientRepresentation), not marked as ignorable"#),
        "{err}"
    );
    assert_eq!(
        sim.client("coder", "coder").unwrap()["description"],
        json!("")
    );
    // A value Jackson cannot coerce is rejected too.
    let (s, b) = call(
        &sim,
        reqwest::Method::PUT,
        &path,
        &t,
        Some(json!({"enabled": "maybe"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // Coercions, merge, deletion of a blank attribute, secret kept.
    let (s, b) = call(
        &sim,
        reqwest::Method::PUT,
        &path,
        &t,
        Some(
            json!({"attributes": {"use.refresh.tokens": "false", "keep.me": ""},
                    "description": "x", "enabled": "false", "notBefore": "5"}),
        ),
    )
    .await;
    assert_eq!((s, b.as_str()), (StatusCode::NO_CONTENT, ""));
    let c = sim.client("coder", "coder").unwrap();
    assert_eq!(
        c["secret"],
        json!("coder-secret"),
        "a PUT without secret keeps it"
    );
    assert!(
        c["attributes"].get("keep.me").is_none(),
        "an empty value deletes the attribute"
    );
    assert_eq!(c["attributes"]["use.refresh.tokens"], json!("false"));
    assert_eq!(
        c["attributes"]["post.logout.redirect.uris"],
        json!("+"),
        "attributes merge"
    );
    assert_eq!(c["description"], json!("x"));
    assert_eq!(c["enabled"], json!(false));
    assert_eq!(c["notBefore"], json!(5));
    let (s, b) = call(
        &sim,
        reqwest::Method::PUT,
        &path,
        &t,
        Some(json!({"clientId": "op"})),
    )
    .await;
    assert_eq!(
        (s, b.as_str()),
        (
            StatusCode::CONFLICT,
            r#"{"errorMessage":"Client already exists"}"#
        )
    );
    // Client validation runs after the update and rolls it back.
    let (s, b) = call(
        &sim,
        reqwest::Method::PUT,
        &path,
        &t,
        Some(json!({"rootUrl": "javascript:alert(1)", "description": "z"})),
    )
    .await;
    assert_eq!(
        (s, serde_json::from_str::<Value>(&b).unwrap()),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_input", "error_description": "Root URL uses an illegal scheme"})
        )
    );
    assert_eq!(
        sim.client("coder", "coder").unwrap()["description"],
        json!("x")
    );
    let (s, b) = call(
        &sim,
        reqwest::Method::PUT,
        "/admin/realms/coder/clients/nope",
        &t,
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (s, b.as_str()),
        (
            StatusCode::NOT_FOUND,
            r#"{"error":"Could not find client"}"#
        )
    );
    let recorded = sim.recorded_bodies();
    assert_eq!(
        recorded.len(),
        6,
        "the 404 is answered before the body is read"
    );
    assert_eq!(recorded[0].schema, "ClientRepresentation");
    // The strict contract check still flags what Keycloak merely coerces.
    let errors = sim.validate_recorded_bodies().unwrap_err();
    assert_eq!(
        errors[0],
        "PUT /admin/realms/{realm}/clients/{id} (ClientRepresentation): $.attributes.use.refresh.tokens: expected a string, got a boolean"
    );
}

#[tokio::test]
async fn scope_links_and_role_mappings() {
    let sim = sim().await;
    let t = op_token(&sim).await;
    let id = client_id(&sim, "coder");
    let (_, b) = call(
        &sim,
        reqwest::Method::GET,
        "/admin/realms/coder/client-scopes",
        &t,
        None,
    )
    .await;
    let scopes: Value = serde_json::from_str(&b).unwrap();
    let scope_id = |name: &str| {
        scopes
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == json!(name))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Linking a scope already linked as default is a silent no-op (Keycloak's addClientScopes).
    let profile = scope_id("profile");
    let (s, _) = call(
        &sim,
        reqwest::Method::PUT,
        &format!("/admin/realms/coder/clients/{id}/optional-client-scopes/{profile}"),
        &t,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (default, optional) = sim.client_scope_links("coder", "coder");
    assert!(default.contains(&"profile".to_string()) && !optional.contains(&"profile".to_string()));
    sim.unlink_client_scope("coder", "coder", "offline_access");
    let offline = scope_id("offline_access");
    let (s, _) = call(
        &sim,
        reqwest::Method::PUT,
        &format!("/admin/realms/coder/clients/{id}/optional-client-scopes/{offline}"),
        &t,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, b) = call(
        &sim,
        reqwest::Method::GET,
        &format!("/admin/realms/coder/clients/{id}/optional-client-scopes"),
        &t,
        None,
    )
    .await;
    assert!(b.contains("\"offline_access\""));
    let (s, b) = call(
        &sim,
        reqwest::Method::PUT,
        &format!("/admin/realms/coder/clients/{id}/optional-client-scopes/nope"),
        &t,
        None,
    )
    .await;
    assert_eq!(
        (s, b.as_str()),
        (
            StatusCode::NOT_FOUND,
            r#"{"error":"Client scope not found"}"#
        )
    );

    let (s, b) = call(
        &sim,
        reqwest::Method::GET,
        "/admin/realms/coder/roles/offline_access",
        &t,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let role: Value = serde_json::from_str(&b).unwrap();
    let mappings = format!("/admin/realms/coder/clients/{id}/scope-mappings/realm");
    let (s, _) = call(
        &sim,
        reqwest::Method::POST,
        &mappings,
        &t,
        Some(json!([{"id": "nope", "name": "x"}])),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &sim,
        reqwest::Method::POST,
        &mappings,
        &t,
        Some(json!([role.clone()])),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        sim.client_realm_scope_mappings("coder", "coder"),
        vec!["offline_access".to_string()]
    );
    let (_, b) = call(&sim, reqwest::Method::GET, &mappings, &t, None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()[0]["name"],
        json!("offline_access")
    );
    let (s, _) = call(
        &sim,
        reqwest::Method::DELETE,
        &mappings,
        &t,
        Some(json!([role])),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(sim.client_realm_scope_mappings("coder", "coder").is_empty());
    assert_eq!(sim.validate_recorded_bodies(), Ok(3));
    let c = sim.counters();
    assert_eq!(
        c.calls(
            "PUT",
            "/admin/realms/{realm}/clients/{id}/optional-client-scopes/{scope}"
        ),
        3
    );
    assert_eq!(c.writes(), 6);
}

/// The admin API reads the bearer token as `AppAuthManager.extractTokenStringFromAuthHeader`
/// does: the scheme in any case, any run of whitespace after it, exactly two parts.
#[tokio::test]
async fn bearer_scheme_is_case_insensitive_and_whitespace_separated() {
    let sim = sim().await;
    let t = op_token(&sim).await;
    let with_header = |value: String| {
        client()
            .get(format!("{}/admin/realms/coder", sim.base_url()))
            .header("authorization", value)
            .send()
    };
    for value in [
        format!("Bearer {t}"),
        format!("bearer {t}"),
        format!("BEARER {t}"),
        format!("Bearer  {t}"),
        format!("Bearer\t{t}"),
        format!(" Bearer {t} "),
    ] {
        let s = with_header(value.clone()).await.unwrap().status();
        assert_eq!(s, StatusCode::OK, "{value:?}");
    }
    for value in [
        format!("Bearer {t} x"),
        format!("Basic {t}"),
        format!("Bearer{t}"),
        "Bearer ".to_string(),
    ] {
        let s = with_header(value.clone()).await.unwrap().status();
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{value:?}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_failures_latency_counters_and_prefix() {
    let sim = sim_keycloak::start(SimConfig {
        path_prefix: "auth".into(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    assert!(sim.base_url().ends_with("/auth"));
    sim.add_realm("coder");
    sim.add_service_account("coder", "op", "op-secret", "coder", &["realm-admin"]);
    sim.fail_next(2, 429, Some(9));
    // The token endpoint is not an admin call: not failed.
    let t = op_token(&sim).await;
    for _ in 0..2 {
        let resp = client()
            .get(format!("{}/admin/realms/coder", sim.base_url()))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "9");
    }
    let (s, _) = call(&sim, reqwest::Method::GET, "/admin/realms/coder", &t, None).await;
    assert_eq!(s, StatusCode::OK);
    sim.fail_next(1, 503, None);
    let (s, b) = call(&sim, reqwest::Method::GET, "/admin/realms/coder", &t, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(b.contains("unknown_error"));
    let (s, _) = call(
        &sim,
        reqwest::Method::GET,
        "/realms/coder/.well-known/openid-configuration",
        &t,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let c = sim.counters();
    assert_eq!(
        c.by_route
            .get(&("GET".into(), "/admin/realms/{realm}".into(), 429)),
        Some(&2)
    );
    assert_eq!(
        c.by_route
            .get(&("GET".into(), "/admin/realms/{realm}".into(), 200)),
        Some(&1)
    );
    assert_eq!(c.calls("POST", TOKEN_ROUTE), 1);
    assert_eq!((c.reads(), c.writes(), c.total()), (5, 0, 6));
    // A HEAD is a read (in every simulator), never a write.
    let (s, _) = call(&sim, reqwest::Method::HEAD, "/admin/realms/coder", &t, None).await;
    assert_eq!(s, StatusCode::OK);
    let d = sim.counters().diff(&c);
    assert_eq!((d.reads(), d.writes(), d.total()), (1, 0, 1));
    sim.set_latency(Duration::from_millis(50));
    let (s, _) = call(&sim, reqwest::Method::GET, "/admin/realms/coder", &t, None).await;
    assert_eq!(s, StatusCode::OK);
    sim.shutdown().await;
    assert!(
        client()
            .get(format!("{}/admin/realms/coder", sim.base_url()))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn discovery_lists_grants_and_scopes() {
    let sim = sim().await;
    let v: Value = client()
        .get(format!(
            "{}/realms/coder/.well-known/openid-configuration",
            sim.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["issuer"],
        json!(format!("{}/realms/coder", sim.base_url()))
    );
    assert!(
        v["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("refresh_token"))
    );
    assert!(
        v["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("offline_access"))
    );
    sim.remove_client_scope("coder", "offline_access");
    let v: Value = client()
        .get(format!(
            "{}/realms/coder/.well-known/openid-configuration",
            sim.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !v["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("offline_access"))
    );
}

#[test]
fn route_templates() {
    assert_eq!(
        sim_keycloak::route_template("/admin/realms/coder/clients/abc"),
        "/admin/realms/{realm}/clients/{id}"
    );
    assert_eq!(
        sim_keycloak::route_template("/admin/realms/coder/clients"),
        "/admin/realms/{realm}/clients"
    );
    assert_eq!(
        sim_keycloak::route_template("/admin/realms/x/nothing"),
        "<unmatched>"
    );
}
