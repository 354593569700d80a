//! The Logto simulator, driven over HTTP as Logto documents its Management API and token endpoint.

use std::time::Duration;

use serde_json::{Value, json};
use sim_logto::{SimConfig, SimHandle, schema};

const M2M: &str = "m2mapp0000000000000001";
const SECRET: &str = "m2m-secret";

struct Env {
    sim: SimHandle,
    http: reqwest::Client,
    app: String,
}

async fn env_with(config: SimConfig) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = sim_logto::start(config).await.unwrap();
    let mut row = sim_logto::traditional_app("coderapp", "Coder");
    row["customClientMetadata"] =
        json!({"corsAllowedOrigins": ["https://coder.example.com"], "idTokenTtl": 600});
    let app = sim.add_application(row, Some("coder-secret"));
    sim.add_m2m_app(M2M, SECRET, true);
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

    async fn token_form(&self, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
        let mut req = self.http.post(self.url("/oidc/token")).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let resp = req.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn token(&self) -> String {
        let indicator = self.sim.indicator();
        let (status, body) = self
            .token_form(
                &[
                    ("grant_type", "client_credentials"),
                    ("resource", &indicator),
                    ("scope", "all"),
                ],
                Some((M2M, SECRET)),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn get(&self, token: &str, id: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(self.url(&format!("/api/applications/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    async fn patch(&self, token: &str, id: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .patch(self.url(&format!("/api/applications/{id}")))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }
}

#[tokio::test]
async fn client_credentials_with_basic_or_body_but_not_both() {
    let e = env().await;
    let ind = e.sim.indicator();
    assert_eq!(ind, "https://default.logto.app/api");
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", ind.as_str()),
        ("scope", "all"),
    ];
    let (s, b) = e.token_form(&form, Some((M2M, SECRET))).await;
    assert_eq!((s, b["scope"].as_str()), (200, Some("all")), "{b}");
    assert_eq!(b["token_type"], "Bearer");
    let mut body_form = form.to_vec();
    body_form.extend([("client_id", M2M), ("client_secret", SECRET)]);
    let (s, _) = e.token_form(&body_form, None).await;
    assert_eq!(s, 200);
    let (s, b) = e.token_form(&body_form, Some((M2M, SECRET))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_request")),
        "{b}"
    );
    let (s, b) = e.token_form(&form, Some((M2M, "nope"))).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")));
    // A Traditional app cannot use client credentials.
    let (s, b) = e.token_form(&form, Some((&e.app, "coder-secret"))).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("unauthorized_client")));
}

/// HTTP Basic as node-oidc-provider reads it (`lib/shared/client_auth.js`): the scheme in any
/// case, id and secret form-URL-decoded (RFC 6749 §2.3.1), only VSCHAR after decoding.
#[tokio::test]
async fn basic_credentials_are_form_url_decoded() {
    use base64::Engine;
    let e = env().await;
    let ind = e.sim.indicator();
    let form = [
        ("grant_type", "client_credentials"),
        ("resource", ind.as_str()),
        ("scope", "all"),
    ];
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let with_header = |value: String| {
        let req = e
            .http
            .post(e.url("/oidc/token"))
            .header("authorization", value)
            .form(&form);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // `+` in a secret is sent as `%2B`, `%` as `%25`, `:` as `%3A`, a space as `+`.
    let secret = "a+b%c:d e~";
    e.sim.set_secret(M2M, secret);
    let encoded = format!("{M2M}:a%2Bb%25c%3Ad+e~");
    for scheme in ["Basic", "basic", "BASIC"] {
        let (s, b) = with_header(format!("{scheme} {}", b64(&encoded))).await;
        assert_eq!(s, 200, "{scheme}: {b}");
    }
    // Sent unencoded, `+` reads as a space and `%c:` is not an escape.
    let (s, b) = with_header(format!("Basic {}", b64(&format!("{M2M}:{secret}")))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_request")),
        "{b}"
    );
    e.sim.set_secret(M2M, "a+b");
    let (s, b) = with_header(format!("Basic {}", b64(&format!("{M2M}:a+b")))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("invalid_client")),
        "{b}"
    );
    let (s, b) = with_header(format!("Basic {}", b64(&format!("{M2M}:a%2Bb")))).await;
    assert_eq!(s, 200, "{b}");
    // Outside VSCHAR after decoding (non-ASCII, control characters): refused, whatever the secret.
    for bad in ["d%C3%A9", "d\u{e9}", "a%0Ab"] {
        let (s, b) = with_header(format!("Basic {}", b64(&format!("{M2M}:{bad}")))).await;
        assert_eq!(
            (s, b["error_description"].as_str()),
            (
                400,
                Some(
                    "client_id and client_secret in the authorization header are not properly encoded"
                )
            ),
            "{bad}: {b}"
        );
    }
    // Exactly one space between scheme and value; another scheme is not client authentication.
    for value in [
        format!("Basic  {}", b64(&format!("{M2M}:a%2Bb"))),
        format!("Bearer {}", b64(&format!("{M2M}:a%2Bb"))),
        format!("Basic {}", b64("no-colon")),
    ] {
        let (s, b) = with_header(value.clone()).await;
        assert_eq!(
            (s, b["error_description"].as_str()),
            (400, Some("invalid authorization header value format")),
            "{value}: {b}"
        );
    }
    // An empty secret.
    let (s, b) = with_header(format!("Basic {}", b64(&format!("{M2M}:")))).await;
    assert_eq!(
        (s, b["error_description"].as_str()),
        (
            400,
            Some("client_secret must be provided in the Authorization header")
        ),
        "{b}"
    );
}

/// koa-auth's `extractBearerTokenFromHeaders`: the header must start with `Bearer` (case and
/// all); the token is what follows `Bearer` and one more character, not trimmed.
#[tokio::test]
async fn bearer_scheme_is_matched_as_koa_auth_does() {
    let e = env().await;
    let t = e.token().await;
    let get = |value: String| {
        let req = e
            .http
            .get(e.url(&format!("/api/applications/{}", e.app)))
            .header("authorization", value);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // The character after `Bearer` is dropped whatever it is.
    for value in [format!("Bearer {t}"), format!("Bearer\t{t}")] {
        let (s, b) = get(value.clone()).await;
        assert_eq!(s, 200, "{value:?}: {b}");
    }
    for scheme in ["bearer", "BEARER", "Basic"] {
        let (s, b) = get(format!("{scheme} {t}")).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (401, Some("auth.authorization_token_type_not_supported")),
            "{scheme}: {b}"
        );
    }
    // A second space becomes part of the token, which then fails verification.
    for value in [format!("Bearer  {t}"), format!("Bearer \t{t}")] {
        let (s, b) = get(value.clone()).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (401, Some("auth.unauthorized")),
            "{value:?}: {b}"
        );
    }
}

#[tokio::test]
async fn resource_indicator_and_scope_all_are_checked() {
    let e = env_with(SimConfig {
        tenant_id: "acme42".into(),
        ..Default::default()
    })
    .await;
    let form = |r: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("resource", r),
            ("scope", "all"),
        ]
    };
    // The OSS indicator on a Cloud tenant.
    let (s, b) = e
        .token_form(&form("https://default.logto.app/api"), Some((M2M, SECRET)))
        .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_target")));
    // Without a resource: an opaque token the Management API refuses.
    let (s, b) = e
        .token_form(
            &[("grant_type", "client_credentials"), ("scope", "all")],
            Some((M2M, SECRET)),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = e.get(b["access_token"].as_str().unwrap(), &e.app).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("auth.unauthorized")));
    // No role with `all`: a token without the scope, then 403.
    e.sim.set_management_all(M2M, false);
    let (s, b) = e
        .token_form(&form("https://acme42.logto.app/api"), Some((M2M, SECRET)))
        .await;
    assert_eq!((s, b.get("scope")), (200, None), "{b}");
    let (s, b) = e.get(b["access_token"].as_str().unwrap(), &e.app).await;
    assert_eq!((s, b["code"].as_str()), (403, Some("auth.forbidden")));
}

#[tokio::test]
async fn management_api_authentication_errors() {
    let e = env().await;
    let r = e
        .http
        .get(e.url(&format!("/api/applications/{}", e.app)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "auth.authorization_header_missing"
    );
    let r = e
        .http
        .get(e.url(&format!("/api/applications/{}", e.app)))
        .basic_auth("a", Some("b"))
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "auth.authorization_token_type_not_supported");
    assert_eq!(b["data"]["supportedTypes"], json!(["Bearer"]));
    let t = e.token().await;
    e.sim.expire_tokens();
    let (s, b) = e.get(&t, &e.app).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("auth.unauthorized")));
}

#[tokio::test]
async fn get_adds_is_admin_and_404_names_the_table() {
    let e = env().await;
    let t = e.token().await;
    let (s, b) = e.get(&t, &e.app).await;
    assert_eq!(s, 200);
    assert_eq!(b["isAdmin"], false);
    assert_eq!(b["type"], "Traditional");
    let (s, b) = e.get(&t, "missing").await;
    assert_eq!(s, 404);
    assert_eq!(b["code"], "entity.not_exists_with_id");
    assert_eq!(
        b["message"],
        "The applications with ID `missing` does not exist."
    );
}

#[tokio::test]
async fn patch_replaces_jsonb_objects_wholesale_and_keeps_omitted_keys() {
    let e = env().await;
    let t = e.token().await;
    let (s, b) = e
        .patch(
            &t,
            &e.app,
            &json!({"customClientMetadata": {"refreshTokenTtlInDays": 30}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b.get("isAdmin").is_none(),
        "the PATCH answer has no isAdmin"
    );
    // corsAllowedOrigins and idTokenTtl are gone: the object was replaced.
    assert_eq!(
        b["customClientMetadata"],
        json!({"refreshTokenTtlInDays": 30})
    );
    // Omitted top-level keys are unchanged.
    assert_eq!(b["name"], "Coder");
    assert_eq!(
        b["oidcClientMetadata"]["redirectUris"],
        json!(["https://coder.example.com/api/v2/users/oidc/callback"])
    );
    // Unknown and not-patchable keys are dropped without an error.
    let (s, b) = e
        .patch(
            &t,
            &e.app,
            &json!({"type": "MachineToMachine", "bogus": 1,
                    "customClientMetadata": {"rotateRefreshToken": false, "nope": true}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["type"], "Traditional");
    assert!(b.get("bogus").is_none());
    assert_eq!(
        b["customClientMetadata"],
        json!({"rotateRefreshToken": false})
    );
    // … but the strict check of recorded bodies reports them.
    let errors = e.sim.validate_recorded_bodies().unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

#[tokio::test]
async fn ttl_is_an_integer_from_1_to_180_or_90_before_1_34() {
    let e = env().await;
    let t = e.token().await;
    for (v, ok) in [
        (json!(1), true),
        (json!(180), true),
        (json!(181), false),
        (json!(0), false),
        (json!(1.5), false),
        (json!("30"), false),
    ] {
        let (s, b) = e
            .patch(
                &t,
                &e.app,
                &json!({"customClientMetadata": {"refreshTokenTtlInDays": v}}),
            )
            .await;
        if ok {
            assert_eq!(s, 200, "{v}: {b}");
        } else {
            assert_eq!(
                (s, b["code"].as_str()),
                (400, Some("guard.invalid_input")),
                "{v}: {b}"
            );
            assert!(
                b["details"].as_str().unwrap().starts_with(
                    "Error in key path \"customClientMetadata.refreshTokenTtlInDays\""
                ),
                "{b}"
            );
        }
    }
    let old = env_with(SimConfig {
        max_ttl_days: sim_logto::LEGACY_MAX_TTL_DAYS,
        ..Default::default()
    })
    .await;
    let t = old.token().await;
    let (s, b) = old
        .patch(
            &t,
            &old.app,
            &json!({"customClientMetadata": {"refreshTokenTtlInDays": 120}}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        b["details"]
            .as_str()
            .unwrap()
            .ends_with("(too_big) Number must be less than or equal to 90"),
        "{b}"
    );
}

#[tokio::test]
async fn body_is_checked_before_the_app_is_looked_up_and_422s() {
    let e = env().await;
    let t = e.token().await;
    let (s, _) = e
        .patch(
            &t,
            "missing",
            &json!({"customClientMetadata": {"refreshTokenTtlInDays": 999}}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = e
        .patch(&t, "missing", &json!({"customClientMetadata": {}}))
        .await;
    assert_eq!(s, 404);
    let (s, b) = e
        .patch(
            &t,
            &e.app,
            &json!({"customClientMetadata": {"isDeviceFlow": true}}),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (422, Some("application.device_flow_not_changeable"))
    );
    e.sim.update_application(&e.app, |r| {
        r.insert("isThirdParty".into(), json!(true));
    });
    let (s, b) = e
        .patch(
            &t,
            &e.app,
            &json!({"customClientMetadata": {"allowTokenExchange": true}}),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (
            422,
            Some("application.third_party_application_cannot_enable_token_exchange")
        )
    );
    e.sim.update_application(&e.app, |r| {
        r.insert("type".into(), json!("SAML"));
    });
    let (s, b) = e.patch(&t, &e.app, &json!({"name": "x"})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("application.saml.use_saml_app_api"))
    );
    // oidcClientMetadata requires both arrays.
    let (s, b) = e
        .patch(
            &t,
            &e.app,
            &json!({"oidcClientMetadata": {"redirectUris": []}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test]
async fn faults_latency_and_counters() {
    let e = env().await;
    let t = e.token().await;
    e.sim.fail_next(2, 429, Some(2));
    let r = e
        .http
        .get(e.url(&format!("/api/applications/{}", e.app)))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    let (s, _) = e.get(&t, &e.app).await;
    assert_eq!(s, 429);
    e.sim.fail_next(1, 500, None);
    let (s, b) = e.get(&t, &e.app).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("Internal server error."))
    );
    let (s, _) = e.get(&t, &e.app).await;
    assert_eq!(s, 200);
    e.sim.set_latency(Duration::from_millis(200));
    let started = std::time::Instant::now();
    e.get(&t, &e.app).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    let c = e.sim.counters();
    assert_eq!(c.token_requests(), 1);
    assert_eq!(c.calls("GET", sim_logto::APP_ROUTE), 5);
    assert_eq!(c.with_status(429), 2);
    assert_eq!(c.writes(), 0);
}

#[tokio::test]
async fn offline_access_needs_prompt_consent_unless_always_issue() {
    let e = env().await;
    let scopes = ["openid", "offline_access"];
    assert!(!e.sim.would_issue_refresh_token(&e.app, &scopes, None));
    assert!(
        !e.sim
            .would_issue_refresh_token(&e.app, &scopes, Some("login"))
    );
    assert!(
        e.sim
            .would_issue_refresh_token(&e.app, &scopes, Some("consent"))
    );
    assert!(
        !e.sim
            .would_issue_refresh_token(M2M, &scopes, Some("consent"))
    );
    e.sim.update_application(&e.app, |r| {
        r.insert(
            "customClientMetadata".into(),
            json!({"alwaysIssueRefreshToken": true}),
        );
    });
    assert!(e.sim.would_issue_refresh_token(&e.app, &["openid"], None));
}

#[test]
fn derived_schema_keys_match_the_official_generated_types() {
    let derived = schema::patch_schema();
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    let mut official = schema::dts_object_keys("requestBody", "customClientMetadata");
    official.sort();
    assert!(!official.is_empty());
    assert_eq!(
        keys(&derived["properties"]["customClientMetadata"]),
        official
    );
    let mut official = schema::dts_object_keys("requestBody", "oidcClientMetadata");
    official.sort();
    assert_eq!(keys(&derived["properties"]["oidcClientMetadata"]), official);
}

#[test]
fn seed_sandbox_is_described() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sim = sim_logto::start(SimConfig::default()).await.unwrap();
        let seed = sim.seed_sandbox();
        assert_eq!(seed.secret_name, "logto-m2m");
        assert!(seed.secret_data.contains_key("client-id"));
        let lines = sim.describe_client();
        assert!(lines.contains(&(
            "customClientMetadata.refreshTokenTtlInDays".to_string(),
            "14 (default)".to_string()
        )));
        sim.shutdown().await;
    });
}
