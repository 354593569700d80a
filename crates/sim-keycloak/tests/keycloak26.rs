//! Keycloak 26 behaviours the simulator models beyond plain CRUD: HTTP Basic client
//! authentication, trailing slashes, disabled clients, 60 s master tokens, `query-clients`, the
//! realm update's resets, attribute replacement, and the refresh/offline lifetimes of
//! `SessionExpirationUtils`.

use std::sync::Once;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sim_keycloak::{SimConfig, SimHandle, session_deadlines};

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
    sim.add_client("coder", c);
    sim.add_service_account(
        "coder",
        "op",
        "op secret&=:",
        "coder",
        &["manage-clients", "manage-realm"],
    );
    sim.add_service_account("coder", "q", "q-secret", "coder", &["query-clients"]);
    sim
}

async fn post_token(
    sim: &SimHandle,
    realm: &str,
    form: &[(&str, &str)],
    basic: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = client()
        .post(format!(
            "{}/realms/{realm}/protocol/openid-connect/token",
            sim.base_url()
        ))
        .form(form);
    if let Some(b) = basic {
        req = req.header("authorization", format!("Basic {b}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn b64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Form-encodes as RFC 6749 §2.3.1 wants for the Basic credentials.
fn form_enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn op_token(sim: &SimHandle) -> String {
    let basic = b64(&format!("{}:{}", form_enc("op"), form_enc("op secret&=:")));
    let (s, v) = post_token(
        sim,
        "coder",
        &[("grant_type", "client_credentials")],
        Some(&basic),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["access_token"].as_str().unwrap().to_string()
}

async fn call(
    sim: &SimHandle,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client()
        .request(method, format!("{}{path}", sim.base_url()))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let mut bits = 0u32;
    let mut acc = 0u32;
    let mut out = Vec::new();
    for c in payload.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            _ => 63,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    serde_json::from_slice(&out).unwrap()
}

#[tokio::test]
async fn basic_auth_disabled_clients_and_master_token_lifespan() {
    let sim = sim().await;
    let t = op_token(&sim).await;
    let c = jwt_claims(&t);
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
    // Wrong secret in the header.
    let basic = b64("op:wrong");
    let (s, v) = post_token(
        &sim,
        "coder",
        &[("grant_type", "client_credentials")],
        Some(&basic),
    )
    .await;
    assert_eq!(
        (s, v),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"})
        )
    );
    // A disabled client gets no token, with the answer of an unknown client.
    sim.update_client("coder", "op", |c| {
        c.insert("enabled".into(), json!(false));
    });
    let basic = b64(&format!("op:{}", form_enc("op secret&=:")));
    let (s, v) = post_token(
        &sim,
        "coder",
        &[("grant_type", "client_credentials")],
        Some(&basic),
    )
    .await;
    assert_eq!(
        (s, v),
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"})
        )
    );
    // Master tokens last 60 s.
    sim.add_service_account("master", "root", "root-secret", "coder", &["realm-admin"]);
    let (s, v) = post_token(
        &sim,
        "master",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "root"),
            ("client_secret", "root-secret"),
        ],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["expires_in"], json!(60));
    let token = v["access_token"].as_str().unwrap().to_string();
    sim.advance_clock(Duration::from_secs(61));
    let (s, _) = call(
        &sim,
        reqwest::Method::GET,
        "/admin/realms/coder",
        &token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "expired after 60 s");
    sim.shutdown().await;
}

#[tokio::test]
async fn trailing_slashes_and_query_clients() {
    let sim = sim().await;
    let t = op_token(&sim).await;
    for path in [
        "/admin/realms/coder/clients/",
        "/admin/realms/coder/client-scopes/",
        "/admin/realms/coder/roles/",
        "/admin/realms/coder/",
    ] {
        let (s, v) = call(&sim, reqwest::Method::GET, path, &t, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
    }
    let (s, v) = call(
        &sim,
        reqwest::Method::GET,
        "/admin/realms/coder/clients/?clientId=coder",
        &t,
        None,
    )
    .await;
    assert_eq!((s, v.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    assert!(sim.counters().calls("GET", "/admin/realms/{realm}/clients") >= 2);
    // query-clients only: the list is empty, a client is forbidden, an unknown id too.
    let (s, v) = post_token(
        &sim,
        "coder",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "q"),
            ("client_secret", "q-secret"),
        ],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let q = v["access_token"].as_str().unwrap().to_string();
    let (s, v) = call(
        &sim,
        reqwest::Method::GET,
        "/admin/realms/coder/clients?clientId=coder",
        &q,
        None,
    )
    .await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
    let id = sim.client("coder", "coder").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = call(
        &sim,
        reqwest::Method::GET,
        &format!("/admin/realms/coder/clients/{id}"),
        &q,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &sim,
        reqwest::Method::GET,
        "/admin/realms/coder/clients/nope",
        &q,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "query-clients may list, so 404");
    sim.shutdown().await;
}

#[tokio::test]
async fn realm_update_resets_device_ciba_par_and_replaces_attributes() {
    let sim = sim().await;
    let t = op_token(&sim).await;
    sim.update_realm("coder", |r| {
        r.insert("oauth2DeviceCodeLifespan".into(), json!(1200));
        r.insert("clientSessionIdleTimeout".into(), json!(900));
        let a = r["attributes"].as_object_mut().unwrap();
        a.insert("cibaInterval".into(), json!("30"));
        a.insert("parRequestUriLifespan".into(), json!("120"));
        a.insert("custom".into(), json!("x"));
    });
    let (s, _) = call(
        &sim,
        reqwest::Method::PUT,
        "/admin/realms/coder",
        &t,
        Some(json!({"revokeRefreshToken": true, "refreshTokenMaxReuse": 0})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let r = sim.realm("coder").unwrap();
    assert_eq!(r["revokeRefreshToken"], json!(true));
    assert_eq!(r["oauth2DeviceCodeLifespan"], json!(600), "reset");
    assert_eq!(r["attributes"]["cibaInterval"], json!("5"), "reset");
    assert_eq!(
        r["attributes"]["parRequestUriLifespan"],
        json!("60"),
        "reset"
    );
    assert_eq!(r["attributes"]["custom"], json!("x"), "kept");
    assert_eq!(r["clientSessionIdleTimeout"], json!(900), "kept");
    // Attributes replace: the others go, attribute-backed settings fall back to 0.
    let (s, _) = call(
        &sim,
        reqwest::Method::PUT,
        "/admin/realms/coder",
        &t,
        Some(json!({"attributes": {"new": "1"}})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let r = sim.realm("coder").unwrap();
    assert!(r["attributes"].get("custom").is_none());
    assert_eq!(r["attributes"]["new"], json!("1"));
    assert_eq!(r["clientSessionIdleTimeout"], json!(0));
    assert_eq!(r["revokeRefreshToken"], json!(true), "top-level kept");
    // A bad CIBA number is a server error and changes nothing.
    let (s, _) = call(
        &sim,
        reqwest::Method::PUT,
        "/admin/realms/coder",
        &t,
        Some(json!({"accessTokenLifespan": 1, "attributes": {"cibaInterval": "soon"}})),
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        sim.realm("coder").unwrap()["accessTokenLifespan"],
        json!(300)
    );
    sim.shutdown().await;
}

fn secs(d: (i64, Option<i64>)) -> (i64, Option<i64>) {
    d
}

#[test]
fn session_lifetimes_follow_session_expiration_utils() {
    let realm = json!({"ssoSessionIdleTimeout": 1800, "ssoSessionMaxLifespan": 36000,
        "offlineSessionIdleTimeout": 2592000, "offlineSessionMaxLifespanEnabled": false,
        "offlineSessionMaxLifespan": 5184000, "clientSessionIdleTimeout": 0,
        "clientSessionMaxLifespan": 0, "clientOfflineSessionIdleTimeout": 0,
        "clientOfflineSessionMaxLifespan": 0});
    let plain = json!({"attributes": {}});
    // Online: SSO idle/max.
    assert_eq!(
        secs(session_deadlines(&realm, &plain, false, 0, 0)),
        (1800, Some(36000))
    );
    // Client attributes shorten (and cannot lengthen beyond the user session).
    let c = json!({"attributes": {"client.session.idle.timeout": "600", "client.session.max.lifespan": "99999"}});
    assert_eq!(
        session_deadlines(&realm, &c, false, 0, 0),
        (600, Some(36000))
    );
    // Offline, realm switch off, no client attribute: no max at all.
    assert_eq!(
        session_deadlines(&realm, &plain, true, 0, 0),
        (2592000, None)
    );
    // Offline, realm switch off, client attribute set: the attribute is enforced.
    let c = json!({"attributes": {"client.offline.session.max.lifespan": "86400"}});
    assert_eq!(
        session_deadlines(&realm, &c, true, 100, 0),
        (2592000, Some(86300))
    );
    // Offline, realm switch on: the realm max caps the client attribute.
    let mut on = realm.clone();
    on["offlineSessionMaxLifespanEnabled"] = json!(true);
    on["offlineSessionMaxLifespan"] = json!(3600);
    assert_eq!(
        session_deadlines(&on, &c, true, 0, 0),
        (2592000, Some(3600))
    );
    assert_eq!(
        session_deadlines(&on, &plain, true, 0, 0),
        (2592000, Some(3600))
    );
    // Blank or non-numeric attributes are ignored.
    let c = json!({"attributes": {"client.offline.session.max.lifespan": " ", "client.offline.session.idle.timeout": "x"}});
    assert_eq!(session_deadlines(&realm, &c, true, 0, 0), (2592000, None));
}

#[tokio::test]
async fn refresh_and_offline_tokens_expire_as_keycloak_computes() {
    let sim = sim().await;
    sim.add_admin_user("coder", "alice", "pw", "coder", &[]);
    let form = |scope: &'static str| {
        vec![
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", "alice"),
            ("password", "pw"),
            ("scope", scope),
        ]
    };
    let (s, online) = post_token(&sim, "coder", &form("openid"), None).await;
    assert_eq!(s, StatusCode::OK, "{online}");
    assert_eq!(online["refresh_expires_in"], json!(1800));
    let (s, offline) = post_token(&sim, "coder", &form("openid offline_access"), None).await;
    assert_eq!(s, StatusCode::OK, "{offline}");
    assert_eq!(offline["refresh_expires_in"], json!(0));
    let refresh = |rt: String| {
        let sim = sim.clone();
        async move {
            post_token(
                &sim,
                "coder",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", "admin-cli"),
                    ("refresh_token", &rt),
                ],
                None,
            )
            .await
        }
    };
    let online_rt = online["refresh_token"].as_str().unwrap().to_string();
    let offline_rt = offline["refresh_token"].as_str().unwrap().to_string();
    sim.advance_clock(Duration::from_secs(1801));
    let (s, v) = refresh(online_rt).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": "Token is not active"})
        )
    );
    let (s, _) = refresh(offline_rt.clone()).await;
    assert_eq!(s, StatusCode::OK, "offline sessions outlive SSO idle");
    // The client attribute alone caps the offline session.
    sim.update_client("coder", "admin-cli", |c| {
        c["attributes"]["client.offline.session.max.lifespan"] = json!("3600");
    });
    sim.advance_clock(Duration::from_secs(3600));
    let (s, _) = refresh(offline_rt).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "past the client's offline max");
    // No offline_access scope linked: invalid_scope.
    sim.unlink_client_scope("coder", "admin-cli", "offline_access");
    let (s, v) = post_token(&sim, "coder", &form("offline_access"), None).await;
    assert_eq!(
        (s, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_scope"))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn fields_the_server_returned_are_known_invented_ones_are_not() {
    let sim = sim().await;
    let mut c = sim_keycloak::stock_client("newer");
    c["futureKeycloakField"] = json!({"x": 1});
    let id = sim.add_client("coder", c);
    let t = op_token(&sim).await;
    let path = format!("/admin/realms/coder/clients/{id}");
    let (s, mut body) = call(&sim, reqwest::Method::GET, &path, &t, None).await;
    assert_eq!(s, StatusCode::OK);
    body["futureKeycloakField"] = json!({"x": 2});
    let (s, v) = call(&sim, reqwest::Method::PUT, &path, &t, Some(body.clone())).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(
        sim.client("coder", "newer").unwrap()["futureKeycloakField"],
        json!({"x": 2})
    );
    body["inventedField"] = json!(true);
    let (s, v) = call(&sim, reqwest::Method::PUT, &path, &t, Some(body)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("Unrecognized field \"inventedField\""),
        "{v}"
    );
    sim.shutdown().await;
}

/// `TokenManager.validateTokenReuse`: with `revokeRefreshToken`, `refreshTokenMaxReuse` is the
/// number of uses of a refresh token allowed after its first; the window closes once the
/// successor is used ("Stale token"); any refused reuse detaches the client session, so the
/// tokens already refreshed from it die too.
#[tokio::test]
async fn rotated_refresh_tokens_allow_refresh_token_max_reuse_concurrent_uses() {
    let sim = sim().await;
    sim.add_admin_user("coder", "alice", "pw", "coder", &[]);
    let login = || async {
        let (s, v) = post_token(
            &sim,
            "coder",
            &[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", "alice"),
                ("password", "pw"),
                ("scope", "openid offline_access"),
            ],
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["refresh_token"].as_str().unwrap().to_string()
    };
    let refresh = |rt: String| {
        let sim = sim.clone();
        async move {
            let (s, v) = post_token(
                &sim,
                "coder",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", "admin-cli"),
                    ("refresh_token", &rt),
                ],
                None,
            )
            .await;
            if s == StatusCode::OK {
                return Ok(v["refresh_token"].as_str().unwrap().to_string());
            }
            assert_eq!(
                (s, &v["error"]),
                (StatusCode::BAD_REQUEST, &json!("invalid_grant"))
            );
            Err(v["error_description"].as_str().unwrap().to_string())
        }
    };
    let refused = |d: &str| Err::<String, String>(d.to_string());

    // Rotation with reuse: two (and six) refreshes of one token at the same moment all succeed.
    sim.update_realm("coder", |r| {
        r.insert("revokeRefreshToken".into(), json!(true));
        r.insert("refreshTokenMaxReuse".into(), json!(5));
    });
    let rt = login().await;
    let (a, b) = tokio::join!(refresh(rt.clone()), refresh(rt.clone()));
    let (next, _other) = (a.unwrap(), b.unwrap());
    for _ in 0..4 {
        refresh(rt.clone()).await.unwrap();
    }
    assert_eq!(
        refresh(rt.clone()).await,
        refused("Maximum allowed refresh token reuse exceeded"),
        "a 7th use exceeds 5 reuses"
    );
    assert_eq!(
        refresh(next).await,
        refused("Session doesn't have required client"),
        "the refused reuse ended the session"
    );

    // Once the successor is used (a second later), the old token is stale.
    let rt = login().await;
    let next = refresh(rt.clone()).await.unwrap();
    sim.advance_clock(Duration::from_secs(2));
    let after = refresh(next).await.unwrap();
    assert_eq!(refresh(rt).await, refused("Stale token"));
    assert_eq!(
        refresh(after).await,
        refused("Session doesn't have required client")
    );

    // Strict one-time use: of two concurrent refreshes one fails and the user is signed out.
    sim.update_realm("coder", |r| {
        r.insert("refreshTokenMaxReuse".into(), json!(0));
    });
    let rt = login().await;
    let (a, b) = tokio::join!(refresh(rt.clone()), refresh(rt.clone()));
    let (ok, err): (Vec<_>, Vec<_>) = [a, b].into_iter().partition(Result::is_ok);
    assert_eq!((ok.len(), err.len()), (1, 1));
    assert_eq!(
        err[0],
        refused("Maximum allowed refresh token reuse exceeded")
    );
    let winner = ok.into_iter().next().unwrap().unwrap();
    assert_eq!(
        refresh(winner).await,
        refused("Session doesn't have required client")
    );

    // Without rotation a token is reusable at will.
    sim.update_realm("coder", |r| {
        r.insert("revokeRefreshToken".into(), json!(false));
    });
    let rt = login().await;
    for _ in 0..8 {
        refresh(rt.clone()).await.unwrap();
    }
    sim.shutdown().await;
}
