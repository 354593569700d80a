//! The real binary: `sandbox` end to end, and `run` pointed at a simulator with its admin server
//! and graceful shutdown on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use oidc_refresh_operator::sandbox::{self, Sandbox};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_oidc-refresh-operator");

#[tokio::test]
async fn sandbox_command_converges_google_and_exits_zero() {
    let out = tokio::task::spawn_blocking(|| {
        Command::new(BIN)
            .args(["sandbox", "--provider", "google"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("CODER_OIDC_SCOPES: <unset: Coder default> -> openid,profile,email,groups"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"{"access_type":"offline","hd":"example.com","prompt":"consent"}"#),
        "{stdout}"
    );
    assert!(
        stdout.contains("Ready.") && stdout.contains("UsersMustSignInAgain"),
        "{stdout}"
    );
}

#[tokio::test]
async fn sandbox_command_converges_keycloak_and_exits_zero() {
    let out = tokio::task::spawn_blocking(|| {
        Command::new(BIN)
            .args(["sandbox", "--provider", "keycloak"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("use.refresh.tokens: false -> true"),
        "{stdout}"
    );
    assert!(stdout.contains("IdentityProviderUpdated"), "{stdout}");
}

#[tokio::test]
async fn run_command_converges_serves_metrics_and_stops_on_sigterm() {
    let (sim, client, _dir, kubeconfig) = google_cluster().await;
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--admin-addr",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&client, "coder").await;

    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            let start = Instant::now();
            loop {
                if let Ok(r) = http
                    .get(format!("http://127.0.0.1:{port}{path}"))
                    .send()
                    .await
                {
                    return (r.status().as_u16(), r.text().await.unwrap());
                }
                assert!(start.elapsed() < WAIT, "admin server not up");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
    let (code, metrics) = get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("oidc_refresh_reconciles_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"oidc_refresh_writes_total{category="deployment"} 1"#),
        "{metrics}"
    );

    // SIGTERM: graceful shutdown, exit 0.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (s, err);
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);
    // JSON logs, with the policy on reconcile lines.
    let line = status
        .1
        .lines()
        .find(|l| l.contains("policy ready"))
        .unwrap_or_else(|| panic!("no ready log line:\n{}", status.1));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["span"]["policy.name"], "coder", "{line}");
    sim.shutdown().await;
}

/// A simulated cluster with a Coder Deployment and a Google policy, no controller, and a
/// kubeconfig for the binary.
async fn google_cluster() -> (
    kube_sim::SimHandle,
    kube::Client,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let (sim, client) = Sandbox::start_cluster().await.unwrap();
    sandbox::create_coder(&client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    sandbox::create_policy(
        &client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    let (dir, kubeconfig) = kubeconfig(&sim);
    (sim, client, dir, kubeconfig)
}

fn reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("oidc_refresh_reconciles_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn metrics_of(port: u16) -> Option<String> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?;
    r.text().await.ok()
}

async fn status_of(port: u16, path: &str) -> u16 {
    match reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_hand_over_when_it_dies() {
    let (sim, client) = Sandbox::start_cluster().await.unwrap();
    sandbox::create_coder(&client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let (_dir, kubeconfig) = kubeconfig(&sim);
    let spawn = |name: &str| {
        let port = free_port();
        let child = Command::new(BIN)
            .args([
                "run",
                "--leader-elect",
                "--lease-namespace",
                "coder",
                "--admin-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--pod-name", name])
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (child, port)
    };
    let (mut a, port_a) = spawn("replica-a");
    // Let the first replica take the Lease before the second starts.
    let start = Instant::now();
    loop {
        let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(client.clone(), "coder");
        if let Ok(l) = leases.get("oidc-refresh-operator").await
            && l.spec.and_then(|s| s.holder_identity).as_deref() == Some("replica-a")
        {
            break;
        }
        assert!(start.elapsed() < WAIT, "replica-a never took the Lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut b, port_b) = spawn("replica-b");
    sandbox::create_policy(
        &client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    wait_ready(&client, "coder").await;
    // Both are ready (the standby is healthy), only the leader reconciles.
    let start = Instant::now();
    while status_of(port_b, "/readyz").await != 200 {
        assert!(start.elapsed() < WAIT, "standby not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_of(port_a, "/readyz").await, 200);
    let start = Instant::now();
    while reconciles(&metrics_of(port_a).await.unwrap()) == 0 {
        assert!(start.elapsed() < WAIT, "replica-a finished no pass");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        reconciles(&metrics_of(port_b).await.unwrap()),
        0,
        "the standby must not reconcile"
    );

    // The leader dies without releasing the Lease; the standby takes over within its duration.
    a.kill().unwrap();
    let _ = a.wait();
    let killed = Instant::now();
    let api: kube::Api<oidc_refresh_operator::crd::OidcRefreshPolicy> =
        kube::Api::namespaced(client.clone(), "coder");
    api.patch(
        "coder",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"coder": {"scopes": ["groups", "teams"]}}})),
    )
    .await
    .unwrap();
    let start = Instant::now();
    loop {
        let (scopes, _) = sandbox::coder_env(&client, "coder").await.unwrap();
        if scopes.as_deref() == Some("openid,profile,email,groups,teams") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "replica-b did not take over: {scopes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        killed.elapsed() < Duration::from_secs(15 + 5 + 10),
        "hand-over took {:?}",
        killed.elapsed()
    );
    // The Deployment is written mid-pass; the pass is counted when it ends.
    let start = Instant::now();
    while reconciles(&metrics_of(port_b).await.unwrap()) == 0 {
        assert!(start.elapsed() < WAIT, "replica-b finished no pass");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &b.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || b.wait()).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn text_logs_to_a_pipe_carry_no_colour_codes() {
    let (sim, client, _dir, kubeconfig) = google_cluster().await;
    let child = Command::new(BIN)
        .args(["run", "--admin-addr", "127.0.0.1:0", "--log-format", "text"])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&client, "coder").await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("policy ready"), "{logs}");
    assert!(
        !logs.contains('\x1b'),
        "escape codes in piped logs: {logs:?}"
    );
    sim.shutdown().await;
}

/// SIGTERM while a reconcile waits on an identity provider that never finishes answering (a
/// tarpit): the process stops within the shutdown grace, not after the provider timeout.
#[tokio::test]
async fn sigterm_does_not_wait_for_a_tarpit_identity_provider() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Connections open to the tarpit (one more on accept, one less when it closes).
    let open = Arc::new(AtomicUsize::new(0));
    struct Closed(Arc<AtomicUsize>);
    impl Drop for Closed {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counter = open.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let closed = Closed(counter.clone());
            tokio::spawn(async move {
                let _closed = closed;
                // Take the request, then answer a small body one byte a second: within every
                // cap, never done; a closed connection is noticed at once.
                let mut buf = [0u8; 8192];
                if sock.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        r = sock.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
                        () = tokio::time::sleep(Duration::from_secs(1)) => {
                            if sock.write_all(b" ").await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });

    let (sim, client) = Sandbox::start_cluster().await.unwrap();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), sandbox::NAMESPACE);
    let secret = serde_json::from_value(json!({
        "metadata": {"name": "kc", "namespace": sandbox::NAMESPACE,
                     "labels": {"oidcrefresh.dev/credentials": "true"}},
        "stringData": {"client-id": "operator", "client-secret": "operator-secret"}
    }))
    .unwrap();
    secrets
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .unwrap();
    sandbox::create_coder(&client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    sandbox::create_policy(
        &client,
        sandbox::example_policy(
            "coder",
            json!({"keycloak": {"url": url, "realm": "r", "clientId": "coder", "credentialsSecret": "kc"}}),
        ),
    )
    .await
    .unwrap();
    let (_dir, kubeconfig) = kubeconfig(&sim);
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--admin-addr",
            &format!("127.0.0.1:{port}"),
            "--allow-insecure-http",
            "--provider-timeout",
            "120s",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until one call has been in flight for 2 s (it would last up to the 120 s provider
    // timeout).
    let start = Instant::now();
    let mut open_since: Option<Instant> = None;
    loop {
        open_since = if open.load(Ordering::SeqCst) > 0 {
            open_since.or(Some(Instant::now()))
        } else {
            None
        };
        if open_since.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "no call to the identity provider stayed in flight"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let termed = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if termed.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                panic!("still running 15 s after SIGTERM, waiting on the tarpit");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        termed.elapsed() < Duration::from_secs(12),
        "stopped {:?} after SIGTERM",
        termed.elapsed()
    );
    sim.shutdown().await;
}
