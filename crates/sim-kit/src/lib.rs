//! HTTP plumbing shared by the identity-provider simulators (`sim-keycloak`, `sim-entra`,
//! `sim-pingfederate`, `sim-logto`, and any new one). Test and sandbox use only.
//!
//! A simulator is an adversarial model of one real server: its routes, state, validation, error
//! bodies and quirks are its own and stay in its crate. What every simulator needs around that
//! model, and what must behave the same in all of them, lives here:
//!
//! | piece | what it is for |
//! | --- | --- |
//! | [`Listener`], [`Serving`] | bind a loopback port (http, or https with the `tls` feature), serve an axum [`Router`](axum::Router), stop it and wait for it |
//! | [`Hooks`] | the test hooks of a running simulator: delay before every answer, scripted failures ([`Hooks::fail_next`]: status and `Retry-After` for the next N calls), seeded probabilistic throttling ([`Hooks::set_throttle`]), and request counts |
//! | [`Observe`] | the axum middleware that applies [`Hooks`] to every request: delay, scripted failure (answered in the simulated server's own error shape), count by (method, route template, status) |
//! | [`Counters`], [`CountRules`] | a snapshot of the counts with reads, writes, token requests, per-route and per-status sums and differences; each simulator says which route is its token endpoint and which methods are reads |
//! | [`validate_all`] | check every recorded request body against the contract excerpts, one line per problem |
//! | [`percent_decode`], [`form_decode`], [`bearer_token`], [`is_json`], [`set_retry_after`], [`lock`] | small helpers every server model needs |
//! | [`SandboxSeed`] | what a simulator's `seed_sandbox` hands the operator's sandbox |
//!
//! # How a simulator uses it
//!
//! ```no_run
//! use std::sync::{Arc, Mutex, OnceLock};
//! use axum::{Router, http::StatusCode, response::IntoResponse};
//! use sim_kit::{CountRules, Counters, Hooks, Listener, Observe, Serving};
//!
//! /// Which calls are token requests and which are reads, for [`Counters`].
//! pub struct Routes;
//! impl CountRules for Routes {
//!     const TOKEN_ROUTE: Option<&'static str> = Some("/oauth2/token");
//! }
//! pub type SimCounters = Counters<Routes>;
//!
//! struct Inner {
//!     state: Mutex<()>, // the server model
//!     hooks: Arc<Hooks>,
//!     base_url: String,
//!     server: OnceLock<Serving>,
//! }
//!
//! fn route_template(path: &str) -> String {
//!     if path == "/oauth2/token" { path.into() } else { "<unmatched>".into() }
//! }
//!
//! async fn start() -> std::io::Result<Arc<Inner>> {
//!     let listener = Listener::bind(sim_kit::LOOPBACK).await?;
//!     let hooks = Arc::new(Hooks::new(std::time::Duration::ZERO));
//!     let inner = Arc::new(Inner {
//!         state: Mutex::new(()),
//!         hooks: hooks.clone(),
//!         base_url: listener.base_url(),
//!         server: OnceLock::new(),
//!     });
//!     let observe = Observe::new(hooks, route_template)
//!         // Scripted failures hit the admin API only, never the token endpoint.
//!         .faults_on(|route| route.starts_with("/api/"))
//!         // ... answered in the server's own error shape.
//!         .fault_answer(|status| (status, "{\"error\":\"server_error\"}").into_response());
//!     let app = observe.apply(Router::new().fallback(|| async { StatusCode::NOT_FOUND }));
//!     let _ = inner.server.set(listener.serve(app));
//!     Ok(inner)
//! }
//! ```
//!
//! The simulator's `SimHandle` then forwards its test hooks: `counters()` is
//! `hooks.counters()`, `fail_next(n, status, retry_after)` is `hooks.fail_next(..)`,
//! `set_latency(d)` is `hooks.set_latency(d)`, `shutdown()` is `server.shutdown()`. A simulator
//! whose server decides about failures later than routing (e.g. only for known routes, after
//! reading the body) calls [`Hooks::delay`], [`Hooks::take_fault`] and [`Hooks::count`] itself
//! instead of using [`Observe`].
//!
//! What stays in each simulator, on purpose: route templates, which routes scripted failures
//! hit, the body of an injected failure, authentication, error shapes, paging parameters, what is
//! recorded of a request and against which contract schema it is checked.

mod counters;
mod hooks;
mod server;
mod util;

pub use counters::{CountRules, Counters, RouteKey};
pub use hooks::{Fault, Hooks, Observe};
#[cfg(feature = "tls")]
pub use server::TlsIdentity;
pub use server::{Listener, Serving};
pub use util::{
    bearer_token, form_decode, is_json, lock, percent_decode, set_retry_after, validate_all,
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
