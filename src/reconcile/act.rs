//! Act: carries out a [`Plan`]: the identity-provider writes first, then the server-side apply of
//! the Coder env entries. Returns the verdicts for status and the Events to publish.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};

use super::Context;
use super::announce;
use super::memo::MemoKey;
use super::observe::{IdpObserved, Observed};
use super::plan::{CoderStep, IdpStep, Plan, conflict_message, provider_verdict, rbac_message};
use crate::coder::{PARAMS_ENV, SCOPES_ENV};
use crate::crd::OidcRefreshPolicy;
use crate::error::{Error, Result};
use crate::events::{self, EventNote};
use crate::providers::{Change, Finding, IdpSettings, ProviderKind};
use crate::status::{Reason, State, Verdict};

/// What `act` did.
pub struct Acted {
    /// Identity-provider verdict.
    pub idp: Verdict,
    /// Settings to show in status.
    pub idp_settings: Option<IdpSettings>,
    /// Non-blocking findings to report as warnings.
    pub findings: Vec<Finding>,
    /// Coder verdict.
    pub coder: Verdict,
    /// The Deployment's env was written.
    pub coder_written: bool,
    /// Values Coder has now.
    pub coder_values: Option<(String, String)>,
    /// The Deployment as last seen (after our write, if any).
    pub deployment: Option<Deployment>,
    /// Events to publish.
    pub events: Vec<EventNote>,
    /// Server-requested wait from a throttling provider.
    pub retry_after: Option<std::time::Duration>,
    /// Changes not made by this pass (all of them in `Observe` mode), identity provider first.
    pub pending: Vec<Change>,
    /// The announcements recorded in status before the writes.
    pub recorded: announce::Recorded,
    /// The identity provider is as the policy wants (read converged, or written): its
    /// recorded update is made.
    pub idp_settled: bool,
}

/// Executes the plan.
pub async fn act(
    plan: Plan,
    observed: Observed,
    memo: &MemoKey,
    policy: &OidcRefreshPolicy,
    ctx: &Context,
) -> Result<Acted> {
    let namespace = memo.policy.0.as_str();
    let mut events = Vec::new();
    let mut retry_after = None;
    let mut findings = Vec::new();
    let mut secret_version = None;
    let (connected, mut settings) = match &observed.idp {
        IdpObserved::Seen {
            provider,
            plan,
            secret_version: version,
        } => {
            findings = plan.observation.findings.clone();
            secret_version = version.clone();
            (
                Some((provider.clone(), plan.as_ref().clone())),
                Some(plan.observation.settings.clone()),
            )
        }
        IdpObserved::Failed(e) => {
            retry_after = e.retry_after();
            (None, None)
        }
        IdpObserved::SecretNotFound(_) | IdpObserved::SecretForbidden(_) => (None, None),
    };
    let mut pending: Vec<Change> = connected
        .as_ref()
        .map(|(_, p)| p.changes().to_vec())
        .unwrap_or_default();

    // What the writes below will announce is recorded before any of them is made, so that a
    // restart between a write and its Event still announces it.
    let first_write = policy
        .status
        .as_ref()
        .is_none_or(|s| s.users_must_sign_in_again_since.is_none());
    let before = announced_before(
        &plan.idp,
        &plan.coder,
        connected.as_ref().map(|(p, _)| p.kind()),
        first_write,
    );
    let recorded = if before.is_empty() {
        announce::Recorded::default()
    } else {
        announce::record(policy, namespace, ctx, &before).await?
    };
    let mut idp_settled = connected.as_ref().is_some_and(|(_, p)| p.is_empty());

    let mut idp_ok = true;
    let idp = match (plan.idp, connected) {
        (IdpStep::None(v), _) => v,
        (IdpStep::Apply(changes), Some((provider, idp_plan))) => {
            ctx.leadership.check()?;
            match provider.apply(&idp_plan).await {
                Ok(applied) => {
                    idp_settled = true;
                    ctx.metrics.wrote("identity_provider");
                    pending.clear();
                    // The read-back after the writes verified the provider: passes that follow the
                    // rollout need not read it again.
                    ctx.memos.remember(
                        memo,
                        secret_version.as_deref(),
                        &idp_plan.converged(applied.observation.clone()),
                    );
                    settings = Some(applied.observation.settings.clone());
                    findings = applied.observation.findings.clone();
                    // The provider's read-back does not redo the look-up of other tools.
                    findings.extend(
                        idp_plan
                            .observation
                            .findings
                            .iter()
                            .filter(|f| f.reason == super::other_tools::NOT_CHECKED)
                            .cloned(),
                    );
                    let done: Vec<String> = if applied.actions.is_empty() {
                        changes.iter().map(ToString::to_string).collect()
                    } else {
                        applied.actions.clone()
                    };
                    events.push(idp_updated(provider.kind(), &done));
                    // The writes are made (and announced), yet the state read back may still
                    // block refresh tokens (for example changes not yet replicated to a
                    // cluster's engines): Coder waits until it does not.
                    match applied.observation.findings.iter().find(|f| f.blocking) {
                        Some(f) => {
                            idp_ok = false;
                            Verdict::new(
                                State::Stalled,
                                Reason::ProviderFinding(f.reason),
                                f.message.clone(),
                            )
                        }
                        None => Verdict::new(
                            State::Done,
                            Reason::Configured,
                            format!("Updated the identity provider: {}.", done.join("; ")),
                        ),
                    }
                }
                Err(e) => {
                    idp_ok = false;
                    ctx.memos.forget(memo);
                    retry_after = e.retry_after();
                    provider_verdict(&e)
                }
            }
        }
        (IdpStep::Apply(_), None) => {
            idp_ok = false;
            Verdict::new(
                State::Progressing,
                Reason::ProviderError,
                "The identity provider was not connected.",
            )
        }
    };

    let mut deployment = observed.deployment;
    let mut coder_written = false;
    let mut coder_values = plan.coder_values;
    let coder_changes = plan.coder_changes;
    let coder = match plan.coder {
        CoderStep::None(v) => v,
        CoderStep::Apply { .. } if !idp_ok => {
            coder_values = None;
            Verdict::new(
                State::Unknown,
                Reason::WaitingForIdentityProvider,
                "Coder is changed once the identity provider is configured.",
            )
        }
        CoderStep::Apply {
            body,
            force,
            restoring_from,
            scopes,
            params,
        } => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
            let (name, container) = target_of(&body);
            let mut pp = PatchParams::apply(&crate::coder::field_manager(&container));
            pp.force = force;
            ctx.leadership.check()?;
            match api.patch(&name, &pp, &Patch::Apply(&body)).await {
                Ok(d) => {
                    ctx.metrics.wrote("deployment");
                    deployment = Some(d);
                    coder_written = true;
                    events.extend(coder_written_notes(
                        &name,
                        &restoring_from,
                        &scopes,
                        &params,
                    ));
                    Verdict::new(
                        State::Done,
                        Reason::Configured,
                        format!("{SCOPES_ENV}={scopes} and {PARAMS_ENV}={params} are set."),
                    )
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let owners = conflict_owners(&s.message);
                    let owners: Vec<&str> = owners.iter().map(String::as_str).collect();
                    Verdict::new(
                        State::Stalled,
                        Reason::FieldConflict,
                        conflict_message(
                            &owners,
                            &[SCOPES_ENV, PARAMS_ENV],
                            &container,
                            &format!("API server: {}", s.message),
                        ),
                    )
                }
                Err(kube::Error::Api(s)) if s.code == 403 => Verdict::new(
                    State::Stalled,
                    Reason::Forbidden,
                    rbac_message(
                        &format!("patch Deployment {name:?}"),
                        "get, list, watch and patch",
                        "deployments",
                        namespace,
                        &s.message,
                    ),
                ),
                Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => Verdict::new(
                    State::Stalled,
                    Reason::KubernetesError,
                    format!(
                        "The API server rejected the change to Deployment {name:?}: {}",
                        s.message
                    ),
                ),
                Err(e) => {
                    return Err(Error::kube(
                        format!("apply env to Deployment {namespace}/{name}"),
                        e,
                    ));
                }
            }
        }
    };

    if !coder_written {
        pending.extend(coder_changes);
    }

    Ok(Acted {
        idp,
        idp_settings: settings,
        findings: findings.into_iter().filter(|f| !f.blocking).collect(),
        coder,
        coder_written,
        coder_values,
        deployment,
        events,
        retry_after,
        pending,
        recorded,
        idp_settled,
    })
}

/// Name of the Deployment and of the container an apply body is for.
fn target_of(body: &serde_json::Value) -> (String, String) {
    let name = body["metadata"]["name"].as_str().unwrap_or_default();
    let container = body["spec"]["template"]["spec"]["containers"][0]["name"]
        .as_str()
        .unwrap_or_default();
    (name.to_string(), container.to_string())
}

/// The Event of an identity-provider update (`done`: one line per write).
fn idp_updated(kind: ProviderKind, done: &[String]) -> EventNote {
    EventNote {
        warning: false,
        reason: announce::IDP_UPDATED,
        note: format!("{kind} client updated: {}", done.join("; ")),
    }
}

/// The Events of writing the Coder env entries.
fn coder_written_notes(
    name: &str,
    restoring_from: &[String],
    scopes: &str,
    params: &str,
) -> Vec<EventNote> {
    let mut notes = Vec::new();
    if !restoring_from.is_empty() {
        notes.push(EventNote {
            warning: true,
            reason: announce::DRIFT_CORRECTED,
            note: format!(
                "{SCOPES_ENV}/{PARAMS_ENV} in Deployment {name:?} were changed by {}; restored",
                restoring_from
                    .iter()
                    .map(|m| format!("{m:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    notes.push(EventNote {
        warning: false,
        reason: announce::DEPLOYMENT_PATCHED,
        note: format!("Set {SCOPES_ENV}={scopes} and {PARAMS_ENV}={params} in Deployment {name:?}"),
    });
    notes
}

/// What the writes of a plan announce, known before they are made: the identity-provider update
/// (when a provider is connected to make it), the Deployment patch, and on the first write to
/// Coder that users must sign in again. Pure.
fn announced_before(
    idp: &IdpStep,
    coder: &CoderStep,
    provider: Option<ProviderKind>,
    first_write: bool,
) -> Vec<EventNote> {
    let mut notes = Vec::new();
    if let (IdpStep::Apply(changes), Some(kind)) = (idp, provider) {
        let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
        notes.push(idp_updated(kind, &lines));
    }
    if let CoderStep::Apply {
        body,
        restoring_from,
        scopes,
        params,
        ..
    } = coder
    {
        let (name, _) = target_of(body);
        notes.extend(coder_written_notes(&name, restoring_from, scopes, params));
        if first_write {
            notes.push(events::users_must_sign_in_again());
        }
    }
    notes
}

/// Manager names quoted in an API server conflict message (`conflict with "helm" using apps/v1`).
fn conflict_owners(message: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in message
        .split("conflict with \"")
        .skip(1)
        .chain(message.split("conflicts with \"").skip(1))
    {
        if let Some(end) = part.find('"') {
            let m = part[..end].to_string();
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    if out.is_empty() {
        out.push("another field manager".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conflict_owners() {
        let m = r#"Apply failed with 1 conflict: conflict with "helm" using apps/v1: .spec.template.spec.containers[name="coder"].env[name="CODER_OIDC_SCOPES"].value"#;
        assert_eq!(conflict_owners(m), ["helm"]);
        let m = "Apply failed with 2 conflicts: conflicts with \"argocd-controller\" using apps/v1:\n- .a\n- .b";
        assert_eq!(conflict_owners(m), ["argocd-controller"]);
    }
}
