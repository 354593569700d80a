//! Test plumbing that is not Okta's: request counters by route template, a record of every
//! request body, injected latency and failures. Kept apart from the Okta model so it can move into
//! a shared simulator kit.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// Request counts by (method, route template, status), e.g.
/// `("PUT", "/api/v1/apps/{appId}", 200)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// Count per (method, route template, status).
    pub by_route: BTreeMap<(String, String, u16), u64>,
}

impl SimCounters {
    /// Counts one answered request.
    pub fn record(&mut self, method: &str, route: &str, status: u16) {
        *self
            .by_route
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
    }

    /// Non-GET calls to the Management API (token requests are not writes).
    pub fn writes(&self) -> u64 {
        self.sum(|m, r, _| m != "GET" && m != "HEAD" && r.starts_with("/api/"))
    }

    /// GET calls.
    pub fn reads(&self) -> u64 {
        self.sum(|m, _, _| m == "GET")
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.sum(|_, _, _| true)
    }

    /// Token requests.
    pub fn token_requests(&self) -> u64 {
        self.sum(|_, r, _| r.starts_with("/oauth2/"))
    }

    /// Calls to one (method, route template), any status.
    pub fn calls(&self, method: &str, route: &str) -> u64 {
        self.sum(|m, r, _| m == method && r == route)
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

/// A pending injected failure.
#[derive(Clone, Copy, Debug)]
pub struct Failure {
    /// Calls left to fail.
    pub remaining: usize,
    /// Status to answer.
    pub status: u16,
    /// `Retry-After` seconds to send.
    pub retry_after: Option<u64>,
}

/// Counters, bodies, latency and failures of one simulator.
#[derive(Debug, Default)]
pub struct Plumbing {
    /// Counters so far.
    pub counters: SimCounters,
    /// Bodies so far.
    pub bodies: Vec<RecordedBody>,
    /// Delay before every answer.
    pub latency: Duration,
    /// Pending failure.
    pub failure: Option<Failure>,
}

impl Plumbing {
    /// Takes one injected failure, if pending: (status, retry-after).
    pub fn take_failure(&mut self) -> Option<(u16, Option<u64>)> {
        let f = self.failure.as_mut()?;
        let out = (f.status, f.retry_after);
        f.remaining -= 1;
        if f.remaining == 0 {
            self.failure = None;
        }
        Some(out)
    }

    /// Sets the next `n` failures (`n = 0` clears).
    pub fn fail_next(&mut self, n: usize, status: u16, retry_after: Option<u64>) {
        self.failure = (n > 0).then_some(Failure {
            remaining: n,
            status,
            retry_after,
        });
    }

    /// Records a body (raw text kept as a JSON string when it is not JSON).
    pub fn record_body(&mut self, method: &str, route: &str, raw: &[u8]) -> Option<Value> {
        let parsed = serde_json::from_slice::<Value>(raw).ok();
        self.bodies.push(RecordedBody {
            method: method.to_string(),
            route: route.to_string(),
            body: parsed
                .clone()
                .unwrap_or_else(|| Value::String(String::from_utf8_lossy(raw).into_owned())),
        });
        parsed
    }
}
