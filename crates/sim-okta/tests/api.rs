//! The Okta simulator, driven over HTTP as Okta documents its Management API and token endpoint.

use std::time::Duration;

use base64::Engine;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};
use sim_okta::{SimConfig, SimHandle, jose, schema};

const TOKEN: &str = "00sswsAdminToken";
const SERVER: &str = "aus1";

struct Env {
    sim: SimHandle,
    http: reqwest::Client,
    app: String,
}

async fn env_with(config: SimConfig) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = sim_okta::start(config).await.unwrap();
    let mut coder = sim_okta::web_app("0oacoder", "coder-client", "Coder");
    coder["settings"]["oauthClient"]["redirect_uris"] =
        json!(["https://a.example/cb", "https://b.example/cb"]);
    let app = sim.add_app(coder, Some("coder-secret-0123456789"));
    sim.add_api_token(TOKEN);
    sim.add_auth_server(SERVER, "coder");
    sim.add_policy(
        SERVER,
        sim_okta::access_policy("00pB", "Second", 2, &["ALL_CLIENTS"]),
    );
    sim.add_policy(
        SERVER,
        sim_okta::access_policy("00pA", "First", 1, &["coder-client"]),
    );
    sim.add_rule(
        SERVER,
        "00pA",
        sim_okta::access_rule("0prA", "Coder", 1, &["openid"]),
    );
    Env {
        sim,
        http: reqwest::Client::new(),
        app,
    }
}

async fn env() -> Env {
    env_with(SimConfig::default()).await
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("Authorization", format!("SSWS {TOKEN}"));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A P-256 key for signing in tests.
struct Key {
    pair: EcdsaKeyPair,
    jwk: Value,
}

fn key() -> Key {
    let (pem, jwk) = jose::generate_es256();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    Key { pair, jwk }
}

impl Key {
    fn sign(&self, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            jose::b64(header.to_string().as_bytes()),
            jose::b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", jose::b64(sig.as_ref()))
    }

    fn proof(&self, htm: &str, htu: &str, nonce: Option<&str>, ath: Option<&str>) -> String {
        let mut claims =
            json!({"htm": htm, "htu": htu, "iat": now(), "jti": sim_okta::new_id("j")});
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        if let Some(a) = ath {
            claims["ath"] = json!(a);
        }
        self.sign(
            json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}),
            claims,
        )
    }
}

#[tokio::test]
async fn put_replaces_the_whole_app_but_keeps_refresh_settings_and_the_secret() {
    let e = env().await;
    let path = format!("/api/v1/apps/{}", e.app);
    let (s, mut app) = e.get(&path).await;
    assert_eq!(s, 200);
    assert!(
        app["settings"]["oauthClient"]
            .get("refresh_token")
            .is_none()
    );
    assert!(
        app["credentials"]["oauthClient"]
            .get("client_secret")
            .is_none()
    );
    // Enable the refresh grant: the defaults of a web app appear.
    app["settings"]["oauthClient"]["grant_types"] = json!(["authorization_code", "refresh_token"]);
    app["id"] = json!("ignored");
    let (s, put) = e.put(&path, &app).await;
    assert_eq!(s, 200, "{put}");
    assert_eq!(
        put["id"],
        e.app.as_str(),
        "system fields in the body are ignored"
    );
    assert_eq!(
        put["credentials"]["oauthClient"]["client_secret"], "coder-secret-0123456789",
        "the secret is shown in the answer to an update"
    );
    assert_eq!(
        put["settings"]["oauthClient"]["refresh_token"],
        json!({"rotation_type": "STATIC", "leeway": 30})
    );
    // Rotate with a leeway, then omit the object: the stored values stay.
    app["settings"]["oauthClient"]["refresh_token"] =
        json!({"rotation_type": "ROTATE", "leeway": 45});
    assert_eq!(e.put(&path, &app).await.0, 200);
    app["settings"]["oauthClient"]
        .as_object_mut()
        .unwrap()
        .remove("refresh_token");
    // Full replace: redirect URIs left out are gone.
    app["settings"]["oauthClient"]
        .as_object_mut()
        .unwrap()
        .remove("redirect_uris");
    let (s, put) = e.put(&path, &app).await;
    assert_eq!(s, 200);
    assert_eq!(
        put["settings"]["oauthClient"]["refresh_token"],
        json!({"rotation_type": "ROTATE", "leeway": 45})
    );
    assert!(
        put["settings"]["oauthClient"]
            .get("redirect_uris")
            .is_none()
    );
    assert_eq!(
        e.sim.app_secret(&e.app).as_deref(),
        Some("coder-secret-0123456789")
    );
    // Removing the grant hides the object; it comes back as it was.
    app["settings"]["oauthClient"]["grant_types"] = json!(["authorization_code"]);
    let (_, put) = e.put(&path, &app).await;
    assert!(
        put["settings"]["oauthClient"]
            .get("refresh_token")
            .is_none()
    );
    app["settings"]["oauthClient"]["grant_types"] = json!(["authorization_code", "refresh_token"]);
    let (_, put) = e.put(&path, &app).await;
    assert_eq!(
        put["settings"]["oauthClient"]["refresh_token"]["leeway"],
        45
    );
    assert_eq!(e.sim.validate_recorded_bodies(), Ok(5));
}

#[tokio::test]
async fn invalid_app_bodies_are_rejected_with_okta_error_bodies() {
    let e = env().await;
    let path = format!("/api/v1/apps/{}", e.app);
    let (_, app) = e.get(&path).await;
    for (edit, needle) in [
        (json!({"rotation_type": "ROTATE", "leeway": 61}), "maximum"),
        (json!({"rotation_type": "SOMETIMES"}), "is not one of"),
        (json!({"leeway": 10}), "rotation_type"),
    ] {
        let mut bad = app.clone();
        bad["settings"]["oauthClient"]["refresh_token"] = edit;
        let (s, body) = e.put(&path, &bad).await;
        assert_eq!(s, 400);
        assert_eq!(body["errorCode"], "E0000001");
        assert!(
            body["errorSummary"]
                .as_str()
                .unwrap()
                .starts_with("Api validation failed")
        );
        let causes = body["errorCauses"].to_string();
        assert!(causes.contains(needle), "{causes}");
    }
    let mut bad = app.clone();
    bad["settings"]["oauthClient"]["grant_types"] = json!(["authorization_code", "magic"]);
    assert_eq!(e.put(&path, &bad).await.0, 400);
    let mut bad = app.clone();
    bad["credentials"]["oauthClient"]["client_id"] = json!("another-client");
    assert_eq!(e.put(&path, &bad).await.0, 400);
    let mut bad = app.clone();
    bad.as_object_mut().unwrap().remove("label");
    assert_eq!(e.put(&path, &bad).await.0, 400);
    assert_eq!(e.put("/api/v1/apps/0oanope", &app).await.0, 404);
    assert!(e.sim.validate_recorded_bodies().is_err());
}

#[tokio::test]
async fn bad_credentials_are_e0000011_and_every_answer_has_rate_limit_headers() {
    let e = env().await;
    let resp = e
        .http
        .get(e.url("/api/v1/apps"))
        .header("Authorization", "SSWS wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let h = resp.headers().clone();
    for k in [
        "x-rate-limit-limit",
        "x-rate-limit-remaining",
        "x-rate-limit-reset",
        "date",
        "x-okta-request-id",
    ] {
        assert!(h.contains_key(k), "{k}");
    }
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errorCode"], "E0000011");
    assert_eq!(body["errorSummary"], "Invalid token provided");
}

#[tokio::test]
async fn past_the_limit_okta_answers_429_until_the_window_resets() {
    let e = env().await;
    e.sim.set_rate_limit(2, Duration::from_secs(1));
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = e
            .http
            .get(e.url("/api/v1/apps"))
            .header("Authorization", format!("SSWS {TOKEN}"))
            .send()
            .await
            .unwrap();
        let h = resp.headers();
        remaining.push((
            resp.status().as_u16(),
            h["x-rate-limit-remaining"].to_str().unwrap().to_string(),
        ));
        if resp.status() == 429 {
            let reset: u64 = h["x-rate-limit-reset"].to_str().unwrap().parse().unwrap();
            assert!(reset as i64 >= now());
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["errorCode"], "E0000047");
        }
    }
    assert_eq!(
        remaining,
        vec![(200, "1".into()), (200, "0".into()), (429, "0".into())]
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(e.get("/api/v1/apps").await.0, 200);
}

#[tokio::test]
async fn apps_list_pages_and_accepts_only_the_documented_filters() {
    let e = env().await;
    for n in 0..5 {
        e.sim.add_app(
            sim_okta::web_app(
                &format!("0oaextra{n}"),
                &format!("client-extra-{n}"),
                &format!("Extra {n}"),
            ),
            None,
        );
    }
    let (s, body) = e
        .get("/api/v1/apps?filter=credentials.oauthClient.client_id%20eq%20%22coder-client%22")
        .await;
    assert_eq!(s, 400);
    assert_eq!(body["errorCode"], "E0000001");
    let mut url = e.url("/api/v1/apps?filter=name%20eq%20%22oidc_client%22&limit=2");
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let resp = e
            .http
            .get(&url)
            .header("Authorization", format!("SSWS {TOKEN}"))
            .send()
            .await
            .unwrap();
        let next = resp
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|l| l.ends_with("rel=\"next\""))
            .map(|l| l.split(['<', '>']).nth(1).unwrap().to_string());
        let page: Vec<Value> = resp.json().await.unwrap();
        seen += page.len();
        pages += 1;
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    assert_eq!((seen, pages), (6, 3));
    let (_, found) = e.get("/api/v1/apps?q=cod").await;
    assert_eq!(found.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn rules_are_replaced_whole_within_okta_ranges() {
    let e = env().await;
    let (_, policies) = e
        .get(&format!("/api/v1/authorizationServers/{SERVER}/policies"))
        .await;
    let ids: Vec<&str> = policies
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["00pA", "00pB"], "policies come in priority order");
    let path = format!("/api/v1/authorizationServers/{SERVER}/policies/00pA/rules/0prA");
    let (_, rule) = e.get(&path).await;
    for (token, field) in [
        (
            json!({"accessTokenLifetimeMinutes": 4}),
            "accessTokenLifetimeMinutes",
        ),
        (
            json!({"accessTokenLifetimeMinutes": 60, "refreshTokenLifetimeMinutes": 30}),
            "refreshTokenLifetimeMinutes",
        ),
        (
            json!({"refreshTokenWindowMinutes": 2_628_001}),
            "refreshTokenWindowMinutes",
        ),
        (
            json!({"accessTokenLifetimeMinutes": "60"}),
            "expected integer",
        ),
    ] {
        let mut bad = rule.clone();
        bad["actions"]["token"] = token;
        let (s, body) = e.put(&path, &bad).await;
        assert_eq!(s, 400, "{body}");
        assert!(body["errorCauses"].to_string().contains(field), "{body}");
    }
    let mut bad = rule.clone();
    bad.as_object_mut().unwrap().remove("conditions");
    assert_eq!(e.put(&path, &bad).await.0, 400);
    let mut good = rule.clone();
    good["actions"]["token"] = json!({"accessTokenLifetimeMinutes": 30, "refreshTokenLifetimeMinutes": 129600, "refreshTokenWindowMinutes": 43200});
    good["conditions"]["scopes"]["include"] = json!(["openid", "offline_access"]);
    let (s, put) = e.put(&path, &good).await;
    assert_eq!(s, 200, "{put}");
    assert_eq!(
        put["actions"]["token"]["refreshTokenLifetimeMinutes"],
        129600
    );
    assert_eq!(
        e.sim.rule(SERVER, "00pA", "0prA").unwrap()["conditions"]["scopes"]["include"][1],
        "offline_access"
    );
    let (_, scopes) = e
        .get(&format!("/api/v1/authorizationServers/{SERVER}/scopes"))
        .await;
    assert!(
        scopes
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "offline_access" && s["system"] == true)
    );
}

#[tokio::test]
async fn service_apps_get_dpop_bound_tokens_after_the_nonce_handshake() {
    let e = env().await;
    let client_key = key();
    let mut jwk = client_key.jwk.clone();
    jwk["kid"] = json!("k1");
    e.sim.add_service_app(
        "0oasvc",
        jwk,
        true,
        &["okta.apps.read", "okta.authorizationServers.read"],
    );
    let token_url = e.url("/oauth2/v1/token");
    let assertion = || {
        client_key.sign(
            json!({"alg": "ES256", "kid": "k1"}),
            json!({"iss": "0oasvc", "sub": "0oasvc", "aud": token_url, "iat": now(), "exp": now() + 300, "jti": sim_okta::new_id("j")}),
        )
    };
    let form = |a: String| {
        vec![
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("scope".to_string(), "okta.apps.read".to_string()),
            (
                "client_assertion_type".to_string(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ),
            ("client_assertion".to_string(), a),
        ]
    };
    // No proof.
    let resp = e
        .http
        .post(&token_url)
        .form(&form(assertion()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_dpop_proof"
    );
    // A proof without a nonce: the nonce comes back.
    let dpop = key();
    let resp = e
        .http
        .post(&token_url)
        .header("DPoP", dpop.proof("POST", &token_url, None, None))
        .form(&form(assertion()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let nonce = resp.headers()["dpop-nonce"].to_str().unwrap().to_string();
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "use_dpop_nonce"
    );
    // A wrong signature on the assertion.
    let forged = key().sign(
        json!({"alg": "ES256", "kid": "k1"}),
        json!({"iss": "0oasvc", "sub": "0oasvc", "aud": token_url, "iat": now(), "exp": now() + 300, "jti": "x"}),
    );
    let resp = e
        .http
        .post(&token_url)
        .header("DPoP", dpop.proof("POST", &token_url, Some(&nonce), None))
        .form(&form(forged))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // With the nonce.
    let resp = e
        .http
        .post(&token_url)
        .header("DPoP", dpop.proof("POST", &token_url, Some(&nonce), None))
        .form(&form(assertion()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["token_type"], "DPoP");
    let access = t["access_token"].as_str().unwrap().to_string();
    let apps_url = e.url("/api/v1/apps");
    // As a bearer token: refused.
    let s = e
        .http
        .get(&apps_url)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 401);
    // With a proof from another key: refused.
    let s = e
        .http
        .get(&apps_url)
        .header("Authorization", format!("DPoP {access}"))
        .header(
            "DPoP",
            key().proof("GET", &apps_url, None, Some(&jose::ath(&access))),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 401);
    let s = e
        .http
        .get(&apps_url)
        .header("Authorization", format!("DPoP {access}"))
        .header(
            "DPoP",
            dpop.proof("GET", &apps_url, None, Some(&jose::ath(&access))),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 200);
    // A write needs okta.apps.manage.
    let app_url = e.url(&format!("/api/v1/apps/{}", e.app));
    let (_, app) = e.get(&format!("/api/v1/apps/{}", e.app)).await;
    let resp = e
        .http
        .put(&app_url)
        .header("Authorization", format!("DPoP {access}"))
        .header(
            "DPoP",
            dpop.proof("PUT", &app_url, None, Some(&jose::ath(&access))),
        )
        .json(&app)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.json::<Value>().await.unwrap()["errorCode"], "E0000006");
}

#[test]
fn the_contract_excerpts_load_and_carry_the_refresh_schemas() {
    for name in [
        "Application",
        "OpenIdConnectApplicationSettingsRefreshToken",
        "AuthorizationServerPolicyRuleRequest",
        "TokenAuthorizationServerPolicyRuleAction",
        "GrantType",
    ] {
        assert!(schema::schemas().contains_key(name), "{name}");
    }
    assert_eq!(
        schema::error_example("ErrorTooManyRequests").unwrap()["errorCode"],
        "E0000047"
    );
    let rule = sim_okta::access_rule("r", "n", 1, &["*"]);
    assert!(schema::validate_rule(&rule).is_empty());
    let app = sim_okta::web_app("0oa1", "client1", "X");
    assert!(
        schema::validate_app(&app).is_empty(),
        "{:?}",
        schema::validate_app(&app)
    );
}
