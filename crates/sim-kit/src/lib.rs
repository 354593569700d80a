//! HTTP plumbing shared by the identity-provider simulators (`sim-keycloak`, `sim-entra`,
//! `sim-pingfederate`, `sim-logto`, `sim-okta`, `sim-duende`, and any new one). Test and sandbox use only.
//!
//! A simulator is an adversarial model of one real server: its routes, state, validation, error
//! bodies and quirks are its own and stay in its crate. What every simulator needs around that
//! model, and what must behave the same in all of them, lives here:
//!
//! | piece | what it is for |
//! | --- | --- |
//! | [`Harness`] | the test-harness side of one running simulator: base URL, server, hooks, counters, recorded bodies, with the test methods every simulator handle offers (`base_url`, `counters`, `writes`, `reset_counters`, `set_latency`, `fail_next`, `set_throttle`, `recorded_bodies`, `validate_recorded_bodies`, `shutdown`) |
//! | [`Listener`], [`Serving`] | bind a loopback port (http, or https with the `tls` feature and a `TlsIdentity`), serve an axum [`Router`](axum::Router), stop it and wait for it |
//! | [`Hooks`] | the mechanisms behind the test methods: delay before every answer, scripted failures ([`Hooks::fail_next`]: status and `Retry-After` for the next N calls), seeded probabilistic throttling ([`Hooks::set_throttle`]), request counts |
//! | [`Observe`] | the axum middleware that applies [`Hooks`] to every request: delay, scripted failure (only on the routes the simulator says, answered in the simulated server's own error shape, `Retry-After` added), the server's own refusals before its handler ([`Observe::admit`], e.g. a rate limit), headers on every answer ([`Observe::finish`]), count by (method, route template, status) |
//! | [`Counters`], [`CountRules`] | a snapshot of the counts with reads, writes, token requests, per-route and per-status sums and differences; each simulator says which route is its token endpoint; reads are `GET` and `HEAD` everywhere ([`READ_METHODS`]) |
//! | [`Recorded`], [`validate_all`], [`RequestBody`], [`Contract`] | recorded request bodies checked against the contract excerpts, one line per problem; `RequestBody` is a ready one (method, route template, JSON or raw text) for a simulator that names its contract check |
//! | [`Tokens`], [`Issued`] | the access tokens a simulator issued and what each grants, with expiry (`expire_tokens`, `live_tokens`, bearer checks), forgetting tokens long expired so a long run does not grow; the token format and what a grant allows stay the simulator's |
//! | [`window`] | one page of a collection from an offset and an optional limit; the paging parameters and links are the server's |
//! | [`percent_decode`], [`form_decode`], [`form_decode_strict`], [`bearer_token`], [`is_json`], [`set_retry_after`], [`lock`] | small helpers every server model needs |
//! | [`SandboxSeed`], [`LOOPBACK`] | what a simulator's `seed_sandbox` hands the operator's sandbox; the default listen address |
//!
//! # How a simulator uses it
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use axum::{Router, http::StatusCode, response::IntoResponse};
//! use serde_json::{Value, json};
//! use sim_kit::{CountRules, Harness, Listener, Recorded};
//!
//! /// Which calls are token requests, for the counters.
//! pub struct Routes;
//! impl CountRules for Routes {
//!     const TOKEN_ROUTE: Option<&'static str> = Some("/oauth2/token");
//! }
//! pub type SimCounters = sim_kit::Counters<Routes>;
//!
//! /// One admin-API body the simulator received (token requests are never recorded).
//! #[derive(Clone, Debug)]
//! pub struct RecordedBody { pub route: String, pub body: Value }
//! impl Recorded for RecordedBody {
//!     fn label(&self) -> String { self.route.clone() }
//!     fn validate(&self) -> Result<(), Vec<String>> {
//!         // The simulator's strict contract check.
//!         Ok(())
//!     }
//! }
//!
//! struct Inner {
//!     state: Mutex<()>, // the server model
//!     kit: Harness<Routes, RecordedBody>,
//! }
//!
//! #[derive(Clone)]
//! pub struct SimHandle { inner: Arc<Inner> }
//!
//! /// The shared test methods (`counters`, `fail_next`, `shutdown`, …) are the harness's.
//! impl std::ops::Deref for SimHandle {
//!     type Target = Harness<Routes, RecordedBody>;
//!     fn deref(&self) -> &Self::Target { &self.inner.kit }
//! }
//!
//! fn route_template(path: &str) -> String {
//!     if path == "/oauth2/token" { path.into() } else { "<unmatched>".into() }
//! }
//!
//! pub async fn start(latency: Duration) -> std::io::Result<SimHandle> {
//!     let listener = Listener::bind(sim_kit::LOOPBACK).await?;
//!     let inner = Arc::new(Inner {
//!         state: Mutex::new(()),
//!         kit: Harness::new(listener.base_url(), latency),
//!     });
//!     let observe = inner.kit.observe(route_template)
//!         // Scripted failures hit the admin API only, never the token endpoint,
//!         .faults_on(|route| route.starts_with("/api/"))
//!         // and answer in the server's own error shape.
//!         .fault_answer(|status| (status, axum::Json(json!({"error": "server_error"}))).into_response());
//!     let app = observe.apply(Router::new().fallback(|| async { StatusCode::NOT_FOUND }));
//!     inner.kit.serve(listener, app);
//!     Ok(SimHandle { inner })
//! }
//! ```
//!
//! Handlers record bodies with [`Harness::record`]. A simulator whose server decides about
//! failures later than routing (e.g. only for known routes, after reading the body) calls
//! [`Hooks::delay`], [`Hooks::take_fault`] and [`Hooks::count`] itself instead of using
//! [`Observe`]. Inherent methods of the handle take precedence over the harness's, for a
//! simulator whose server records or validates differently.
//!
//! What stays in each simulator, on purpose: route templates, which routes scripted failures
//! hit, the body of an injected failure, authentication, error shapes, paging parameters, what is
//! recorded of a request and against which contract schema it is checked.

mod counters;
mod harness;
mod hooks;
mod server;
mod tokens;
mod util;

pub use counters::{CountRules, Counters, READ_METHODS, RouteKey};
pub use harness::{Contract, Harness, Recorded, RequestBody};
pub use hooks::{Fault, Hooks, Observe};
#[cfg(feature = "tls")]
pub use server::TlsIdentity;
pub use server::{Listener, Serving};
pub use tokens::{EXPIRED_RETENTION, Issued, Tokens};
pub use util::{
    bearer_token, form_decode, form_decode_strict, is_json, lock, percent_decode, set_retry_after,
    validate_all, window,
};

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// `127.0.0.1:0`: a free loopback port, the default listen address of every simulator.
pub const LOOPBACK: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

/// What a simulator's `seed_sandbox` created, for the operator's sandbox to write a policy and
/// its credentials Secret.
#[derive(Clone, Debug)]
pub struct SandboxSeed {
    /// The provider block of the policy's `spec.provider`, e.g. `{"keycloak": {...}}`.
    pub spec: serde_json::Value,
    /// Name of the credentials Secret the spec names.
    pub secret_name: String,
    /// The Secret's keys and values.
    pub secret_data: BTreeMap<String, String>,
}
