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
//!   with `OVERRIDE_SERVER_DEFAULT`); rotation is `refreshRolling` (`ROLL`/`DONT_ROLL`). With
//!   `rotation: Rotate` the client's rolling grace period (`refreshTokenRollingGracePeriodType`
//!   `OVERRIDE_SERVER_DEFAULT` + `refreshTokenRollingGracePeriod`, in 11.3 and 12.1) is raised to
//!   at least 60 s when the effective one (override, else the server's) is shorter, so Coder's
//!   concurrent refreshes all succeed; `RotateStrict` sets it to 0 and warns. A client
//!   representation without the override leaves the server's value, reported, not changed.
//!   Tokens rolling with no grace period get the warning `StrictRefreshTokenRotation`.
//! - `clientAuth.encryptedSecret` is a new ciphertext on every read, and any ciphertext the server
//!   issued restores the secret it encrypted: a secret change is detected with
//!   `clientSecretChangedTime` only, and the `PUT` body is rebuilt from a read taken right before
//!   it (so a secret rotated since `observe` is sent back as rotated, never undone).
//! - Clusters (`GET /cluster/status`; a 403 "not deployed in clustered mode" means standalone):
//!   engines serve replicated configuration only. With `replication: Automatic` the operator
//!   replicates after its own writes, unless replication was already required before them (other
//!   administrators' pending changes are never pushed); while replication is required the
//!   provider is not Ready (`ReplicationPending`).
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
use crate::crd::{PingFederateReplication, PingFederateSpec};

mod errors;
mod model;

use model::{
    Cluster, Plan, REPLICATION_PENDING, ServerVersion, Snapshot, check_desired,
    replication_pending_message, secret_changed_time,
};

/// The writes of a PingFederate plan, with the snapshot they were planned from.
struct Writes {
    snap: Snapshot,
    plan: Plan,
}

/// Marks a server known to be standalone (shared through [`ProviderDeps::facts`]).
#[derive(Clone, Copy)]
struct Standalone;

const NOT_CLUSTERED: &str = "not deployed in clustered mode";
const REPLICATE: &str = "replicate the cluster configuration";

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
        replication: spec.replication,
        username,
        password,
        http,
        deps: deps.clone(),
    }))
}

/// `{adminUrl}/pf-admin-api/v1`, tolerating trailing slashes and an `adminUrl` that already ends
/// in `/pf-admin-api/v1`.
/// The objects a policy makes the operator write (see [`super::targets`]): the OAuth client. The
/// one server-wide write, defining the common scope `offline_access`, only ever adds it.
pub fn targets(spec: &PingFederateSpec) -> Vec<String> {
    let base = admin_base(&spec.admin_url)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| spec.admin_url.clone());
    vec![super::target_key(
        KIND,
        &base,
        ["oauth", "clients", spec.client_id.as_str()],
    )]
}

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
    replication: PingFederateReplication,
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
        let (status, headers, text) = self.send(operation, method, segments, body).await?;
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

    /// One request: status, headers and body text, whatever the status.
    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, String), ProviderError> {
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
        Ok((status, headers, text))
    }

    /// `GET /cluster/status`; a standalone server (403 "not deployed in clustered mode") is
    /// remembered for [`http::FACT_TTL`].
    async fn cluster(&self) -> Result<Cluster, ProviderError> {
        const OP: &str = "read the cluster status";
        let key = format!("pingfederate-standalone|{}", self.base);
        if self.deps.facts.get::<Standalone>(&key).is_some() {
            return Ok(Cluster::Standalone);
        }
        let (status, headers, text) = self
            .send(OP, Method::GET, &["cluster", "status"], None)
            .await?;
        if status.as_u16() == 403 && text.contains(NOT_CLUSTERED) {
            self.deps.facts.put(&key, Standalone, http::FACT_TTL);
            return Ok(Cluster::Standalone);
        }
        if !status.is_success() {
            return Err(self.error(OP, status, &headers, &text));
        }
        let body: Value = serde_json::from_str(&text).map_err(|e| ProviderError::Protocol {
            provider: KIND,
            operation: OP.into(),
            detail: format!("the answer is not JSON ({e})"),
        })?;
        if !body.is_object() {
            return Err(ProviderError::Protocol {
                provider: KIND,
                operation: OP.into(),
                detail: "the answer is not an object".into(),
            });
        }
        Ok(Cluster::from_status(&body))
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
        let cluster = self.cluster().await?;
        Ok(Snapshot {
            version,
            client,
            settings,
            cluster,
        })
    }

    /// The transient error while the engines do not serve what was written.
    fn replication_pending(&self, detail: String) -> ProviderError {
        ProviderError::NotPersisted {
            provider: KIND,
            detail: format!(
                "that the engine nodes do not serve it yet ({REPLICATION_PENDING}): {detail}"
            ),
        }
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
        let p = model::plan(snap, desired, self.replication);
        let observation = p.observation.clone();
        let writes = Writes {
            snap: snap.clone(),
            plan: p,
        };
        Ok(IdpPlan::new(KIND, desired, observation, writes))
    }

    async fn apply(&self, todo: &IdpPlan) -> Result<Applied, ProviderError> {
        if todo.is_empty() {
            return Ok(Applied::unchanged(todo));
        }
        let Writes { snap, plan: p } = todo.writes()?;
        let desired = todo.desired();
        let mut actions = Vec::new();
        // Automatic replication pushes everything pending on the console: write only when the
        // snapshot (read moments ago by `observe`) had nothing else pending, so that everything
        // replicated is the operator's own.
        if self.replication == PingFederateReplication::Automatic
            && matches!(snap.cluster, Cluster::Clustered { .. })
            && !p.replicate
        {
            return Err(
                self.replication_pending(replication_pending_message(self.replication, true))
            );
        }
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
        let mut secret_time = None;
        if p.client_update.is_some() {
            // The PUT replaces the whole client and any ciphertext restores the secret it
            // encrypts: build the body from a read taken right now, so a secret rotated (or any
            // other field changed) since `observe` is kept, and write only if the owned fields
            // still need exactly the planned changes.
            let fresh = Snapshot {
                client: self.read_client().await?,
                ..snap.clone()
            };
            let again = model::plan(&fresh, desired, self.replication);
            let body = match again.client_update {
                Some(body) if again.client_changes == p.client_changes => body,
                _ => {
                    return Err(ProviderError::Protocol {
                        provider: KIND,
                        operation: "update the OAuth client".into(),
                        detail: format!(
                            "OAuth client {:?} was changed by someone else since it was read, so the planned \
                             update was not written{}; the next pass plans again",
                            self.client_id,
                            if actions.is_empty() {
                                String::new()
                            } else {
                                format!(" ({} before that)", actions.join("; "))
                            }
                        ),
                    });
                }
            };
            secret_time = Some(secret_changed_time(&fresh.client).map(str::to_string));
            self.call(
                "update the OAuth client",
                Method::PUT,
                &["oauth", "clients", &self.client_id],
                Some(&body),
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
        if p.replicate && self.cluster().await?.replication_required() {
            self.call(REPLICATE, Method::POST, &["cluster", "replicate"], None)
                .await?;
            actions.push(
                "replicated the PingFederate configuration to the engine nodes (POST /cluster/replicate)"
                    .to_string(),
            );
        }
        let after = Snapshot {
            version: snap.version,
            client: self.read_client().await?,
            settings: self.read_settings().await?,
            cluster: self.cluster().await?,
        };
        if let Some(before) = secret_time
            && secret_changed_time(&after.client) != before.as_deref()
        {
            return Err(ProviderError::NotPersisted {
                provider: KIND,
                detail: format!(
                    "that the client secret of {:?} changed during the update (clientSecretChangedTime {} -> {}); \
                     check that Coder's client secret still works",
                    self.client_id,
                    before.as_deref().unwrap_or("(none)"),
                    secret_changed_time(&after.client).unwrap_or("(none)")
                ),
            });
        }
        let check = model::plan(&after, desired, self.replication);
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
        if after.cluster.replication_required() {
            return Err(self.replication_pending(format!(
                "{} ({})",
                replication_pending_message(self.replication, false),
                actions.join("; ")
            )));
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
