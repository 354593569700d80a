//! The simulator over HTTP: token endpoint, permission checks, Graph's PATCH semantics,
//! token lifetime policies, replication delay, failure injection and counters.

use std::sync::Once;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sim_entra::permissions as perm;
use sim_entra::{SimConfig, SimHandle, TOKEN_ROUTE};

const TENANT: &str = "11111111-1111-4111-8111-111111111111";
const APP: &str = "22222222-2222-4222-8222-222222222222";
const MGMT: &str = "33333333-3333-4333-8333-333333333333";
const SECRET: &str = "mgmt-secret";

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

async fn sim_with(config: SimConfig, perms: &[&str]) -> (SimHandle, String) {
    let sim = sim_entra::start(config).await.unwrap();
    sim.add_tenant(TENANT);
    let id = sim.add_application(TENANT, sim_entra::stock_application(APP, "Coder"));
    sim.add_management_app(TENANT, MGMT, SECRET, perms);
    (sim, id)
}

async fn sim(perms: &[&str]) -> (SimHandle, String) {
    sim_with(SimConfig::default(), perms).await
}

async fn token_request(
    sim: &SimHandle,
    tenant: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let resp = client()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", sim.base_url()))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn token(sim: &SimHandle) -> String {
    let scope = format!("{}/.default", sim.base_url());
    let (s, v) = token_request(
        sim,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", MGMT),
            ("client_secret", SECRET),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["token_type"], json!("Bearer"));
    assert_eq!(v["expires_in"], json!(3599));
    v["access_token"].as_str().unwrap().to_string()
}

async fn call(
    sim: &SimHandle,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = client()
        .request(method, format!("{}{path}", sim.base_url()))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, headers, v)
}

fn code(v: &Value) -> (&str, &str) {
    (
        v["error"]["code"].as_str().unwrap_or_default(),
        v["error"]["message"].as_str().unwrap_or_default(),
    )
}

#[tokio::test]
async fn token_endpoint_errors_look_like_entra() {
    let (sim, _) = sim(&[perm::APPLICATION_READWRITE_ALL]).await;
    let scope = "https://graph.microsoft.com/.default";
    let form = |id: &'static str, secret: &'static str, scope: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("scope", scope),
        ]
    };
    let (s, v) = token_request(&sim, TENANT, &form(MGMT, "nope", scope)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], json!("invalid_client"));
    assert_eq!(v["error_codes"], json!([7000215]));
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: Invalid client secret provided.")
    );
    let (s, v) = token_request(
        &sim,
        TENANT,
        &form("44444444-3333-4333-8333-333333333333", SECRET, scope),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );
    let (s, v) = token_request(
        &sim,
        "55555555-1111-4111-8111-111111111111",
        &form(MGMT, SECRET, scope),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS90002")
    );
    let (s, v) = token_request(
        &sim,
        TENANT,
        &form(MGMT, SECRET, "https://graph.microsoft.com/User.Read"),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let (s, _) = token_request(&sim, TENANT, &form(MGMT, SECRET, scope)).await;
    assert_eq!(s, StatusCode::OK, "the public-cloud scope is accepted too");
    let c = sim.counters();
    assert_eq!(c.token_requests(), 5);
    assert_eq!(c.writes(), 0, "token requests are not writes");
    assert!(
        sim.recorded_bodies().is_empty(),
        "token requests are never recorded"
    );
}

#[tokio::test]
async fn graph_needs_a_valid_token_and_permissions() {
    let (sim, id) = sim(&[perm::APPLICATION_READ_ALL]).await;
    let (s, _, v) = call(
        &sim,
        "bogus",
        Method::GET,
        &format!("/v1.0/applications/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (s, code(&v).0),
        (StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken")
    );
    let t = token(&sim).await;
    let (s, _, v) = call(
        &sim,
        &t,
        Method::GET,
        &format!("/v1.0/applications(appId='{APP}')?$select=id,appId,web"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["@odata.context", "id", "appId", "web"]);
    let (s, _, v) = call(
        &sim,
        &t,
        Method::PATCH,
        &format!("/v1.0/applications/{id}"),
        Some(json!({"notes": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        code(&v),
        (
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation."
        )
    );
    let (s, _, v) = call(&sim, &t, Method::GET, "/v1.0/oauth2PermissionGrants", None).await;
    assert_eq!(
        (s, code(&v).0),
        (StatusCode::FORBIDDEN, "Authorization_RequestDenied")
    );
    let (s, _, _) = call(
        &sim,
        &t,
        Method::GET,
        "/v1.0/policies/tokenLifetimePolicies",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, v) = call(
        &sim,
        &t,
        Method::GET,
        "/v1.0/applications(appId='66666666-2222-4222-8222-222222222222')",
        None,
    )
    .await;
    assert_eq!(
        (s, code(&v).0),
        (StatusCode::NOT_FOUND, "Request_ResourceNotFound")
    );
    sim.expire_tokens();
    let (s, _, v) = call(
        &sim,
        &t,
        Method::GET,
        &format!("/v1.0/applications/{id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(code(&v).1.contains("expired"));
}

#[tokio::test]
async fn patch_follows_graph_semantics() {
    let (sim, id) = sim(&[perm::APPLICATION_READWRITE_ALL]).await;
    let t = token(&sim).await;
    let path = format!("/v1.0/applications/{id}");
    let before = sim.application(TENANT, APP).unwrap();

    // Unknown property, wrong type, read-only property, invalid permission type.
    let (s, _, v) = call(
        &sim,
        &t,
        Method::PATCH,
        &path,
        Some(json!({"offlineAccess": true})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        code(&v),
        (
            "Request_BadRequest",
            "Property 'offlineAccess' does not exist on type 'microsoft.graph.application'."
        )
    );
    let (s, _, v) = call(
        &sim,
        &t,
        Method::PATCH,
        &path,
        Some(json!({"isFallbackPublicClient": "false"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _, v) = call(
        &sim,
        &t,
        Method::PATCH,
        &path,
        Some(json!({"passwordCredentials": []})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(code(&v).1.contains("addPassword"));
    let (s, _, _) = call(&sim, &t, Method::PATCH, &path, Some(json!({"requiredResourceAccess": [
        {"resourceAppId": "00000003-0000-0000-c000-000000000000", "resourceAccess": [{"id": "7427e0e9-2fba-42fe-b0c0-848c9e6a8182", "type": "Delegated"}]}]}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        sim.application(TENANT, APP).unwrap(),
        before,
        "rejected PATCHes change nothing"
    );

    // Collections are replaced as a whole; complex properties merge; 204 without a body.
    let rra = json!([{"resourceAppId": "797f4846-ba00-4fd7-ba43-dac1f8f63013",
                      "resourceAccess": [{"id": "41094075-9dad-400e-a0bd-54e686782033", "type": "Scope"}]}]);
    let (s, _, v) = call(
        &sim,
        &t,
        Method::PATCH,
        &path,
        Some(json!({"requiredResourceAccess": rra,
        "web": {"redirectUris": ["https://coder.example.com/api/v2/users/oidc/callback"]}})),
    )
    .await;
    assert_eq!((s, v), (StatusCode::NO_CONTENT, Value::Null));
    let after = sim.application(TENANT, APP).unwrap();
    assert_eq!(after["requiredResourceAccess"], rra);
    assert_eq!(
        after["web"]["redirectUris"],
        json!(["https://coder.example.com/api/v2/users/oidc/callback"])
    );
    assert_eq!(
        after["web"]["implicitGrantSettings"],
        before["web"]["implicitGrantSettings"]
    );
    assert_eq!(after["signInAudience"], before["signInAudience"]);

    // Every body was recorded; the invalid ones fail contract validation.
    assert_eq!(sim.recorded_bodies().len(), 5);
    let errors = sim.validate_recorded_bodies().unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("offlineAccess"));
    assert!(errors[1].contains("isFallbackPublicClient: expected a boolean"));
    assert_eq!(sim.counters().calls("PATCH", "/v1.0/applications/{id}"), 5);
}

#[tokio::test]
async fn token_lifetime_policies_are_validated_and_assigned_once() {
    let (sim, id) = sim(&[
        perm::APPLICATION_READWRITE_ALL,
        perm::POLICY_READWRITE_APPLICATIONCONFIGURATION,
    ])
    .await;
    let t = token(&sim).await;
    let def = |lt: &str| {
        format!("{{\"TokenLifetimePolicy\":{{\"Version\":1,\"AccessTokenLifetime\":\"{lt}\"}}}}")
    };
    let (s, _, v) = call(&sim, &t, Method::POST, "/v1.0/policies/tokenLifetimePolicies",
        Some(json!({"definition": [def("00:05:00")], "displayName": "x", "isOrganizationDefault": false}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(code(&v).1.contains("out of range"), "{v}");
    let (s, _, v) = call(
        &sim,
        &t,
        Method::POST,
        "/v1.0/policies/tokenLifetimePolicies",
        Some(json!({"definition": def("01:00:00"), "displayName": "x"})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "definition must be an array: {v}"
    );
    let (s, _, v) = call(&sim, &t, Method::POST, "/v1.0/policies/tokenLifetimePolicies",
        Some(json!({"definition": [def("01:00:00")], "displayName": "coder", "isOrganizationDefault": false}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let pid = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["displayName"], json!("coder"));

    let refpath = format!("/v1.0/applications/{id}/tokenLifetimePolicies/$ref");
    let body = json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/policies/tokenLifetimePolicies/{pid}")});
    let (s, _, _) = call(&sim, &t, Method::POST, &refpath, Some(body.clone())).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, v) = call(&sim, &t, Method::POST, &refpath, Some(body)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(code(&v).1.contains("already exist"));
    let (s, _, v) = call(
        &sim,
        &t,
        Method::GET,
        &format!("/v1.0/applications/{id}/tokenLifetimePolicies"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"][0]["id"], json!(pid));
    assert_eq!(
        v["value"][0]["@odata.type"],
        json!("#microsoft.graph.tokenLifetimePolicy")
    );

    let (s, _, _) = call(
        &sim,
        &t,
        Method::PATCH,
        &format!("/v1.0/policies/tokenLifetimePolicies/{pid}"),
        Some(json!({"definition": [def("02:00:00")]})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        sim.assigned_policies(TENANT, APP)[0]["definition"],
        json!([def("02:00:00")])
    );
    let (s, _, _) = call(
        &sim,
        &t,
        Method::DELETE,
        &format!("/v1.0/applications/{id}/tokenLifetimePolicies/{pid}/$ref"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(sim.assigned_policies(TENANT, APP).is_empty());
    assert_eq!(sim.token_lifetime_policies(TENANT).len(), 1);
    let c = sim.counters();
    assert_eq!(
        c.calls("POST", "/v1.0/applications/{id}/tokenLifetimePolicies/$ref"),
        2
    );
    assert_eq!(
        c.calls(
            "DELETE",
            "/v1.0/applications/{id}/tokenLifetimePolicies/{policyId}/$ref"
        ),
        1
    );
}

#[tokio::test]
async fn service_principals_and_grants() {
    let (sim, _) = sim(&[
        perm::APPLICATION_READ_ALL,
        perm::DELEGATED_PERMISSION_GRANT_READ_ALL,
    ])
    .await;
    let t = token(&sim).await;
    let (s, _, v) = call(&sim, &t, Method::GET,
        "/v1.0/servicePrincipals(appId='00000003-0000-0000-c000-000000000000')?$select=id,appId,oauth2PermissionScopes", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["id"], json!(sim_entra::GRAPH_SP_ID));
    let offline = v["oauth2PermissionScopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["value"] == "offline_access")
        .unwrap();
    assert_eq!(offline["id"], json!("7427e0e9-2fba-42fe-b0c0-848c9e6a8182"));
    let sp = sim.service_principal_id(TENANT, APP).unwrap();
    sim.add_permission_grant(TENANT, APP, "AllPrincipals", "openid profile");
    let (s, _, v) = call(
        &sim,
        &t,
        Method::GET,
        &format!("/v1.0/oauth2PermissionGrants?$filter=clientId%20eq%20'{sp}'"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    assert_eq!(v["value"][0]["resourceId"], json!(sim_entra::GRAPH_SP_ID));
    let (_, _, v) = call(
        &sim,
        &t,
        Method::GET,
        "/v1.0/oauth2PermissionGrants?$filter=clientId+eq+'other'",
        None,
    )
    .await;
    assert_eq!(v["value"], json!([]));
}

#[tokio::test]
async fn replication_delay_and_injected_failures() {
    let (sim, id) = sim_with(
        SimConfig {
            replication_delay: true,
            ..SimConfig::default()
        },
        &[perm::APPLICATION_READWRITE_ALL],
    )
    .await;
    let t = token(&sim).await;
    let path = format!("/v1.0/applications/{id}");
    let (s, _, _) = call(
        &sim,
        &t,
        Method::PATCH,
        &path,
        Some(json!({"isFallbackPublicClient": false})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, v) = call(&sim, &t, Method::GET, &path, None).await;
    assert_eq!(
        (s, code(&v).0),
        (StatusCode::NOT_FOUND, "Request_ResourceNotFound")
    );
    let (s, _, v) = call(&sim, &t, Method::GET, &path, None).await;
    assert_eq!(
        (s, &v["isFallbackPublicClient"]),
        (StatusCode::OK, &json!(false))
    );

    sim.fail_next(2, 429, Some(3));
    for _ in 0..2 {
        let (s, h, v) = call(&sim, &t, Method::GET, &path, None).await;
        assert_eq!(
            (s, code(&v).0),
            (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
        );
        assert_eq!(h.get("retry-after").unwrap(), "3");
    }
    sim.fail_next(1, 503, None);
    token(&sim).await; // the token endpoint is not affected
    let (s, h, _) = call(&sim, &t, Method::GET, &path, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.get("retry-after").is_none());
    let (s, _, _) = call(&sim, &t, Method::GET, &path, None).await;
    assert_eq!(s, StatusCode::OK);
    let c = sim.counters();
    assert_eq!(c.with_status(429), 2);
    assert_eq!(
        c.by_route
            .get(&("GET".into(), "/v1.0/applications/{id}".into(), 404)),
        Some(&1)
    );
    assert_eq!(c.writes(), 1);
    assert_eq!(c.token_requests(), 2);
    assert_eq!(c.calls("POST", TOKEN_ROUTE), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn sandbox_seed_is_consistent() {
    let sim = sim_entra::start(SimConfig::default()).await.unwrap();
    let seed = sim.seed_sandbox();
    let e = &seed.spec["entraId"];
    assert_eq!(e["authorityHost"], json!(sim.base_url()));
    assert_eq!(e["graphEndpoint"], json!(sim.base_url()));
    assert_eq!(e["credentialsSecret"], json!("graph-admin"));
    assert_eq!(seed.secret_name, "graph-admin");
    let app = sim
        .application(
            e["tenantId"].as_str().unwrap(),
            e["applicationId"].as_str().unwrap(),
        )
        .unwrap();
    let end: jiff::Timestamp = app["passwordCredentials"][0]["endDateTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let days = end.duration_since(jiff::Timestamp::now()).as_secs() / 86_400;
    assert!((199..=200).contains(&days), "{days}");
    let lines = sim.describe_client();
    assert_eq!(
        lines[2],
        (
            "Microsoft Graph delegated permissions".to_string(),
            "User.Read, openid, profile, email".to_string()
        )
    );
    sim_entra::schema::contract()
        .validate_entity("application", &app)
        .unwrap();
}
