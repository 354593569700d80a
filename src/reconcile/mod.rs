//! The reconcile shell: observe (I/O) → plan (pure) → act (I/O) → status.
//!
//! Level-triggered and idempotent: every pass re-reads everything; a converged policy produces
//! an empty plan, no writes to the identity provider or the Deployment, and a status equal to the
//! stored one, so nothing is written at all.

pub mod act;
pub mod observe;
pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, warn};

use crate::coder;
use crate::crd::{
    CoderStatus, FIELD_MANAGER, IdentityProviderStatus, OidcRefreshPolicy, OidcRefreshPolicyStatus,
    PolicyWarning,
};
use crate::duration;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::providers::{DesiredSettings, Finding, IdpSettings, Observation, ProviderDeps};
use crate::status::{self, ConditionType, Reason, State, Verdict, Verdicts};

use self::observe::IdpObserved;
use self::plan::IdpView;
use crate::events::{EventNote, Publisher};

/// Shared state of the controller.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// Event recorder (events.k8s.io/v1).
    pub events: Publisher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Provider HTTP clients and token cache.
    pub providers: ProviderDeps,
    /// Per-policy retry state after failures.
    backoff: Mutex<HashMap<(String, String), Retry>>,
    /// Per-policy last clean identity-provider observation.
    memos: Mutex<Memos>,
    /// Backoff bounds.
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
    /// The controller's policy cache: which other policies aim at the same Deployment.
    pub policies: Option<Store<OidcRefreshPolicy>>,
}

/// Which policy, at which generation and credentials, an identity-provider observation is for.
#[derive(Clone, Debug)]
pub struct MemoKey {
    /// Namespace and name of the policy.
    pub policy: (String, String),
    /// `metadata.generation` (a spec change reads the provider again).
    pub generation: i64,
    /// How long a clean observation is reused: half the policy's interval, so every resync at
    /// the interval reads the provider.
    pub window: Duration,
}

/// A clean observation of a policy's identity provider (nothing to change, nothing blocking):
/// passes that only follow the Coder side (the operator's own Deployment patch and status
/// writes, the rollout, an edit of the Deployment) reuse it instead of reading the provider
/// again. The provider is read again at every interval, on a spec change and when the
/// credentials Secret changes.
#[derive(Default)]
struct Memos {
    entries: HashMap<(String, String), Memo>,
    /// Size after the last sweep of expired entries (sweeps are amortized).
    swept_at: usize,
}

struct Memo {
    generation: i64,
    secret_version: Option<String>,
    until: Instant,
    observation: Observation,
}

/// Retry state of one policy.
#[derive(Clone, Copy, Debug)]
struct Retry {
    attempts: u32,
    /// No new pass of the same generation before this, whatever triggers it (for transient
    /// failures: a status write or a watch event must not override the backoff).
    not_before: Option<Instant>,
    generation: i64,
}

impl Context {
    /// New context.
    pub fn new(
        client: kube::Client,
        events: Publisher,
        metrics: Arc<Metrics>,
        providers: ProviderDeps,
    ) -> Self {
        Context {
            client,
            events,
            metrics,
            providers,
            backoff: Mutex::new(HashMap::new()),
            memos: Mutex::new(Memos::default()),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            policies: None,
        }
    }

    /// The older policy that already manages the Deployment container `policy` aims at, if any.
    pub fn claimed_by(&self, policy: &OidcRefreshPolicy) -> Option<String> {
        plan::claimant(policy, &self.policies.as_ref()?.state())
    }

    /// Next delay for a failure of `key` (exponential with jitter, capped, at least
    /// `retry_after`). With `hold`, passes of the same `generation` triggered before the delay
    /// has passed are skipped (see [`Context::held`]).
    pub fn next_backoff(&self, key: &(String, String), retry_after: Option<Duration>) -> Duration {
        self.backoff_for(key, retry_after, None)
    }

    fn backoff_for(
        &self,
        key: &(String, String),
        retry_after: Option<Duration>,
        hold: Option<i64>,
    ) -> Duration {
        let mut map = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let r = map.entry(key.clone()).or_insert(Retry {
            attempts: 0,
            not_before: None,
            generation: 0,
        });
        r.attempts = r.attempts.saturating_add(1);
        let d = backoff_delay(r.attempts, self.backoff_base, self.backoff_max, retry_after);
        r.not_before = hold.map(|_| Instant::now() + d);
        r.generation = hold.unwrap_or(r.generation);
        d
    }

    /// Time left before `key` may be reconciled again after a transient failure of the same
    /// `generation`; `None` when it may run now. A spec change (new generation) is never held.
    pub fn held(&self, key: &(String, String), generation: i64) -> Option<Duration> {
        let map = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let r = map.get(key)?;
        let until = r.not_before?;
        (r.generation == generation)
            .then(|| until.checked_duration_since(Instant::now()))
            .flatten()
    }

    /// The clean observation remembered for `key` with these credentials, if still fresh.
    pub fn remembered_idp(
        &self,
        key: &MemoKey,
        secret_version: Option<&str>,
    ) -> Option<Observation> {
        let memos = self.memos.lock().unwrap_or_else(|e| e.into_inner());
        let m = memos.entries.get(&key.policy)?;
        (m.generation == key.generation
            && m.secret_version.as_deref() == secret_version
            && m.until > Instant::now())
        .then(|| m.observation.clone())
    }

    /// Remembers `observation` when it is clean (no change needed, nothing blocking); forgets
    /// any earlier one otherwise.
    pub fn remember_idp(
        &self,
        key: &MemoKey,
        secret_version: Option<&str>,
        observation: &Observation,
    ) {
        let clean =
            observation.changes.is_empty() && !observation.findings.iter().any(|f| f.blocking);
        let mut memos = self.memos.lock().unwrap_or_else(|e| e.into_inner());
        if !clean {
            memos.entries.remove(&key.policy);
            return;
        }
        let now = Instant::now();
        if memos.entries.len() >= 2 * memos.swept_at.max(64) {
            memos.entries.retain(|_, m| m.until > now);
            memos.swept_at = memos.entries.len();
        }
        memos.entries.insert(
            key.policy.clone(),
            Memo {
                generation: key.generation,
                secret_version: secret_version.map(str::to_string),
                until: now + key.window,
                observation: observation.clone(),
            },
        );
    }

    /// Forgets the remembered observation of `key`.
    pub fn forget_idp(&self, key: &MemoKey) {
        self.memos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .remove(&key.policy);
    }

    /// Forgets the backoff of `key`.
    pub fn reset_backoff(&self, key: &(String, String)) {
        self.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Delay before retry number `attempt` (1-based): `base * 2^(attempt-1)` capped at `max`, with
/// jitter, but never shorter than the server's `Retry-After`.
pub fn backoff_delay(
    attempt: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    jitter(exp.min(max)).max(retry_after.unwrap_or_default())
}

/// ±10 % jitter so many policies do not resync in lockstep.
pub fn jitter(d: Duration) -> Duration {
    let f = 0.9 + fastrand::f64() * 0.2;
    d.mul_f64(f)
}

/// Spec values the schema cannot fully check, parsed.
pub fn desired_settings(policy: &OidcRefreshPolicy) -> Result<DesiredSettings, String> {
    let r = &policy.spec.refresh_tokens;
    let parse = |field: &str, v: &Option<String>| -> Result<Option<Duration>, String> {
        v.as_deref()
            .map(|s| duration::parse(s).map_err(|e| format!("spec.refreshTokens.{field}: {e}")))
            .transpose()
    };
    Ok(DesiredSettings {
        offline_access: r.offline_access.unwrap_or(true),
        lifetime: parse("lifetime", &r.lifetime)?,
        idle_timeout: parse("idleTimeout", &r.idle_timeout)?,
        rotation: r.rotation,
        access_token_lifetime: parse("accessTokenLifetime", &r.access_token_lifetime)?,
    })
}

/// The policy's resync interval (at least 30 s).
fn interval(policy: &OidcRefreshPolicy) -> Duration {
    duration::parse(&policy.spec.interval)
        .unwrap_or(Duration::from_secs(600))
        .max(Duration::from_secs(30))
}

/// Entry point for the kube-runtime Controller.
pub async fn reconcile(policy: Arc<OidcRefreshPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let span = tracing::info_span!("reconcile", policy.namespace = %ns, policy.name = %name);
    let started = Instant::now();
    let result = reconcile_inner(&policy, &ctx, &ns).instrument(span).await;
    ctx.metrics.reconciled(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

/// Requeue decision of a finished pass.
enum Next {
    /// Converged or blocked by something a watch will report: come back at `interval`.
    Interval,
    /// A rollout is under way: look again shortly.
    Soon,
    /// Transient failure: exponential backoff, honouring `Retry-After`.
    Backoff(Option<Duration>),
    /// Blocked by something fixed outside any object the operator watches (RBAC, IdP
    /// credentials or permissions): exponential backoff, but never later than `interval`.
    Retry,
}

/// Stall reasons whose fix changes no object the operator watches, so only a retry notices it.
fn fixed_outside_kubernetes(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::Forbidden | Reason::AuthenticationFailed | Reason::ClientNotFound
    )
}

/// Everything one pass found and did, for status, Events and the requeue decision.
struct Pass {
    verdicts: Verdicts,
    idp_settings: Option<IdpSettings>,
    findings: Vec<Finding>,
    coder_values: Option<(String, String)>,
    written: bool,
    events: Vec<EventNote>,
    next: Next,
}

impl Pass {
    fn invalid_spec(msg: String) -> Pass {
        let unknown = Verdict::new(
            State::Unknown,
            Reason::InvalidSpec,
            "Not evaluated until the spec is fixed.",
        );
        let verdicts = Verdicts {
            idp: Verdict::new(
                State::Stalled,
                Reason::InvalidSpec,
                format!("{msg}. Fix the policy."),
            ),
            coder: unknown.clone(),
            rollout: unknown,
        };
        Pass::without_io(verdicts, Next::Interval)
    }

    /// Another policy manages the Deployment: nothing is read or written. Looked at again
    /// shortly (the check reads only the policy cache), so deleting the other policy hands over
    /// without waiting for the interval.
    fn duplicate(verdict: Verdict) -> Pass {
        let unknown = Verdict::new(
            State::Unknown,
            Reason::DuplicatePolicy,
            "Not evaluated while another policy manages the Deployment.",
        );
        let verdicts = Verdicts {
            idp: unknown.clone(),
            coder: verdict,
            rollout: unknown,
        };
        Pass::without_io(verdicts, Next::Soon)
    }

    /// A pass decided before any read: nothing observed, nothing written.
    fn without_io(verdicts: Verdicts, next: Next) -> Pass {
        Pass {
            verdicts,
            idp_settings: None,
            findings: Vec::new(),
            coder_values: None,
            written: false,
            events: Vec::new(),
            next,
        }
    }

    fn is_ready(&self) -> bool {
        let v = &self.verdicts;
        [&v.idp, &v.coder, &v.rollout]
            .iter()
            .all(|p| p.state == State::Done)
    }

    fn is_stalled(&self) -> bool {
        let v = &self.verdicts;
        [&v.idp, &v.coder, &v.rollout]
            .iter()
            .any(|p| p.state == State::Stalled)
    }

    /// Bounded metrics category of the pass's problem, if any.
    fn problem(&self) -> Option<&'static str> {
        let v = &self.verdicts;
        [&v.idp, &v.coder, &v.rollout]
            .iter()
            .find(|p| {
                matches!(p.state, State::Stalled)
                    || (p.state == State::Progressing && p.reason != Reason::RolloutInProgress)
            })
            .map(|p| p.reason.as_str())
    }
}

/// observe → plan → act.
async fn run_pass(policy: &OidcRefreshPolicy, ctx: &Context, ns: &str) -> Result<Pass> {
    let desired = match desired_settings(policy) {
        Ok(d) => d,
        Err(msg) => return Ok(Pass::invalid_spec(msg)),
    };
    if let Some(first) = ctx.claimed_by(policy) {
        return Ok(Pass::duplicate(plan::duplicate_verdict(policy, &first)));
    }
    let memo = MemoKey {
        policy: (ns.to_string(), policy.name_any()),
        generation: policy.metadata.generation.unwrap_or(0),
        window: interval(policy) / 2,
    };
    let observed = observe::observe(policy, &desired, &memo, ctx).await?;
    let view = match &observed.idp {
        IdpObserved::SecretNotFound(n) => IdpView::SecretNotFound(n),
        IdpObserved::SecretForbidden(m) => IdpView::SecretForbidden(m),
        IdpObserved::Failed(e) => IdpView::Failed(e),
        IdpObserved::Seen { observation, .. } => IdpView::Seen(observation),
    };
    let deployment = match (&observed.deployment, &observed.deployment_forbidden) {
        (_, Some(m)) => plan::DeploymentView::Forbidden(m),
        (Some(d), None) => plan::DeploymentView::Found(d, &observed.env_from),
        (None, None) => plan::DeploymentView::Missing,
    };
    let plan = plan::plan(&policy.spec, ns, view, deployment);
    debug!(?plan, "planned");
    let acted = act::act(plan, observed, &desired, &memo, ns, ctx).await?;
    let rollout = rollout_verdict(&acted.deployment, &acted.coder);
    let fixed_elsewhere = [&acted.idp, &acted.coder]
        .iter()
        .any(|v| v.state == State::Stalled && fixed_outside_kubernetes(v.reason));
    let next = if acted.idp.state == State::Progressing {
        Next::Backoff(acted.retry_after)
    } else if fixed_elsewhere {
        Next::Retry
    } else if rollout.state == State::Progressing || acted.coder_written {
        Next::Soon
    } else {
        Next::Interval
    };
    Ok(Pass {
        verdicts: Verdicts {
            idp: acted.idp,
            coder: acted.coder,
            rollout,
        },
        idp_settings: acted.idp_settings,
        findings: acted.findings,
        coder_values: acted.coder_values,
        written: acted.coder_written,
        events: acted.events,
        next,
    })
}

async fn reconcile_inner(policy: &OidcRefreshPolicy, ctx: &Context, ns: &str) -> Result<Action> {
    let key = (ns.to_string(), policy.name_any());
    let interval = interval(policy);
    let generation = policy.metadata.generation.unwrap_or(0);
    if let Some(left) = ctx.held(&key, generation) {
        // Triggered (by our own status write, a watch event, ...) while backing off from a
        // transient failure: keep to the backoff instead of hammering the provider.
        debug!(left_s = left.as_secs_f64(), "backing off; pass skipped");
        return Ok(Action::requeue(left));
    }
    let pass = run_pass(policy, ctx, ns).await?;

    let old = policy.status.as_ref();
    let new_status = build_status(policy, old, &pass, Timestamp::now());
    let events = [pass.events.clone(), status_events(old, &new_status, &pass)].concat();
    for e in &events {
        if pass.findings.iter().any(|f| f.reason == e.reason) {
            ctx.metrics.finding(e.reason);
        }
    }
    if status::changed(old, &new_status) {
        patch_status(policy, ns, &new_status, ctx).await?;
    }
    publish(policy, &events, ctx).await;
    if let Some(problem) = pass.problem() {
        ctx.metrics.reconcile_problem(problem);
    }
    if pass.is_ready() {
        info!("policy ready");
    }
    Ok(match pass.next {
        Next::Backoff(retry_after) => {
            let d = ctx.backoff_for(&key, retry_after, Some(generation));
            warn!(delay_s = d.as_secs_f64(), reason = %pass.verdicts.idp.reason, "identity provider not reachable, backing off");
            Action::requeue(d)
        }
        Next::Retry => {
            let d = ctx.next_backoff(&key, None).min(jitter(interval));
            debug!(
                delay_s = d.as_secs_f64(),
                "blocked by a permission or credential outside Kubernetes; retrying"
            );
            Action::requeue(d)
        }
        Next::Soon => {
            ctx.reset_backoff(&key);
            Action::requeue(Duration::from_secs(5).min(interval))
        }
        Next::Interval => {
            ctx.reset_backoff(&key);
            Action::requeue(jitter(interval))
        }
    })
}

/// Events for what changed between the stored and the new status: the Ready transition, the
/// first time users must sign in again, and warnings that appeared.
fn status_events(
    old: Option<&OidcRefreshPolicyStatus>,
    new: &OidcRefreshPolicyStatus,
    pass: &Pass,
) -> Vec<EventNote> {
    let mut events = Vec::new();
    if new.users_must_sign_in_again_since.is_some()
        && old
            .and_then(|s| s.users_must_sign_in_again_since.as_ref())
            .is_none()
    {
        events.push(EventNote {
            warning: false,
            reason: "UsersMustSignInAgain",
            note: "Coder now requests refresh tokens; every user must sign out and in once to obtain one".into(),
        });
    }
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    for c in status::transitions(old_conditions, &new.conditions) {
        if c.type_ == ConditionType::Ready.as_str() {
            let ready = c.status == "True";
            events.push(EventNote {
                warning: !ready && pass.is_stalled(),
                reason: if ready { "Ready" } else { "NotReady" },
                note: format!("{}: {}", c.reason, c.message),
            });
        }
    }
    for f in &pass.findings {
        if !old.is_some_and(|o| o.warnings.iter().any(|w| w.reason == f.reason)) {
            events.push(EventNote {
                warning: true,
                reason: f.reason,
                note: f.message.clone(),
            });
        }
    }
    events
}

fn rollout_verdict(
    deployment: &Option<k8s_openapi::api::apps::v1::Deployment>,
    coder: &Verdict,
) -> Verdict {
    let Some(d) = deployment else {
        return Verdict::new(
            State::Unknown,
            Reason::DeploymentNotFound,
            "No Deployment to follow.",
        );
    };
    if coder.state == State::Stalled || coder.state == State::Unknown {
        return Verdict::new(
            State::Unknown,
            coder.reason,
            "Waiting for the env entries to be configured.",
        );
    }
    match coder::rollout(d) {
        coder::Rollout::Complete => Verdict::new(
            State::Done,
            Reason::RolloutComplete,
            "All replicas run the current configuration.",
        ),
        coder::Rollout::InProgress(m) => Verdict::new(
            State::Progressing,
            Reason::RolloutInProgress,
            format!("Rollout in progress: {m}."),
        ),
        coder::Rollout::Failed(m) => Verdict::new(
            State::Stalled,
            Reason::RolloutFailed,
            format!(
                "{m}. Check the new pods (kubectl rollout status deployment/{}); the env entries stay as configured.",
                d.metadata.name.clone().unwrap_or_default()
            ),
        ),
    }
}

/// The status a pass leads to. Pure: `now` is only used for a condition that changes status and
/// for the first `usersMustSignInAgainSince`.
fn build_status(
    policy: &OidcRefreshPolicy,
    old: Option<&OidcRefreshPolicyStatus>,
    pass: &Pass,
    now: Timestamp,
) -> OidcRefreshPolicyStatus {
    let generation = policy.metadata.generation.unwrap_or(0);
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = status::merge_conditions(
        old_conditions,
        status::conditions(&pass.verdicts, generation, now),
    );
    let identity_provider = match &pass.idp_settings {
        Some(s) => Some(IdentityProviderStatus {
            refresh_token_grant: s.refresh_token_grant,
            offline_access: s.offline_access,
            lifetime: s.lifetime.map(duration::format),
            idle_timeout: s.idle_timeout.map(duration::format),
            rotation: s.rotation,
            access_token_lifetime: s.access_token_lifetime.map(duration::format),
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
    OidcRefreshPolicyStatus {
        observed_generation: Some(generation),
        provider: Some(policy.provider_name().to_string()),
        conditions,
        identity_provider,
        coder,
        warnings,
        users_must_sign_in_again_since: since,
    }
}

async fn patch_status(
    policy: &OidcRefreshPolicy,
    ns: &str,
    status: &OidcRefreshPolicyStatus,
    ctx: &Context,
) -> Result<()> {
    let api: Api<OidcRefreshPolicy> = Api::namespaced(ctx.client.clone(), ns);
    let body = json!({
        "apiVersion": OidcRefreshPolicy::api_version(&()),
        "kind": OidcRefreshPolicy::kind(&()),
        "status": status,
    });
    api.patch_status(
        &policy.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| {
        Error::kube(
            format!(
                "write status of OidcRefreshPolicy {ns}/{}",
                policy.name_any()
            ),
            e,
        )
    })?;
    ctx.metrics.wrote("status");
    Ok(())
}

async fn publish(policy: &OidcRefreshPolicy, notes: &[EventNote], ctx: &Context) {
    let reference = policy.object_ref(&());
    for note in notes {
        match ctx.events.publish(&reference, note).await {
            Ok(()) => ctx.metrics.wrote("event"),
            Err(e) => warn!(error = %e, reason = note.reason, "could not publish Event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Change;

    /// A context whose client points nowhere (these tests make no API calls).
    fn context() -> Context {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let metrics = Arc::new(Metrics::new());
        Context::new(
            client.clone(),
            Publisher::new(client, None),
            metrics.clone(),
            ProviderDeps::new(metrics, Duration::from_secs(1)),
        )
    }

    #[tokio::test]
    async fn a_transient_backoff_holds_passes_of_the_same_generation_only() {
        let ctx = context();
        let key = ("ns".to_string(), "p".to_string());
        assert_eq!(ctx.held(&key, 1), None);
        let d = ctx.backoff_for(&key, Some(Duration::from_secs(60)), Some(1));
        assert_eq!(d, Duration::from_secs(60));
        let left = ctx.held(&key, 1).expect("held");
        assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60));
        assert_eq!(ctx.held(&key, 2), None, "a spec change is never held");
        // Stalls retry without holding other triggers (a fixed Secret must be seen at once).
        ctx.next_backoff(&key, None);
        assert_eq!(ctx.held(&key, 1), None);
        ctx.reset_backoff(&key);
        assert_eq!(ctx.held(&key, 1), None);
    }

    #[tokio::test]
    async fn a_clean_observation_is_reused_only_for_the_same_generation_credentials_and_window() {
        let ctx = context();
        let key = MemoKey {
            policy: ("ns".into(), "p".into()),
            generation: 3,
            window: Duration::from_secs(60),
        };
        let clean = Observation {
            settings: IdpSettings {
                refresh_token_grant: Some(true),
                ..IdpSettings::default()
            },
            ..Observation::default()
        };
        assert_eq!(ctx.remembered_idp(&key, Some("7")), None);
        ctx.remember_idp(&key, Some("7"), &clean);
        assert_eq!(ctx.remembered_idp(&key, Some("7")), Some(clean.clone()));
        assert_eq!(
            ctx.remembered_idp(&key, Some("8")),
            None,
            "the Secret changed"
        );
        assert_eq!(ctx.remembered_idp(&key, None), None);
        let next = MemoKey {
            generation: 4,
            ..key.clone()
        };
        assert_eq!(
            ctx.remembered_idp(&next, Some("7")),
            None,
            "the spec changed"
        );
        let other = MemoKey {
            policy: ("ns".into(), "q".into()),
            ..key.clone()
        };
        assert_eq!(ctx.remembered_idp(&other, Some("7")), None);

        // Something to change or a blocking finding: not remembered, and the old one is dropped.
        let pending = Observation {
            changes: vec![Change {
                setting: "s".into(),
                from: "a".into(),
                to: "b".into(),
            }],
            ..clean.clone()
        };
        ctx.remember_idp(&key, Some("7"), &pending);
        assert_eq!(ctx.remembered_idp(&key, Some("7")), None);
        let blocked = Observation {
            findings: vec![Finding {
                reason: "X",
                message: "m".into(),
                blocking: true,
            }],
            ..clean.clone()
        };
        ctx.remember_idp(&key, Some("7"), &blocked);
        assert_eq!(ctx.remembered_idp(&key, Some("7")), None);

        ctx.remember_idp(&key, Some("7"), &clean);
        ctx.forget_idp(&key);
        assert_eq!(ctx.remembered_idp(&key, Some("7")), None);

        // It expires after the window.
        let short = MemoKey {
            window: Duration::ZERO,
            ..key.clone()
        };
        ctx.remember_idp(&short, Some("7"), &clean);
        assert_eq!(ctx.remembered_idp(&short, Some("7")), None);

        // Expired entries of many policies are swept as the map grows.
        for i in 0..200 {
            let k = MemoKey {
                policy: ("ns".into(), format!("p{i}")),
                ..short.clone()
            };
            ctx.remember_idp(&k, None, &clean);
        }
        let held = ctx.memos.lock().unwrap().entries.len();
        assert!(held < 200, "expired entries are swept: {held}");
    }

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let (base, max) = (Duration::from_secs(5), Duration::from_secs(300));
        let within = |d: Duration, want: u64| {
            let w = Duration::from_secs(want);
            d >= w.mul_f64(0.9) && d <= w.mul_f64(1.1)
        };
        assert!(within(backoff_delay(1, base, max, None), 5));
        assert!(within(backoff_delay(2, base, max, None), 10));
        assert!(within(backoff_delay(4, base, max, None), 40));
        assert!(within(backoff_delay(30, base, max, None), 300));
        assert_eq!(
            backoff_delay(1, base, max, Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn desired_settings_default_offline_access_and_parse_durations() {
        let p: OidcRefreshPolicy = serde_json::from_value(json!({
            "apiVersion": "oidcrefresh.dev/v1alpha1", "kind": "OidcRefreshPolicy",
            "metadata": {"name": "a", "namespace": "b"},
            "spec": {"provider": {"google": {}}, "coder": {"deployment": "c"}, "refreshTokens": {"idleTimeout": "1h30m"}}
        }))
        .unwrap();
        let d = desired_settings(&p).unwrap();
        assert!(d.offline_access);
        assert_eq!(d.idle_timeout, Some(Duration::from_secs(5400)));
        let mut bad = p.clone();
        bad.spec.refresh_tokens.lifetime = Some("3 days".into());
        assert!(
            desired_settings(&bad)
                .unwrap_err()
                .contains("spec.refreshTokens.lifetime")
        );
    }
}
