//! A minimal simulator on the kit, driven over a real socket: scripted failures hit only the
//! routes the simulator says, in its own error shape with `Retry-After`; every call is counted;
//! recorded bodies are validated; shutdown stops the server.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use sim_kit::{CountRules, Harness, Listener, Recorded};

struct Routes;
impl CountRules for Routes {
    const TOKEN_ROUTE: Option<&'static str> = Some("/token");
}

#[derive(Clone, Debug)]
struct Body(String);
impl Recorded for Body {
    fn label(&self) -> String {
        "POST /api/things".into()
    }
    fn validate(&self) -> Result<(), Vec<String>> {
        if self.0.starts_with('{') {
            Ok(())
        } else {
            Err(vec![format!("not a JSON object: {}", self.0)])
        }
    }
}

fn route_template(path: &str) -> String {
    match path {
        "/token" | "/api/things" => path.into(),
        _ => "<unmatched>".into(),
    }
}

async fn start() -> (Arc<Harness<Routes, Body>>, String) {
    let listener = Listener::bind(sim_kit::LOOPBACK).await.unwrap();
    let addr = listener.local_addr().to_string();
    assert_eq!(listener.base_url(), format!("http://{addr}"));
    let kit = Arc::new(Harness::new(listener.base_url(), Duration::ZERO));
    let recorder = kit.clone();
    let app = Router::new()
        .route("/token", post(|| async { "token" }))
        .route(
            "/api/things",
            get(|| async { "things" }).post(move |body: Bytes| {
                let recorder = recorder.clone();
                async move {
                    recorder.record(Body(String::from_utf8_lossy(&body).into_owned()));
                    StatusCode::CREATED
                }
            }),
        );
    let observe = kit
        .observe(route_template)
        .faults_on(|route| route.starts_with("/api/"))
        .fault_answer(|status| (status, format!("simulated {}", status.as_u16())).into_response());
    kit.serve(listener, observe.apply(app));
    (kit, addr)
}

/// One HTTP/1.1 exchange; returns the raw response.
async fn call(addr: &str, method: &str, path: &str, body: &str) -> String {
    let (addr, req) = (
        addr.to_string(),
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(req.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok::<_, std::io::Error>(out)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| format!("io error: {e}"))
}

#[tokio::test]
async fn faults_counts_records_and_shutdown() {
    let (kit, addr) = start().await;
    kit.fail_next(2, 503, Some(3));
    // The token endpoint is not faultable: it answers and the failure stays pending.
    let r = call(&addr, "POST", "/token", "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    for _ in 0..2 {
        let r = call(&addr, "GET", "/api/things", "").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.to_ascii_lowercase().contains("retry-after: 3"), "{r}");
        assert!(r.ends_with("simulated 503"), "{r}");
    }
    let r = call(&addr, "GET", "/api/things", "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    call(&addr, "POST", "/api/things", "{}").await;
    call(&addr, "POST", "/api/things", "nope").await;
    let r = call(&addr, "GET", "/elsewhere", "").await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    // A HEAD is a read, in every simulator.
    let r = call(&addr, "HEAD", "/api/things", "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    let c = kit.counters();
    assert_eq!(c.calls("GET", "/api/things"), 3);
    assert_eq!(c.with_status(503), 2);
    assert_eq!(c.calls("GET", "<unmatched>"), 1);
    assert_eq!(
        (c.reads(), c.writes(), c.token_requests(), c.total()),
        (5, 2, 1, 8)
    );
    assert_eq!(kit.writes(), 2);
    assert_eq!(kit.recorded_bodies().len(), 2);
    assert_eq!(
        kit.validate_recorded_bodies(),
        Err(vec![
            "POST /api/things: not a JSON object: nope".to_string()
        ])
    );
    kit.reset_counters();
    assert_eq!(kit.counters().total(), 0);
    assert_eq!(
        kit.recorded_bodies().len(),
        2,
        "bodies outlive a counter reset"
    );

    kit.set_latency(Duration::from_millis(50));
    let started = Instant::now();
    call(&addr, "GET", "/api/things", "").await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    kit.set_latency(Duration::ZERO);

    kit.shutdown().await;
    kit.shutdown().await;
    let r = call(&addr, "GET", "/api/things", "").await;
    assert!(!r.starts_with("HTTP/1.1"), "served after shutdown: {r}");
}

/// A server's own refusal (a quota) comes before its handler, after a scripted failure; every
/// answer, refused, failed or handled, passes through `finish`, and is counted as answered.
#[tokio::test]
async fn admit_and_finish() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let listener = Listener::bind(sim_kit::LOOPBACK).await.unwrap();
    let addr = listener.local_addr().to_string();
    let kit: Arc<Harness<Routes>> = Arc::new(Harness::new(listener.base_url(), Duration::ZERO));
    let quota = Arc::new(AtomicU32::new(2));
    let left = quota.clone();
    let observe = kit
        .observe(route_template)
        .faults_on(|route| route.starts_with("/api/"))
        .admit(move |route| {
            let over = route.starts_with("/api/")
                && quota
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_err();
            over.then(|| (StatusCode::TOO_MANY_REQUESTS, "over quota").into_response())
        })
        .finish(move |route, resp| {
            let v = format!("{route} {}", left.load(Ordering::SeqCst));
            resp.headers_mut()
                .insert("x-left", v.parse().expect("header value"));
        });
    let app = Router::new()
        .route("/token", post(|| async { "token" }))
        .route("/api/things", get(|| async { "things" }));
    kit.serve(listener, observe.apply(app));

    kit.fail_next(1, 500, None);
    let r = call(&addr, "GET", "/api/things", "").await;
    assert!(
        r.starts_with("HTTP/1.1 500"),
        "a scripted failure uses no quota: {r}"
    );
    assert!(r.contains("x-left: /api/things 2"), "{r}");
    for _ in 0..2 {
        let r = call(&addr, "GET", "/api/things", "").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    let r = call(&addr, "GET", "/api/things", "").await;
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    assert!(r.ends_with("over quota"), "{r}");
    assert!(r.contains("x-left: /api/things 0"), "{r}");
    let r = call(&addr, "POST", "/token", "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("x-left: /token 0"), "{r}");
    let c = kit.counters();
    assert_eq!(
        (c.with_status(500), c.with_status(200), c.with_status(429)),
        (1, 3, 1)
    );
    kit.shutdown().await;
}
