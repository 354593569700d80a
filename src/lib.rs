//! oidc-refresh-operator: makes OIDC refresh tokens work for Coder, declaratively.
//!
//! An `OidcRefreshPolicy` names an identity provider, the OIDC client Coder uses, the
//! refresh-token settings wanted and the Coder Deployment to wire. The controller configures the
//! identity provider through its admin API, merges `CODER_OIDC_SCOPES` and
//! `CODER_OIDC_AUTH_URL_PARAMS` into the Deployment by server-side apply, follows the rollout and
//! reports everything in status conditions and Events.

#![forbid(unsafe_code)]

pub mod admin;
pub mod coder;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod error;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod providers;
pub mod reconcile;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod status;
pub mod telemetry;
