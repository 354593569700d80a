//! Conditions: one enum of types, one of reasons, one rule for "changed" and for
//! `lastTransitionTime`. Pure.
//!
//! kstatus polarity: `Ready` is the summary; `Reconciling=True` while work is in progress;
//! `Stalled=True` when only the user can unblock the policy. A condition's `lastTransitionTime`
//! moves only when its status changes, so a converged policy's status stays byte-for-byte equal.

use std::fmt;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::OidcRefreshPolicyStatus;

/// Condition types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// Summary.
    Ready,
    /// Work in progress (kstatus).
    Reconciling,
    /// Only the user can unblock (kstatus).
    Stalled,
    /// The identity provider's client is configured.
    IdentityProviderConfigured,
    /// The Coder Deployment's env entries are configured.
    CoderConfigured,
    /// The Coder Deployment rolled out the configuration.
    CoderRolledOut,
}

impl ConditionType {
    /// All types, in the order they are written.
    pub const ALL: [ConditionType; 6] = [
        ConditionType::Ready,
        ConditionType::Reconciling,
        ConditionType::Stalled,
        ConditionType::IdentityProviderConfigured,
        ConditionType::CoderConfigured,
        ConditionType::CoderRolledOut,
    ];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Reconciling => "Reconciling",
            ConditionType::Stalled => "Stalled",
            ConditionType::IdentityProviderConfigured => "IdentityProviderConfigured",
            ConditionType::CoderConfigured => "CoderConfigured",
            ConditionType::CoderRolledOut => "CoderRolledOut",
        }
    }
}

/// Condition reasons (CamelCase on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Everything is as the policy wants.
    Configured,
    /// Observe mode: something differs.
    Drifted,
    /// Work in progress.
    Progressing,
    /// Nothing in progress.
    Idle,
    /// The spec has a value the controller cannot use.
    InvalidSpec,
    /// The credentials Secret does not exist.
    SecretNotFound,
    /// The credentials Secret lacks keys.
    InvalidSecret,
    /// The provider rejected the credentials.
    AuthenticationFailed,
    /// The admin account lacks a permission.
    Forbidden,
    /// Realm, tenant, application or client not found.
    ClientNotFound,
    /// Network, timeout or 5xx.
    Unreachable,
    /// 429 / 503 with Retry-After.
    Throttled,
    /// The provider cannot honour a setting.
    Unsupported,
    /// The provider rejected a request as invalid.
    Rejected,
    /// The provider answered something unexpected, or a write did not stick.
    ProviderError,
    /// A provider finding that blocks refresh tokens.
    ProviderFinding(&'static str),
    /// Waiting for the identity provider before touching Coder.
    WaitingForIdentityProvider,
    /// The Deployment does not exist.
    DeploymentNotFound,
    /// The container does not exist.
    ContainerNotFound,
    /// An env entry uses `valueFrom`, or the variable comes from an `envFrom` source.
    EnvFromReference,
    /// An env entry appears twice.
    DuplicateEnvEntry,
    /// The current params value is not a JSON object.
    InvalidEnvValue,
    /// Another declarative owner owns the entries.
    FieldConflict,
    /// An older policy already manages the same Deployment container.
    DuplicatePolicy,
    /// The rollout is running.
    RolloutInProgress,
    /// The rollout failed.
    RolloutFailed,
    /// The rollout finished.
    RolloutComplete,
    /// The Kubernetes API failed.
    KubernetesError,
}

impl Reason {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Configured => "Configured",
            Reason::Drifted => "Drifted",
            Reason::Progressing => "Progressing",
            Reason::Idle => "Idle",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::InvalidSecret => "InvalidSecret",
            Reason::AuthenticationFailed => "AuthenticationFailed",
            Reason::Forbidden => "Forbidden",
            Reason::ClientNotFound => "ClientNotFound",
            Reason::Unreachable => "Unreachable",
            Reason::Throttled => "Throttled",
            Reason::Unsupported => "Unsupported",
            Reason::Rejected => "Rejected",
            Reason::ProviderError => "ProviderError",
            Reason::ProviderFinding(r) => r,
            Reason::WaitingForIdentityProvider => "WaitingForIdentityProvider",
            Reason::DeploymentNotFound => "DeploymentNotFound",
            Reason::ContainerNotFound => "ContainerNotFound",
            Reason::EnvFromReference => "EnvFromReference",
            Reason::DuplicateEnvEntry => "DuplicateEnvEntry",
            Reason::InvalidEnvValue => "InvalidEnvValue",
            Reason::FieldConflict => "FieldConflict",
            Reason::DuplicatePolicy => "DuplicatePolicy",
            Reason::RolloutInProgress => "RolloutInProgress",
            Reason::RolloutFailed => "RolloutFailed",
            Reason::RolloutComplete => "RolloutComplete",
            Reason::KubernetesError => "KubernetesError",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a part of the policy stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Done.
    Done,
    /// Being worked on, or waiting on something that resolves by itself.
    Progressing,
    /// Only the user can unblock it.
    Stalled,
    /// Observe mode found a difference; nothing will be changed.
    Differs,
    /// Not evaluated (an earlier step failed).
    Unknown,
}

/// The verdict on one part (identity provider, Coder env, rollout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// How it stands.
    pub state: State,
    /// Why.
    pub reason: Reason,
    /// What happened and what to do next.
    pub message: String,
}

impl Verdict {
    /// Shorthand constructor.
    pub fn new(state: State, reason: Reason, message: impl Into<String>) -> Self {
        Verdict {
            state,
            reason,
            message: message.into(),
        }
    }
}

/// The three part verdicts a reconcile produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdicts {
    /// Identity provider.
    pub idp: Verdict,
    /// Coder env entries.
    pub coder: Verdict,
    /// Rollout.
    pub rollout: Verdict,
}

fn status_of(state: State) -> &'static str {
    match state {
        State::Done => "True",
        State::Unknown => "Unknown",
        _ => "False",
    }
}

/// Computes every condition from the verdicts. Timestamps are `now` here and fixed up by
/// [`merge_conditions`].
pub fn conditions(v: &Verdicts, generation: i64, now: Timestamp) -> Vec<Condition> {
    let parts = [&v.idp, &v.coder, &v.rollout];
    let stalled = parts.iter().find(|p| p.state == State::Stalled);
    let progressing = parts.iter().find(|p| p.state == State::Progressing);
    let differs = parts.iter().find(|p| p.state == State::Differs);
    let first_not_done = parts.iter().find(|p| p.state != State::Done);

    let ready = match first_not_done {
        None => Verdict::new(
            State::Done,
            Reason::Configured,
            "The identity provider and Coder are configured for refresh tokens and the Deployment has rolled out.",
        ),
        Some(_) => {
            let p = stalled
                .or(differs)
                .or(progressing)
                .or(first_not_done)
                .copied()
                .cloned()
                .unwrap_or_else(|| v.idp.clone());
            Verdict::new(State::Stalled, p.reason, p.message)
        }
    };
    let reconciling = match (stalled, progressing) {
        (None, Some(p)) => ("True", p.reason, p.message.clone()),
        _ => ("False", Reason::Idle, "No work in progress.".to_string()),
    };
    let stalled_c = match stalled {
        Some(p) => ("True", p.reason, p.message.clone()),
        None => ("False", Reason::Idle, "Nothing is blocked.".to_string()),
    };
    let mk = |t: ConditionType, status: &str, reason: Reason, message: &str| Condition {
        type_: t.as_str().to_string(),
        status: status.to_string(),
        reason: reason.as_str().to_string(),
        message: message.to_string(),
        observed_generation: Some(generation),
        last_transition_time: Time(now),
    };
    vec![
        mk(
            ConditionType::Ready,
            status_of(ready.state),
            ready.reason,
            &ready.message,
        ),
        mk(
            ConditionType::Reconciling,
            reconciling.0,
            reconciling.1,
            &reconciling.2,
        ),
        mk(
            ConditionType::Stalled,
            stalled_c.0,
            stalled_c.1,
            &stalled_c.2,
        ),
        mk(
            ConditionType::IdentityProviderConfigured,
            status_of(v.idp.state),
            v.idp.reason,
            &v.idp.message,
        ),
        mk(
            ConditionType::CoderConfigured,
            status_of(v.coder.state),
            v.coder.reason,
            &v.coder.message,
        ),
        mk(
            ConditionType::CoderRolledOut,
            status_of(v.rollout.state),
            v.rollout.reason,
            &v.rollout.message,
        ),
    ]
}

/// Keeps the old `lastTransitionTime` of every condition whose status did not change.
pub fn merge_conditions(old: &[Condition], mut new: Vec<Condition>) -> Vec<Condition> {
    for c in &mut new {
        if let Some(prev) = old.iter().find(|o| o.type_ == c.type_)
            && prev.status == c.status
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
    new
}

/// Conditions whose status or reason changed from `old` to `new` (for Events).
pub fn transitions<'a>(old: &[Condition], new: &'a [Condition]) -> Vec<&'a Condition> {
    new.iter()
        .filter(|c| {
            old.iter()
                .find(|o| o.type_ == c.type_)
                .is_none_or(|o| o.status != c.status || o.reason != c.reason)
        })
        .collect()
}

/// Whether a status patch is needed.
pub fn changed(old: Option<&OidcRefreshPolicyStatus>, new: &OidcRefreshPolicyStatus) -> bool {
    old != Some(new)
}

/// The condition of a type, if present.
pub fn find(conditions: &[Condition], t: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == t.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done() -> Verdict {
        Verdict::new(State::Done, Reason::Configured, "ok")
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn all_done_is_ready() {
        let v = Verdicts {
            idp: done(),
            coder: done(),
            rollout: Verdict::new(State::Done, Reason::RolloutComplete, "done"),
        };
        let c = conditions(&v, 3, t("2026-01-01T00:00:00Z"));
        let ready = find(&c, ConditionType::Ready).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Configured")
        );
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(
            find(&c, ConditionType::Reconciling).unwrap().status,
            "False"
        );
        assert_eq!(find(&c, ConditionType::Stalled).unwrap().status, "False");
        assert_eq!(
            find(&c, ConditionType::CoderRolledOut).unwrap().reason,
            "RolloutComplete"
        );
    }

    #[test]
    fn stalled_wins_over_progressing() {
        let v = Verdicts {
            idp: Verdict::new(
                State::Stalled,
                Reason::AuthenticationFailed,
                "fix the Secret",
            ),
            coder: Verdict::new(
                State::Unknown,
                Reason::WaitingForIdentityProvider,
                "waiting",
            ),
            rollout: Verdict::new(State::Progressing, Reason::RolloutInProgress, "1 of 2"),
        };
        let c = conditions(&v, 1, t("2026-01-01T00:00:00Z"));
        let ready = find(&c, ConditionType::Ready).unwrap();
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            ("False", "AuthenticationFailed", "fix the Secret")
        );
        assert_eq!(find(&c, ConditionType::Stalled).unwrap().status, "True");
        assert_eq!(
            find(&c, ConditionType::Reconciling).unwrap().status,
            "False"
        );
        assert_eq!(
            find(&c, ConditionType::CoderConfigured).unwrap().status,
            "Unknown"
        );
    }

    #[test]
    fn progressing_sets_reconciling() {
        let v = Verdicts {
            idp: done(),
            coder: done(),
            rollout: Verdict::new(
                State::Progressing,
                Reason::RolloutInProgress,
                "0 of 1 updated",
            ),
        };
        let c = conditions(&v, 1, t("2026-01-01T00:00:00Z"));
        let r = find(&c, ConditionType::Reconciling).unwrap();
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("True", "RolloutInProgress")
        );
        assert_eq!(
            find(&c, ConditionType::Ready).unwrap().reason,
            "RolloutInProgress"
        );
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let v1 = Verdicts {
            idp: done(),
            coder: done(),
            rollout: Verdict::new(State::Progressing, Reason::RolloutInProgress, "x"),
        };
        let old = conditions(&v1, 1, t("2026-01-01T00:00:00Z"));
        let v2 = Verdicts {
            rollout: Verdict::new(State::Progressing, Reason::RolloutInProgress, "y"),
            ..v1.clone()
        };
        let new = merge_conditions(&old, conditions(&v2, 1, t("2026-01-02T00:00:00Z")));
        assert_eq!(
            find(&new, ConditionType::Ready)
                .unwrap()
                .last_transition_time
                .0,
            t("2026-01-01T00:00:00Z")
        );
        let v3 = Verdicts {
            rollout: Verdict::new(State::Done, Reason::RolloutComplete, "z"),
            ..v1
        };
        let newer = merge_conditions(&new, conditions(&v3, 1, t("2026-01-03T00:00:00Z")));
        assert_eq!(
            find(&newer, ConditionType::Ready)
                .unwrap()
                .last_transition_time
                .0,
            t("2026-01-03T00:00:00Z")
        );
        assert_eq!(
            find(&newer, ConditionType::IdentityProviderConfigured)
                .unwrap()
                .last_transition_time
                .0,
            t("2026-01-01T00:00:00Z")
        );
        let changed: Vec<&str> = transitions(&new, &newer)
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(changed, ["Ready", "Reconciling", "CoderRolledOut"]);
    }
}
