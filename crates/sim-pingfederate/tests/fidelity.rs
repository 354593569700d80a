//! PingFederate behaviour the simulator reproduces, driven over HTTP the way PingFederate's docs
//! and the Terraform provider drive the admin API (Basic auth, `X-XSRF-Header`, JSON), on 11.3 and
//! 12.1: secret ciphertexts, stale writes, cluster replication, per-version endpoints, error
//! shapes, paging.

use reqwest::Method;
use serde_json::{Value, json};
use sim_pingfederate::{
    AdminRole, ClientStorage, Deployment, NOT_CLUSTERED_MESSAGE, PfVersion, SEED_SECRET,
    SandboxSeed, SimConfig, SimHandle,
};

const VERSIONS: [PfVersion; 2] = [PfVersion::V11_3, PfVersion::V12_1];

struct Pf {
    sim: SimHandle,
    seed: SandboxSeed,
    http: reqwest::Client,
}

impl Pf {
    async fn start(config: SimConfig) -> Pf {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = sim_pingfederate::start(config).await.unwrap();
        let seed = sim.seed_sandbox();
        Pf {
            sim,
            seed,
            http: reqwest::Client::new(),
        }
    }

    async fn clustered(version: PfVersion) -> Pf {
        Pf::start(SimConfig {
            version,
            ..SimConfig::default()
        })
        .await
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(
                method,
                format!("{}/pf-admin-api/v1{path}", self.sim.base_url()),
            )
            .basic_auth(
                &self.seed.secret_data["username"],
                Some(&self.seed.secret_data["password"]),
            )
            .header("X-XSRF-Header", "PingFederate")
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.req(Method::GET, path)).await
    }

    async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.req(Method::PUT, path).json(body)).await
    }

    async fn post(&self, path: &str, body: Option<&Value>) -> (u16, Value) {
        let r = self.req(Method::POST, path);
        self.send(match body {
            Some(b) => r.json(b),
            None => r,
        })
        .await
    }

    async fn coder(&self) -> Value {
        let (st, c) = self.get("/oauth/clients/coder").await;
        assert_eq!(st, 200);
        c
    }
}

fn field_paths(err: &Value) -> Vec<String> {
    err["validationErrors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["fieldPath"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_read_returns_a_fresh_ciphertext_and_a_stable_secret_change_time() {
    for v in VERSIONS {
        let pf = Pf::clustered(v).await;
        let a = pf.coder().await;
        let b = pf.coder().await;
        let ea = a["clientAuth"]["encryptedSecret"].as_str().unwrap();
        let eb = b["clientAuth"]["encryptedSecret"].as_str().unwrap();
        assert!(
            ea.starts_with("OBF:JWE:") && eb.starts_with("OBF:JWE:"),
            "{v}"
        );
        assert_ne!(ea, eb, "{v}: same secret, new ciphertext on every GET");
        assert_eq!(
            a["clientSecretChangedTime"], b["clientSecretChangedTime"],
            "{v}: the secret-change time is what stays put"
        );
        assert!(a["clientAuth"].get("secret").is_none());
        // Either ciphertext round-trips without changing the secret.
        for body in [&a, &b] {
            let (st, after) = pf.put("/oauth/clients/coder", body).await;
            assert_eq!(st, 200, "{v}: {after}");
            assert_eq!(
                after["clientSecretChangedTime"], a["clientSecretChangedTime"],
                "{v}"
            );
            assert_ne!(after["clientAuth"]["encryptedSecret"].as_str(), Some(ea));
        }
        assert_eq!(pf.sim.secret_changes(), 0, "{v}");
        assert_eq!(pf.sim.client_secret("coder").as_deref(), Some(SEED_SECRET));
        pf.sim.shutdown().await;
    }
}

#[tokio::test]
async fn a_put_built_from_a_stale_read_restores_the_old_secret() {
    for v in VERSIONS {
        let pf = Pf::clustered(v).await;
        let stale = pf.coder().await;
        // An administrator rotates Coder's secret in the console meanwhile.
        pf.sim.rotate_client_secret("coder", "rotated-by-admin-9Hq");
        let fresh = pf.coder().await;
        assert_ne!(
            fresh["clientSecretChangedTime"], stale["clientSecretChangedTime"],
            "{v}"
        );
        assert_eq!(pf.sim.secret_changes(), 1);

        // A whole-object PUT built from the stale read is accepted…
        let mut body = stale.clone();
        body["grantTypes"] = json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"]);
        let (st, after) = pf.put("/oauth/clients/coder", &body).await;
        assert_eq!(st, 200, "{v}: {after}");
        // …and puts the old secret back.
        assert_eq!(pf.sim.client_secret("coder").as_deref(), Some(SEED_SECRET));
        assert_eq!(pf.sim.secret_changes(), 2, "{v}");
        assert_eq!(pf.sim.secret_rotations(), 0, "{v}: no plaintext was sent");
        assert_ne!(
            after["clientSecretChangedTime"], fresh["clientSecretChangedTime"],
            "{v}: the secret changed again"
        );

        // A PUT from the fresh read keeps the admin's secret instead.
        pf.sim.rotate_client_secret("coder", "rotated-by-admin-9Hq");
        let fresh = pf.coder().await;
        let (st, _) = pf.put("/oauth/clients/coder", &fresh).await;
        assert_eq!(st, 200);
        assert_eq!(
            pf.sim.client_secret("coder").as_deref(),
            Some("rotated-by-admin-9Hq")
        );

        // A ciphertext the server never issued cannot be decrypted: 422.
        let mut forged = fresh.clone();
        forged["clientAuth"]["encryptedSecret"] =
            json!("OBF:JWE:eyJhbGciOiJkaXIifQ..AAAA.BBBB.CCCC");
        let (st, err) = pf.put("/oauth/clients/coder", &forged).await;
        assert_eq!(st, 422, "{v}");
        assert_eq!(field_paths(&err), ["clientAuth.encryptedSecret"]);
        pf.sim.shutdown().await;
    }
}

#[tokio::test]
async fn a_retention_period_keeps_the_replaced_secret_as_a_secondary_secret() {
    for v in VERSIONS {
        let pf = Pf::clustered(v).await;
        let mut body = pf.coder().await;
        body["clientSecretRetentionPeriodType"] = json!("OVERRIDE_SERVER_DEFAULT");
        body["clientSecretRetentionPeriod"] = json!(60);
        body["clientAuth"]["secret"] = json!("new-secret-Aa1");
        body["clientAuth"]
            .as_object_mut()
            .unwrap()
            .remove("encryptedSecret");
        let (st, after) = pf.put("/oauth/clients/coder", &body).await;
        assert_eq!(st, 200, "{v}: {after}");
        assert_eq!(pf.sim.secret_rotations(), 1);
        let read = pf.coder().await;
        let second = &read["clientAuth"]["secondarySecrets"];
        assert_eq!(second.as_array().map(Vec::len), Some(1), "{v}: {read}");
        assert!(second[0]["expiryTime"].is_string());
        assert!(second[0].get("secret").is_none());
        assert_ne!(
            second[0]["encryptedSecret"],
            after["clientAuth"]["secondarySecrets"][0]["encryptedSecret"],
            "secondary ciphertexts are fresh on every read too"
        );
        // Passing the list back keeps it; engines accept both secrets once replicated.
        let (st, _) = pf.put("/oauth/clients/coder", &read).await;
        assert_eq!(st, 200);
        assert!(pf.sim.replicate());
        for secret in ["new-secret-Aa1", SEED_SECRET] {
            assert!(
                pf.sim.engine_accepts_client_secret(0, "coder", secret),
                "{v}"
            );
        }
        // A secondary secret without expiryTime is a validation error.
        let mut bad = pf.coder().await;
        bad["clientAuth"]["secondarySecrets"][0]
            .as_object_mut()
            .unwrap()
            .remove("expiryTime");
        let (st, err) = pf.put("/oauth/clients/coder", &bad).await;
        assert_eq!(
            (st, field_paths(&err)),
            (
                422,
                vec!["clientAuth.secondarySecrets[0].expiryTime".to_string()]
            )
        );
        pf.sim.shutdown().await;
    }
}

#[tokio::test]
async fn admin_changes_reach_the_engines_only_after_replication() {
    for v in VERSIONS {
        let pf = Pf::clustered(v).await;
        let (st, status) = pf.get("/cluster/status").await;
        assert_eq!(st, 200);
        assert_eq!(status["replicationRequired"], false, "{v}");
        assert_eq!(status["mixedMode"], false);
        let nodes = status["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0]["mode"], "CLUSTERED_CONSOLE");
        assert!(nodes[1..].iter().all(|n| n["mode"] == "CLUSTERED_ENGINE"
            && n["replicationStatus"] == "SUCCEEDED"
            && n["version"] == v.version_string()));
        assert_eq!(
            status.get("currentNodeIndex").is_some(),
            v == PfVersion::V12_1,
            "currentNodeIndex is 12.x only"
        );
        let replicated_at = status["lastReplicationTime"].clone();

        // Client and scope changes on the admin node.
        let scope = json!({"name": "offline_access", "description": "Offline", "dynamic": false});
        assert_eq!(
            pf.post(
                "/oauth/authServerSettings/scopes/commonScopes",
                Some(&scope)
            )
            .await
            .0,
            201
        );
        let mut body = pf.coder().await;
        body["grantTypes"] = json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"]);
        body["restrictedScopes"] = json!(["openid", "profile", "email", "offline_access"]);
        assert_eq!(pf.put("/oauth/clients/coder", &body).await.0, 200);
        let (_, status) = pf.get("/cluster/status").await;
        assert_eq!(status["replicationRequired"], true, "{v}");
        assert!(pf.sim.replication_required());
        for engine in 0..pf.sim.engine_count() {
            let policy = pf.sim.engine_refresh_policy(engine, "coder").unwrap();
            assert!(
                !policy.refresh_token_grant,
                "{v}: engines still serve the old client"
            );
            assert!(!policy.offline_access_allowed);
        }

        // An auditor may look but not replicate.
        pf.sim.add_admin("audit", "pw", AdminRole::Auditor);
        let (st, _) = pf
            .send(
                pf.http
                    .post(format!(
                        "{}/pf-admin-api/v1/cluster/replicate",
                        pf.sim.base_url()
                    ))
                    .basic_auth("audit", Some("pw"))
                    .header("X-XSRF-Header", "x"),
            )
            .await;
        assert_eq!(st, 403);

        let (st, res) = pf.post("/cluster/replicate", None).await;
        assert_eq!(st, 200, "{v}: {res}");
        assert_eq!(res["message"], "Replication completed successfully.");
        let (_, status) = pf.get("/cluster/status").await;
        assert_eq!(status["replicationRequired"], false);
        assert_ne!(status["lastReplicationTime"], replicated_at);
        for engine in 0..pf.sim.engine_count() {
            let policy = pf.sim.engine_refresh_policy(engine, "coder").unwrap();
            assert!(policy.refresh_token_grant, "{v}");
            assert!(policy.offline_access_allowed, "{v}");
            assert_eq!(
                pf.sim.engine_client(engine, "coder"),
                pf.sim.client("coder")
            );
        }
        pf.sim.shutdown().await;
    }
}

#[tokio::test]
async fn an_unreachable_engine_is_out_of_date_until_it_polls_again() {
    let pf = Pf::clustered(PfVersion::V12_1).await;
    pf.sim.set_engine_reachable(1, false);
    pf.sim
        .update_auth_server_settings(|s| s["refreshTokenRollingGracePeriod"] = json!(5));
    assert!(
        pf.sim.replication_required(),
        "console edits need replication too"
    );
    assert_eq!(pf.post("/cluster/replicate", None).await.0, 200);
    let (_, status) = pf.get("/cluster/status").await;
    assert_eq!(status["nodes"][1]["replicationStatus"], "SUCCEEDED");
    assert_eq!(status["nodes"][2]["replicationStatus"], "OUT_OF_DATE");
    let grace = |e| {
        pf.sim
            .engine_refresh_policy(e, "coder")
            .unwrap()
            .rolling_grace_period_secs
    };
    assert_eq!((grace(0), grace(1)), (5, 60));
    pf.sim.set_engine_reachable(1, true);
    assert_eq!(grace(1), 5);
    let (_, status) = pf.get("/cluster/status").await;
    assert_eq!(status["nodes"][2]["replicationStatus"], "SUCCEEDED");
    pf.sim.shutdown().await;
}

#[tokio::test]
async fn a_standalone_server_is_not_clustered() {
    for v in VERSIONS {
        let pf = Pf::start(SimConfig {
            version: v,
            deployment: Deployment::Standalone,
            ..SimConfig::default()
        })
        .await;
        for (method, path) in [
            (Method::GET, "/cluster/status"),
            (Method::POST, "/cluster/replicate"),
        ] {
            let (st, body) = pf.send(pf.req(method, path)).await;
            assert_eq!(st, 403, "{v} {path}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("not deployed in clustered mode")
            );
            assert_eq!(body["message"], NOT_CLUSTERED_MESSAGE);
        }
        assert_eq!(pf.sim.cluster_status(), None);
        assert!(!pf.sim.replicate());
        let mut body = pf.coder().await;
        body["grantTypes"] = json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"]);
        assert_eq!(pf.put("/oauth/clients/coder", &body).await.0, 200);
        assert!(!pf.sim.replication_required());
        assert_eq!(pf.sim.engine_count(), 1);
        assert!(
            pf.sim
                .engine_refresh_policy(0, "coder")
                .unwrap()
                .refresh_token_grant,
            "{v}: a standalone server serves its changes at once"
        );
        pf.sim.shutdown().await;
    }
}

#[tokio::test]
async fn database_client_storage_shares_clients_but_not_settings() {
    let pf = Pf::start(SimConfig {
        version: PfVersion::V11_3,
        client_storage: ClientStorage::Database,
        ..SimConfig::default()
    })
    .await;
    let mut body = pf.coder().await;
    body["grantTypes"] = json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"]);
    assert_eq!(pf.put("/oauth/clients/coder", &body).await.0, 200);
    assert!(!pf.sim.replication_required());
    assert!(
        pf.sim
            .engine_refresh_policy(1, "coder")
            .unwrap()
            .refresh_token_grant
    );
    let mut settings = pf.get("/oauth/authServerSettings").await.1;
    settings["rollRefreshTokenValues"] = json!(false);
    assert_eq!(pf.put("/oauth/authServerSettings", &settings).await.0, 200);
    assert!(pf.sim.replication_required());
    assert!(pf.sim.engine_refresh_policy(1, "coder").unwrap().roll);
    pf.sim.shutdown().await;
}

#[tokio::test]
async fn replicate_clients_on_save_is_a_12x_cluster_setting() {
    let pf = Pf::start(SimConfig {
        replicate_clients_on_save: true,
        ..SimConfig::default()
    })
    .await;
    let (st, cs) = pf.get("/cluster/settings").await;
    assert_eq!((st, &cs["replicateClientsOnSave"]), (200, &json!(true)));
    let mut body = pf.coder().await;
    assert_eq!(body["replicationStatus"], "REPLICATED");
    body["grantTypes"] = json!(["AUTHORIZATION_CODE", "REFRESH_TOKEN"]);
    let (st, after) = pf.put("/oauth/clients/coder", &body).await;
    assert_eq!(st, 200);
    assert_eq!(after["replicationStatus"], "REPLICATED");
    assert!(!pf.sim.replication_required());
    assert!(
        pf.sim
            .engine_refresh_policy(0, "coder")
            .unwrap()
            .refresh_token_grant
    );
    // Turning it off makes client saves wait for replication again.
    let (st, _) = pf
        .put(
            "/cluster/settings",
            &json!({"replicateClientsOnSave": false, "replicateConnectionsOnSave": false}),
        )
        .await;
    assert_eq!(st, 200);
    pf.sim.shutdown().await;

    let pf = Pf::clustered(PfVersion::V11_3).await;
    assert_eq!(pf.get("/cluster/settings").await.0, 404);
    assert!(pf.coder().await.get("replicationStatus").is_none());
    pf.sim.shutdown().await;
}

#[tokio::test]
async fn the_common_scope_list_is_12x_only_and_a_scope_can_be_updated_on_both() {
    let path = "/oauth/authServerSettings/scopes/commonScopes";
    let pf = Pf::clustered(PfVersion::V11_3).await;
    assert_eq!(pf.get(path).await.0, 405);
    let (st, got) = pf.get(&format!("{path}/profile")).await;
    assert_eq!((st, &got["name"]), (200, &json!("profile")));
    let entry = json!({"name": "profile", "description": "Profile (updated)", "dynamic": false});
    let (st, _) = pf.put(&format!("{path}/profile"), &entry).await;
    assert_eq!(st, 200);
    assert_eq!(pf.get(&format!("{path}/profile")).await.1, entry);
    assert_eq!(pf.put(&format!("{path}/nope"), &entry).await.0, 404);
    pf.sim.shutdown().await;

    let pf = Pf::clustered(PfVersion::V12_1).await;
    let (st, list) = pf.get(path).await;
    assert_eq!(st, 200);
    assert_eq!(list["totalItems"], 3);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["email", "groups", "profile"], "sorted by name");
    let (_, list) = pf.get(&format!("{path}?filter=PRO")).await;
    assert_eq!(list["items"][0]["name"], "profile");
    assert_eq!(list["totalItems"], 1);
    let (_, list) = pf
        .get(&format!("{path}?page=2&numberPerPage=2&sortOrder=DESC"))
        .await;
    assert_eq!(list["items"], json!([list["items"][0].clone()]));
    assert_eq!(list["items"][0]["name"], "email");
    let (_, list) = pf.get(&format!("{path}?includeDefaultOpenId=true")).await;
    assert_eq!(list["totalItems"], 4);
    let entry = json!({"name": "profile", "description": "Profile (updated)", "dynamic": false});
    assert_eq!(pf.put(&format!("{path}/profile"), &entry).await.0, 200);
    pf.sim.shutdown().await;
}

#[tokio::test]
async fn invalid_bodies_are_400_when_unreadable_and_422_when_invalid() {
    for v in VERSIONS {
        let pf = Pf::clustered(v).await;
        let base = pf.coder().await;

        // Unknown property: 400, that field.
        let mut body = base.clone();
        body["noSuchField"] = json!(true);
        let (st, err) = pf.put("/oauth/clients/coder", &body).await;
        assert_eq!(
            (st, field_paths(&err)),
            (400, vec!["noSuchField".into()]),
            "{v}"
        );
        assert!(err["message"].is_string() && err["resultId"].is_string());
        // Wrong type and wrong enum value: 400.
        let mut body = base.clone();
        body["refreshTokenRollingGracePeriod"] = json!("sixty");
        assert_eq!(pf.put("/oauth/clients/coder", &body).await.0, 400);
        let mut body = base.clone();
        body["refreshRolling"] = json!("ALWAYS");
        assert_eq!(pf.put("/oauth/clients/coder", &body).await.0, 400);
        // Not JSON at all: 400.
        let (st, _) = pf
            .send(
                pf.req(Method::PUT, "/oauth/clients/coder")
                    .header("Content-Type", "application/json")
                    .body("{not json"),
            )
            .await;
        assert_eq!(st, 400);

        // Semantic errors: 422 with every error.
        let mut body = base.clone();
        body["refreshTokenRollingGracePeriodType"] = json!("OVERRIDE_SERVER_DEFAULT");
        body["persistentGrantIdleTimeoutType"] = json!("OVERRIDE_SERVER_DEFAULT");
        body["persistentGrantIdleTimeout"] = json!(0);
        body["restrictedScopes"] = json!(["openid", "offline_access"]);
        let (st, err) = pf.put("/oauth/clients/coder", &body).await;
        assert_eq!(st, 422, "{v}");
        assert_eq!(err["resultId"], "validation_error");
        let mut paths = field_paths(&err);
        paths.sort();
        assert_eq!(
            paths,
            [
                "persistentGrantIdleTimeout",
                "refreshTokenRollingGracePeriod",
                "restrictedScopes[1]"
            ]
        );
        for e in err["validationErrors"].as_array().unwrap() {
            assert!(e["errorId"].is_string() && e["message"].is_string());
        }

        // -1 means indefinite for the grant-lifetime overrides; the grace period is read back.
        let mut body = base.clone();
        body["persistentGrantExpirationType"] = json!("OVERRIDE_SERVER_DEFAULT");
        body["persistentGrantExpirationTime"] = json!(-1);
        body["persistentGrantExpirationTimeUnit"] = json!("DAYS");
        body["refreshTokenRollingGracePeriodType"] = json!("OVERRIDE_SERVER_DEFAULT");
        body["refreshTokenRollingGracePeriod"] = json!(0);
        let (st, after) = pf.put("/oauth/clients/coder", &body).await;
        assert_eq!(st, 200, "{v}: {after}");
        assert_eq!(after["refreshTokenRollingGracePeriod"], 0);
        assert!(pf.sim.replicate());
        let p = pf.sim.engine_refresh_policy(0, "coder").unwrap();
        assert_eq!(p.max_lifetime_secs, None);
        assert_eq!(p.rolling_grace_period_secs, 0);
        assert!(p.roll && !p.reuse_allowed(1));
        pf.sim.shutdown().await;
    }
}

#[tokio::test]
async fn server_defaults_roll_refresh_tokens_with_a_grace_period() {
    for v in VERSIONS {
        let pf = Pf::clustered(v).await;
        let (_, settings) = pf.get("/oauth/authServerSettings").await;
        assert_eq!(settings["rollRefreshTokenValues"], true, "{v}");
        assert_eq!(settings["refreshTokenRollingGracePeriod"], 60);
        assert_eq!(settings["persistentGrantLifetime"], -1);
        let p = pf.sim.engine_refresh_policy(0, "coder").unwrap();
        assert!(p.roll);
        assert!(p.reuse_allowed(59) && p.reuse_allowed(60) && !p.reuse_allowed(61));
        // A negative grace period is refused.
        let mut bad = settings.clone();
        bad["refreshTokenRollingGracePeriod"] = json!(-5);
        let (st, err) = pf.put("/oauth/authServerSettings", &bad).await;
        assert_eq!(
            (st, field_paths(&err)),
            (422, vec!["refreshTokenRollingGracePeriod".into()])
        );
        pf.sim.shutdown().await;
    }
}

#[tokio::test]
async fn clients_are_paged_and_filtered() {
    let pf = Pf::clustered(PfVersion::V12_1).await;
    for i in 0..5 {
        let mut c = sim_pingfederate::seed_client(PfVersion::V12_1);
        c["clientId"] = json!(format!("app-{i}"));
        c["name"] = json!(format!("Application {i}"));
        pf.sim.insert_client(c);
    }
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["clientId"].as_str().unwrap().to_string())
            .collect()
    };
    let (st, all) = pf.get("/oauth/clients").await;
    assert_eq!(st, 200);
    assert_eq!(ids(&all).len(), 6, "uncapped without numberPerPage");
    let (_, page) = pf.get("/oauth/clients?page=2&numberPerPage=2").await;
    assert_eq!(ids(&page), ["app-2", "app-3"]);
    let (_, page) = pf.get("/oauth/clients?page=4&numberPerPage=2").await;
    assert_eq!(ids(&page), Vec::<String>::new());
    let (_, found) = pf.get("/oauth/clients?filter=CODER").await;
    assert_eq!(ids(&found), ["coder"]);
    let (_, found) = pf.get("/oauth/clients?filter=application%203").await;
    assert_eq!(ids(&found), ["app-3"], "matches the name too");
    // Listed clients carry fresh ciphertexts like single reads.
    assert_ne!(
        found["items"][0]["clientAuth"]["encryptedSecret"],
        pf.sim.client("app-3").unwrap()["clientAuth"]["encryptedSecret"]
    );
    let (st, err) = pf.get("/oauth/clients?page=0").await;
    assert_eq!((st, field_paths(&err)), (422, vec!["page".into()]));
    pf.sim.shutdown().await;
}

#[tokio::test]
async fn any_xsrf_header_value_is_accepted() {
    let pf = Pf::clustered(PfVersion::V11_3).await;
    let url = format!("{}/pf-admin-api/v1/version", pf.sim.base_url());
    let auth = |r: reqwest::RequestBuilder| {
        r.basic_auth(
            &pf.seed.secret_data["username"],
            Some(&pf.seed.secret_data["password"]),
        )
    };
    assert_eq!(
        pf.send(auth(pf.http.get(&url)).header("X-XSRF-Header", "anything"))
            .await
            .0,
        200
    );
    assert_eq!(pf.send(auth(pf.http.get(&url))).await.0, 403);
    pf.sim.shutdown().await;
}
