//! Observe: every read a reconcile needs, and nothing else. Secrets, ConfigMaps and the
//! Deployment are read only from the policy's own namespace.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

use super::Context;
use super::memo::MemoKey;
use crate::coder::{self, EnvSource, SourceFound, SourceKind, SourceRead};
use crate::crd::OidcRefreshPolicy;
use crate::error::{Error, Result};
use crate::providers::http::{CREDENTIALS_LABEL, Redactor};
use crate::providers::{
    self, Credentials, DesiredSettings, IdentityProvider, IdpPlan, ProviderError, ProviderKind,
};

/// What a reconcile saw.
pub struct Observed {
    /// The provider and what it reported, or why it could not be read.
    pub idp: IdpObserved,
    /// The Coder Deployment, if it exists.
    pub deployment: Option<Deployment>,
    /// The API server refused to let the operator read the Deployment (its message).
    pub deployment_forbidden: Option<String>,
    /// The Coder container's `envFrom` sources, read only while one of the two variables is
    /// absent from its `env` (they could be setting it).
    pub env_from: Vec<SourceRead>,
}

/// The identity-provider side of [`Observed`].
pub enum IdpObserved {
    /// The credentials Secret does not exist.
    SecretNotFound(String),
    /// The operator may not read the credentials Secret (the API server's message).
    SecretForbidden(String),
    /// The provider could not be built, checked or read.
    Failed(ProviderError),
    /// Read and planned (or a clean plan of this pass's generation and credentials was
    /// remembered).
    Seen {
        /// The connected provider (used by `act`).
        provider: Arc<dyn IdentityProvider>,
        /// Its plan: what differs, and the writes that `act` carries out in `Enforce` mode.
        plan: Box<IdpPlan>,
        /// `resourceVersion` of the credentials Secret, if the provider has one.
        secret_version: Option<String>,
    },
}

/// Reads the Secret, the provider and the Deployment.
pub async fn observe(
    policy: &OidcRefreshPolicy,
    desired: &DesiredSettings,
    memo: &MemoKey,
    ctx: &Context,
) -> Result<Observed> {
    let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
    let idp = observe_idp(policy, ns, desired, memo, ctx).await?;
    if !matches!(idp, IdpObserved::Seen { .. }) {
        ctx.memos.forget(memo);
    }
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let (deployment, deployment_forbidden) =
        match deployments.get_opt(&policy.spec.coder.deployment).await {
            Ok(d) => (d, None),
            Err(kube::Error::Api(s)) if s.code == 403 => (None, Some(s.message)),
            Err(e) => {
                return Err(Error::kube(
                    format!("read Deployment {ns}/{}", policy.spec.coder.deployment),
                    e,
                ));
            }
        };
    let mut env_from = Vec::new();
    if let Some(d) = &deployment {
        for source in coder::env_sources(d, &policy.spec.coder.container) {
            env_from.push(read_source(source, ns, ctx).await?);
        }
    }
    Ok(Observed {
        idp,
        deployment,
        deployment_forbidden,
        env_from,
    })
}

/// The key names of an `envFrom` source (its values are dropped at once).
async fn read_source(source: EnvSource, ns: &str, ctx: &Context) -> Result<SourceRead> {
    let read = match source.kind {
        SourceKind::ConfigMap => Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
            .get_opt(&source.name)
            .await
            .map(|c| {
                c.map(|c| {
                    let data = c.data.unwrap_or_default().into_keys();
                    data.chain(c.binary_data.unwrap_or_default().into_keys())
                        .collect()
                })
            }),
        SourceKind::Secret => Api::<Secret>::namespaced(ctx.client.clone(), ns)
            .get_opt(&source.name)
            .await
            .map(|s| s.map(|s| s.data.unwrap_or_default().into_keys().collect())),
    };
    let found = match read {
        Ok(Some(keys)) => SourceFound::Keys(keys),
        Ok(None) => SourceFound::Missing,
        Err(kube::Error::Api(s)) if s.code == 403 => SourceFound::Forbidden(s.message),
        Err(e) => {
            return Err(Error::kube(
                format!("read {source} in namespace {ns} (envFrom of the Coder container)"),
                e,
            ));
        }
    };
    Ok(SourceRead { source, found })
}

async fn observe_idp(
    policy: &OidcRefreshPolicy,
    ns: &str,
    desired: &DesiredSettings,
    memo: &MemoKey,
    ctx: &Context,
) -> Result<IdpObserved> {
    if let Err(e) = check_targets(policy, ctx) {
        return Ok(IdpObserved::Failed(e));
    }
    let mut redactor = Redactor::default();
    let observed = observe_idp_with(policy, ns, desired, memo, ctx, &mut redactor).await?;
    Ok(match observed {
        IdpObserved::Failed(e) => IdpObserved::Failed(redact_error(e, &redactor)),
        other => other,
    })
}

/// The URLs a policy makes the operator call, checked against the operator's tenant policy
/// before anything is read (the same checks run again on every request, and on every address a
/// name resolves to).
fn check_targets(policy: &OidcRefreshPolicy, ctx: &Context) -> Result<(), ProviderError> {
    let p = &policy.spec.provider;
    let mut urls: Vec<(ProviderKind, &str, &str)> = Vec::new();
    if let Some(k) = &p.keycloak {
        urls.push((ProviderKind::Keycloak, "spec.provider.keycloak.url", &k.url));
    }
    if let Some(pf) = &p.ping_federate {
        urls.push((
            ProviderKind::PingFederate,
            "spec.provider.pingFederate.adminUrl",
            &pf.admin_url,
        ));
    }
    if let Some(l) = &p.logto {
        urls.push((
            ProviderKind::Logto,
            "spec.provider.logto.endpoint",
            &l.endpoint,
        ));
    }
    if let Some(o) = &p.okta {
        urls.push((ProviderKind::Okta, "spec.provider.okta.orgUrl", &o.org_url));
    }
    if let Some(api) = p.duende.as_ref().and_then(|d| d.admin_api.as_ref()) {
        urls.push((
            ProviderKind::Duende,
            "spec.provider.duende.adminApi.url",
            &api.url,
        ));
        urls.push((
            ProviderKind::Duende,
            "spec.provider.duende.adminApi.authority",
            &api.authority,
        ));
    }
    if let Some(e) = &p.entra_id {
        for (field, value) in [
            ("spec.provider.entraId.authorityHost", &e.authority_host),
            ("spec.provider.entraId.graphEndpoint", &e.graph_endpoint),
        ] {
            if let Some(v) = value {
                urls.push((ProviderKind::EntraId, field, v));
            }
        }
    }
    let tenant = ctx.providers.http.policy();
    for (provider, field, raw) in urls {
        let unsupported = |detail: String| ProviderError::Unsupported { provider, detail };
        let url = reqwest::Url::parse(raw.trim())
            .map_err(|e| unsupported(format!("{field} is not a URL: {e}")))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(unsupported(format!(
                "{field} has a query or fragment (?… or #…); give the base URL only"
            )));
        }
        tenant
            .check_url(&url)
            .map_err(|why| unsupported(format!("{field}: {why}")))?;
    }
    Ok(())
}

/// `e` with every credential value blanked out of its texts (a provider may have put an answer
/// that echoes the request into them).
fn redact_error(e: ProviderError, r: &Redactor) -> ProviderError {
    if r.is_empty() {
        return e;
    }
    let x = |s: String| r.redact(&s);
    match e {
        ProviderError::AuthenticationFailed { provider, detail } => {
            ProviderError::AuthenticationFailed {
                provider,
                detail: x(detail),
            }
        }
        ProviderError::Forbidden {
            provider,
            operation,
            detail,
        } => ProviderError::Forbidden {
            provider,
            operation: x(operation),
            detail: x(detail),
        },
        ProviderError::ClientNotFound {
            provider,
            what,
            detail,
        } => ProviderError::ClientNotFound {
            provider,
            what: x(what),
            detail: x(detail),
        },
        ProviderError::Unreachable {
            provider,
            operation,
            detail,
        } => ProviderError::Unreachable {
            provider,
            operation: x(operation),
            detail: x(detail),
        },
        ProviderError::Rejected {
            provider,
            operation,
            detail,
        } => ProviderError::Rejected {
            provider,
            operation: x(operation),
            detail: x(detail),
        },
        ProviderError::Unsupported { provider, detail } => ProviderError::Unsupported {
            provider,
            detail: x(detail),
        },
        ProviderError::InvalidSecret { provider, detail } => ProviderError::InvalidSecret {
            provider,
            detail: x(detail),
        },
        ProviderError::Protocol {
            provider,
            operation,
            detail,
        } => ProviderError::Protocol {
            provider,
            operation: x(operation),
            detail: x(detail),
        },
        ProviderError::NotPersisted { provider, detail } => ProviderError::NotPersisted {
            provider,
            detail: x(detail),
        },
        other => other,
    }
}

/// The provider kind a policy names (for messages about its Secret).
fn kind_of(policy: &OidcRefreshPolicy) -> ProviderKind {
    let p = &policy.spec.provider;
    if p.ping_federate.is_some() {
        ProviderKind::PingFederate
    } else if p.entra_id.is_some() {
        ProviderKind::EntraId
    } else if p.keycloak.is_some() {
        ProviderKind::Keycloak
    } else if p.logto.is_some() {
        ProviderKind::Logto
    } else if p.okta.is_some() {
        ProviderKind::Okta
    } else if p.duende.is_some() {
        ProviderKind::Duende
    } else {
        ProviderKind::Google
    }
}

async fn observe_idp_with(
    policy: &OidcRefreshPolicy,
    ns: &str,
    desired: &DesiredSettings,
    memo: &MemoKey,
    ctx: &Context,
    redactor: &mut Redactor,
) -> Result<IdpObserved> {
    let credentials = match policy.spec.provider.credentials_secret() {
        None => None,
        Some(name) => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
            let secret = match secrets.get_opt(name).await {
                Ok(s) => s,
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    return Ok(IdpObserved::SecretForbidden(s.message));
                }
                Err(e) => return Err(Error::kube(format!("read Secret {ns}/{name}"), e)),
            };
            let Some(secret) = secret else {
                return Ok(IdpObserved::SecretNotFound(name.to_string()));
            };
            let opted_in = secret
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CREDENTIALS_LABEL))
                .is_some_and(|v| v == "true");
            if ctx.providers.http.policy().require_credentials_label && !opted_in {
                // The owner of a Secret decides whether it may be sent to an identity provider;
                // being able to name it in a policy is not enough.
                return Ok(IdpObserved::Failed(ProviderError::InvalidSecret {
                    provider: kind_of(policy),
                    detail: format!(
                        "Secret {name:?} is not marked for use as identity-provider credentials: the operator sends a Secret's values to the policy's URL only when the Secret carries the label {CREDENTIALS_LABEL}: \"true\". If this Secret is meant for it, run: kubectl label secret -n {ns} {name} {CREDENTIALS_LABEL}=true"
                    ),
                }));
            }
            let data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            *redactor = Redactor::from_values(
                data.iter()
                    .filter(|(k, _)| k.as_str() != "ca.crt")
                    .filter_map(|(_, v)| std::str::from_utf8(v).ok())
                    .flat_map(|v| [v, v.trim()]),
            );
            Some(Credentials::new(
                name,
                secret.metadata.resource_version.as_deref().unwrap_or(""),
                data,
            ))
        }
    };
    let secret_version = credentials.as_ref().map(|c| c.version.clone());
    let provider = match providers::connect(&policy.spec.provider, credentials, &ctx.providers) {
        Ok(p) => p,
        Err(e) => return Ok(IdpObserved::Failed(e)),
    };
    if let Err(e) = provider.check(desired) {
        return Ok(IdpObserved::Failed(e));
    }
    if let Some(plan) = ctx.memos.get(memo, secret_version.as_deref()) {
        tracing::debug!("identity provider verified within the last half interval; not read again");
        return Ok(IdpObserved::Seen {
            provider,
            plan: Box::new(plan),
            secret_version,
        });
    }
    let plan = match provider.observe(desired).await {
        Ok(snapshot) => provider.plan(&snapshot, desired),
        Err(e) => Err(e),
    };
    Ok(match plan {
        Ok(mut plan) => {
            super::other_tools::check(provider.as_ref(), &mut plan, &ctx.client, &ctx.other_tools)
                .await;
            ctx.memos.remember(memo, secret_version.as_deref(), &plan);
            IdpObserved::Seen {
                provider,
                plan: Box::new(plan),
                secret_version,
            }
        }
        Err(e) => IdpObserved::Failed(e),
    })
}
