//! The reconcile pass, in order: observe (I/O) → plan (pure) → act (I/O) → status → Events →
//! requeue. This module only sequences the pass; each step lives in its own module:
//!
//! - [`observe`]: every read (the credentials Secret, the provider's snapshot and plan, the
//!   Deployment and its `envFrom` sources);
//! - [`plan`]: pure decisions for the identity provider, the Coder env and the rollout;
//! - [`act`]: the writes the plan lists (identity provider first, then the Deployment);
//! - [`crate::status`]: the status an [`Outcome`] leads to; [`crate::events`]: the Events;
//! - [`backoff`]: when the policy is looked at again (the rules are written at its top);
//! - [`memo`]: clean provider plans reused by passes that only follow the Coder side;
//! - [`other_tools`]: other tools' custom resources managing the object a plan would change.
//!
//! Level-triggered and idempotent: every pass re-reads everything; a converged policy produces
//! an empty plan, no writes to the identity provider or the Deployment, and a status equal to the
//! stored one, so nothing is written at all.

pub mod abandoned;
pub mod act;
pub mod announce;
pub mod backoff;
pub mod claims;
pub mod memo;
pub mod observe;
pub mod other_tools;
pub mod plan;
pub mod spec;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info};

use crate::crd::{FIELD_MANAGER, OidcRefreshPolicy, OidcRefreshPolicyStatus};
use crate::error::{Error, Result};
use crate::events::{self, Publisher};
use crate::metrics::Metrics;
use crate::providers::ProviderDeps;
use crate::status::{self, Outcome, Reason, State, Verdict, Verdicts};

use self::backoff::Backoff;
use self::memo::{MemoKey, Memos};
use self::observe::IdpObserved;
use self::plan::IdpView;
pub use self::spec::desired_settings;

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
    pub backoff: Backoff,
    /// Per-policy last clean identity-provider plan.
    pub memos: Memos,
    /// The controller's policy cache: which other policies aim at the same Deployment.
    pub policies: Option<Store<OidcRefreshPolicy>>,
    /// Which other tools' custom resources the API server serves (cached discovery).
    pub other_tools: other_tools::ServedKinds,
    /// Checked before every write (leader election).
    pub leadership: crate::leader::Leadership,
    /// Announcements this process has published or dropped.
    pub announced: announce::Announced,
}

impl Context {
    /// New context (backoff from 5 s to 5 min).
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
            backoff: Backoff::new(Duration::from_secs(5), Duration::from_secs(300)),
            memos: Memos::default(),
            policies: None,
            other_tools: other_tools::ServedKinds::default(),
            leadership: crate::leader::Leadership::unelected(),
            announced: announce::Announced::default(),
        }
    }

    /// What an older policy already manages of what `policy` would change (its Deployment
    /// container or identity-provider objects), if anything.
    pub fn claimed_by(&self, policy: &OidcRefreshPolicy) -> Option<claims::Claimed> {
        claims::claimant(policy, &self.policies.as_ref()?.state())
    }
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

async fn reconcile_inner(policy: &OidcRefreshPolicy, ctx: &Context, ns: &str) -> Result<Action> {
    let key = (ns.to_string(), policy.name_any());
    let interval = spec::interval(policy);
    let generation = policy.metadata.generation.unwrap_or(0);
    if let Some(left) = ctx.backoff.held(&key, generation) {
        // Triggered (by our own status write, a watch event, ...) while backing off from a
        // transient failure: keep to the backoff instead of hammering the provider.
        debug!(left_s = left.as_secs_f64(), "backing off; pass skipped");
        return Ok(Action::requeue(left));
    }
    let (mut pass, next) = run_pass(policy, ctx, ns).await?;

    let old = policy.status.as_ref();
    // Announcements an earlier pass recorded and did not publish (a restart, a failed Event).
    let carried = announce::carried(old, &ctx.announced, &key);
    if pass.settled.contains(&events::USERS_MUST_SIGN_IN_AGAIN)
        && carried
            .iter()
            .any(|a| a.reason == events::USERS_MUST_SIGN_IN_AGAIN)
    {
        // Coder was written by a pass that did not get to write its status.
        pass.written = true;
    }
    let mut new_status = status::build(policy, old, &pass, Timestamp::now());
    let notes = [
        pass.events.clone(),
        events::for_status(old, &new_status, &pass),
    ]
    .concat();
    for e in &notes {
        if pass.findings.iter().any(|f| f.reason == e.reason) {
            ctx.metrics.finding(e.reason);
        }
    }
    // Published before the status is written, so a restart in between announces again rather
    // than never; what could not be published stays in status.
    ctx.leadership.check()?;
    new_status.pending_announcements = announce::settle(
        policy,
        ctx,
        carried,
        pass.recorded.clone(),
        &notes,
        &pass.settled,
    )
    .await;
    // After recording announcements the stored status is no longer `old`: write it back even
    // when nothing else changed, so what was published does not stay pending.
    if pass.recorded_written || status::changed(old, &new_status) {
        patch_status(policy, ns, &new_status, ctx).await?;
    }
    ctx.metrics
        .policy_pass(ns, &key.1, &new_status, &pass.verdicts);
    if let Some(problem) = pass.problem() {
        ctx.metrics.reconcile_problem(problem);
    }
    if pass.is_ready() {
        info!("policy ready");
    }
    Ok(ctx
        .backoff
        .requeue(&key, generation, interval, next, pass.verdicts.idp.reason))
}

/// observe → plan → act, and the requeue rule that applies.
async fn run_pass(
    policy: &OidcRefreshPolicy,
    ctx: &Context,
    ns: &str,
) -> Result<(Outcome, backoff::Next)> {
    let desired = match desired_settings(policy) {
        Ok(d) => d,
        Err(msg) => return Ok((invalid_spec(msg), backoff::Next::Interval)),
    };
    if let Some(claimed) = ctx.claimed_by(policy) {
        // Looked at again shortly (the check reads only the policy cache), so deleting the other
        // policy hands over without waiting for the interval.
        let verdict = claims::duplicate_verdict(policy, &claimed);
        return Ok((duplicate(&claimed, verdict), backoff::Next::Soon));
    }
    let memo = MemoKey {
        policy: (ns.to_string(), policy.name_any()),
        generation: policy.metadata.generation.unwrap_or(0),
        window: spec::interval(policy) / 2,
    };

    let observed = observe::observe(policy, &desired, &memo, ctx).await?;
    if let IdpObserved::Seen { plan, .. } = &observed.idp {
        // All findings, blocking ones (an expired secret) too: `act` passes on only the others.
        let (name, kind) = (policy.name_any(), policy.provider_name());
        ctx.metrics
            .credential_expiry(ns, &name, kind, &plan.observation.findings);
    }
    let view = match &observed.idp {
        IdpObserved::SecretNotFound(n) => IdpView::SecretNotFound(n),
        IdpObserved::SecretForbidden(m) => IdpView::SecretForbidden(m),
        IdpObserved::Failed(e) => IdpView::Failed(e),
        IdpObserved::Seen { plan, .. } => IdpView::Seen(&plan.observation),
    };
    let deployment = match (&observed.deployment, &observed.deployment_forbidden) {
        (_, Some(m)) => plan::DeploymentView::Forbidden(m),
        (Some(d), None) => plan::DeploymentView::Found(d, &observed.env_from),
        (None, None) => plan::DeploymentView::Missing,
    };
    let previous = policy.status.as_ref().and_then(|s| s.coder.as_ref());
    let decided = plan::plan_with(&policy.spec, ns, view, deployment, previous);
    debug!(plan = ?decided, "planned");

    let acted = act::act(decided, observed, &memo, policy, ctx).await?;

    let rollout = plan::rollout_verdict(&acted.deployment, &acted.coder);
    let next = backoff::next(
        &acted.idp,
        &acted.coder,
        &rollout,
        acted.coder_written,
        acted.retry_after,
    );
    let read = acted.idp_settings.is_some();
    let mut settled = Vec::new();
    if acted.idp_settled {
        settled.push(announce::IDP_UPDATED);
    }
    if acted.coder.state == State::Done || acted.coder_written {
        settled.extend(announce::CODER_WRITES);
    }
    let pass = Outcome {
        verdicts: Verdicts {
            idp: acted.idp,
            coder: acted.coder,
            rollout,
        },
        idp_settings: acted.idp_settings,
        findings: acted.findings,
        coder_values: acted.coder_values,
        written: acted.coder_written,
        pending: read.then_some(acted.pending),
        events: acted.events,
        recorded: acted.recorded.entries,
        recorded_written: acted.recorded.written,
        settled,
    };
    Ok((pass, next))
}

/// A spec the schema let through but the controller cannot use: nothing read or written.
fn invalid_spec(msg: String) -> Outcome {
    let unknown = Verdict::new(
        State::Unknown,
        Reason::InvalidSpec,
        "Not evaluated until the spec is fixed.",
    );
    Outcome::without_io(Verdicts {
        idp: Verdict::new(
            State::Stalled,
            Reason::InvalidSpec,
            format!("{msg}. Fix the policy."),
        ),
        coder: unknown.clone(),
        rollout: unknown,
    })
}

/// Another policy manages the Deployment container or the identity-provider object: nothing is
/// read or written. The part claimed carries `verdict`; the others are not evaluated.
fn duplicate(claimed: &claims::Claimed, verdict: Verdict) -> Outcome {
    let unknown = |what: &str| {
        Verdict::new(
            State::Unknown,
            Reason::DuplicatePolicy,
            format!("Not evaluated while another policy manages {what}."),
        )
    };
    let verdicts = match claimed {
        claims::Claimed::Container(_) => Verdicts {
            idp: unknown("the Deployment"),
            coder: verdict,
            rollout: unknown("the Deployment"),
        },
        claims::Claimed::Idp { .. } => Verdicts {
            idp: verdict,
            coder: unknown("the identity-provider object"),
            rollout: unknown("the identity-provider object"),
        },
    };
    Outcome::without_io(verdicts)
}

/// Writes the policy's status (server-side apply, forced).
pub(super) async fn patch_status(
    policy: &OidcRefreshPolicy,
    ns: &str,
    status: &OidcRefreshPolicyStatus,
    ctx: &Context,
) -> Result<()> {
    ctx.leadership.check()?;
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
