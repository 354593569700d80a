//! HTTP plumbing every simulator needs and that knows nothing of Duende: latency, injected
//! failures, request counters by route template, and the record of request bodies. Kept apart so
//! that it can move into a shared simulator kit.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// Locks a mutex, recovering from poisoning (a panicking test must not wedge the simulator).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Request counts by (method, route template, status), e.g. `("PUT", "/api/Clients", 204)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// Count per (method, route template, status).
    pub by_route: BTreeMap<(String, String, u16), u64>,
}

impl SimCounters {
    /// Records one answered request.
    pub fn record(&mut self, method: &str, route: &str, status: u16) {
        *self
            .by_route
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
    }

    /// Calls with a method other than GET/HEAD, on routes for which `is_api(route)` holds.
    pub fn writes_where(&self, is_api: impl Fn(&str) -> bool) -> u64 {
        self.sum(|m, r, _| m != "GET" && m != "HEAD" && is_api(r))
    }

    /// GET calls.
    pub fn reads(&self) -> u64 {
        self.sum(|m, _, _| m == "GET")
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.sum(|_, _, _| true)
    }

    /// Calls to one (method, route template), any status.
    pub fn calls(&self, method: &str, route: &str) -> u64 {
        self.sum(|m, r, _| m == method && r == route)
    }

    /// Calls to one route template, any method and status.
    pub fn calls_to(&self, route: &str) -> u64 {
        self.sum(|_, r, _| r == route)
    }

    /// Calls answered with `status`.
    pub fn with_status(&self, status: u16) -> u64 {
        self.sum(|_, _, s| s == status)
    }

    fn sum(&self, f: impl Fn(&str, &str, u16) -> bool) -> u64 {
        self.by_route
            .iter()
            .filter(|((m, r, s), _)| f(m, r, *s))
            .map(|(_, n)| n)
            .sum()
    }
}

/// One request body the simulator received.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedBody {
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// The body (a JSON string holding the raw text when it was not JSON).
    pub body: Value,
}

/// A pending injected failure: the next `remaining` matching calls answer `status`.
#[derive(Clone, Copy, Debug)]
pub struct Failure {
    /// Calls left to fail.
    pub remaining: usize,
    /// Status to answer.
    pub status: u16,
    /// `Retry-After` seconds, if any.
    pub retry_after: Option<u64>,
}

/// Latency, failure injection, counters and recorded bodies, shared by a simulator's handlers.
#[derive(Debug, Default)]
pub struct Plumbing {
    /// Delay before every answer.
    pub latency: Duration,
    /// Pending failure.
    pub failure: Option<Failure>,
    /// Counters.
    pub counters: SimCounters,
    /// Recorded bodies.
    pub bodies: Vec<RecordedBody>,
}

impl Plumbing {
    /// Takes one injected failure, if one is pending: `(status, retry_after)`.
    pub fn take_failure(&mut self) -> Option<(u16, Option<u64>)> {
        let f = self.failure.as_mut()?;
        let out = (f.status, f.retry_after);
        f.remaining -= 1;
        if f.remaining == 0 {
            self.failure = None;
        }
        Some(out)
    }

    /// Arms a failure for the next `n` calls; `n = 0` clears it.
    pub fn fail_next(&mut self, n: usize, status: u16, retry_after: Option<u64>) {
        self.failure = (n > 0).then_some(Failure {
            remaining: n,
            status,
            retry_after,
        });
    }

    /// Records a body (parsed as JSON when it is JSON).
    pub fn record_body(&mut self, method: &str, route: &str, raw: &[u8]) {
        let body = serde_json::from_slice(raw)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()));
        self.bodies.push(RecordedBody {
            method: method.to_string(),
            route: route.to_string(),
            body,
        });
    }
}

/// The answer of an injected failure: a plain-text body, as a reverse proxy or Kestrel would give,
/// with `Retry-After` when asked.
pub fn injected_response(status: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = (
        status,
        status.canonical_reason().unwrap_or("error").to_string(),
    )
        .into_response();
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Percent-decodes a component (`+` becomes a space when `plus_is_space`).
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if plus_is_space && bytes[i] == b'+' {
            b' '
        } else {
            bytes[i]
        });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
