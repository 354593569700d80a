//! The Duende/Skoruba simulator, driven over HTTP as the STS and the admin API answer.

use serde_json::{Value, json};
use sim_duende::{API_NAME, SimConfig, SimHandle};

const OP: &str = "operator";
const SECRET: &str = "op secret/+";

struct Env {
    sim: SimHandle,
    http: reqwest::Client,
    coder: i64,
}

async fn env_with(config: SimConfig) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = sim_duende::start(config).await.unwrap();
    let mut c = sim_duende::web_client("coder", "Coder");
    c["requirePkce"] = json!(true);
    c["requireConsent"] = json!(false);
    c["claims"] = json!([{"type": "team", "value": "platform"}]);
    c["properties"] = json!([{"key": "owner", "value": "platform"}]);
    let coder = sim.add_client(c);
    sim.add_admin_api_client(OP, SECRET);
    Env {
        sim,
        http: reqwest::Client::new(),
        coder,
    }
}

async fn env() -> Env {
    env_with(SimConfig::default()).await
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn token_for(&self, id: &str, secret: &str, scope: Option<&str>) -> (u16, Value) {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let r = self
            .http
            .post(self.sim.token_url())
            .basic_auth(enc(id), Some(enc(secret)))
            .form(&form)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn token(&self) -> String {
        let (s, v) = self.token_for(OP, SECRET, Some(API_NAME)).await;
        assert_eq!(s, 200, "{v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, String, String) {
        let token = self.token().await;
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status().as_u16(), ct, r.text().await.unwrap())
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn token_endpoint_checks_client_secret_and_scope() {
    let e = env().await;
    let (s, v) = e.token_for(OP, "wrong", None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_client")));
    let (s, v) = e.token_for(OP, SECRET, Some("openid")).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")));
    let (s, v) = e.token_for(OP, SECRET, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["scope"], json!(API_NAME));
    // The JWT carries aud, scope array and the prefixed client claim.
    let payload = v["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_string();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], json!(API_NAME));
    assert_eq!(claims["scope"], json!([API_NAME]));
    assert_eq!(claims["client_role"], json!(sim_duende::ADMIN_ROLE));
}

#[tokio::test]
async fn admin_api_needs_a_bearer_token_with_scope_and_role() {
    let e = env().await;
    let r = e.http.get(e.url("/api/Clients")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert!(r.text().await.unwrap().is_empty());
    let r = e
        .http
        .get(e.url("/api/Clients"))
        .bearer_auth("forged.token.x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A client with the scope but without the role claim: 403, empty body.
    e.sim.add_sts_client("no-role", "s", &[API_NAME], &[]);
    let (_, v) = e.token_for("no-role", "s", None).await;
    let r = e
        .http
        .get(e.url("/api/Clients"))
        .bearer_auth(v["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().is_empty());
    // Expired tokens are refused.
    let t = e.token().await;
    e.sim.expire_tokens();
    let r = e
        .http
        .get(e.url("/api/Clients"))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn space_delimited_scopes_fail_the_policy_with_more_than_one_scope() {
    let e = env_with(SimConfig {
        space_delimited_scopes: true,
        ..SimConfig::default()
    })
    .await;
    e.sim.add_sts_client(
        "two",
        "s",
        &[API_NAME, "other"],
        &[("role", sim_duende::ADMIN_ROLE)],
    );
    let (_, v) = e
        .token_for("two", "s", Some(&format!("{API_NAME} other")))
        .await;
    let r = e
        .http
        .get(e.url("/api/Clients"))
        .bearer_auth(v["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (s, _, _) = e.call(reqwest::Method::GET, "/api/Clients", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn search_pages_and_list_items_carry_only_properties() {
    let e = env().await;
    for n in 0..12 {
        e.sim
            .add_client(sim_duende::web_client(&format!("coder-{n}"), "Other"));
    }
    let (s, _, body) = e
        .call(reqwest::Method::GET, "/api/clients?searchText=coder", None)
        .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["totalCount"], json!(13));
    assert_eq!(v["pageSize"], json!(10));
    assert_eq!(v["clients"].as_array().unwrap().len(), 10);
    let first = &v["clients"][0];
    assert_eq!(first["clientId"], json!("coder"));
    assert_eq!(first["allowedScopes"], json!([]));
    assert_eq!(first["redirectUris"], json!([]));
    assert_eq!(first["claims"], json!([]));
    assert_eq!(first["properties"][0]["key"], json!("owner"));
    let (_, _, body) = e
        .call(
            reqwest::Method::GET,
            "/api/Clients?searchText=coder&page=2&pageSize=10",
            None,
        )
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["clients"].as_array().unwrap().len(), 3);
    // Ordinal "contains" on ClientId or ClientName.
    let (_, _, body) = e
        .call(reqwest::Method::GET, "/api/Clients?searchText=Coder", None)
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["totalCount"], json!(1));
}

#[tokio::test]
async fn get_by_id_and_unknown_ids_are_400_problem_json() {
    let e = env().await;
    let (s, _, body) = e
        .call(
            reqwest::Method::GET,
            &format!("/api/Clients/{}", e.coder),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["allowedScopes"], json!(["openid", "profile", "email"]));
    assert_eq!(v.as_object().unwrap().len(), sim_duende::dto::FIELDS.len());
    let (s, ct, body) = e.call(reqwest::Method::GET, "/api/Clients/999", None).await;
    assert_eq!(s, 400);
    assert!(ct.starts_with("application/problem+json"), "{ct}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["errors"]["Error"],
        json!(["Client with id 999 doesn't exist"])
    );
    assert_eq!(
        v["title"],
        json!("One or more model validation errors occurred.")
    );
    let (s, _, body) = e
        .call(reqwest::Method::GET, "/api/Clients/coder", None)
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("is not valid"), "{body}");
}

#[tokio::test]
async fn put_is_a_full_replace_with_defaults_and_reinserted_children() {
    let e = env().await;
    let before = e.sim.client(e.coder).unwrap();
    // Sending the whole object back with one change changes only that field (and child ids).
    let mut whole = before.clone();
    whole["allowOfflineAccess"] = json!(true);
    let (s, _, _) = e
        .call(reqwest::Method::PUT, "/api/Clients", Some(&whole))
        .await;
    assert_eq!(s, 204);
    let after = e.sim.client(e.coder).unwrap();
    assert_eq!(after["allowOfflineAccess"], json!(true));
    assert_ne!(after["claims"][0]["id"], before["claims"][0]["id"]);
    let strip = |mut v: Value| {
        v["allowOfflineAccess"] = json!(null);
        v["claims"][0]["id"] = json!(null);
        v["properties"][0]["id"] = json!(null);
        v
    };
    assert_eq!(strip(after), strip(before.clone()));
    // A partial body resets everything it leaves out to the DTO defaults.
    let partial = json!({"id": e.coder, "clientId": "coder", "clientName": "Coder", "allowOfflineAccess": true});
    let (s, _, _) = e
        .call(reqwest::Method::PUT, "/api/Clients", Some(&partial))
        .await;
    assert_eq!(s, 204);
    let wiped = e.sim.client(e.coder).unwrap();
    assert_eq!(wiped["requirePkce"], json!(false));
    assert_eq!(wiped["requireConsent"], json!(true));
    assert_eq!(wiped["allowedScopes"], json!([]));
    assert_eq!(wiped["claims"], json!([]));
    assert!(e.sim.validate_recorded_bodies().is_err());
}

#[tokio::test]
async fn put_errors() {
    let e = env().await;
    let other = e.sim.add_client(sim_duende::web_client("other", "Other"));
    let mut c = e.sim.client(other).unwrap();
    c["id"] = json!(4242);
    // The clientId check comes first: with "other" (taken by another id) it is "already exists".
    let (s, _, body) = e.call(reqwest::Method::PUT, "/api/Clients", Some(&c)).await;
    assert_eq!(s, 400);
    assert!(body.contains("Client Id (other) already exists"), "{body}");
    c["clientId"] = json!("brand-new");
    let (s, ct, body) = e.call(reqwest::Method::PUT, "/api/Clients", Some(&c)).await;
    assert_eq!(s, 400);
    assert!(ct.starts_with("application/problem+json"));
    assert!(body.contains("Client with id 4242 doesn't exist"), "{body}");
    let mut c = e.sim.client(other).unwrap();
    c["clientId"] = json!("coder");
    let (s, _, body) = e.call(reqwest::Method::PUT, "/api/Clients", Some(&c)).await;
    assert_eq!(s, 400);
    assert!(body.contains("Client Id (coder) already exists"), "{body}");
    let (s, _, body) = e
        .call(
            reqwest::Method::PUT,
            "/api/Clients",
            Some(&json!({"id": other, "clientId": "other"})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("The ClientName field is required."), "{body}");
    let (s, _, body) = e
        .call(
            reqwest::Method::PUT,
            "/api/Clients",
            Some(&json!({"id": other, "clientId": "other", "clientName": "O", "refreshTokenUsage": null})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("$.refreshTokenUsage"), "{body}");
    // Nothing of it was stored.
    assert_eq!(e.sim.client(other).unwrap()["clientId"], json!("other"));
}

#[tokio::test]
async fn injected_failures_and_counters() {
    let e = env().await;
    e.sim.fail_next(1, 503, Some(7));
    let t = e.token().await;
    let r = e
        .http
        .get(e.url("/api/Clients"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    let r = e
        .http
        .get(e.url("/api/Clients"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c = e.sim.counters();
    assert_eq!(c.calls("GET", sim_duende::CLIENTS_ROUTE), 2);
    assert_eq!(c.token_requests(), 1);
    assert_eq!(e.sim.writes(), 0);
}

#[tokio::test]
async fn offline_access_needs_allow_offline_access() {
    let e = env().await;
    assert_eq!(
        e.sim
            .authorize_scopes(e.coder, &["openid", "offline_access"]),
        Err("invalid_scope")
    );
    e.sim.update_client(e.coder, |c| {
        c.insert("allowOfflineAccess".into(), json!(true));
    });
    assert_eq!(
        e.sim
            .authorize_scopes(e.coder, &["openid", "offline_access"]),
        Ok(())
    );
}
