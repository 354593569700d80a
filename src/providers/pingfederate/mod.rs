//! PingFederate administrative API (`{adminUrl}/pf-admin-api/v1`, 11.x and 12.x).
//!
//! - HTTP Basic with the `username`/`password` of the policy's Secret, `X-XSRF-Header:
//!   PingFederate` on every call, an optional `ca.crt` for self-signed admin ports.
//! - The OAuth client is read with `GET /oauth/clients/{id}` and, when something differs, written
//!   back whole with `PUT` (full replacement): every field read is sent back, unknown ones
//!   included, `clientAuth.encryptedSecret` unchanged and never a plaintext `clientAuth.secret`
//!   (that would rotate the secret Coder uses).
//! - `offline_access` must exist at the authorization server: a missing common scope is added with
//!   `POST /oauth/authServerSettings/scopes/commonScopes` (additive, reported as an action).
//! - Lifetimes are client overrides (`persistentGrantExpiration*`, `persistentGrantIdleTimeout*`
//!   with `OVERRIDE_SERVER_DEFAULT`); rotation is `refreshRolling` (`ROLL`/`DONT_ROLL`).
//! - 12.1+: `requireOfflineAccessScopeToIssueRefreshTokens` and
//!   `offlineAccessRequireConsentPrompt` (client values, `SERVER_DEFAULT` resolved against the
//!   authorization server settings) decide whether Coder must send `prompt=consent`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::header::ACCEPT;
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::http;
use super::{
    Applied, Credentials, DesiredSettings, IdentityProvider, IdpPlan, ProviderDeps, ProviderError,
    ProviderKind, Snapshot as AnySnapshot,
};
use crate::crd::PingFederateSpec;

mod errors;
mod model;

use model::{Plan, ServerVersion, Snapshot, check_desired, encrypted_secret, plan};

/// The writes of a PingFederate plan, with the snapshot they were planned from.
struct Writes {
    snap: Snapshot,
    plan: Plan,
}

const KIND: ProviderKind = ProviderKind::PingFederate;
const OFFLINE_ACCESS: &str = "offline_access";
const API_PATH: &str = "/pf-admin-api/v1";

/// Builds the provider for a policy.
pub fn connect(
    spec: &PingFederateSpec,
    credentials: Option<Credentials>,
    deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    let creds = credentials.ok_or_else(|| super::missing_credentials(KIND))?;
    let values = creds.require(KIND, &["username", "password"])?;
    let (username, password) = (values[0].clone(), values[1].clone());
    let http = deps.http.client_for(KIND, &creds)?;
    let base = admin_base(&spec.admin_url)?;
    Ok(Arc::new(PingFederate {
        base,
        client_id: spec.client_id.clone(),
        secret_name: creds.secret_name.clone(),
        username,
        password,
        http,
        deps: deps.clone(),
    }))
}

/// `{adminUrl}/pf-admin-api/v1`, tolerating trailing slashes and an `adminUrl` that already ends
/// in `/pf-admin-api/v1`.
fn admin_base(admin_url: &str) -> Result<Url, ProviderError> {
    let trimmed = admin_url.trim().trim_end_matches('/');
    let trimmed = trimmed
        .strip_suffix(API_PATH)
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    let url = Url::parse(&format!("{trimmed}{API_PATH}")).map_err(|e| {
        ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "spec.provider.pingFederate.adminUrl {admin_url:?} is not a valid URL ({e}); use e.g. https://pf.example.com:9999"
            ),
        }
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "spec.provider.pingFederate.adminUrl {admin_url:?} must be an http(s) URL, e.g. https://pf.example.com:9999"
            ),
        });
    }
    Ok(url)
}

/// The PingFederate provider.
pub struct PingFederate {
    base: Url,
    client_id: String,
    secret_name: String,
    username: SecretString,
    password: SecretString,
    http: reqwest::Client,
    deps: ProviderDeps,
}

impl fmt::Debug for PingFederate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingFederate")
            .field("base", &self.base.as_str())
            .field("client_id", &self.client_id)
            .field("secret_name", &self.secret_name)
            .finish_non_exhaustive()
    }
}

impl PingFederate {
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().extend(segments);
        }
        url
    }

    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        let mut req = self
            .http
            .request(method, self.url(segments))
            .basic_auth(
                self.username.expose_secret(),
                Some(self.password.expose_secret()),
            )
            .header("X-XSRF-Header", "PingFederate")
            .header(ACCEPT, "application/json");
        if let Some(b) = body {
            // `.json` sets `Content-Type: application/json`.
            req = req.json(b);
        }
        let resp = http::send(&self.deps, KIND, operation, req).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| ProviderError::Unreachable {
            provider: KIND,
            operation: operation.to_string(),
            detail: http::describe_reqwest_error(&e),
        })?;
        if !status.is_success() {
            return Err(self.error(operation, status, &headers, &text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ProviderError::Protocol {
            provider: KIND,
            operation: operation.to_string(),
            detail: format!("the answer is not JSON ({e}); is adminUrl the admin port?"),
        })
    }

    /// The server's version, shared by every policy of the server for [`http::FACT_TTL`].
    async fn version(&self) -> Result<ServerVersion, ProviderError> {
        let key = format!("pingfederate-version|{}", self.base);
        if let Some(v) = self.deps.facts.get::<ServerVersion>(&key) {
            return Ok(v);
        }
        let body = self
            .call("get the server version", Method::GET, &["version"], None)
            .await?;
        let text = body["version"].as_str().unwrap_or_default();
        let v = ServerVersion::parse(text).ok_or_else(|| ProviderError::Protocol {
            provider: KIND,
            operation: "get the server version".into(),
            detail: format!("unrecognised version {:?}", http::truncate(text, 40)),
        })?;
        self.deps.facts.put(&key, v, http::FACT_TTL);
        Ok(v)
    }

    async fn read_client(&self) -> Result<Value, ProviderError> {
        let c = self
            .call(
                "read the OAuth client",
                Method::GET,
                &["oauth", "clients", &self.client_id],
                None,
            )
            .await?;
        if !c.is_object() || c["clientId"].as_str() != Some(self.client_id.as_str()) {
            return Err(ProviderError::Protocol {
                provider: KIND,
                operation: "read the OAuth client".into(),
                detail: "the answer is not the requested client".into(),
            });
        }
        Ok(c)
    }

    async fn read_settings(&self) -> Result<Value, ProviderError> {
        let s = self
            .call(
                "read the authorization server settings",
                Method::GET,
                &["oauth", "authServerSettings"],
                None,
            )
            .await?;
        if !s.is_object() {
            return Err(ProviderError::Protocol {
                provider: KIND,
                operation: "read the authorization server settings".into(),
                detail: "the answer is not an object".into(),
            });
        }
        Ok(s)
    }

    async fn snapshot(&self) -> Result<Snapshot, ProviderError> {
        let version = self.version().await?;
        let client = self.read_client().await?;
        let settings = self.read_settings().await?;
        Ok(Snapshot {
            version,
            client,
            settings,
        })
    }
}

#[async_trait]
impl IdentityProvider for PingFederate {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    fn check(&self, desired: &DesiredSettings) -> Result<(), ProviderError> {
        check_desired(desired)
    }

    async fn observe(&self, desired: &DesiredSettings) -> Result<AnySnapshot, ProviderError> {
        check_desired(desired)?;
        Ok(AnySnapshot::new(KIND, self.snapshot().await?))
    }

    fn plan(
        &self,
        snapshot: &AnySnapshot,
        desired: &DesiredSettings,
    ) -> Result<IdpPlan, ProviderError> {
        check_desired(desired)?;
        let snap: &Snapshot = snapshot.get()?;
        let p = plan(snap, desired);
        let observation = p.observation.clone();
        let writes = Writes {
            snap: snap.clone(),
            plan: p,
        };
        Ok(IdpPlan::new(KIND, desired, observation, writes))
    }

    async fn apply(&self, todo: &IdpPlan) -> Result<Applied, ProviderError> {
        if todo.is_empty() {
            return Ok(Applied {
                observation: todo.observation.clone(),
                actions: Vec::new(),
            });
        }
        let Writes { snap, plan: p } = todo.writes()?;
        let desired = todo.desired();
        let mut actions = Vec::new();
        if p.add_scope {
            let entry = json!({
                "name": OFFLINE_ACCESS,
                "description": "Keep access while you are signed out (refresh tokens)",
                "dynamic": false,
            });
            self.call(
                "add the offline_access common scope",
                Method::POST,
                &["oauth", "authServerSettings", "scopes", "commonScopes"],
                Some(&entry),
            )
            .await?;
            actions.push(
                "added the common scope offline_access to the PingFederate authorization server settings"
                    .to_string(),
            );
        }
        if let Some(body) = &p.client_update {
            self.call(
                "update the OAuth client",
                Method::PUT,
                &["oauth", "clients", &self.client_id],
                Some(body),
            )
            .await?;
            actions.push(format!(
                "updated PingFederate OAuth client {:?}: {}",
                self.client_id,
                p.client_changes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        let after = Snapshot {
            version: snap.version,
            client: self.read_client().await?,
            settings: self.read_settings().await?,
        };
        if encrypted_secret(&after.client) != encrypted_secret(&snap.client) {
            return Err(ProviderError::NotPersisted {
                provider: KIND,
                detail: format!(
                    "the client secret of {:?} changed during the update (clientAuth.encryptedSecret differs); \
                     check Coder's client secret",
                    self.client_id
                ),
            });
        }
        let check = plan(&after, desired);
        if !check.observation.changes.is_empty() {
            return Err(ProviderError::NotPersisted {
                provider: KIND,
                detail: check
                    .observation
                    .changes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        Ok(Applied {
            observation: check.observation,
            actions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_base_is_normalized() {
        for u in [
            "https://pf.example.com:9999",
            "https://pf.example.com:9999/",
            "https://pf.example.com:9999/pf-admin-api/v1/",
        ] {
            assert_eq!(
                admin_base(u).unwrap().as_str(),
                "https://pf.example.com:9999/pf-admin-api/v1"
            );
        }
        assert!(admin_base("not a url").is_err());
    }
}
