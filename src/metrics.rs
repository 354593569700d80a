//! Prometheus metrics. Labels are bounded: error categories, provider kinds, operation names and
//! outcomes are fixed sets, never error texts. Object names appear only in the per-policy
//! client-credential expiry gauge: one series per policy and credential kind, removed with the
//! policy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::providers::Finding;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderCallLabels {
    provider: &'static str,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExpiryLabels {
    namespace: String,
    policy: String,
    provider: &'static str,
    /// `secret` (client secret) or `certificate` (certificate credential).
    credential: &'static str,
}

/// All metrics of the process.
pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Counter,
    failures: Family<CategoryLabels, Counter>,
    duration: Histogram,
    provider_calls: Family<ProviderCallLabels, Counter>,
    provider_duration: Family<ProviderLabels, Histogram>,
    writes: Family<CategoryLabels, Counter>,
    findings: Family<ReasonLabels, Counter>,
    problems: Family<ReasonLabels, Counter>,
    credential_expiry: Family<ExpiryLabels, Gauge>,
    /// The expiry series set per policy (namespace, name), to remove them.
    expiry_series: Mutex<HashMap<(String, String), Vec<ExpiryLabels>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `oidc_refresh` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oidc_refresh");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let failures = Family::<CategoryLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error category",
            failures.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        let provider_calls = Family::<ProviderCallLabels, Counter>::default();
        registry.register(
            "provider_calls",
            "Identity-provider admin API calls by provider, operation and outcome",
            provider_calls.clone(),
        );
        let provider_duration = Family::<ProviderLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        registry.register(
            "provider_call_duration_seconds",
            "Identity-provider admin API call duration",
            provider_duration.clone(),
        );
        let writes = Family::<CategoryLabels, Counter>::default();
        registry.register(
            "writes",
            "Writes made, by target (identity_provider, deployment, status, event)",
            writes.clone(),
        );
        let problems = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_problems",
            "Reconciles that ended blocked or retrying, by condition reason",
            problems.clone(),
        );
        let findings = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "findings",
            "Warnings newly reported on policies, by reason (e.g. ClientSecretExpiring)",
            findings.clone(),
        );
        let credential_expiry = Family::<ExpiryLabels, Gauge>::default();
        registry.register(
            "client_secret_expiry_timestamp_seconds",
            "When the latest client secret (credential=secret) or certificate credential \
             (credential=certificate) of a policy's identity-provider app expires, Unix time; \
             present while the provider reports it expiring or expired (Entra ID: within 30 days)",
            credential_expiry.clone(),
        );
        Metrics {
            credential_expiry,
            expiry_series: Mutex::default(),
            findings,
            problems,
            registry: Mutex::new(registry),
            reconciles,
            failures,
            duration,
            provider_calls,
            provider_duration,
            writes,
        }
    }

    /// One reconcile finished.
    pub fn reconciled(&self, took: Duration, error_category: Option<&'static str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(category) = error_category {
            self.failures
                .get_or_create(&CategoryLabels { category })
                .inc();
        }
    }

    /// One provider call finished.
    pub fn provider_call(
        &self,
        provider: &'static str,
        operation: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        self.provider_calls
            .get_or_create(&ProviderCallLabels {
                provider,
                operation,
                outcome,
            })
            .inc();
        self.provider_duration
            .get_or_create(&ProviderLabels {
                provider,
                operation,
            })
            .observe(took.as_secs_f64());
    }

    /// One write made to `target`.
    pub fn wrote(&self, target: &'static str) {
        self.writes
            .get_or_create(&CategoryLabels { category: target })
            .inc();
    }

    /// A pass ended blocked or retrying for `reason` (a bounded condition reason).
    pub fn reconcile_problem(&self, reason: &'static str) {
        self.problems.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A warning newly reported on a policy.
    pub fn finding(&self, reason: &'static str) {
        self.findings.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Sets the client-credential expiry gauges of policy `namespace/name` from the findings of a
    /// pass that read its identity provider (`provider`: the kind's status name): one series per
    /// credential kind with an expiry finding; series of findings gone (a new secret, another
    /// provider) are removed.
    pub fn credential_expiry(
        &self,
        namespace: &str,
        policy: &str,
        provider: &'static str,
        findings: &[Finding],
    ) {
        let now: Vec<(ExpiryLabels, i64)> = findings
            .iter()
            .filter_map(|f| {
                let at = f.expires_at?;
                let credential = if f.reason.starts_with("ClientCertificate") {
                    "certificate"
                } else {
                    "secret"
                };
                let labels = ExpiryLabels {
                    namespace: namespace.to_string(),
                    policy: policy.to_string(),
                    provider,
                    credential,
                };
                Some((labels, at.as_second()))
            })
            .collect();
        let mut series = self.expiry_series.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), policy.to_string());
        for old in series.remove(&key).unwrap_or_default() {
            if !now.iter().any(|(l, _)| *l == old) {
                self.credential_expiry.remove(&old);
            }
        }
        for (labels, at) in &now {
            self.credential_expiry.get_or_create(labels).set(*at);
        }
        if !now.is_empty() {
            series.insert(key, now.into_iter().map(|(l, _)| l).collect());
        }
    }

    /// Removes the series of a deleted policy.
    pub fn forget_policy(&self, namespace: &str, policy: &str) {
        let mut series = self.expiry_series.lock().unwrap_or_else(|e| e.into_inner());
        for old in series
            .remove(&(namespace.to_string(), policy.to_string()))
            .unwrap_or_default()
        {
            self.credential_expiry.remove(&old);
        }
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_bounded_labels() {
        let m = Metrics::new();
        m.reconciled(Duration::from_millis(3), Some("unreachable"));
        m.provider_call(
            "keycloak",
            "get_client",
            "success",
            Duration::from_millis(5),
        );
        let text = m.encode();
        assert!(text.contains("oidc_refresh_reconciles_total 1"), "{text}");
        assert!(
            text.contains(r#"oidc_refresh_reconcile_errors_total{category="unreachable"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"oidc_refresh_provider_calls_total{provider="keycloak",operation="get_client",outcome="success"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn credential_expiry_series_follow_findings_and_policies() {
        let m = Metrics::new();
        let finding = |reason, at: Option<&str>| Finding {
            reason,
            message: String::new(),
            blocking: false,
            expires_at: at.map(|a| a.parse().unwrap()),
        };
        let series = |m: &Metrics| -> Vec<String> {
            m.encode()
                .lines()
                .filter(|l| l.starts_with("oidc_refresh_client_secret_expiry_timestamp_seconds{"))
                .map(str::to_string)
                .collect()
        };
        m.credential_expiry(
            "coder",
            "entra",
            "entraId",
            &[
                finding("ClientSecretExpiring", Some("2026-12-02T00:00:00Z")),
                finding("ClientCertificateExpired", Some("2026-11-01T00:00:00Z")),
                finding("ConsentMissing", None),
            ],
        );
        m.credential_expiry("other", "p", "entraId", &[]);
        let mut got = series(&m);
        got.sort();
        assert_eq!(
            got,
            [
                r#"oidc_refresh_client_secret_expiry_timestamp_seconds{namespace="coder",policy="entra",provider="entraId",credential="certificate"} 1793491200"#,
                r#"oidc_refresh_client_secret_expiry_timestamp_seconds{namespace="coder",policy="entra",provider="entraId",credential="secret"} 1796169600"#,
            ]
        );
        // The certificate finding is gone (a new certificate): its series too.
        m.credential_expiry(
            "coder",
            "entra",
            "entraId",
            &[finding("ClientSecretExpired", Some("2026-12-02T00:00:00Z"))],
        );
        assert_eq!(
            series(&m),
            [
                r#"oidc_refresh_client_secret_expiry_timestamp_seconds{namespace="coder",policy="entra",provider="entraId",credential="secret"} 1796169600"#
            ]
        );
        // The policy deleted.
        m.forget_policy("coder", "entra");
        assert_eq!(series(&m), Vec::<String>::new());
        m.credential_expiry(
            "coder",
            "entra",
            "entraId",
            &[finding(
                "ClientSecretExpiring",
                Some("2026-12-02T00:00:00Z"),
            )],
        );
        m.credential_expiry("coder", "entra", "entraId", &[]);
        assert_eq!(series(&m), Vec::<String>::new());
    }
}
