//! Shared helpers for the provider tests: a provider against its IdP simulator, without a cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Once};
use std::time::Duration;

use oidc_refresh_operator::metrics::Metrics;
use oidc_refresh_operator::providers::{Credentials, IdpPlan, ProviderDeps, ProviderError};

/// Installs the TLS crypto provider, once per test binary.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Provider dependencies with fresh metrics and a 5 s timeout.
pub fn deps() -> ProviderDeps {
    deps_timing_out(Duration::from_secs(5))
}

/// Provider dependencies with fresh metrics and HTTP calls that give up after `timeout`.
pub fn deps_timing_out(timeout: Duration) -> ProviderDeps {
    ProviderDeps::new(Arc::new(Metrics::new()), timeout)
}

/// The credentials of Secret `secret_name` at `version`, holding `data`.
pub fn credentials(secret_name: &str, version: &str, data: &[(&str, &str)]) -> Credentials {
    let data: BTreeMap<String, Vec<u8>> = data
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    Credentials::new(secret_name, version, data)
}

/// The number of request bodies a simulator recorded, all valid against its contract; panics with
/// the violations otherwise.
pub fn assert_bodies_valid(checked: Result<usize, Vec<String>>) -> usize {
    match checked {
        Ok(n) => n,
        Err(e) => panic!("bodies do not match the contract:\n{}", e.join("\n")),
    }
}

/// None of `secrets` (secret values, tokens) in an error's Display or Debug.
pub fn assert_no_secrets(e: &ProviderError, secrets: &[&str]) {
    for shown in [e.to_string(), format!("{e:?}")] {
        for secret in secrets {
            assert!(!shown.contains(secret), "secret leaked in {shown}");
        }
    }
}

/// The settings a plan changes, in its order.
pub fn changed_settings(plan: &IdpPlan) -> Vec<&str> {
    plan.changes().iter().map(|c| c.setting.as_str()).collect()
}
