//! Plan: pure decisions. Given the spec and what was observed, decide what to write (if
//! anything) and how each part stands. Most of the controller's behaviour is tested here.
//!
//! Order matters: Coder is only changed once the identity provider is configured, so Coder never
//! asks for a scope (such as `offline_access`) that the provider would still reject.

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::Value;

use crate::coder::{
    self, ContainerState, EnvEntry, PARAMS_ENV, SCOPES_ENV, SourceFound, SourceKind, SourceRead,
};
use crate::crd::{CoderStatus, ConflictPolicy, ManagementPolicy, OidcRefreshPolicySpec};
use crate::providers::{Change, Observation, ProviderError};
use crate::status::{Reason, State, Verdict};

/// The identity-provider side as `plan` sees it.
pub enum IdpView<'a> {
    /// The credentials Secret is missing.
    SecretNotFound(&'a str),
    /// The operator may not read the credentials Secret.
    SecretForbidden(&'a str),
    /// Reading failed.
    Failed(&'a ProviderError),
    /// Read.
    Seen(&'a Observation),
}

/// The Coder Deployment as `plan` sees it.
pub enum DeploymentView<'a> {
    /// It exists, with what its container's `envFrom` sources hold (read only while one of the
    /// two variables is absent from `env`).
    Found(&'a Deployment, &'a [SourceRead]),
    /// It does not exist.
    Missing,
    /// The operator may not read it (the API server's message).
    Forbidden(&'a str),
}

impl<'a> From<Option<&'a Deployment>> for DeploymentView<'a> {
    fn from(d: Option<&'a Deployment>) -> Self {
        d.map_or(DeploymentView::Missing, |d| DeploymentView::Found(d, &[]))
    }
}

/// Message for a request the API server refused to the operator's service account.
pub fn rbac_message(
    what: &str,
    verbs: &str,
    resource: &str,
    namespace: &str,
    server: &str,
) -> String {
    format!(
        "The operator may not {what} ({server}). Grant its service account {verbs} on {resource} in namespace {namespace:?}, \
         as the Helm chart's RBAC does; the policy is retried on the next interval."
    )
}

/// What to do at the identity provider.
#[derive(Debug, Clone, PartialEq)]
pub enum IdpStep {
    /// Nothing: converged, blocked, or Observe mode. The verdict says which.
    None(Verdict),
    /// Apply these changes.
    Apply(Vec<Change>),
}

/// What to do with the Coder Deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum CoderStep {
    /// Nothing to write; the verdict says why.
    None(Verdict),
    /// Server-side apply this body.
    Apply {
        /// The apply configuration.
        body: Value,
        /// Take ownership from other managers.
        force: bool,
        /// Imperative managers whose hand edits are being undone.
        restoring_from: Vec<String>,
        /// New `CODER_OIDC_SCOPES`.
        scopes: String,
        /// New `CODER_OIDC_AUTH_URL_PARAMS`.
        params: String,
    },
}

/// A reconcile's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Identity provider.
    pub idp: IdpStep,
    /// Coder Deployment.
    pub coder: CoderStep,
    /// Values Coder has (or will have once the plan is carried out), for status.
    pub coder_values: Option<(String, String)>,
    /// The Coder env entries that differ, field by field (written by `CoderStep::Apply`).
    pub coder_changes: Vec<Change>,
}

/// Turns a provider error into a verdict.
pub fn provider_verdict(e: &ProviderError) -> Verdict {
    let (state, reason) = match e {
        ProviderError::AuthenticationFailed { .. } => {
            (State::Stalled, Reason::AuthenticationFailed)
        }
        ProviderError::Forbidden { .. } => (State::Stalled, Reason::Forbidden),
        ProviderError::ClientNotFound { .. } => (State::Stalled, Reason::ClientNotFound),
        ProviderError::Unsupported { .. } => (State::Stalled, Reason::Unsupported),
        ProviderError::InvalidSecret { .. } => (State::Stalled, Reason::InvalidSecret),
        ProviderError::Rejected { .. } => (State::Stalled, Reason::Rejected),
        ProviderError::Unreachable { .. } => (State::Progressing, Reason::Unreachable),
        ProviderError::Throttled { .. } => (State::Progressing, Reason::Throttled),
        ProviderError::Protocol { .. } | ProviderError::NotPersisted { .. } => {
            (State::Progressing, Reason::ProviderError)
        }
    };
    let hint = if state == State::Progressing {
        " Retrying with backoff."
    } else {
        ""
    };
    Verdict::new(state, reason, format!("{e}.{hint}"))
}

/// Plans a reconcile of a policy that has not configured Coder before.
pub fn plan<'a>(
    spec: &OidcRefreshPolicySpec,
    namespace: &str,
    idp: IdpView<'_>,
    deployment: impl Into<DeploymentView<'a>>,
) -> Plan {
    plan_with(spec, namespace, idp, deployment, None)
}

/// Plans a reconcile. `previous` is what the policy's status recorded as Coder's values: a live
/// value that differs from it was changed by someone else (drift); without it the operator is
/// configuring the entries for the first time (or after a spec change), which is no drift.
pub fn plan_with<'a>(
    spec: &OidcRefreshPolicySpec,
    namespace: &str,
    idp: IdpView<'_>,
    deployment: impl Into<DeploymentView<'a>>,
    previous: Option<&CoderStatus>,
) -> Plan {
    let deployment = deployment.into();
    let observe_only = spec.management_policy == ManagementPolicy::Observe;
    let (idp_step, idp_ready, observation) = match idp {
        IdpView::SecretNotFound(name) => (
            IdpStep::None(Verdict::new(
                State::Stalled,
                Reason::SecretNotFound,
                format!(
                    "Secret {name:?} not found in namespace {namespace:?}. Create it with the admin credentials the provider needs; the policy is retried as soon as it appears."
                ),
            )),
            false,
            None,
        ),
        IdpView::SecretForbidden(server) => (
            IdpStep::None(Verdict::new(
                State::Stalled,
                Reason::Forbidden,
                rbac_message(
                    &format!(
                        "read the credentials Secret {:?}",
                        spec.provider.credentials_secret().unwrap_or_default()
                    ),
                    "get, list and watch",
                    "secrets",
                    namespace,
                    server,
                ),
            )),
            false,
            None,
        ),
        IdpView::Failed(e) => (IdpStep::None(provider_verdict(e)), false, None),
        IdpView::Seen(o) => {
            let blocking = o.findings.iter().find(|f| f.blocking);
            if let Some(f) = blocking {
                (
                    IdpStep::None(Verdict::new(
                        State::Stalled,
                        Reason::ProviderFinding(f.reason),
                        f.message.clone(),
                    )),
                    false,
                    Some(o),
                )
            } else if o.changes.is_empty() {
                (
                    IdpStep::None(Verdict::new(
                        State::Done,
                        Reason::Configured,
                        configured_message(o),
                    )),
                    true,
                    Some(o),
                )
            } else if observe_only {
                (
                    IdpStep::None(Verdict::new(
                        State::Differs,
                        Reason::Drifted,
                        format!(
                            "Observe mode, nothing changed. The identity provider differs: {}.",
                            list(&o.changes)
                        ),
                    )),
                    false,
                    Some(o),
                )
            } else {
                (IdpStep::Apply(o.changes.clone()), true, Some(o))
            }
        }
    };

    let Some(observation) = observation else {
        return Plan {
            idp: idp_step,
            coder: CoderStep::None(Verdict::new(
                State::Unknown,
                Reason::WaitingForIdentityProvider,
                "Coder is configured once the identity provider is.",
            )),
            coder_values: None,
            coder_changes: Vec::new(),
        };
    };
    let (coder, values, coder_changes) = plan_coder(
        spec,
        namespace,
        observation,
        deployment,
        idp_ready || observe_only,
        previous,
    );
    Plan {
        idp: idp_step,
        coder,
        coder_values: values,
        coder_changes,
    }
}

fn configured_message(o: &Observation) -> String {
    let s = &o.settings;
    let mut parts = Vec::new();
    if let Some(g) = s.refresh_token_grant {
        parts.push(format!(
            "refresh_token grant {}",
            if g { "enabled" } else { "disabled" }
        ));
    }
    if let Some(off) = s.offline_access {
        parts.push(format!(
            "offline_access {}",
            if off { "available" } else { "not available" }
        ));
    }
    if parts.is_empty() {
        "The identity provider needs no admin changes: refresh tokens come from the parameters Coder sends.".into()
    } else {
        format!(
            "The identity provider's client is configured: {}.",
            parts.join(", ")
        )
    }
}

fn list(changes: &[Change]) -> String {
    changes
        .iter()
        .map(Change::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// An absent variable that an `envFrom` source may set: writing an `env` entry would silently
/// override the user's value, so the policy stalls instead.
fn env_from_verdict(
    env: &str,
    container: &str,
    namespace: &str,
    env_from: &[SourceRead],
) -> Option<Verdict> {
    let forbidden = env_from.iter().find_map(|r| match &r.found {
        SourceFound::Forbidden(server) => Some((r, server)),
        _ => None,
    });
    if let Some((read, server)) = forbidden {
        let resource = match read.source.kind {
            SourceKind::ConfigMap => "configmaps",
            SourceKind::Secret => "secrets",
        };
        return Some(Verdict::new(
            State::Stalled,
            Reason::Forbidden,
            rbac_message(
                &format!(
                    "read {}, which container {container:?} loads with envFrom, to check whether it sets {env}",
                    read.source
                ),
                "get",
                resource,
                namespace,
                server,
            ),
        ));
    }
    // With several sources setting the same variable, the last one wins.
    let source = &env_from.iter().rev().find(|r| r.supplies(env))?.source;
    Some(Verdict::new(
        State::Stalled,
        Reason::EnvFromReference,
        format!(
            "{env} in container {container:?} comes from {source} through envFrom, which the operator never rewrites (an env entry would silently override it). \
             Move {env} from there into the container's env, where the operator merges it, or remove it from {source}. \
             The policy is checked again when the Deployment changes, and on its interval."
        ),
    ))
}

fn plan_coder(
    spec: &OidcRefreshPolicySpec,
    namespace: &str,
    o: &Observation,
    deployment: DeploymentView<'_>,
    idp_ready: bool,
    previous: Option<&CoderStatus>,
) -> (CoderStep, Option<(String, String)>, Vec<Change>) {
    let name = &spec.coder.deployment;
    let container = &spec.coder.container;
    let stalled = |reason, msg: String| {
        (
            CoderStep::None(Verdict::new(State::Stalled, reason, msg)),
            None,
            Vec::new(),
        )
    };
    let (d, env_from) = match deployment {
        DeploymentView::Found(d, env_from) => (d, env_from),
        DeploymentView::Forbidden(server) => {
            return stalled(
                Reason::Forbidden,
                rbac_message(
                    &format!("read Deployment {name:?}"),
                    "get, list, watch and patch",
                    "deployments",
                    namespace,
                    server,
                ),
            );
        }
        DeploymentView::Missing => {
            return stalled(
                Reason::DeploymentNotFound,
                format!(
                    "Deployment {name:?} not found in namespace {namespace:?}. Create it or fix spec.coder.deployment; the policy is retried as soon as it appears."
                ),
            );
        }
    };
    let (scopes, params) = match coder::inspect(d, container) {
        ContainerState::Missing(names) => {
            return stalled(
                Reason::ContainerNotFound,
                format!(
                    "Deployment {name:?} has no container {container:?} (it has: {}). Set spec.coder.container to the container that runs `coder server`.",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            );
        }
        ContainerState::Found {
            scopes,
            params,
            flags,
            config_path,
        } => {
            if let Some((flag, env)) = flags.first() {
                return stalled(
                    Reason::CoderFlagOverride,
                    format!(
                        "Container {container:?} passes {flag} in its command or args, which Coder reads after the environment: it would silently win over the {env} the operator sets. \
                         Remove {flag} from the container's args (the Coder chart's coder.commandArgs) and put its scopes or parameters in spec.coder instead; the policy is checked again when the Deployment changes."
                    ),
                );
            }
            if let Some(path) = config_path {
                let absent: Vec<&str> = [(SCOPES_ENV, &scopes), (PARAMS_ENV, &params)]
                    .iter()
                    .filter(|(_, e)| !e.present)
                    .map(|(env, _)| *env)
                    .collect();
                if !absent.is_empty() {
                    return stalled(
                        Reason::CoderConfigFile,
                        format!(
                            "Container {container:?} reads a Coder YAML config file ({}={path}); an env entry for {} would silently replace what that file sets. \
                             Put {} in the container's env (with the value from the file, or Coder's default), where the operator merges it, or remove it from the file.",
                            coder::CONFIG_PATH_ENV,
                            absent.join(" and "),
                            absent.join(" and ")
                        ),
                    );
                }
            }
            (scopes, params)
        }
    };
    for (env, entry) in [(SCOPES_ENV, &scopes), (PARAMS_ENV, &params)] {
        if entry.value_from {
            return stalled(
                Reason::EnvFromReference,
                format!(
                    "{env} in container {container:?} uses valueFrom, which the operator never rewrites. Replace it with a literal value, or remove it and let the operator set it."
                ),
            );
        }
        if entry.duplicated {
            return stalled(
                Reason::DuplicateEnvEntry,
                format!(
                    "{env} appears more than once in container {container:?}; Kubernetes cannot merge it. Remove the duplicate."
                ),
            );
        }
        if !entry.present
            && let Some(verdict) = env_from_verdict(env, container, namespace, env_from)
        {
            return (CoderStep::None(verdict), None, Vec::new());
        }
    }
    if let Some((key, have, need)) = coder::conflicting_param(&o.coder, &spec.coder.auth_url_params)
    {
        return stalled(
            Reason::ConflictingAuthURLParams,
            format!(
                "spec.coder.authURLParams.{key} is {have:?}, but refresh tokens from this identity provider need {key}={need:?}. Remove {key} from spec.coder.authURLParams (the operator sets it)."
            ),
        );
    }
    // Turning offlineAccess off stops Coder from asking for offline_access, unless the policy
    // lists it in spec.coder.scopes itself.
    let mut needs = o.coder.clone();
    if spec.refresh_tokens.offline_access == Some(false) {
        needs.add_scopes.retain(|s| s != "offline_access");
        if !needs.remove_scopes.iter().any(|s| s == "offline_access") {
            needs.remove_scopes.push("offline_access".into());
        }
    }
    let want_scopes = coder::merge_scopes(scopes.value.as_deref(), &needs, &spec.coder.scopes);
    let want_params =
        match coder::merge_params(params.value.as_deref(), &needs, &spec.coder.auth_url_params) {
            Ok(p) => p,
            Err(e) => return stalled(Reason::InvalidEnvValue, e.to_string()),
        };
    // The same JSON in another key order or spacing means the same to Coder: keep the live bytes,
    // so nothing is written (and no declarative owner is contradicted) for a change of form.
    let want_params = match &params.value {
        Some(live) if params.present && coder::same_params(Some(live), &want_params) => {
            live.clone()
        }
        _ => want_params,
    };
    let current = (
        shown(&scopes, coder::DEFAULT_SCOPES),
        shown(&params, coder::DEFAULT_PARAMS),
    );
    let differing: Vec<(&str, &EnvEntry, &str)> = [
        (SCOPES_ENV, &scopes, want_scopes.as_str()),
        (PARAMS_ENV, &params, want_params.as_str()),
    ]
    .into_iter()
    .filter(|(_, e, want)| e.value.as_deref() != Some(*want))
    .collect();
    if differing.is_empty() {
        return (
            CoderStep::None(Verdict::new(
                State::Done,
                Reason::Configured,
                format!(
                    "{SCOPES_ENV}={want_scopes} and {PARAMS_ENV}={want_params} are set in container {container:?}."
                ),
            )),
            Some((want_scopes, want_params)),
            Vec::new(),
        );
    }
    let target = format!("Deployment {name:?}, container {container:?}");
    let changes: Vec<Change> = differing
        .iter()
        .map(|(env, e, want)| {
            let why = if *env == SCOPES_ENV {
                "the scopes Coder requests: the identity provider's required scopes and spec.coder.scopes, added to the ones already set"
            } else {
                "the parameters Coder sends: the identity provider's required parameters and spec.coder.authURLParams, merged into the ones already set"
            };
            let current = match &e.value {
                Some(v) => v.clone(),
                None => format!(
                    "unset (Coder's default: {})",
                    if *env == SCOPES_ENV {
                        coder::DEFAULT_SCOPES
                    } else {
                        coder::DEFAULT_PARAMS
                    }
                ),
            };
            Change::new(&target, *env, current, *want, why)
        })
        .collect();
    let diff = differing
        .iter()
        .map(|(env, e, want)| {
            format!(
                "{env} {} -> {want}",
                e.value
                    .as_deref()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_else(|| "unset".into())
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if spec.management_policy == ManagementPolicy::Observe {
        return (
            CoderStep::None(Verdict::new(
                State::Differs,
                Reason::Drifted,
                format!("Observe mode, nothing changed. Deployment {name:?} differs: {diff}."),
            )),
            Some(current),
            changes,
        );
    }
    if !idp_ready {
        return (
            CoderStep::None(Verdict::new(
                State::Unknown,
                Reason::WaitingForIdentityProvider,
                format!(
                    "Coder is changed once the identity provider is configured (pending: {diff})."
                ),
            )),
            Some(current),
            changes,
        );
    }
    let mut declarative: Vec<&str> = Vec::new();
    let mut imperative: Vec<String> = Vec::new();
    // Drift: a value the operator had set (recorded in status) that someone changed by hand. A
    // value Coder's manifest was created with, or one from before a spec change, is no drift.
    let mut drifted_by: Vec<String> = Vec::new();
    for (env, e, _) in &differing {
        let recorded = previous.and_then(|p| {
            if *env == SCOPES_ENV {
                p.scopes.as_deref()
            } else {
                p.auth_url_params.as_deref()
            }
        });
        let drifted = recorded.is_some_and(|r| e.value.as_deref() != Some(r));
        for owner in &e.other_owners {
            if owner.declarative {
                if !declarative.contains(&owner.manager.as_str()) {
                    declarative.push(&owner.manager);
                }
            } else {
                if !imperative.contains(&owner.manager) {
                    imperative.push(owner.manager.clone());
                }
                if drifted
                    && !coder::is_operator_manager(&owner.manager)
                    && !drifted_by.contains(&owner.manager)
                {
                    drifted_by.push(owner.manager.clone());
                }
            }
        }
    }
    if !declarative.is_empty() && spec.coder.conflict_policy == ConflictPolicy::Report {
        let envs: Vec<&str> = differing.iter().map(|(env, _, _)| *env).collect();
        return (
            CoderStep::None(Verdict::new(
                State::Stalled,
                Reason::FieldConflict,
                conflict_message(&declarative, &envs, container, &diff),
            )),
            Some(current),
            changes,
        );
    }
    let force = !declarative.is_empty() || !imperative.is_empty();
    (
        CoderStep::Apply {
            body: coder::apply_body(namespace, name, container, &want_scopes, &want_params),
            force,
            restoring_from: drifted_by,
            scopes: want_scopes.clone(),
            params: want_params.clone(),
        },
        Some((want_scopes, want_params)),
        changes,
    )
}

fn shown(e: &EnvEntry, default: &str) -> String {
    e.value.clone().unwrap_or_else(|| default.to_string())
}

/// How the rollout of the Coder Deployment stands, once its env is configured.
pub fn rollout_verdict(
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
        coder::Rollout::Paused(m) => {
            let name = d.metadata.name.clone().unwrap_or_default();
            Verdict::new(
                State::Stalled,
                Reason::DeploymentPaused,
                format!(
                    "Deployment {name:?} is paused (spec.paused), so the Deployment controller does not roll out the current configuration ({m}). \
                     Resume it with `kubectl rollout resume deployment/{name}`; the policy follows the rollout from there."
                ),
            )
        }
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

/// Message for a field conflict: who owns the entries and how to resolve it.
pub fn conflict_message(owners: &[&str], envs: &[&str], container: &str, diff: &str) -> String {
    format!(
        "{} in container {container:?} {} owned by {}, which would undo any change ({diff}). \
         Remove the entries from that tool's source (for example the Coder chart's coder.env values), or in Argo CD add \
         ignoreDifferences with managedFieldsManagers: [oidc-refresh-operator] and the sync option RespectIgnoreDifferences=true; \
         or set spec.coder.conflictPolicy: Force to take ownership.",
        envs.join(" and "),
        if envs.len() == 1 { "is" } else { "are" },
        owners
            .iter()
            .map(|o| format!("{o:?}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{CoderNeeds, Finding, ProviderKind};
    use serde_json::json;

    fn spec(extra: Value) -> OidcRefreshPolicySpec {
        let mut base = json!({"provider": {"google": {}}, "coder": {"deployment": "coder", "scopes": ["groups"], "authURLParams": {"hd": "example.com"}}});
        merge(&mut base, extra);
        serde_json::from_value(base).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn google() -> Observation {
        Observation {
            coder: CoderNeeds {
                remove_scopes: vec!["offline_access".into()],
                params: [
                    ("access_type".to_string(), "offline".to_string()),
                    ("prompt".to_string(), "consent".to_string()),
                ]
                .into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn deployment(env: Value, managed: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "coder", "namespace": "coder", "managedFields": managed},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "coder", "env": env}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn fresh_deployment_gets_merged_values_without_force() {
        let d = deployment(
            json!([{"name": "CODER_OIDC_SCOPES", "value": "openid,profile,email,offline_access"}]),
            json!([]),
        );
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        let CoderStep::Apply {
            force,
            scopes,
            params,
            body,
            ..
        } = &p.coder
        else {
            panic!("{:?}", p.coder)
        };
        assert!(!force);
        assert_eq!(scopes, "openid,profile,email,groups");
        assert_eq!(
            params,
            r#"{"access_type":"offline","hd":"example.com","prompt":"consent"}"#
        );
        assert_eq!(
            body["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
            "openid,profile,email,groups"
        );
    }

    #[test]
    fn converged_deployment_plans_nothing() {
        let d = deployment(
            json!([{"name": "CODER_OIDC_SCOPES", "value": "openid,profile,email,groups"},
                   {"name": "CODER_OIDC_AUTH_URL_PARAMS", "value": r#"{"access_type":"offline","hd":"example.com","prompt":"consent"}"#}]),
            json!([]),
        );
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        assert!(matches!(&p.coder, CoderStep::None(v) if v.state == State::Done));
        assert!(matches!(&p.idp, IdpStep::None(v) if v.state == State::Done));
    }

    fn owned_by(manager: &str, op: &str) -> Value {
        json!([{"manager": manager, "operation": op, "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"coder\"}": {"f:env": {"k:{\"name\":\"CODER_OIDC_SCOPES\"}": {"f:value": {}}}}}}}}}}])
    }

    #[test]
    fn declarative_owner_is_a_conflict_unless_forced() {
        let d = deployment(
            json!([{"name": "CODER_OIDC_SCOPES", "value": "openid"}]),
            owned_by("helm", "Update"),
        );
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        let CoderStep::None(v) = &p.coder else {
            panic!()
        };
        assert_eq!((v.state, v.reason), (State::Stalled, Reason::FieldConflict));
        assert!(
            v.message.contains("\"helm\"") && v.message.contains("RespectIgnoreDifferences=true"),
            "{}",
            v.message
        );
        let p = plan(
            &spec(json!({"coder": {"conflictPolicy": "Force"}})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        assert!(matches!(p.coder, CoderStep::Apply { force: true, .. }));
    }

    #[test]
    fn hand_edit_is_drift_restored_with_force() {
        let d = deployment(
            json!([{"name": "CODER_OIDC_SCOPES", "value": "openid"}]),
            owned_by("kubectl-edit", "Update"),
        );
        // The operator had set the entries (its status recorded them): the hand edit is drift.
        let recorded = CoderStatus {
            scopes: Some("openid,profile,email,groups".into()),
            auth_url_params: None,
        };
        let p = plan_with(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
            Some(&recorded),
        );
        let CoderStep::Apply {
            force,
            restoring_from,
            ..
        } = &p.coder
        else {
            panic!()
        };
        assert!(force);
        assert_eq!(restoring_from, &["kubectl-edit".to_string()]);
    }

    #[test]
    fn first_configuration_takes_over_a_created_entry_without_calling_it_drift() {
        // kubectl create wrote the entry with the Deployment; nothing was recorded yet.
        let d = deployment(
            json!([{"name": "CODER_OIDC_SCOPES", "value": "openid"}]),
            owned_by("kubectl-create", "Update"),
        );
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        let CoderStep::Apply {
            force,
            restoring_from,
            ..
        } = &p.coder
        else {
            panic!("{:?}", p.coder)
        };
        assert!(force, "the creator's ownership is taken over");
        assert!(restoring_from.is_empty(), "{restoring_from:?}");
        // After a spec change the live value is the one recorded: no drift either.
        let recorded = CoderStatus {
            scopes: Some("openid".into()),
            auth_url_params: None,
        };
        let p = plan_with(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
            Some(&recorded),
        );
        let CoderStep::Apply { restoring_from, .. } = &p.coder else {
            panic!()
        };
        assert!(restoring_from.is_empty());
    }

    #[test]
    fn unknown_update_managers_are_owners_not_drift() {
        // Terraform's Kubernetes provider, kapp, Fleet, a CI `kubectl replace`: never overwritten
        // silently.
        for manager in [
            "Terraform",
            "kapp",
            "fleetagent",
            "kubectl-replace",
            "my-ci-bot",
        ] {
            let d = deployment(
                json!([{"name": "CODER_OIDC_SCOPES", "value": "openid"}]),
                owned_by(manager, "Update"),
            );
            let p = plan(
                &spec(json!({})),
                "coder",
                IdpView::Seen(&google()),
                Some(&d),
            );
            let CoderStep::None(v) = &p.coder else {
                panic!("{manager}: {:?}", p.coder)
            };
            assert_eq!(v.reason, Reason::FieldConflict, "{manager}");
            assert!(v.message.contains(manager), "{}", v.message);
        }
        // A managedFields reset leaves `before-first-apply` owning everything: taken over.
        let d = deployment(
            json!([{"name": "CODER_OIDC_SCOPES", "value": "openid"}]),
            owned_by("before-first-apply", "Update"),
        );
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        assert!(matches!(p.coder, CoderStep::Apply { force: true, .. }));
    }

    #[test]
    fn params_equal_in_meaning_are_not_rewritten_even_when_helm_owns_them() {
        // Coder's documented default spelling, keys in another order, owned by Helm.
        let env = json!([
            {"name": "CODER_OIDC_SCOPES", "value": "openid,profile,email,offline_access,groups"},
            {"name": "CODER_OIDC_AUTH_URL_PARAMS", "value": "{ \"hd\": \"example.com\", \"access_type\": \"offline\" }"},
        ]);
        let helm = json!([{"manager": "helm", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"coder\"}": {"f:env": {
                "k:{\"name\":\"CODER_OIDC_SCOPES\"}": {"f:value": {}},
                "k:{\"name\":\"CODER_OIDC_AUTH_URL_PARAMS\"}": {"f:value": {}}}}}}}}}}]);
        let d = deployment(env, helm);
        let mut o = google();
        o.coder = crate::providers::CoderNeeds {
            add_scopes: vec!["offline_access".into()],
            ..Default::default()
        };
        let p = plan(&spec(json!({})), "coder", IdpView::Seen(&o), Some(&d));
        let CoderStep::None(v) = &p.coder else {
            panic!("{:?}", p.coder)
        };
        assert_eq!(v.state, State::Done, "{}", v.message);
        assert_eq!(
            p.coder_values.as_ref().map(|v| v.1.as_str()),
            Some(r#"{ "hd": "example.com", "access_type": "offline" }"#),
            "the live value is what Coder has"
        );
        assert!(p.coder_changes.is_empty());
    }

    #[test]
    fn coder_flags_and_config_files_stall_naming_them() {
        let mut d = deployment(json!([]), json!([]));
        let c = &mut d
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0];
        c.args = Some(vec!["server".into(), "--oidc-scopes=openid,email".into()]);
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        let CoderStep::None(v) = &p.coder else {
            panic!("{:?}", p.coder)
        };
        assert_eq!(v.reason, Reason::CoderFlagOverride);
        assert!(v.message.contains("--oidc-scopes"), "{}", v.message);

        let mut d = deployment(
            json!([{"name": "CODER_CONFIG_PATH", "value": "/etc/coder/config.yaml"},
                   {"name": "CODER_OIDC_SCOPES", "value": "openid"}]),
            json!([]),
        );
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        let CoderStep::None(v) = &p.coder else {
            panic!("{:?}", p.coder)
        };
        assert_eq!(v.reason, Reason::CoderConfigFile);
        assert!(
            v.message.contains("/etc/coder/config.yaml"),
            "{}",
            v.message
        );
        assert!(
            v.message.contains("CODER_OIDC_AUTH_URL_PARAMS"),
            "{}",
            v.message
        );
        // With both variables in env, env already wins over the file: merged as usual.
        let c = &mut d
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0];
        c.env.as_mut().unwrap().push(
            serde_json::from_value(json!({"name": "CODER_OIDC_AUTH_URL_PARAMS", "value": "{}"}))
                .unwrap(),
        );
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        assert!(matches!(p.coder, CoderStep::Apply { .. }), "{:?}", p.coder);
    }

    #[test]
    fn offline_access_off_is_removed_and_required_params_cannot_be_overridden() {
        let d = deployment(
            json!([{"name": "CODER_OIDC_SCOPES", "value": "openid,offline_access,groups"}]),
            json!([]),
        );
        let mut o = google();
        o.coder = crate::providers::CoderNeeds::default();
        let p = plan(
            &spec(json!({"refreshTokens": {"offlineAccess": false}})),
            "coder",
            IdpView::Seen(&o),
            Some(&d),
        );
        let CoderStep::Apply { scopes, .. } = &p.coder else {
            panic!("{:?}", p.coder)
        };
        assert_eq!(scopes, "openid,groups");
        // Listed in spec.coder.scopes, it stays.
        let p = plan(
            &spec(
                json!({"refreshTokens": {"offlineAccess": false}, "coder": {"scopes": ["offline_access"]}}),
            ),
            "coder",
            IdpView::Seen(&o),
            Some(&d),
        );
        let CoderStep::Apply { scopes, .. } = &p.coder else {
            panic!("{:?}", p.coder)
        };
        assert_eq!(scopes, "openid,offline_access,groups");

        // Google needs access_type=offline: a policy asking for online stalls and says why.
        let p = plan(
            &spec(json!({"coder": {"authURLParams": {"access_type": "online"}}})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        let CoderStep::None(v) = &p.coder else {
            panic!("{:?}", p.coder)
        };
        assert_eq!(v.reason, Reason::ConflictingAuthURLParams);
        assert!(v.message.contains("access_type"), "{}", v.message);

        // prompt combines: the user's select_account stays, consent is added.
        let d = deployment(
            json!([{"name": "CODER_OIDC_AUTH_URL_PARAMS", "value": "{\"prompt\":\"select_account\"}"}]),
            json!([]),
        );
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        let CoderStep::Apply { params, .. } = &p.coder else {
            panic!("{:?}", p.coder)
        };
        assert!(
            params.contains(r#""prompt":"select_account consent""#),
            "{params}"
        );
    }

    #[test]
    fn value_from_missing_container_and_deployment_stall() {
        let d = deployment(
            json!([{"name": "CODER_OIDC_AUTH_URL_PARAMS", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]),
            json!([]),
        );
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        assert!(matches!(&p.coder, CoderStep::None(v) if v.reason == Reason::EnvFromReference));
        let p = plan(
            &spec(json!({"coder": {"container": "web"}})),
            "coder",
            IdpView::Seen(&google()),
            Some(&d),
        );
        assert!(
            matches!(&p.coder, CoderStep::None(v) if v.reason == Reason::ContainerNotFound && v.message.contains("it has: coder"))
        );
        let p = plan(&spec(json!({})), "coder", IdpView::Seen(&google()), None);
        assert!(matches!(&p.coder, CoderStep::None(v) if v.reason == Reason::DeploymentNotFound));
    }

    fn keys(source: coder::EnvSource, keys: &[&str]) -> SourceRead {
        SourceRead {
            source,
            found: SourceFound::Keys(keys.iter().map(|k| k.to_string()).collect()),
        }
    }

    fn source(kind: SourceKind, name: &str, prefix: &str) -> coder::EnvSource {
        coder::EnvSource {
            kind,
            name: name.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn a_variable_set_through_env_from_is_never_overridden() {
        let d = deployment(json!([]), json!([]));
        let plan_with = |reads: &[SourceRead]| {
            plan(
                &spec(json!({})),
                "coder",
                IdpView::Seen(&google()),
                DeploymentView::Found(&d, reads),
            )
            .coder
        };
        // Sources that do not set our variables change nothing.
        let unrelated = [
            keys(
                source(SourceKind::Secret, "db", ""),
                &["CODER_PG_CONNECTION_URL"],
            ),
            keys(
                source(SourceKind::ConfigMap, "other", "X_"),
                &["CODER_OIDC_SCOPES"],
            ),
            SourceRead {
                source: source(SourceKind::ConfigMap, "gone", ""),
                found: SourceFound::Missing,
            },
        ];
        assert!(matches!(plan_with(&unrelated), CoderStep::Apply { .. }));
        // A ConfigMap setting CODER_OIDC_SCOPES (here through its prefix): stall, name it.
        let mut reads = unrelated.to_vec();
        reads.push(keys(
            source(SourceKind::ConfigMap, "coder-env", "CODER_"),
            &["OIDC_SCOPES"],
        ));
        let CoderStep::None(v) = plan_with(&reads) else {
            panic!("nothing is written")
        };
        assert_eq!(v.state, State::Stalled);
        assert_eq!(v.reason, Reason::EnvFromReference);
        assert!(
            v.message.starts_with(
                r#"CODER_OIDC_SCOPES in container "coder" comes from ConfigMap "coder-env" (prefix "CODER_") through envFrom"#
            ),
            "{}",
            v.message
        );
        // With two sources setting it, the last one is the one Kubernetes uses.
        reads.push(keys(
            source(SourceKind::Secret, "coder-oidc", ""),
            &["CODER_OIDC_AUTH_URL_PARAMS", "CODER_OIDC_SCOPES"],
        ));
        let CoderStep::None(v) = plan_with(&reads) else {
            panic!("nothing is written")
        };
        assert!(
            v.message.contains(r#"comes from Secret "coder-oidc""#),
            "{}",
            v.message
        );
        // An entry in env overrides envFrom: the operator merges the entry as usual.
        let d = deployment(
            json!([{"name": "CODER_OIDC_SCOPES", "value": "openid"}, {"name": "CODER_OIDC_AUTH_URL_PARAMS", "value": "{}"}]),
            json!([]),
        );
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            DeploymentView::Found(&d, &reads),
        );
        assert!(matches!(p.coder, CoderStep::Apply { .. }));
    }

    #[test]
    fn an_env_from_source_the_operator_may_not_read_is_a_forbidden_stall() {
        let d = deployment(json!([]), json!([]));
        let reads = [SourceRead {
            source: source(SourceKind::ConfigMap, "coder-env", ""),
            found: SourceFound::Forbidden("configmaps \"coder-env\" is forbidden".into()),
        }];
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            DeploymentView::Found(&d, &reads),
        );
        let CoderStep::None(v) = p.coder else {
            panic!("nothing is written")
        };
        assert_eq!((v.state, v.reason), (State::Stalled, Reason::Forbidden));
        assert!(
            v.message.contains(
                r#"read ConfigMap "coder-env", which container "coder" loads with envFrom"#
            ) && v
                .message
                .contains(r#"get on configmaps in namespace "coder""#),
            "{}",
            v.message
        );
    }

    #[test]
    fn observe_mode_reports_and_writes_nothing() {
        let d = deployment(json!([]), json!([]));
        let mut o = google();
        o.changes.push(Change::new(
            "Keycloak client",
            "use.refresh.tokens",
            "false",
            "true",
            "refresh tokens",
        ));
        let p = plan(
            &spec(json!({"managementPolicy": "Observe"})),
            "coder",
            IdpView::Seen(&o),
            Some(&d),
        );
        assert!(
            matches!(&p.idp, IdpStep::None(v) if v.state == State::Differs && v.message.contains("use.refresh.tokens: false -> true"))
        );
        assert!(
            matches!(&p.coder, CoderStep::None(v) if v.state == State::Differs && v.message.contains("CODER_OIDC_SCOPES unset -> openid,profile,email,groups"))
        );
    }

    #[test]
    fn coder_waits_for_the_provider() {
        let d = deployment(json!([]), json!([]));
        let err = ProviderError::Unreachable {
            provider: ProviderKind::Keycloak,
            operation: "read client".into(),
            detail: "timeout".into(),
        };
        let p = plan(&spec(json!({})), "coder", IdpView::Failed(&err), Some(&d));
        assert!(
            matches!(&p.idp, IdpStep::None(v) if v.state == State::Progressing && v.reason == Reason::Unreachable)
        );
        assert!(
            matches!(&p.coder, CoderStep::None(v) if v.reason == Reason::WaitingForIdentityProvider)
        );
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::SecretNotFound("kc"),
            Some(&d),
        );
        assert!(
            matches!(&p.idp, IdpStep::None(v) if v.state == State::Stalled && v.reason == Reason::SecretNotFound)
        );
    }

    #[test]
    fn blocking_finding_stalls_the_provider() {
        let mut o = google();
        o.findings.push(Finding {
            reason: "ClientSecretExpired",
            message: "all secrets expired".into(),
            blocking: true,
            expires_at: None,
        });
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&o),
            Some(&deployment(json!([]), json!([]))),
        );
        assert!(matches!(&p.idp, IdpStep::None(v) if v.reason.as_str() == "ClientSecretExpired"));
        assert!(
            matches!(&p.coder, CoderStep::None(v) if v.reason == Reason::WaitingForIdentityProvider)
        );
    }

    #[test]
    fn rbac_denials_stall_with_what_to_grant() {
        let p = plan(
            &spec(json!({})),
            "coder",
            IdpView::Seen(&google()),
            DeploymentView::Forbidden("deployments.apps \"coder\" is forbidden"),
        );
        let CoderStep::None(v) = &p.coder else {
            panic!()
        };
        assert_eq!((v.state, v.reason), (State::Stalled, Reason::Forbidden));
        assert!(
            v.message.contains("read Deployment \"coder\"")
                && v.message
                    .contains("patch on deployments in namespace \"coder\""),
            "{}",
            v.message
        );
        let kc = spec(
            json!({"provider": {"google": null, "keycloak": {"url": "https://kc", "realm": "r", "clientId": "c", "credentialsSecret": "kc-admin"}}}),
        );
        let p = plan(
            &kc,
            "coder",
            IdpView::SecretForbidden("secrets \"kc-admin\" is forbidden"),
            None,
        );
        let IdpStep::None(v) = &p.idp else { panic!() };
        assert_eq!((v.state, v.reason), (State::Stalled, Reason::Forbidden));
        assert!(
            v.message.contains("Secret \"kc-admin\"") && v.message.contains("on secrets"),
            "{}",
            v.message
        );
    }
}
