//! The admin API backend: the Skoruba `Duende.IdentityServer.Admin` API.
//!
//! # Authentication
//! The policy's Secret holds `client-id` + `client-secret` of an STS client with
//! `AllowedGrantTypes = [client_credentials]`, the admin API's scope (`skoruba_identity_admin_api`
//! by default) in `AllowedScopes`, and the client claim `role = SkorubaIdentityAdminAdministrator`
//! (the API's `AdministrationRole`; the STS emits it as `client_role`), optionally `ca.crt`. The
//! operator gets a token from `{authority}/connect/token` (HTTP Basic) and caches it in
//! [`ProviderDeps::tokens`]; a 401 drops it and retries once.
//!
//! # Calls
//! `GET /api/Clients?searchText={clientId}` (a *contains* search, paged), the exact match, then
//! `GET /api/Clients/{id}` by the integer key (remembered in [`ProviderDeps::facts`] so that later
//! passes read with one call). `PUT /api/Clients` replaces the whole client (omitted fields take
//! the API's defaults, child lists are deleted and re-inserted), so the body is the client as read
//! right before the write, with only the owned fields changed. The API has no ETag: a client that
//! changed between the plan and the write is not written (the next pass plans again).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::errors::{api_error, is_unknown_id, token_error};
use super::model::{Plan, Refresh};
use super::{Backend, Duende, KIND, recheck, target};
use crate::crd::DuendeAdminApiSpec;
use crate::providers::http::{self, BearerAnswer as Answer};
use crate::providers::{
    Credentials, DesiredSettings, IdentityProvider, ProviderDeps, ProviderError,
    missing_credentials,
};

/// The admin API's default `OidcApiName`: scope and audience of its tokens.
pub const DEFAULT_SCOPE: &str = "skoruba_identity_admin_api";
/// Search page size.
const PAGE_SIZE: u32 = 50;
/// Search pages read at most (a search text that matches more clients than this is refused).
const MAX_PAGES: u32 = 20;
/// How long the integer id of a client is remembered.
const ID_TTL: Duration = Duration::from_secs(3600);

/// The DTO fields the operator owns, and how each maps to [`Refresh`].
const OWNED: [&str; 6] = [
    "allowOfflineAccess",
    "absoluteRefreshTokenLifetime",
    "slidingRefreshTokenLifetime",
    "refreshTokenUsage",
    "refreshTokenExpiration",
    "accessTokenLifetime",
];

/// Builds the admin API backend.
pub fn connect(
    client_id: &str,
    spec: &DuendeAdminApiSpec,
    credentials: Option<Credentials>,
    deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    let credentials = credentials.ok_or_else(|| missing_credentials(KIND))?;
    let api = base_url(&spec.url, "spec.provider.duende.adminApi.url", &["/api"])?;
    let authority = base_url(
        &spec.authority,
        "spec.provider.duende.adminApi.authority",
        &["/connect/token", "/.well-known/openid-configuration"],
    )?;
    let scope = spec
        .scope
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_SCOPE)
        .to_string();
    let v = credentials.require(KIND, &["client-id", "client-secret"])?;
    let (sts_client, sts_secret) = (v[0].clone(), v[1].clone());
    let http = deps.http.client_for(KIND, &credentials)?;
    let token_key = format!(
        "duende|{authority}|{scope}|{}|{}|{}",
        credentials.secret_name,
        credentials.version,
        http::credentials_fingerprint(&[&sts_client, &sts_secret])
    );
    Ok(Arc::new(Duende(AdminApi {
        id_key: format!("duende-id|{api}|{client_id}"),
        token_url: format!("{authority}/connect/token"),
        api,
        scope,
        client_id: client_id.to_string(),
        secret_name: credentials.secret_name.clone(),
        sts_client,
        sts_secret,
        http,
        deps: deps.clone(),
        token_key,
    })))
}

/// Coder's client behind the admin API at `url`, as a claim key (see [`super::super::targets`]).
pub fn target_key(url: &str, client_id: &str) -> String {
    let base = base_url(url, "", &["/api"]).unwrap_or_else(|_| url.to_string());
    super::super::target_key(KIND, &base, ["clients", client_id])
}

/// An http(s) URL without a trailing `/` or any of `suffixes`.
fn base_url(raw: &str, field: &str, suffixes: &[&str]) -> Result<String, ProviderError> {
    let mut u = raw.trim().trim_end_matches('/').to_string();
    for s in suffixes {
        if let Some(rest) = u.strip_suffix(s) {
            u = rest.trim_end_matches('/').to_string();
        }
    }
    match reqwest::Url::parse(&u) {
        Ok(p)
            if matches!(p.scheme(), "http" | "https")
                && p.host_str().is_some()
                && p.query().is_none() =>
        {
            Ok(u)
        }
        _ => Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "{field} {raw:?} is not an http(s) URL such as https://admin-api.example.com"
            ),
        }),
    }
}

/// The refresh columns of a `ClientApiDto`.
pub fn refresh_of(dto: &Value) -> Result<Refresh, ProviderError> {
    let int = |k: &str| {
        dto.get(k).and_then(Value::as_i64).ok_or_else(|| ProviderError::Protocol {
            provider: KIND,
            operation: "read the client".into(),
            detail: format!("the client has no integer {k}; is spec.provider.duende.adminApi.url the Skoruba admin API?"),
        })
    };
    Ok(Refresh {
        allow_offline_access: dto
            .get("allowOfflineAccess")
            .and_then(Value::as_bool)
            .ok_or_else(|| ProviderError::Protocol {
                provider: KIND,
                operation: "read the client".into(),
                detail: "the client has no boolean allowOfflineAccess".into(),
            })?,
        absolute: int("absoluteRefreshTokenLifetime")?,
        sliding: int("slidingRefreshTokenLifetime")?,
        usage: int("refreshTokenUsage")?,
        expiration: int("refreshTokenExpiration")?,
        access_token_lifetime: int("accessTokenLifetime")?,
    })
}

/// The whole client `dto` with the owned fields set to `r`: the body of a full replace.
pub fn with_refresh(dto: &Value, r: &Refresh) -> Value {
    let mut body = dto.clone();
    let values = [
        json!(r.allow_offline_access),
        json!(r.absolute),
        json!(r.sliding),
        json!(r.usage),
        json!(r.expiration),
        json!(r.access_token_lifetime),
    ];
    if let Value::Object(m) = &mut body {
        for (k, v) in OWNED.iter().zip(values) {
            m.insert((*k).to_string(), v);
        }
    }
    body
}

/// What `observe` read: Coder's client, whole, and its integer id.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// `Id`.
    pub id: i64,
    /// The `ClientApiDto` as `GET /api/Clients/{id}` answered it.
    pub dto: Value,
}

/// The admin API backend for one policy.
pub struct AdminApi {
    api: String,
    token_url: String,
    scope: String,
    client_id: String,
    secret_name: String,
    sts_client: SecretString,
    sts_secret: SecretString,
    http: reqwest::Client,
    deps: ProviderDeps,
    token_key: String,
    id_key: String,
}

impl fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DuendeAdminApi")
            .field("api", &self.api)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("secret_name", &self.secret_name)
            .finish_non_exhaustive()
    }
}

impl AdminApi {
    async fn token(&self, force: bool) -> Result<SecretString, ProviderError> {
        if !force && let Some(t) = self.deps.tokens.get(&self.token_key) {
            return Ok(t);
        }
        let form: [(&str, &str); 2] = [
            ("grant_type", "client_credentials"),
            ("scope", self.scope.as_str()),
        ];
        let req = http::client_secret_basic(
            self.http.post(&self.token_url),
            self.sts_client.expose_secret(),
            self.sts_secret.expose_secret(),
        )
        .form(&form);
        match http::request_token(
            &self.deps,
            KIND,
            "get an admin API token",
            req,
            &self.token_key,
            Duration::from_secs(600),
        )
        .await?
        {
            http::TokenAnswer::Token(t) => Ok(t),
            http::TokenAnswer::Refused {
                status,
                headers,
                body,
            } => Err(token_error(
                &self.token_url,
                &self.scope,
                &self.secret_name,
                status,
                &headers,
                &body,
            )),
        }
    }

    async fn call(
        &self,
        metric: &'static str,
        what: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
        let call = http::BearerCall {
            metric,
            what,
            method,
            url,
            body,
        };
        let token = |force| self.token(force);
        http::bearer_call(&self.deps, &self.http, KIND, &self.token_key, token, call).await
    }

    fn error(
        &self,
        what: &str,
        s: reqwest::StatusCode,
        h: &reqwest::header::HeaderMap,
        b: &str,
    ) -> ProviderError {
        api_error(what, &self.scope, &self.secret_name, s, h, b)
    }

    /// `GET /api/Clients/{id}`; `None` when the API says the id does not exist.
    async fn get(&self, id: i64) -> Result<Option<Value>, ProviderError> {
        let what = "read the client";
        let url = format!("{}/api/Clients/{id}", self.api);
        match self
            .call("get_client", what, Method::GET, &url, None)
            .await?
        {
            Answer::Ok(Some(v)) if v.get("id").and_then(Value::as_i64) == Some(id) => Ok(Some(v)),
            Answer::Ok(_) => Err(ProviderError::Protocol {
                provider: KIND,
                operation: what.into(),
                detail: format!(
                    "the answer is not client {id}; is spec.provider.duende.adminApi.url the Skoruba admin API?"
                ),
            }),
            Answer::Status(s, _, b)
                if s == reqwest::StatusCode::BAD_REQUEST && is_unknown_id(&b) =>
            {
                Ok(None)
            }
            Answer::Status(s, h, b) => Err(self.error(what, s, &h, &b)),
        }
    }

    /// The integer id of the client whose `ClientId` is exactly ours.
    async fn search(&self) -> Result<i64, ProviderError> {
        let what = "search the clients";
        let mut found = Vec::new();
        let mut seen = 0u64;
        for page in 1..=MAX_PAGES {
            let mut url =
                reqwest::Url::parse(&format!("{}/api/Clients", self.api)).map_err(|e| {
                    ProviderError::Unsupported {
                        provider: KIND,
                        detail: format!("spec.provider.duende.adminApi.url: {e}"),
                    }
                })?;
            url.query_pairs_mut()
                .append_pair("searchText", &self.client_id)
                .append_pair("page", &page.to_string())
                .append_pair("pageSize", &PAGE_SIZE.to_string());
            let v = match self
                .call("search_clients", what, Method::GET, url.as_str(), None)
                .await?
            {
                Answer::Ok(Some(v)) => v,
                Answer::Ok(None) => Value::Null,
                Answer::Status(s, h, b) => return Err(self.error(what, s, &h, &b)),
            };
            let (Some(items), Some(total)) = (
                v.get("clients").and_then(Value::as_array),
                v.get("totalCount").and_then(Value::as_u64),
            ) else {
                return Err(ProviderError::Protocol {
                    provider: KIND,
                    operation: what.into(),
                    detail: "the answer has no clients and totalCount; is spec.provider.duende.adminApi.url the Skoruba admin API?".into(),
                });
            };
            found.extend(
                items
                    .iter()
                    .filter(|c| {
                        c.get("clientId").and_then(Value::as_str) == Some(self.client_id.as_str())
                    })
                    .filter_map(|c| c.get("id").and_then(Value::as_i64)),
            );
            seen += items.len() as u64;
            if items.is_empty() || seen >= total {
                break;
            }
            if page == MAX_PAGES {
                return Err(ProviderError::Protocol {
                    provider: KIND,
                    operation: what.into(),
                    detail: format!(
                        "more than {} clients contain {:?}; the search stopped before finding an exact match",
                        MAX_PAGES * PAGE_SIZE,
                        self.client_id
                    ),
                });
            }
        }
        match found.as_slice() {
            [id] => Ok(*id),
            [] => Err(ProviderError::ClientNotFound {
                provider: KIND,
                what: target(&self.client_id),
                detail: "the admin API lists no client with this ClientId; spec.provider.duende.clientId must be the \
                         ClientId Coder uses as CODER_OIDC_CLIENT_ID (exact, case-sensitive). The operator never \
                         creates clients"
                    .into(),
            }),
            many => Err(ProviderError::Protocol {
                provider: KIND,
                operation: what.into(),
                detail: format!("{} clients have ClientId {:?}", many.len(), self.client_id),
            }),
        }
    }

    /// Coder's client, by its remembered id or found by search.
    async fn read_client(&self) -> Result<Snapshot, ProviderError> {
        let ours = |dto: &Value| {
            dto.get("clientId").and_then(Value::as_str) == Some(self.client_id.as_str())
        };
        if let Some(id) = self.deps.facts.get::<i64>(&self.id_key) {
            match self.get(id).await? {
                Some(dto) if ours(&dto) => return Ok(Snapshot { id, dto }),
                _ => self.deps.facts.invalidate(&self.id_key),
            }
        }
        let id = self.search().await?;
        match self.get(id).await? {
            Some(dto) if ours(&dto) => {
                self.deps.facts.put(&self.id_key, id, ID_TTL);
                Ok(Snapshot { id, dto })
            }
            _ => Err(ProviderError::Protocol {
                provider: KIND,
                operation: "read the client".into(),
                detail: format!(
                    "client {id} changed or disappeared while it was read; the next pass looks again"
                ),
            }),
        }
    }
}

#[async_trait]
impl Backend for AdminApi {
    type Snapshot = Snapshot;

    fn client_id(&self) -> &str {
        &self.client_id
    }

    async fn read(&self) -> Result<Snapshot, ProviderError> {
        self.read_client().await
    }

    fn refresh(&self, snap: &Snapshot) -> Result<Refresh, ProviderError> {
        refresh_of(&snap.dto)
    }

    async fn write(
        &self,
        planned: &Plan,
        desired: &DesiredSettings,
    ) -> Result<String, ProviderError> {
        let what = "update the client";
        // PUT replaces the whole client: build the body from a read taken right now, and write
        // only if the owned fields still need exactly the planned changes.
        let fresh = self.read_client().await?;
        let next = recheck(&self.client_id, planned, self.plan_of(&fresh, desired)?)?;
        let body = with_refresh(&fresh.dto, &next);
        let url = format!("{}/api/Clients", self.api);
        match self
            .call("update_client", what, Method::PUT, &url, Some(&body))
            .await?
        {
            Answer::Ok(_) => {}
            Answer::Status(s, _, b)
                if s == reqwest::StatusCode::BAD_REQUEST && is_unknown_id(&b) =>
            {
                self.deps.facts.invalidate(&self.id_key);
                return Err(ProviderError::Protocol {
                    provider: KIND,
                    operation: what.into(),
                    detail: format!(
                        "client {} was deleted while it was updated; the next pass looks again",
                        fresh.id
                    ),
                });
            }
            Answer::Status(s, h, b) => return Err(self.error(what, s, &h, &b)),
        }
        Ok(format!(
            "updated {}: {}",
            target(&self.client_id),
            planned.observation.changes_line()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_bodies() {
        assert_eq!(
            base_url("https://admin-api.example.com/api/", "f", &["/api"]).unwrap(),
            "https://admin-api.example.com"
        );
        assert_eq!(
            base_url(
                "https://sts.example.com/connect/token",
                "f",
                &["/connect/token"]
            )
            .unwrap(),
            "https://sts.example.com"
        );
        assert!(base_url("sts.example.com", "f", &[]).is_err());
        let dto = json!({"id": 3, "clientId": "coder", "requirePkce": true, "allowOfflineAccess": false,
            "absoluteRefreshTokenLifetime": 1, "slidingRefreshTokenLifetime": 2, "refreshTokenUsage": 1,
            "refreshTokenExpiration": 1, "accessTokenLifetime": 3600, "futureField": [1]});
        let mut r = refresh_of(&dto).unwrap();
        r.allow_offline_access = true;
        r.usage = super::super::model::REUSE;
        let body = with_refresh(&dto, &r);
        assert_eq!(body["allowOfflineAccess"], json!(true));
        assert_eq!(body["refreshTokenUsage"], json!(0));
        // Everything else, unknown fields too, goes back as read.
        assert_eq!(body["requirePkce"], json!(true));
        assert_eq!(body["futureField"], json!([1]));
        assert_eq!(
            body.as_object().unwrap().len(),
            dto.as_object().unwrap().len()
        );
    }
}
