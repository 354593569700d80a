//! Prometheus metrics. Labels are bounded: error categories, provider kinds, operation names,
//! condition reasons and outcomes are fixed sets, never error texts. Object names appear only in
//! per-policy gauges (client-credential expiry, readiness, rollout wait): a fixed number of series
//! per policy, replaced when a label changes and removed with the policy. The policy's namespace
//! is the `policy_namespace` label: `namespace` is the scrape target's (the operator's) label, and
//! Prometheus would rename a scraped `namespace` to `exported_namespace`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::OidcRefreshPolicyStatus;
use crate::providers::Finding;
use crate::status::{Reason, State, Verdicts};

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
struct PolicyLabels {
    policy_namespace: String,
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    policy_namespace: String,
    policy: String,
    /// The Ready condition's status: `True`, `False` or `Unknown`.
    status: String,
    /// The Ready condition's reason (a fixed set of CamelCase reasons).
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// How a rollout wait ended (the `outcome` label of the completed-waits histogram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// The Deployment rolled the configuration out.
    Complete,
    /// No longer followed: the policy was deleted, the Deployment is gone, or the env entries
    /// stopped being the policy's (a conflict, a spec change).
    Abandoned,
}

/// What a pass means for a policy's rollout wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutWait {
    /// The configured env is not rolled out yet (in progress, failed or paused): the wait starts
    /// or goes on.
    Waiting,
    /// The wait, if there was one, ended.
    Ended(WaitEnd),
    /// The pass could not tell (the identity provider was not read, so Coder was not looked at):
    /// a wait goes on, none starts.
    Unknown,
}

impl RolloutWait {
    /// The rollout wait a pass's verdicts show.
    pub fn of(v: &Verdicts) -> RolloutWait {
        match v.rollout.state {
            State::Done => RolloutWait::Ended(WaitEnd::Complete),
            State::Progressing | State::Stalled | State::Differs => RolloutWait::Waiting,
            State::Unknown
                if v.idp.state == State::Stalled
                    || v.coder.state == State::Stalled
                    || v.rollout.reason == Reason::DeploymentNotFound =>
            {
                RolloutWait::Ended(WaitEnd::Abandoned)
            }
            State::Unknown => RolloutWait::Unknown,
        }
    }
}

impl WaitEnd {
    fn as_str(self) -> &'static str {
        match self {
            WaitEnd::Complete => "complete",
            WaitEnd::Abandoned => "abandoned",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExpiryLabels {
    policy_namespace: String,
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
    ready: Family<ReadyLabels, Gauge>,
    /// The one readiness series of each policy, to replace it when status or reason changes.
    ready_series: Mutex<HashMap<(String, String), ReadyLabels>>,
    rollout_wait: Family<PolicyLabels, Gauge>,
    rollout_waits: Family<OutcomeLabels, Histogram>,
    /// When each policy's current rollout wait began.
    waiting_since: Mutex<HashMap<(String, String), SystemTime>>,
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
        let ready = Family::<ReadyLabels, Gauge>::default();
        registry.register(
            "policy_ready",
            "The Ready condition of each policy: one series per policy, with the condition's \
             status (True, False, Unknown) and reason; value 1",
            ready.clone(),
        );
        let rollout_wait = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "rollout_waiting_since_timestamp_seconds",
            "Since when a policy has been waiting for its Coder Deployment to roll out the \
             configured env, Unix time (the operator's write, or the first pass of this process \
             that saw the rollout unfinished); present only while waiting",
            rollout_wait.clone(),
        );
        let rollout_waits = Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 14))
        });
        registry.register(
            "rollout_wait_duration_seconds",
            "Rollout waits that ended, by outcome (complete: rolled out; abandoned: policy \
             deleted, Deployment gone or env no longer the policy's)",
            rollout_waits.clone(),
        );
        Metrics {
            credential_expiry,
            expiry_series: Mutex::default(),
            ready,
            ready_series: Mutex::default(),
            rollout_wait,
            rollout_waits,
            waiting_since: Mutex::default(),
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
                    policy_namespace: namespace.to_string(),
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

    /// Sets the readiness series of policy `namespace/name` to its Ready condition's `status`
    /// and `reason`, replacing the previous series when either changed.
    pub fn policy_ready(&self, namespace: &str, policy: &str, status: &str, reason: &str) {
        let labels = ReadyLabels {
            policy_namespace: namespace.to_string(),
            policy: policy.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
        };
        let mut series = self.ready_series.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), policy.to_string());
        if let Some(old) = series.insert(key, labels.clone())
            && old != labels
        {
            self.ready.remove(&old);
        }
        self.ready.get_or_create(&labels).set(1);
    }

    /// The per-policy series after a pass whose status is `status` (as stored) and whose part
    /// verdicts are `verdicts`: readiness and rollout wait.
    pub fn policy_pass(
        &self,
        namespace: &str,
        policy: &str,
        status: &OidcRefreshPolicyStatus,
        verdicts: &Verdicts,
    ) {
        if let Some(ready) = status.conditions.iter().find(|c| c.type_ == "Ready") {
            self.policy_ready(namespace, policy, &ready.status, &ready.reason);
        }
        self.rollout_wait(
            namespace,
            policy,
            RolloutWait::of(verdicts),
            SystemTime::now(),
        );
    }

    /// Follows the rollout wait of policy `namespace/name` after a pass at `at`.
    pub fn rollout_wait(&self, namespace: &str, policy: &str, now: RolloutWait, at: SystemTime) {
        let key = (namespace.to_string(), policy.to_string());
        let labels = PolicyLabels {
            policy_namespace: key.0.clone(),
            policy: key.1.clone(),
        };
        let mut waits = self.waiting_since.lock().unwrap_or_else(|e| e.into_inner());
        match now {
            RolloutWait::Unknown => {}
            RolloutWait::Waiting => {
                let since = *waits.entry(key).or_insert(at);
                let unix = since.duration_since(UNIX_EPOCH).unwrap_or_default();
                self.rollout_wait
                    .get_or_create(&labels)
                    .set(unix.as_secs() as i64);
            }
            RolloutWait::Ended(end) => {
                if let Some(since) = waits.remove(&key) {
                    self.rollout_wait.remove(&labels);
                    self.rollout_waits
                        .get_or_create(&OutcomeLabels {
                            outcome: end.as_str(),
                        })
                        .observe(at.duration_since(since).unwrap_or_default().as_secs_f64());
                }
            }
        }
    }

    /// Removes the series of a deleted policy; a rollout wait it had ends `abandoned`.
    pub fn forget_policy(&self, namespace: &str, policy: &str) {
        let key = (namespace.to_string(), policy.to_string());
        let mut series = self.expiry_series.lock().unwrap_or_else(|e| e.into_inner());
        for old in series.remove(&key).unwrap_or_default() {
            self.credential_expiry.remove(&old);
        }
        drop(series);
        let ready = self
            .ready_series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if let Some(old) = ready {
            self.ready.remove(&old);
        }
        let end = RolloutWait::Ended(WaitEnd::Abandoned);
        self.rollout_wait(namespace, policy, end, SystemTime::now());
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
                r#"oidc_refresh_client_secret_expiry_timestamp_seconds{policy_namespace="coder",policy="entra",provider="entraId",credential="certificate"} 1793491200"#,
                r#"oidc_refresh_client_secret_expiry_timestamp_seconds{policy_namespace="coder",policy="entra",provider="entraId",credential="secret"} 1796169600"#,
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
                r#"oidc_refresh_client_secret_expiry_timestamp_seconds{policy_namespace="coder",policy="entra",provider="entraId",credential="secret"} 1796169600"#
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

    fn lines(m: &Metrics, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = m
            .encode()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn readiness_is_one_series_per_policy_replaced_on_change_and_removed_with_it() {
        let m = Metrics::new();
        let ready = |m: &Metrics| lines(m, "oidc_refresh_policy_ready{");
        m.policy_ready("coder", "a", "False", "RolloutInProgress");
        m.policy_ready("coder", "b", "True", "Configured");
        m.policy_ready("coder", "a", "False", "RolloutFailed");
        assert_eq!(
            ready(&m),
            [
                r#"oidc_refresh_policy_ready{policy_namespace="coder",policy="a",status="False",reason="RolloutFailed"} 1"#,
                r#"oidc_refresh_policy_ready{policy_namespace="coder",policy="b",status="True",reason="Configured"} 1"#,
            ]
        );
        m.policy_ready("coder", "a", "True", "Configured");
        m.policy_ready("coder", "a", "True", "Configured");
        m.forget_policy("coder", "b");
        assert_eq!(
            ready(&m),
            [
                r#"oidc_refresh_policy_ready{policy_namespace="coder",policy="a",status="True",reason="Configured"} 1"#
            ]
        );
        m.forget_policy("coder", "a");
        assert_eq!(ready(&m), Vec::<String>::new());
    }

    #[test]
    fn a_rollout_wait_is_a_start_time_while_it_lasts_then_a_duration_by_outcome() {
        let m = Metrics::new();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |s| t0 + Duration::from_secs(s);
        let since = |m: &Metrics| lines(m, "oidc_refresh_rollout_waiting_since_timestamp_seconds{");
        let count = |m: &Metrics, outcome: &str| {
            lines(m, "oidc_refresh_rollout_wait_duration_seconds_")
                .into_iter()
                .filter(|l| l.contains(&format!(r#"outcome="{outcome}""#)))
                .filter(|l| l.contains("_count{") || l.contains("_sum{"))
                .collect::<Vec<_>>()
        };
        // Nothing known, nothing waited: no series.
        m.rollout_wait("coder", "a", RolloutWait::Unknown, at(0));
        m.rollout_wait("coder", "a", RolloutWait::Ended(WaitEnd::Complete), at(0));
        assert_eq!(since(&m), Vec::<String>::new());
        assert_eq!(count(&m, "complete"), Vec::<String>::new());

        m.rollout_wait("coder", "a", RolloutWait::Waiting, at(10));
        m.rollout_wait("coder", "a", RolloutWait::Waiting, at(40));
        m.rollout_wait("coder", "a", RolloutWait::Unknown, at(50));
        m.rollout_wait("coder", "b", RolloutWait::Waiting, at(45));
        assert_eq!(
            since(&m),
            [
                r#"oidc_refresh_rollout_waiting_since_timestamp_seconds{policy_namespace="coder",policy="a"} 1800000010"#,
                r#"oidc_refresh_rollout_waiting_since_timestamp_seconds{policy_namespace="coder",policy="b"} 1800000045"#,
            ]
        );
        m.rollout_wait("coder", "a", RolloutWait::Ended(WaitEnd::Complete), at(100));
        m.forget_policy("coder", "b");
        assert_eq!(since(&m), Vec::<String>::new());
        assert_eq!(
            count(&m, "complete"),
            [
                r#"oidc_refresh_rollout_wait_duration_seconds_count{outcome="complete"} 1"#,
                r#"oidc_refresh_rollout_wait_duration_seconds_sum{outcome="complete"} 90.0"#,
            ]
        );
        assert_eq!(
            count(&m, "abandoned")[0],
            r#"oidc_refresh_rollout_wait_duration_seconds_count{outcome="abandoned"} 1"#
        );
    }

    #[test]
    fn the_wait_a_pass_shows() {
        let v = |idp: State, coder: State, rollout: State, reason: Reason| Verdicts {
            idp: crate::status::Verdict::new(idp, Reason::Configured, ""),
            coder: crate::status::Verdict::new(coder, Reason::Configured, ""),
            rollout: crate::status::Verdict::new(rollout, reason, ""),
        };
        use State::*;
        let cases = [
            (
                v(Done, Done, Progressing, Reason::RolloutInProgress),
                RolloutWait::Waiting,
            ),
            (
                v(Done, Done, Stalled, Reason::RolloutFailed),
                RolloutWait::Waiting,
            ),
            (
                v(Done, Done, Stalled, Reason::DeploymentPaused),
                RolloutWait::Waiting,
            ),
            (
                v(Done, Done, Done, Reason::RolloutComplete),
                RolloutWait::Ended(WaitEnd::Complete),
            ),
            (
                v(Done, Stalled, Unknown, Reason::FieldConflict),
                RolloutWait::Ended(WaitEnd::Abandoned),
            ),
            (
                v(Done, Done, Unknown, Reason::DeploymentNotFound),
                RolloutWait::Ended(WaitEnd::Abandoned),
            ),
            (
                v(
                    Progressing,
                    Unknown,
                    Unknown,
                    Reason::WaitingForIdentityProvider,
                ),
                RolloutWait::Unknown,
            ),
        ];
        for (verdicts, want) in cases {
            assert_eq!(RolloutWait::of(&verdicts), want, "{verdicts:?}");
        }
    }
}
