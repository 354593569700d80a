//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use kube_sim::{SimConfig, SimHandle, Simulator};
use serde_json::{Value, json};

pub async fn start() -> SimHandle {
    start_with(SimConfig::default()).await
}

pub async fn start_with(config: SimConfig) -> SimHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Simulator::start(config).await.expect("start simulator")
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

/// Send a request; returns (status, JSON body or Null, response headers).
pub async fn call(
    sim: &SimHandle,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let (s, v, _) = call_h(sim, method, path, content_type, body, None).await;
    (s, v)
}

pub async fn call_h(
    sim: &SimHandle,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<Value>,
    accept: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let url = format!("{}{}", sim.base_url(), path);
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = http().request(m, &url);
    if let Some(b) = body {
        rb = rb
            .header("content-type", content_type.unwrap_or("application/json"))
            .body(serde_json::to_vec(&b).unwrap());
    }
    if let Some(a) = accept {
        rb = rb.header("accept", a);
    }
    let resp = rb.send().await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, v, headers)
}

pub async fn get(sim: &SimHandle, path: &str) -> (u16, Value) {
    call(sim, "GET", path, None, None).await
}
pub async fn post(sim: &SimHandle, path: &str, body: Value) -> (u16, Value) {
    call(sim, "POST", path, None, Some(body)).await
}
pub async fn put(sim: &SimHandle, path: &str, body: Value) -> (u16, Value) {
    call(sim, "PUT", path, None, Some(body)).await
}
pub async fn patch(sim: &SimHandle, path: &str, ct: &str, body: Value) -> (u16, Value) {
    call(sim, "PATCH", path, Some(ct), Some(body)).await
}
pub async fn delete(sim: &SimHandle, path: &str) -> (u16, Value) {
    call(sim, "DELETE", path, None, None).await
}

pub fn rv(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

/// An open watch stream yielding parsed events.
pub struct Watch {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Watch {
    pub async fn open(sim: &SimHandle, path_and_query: &str) -> Watch {
        Self::open_accept(sim, path_and_query, None).await
    }
    pub async fn open_accept(sim: &SimHandle, path_and_query: &str, accept: Option<&str>) -> Watch {
        let url = format!("{}{}", sim.base_url(), path_and_query);
        let mut rb = http().get(&url);
        if let Some(a) = accept {
            rb = rb.header("accept", a);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        Watch { resp, buf: vec![] }
    }

    /// Next event, or None on end of stream / timeout.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("event json"));
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    /// Collect events until `n` are seen (or timeout).
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Vec<Value> {
        let mut out = vec![];
        while out.len() < n {
            match self.next(timeout).await {
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }
}

pub fn cm(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

pub fn deployment(name: &str, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": name, "image": image}]}}}})
}

pub const CRD_YAML: &str = include_str!("../fixtures/crd.yaml");

pub fn yaml(s: &str) -> Value {
    serde_saphyr::from_str(s).unwrap()
}

/// Create the test Widget CRD through the API.
pub async fn install_crd(sim: &SimHandle) {
    let (s, v) = post(
        sim,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        yaml(CRD_YAML),
    )
    .await;
    assert_eq!(s, 201, "{v}");
}
