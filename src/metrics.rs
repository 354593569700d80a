//! Prometheus metrics. Labels are bounded: error categories, provider kinds, operation names and
//! outcomes are fixed sets, never error texts or object names.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
        Metrics {
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
}
