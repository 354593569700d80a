//! Status: what a pass found ([`Outcome`]) turned into the policy's status. Conditions: one enum
//! of types, one of reasons, one rule for "changed" and for `lastTransitionTime`. Pure.
//!
//! kstatus polarity: `Ready` is the summary; `Reconciling=True` while work is in progress;
//! `Stalled=True` when only the user can unblock the policy. A condition's `lastTransitionTime`
//! moves only when its status changes, so a converged policy's status stays byte-for-byte equal.
//! `plan` lists the changes still to make, field by field; it changes only when they do.

use std::fmt;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{
    CoderStatus, IdentityProviderStatus, OidcRefreshPolicy, OidcRefreshPolicyStatus,
    PendingAnnouncement, PlannedChange, PolicyWarning,
};
use crate::duration;
use crate::events::EventNote;
use crate::providers::{Change, Finding, IdpSettings};

/// Everything one pass found and did, for status, Events and the requeue decision.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The three part verdicts.
    pub verdicts: Verdicts,
    /// Identity-provider settings read (`None`: not read this pass).
    pub idp_settings: Option<IdpSettings>,
    /// Non-blocking findings.
    pub findings: Vec<Finding>,
    /// Values Coder has or gets.
    pub coder_values: Option<(String, String)>,
    /// The Deployment's env was written.
    pub written: bool,
    /// Changes not made (all of them in `Observe` mode); `None` when unknown because the
    /// identity provider could not be read (the previous plan is kept).
    pub pending: Option<Vec<Change>>,
    /// Events of the actions taken.
    pub events: Vec<EventNote>,
    /// The announcements recorded in status before this pass's writes.
    pub recorded: Vec<PendingAnnouncement>,
    /// The status was written to record them.
    pub recorded_written: bool,
    /// Reasons of the write announcements this pass saw settled: the write is made.
    pub settled: Vec<&'static str>,
}

impl Outcome {
    /// A pass decided before any read: nothing observed, nothing written.
    pub fn without_io(verdicts: Verdicts) -> Outcome {
        Outcome {
            verdicts,
            idp_settings: None,
            findings: Vec::new(),
            coder_values: None,
            written: false,
            pending: Some(Vec::new()),
            events: Vec::new(),
            recorded: Vec::new(),
            recorded_written: false,
            settled: Vec::new(),
        }
    }

    fn parts(&self) -> [&Verdict; 3] {
        let v = &self.verdicts;
        [&v.idp, &v.coder, &v.rollout]
    }

    /// Every part is done.
    pub fn is_ready(&self) -> bool {
        self.parts().iter().all(|p| p.state == State::Done)
    }

    /// Some part waits for the user.
    pub fn is_stalled(&self) -> bool {
        self.parts().iter().any(|p| p.state == State::Stalled)
    }

    /// Bounded metrics category of the pass's problem, if any.
    pub fn problem(&self) -> Option<&'static str> {
        self.parts()
            .into_iter()
            .find(|p| {
                matches!(p.state, State::Stalled)
                    || (p.state == State::Progressing && p.reason != Reason::RolloutInProgress)
            })
            .map(|p| p.reason.as_str())
    }
}

/// The status a pass leads to. Pure: `now` is only used for a condition that changes status and
/// for the first `usersMustSignInAgainSince`.
pub fn build(
    policy: &OidcRefreshPolicy,
    old: Option<&OidcRefreshPolicyStatus>,
    pass: &Outcome,
    now: Timestamp,
) -> OidcRefreshPolicyStatus {
    let generation = policy.metadata.generation.unwrap_or(0);
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = merge_conditions(old_conditions, conditions(&pass.verdicts, generation, now));
    let identity_provider = match &pass.idp_settings {
        Some(s) => Some(IdentityProviderStatus {
            refresh_token_grant: s.refresh_token_grant,
            offline_access: s.offline_access,
            lifetime: s.lifetime.map(duration::format),
            idle_timeout: s.idle_timeout.map(duration::format),
            rotation: s.rotation,
            access_token_lifetime: s.access_token_lifetime.map(duration::format),
            rotation_window: s.rotation_window.clone(),
        }),
        None => old.and_then(|s| s.identity_provider.clone()),
    };
    let coder = match &pass.coder_values {
        Some((scopes, params)) => Some(CoderStatus {
            scopes: Some(scopes.clone()),
            auth_url_params: Some(params.clone()),
        }),
        None => old.and_then(|s| s.coder.clone()),
    };
    // Warnings are only known when the provider was read; otherwise keep the previous ones.
    let warnings = if pass.idp_settings.is_some() {
        let mut w: Vec<PolicyWarning> = pass
            .findings
            .iter()
            .map(|f| PolicyWarning {
                reason: f.reason.to_string(),
                message: f.message.clone(),
            })
            .collect();
        w.sort_by(|a, b| a.reason.cmp(&b.reason));
        w
    } else {
        old.map(|s| s.warnings.clone()).unwrap_or_default()
    };
    let since = old
        .and_then(|s| s.users_must_sign_in_again_since.clone())
        .or_else(|| {
            pass.written.then(|| {
                now.round(jiff::Unit::Second)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| now.to_string())
            })
        });
    let plan: Vec<PlannedChange> = match &pass.pending {
        Some(pending) => pending
            .iter()
            .map(|c| PlannedChange {
                target: c.target.clone(),
                field: c.setting.clone(),
                current: c.from.clone(),
                desired: c.to.clone(),
                reason: c.why.clone(),
            })
            .collect(),
        None => old.map(|s| s.plan.clone()).unwrap_or_default(),
    };
    OidcRefreshPolicyStatus {
        observed_generation: Some(generation),
        provider: Some(policy.provider_name().to_string()),
        conditions,
        identity_provider,
        coder,
        warnings,
        users_must_sign_in_again_since: since,
        pending_changes: Some(plan.len() as i64),
        plan,
        // Filled in by the reconciler once it has published what it could.
        pending_announcements: Vec::new(),
    }
}

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
    /// The Deployment is paused: the new env reaches Coder only after it is resumed.
    DeploymentPaused,
    /// A `--oidc-*` flag in the Coder container's command or args wins over the env.
    CoderFlagOverride,
    /// Coder reads a YAML config file whose OIDC settings the env would silently replace.
    CoderConfigFile,
    /// `spec.coder.authURLParams` contradicts a parameter refresh tokens need.
    ConflictingAuthURLParams,
    /// The Kubernetes API failed.
    KubernetesError,
    /// The last reconcile ran past its deadline and was cancelled (retried with backoff).
    ReconcileTimeout,
    /// The last reconcile stopped on an internal error of the operator (retried with backoff).
    InternalError,
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
            Reason::DeploymentPaused => "DeploymentPaused",
            Reason::CoderFlagOverride => "CoderFlagOverride",
            Reason::CoderConfigFile => "CoderConfigFile",
            Reason::ConflictingAuthURLParams => "ConflictingAuthURLParams",
            Reason::KubernetesError => "KubernetesError",
            Reason::ReconcileTimeout => "ReconcileTimeout",
            Reason::InternalError => "InternalError",
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
