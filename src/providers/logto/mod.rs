//! Logto (self-hosted OSS or a Logto Cloud tenant) through its Management API.
//!
//! # Authentication
//! The policy's Secret holds `client-id` + `client-secret` of a *machine-to-machine* app with a
//! role that grants the built-in "Logto Management API" permission `all` (optionally `ca.crt`).
//! The operator gets a client-credentials token from `{endpoint}/oidc/token` (HTTP Basic, as
//! Logto's guide shows) with `resource` = the tenant's Management API indicator and
//! `scope=all`. The indicator is `https://default.logto.app/api` for self-hosted Logto and
//! `https://{tenantId}.logto.app/api` for a Cloud tenant: the tenant id is taken from an endpoint
//! `https://{tenantId}.logto.app`, or from `spec.provider.logto.tenantId` (a Cloud tenant behind
//! a custom domain), else `default`. The token is cached in [`ProviderDeps::tokens`] (keyed on the
//! endpoint, indicator, Secret name, `resourceVersion` and a hash of the credentials); a 401
//! drops it and retries once.
//!
//! # What is configured
//! Coder's application is read with `GET /api/applications/{id}` (never created or deleted) and
//! updated with `PATCH /api/applications/{id}` sending only `customClientMetadata`. Logto's
//! PATCH replaces a JSONB object wholesale, so that object is sent whole, as read right before
//! the write, with only the owned keys changed (everything else, `corsAllowedOrigins`,
//! `idTokenTtl`, unknown keys…, is kept).
//!
//! | policy (`spec.refreshTokens`) | Logto application |
//! |---|---|
//! | always | the app must be Traditional web (or SPA/Native, with a warning); a machine-to-machine, Protected or SAML app is `Unsupported` (Logto never issues it refresh tokens) |
//! | `offlineAccess: true` | Coder requests `offline_access` with `prompt=consent` (Logto drops `offline_access` otherwise); `alwaysIssueRefreshToken: true` on web apps |
//! | `lifetime` | `refreshTokenTtlInDays`: whole days from 1 to 180, else `Unsupported` (never rounded) |
//! | `rotation` | `rotateRefreshToken` (`Rotate` → true, `Reuse` → false) |
//! | `idleTimeout`, `accessTokenLifetime` | `Unsupported`: Logto has no idle timeout, and access-token lifetimes are per API resource |

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::http::{self, BearerAnswer as Answer};
use super::{
    Applied, Credentials, DesiredSettings, IdentityProvider, IdpPlan, ProviderDeps, ProviderError,
    ProviderKind, Snapshot as AnySnapshot, missing_credentials,
};
use crate::crd::LogtoSpec;

mod errors;
pub mod model;

pub use errors::logto_message;
pub use model::{Plan, Snapshot};

const KIND: ProviderKind = ProviderKind::Logto;

/// The tenant id of self-hosted Logto.
pub const OSS_TENANT: &str = "default";

/// The Management API resource indicator of a tenant.
pub fn management_indicator(tenant: &str) -> String {
    format!("https://{tenant}.logto.app/api")
}

/// Builds the provider for a policy.
pub fn connect(
    spec: &LogtoSpec,
    credentials: Option<Credentials>,
    deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    let credentials = credentials.ok_or_else(|| missing_credentials(KIND))?;
    let endpoint = normalize_endpoint(&spec.endpoint)?;
    let tenant = match &spec.tenant_id {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => tenant_of(&endpoint),
    };
    let v = credentials.require(KIND, &["client-id", "client-secret"])?;
    let (client_id, client_secret) = (v[0].clone(), v[1].clone());
    let client = deps.http.client_for(KIND, &credentials)?;
    let indicator = management_indicator(&tenant);
    let token_key = format!(
        "logto|{endpoint}|{indicator}|{}|{}|{}",
        credentials.secret_name,
        credentials.version,
        http::credentials_fingerprint(&[&client_id, &client_secret])
    );
    Ok(Arc::new(Logto {
        endpoint,
        indicator,
        app_id: spec.application_id.clone(),
        secret_name: credentials.secret_name.clone(),
        client_id,
        client_secret,
        http: client,
        deps: deps.clone(),
        token_key,
    }))
}

/// The objects a policy makes the operator write (see [`super::targets`]): the application.
pub fn targets(spec: &LogtoSpec) -> Vec<String> {
    let endpoint = normalize_endpoint(&spec.endpoint).unwrap_or_else(|_| spec.endpoint.clone());
    vec![super::target_key(
        KIND,
        &endpoint,
        ["applications", spec.application_id.as_str()],
    )]
}

/// The endpoint without a trailing `/`, `/api` or `/oidc`.
fn normalize_endpoint(raw: &str) -> Result<String, ProviderError> {
    let mut u = raw.trim().trim_end_matches('/').to_string();
    for suffix in ["/api", "/oidc"] {
        if let Some(s) = u.strip_suffix(suffix) {
            u = s.trim_end_matches('/').to_string();
        }
    }
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(host)
            if !host.is_empty() && !host.starts_with('/') && reqwest::Url::parse(&u).is_ok() =>
        {
            Ok(u)
        }
        _ => Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "spec.provider.logto.endpoint {raw:?} is not an http(s) URL such as https://<tenant-id>.logto.app or \
                 https://auth.example.com"
            ),
        }),
    }
}

/// `{tenant}` of `https://{tenant}.logto.app`, else `default` (self-hosted).
pub fn tenant_of(endpoint: &str) -> String {
    reqwest::Url::parse(endpoint)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_ascii_lowercase();
            let t = host.strip_suffix(".logto.app")?.to_string();
            (!t.is_empty() && !t.contains('.')).then_some(t)
        })
        .unwrap_or_else(|| OSS_TENANT.to_string())
}

/// One kind of Management API call, for metrics and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    ReadApp,
    PatchApp,
}

impl Op {
    fn metric(self) -> &'static str {
        match self {
            Op::ReadApp => "get_application",
            Op::PatchApp => "update_application",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Op::ReadApp => "read the application",
            Op::PatchApp => "update the application",
        }
    }
}

/// The Logto provider for one policy.
pub struct Logto {
    endpoint: String,
    indicator: String,
    app_id: String,
    secret_name: String,
    client_id: SecretString,
    client_secret: SecretString,
    http: reqwest::Client,
    deps: ProviderDeps,
    token_key: String,
}

impl fmt::Debug for Logto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logto")
            .field("endpoint", &self.endpoint)
            .field("indicator", &self.indicator)
            .field("app_id", &self.app_id)
            .field("secret_name", &self.secret_name)
            .finish_non_exhaustive()
    }
}

/// The writes of a Logto plan.
struct Writes {
    plan: Plan,
    /// `Logto application "name" (id)`.
    target: String,
}

impl Logto {
    fn app_url(&self) -> String {
        let mut url = reqwest::Url::parse(&format!("{}/api/applications", self.endpoint))
            .expect("the endpoint was checked");
        if let Ok(mut p) = url.path_segments_mut() {
            p.push(&self.app_id);
        }
        url.to_string()
    }

    async fn token(&self, force: bool) -> Result<SecretString, ProviderError> {
        if !force && let Some(t) = self.deps.tokens.get(&self.token_key) {
            return Ok(t);
        }
        let (id, secret) = (
            self.client_id.expose_secret(),
            self.client_secret.expose_secret(),
        );
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("resource", self.indicator.as_str()),
            ("scope", "all"),
        ];
        let mut req = self.http.post(format!("{}/oidc/token", self.endpoint));
        // HTTP Basic, form-URL-encoded; a credential node-oidc-provider would refuse there goes
        // in the body, which it accepts from every client whatever its registered method.
        if http::basic_safe_credential(id) && http::basic_safe_credential(secret) {
            req = http::client_secret_basic(req, id, secret);
        } else {
            form.extend([("client_id", id), ("client_secret", secret)]);
        }
        let req = req.form(&form);
        match http::request_token(
            &self.deps,
            KIND,
            "get a Logto Management API token",
            req,
            &self.token_key,
            Duration::from_secs(600),
        )
        .await?
        {
            http::TokenAnswer::Token(token) => Ok(token),
            http::TokenAnswer::Refused {
                status,
                headers,
                body,
            } => Err(self.token_error(status, &headers, &body)),
        }
    }

    async fn call(
        &self,
        op: Op,
        method: Method,
        body: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        let url = self.app_url();
        let call = http::BearerCall {
            metric: op.metric(),
            what: op.what(),
            method,
            url: &url,
            body,
        };
        let token = |force| self.token(force);
        match http::bearer_call(&self.deps, &self.http, KIND, &self.token_key, token, call).await? {
            Answer::Ok(Some(v)) if v.get("id").and_then(Value::as_str) == Some(&self.app_id) => {
                Ok(v)
            }
            Answer::Ok(_) => Err(ProviderError::Protocol {
                provider: KIND,
                operation: op.what().into(),
                detail: format!(
                    "the answer is not application {}; is spec.provider.logto.endpoint the Logto endpoint?",
                    self.app_id
                ),
            }),
            Answer::Status(s, h, t) => Err(self.error(op, s, &h, &t)),
        }
    }

    async fn read_app(&self) -> Result<Snapshot, ProviderError> {
        Ok(Snapshot {
            app: self.call(Op::ReadApp, Method::GET, None).await?,
        })
    }
}

#[async_trait]
impl IdentityProvider for Logto {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    fn check(&self, desired: &DesiredSettings) -> Result<(), ProviderError> {
        model::check_desired(desired)
    }

    async fn observe(&self, desired: &DesiredSettings) -> Result<AnySnapshot, ProviderError> {
        model::check_desired(desired)?;
        Ok(AnySnapshot::new(KIND, self.read_app().await?))
    }

    fn plan(
        &self,
        snapshot: &AnySnapshot,
        desired: &DesiredSettings,
    ) -> Result<IdpPlan, ProviderError> {
        let snap: &Snapshot = snapshot.get()?;
        let p = model::plan(snap, desired)?;
        let observation = p.observation.clone();
        let writes = Writes {
            plan: p,
            target: model::target(&snap.app),
        };
        Ok(IdpPlan::new(KIND, desired, observation, writes))
    }

    async fn apply(&self, todo: &IdpPlan) -> Result<Applied, ProviderError> {
        if todo.is_empty() {
            return Ok(Applied::unchanged(todo));
        }
        let Writes { plan: p, target } = todo.writes()?;
        let desired = todo.desired();
        // Logto has no ETag and the PATCH replaces customClientMetadata whole: build the body
        // from a read taken right now, so that a key someone changed since `observe` is sent back
        // as changed, and write only if the owned keys still need exactly the planned changes.
        let fresh = model::plan(&self.read_app().await?, desired)?;
        let body = match fresh.body {
            Some(body) if fresh.observation.changes == p.observation.changes => body,
            _ => {
                return Err(ProviderError::Protocol {
                    provider: KIND,
                    operation: Op::PatchApp.what().into(),
                    detail: format!(
                        "application {} was changed by someone else since it was read, so the planned update was not \
                         written; the next pass plans again",
                        self.app_id
                    ),
                });
            }
        };
        self.call(Op::PatchApp, Method::PATCH, Some(&body)).await?;
        let actions = vec![format!(
            "updated {target}: {}",
            p.observation
                .changes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )];
        let after = model::plan(&self.read_app().await?, desired)?;
        if !after.observation.changes.is_empty() {
            return Err(ProviderError::NotPersisted {
                provider: KIND,
                detail: after
                    .observation
                    .changes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        Ok(Applied {
            observation: after.observation,
            actions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_and_tenant() {
        for u in [
            "https://acme1.logto.app",
            "https://acme1.logto.app/",
            "https://acme1.logto.app/api",
            "https://acme1.logto.app/oidc/",
        ] {
            let e = normalize_endpoint(u).unwrap();
            assert_eq!(e, "https://acme1.logto.app");
            assert_eq!(tenant_of(&e), "acme1");
        }
        assert_eq!(tenant_of("https://auth.example.com"), "default");
        assert_eq!(tenant_of("http://127.0.0.1:3001"), "default");
        assert_eq!(
            management_indicator(&tenant_of("https://auth.example.com")),
            "https://default.logto.app/api"
        );
        assert!(normalize_endpoint("auth.example.com").is_err());
    }
}
