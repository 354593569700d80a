//! Where Microsoft Graph differs from a naive model: paging, OData query validation, the
//! permission rules of each endpoint, eventual consistency (stale 200 reads), throttling and
//! limits, and the token service's discovery documents over https.

mod support;

use std::sync::Once;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sim_entra::permissions as perm;
use sim_entra::{SimConfig, SimHandle};

const TENANT: &str = "11111111-1111-4111-8111-111111111111";
const APP: &str = "22222222-2222-4222-8222-222222222222";
const MGMT: &str = "33333333-3333-4333-8333-333333333333";
const SECRET: &str = "mgmt-secret";

fn provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn client() -> reqwest::Client {
    provider();
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

async fn token_with(http: &reqwest::Client, sim: &SimHandle) -> String {
    let scope = format!("{}/.default", sim.base_url());
    let v: Value = http
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", sim.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", MGMT),
            ("client_secret", SECRET),
            ("scope", &scope),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

async fn token(sim: &SimHandle) -> String {
    token_with(&client(), sim).await
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

async fn call_full(
    sim: &SimHandle,
    token: &str,
    method: Method,
    url: &str,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> Answer {
    let url = if url.starts_with("http") {
        url.to_string()
    } else {
        format!("{}{url}", sim.base_url())
    };
    let mut req = client().request(method, url).bearer_auth(token);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(sim: &SimHandle, token: &str, url: &str) -> Answer {
    call_full(sim, token, Method::GET, url, None, &[]).await
}

fn policy_def(lt: &str) -> String {
    format!("{{\"TokenLifetimePolicy\":{{\"Version\":1,\"AccessTokenLifetime\":\"{lt}\"}}}}")
}

#[tokio::test]
async fn collections_page_with_absolute_next_links() {
    let (sim, _) = sim_with(SimConfig::default(), &[perm::APPLICATION_READ_ALL]).await;
    assert_eq!(sim_entra::DEFAULT_PAGE_SIZE, 2);
    for i in 0..4 {
        sim.add_application(
            TENANT,
            sim_entra::stock_application(
                &format!("44444444-0000-4000-8000-00000000000{i}"),
                &format!("App {i}"),
            ),
        );
    }
    let t = token(&sim).await;
    // Default page size: 5 apps come in 3 pages of 2, 2, 1.
    let mut url = "/v1.0/applications?$select=id,appId".to_string();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let a = get(&sim, &t, &url).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        pages += 1;
        for v in a.body["value"].as_array().unwrap() {
            assert_eq!(
                v.as_object().unwrap().len(),
                2,
                "$select is kept across pages: {v}"
            );
            seen.push(v["appId"].as_str().unwrap().to_string());
        }
        match a.body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with(&format!("{}/v1.0/applications?", sim.base_url())),
                    "{next}"
                );
                assert!(next.contains("$skiptoken="), "{next}");
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!((pages, seen.len()), (3, 5));
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5, "no duplicates across pages");

    // $top is honoured, and bounded.
    let a = get(&sim, &t, "/v1.0/applications?$top=999").await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 5);
    assert!(a.body.get("@odata.nextLink").is_none());
    let a = get(&sim, &t, "/v1.0/applications?$top=4").await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 4);
    assert!(
        a.body["@odata.nextLink"]
            .as_str()
            .unwrap()
            .contains("$top=4")
    );
    for bad in ["0", "1000", "x"] {
        let a = get(&sim, &t, &format!("/v1.0/applications?$top={bad}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(a.code(), "Request_UnsupportedQuery");
        assert_eq!(
            a.message(),
            format!("Invalid page size specified: '{bad}'. Must be between 1 and 999 inclusive.")
        );
    }
    let a = get(&sim, &t, "/v1.0/applications?$skiptoken=forged").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    sim.set_page_size(100);
    let a = get(&sim, &t, "/v1.0/applications").await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn query_options_are_validated() {
    let (sim, _) = sim_with(
        SimConfig::default(),
        &[perm::APPLICATION_READ_ALL, perm::DIRECTORY_READ_ALL],
    )
    .await;
    let t = token(&sim).await;
    let a = get(&sim, &t, "/v1.0/applications?$filter=notes eq 'x'").await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "Request_UnsupportedQuery")
    );
    assert_eq!(
        a.message(),
        "Unsupported or invalid query filter clause specified for property 'notes' of resource 'Application'."
    );
    let a = get(&sim, &t, "/v1.0/applications?$filter=appId ne 'x'").await;
    assert_eq!(a.code(), "Request_UnsupportedQuery");
    let a = get(
        &sim,
        &t,
        &format!("/v1.0/applications?$filter=appId eq '{APP}'"),
    )
    .await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 1);
    let a = get(
        &sim,
        &t,
        "/v1.0/applications?$filter=startswith(displayName,'cod')",
    )
    .await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 1);
    // $search needs ConsistencyLevel: eventual.
    let a = get(&sim, &t, "/v1.0/applications?$search=\"displayName:cod\"").await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "Request_UnsupportedQuery")
    );
    assert!(a.message().contains("ConsistencyLevel: eventual"));
    let a = call_full(
        &sim,
        &t,
        Method::GET,
        "/v1.0/applications?$search=\"displayName:cod\"&$count=true",
        None,
        &[("ConsistencyLevel", "eventual")],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["@odata.count"], json!(1));
    // $count: ignored without the header, an error as a segment.
    let a = get(&sim, &t, "/v1.0/applications?$count=true").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.get("@odata.count").is_none());
    let a = get(&sim, &t, "/v1.0/applications/$count").await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "Request_BadRequest")
    );
    assert_eq!(a.message(), "$count is not currently supported.");
    let a = call_full(
        &sim,
        &t,
        Method::GET,
        "/v1.0/applications/$count",
        None,
        &[("ConsistencyLevel", "eventual")],
    )
    .await;
    assert_eq!((a.status, a.body.clone()), (StatusCode::OK, json!(1)));
    // $select of a property the type does not have.
    let a = get(
        &sim,
        &t,
        &format!("/v1.0/applications(appId='{APP}')?$select=id,bogus"),
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "BadRequest")
    );
    assert!(
        a.message()
            .contains("Could not find a property named 'bogus'")
    );
    let a = get(&sim, &t, "/v1.0/applications?$orderby=displayName").await;
    assert_eq!(a.code(), "Request_UnsupportedQuery");
    // Grants: clientId and consentType filters, nothing else.
    let sp = sim.service_principal_id(TENANT, APP).unwrap();
    sim.add_permission_grant(TENANT, APP, "AllPrincipals", "openid profile");
    sim.add_permission_grant(TENANT, APP, "Principal", "User.Read");
    let a = get(&sim, &t, &format!("/v1.0/oauth2PermissionGrants?$filter=clientId eq '{sp}' and consentType eq 'AllPrincipals'")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["value"].as_array().unwrap().len(), 1);
    assert_eq!(a.body["value"][0]["scope"], json!("openid profile"));
    let a = get(
        &sim,
        &t,
        "/v1.0/oauth2PermissionGrants?$filter=scope eq 'openid'",
    )
    .await;
    assert_eq!(a.code(), "Request_UnsupportedQuery");
    let a = get(&sim, &t, "/v1.0/oauth2PermissionGrants?$search=\"x\"").await;
    assert_eq!(a.code(), "Request_UnsupportedQuery");
}

#[tokio::test]
async fn permissions_follow_the_reference() {
    let (sim, id) = sim_with(SimConfig::default(), &[perm::APPLICATION_READWRITE_OWNEDBY]).await;
    let other = sim.add_application(
        TENANT,
        sim_entra::stock_application("55555555-2222-4222-8222-222222222222", "Other"),
    );
    let t = token(&sim).await;
    // OwnedBy lists and reads every application and service principal of the tenant.
    let a = get(&sim, &t, "/v1.0/applications?$top=999").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["value"].as_array().unwrap().len(), 2);
    assert_eq!(
        get(&sim, &t, &format!("/v1.0/applications/{other}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(&sim, &t, &format!("/v1.0/servicePrincipals(appId='{APP}')"))
            .await
            .status,
        StatusCode::OK
    );
    // It writes only what it owns.
    let a = call_full(
        &sim,
        &t,
        Method::PATCH,
        &format!("/v1.0/applications/{id}"),
        Some(json!({"notes": "x"})),
        &[],
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::FORBIDDEN, "Authorization_RequestDenied")
    );
    sim.add_owner(TENANT, APP, MGMT);
    let a = call_full(
        &sim,
        &t,
        Method::PATCH,
        &format!("/v1.0/applications/{id}"),
        Some(json!({"notes": "x"})),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    // An app's token lifetime policies: an Application write permission AND a policy permission.
    let pol = format!("/v1.0/applications/{id}/tokenLifetimePolicies");
    assert_eq!(
        get(&sim, &t, &pol).await.status,
        StatusCode::FORBIDDEN,
        "OwnedBy alone"
    );
    sim.set_permissions(
        TENANT,
        MGMT,
        &[perm::APPLICATION_READ_ALL, perm::POLICY_READ_ALL],
    );
    assert_eq!(
        get(&sim, &t, &pol).await.status,
        StatusCode::FORBIDDEN,
        "Application.Read.All is not listed"
    );
    sim.set_permissions(TENANT, MGMT, &[perm::APPLICATION_READWRITE_ALL]);
    assert_eq!(
        get(&sim, &t, &pol).await.status,
        StatusCode::FORBIDDEN,
        "no policy permission"
    );
    sim.set_permissions(
        TENANT,
        MGMT,
        &[perm::APPLICATION_READWRITE_ALL, perm::POLICY_READ_ALL],
    );
    assert_eq!(get(&sim, &t, &pol).await.status, StatusCode::OK);
    // Assigning needs only Policy.Read.All besides the application write permission.
    let pid = sim.add_token_lifetime_policy(TENANT, "p", &policy_def("02:00:00"));
    sim.set_permissions(
        TENANT,
        MGMT,
        &[perm::APPLICATION_READWRITE_OWNEDBY, perm::POLICY_READ_ALL],
    );
    let body = json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/policies/tokenLifetimePolicies/{pid}")});
    let a = call_full(
        &sim,
        &t,
        Method::POST,
        &format!("{pol}/$ref"),
        Some(body),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    // Creating a policy needs Policy.ReadWrite.ApplicationConfiguration.
    let a = call_full(
        &sim,
        &t,
        Method::POST,
        "/v1.0/policies/tokenLifetimePolicies",
        Some(json!({"definition": [policy_def("02:00:00")], "displayName": "x"})),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Grants: DelegatedPermissionGrant.* or Directory.*; Application.* is not enough.
    assert_eq!(
        get(&sim, &t, "/v1.0/oauth2PermissionGrants").await.status,
        StatusCode::FORBIDDEN
    );
    sim.set_permissions(TENANT, MGMT, &[perm::DIRECTORY_READ_ALL]);
    assert_eq!(
        get(&sim, &t, "/v1.0/oauth2PermissionGrants").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&sim, &t, &format!("/v1.0/applications/{id}"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn writes_are_followed_by_stale_reads() {
    let (sim, id) = sim_with(
        SimConfig {
            stale_reads: 2,
            ..SimConfig::default()
        },
        &[
            perm::APPLICATION_READWRITE_ALL,
            perm::POLICY_READWRITE_APPLICATIONCONFIGURATION,
        ],
    )
    .await;
    let t = token(&sim).await;
    let path = format!("/v1.0/applications(appId='{APP}')?$select=id,isFallbackPublicClient");
    let a = call_full(
        &sim,
        &t,
        Method::PATCH,
        &format!("/v1.0/applications/{id}"),
        Some(json!({"isFallbackPublicClient": true})),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    for _ in 0..2 {
        let a = get(&sim, &t, &path).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(
            a.body["isFallbackPublicClient"],
            Value::Null,
            "the pre-write version"
        );
    }
    assert_eq!(
        get(&sim, &t, &path).await.body["isFallbackPublicClient"],
        json!(true)
    );
    // A policy just created is missing from reads; a patched one shows its old definition.
    let a = call_full(
        &sim,
        &t,
        Method::POST,
        "/v1.0/policies/tokenLifetimePolicies",
        Some(json!({"definition": [policy_def("02:00:00")], "displayName": "coder"})),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let pid = a.body["id"].as_str().unwrap().to_string();
    let a = get(&sim, &t, "/v1.0/policies/tokenLifetimePolicies").await;
    assert_eq!(a.body["value"], json!([]));
    assert_eq!(
        get(
            &sim,
            &t,
            &format!("/v1.0/policies/tokenLifetimePolicies/{pid}")
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(
            &sim,
            &t,
            &format!("/v1.0/policies/tokenLifetimePolicies/{pid}")
        )
        .await
        .status,
        StatusCode::OK
    );
    let a = call_full(
        &sim,
        &t,
        Method::PATCH,
        &format!("/v1.0/policies/tokenLifetimePolicies/{pid}"),
        Some(json!({"definition": [policy_def("04:00:00")]})),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = get(
        &sim,
        &t,
        &format!("/v1.0/policies/tokenLifetimePolicies/{pid}"),
    )
    .await;
    assert_eq!(a.body["definition"], json!([policy_def("02:00:00")]));
    // The runtime switch.
    sim.set_stale_reads(0);
    let a = get(
        &sim,
        &t,
        &format!("/v1.0/policies/tokenLifetimePolicies/{pid}"),
    )
    .await;
    assert_eq!(a.body["definition"], json!([policy_def("04:00:00")]));
    sim.set_stale_reads(1);
    let body = json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/policies/tokenLifetimePolicies/{pid}")});
    let a = call_full(
        &sim,
        &t,
        Method::POST,
        &format!("/v1.0/applications/{id}/tokenLifetimePolicies/$ref"),
        Some(body),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let pol = format!("/v1.0/applications/{id}/tokenLifetimePolicies");
    assert_eq!(
        get(&sim, &t, &pol).await.body["value"],
        json!([]),
        "assignment not visible yet"
    );
    assert_eq!(get(&sim, &t, &pol).await.body["value"][0]["id"], json!(pid));
}

#[tokio::test]
async fn limits_and_throttling() {
    let (sim, id) = sim_with(
        SimConfig {
            key_credentials_per_minute: 2,
            ..SimConfig::default()
        },
        &[perm::APPLICATION_READWRITE_ALL],
    )
    .await;
    let t = token(&sim).await;
    let path = format!("/v1.0/applications(appId='{APP}')?$select=id,keyCredentials");
    assert_eq!(get(&sim, &t, &path).await.status, StatusCode::OK);
    assert_eq!(get(&sim, &t, &path).await.status, StatusCode::OK);
    let a = get(&sim, &t, &path).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(
        get(
            &sim,
            &t,
            &format!("/v1.0/applications(appId='{APP}')?$select=id,passwordCredentials")
        )
        .await
        .status,
        StatusCode::OK,
        "only keyCredentials is throttled"
    );
    sim.set_key_credentials_per_minute(150);
    assert_eq!(get(&sim, &t, &path).await.status, StatusCode::OK);

    // PATCH without Content-Type: application/json.
    let resp = client()
        .patch(format!("{}/v1.0/applications/{id}", sim.base_url()))
        .bearer_auth(&t)
        .body("{\"notes\":\"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type")
    );

    // requiredResourceAccess: 50 resources, 400 permissions.
    let resources: Vec<Value> = (0..51)
        .map(|i| json!({"resourceAppId": format!("00000000-0000-4000-8000-{i:012}"),
                        "resourceAccess": [{"id": "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "type": "Scope"}]}))
        .collect();
    let a = call_full(
        &sim,
        &t,
        Method::PATCH,
        &format!("/v1.0/applications/{id}"),
        Some(json!({"requiredResourceAccess": resources[..50]})),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let a = call_full(
        &sim,
        &t,
        Method::PATCH,
        &format!("/v1.0/applications/{id}"),
        Some(json!({"requiredResourceAccess": resources})),
        &[],
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "Directory_QuotaExceeded")
    );
    let many: Vec<Value> = (0..401)
        .map(|i| json!({"id": format!("00000000-1111-4000-8000-{i:012}"), "type": "Scope"}))
        .collect();
    let a = call_full(&sim, &t, Method::PATCH, &format!("/v1.0/applications/{id}"),
        Some(json!({"requiredResourceAccess": [{"resourceAppId": sim_entra::GRAPH_APP_ID, "resourceAccess": many}]})), &[]).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::BAD_REQUEST, "Directory_QuotaExceeded")
    );
}

#[tokio::test]
async fn token_service_serves_discovery_over_https() {
    let dir = support::temp_dir("https");
    let pki = support::make_pki(&dir);
    let (sim, _) = sim_with(
        SimConfig {
            tls: Some(pki.identity.clone()),
            ..SimConfig::default()
        },
        &[perm::APPLICATION_READ_ALL],
    )
    .await;
    let base = sim.base_url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    provider();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(&pki.ca_der).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let v: Value = http
        .get(format!(
            "{base}/{TENANT}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["token_endpoint"],
        json!(format!("{base}/{TENANT}/oauth2/v2.0/token"))
    );
    assert_eq!(v["issuer"], json!(format!("{base}/{TENANT}/v2.0")));
    assert_eq!(
        v["scopes_supported"],
        json!(["openid", "profile", "email", "offline_access"])
    );
    assert!(v.get("grant_types_supported").is_none());
    let resp = http
        .get(format!(
            "{base}/99999999-1111-4111-8111-111111111111/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = http
        .get(format!("{base}/common/discovery/instance?api-version=1.1&authorization_endpoint={base}/{TENANT}/oauth2/v2.0/authorize"))
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(
        v["tenant_discovery_endpoint"],
        json!(format!(
            "{base}/{TENANT}/v2.0/.well-known/openid-configuration"
        ))
    );
    let t = token_with(&http, &sim).await;
    let resp = http
        .get(format!("{base}/v1.0/applications(appId='{APP}')"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A client that does not trust the CA is refused.
    assert!(
        client()
            .get(format!(
                "{base}/{TENANT}/v2.0/.well-known/openid-configuration"
            ))
            .send()
            .await
            .is_err()
    );
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
