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
use crate::providers::{
    self, Credentials, DesiredSettings, IdentityProvider, IdpPlan, ProviderError,
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
            let data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
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
        Ok(plan) => {
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
