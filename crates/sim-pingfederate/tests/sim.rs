//! The simulator over HTTP: headers, auth, roles, validation, full replace, secret rotation,
//! injected failures and counters.

use std::time::Duration;

use serde_json::{Value, json};
use sim_pingfederate::{AdminRole, PfVersion, SandboxSeed, SimConfig, SimHandle};

async fn start(version: PfVersion) -> (SimHandle, SandboxSeed, reqwest::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = sim_pingfederate::start(SimConfig {
        version,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let seed = sim.seed_sandbox();
    (sim, seed, reqwest::Client::new())
}

fn req(
    http: &reqwest::Client,
    sim: &SimHandle,
    seed: &SandboxSeed,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    http.request(method, format!("{}/pf-admin-api/v1{path}", sim.base_url()))
        .basic_auth(
            &seed.secret_data["username"],
            Some(&seed.secret_data["password"]),
        )
        .header("X-XSRF-Header", "PingFederate")
}

async fn status_and_body(r: reqwest::RequestBuilder) -> (u16, Value, Option<String>) {
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let ra = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        ra,
    )
}

#[tokio::test]
async fn seed_and_version() {
    for (v, s) in [
        (PfVersion::V11_3, "11.3.5.0"),
        (PfVersion::V12_1, "12.1.0.4"),
    ] {
        let (sim, seed, http) = start(v).await;
        assert_eq!(
            seed.spec,
            json!({"pingFederate": {"adminUrl": sim.base_url(), "clientId": "coder",
                "credentialsSecret": "pingfederate-admin"}})
        );
        let (st, body, _) =
            status_and_body(req(&http, &sim, &seed, reqwest::Method::GET, "/version")).await;
        assert_eq!((st, body), (200, json!({"version": s})));
        let (st, body, _) = status_and_body(req(
            &http,
            &sim,
            &seed,
            reqwest::Method::GET,
            "/oauth/clients/coder",
        ))
        .await;
        assert_eq!(st, 200);
        let mut expected = sim_pingfederate::seed_client(v);
        assert_ne!(
            body["clientAuth"]["encryptedSecret"], expected["clientAuth"]["encryptedSecret"],
            "GET re-encrypts the secret"
        );
        expected["clientAuth"]["encryptedSecret"] = body["clientAuth"]["encryptedSecret"].clone();
        assert_eq!(body, expected);
        let lines = sim.describe_client();
        assert_eq!(lines[1], ("grantTypes".into(), "AUTHORIZATION_CODE".into()));
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn xsrf_header_and_basic_auth_are_enforced() {
    let (sim, seed, http) = start(PfVersion::V12_1).await;
    let url = format!("{}/pf-admin-api/v1/oauth/clients/coder", sim.base_url());
    let (st, body, _) = status_and_body(http.get(&url).basic_auth(
        &seed.secret_data["username"],
        Some(&seed.secret_data["password"]),
    ))
    .await;
    assert_eq!(
        (st, body["resultId"].as_str()),
        (403, Some("missing_xsrf_header"))
    );
    let resp = http
        .get(&url)
        .header("X-XSRF-Header", "PingFederate")
        .basic_auth(&seed.secret_data["username"], Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"].to_str().unwrap(),
        "Basic realm=\"PingFederate\""
    );
    let (st, _, _) = status_and_body(http.get(&url).header("X-XSRF-Header", "PingFederate")).await;
    assert_eq!(st, 401);
    let recorded = sim.requests();
    assert_eq!(recorded.len(), 3);
    assert!(!recorded[0].xsrf_header);
    assert_eq!(recorded[0].status, 403);
    assert_eq!(recorded[2].user, None);
    sim.shutdown().await;
}

#[tokio::test]
async fn auditor_reads_but_cannot_write() {
    let (sim, _seed, http) = start(PfVersion::V11_3).await;
    sim.add_admin("audit", "audit-pw", AdminRole::Auditor);
    let url = format!("{}/pf-admin-api/v1/oauth/clients/coder", sim.base_url());
    let get = http
        .get(&url)
        .basic_auth("audit", Some("audit-pw"))
        .header("X-XSRF-Header", "PingFederate");
    let (st, client, _) = status_and_body(get).await;
    assert_eq!(st, 200);
    let put = http
        .put(&url)
        .basic_auth("audit", Some("audit-pw"))
        .header("X-XSRF-Header", "PingFederate")
        .json(&client);
    let (st, body, _) = status_and_body(put).await;
    assert_eq!(
        (st, body["resultId"].as_str()),
        (403, Some("insufficient_privileges"))
    );
    assert_eq!(
        sim.client("coder").unwrap(),
        sim_pingfederate::seed_client(PfVersion::V11_3)
    );
    assert_eq!(sim.secret_changes(), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn put_validates_against_the_version_contract() {
    let (sim, seed, http) = start(PfVersion::V11_3).await;
    let mut body = sim.client("coder").unwrap();
    body["offlineAccessRequireConsentPrompt"] = json!("YES"); // 12.1 only
    body["refreshRolling"] = json!("SOMETIMES");
    body["restrictedScopes"] = json!(["openid", "profile", "email", "offline_access"]);
    body.as_object_mut().unwrap().remove("name");
    let (st, err, _) = status_and_body(
        req(
            &http,
            &sim,
            &seed,
            reqwest::Method::PUT,
            "/oauth/clients/coder",
        )
        .json(&body),
    )
    .await;
    // A property 11.3 does not know cannot be read into the model: 400 naming that field only.
    assert_eq!(st, 400);
    assert_eq!(err["resultId"], "invalid_request_body");
    let paths: Vec<&str> = err["validationErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["fieldPath"].as_str().unwrap())
        .collect();
    // `remove("name")` moved the last property into its place.
    assert_eq!(paths, ["offlineAccessRequireConsentPrompt"]);
    // Without the unreadable fields: 422 with every semantic error.
    body.as_object_mut()
        .unwrap()
        .remove("offlineAccessRequireConsentPrompt");
    body["refreshRolling"] = json!("ROLL");
    let (st, err, _) = status_and_body(
        req(
            &http,
            &sim,
            &seed,
            reqwest::Method::PUT,
            "/oauth/clients/coder",
        )
        .json(&body),
    )
    .await;
    assert_eq!(st, 422);
    assert_eq!(err["resultId"], "validation_error");
    let paths: Vec<&str> = err["validationErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["fieldPath"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["name", "restrictedScopes[3]"]);
    assert_eq!(
        sim.client("coder").unwrap(),
        sim_pingfederate::seed_client(PfVersion::V11_3),
        "a rejected PUT changes nothing"
    );
    // Override without its values.
    let mut body = sim.client("coder").unwrap();
    body["persistentGrantExpirationType"] = json!("OVERRIDE_SERVER_DEFAULT");
    body["persistentGrantExpirationTime"] = json!(0);
    let (st, err, _) = status_and_body(
        req(
            &http,
            &sim,
            &seed,
            reqwest::Method::PUT,
            "/oauth/clients/coder",
        )
        .json(&body),
    )
    .await;
    assert_eq!(st, 422);
    assert_eq!(
        err["validationErrors"][0]["fieldPath"],
        "persistentGrantExpirationTime"
    );
    // Missing Content-Type.
    let (st, _, _) = status_and_body(
        req(
            &http,
            &sim,
            &seed,
            reqwest::Method::PUT,
            "/oauth/clients/coder",
        )
        .body(serde_json::to_vec(&body).unwrap()),
    )
    .await;
    assert_eq!(st, 415);
    sim.shutdown().await;
}

#[tokio::test]
async fn put_replaces_the_whole_client_and_a_plaintext_secret_rotates_it() {
    let (sim, seed, http) = start(PfVersion::V12_1).await;
    let original = sim.client("coder").unwrap();
    let mut body = original.clone();
    body.as_object_mut().unwrap().remove("extendedParameters");
    body["grantTypes"] = json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"]);
    let (st, stored, _) = status_and_body(
        req(
            &http,
            &sim,
            &seed,
            reqwest::Method::PUT,
            "/oauth/clients/coder",
        )
        .json(&body),
    )
    .await;
    assert_eq!(st, 200);
    assert!(stored.get("extendedParameters").is_none(), "full replace");
    assert_eq!(
        stored["clientSecretChangedTime"],
        original["clientSecretChangedTime"]
    );
    assert_eq!(
        sim.client("coder").unwrap()["clientAuth"],
        original["clientAuth"],
        "the at-rest ciphertext stays while the secret is the same"
    );
    assert_eq!(sim.secret_rotations(), 0);
    assert_eq!(sim.secret_changes(), 0);

    // A ciphertext the server never issued is refused.
    let mut bad = stored.clone();
    bad["clientAuth"]["encryptedSecret"] = json!("OBF:JWE:forged");
    let (st, err, _) = status_and_body(
        req(
            &http,
            &sim,
            &seed,
            reqwest::Method::PUT,
            "/oauth/clients/coder",
        )
        .json(&bad),
    )
    .await;
    assert_eq!(st, 422);
    assert_eq!(
        err["validationErrors"][0]["fieldPath"],
        "clientAuth.encryptedSecret"
    );

    let mut rotate = stored.clone();
    rotate["clientAuth"]["secret"] = json!("plaintext!");
    let (st, after, _) = status_and_body(
        req(
            &http,
            &sim,
            &seed,
            reqwest::Method::PUT,
            "/oauth/clients/coder",
        )
        .json(&rotate),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(sim.secret_rotations(), 1);
    assert!(after["clientAuth"].get("secret").is_none());
    assert_ne!(
        after["clientAuth"]["encryptedSecret"],
        original["clientAuth"]["encryptedSecret"]
    );
    assert_ne!(
        after["clientSecretChangedTime"],
        original["clientSecretChangedTime"]
    );
    assert_eq!(sim.client_secret("coder").as_deref(), Some("plaintext!"));
    sim.shutdown().await;
}

#[tokio::test]
async fn consent_prompt_is_reset_unless_offline_access_is_required() {
    let (sim, seed, http) = start(PfVersion::V12_1).await;
    let mut body = sim.client("coder").unwrap();
    body["offlineAccessRequireConsentPrompt"] = json!("YES");
    let (_, stored, _) = status_and_body(
        req(
            &http,
            &sim,
            &seed,
            reqwest::Method::PUT,
            "/oauth/clients/coder",
        )
        .json(&body),
    )
    .await;
    assert_eq!(
        stored["offlineAccessRequireConsentPrompt"],
        "SERVER_DEFAULT"
    );
    body["requireOfflineAccessScopeToIssueRefreshTokens"] = json!("YES");
    let (_, stored, _) = status_and_body(
        req(
            &http,
            &sim,
            &seed,
            reqwest::Method::PUT,
            "/oauth/clients/coder",
        )
        .json(&body),
    )
    .await;
    assert_eq!(stored["offlineAccessRequireConsentPrompt"], "YES");
    sim.shutdown().await;
}

#[tokio::test]
async fn common_scopes_and_settings() {
    let (sim, seed, http) = start(PfVersion::V11_3).await;
    let path = "/oauth/authServerSettings/scopes/commonScopes";
    let entry = json!({"name": "offline_access", "description": "Offline", "dynamic": false});
    let (st, _, _) =
        status_and_body(req(&http, &sim, &seed, reqwest::Method::POST, path).json(&entry)).await;
    assert_eq!(st, 201);
    let (st, err, _) =
        status_and_body(req(&http, &sim, &seed, reqwest::Method::POST, path).json(&entry)).await;
    assert_eq!(
        (st, err["validationErrors"][0]["fieldPath"].as_str()),
        (422, Some("name"))
    );
    let (st, got, _) = status_and_body(req(
        &http,
        &sim,
        &seed,
        reqwest::Method::GET,
        &format!("{path}/offline_access"),
    ))
    .await;
    assert_eq!((st, got), (200, entry));
    // Full PUT of the settings, validated (required fields).
    let mut settings = sim.auth_server_settings();
    settings
        .as_object_mut()
        .unwrap()
        .remove("refreshTokenLength");
    let (st, err, _) = status_and_body(
        req(
            &http,
            &sim,
            &seed,
            reqwest::Method::PUT,
            "/oauth/authServerSettings",
        )
        .json(&settings),
    )
    .await;
    assert_eq!(
        (st, err["validationErrors"][0]["fieldPath"].as_str()),
        (422, Some("refreshTokenLength"))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_failures_latency_and_counters() {
    let (sim, seed, http) = start(PfVersion::V12_1).await;
    sim.fail_next(2, 429, Some(5));
    for _ in 0..2 {
        let (st, _, ra) =
            status_and_body(req(&http, &sim, &seed, reqwest::Method::GET, "/version")).await;
        assert_eq!((st, ra.as_deref()), (429, Some("5")));
    }
    sim.fail_next(1, 503, None);
    let (st, _, ra) =
        status_and_body(req(&http, &sim, &seed, reqwest::Method::GET, "/version")).await;
    assert_eq!((st, ra), (503, None));
    // A scripted code that is not an HTTP status answers 503, as in every simulator.
    sim.fail_next(1, 42, None);
    let (st, body, _) =
        status_and_body(req(&http, &sim, &seed, reqwest::Method::GET, "/version")).await;
    assert_eq!(
        (st, body["resultId"].as_str()),
        (503, Some("simulated_failure"))
    );
    sim.set_latency(Duration::from_millis(20));
    let (st, _, _) =
        status_and_body(req(&http, &sim, &seed, reqwest::Method::GET, "/version")).await;
    assert_eq!(st, 200);
    let c = sim.counters();
    assert_eq!(
        c.by_route[&("GET".to_string(), "/version".to_string(), 429)],
        2
    );
    assert_eq!(
        c.by_route[&("GET".to_string(), "/version".to_string(), 503)],
        2
    );
    assert_eq!(
        c.by_route[&("GET".to_string(), "/version".to_string(), 200)],
        1
    );
    assert_eq!((c.reads(), c.writes(), c.total()), (5, 0, 5));
    sim.shutdown().await;
}
