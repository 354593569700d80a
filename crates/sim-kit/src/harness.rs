//! The test-harness side of one running simulator: its server, hooks, counts and recorded
//! request bodies, with the methods every simulator handle offers.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use serde_json::Value;

use crate::counters::{CountRules, Counters};
use crate::hooks::{Hooks, Observe};
use crate::server::{Listener, Serving};
use crate::util::{lock, validate_all};

/// A request body a simulator recorded, checkable against the simulated server's contract.
pub trait Recorded {
    /// What prefixes each problem with this body, e.g. `PUT /clients/{id} (ClientRepresentation)`.
    fn label(&self) -> String;
    /// Checks the body strictly against the contract: `Err` holds one line per problem.
    fn validate(&self) -> Result<(), Vec<String>>;
}

/// The contract a simulator checks a [`RequestBody`] against: its server's schemas, by route.
pub trait Contract {
    /// Checks `body`, sent with `method` to `route`, strictly: `Err` holds one line per problem.
    fn check(method: &str, route: &str, body: &Value) -> Result<(), Vec<String>>;
}

/// A request body as received, with its method and route template, checked against the
/// contract `C`: for a simulator whose recorded bodies need nothing more.
pub struct RequestBody<C> {
    /// HTTP method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// The body (a JSON string holding the raw text when it was not JSON).
    pub body: Value,
    contract: PhantomData<fn() -> C>,
}

impl<C> RequestBody<C> {
    /// The body `raw` sent with `method` to `route`: its JSON, or the raw text as a JSON string.
    pub fn new(method: &str, route: &str, raw: &[u8]) -> Self {
        RequestBody {
            method: method.to_string(),
            route: route.to_string(),
            body: serde_json::from_slice(raw)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned())),
            contract: PhantomData,
        }
    }
}

impl<C: Contract> Recorded for RequestBody<C> {
    fn label(&self) -> String {
        format!("{} {}", self.method, self.route)
    }

    fn validate(&self) -> Result<(), Vec<String>> {
        C::check(&self.method, &self.route, &self.body)
    }
}

// Derived impls would require `C` itself to be Clone, Debug…; `C` is only a marker.
impl<C> Clone for RequestBody<C> {
    fn clone(&self) -> Self {
        RequestBody {
            method: self.method.clone(),
            route: self.route.clone(),
            body: self.body.clone(),
            contract: PhantomData,
        }
    }
}

impl<C> PartialEq for RequestBody<C> {
    fn eq(&self, other: &Self) -> bool {
        (&self.method, &self.route, &self.body) == (&other.method, &other.route, &other.body)
    }
}

impl<C> fmt::Debug for RequestBody<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("method", &self.method)
            .field("route", &self.route)
            .field("body", &self.body)
            .finish()
    }
}

/// The test-harness side of one running simulator: base URL, server, [`Hooks`] (latency,
/// scripted failures, throttling, counts, counted by the rules `R`) and the request bodies of
/// type `B` it recorded. A simulator keeps one in its shared state and lets its handle
/// dereference to it, so that every simulator offers the same test hooks under the same names.
pub struct Harness<R, B = ()> {
    base_url: String,
    hooks: Arc<Hooks>,
    server: OnceLock<Serving>,
    bodies: Mutex<Vec<B>>,
    rules: PhantomData<fn() -> R>,
}

impl<R: CountRules, B> Harness<R, B> {
    /// A harness for a simulator reachable at `base_url`, answering after `latency`.
    pub fn new(base_url: String, latency: Duration) -> Self {
        Harness {
            base_url,
            hooks: Arc::new(Hooks::new(latency)),
            server: OnceLock::new(),
            bodies: Mutex::new(Vec::new()),
            rules: PhantomData,
        }
    }

    /// The hooks, for the simulator's middleware or handlers.
    pub fn hooks(&self) -> &Arc<Hooks> {
        &self.hooks
    }

    /// The [`Observe`] middleware over these hooks, naming routes with `route_template`.
    pub fn observe(
        &self,
        route_template: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Observe {
        Observe::new(self.hooks.clone(), route_template)
    }

    /// Serves `app` on `listener` (once; a second call does nothing).
    pub fn serve(&self, listener: Listener, app: Router) {
        let _ = self.server.set(listener.serve(app));
    }

    /// The simulator's base URL (`http://127.0.0.1:<port>`, with a path prefix or `https` where
    /// the simulator has one).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Request counters so far.
    pub fn counters(&self) -> Counters<R> {
        self.hooks.counters()
    }

    /// Shorthand for `counters().writes()`.
    pub fn writes(&self) -> u64 {
        self.counters().writes()
    }

    /// Clears the counters (not the recorded bodies).
    pub fn reset_counters(&self) {
        self.hooks.reset_counters();
    }

    /// Delay before every answer from now on.
    pub fn set_latency(&self, d: Duration) {
        self.hooks.set_latency(d);
    }

    /// The next `n` calls that can fail (which ones, and the body of the answer, are the
    /// simulator's: see its crate documentation) answer `status`, with `Retry-After: <secs>`
    /// when given. `n = 0` clears a pending failure.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        self.hooks.fail_next(n, status, retry_after);
    }

    /// From now on, a share `ratio` (0..=1) of the calls that can fail answers 429 with
    /// `Retry-After: <retry_after_secs>`, as a throttling server does. The choice is made by a
    /// PRNG seeded the same way on every call of this method, so a given sequence of calls is
    /// throttled the same way each time. `ratio = 0` turns it off. A pending
    /// [`fail_next`](Self::fail_next) takes precedence.
    pub fn set_throttle(&self, ratio: f64, retry_after_secs: u64) {
        self.hooks.set_throttle(ratio, retry_after_secs);
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(&self) {
        if let Some(server) = self.server.get() {
            server.shutdown().await;
        }
    }
}

/// Recording, for a simulator that records request bodies (`B` other than `()`).
impl<R: CountRules, B: Clone + Recorded> Harness<R, B> {
    /// Records a request body.
    pub fn record(&self, body: B) {
        lock(&self.bodies).push(body);
    }

    /// Every request body recorded so far, in order (which requests are recorded is the
    /// simulator's: never those that carry secrets).
    pub fn recorded_bodies(&self) -> Vec<B> {
        lock(&self.bodies).clone()
    }

    /// Validates every recorded body strictly against the contract. Returns how many were
    /// checked, or one line per problem.
    pub fn validate_recorded_bodies(&self) -> Result<usize, Vec<String>> {
        validate_all(&self.recorded_bodies(), B::label, B::validate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct ObjectsOnly;
    impl Contract for ObjectsOnly {
        fn check(method: &str, route: &str, body: &Value) -> Result<(), Vec<String>> {
            if body.is_object() {
                Ok(())
            } else {
                Err(vec![format!("{method} {route} wants an object")])
            }
        }
    }

    #[test]
    fn request_bodies_keep_json_or_the_raw_text() {
        let ok = RequestBody::<ObjectsOnly>::new("PUT", "/a/{id}", br#"{"x":1}"#);
        assert_eq!(ok.body, serde_json::json!({"x": 1}));
        assert_eq!(ok.validate(), Ok(()));
        let raw = RequestBody::<ObjectsOnly>::new("POST", "/a", b"x=1");
        assert_eq!(raw.body, Value::String("x=1".into()));
        assert_eq!(raw.label(), "POST /a");
        assert_eq!(raw.validate(), Err(vec!["POST /a wants an object".into()]));
        assert_eq!(raw.clone(), raw);
        assert_ne!(raw, ok);
    }
}
