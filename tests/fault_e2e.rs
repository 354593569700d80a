//! Hostile identity providers and hostile policies against one controller: the process stays up,
//! nothing unbounded is read, secrets echoed by a server go nowhere, and other tenants' policies
//! keep converging. Every hostile server here is a `tokio::net::TcpListener` on loopback.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use oidc_refresh_operator::controller::{self, Settings};
use oidc_refresh_operator::crd::OidcRefreshPolicy;
use oidc_refresh_operator::metrics::Metrics;
use oidc_refresh_operator::sandbox::{self, NAMESPACE, Sandbox};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET_VALUE: &str = "s3cr3t-Value_that+must/never=leak";

/// A controller with `settings` against a fresh simulated cluster.
struct Running {
    sim: kube_sim::SimHandle,
    client: Client,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

async fn start(settings: Settings) -> Running {
    let (sim, client) = Sandbox::start_cluster().await.expect("simulator");
    start_on(sim, client, settings)
}

/// A controller with `settings` against a simulated cluster already set up.
fn start_on(sim: kube_sim::SimHandle, client: Client, settings: Settings) -> Running {
    let metrics = Arc::new(Metrics::new());
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(controller::run(
        client.clone(),
        settings,
        metrics.clone(),
        Arc::new(AtomicBool::new(false)),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    Running {
        sim,
        client,
        stop,
        task,
        metrics,
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.sim.shutdown().await;
    }

    fn alive(&self) -> bool {
        !self.task.is_finished()
    }
}

fn settings() -> Settings {
    Settings {
        concurrency: 4,
        provider_timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(500),
        backoff_max: Duration::from_secs(5),
        ..Settings::default()
    }
}

async fn secret(client: &Client, name: &str, labelled: bool) {
    let data: BTreeMap<String, String> = [
        ("client-id".to_string(), "operator-admin".to_string()),
        ("client-secret".to_string(), SECRET_VALUE.to_string()),
    ]
    .into();
    let labels = if labelled {
        json!({"oidcrefresh.dev/credentials": "true"})
    } else {
        json!({})
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "stringData": data
    }))
    .unwrap();
    api.create(&PostParams::default(), &s).await.unwrap();
}

fn keycloak_policy(name: &str, url: &str, secret: &str) -> serde_json::Value {
    let mut p = sandbox::example_policy(
        name,
        json!({"keycloak": {"url": url, "realm": "r", "clientId": "coder", "credentialsSecret": secret}}),
    );
    // One Deployment per policy, so no policy waits for another (DuplicatePolicy).
    p["spec"]["coder"]["deployment"] = json!(format!("coder-{name}"));
    p
}

/// Everything a policy shows the world: its status and its Events.
async fn visible_text(client: &Client, name: &str) -> String {
    let api: Api<OidcRefreshPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    let p = api.get(name).await.unwrap();
    let events = sandbox::policy_events(client, name).await.unwrap();
    format!(
        "{}\n{:?}",
        serde_json::to_string(&p.status).unwrap(),
        events
    )
}

async fn wait_condition(
    client: &Client,
    name: &str,
    wait: Duration,
    pred: impl Fn(&str, &str, &str) -> bool,
) -> OidcRefreshPolicy {
    sandbox::wait_policy(client, name, wait, |p| {
        p.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| pred(&c.type_, &c.reason, &c.message))
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Reads one HTTP/1.1 request (headers and a `Content-Length` body) from `sock`.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(text);
            }
        }
    }
}

/// A server that answers every request with `respond(request)`, one connection per task.
async fn hostile<F>(respond: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(String, tokio::net::TcpStream) -> futures::future::BoxFuture<'static, ()>
        + Send
        + Sync
        + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let respond = respond.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                if let Some(req) = read_request(&mut sock).await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    respond(req, sock).await;
                }
            });
        }
    });
    (url, hits)
}

/// Item 4: a token endpoint that echoes the request body (with the client secret) in its error
/// must not get the secret into the status, the Events or the error.
/// No fault: one healthy policy converges. The reference for the fault scenarios' figures
/// (`scripts/fault-rss` reports each scenario's peak RSS above this one's).
#[tokio::test]
async fn baseline_a_healthy_policy_converges() {
    let run = start(settings()).await;
    sandbox::create_coder(&run.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    sandbox::create_policy(
        &run.client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    common::wait_ready(&run.client, "coder").await;
    assert!(run.alive());
    run.stop().await;
}

#[tokio::test]
async fn an_echoed_client_secret_appears_nowhere() {
    let (url, hits) = hostile(|req, mut sock| {
        Box::pin(async move {
            let body = req.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
            let answer = json!({
                "error": "unauthorized_client",
                "error_description": format!("Invalid client credentials; you sent {body} (decoded: {})",
                    body.replace("%2F", "/").replace("%2B", "+").replace("%3D", "=")),
            })
            .to_string();
            let resp = format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        })
    })
    .await;
    let r = start(settings()).await;
    secret(&r.client, "kc", true).await;
    sandbox::create_policy(&r.client, keycloak_policy("echo", &url, "kc"))
        .await
        .unwrap();
    wait_condition(&r.client, "echo", common::WAIT, |t, reason, _| {
        t == "IdentityProviderConfigured" && reason == "AuthenticationFailed"
    })
    .await;
    assert!(hits.load(Ordering::SeqCst) >= 1);
    // Let the Events land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = visible_text(&r.client, "echo").await;
    assert!(
        text.contains("[REDACTED]"),
        "the echo is shown, redacted: {text}"
    );
    for leaked in [SECRET_VALUE, "s3cr3t-Value_that%2Bmust%2Fnever%3Dleak"] {
        assert!(!text.contains(leaked), "secret leaked: {text}");
    }
    assert!(r.alive());
    r.stop().await;
}

/// Item 2: an endless token answer is cut at the cap, with an error naming it.
#[tokio::test]
async fn an_endless_answer_is_cut_at_the_cap() {
    let (url, _) = hostile(|_req, mut sock| {
        Box::pin(async move {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "a".repeat(16 * 1024));
            // Up to 1 GiB, or until the client hangs up.
            for _ in 0..65_536 {
                if sock.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
    })
    .await;
    let before = rss_kib();
    let r = start(settings()).await;
    secret(&r.client, "kc", true).await;
    sandbox::create_policy(&r.client, keycloak_policy("endless", &url, "kc"))
        .await
        .unwrap();
    let p = wait_condition(&r.client, "endless", common::WAIT, |t, _, m| {
        t == "IdentityProviderConfigured" && m.contains("64 KiB")
    })
    .await;
    let c = sandbox::condition(
        &p,
        oidc_refresh_operator::status::ConditionType::Reconciling,
    );
    assert!(c.is_some());
    // A generous bound (other tests share the process); scripts/fault-rss measures the figure.
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 256 * 1024, "RSS grew by {grown} KiB");
    assert!(r.alive());
    r.stop().await;
}

/// Item 1: absurd durations from the IdP (`expires_in` = u64::MAX, `Retry-After` of a day)
/// neither panic nor park the policy beyond the backoff cap.
#[tokio::test]
async fn absurd_durations_neither_panic_nor_park_the_policy() {
    let (url, hits) = hostile(|req, mut sock| {
        Box::pin(async move {
            let resp = if req.contains("/protocol/openid-connect/token") {
                let body = json!({"access_token": "tok", "expires_in": u64::MAX, "token_type": "Bearer"}).to_string();
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 86400\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            };
            let _ = sock.write_all(resp.as_bytes()).await;
        })
    })
    .await;
    let r = start(settings()).await;
    secret(&r.client, "kc", true).await;
    sandbox::create_policy(&r.client, keycloak_policy("absurd", &url, "kc"))
        .await
        .unwrap();
    wait_condition(&r.client, "absurd", common::WAIT, |t, reason, _| {
        t == "Reconciling" && reason == "Throttled"
    })
    .await;
    // The backoff cap is 5 s here: the policy is looked at again within it despite the
    // day-long Retry-After.
    let seen = hits.load(Ordering::SeqCst);
    let started = Instant::now();
    while hits.load(Ordering::SeqCst) == seen {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the policy was parked beyond the backoff cap"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(r.alive(), "the controller survived");
    let text = r.metrics.encode();
    assert!(!text.contains(r#"category="panic""#), "{text}");
    r.stop().await;
}

/// A tarpit identity provider: it answers a 1,000-byte body (within every cap) one byte per
/// `every`, so a call to it never finishes before the caller's timeout.
async fn tarpit(every: Duration) -> String {
    let (url, _) = hostile(move |_req, mut sock| {
        Box::pin(async move {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(every).await;
                if sock.write_all(b" ").await.is_err() {
                    return;
                }
            }
        })
    })
    .await;
    url
}

/// Item 3: policies aimed at a tarpit (accepts, then answers one byte a second) hold at most a
/// few reconcile slots: another tenant's policy still converges quickly, and the process stays
/// up.
#[tokio::test]
async fn a_tarpit_does_not_starve_other_tenants() {
    let url = tarpit(Duration::from_secs(1)).await;
    let mut s = settings();
    s.concurrency = 4;
    s.provider_timeout = Duration::from_secs(20);
    s.max_in_flight_per_host = 2;
    let r = start(s).await;
    secret(&r.client, "kc", true).await;
    for i in 0..6 {
        sandbox::create_policy(
            &r.client,
            keycloak_policy(&format!("tarpit-{i}"), &url, "kc"),
        )
        .await
        .unwrap();
    }
    // Let the tarpit policies take their slots first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sandbox::create_coder(&r.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let started = Instant::now();
    sandbox::create_policy(
        &r.client,
        sandbox::example_policy("healthy", json!({"google": {}})),
    )
    .await
    .unwrap();
    sandbox::wait_policy(&r.client, "healthy", common::WAIT, sandbox::is_ready)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "another tenant waited {took:?} behind the tarpit"
    );
    assert!(r.alive());
    r.stop().await;
}

/// A reconcile cancelled at its deadline leaves the policy saying so, not the last status.
#[tokio::test]
async fn a_reconcile_cancelled_at_its_deadline_says_so_in_status() {
    let url = tarpit(Duration::from_millis(500)).await;
    let mut s = settings();
    s.provider_timeout = Duration::from_secs(20);
    s.reconcile_timeout = Some(Duration::from_secs(2));
    let r = start(s).await;
    secret(&r.client, "kc", true).await;
    sandbox::create_policy(&r.client, keycloak_policy("slow", &url, "kc"))
        .await
        .unwrap();
    let p = wait_condition(&r.client, "slow", common::WAIT, |t, reason, _| {
        t == "Ready" && reason == "ReconcileTimeout"
    })
    .await;
    let text = visible_text(&r.client, "slow").await;
    assert!(
        text.contains("did not finish within its deadline of 2s (--reconcile-timeout)"),
        "{text}"
    );
    assert!(p.status.is_some());
    assert!(r.alive());
    r.stop().await;
}

/// Item 5a: a Secret is used as credentials only when its owner labelled it so; the policy says
/// exactly which label to add, and picks the labelled Secret up without a restart.
#[tokio::test]
async fn an_unlabelled_secret_is_not_used_as_credentials() {
    let (url, hits) = hostile(|_req, mut sock| {
        Box::pin(async move {
            let _ = sock
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        })
    })
    .await;
    let mut s = settings();
    s.require_credentials_label = true;
    let r = start(s).await;
    secret(&r.client, "kc", false).await;
    sandbox::create_policy(&r.client, keycloak_policy("unlabelled", &url, "kc"))
        .await
        .unwrap();
    let p = wait_condition(&r.client, "unlabelled", common::WAIT, |t, reason, _| {
        t == "IdentityProviderConfigured" && reason == "InvalidSecret"
    })
    .await;
    let (_, _, message) = common::cond(&p, "IdentityProviderConfigured");
    assert!(
        message.contains(r#"oidcrefresh.dev/credentials: "true""#)
            && message.contains("kubectl label secret"),
        "{message}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing was sent to the policy's URL"
    );
    let api: Api<Secret> = Api::namespaced(r.client.clone(), NAMESPACE);
    api.patch(
        "kc",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"oidcrefresh.dev/credentials": "true"}}})),
    )
    .await
    .unwrap();
    wait_condition(&r.client, "unlabelled", common::WAIT, |t, reason, _| {
        t == "IdentityProviderConfigured" && reason == "Unreachable"
    })
    .await;
    assert!(hits.load(Ordering::SeqCst) >= 1);
    r.stop().await;
}

/// Item 5b/5c: with the `run` defaults, credentials never go over plain http, and a policy
/// aimed at a link-local or metadata address is refused before anything is sent.
#[tokio::test]
async fn plain_http_and_metadata_targets_are_refused() {
    let (url, hits) = hostile(|_req, mut sock| {
        Box::pin(async move {
            let _ = sock
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        })
    })
    .await;
    let mut s = settings();
    s.allow_insecure_http = false;
    let r = start(s).await;
    secret(&r.client, "kc", true).await;
    sandbox::create_policy(&r.client, keycloak_policy("plain", &url, "kc"))
        .await
        .unwrap();
    sandbox::create_policy(
        &r.client,
        keycloak_policy("metadata", "https://169.254.169.254", "kc"),
    )
    .await
    .unwrap();
    let p = wait_condition(&r.client, "plain", common::WAIT, |t, reason, _| {
        t == "IdentityProviderConfigured" && reason == "Unsupported"
    })
    .await;
    assert!(
        common::cond(&p, "IdentityProviderConfigured")
            .2
            .contains("plain http"),
        "{:?}",
        common::cond(&p, "IdentityProviderConfigured")
    );
    let p = wait_condition(&r.client, "metadata", common::WAIT, |t, reason, _| {
        t == "IdentityProviderConfigured" && reason == "Unsupported"
    })
    .await;
    assert!(
        common::cond(&p, "IdentityProviderConfigured")
            .2
            .contains("link-local"),
        "{:?}",
        common::cond(&p, "IdentityProviderConfigured")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    r.stop().await;
}

/// Item 6: oversized or malformed specs are refused by the API server (the CRD's schema) before
/// the operator ever sees them.
#[tokio::test]
async fn hostile_specs_are_refused_at_apply() {
    let (sim, client) = Sandbox::start_cluster().await.expect("simulator");
    let kc = |url: &str, realm: &str| json!({"keycloak": {"url": url, "realm": realm, "clientId": "coder", "credentialsSecret": "kc"}});
    let ok = sandbox::example_policy("ok", kc("https://sso.example.com", "r"));
    sandbox::create_policy(&client, ok)
        .await
        .expect("a sane spec is accepted");
    let mut cases: Vec<(&str, serde_json::Value)> = Vec::new();
    let with = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut p = sandbox::example_policy(name, kc("https://sso.example.com", "r"));
        f(&mut p);
        p
    };
    cases.push((
        "userinfo",
        sandbox::example_policy("userinfo", kc("https://admin:pw@sso.example.com", "r")),
    ));
    cases.push((
        "query",
        sandbox::example_policy("query", kc("https://sso.example.com/?x=1", "r")),
    ));
    cases.push((
        "fragment",
        sandbox::example_policy("fragment", kc("https://sso.example.com/#x", "r")),
    ));
    cases.push((
        "long-url",
        sandbox::example_policy(
            "long-url",
            kc(
                &format!("https://sso.example.com/{}", "a".repeat(2100)),
                "r",
            ),
        ),
    ));
    cases.push((
        "realm-dots",
        sandbox::example_policy("realm-dots", kc("https://sso.example.com", "..")),
    ));
    cases.push((
        "realm-slash",
        sandbox::example_policy("realm-slash", kc("https://sso.example.com", "a/b")),
    ));
    cases.push((
        "many-scopes",
        with("many-scopes", &|p| {
            p["spec"]["coder"]["scopes"] =
                json!((0..51).map(|i| format!("s{i}")).collect::<Vec<_>>())
        }),
    ));
    cases.push((
        "long-scope",
        with("long-scope", &|p| {
            p["spec"]["coder"]["scopes"] = json!(["a".repeat(129)])
        }),
    ));
    cases.push((
        "control-scope",
        with("control-scope", &|p| {
            p["spec"]["coder"]["scopes"] = json!(["a\u{7}b"])
        }),
    ));
    cases.push((
        "many-params",
        with("many-params", &|p| {
            let m: serde_json::Map<String, serde_json::Value> =
                (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
            p["spec"]["coder"]["authURLParams"] = serde_json::Value::Object(m);
        }),
    ));
    cases.push((
        "long-param",
        with("long-param", &|p| {
            p["spec"]["coder"]["authURLParams"] = json!({"k": "v".repeat(1025)})
        }),
    ));
    cases.push((
        "bad-deployment",
        with("bad-deployment", &|p| {
            p["spec"]["coder"]["deployment"] = json!("Coder_Server")
        }),
    ));
    cases.push((
        "bad-container",
        with("bad-container", &|p| {
            p["spec"]["coder"]["container"] = json!("a.b")
        }),
    ));
    cases.push((
        "bad-secret",
        with("bad-secret", &|p| {
            p["spec"]["provider"]["keycloak"]["credentialsSecret"] = json!("../kc")
        }),
    ));
    cases.push((
        "pf-userinfo",
        sandbox::example_policy(
            "pf-userinfo",
            json!({"pingFederate": {"adminUrl": "https://a:b@pf.example.com:9999", "clientId": "coder", "credentialsSecret": "pf"}}),
        ),
    ));
    cases.push((
        "entra-query",
        sandbox::example_policy(
            "entra-query",
            json!({"entraId": {"tenantId": "00000000-0000-0000-0000-000000000000", "applicationId": "00000000-0000-0000-0000-000000000001", "credentialsSecret": "e", "graphEndpoint": "https://graph.example.com/?x=y"}}),
        ),
    ));
    for (name, policy) in cases {
        let r = sandbox::create_policy(&client, policy).await;
        assert!(r.is_err(), "{name} was accepted");
    }
    sim.shutdown().await;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

/// Item 7: 200 idle (or half-open) connections to the admin port are closed, do not grow memory
/// without bound, and do not keep `/healthz` from answering for long.
#[tokio::test]
async fn idle_admin_connections_are_capped_and_closed() {
    use oidc_refresh_operator::admin::{self, AdminLimits};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = AdminLimits {
        max_connections: 32,
        idle_timeout: Duration::from_secs(1),
        max_age: Duration::from_secs(10),
    };
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(admin::serve_on(
        listener,
        limits,
        Arc::new(Metrics::new()),
        ready.clone(),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    assert_eq!(
        http_status(port, "/readyz").await,
        Some(503),
        "not synced yet"
    );
    let before = rss_kib();
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        if i % 2 == 0 {
            // Half a request, never finished.
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await;
        }
        idle.push(s);
    }
    let started = Instant::now();
    let mut closed = 0;
    for s in &mut idle {
        let mut b = [0u8; 64];
        let left = Duration::from_secs(4).saturating_sub(started.elapsed());
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(left, s.read(&mut b)).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 200,
        "every idle connection was closed by the server"
    );
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    assert_eq!(http_status(port, "/healthz").await, Some(200));
    ready.store(true, Ordering::SeqCst);
    assert_eq!(http_status(port, "/readyz").await, Some(200));
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

/// Log lines at WARN and above written while it is the thread's default subscriber (tests run on
/// a current-thread runtime, so the controller and the simulator log here too).
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Stores `spec` as the policy `name` the way a real API server comes to hold an object its CRD
/// schema now rejects: the schema is loosened, the object created, the schema restored.
async fn store_policy_past_the_schema(client: &Client, name: &str, spec: serde_json::Value) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::Resource;
    use kube::api::{ApiResource, DynamicObject};
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd_name = format!(
        "{}.{}",
        OidcRefreshPolicy::plural(&()),
        OidcRefreshPolicy::group(&())
    );
    let set_spec_schema = |crd: &mut CustomResourceDefinition, schema: serde_json::Value| {
        let version = &mut crd.spec.versions[0];
        let root = version
            .schema
            .as_mut()
            .unwrap()
            .open_api_v3_schema
            .as_mut()
            .unwrap();
        root.properties
            .as_mut()
            .unwrap()
            .insert("spec".into(), serde_json::from_value(schema).unwrap());
    };
    let mut crd = crds.get(&crd_name).await.unwrap();
    let original = serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap()
            .properties
            .as_ref()
            .unwrap()["spec"],
    )
    .unwrap();
    set_spec_schema(
        &mut crd,
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    );
    crds.replace(&crd_name, &PostParams::default(), &crd)
        .await
        .unwrap();
    let ar = ApiResource::erase::<OidcRefreshPolicy>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &ar);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": ar.api_version, "kind": ar.kind,
        "metadata": {"name": name, "annotations": {"note": "list-body-marker"}},
        "spec": spec
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    let mut crd = crds.get(&crd_name).await.unwrap();
    set_spec_schema(&mut crd, original);
    crds.replace(&crd_name, &PostParams::default(), &crd)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_policy_that_does_not_decode_stops_no_other_policy_and_is_logged_once_briefly() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (sim, client) = Sandbox::start_cluster().await.expect("simulator");
    for name in ["coder", "coder-2"] {
        sandbox::create_coder(&client, sandbox::coder_deployment(name, json!([])))
            .await
            .unwrap();
    }
    // A field of the wrong type, as after a CRD schema change, there when the operator starts.
    store_policy_past_the_schema(
        &client,
        "broken",
        json!({"provider": {"google": {}}, "coder": {"deployment": 42}}),
    )
    .await;
    sandbox::create_policy(
        &client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    let run = start_on(sim, client, settings());
    // Before: every list of policies failed on the one object, so no policy converged.
    common::wait_ready(&run.client, "coder").await;
    // A watch restart lists the broken policy again: nothing new is logged for it, and policies
    // created since converge too.
    run.sim.break_watches();
    let mut second = sandbox::example_policy("coder-2", json!({"google": {}}));
    second["spec"]["coder"]["deployment"] = json!("coder-2");
    sandbox::create_policy(&run.client, second).await.unwrap();
    common::wait_ready(&run.client, "coder-2").await;
    let text = logs.text();
    let reports: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("policy does not decode"))
        .collect();
    assert_eq!(reports.len(), 1, "{text}");
    assert!(
        reports[0].contains("broken") && reports[0].contains("integer `42`"),
        "{}",
        reports[0]
    );
    assert!(reports[0].len() < 1024, "{}", reports[0]);
    // Before: the client logged the whole list body, every policy in it, at every retry.
    assert!(!text.contains("list-body-marker"), "{text}");
    assert!(run.alive());
    run.stop().await;
}
