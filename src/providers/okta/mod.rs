//! Okta through its Management API.
//!
//! # Authentication
//! The policy's Secret holds either `api-token` (an SSWS API token of an admin), or `client-id`,
//! `private-key` (PEM: PKCS#8 RSA or P-256, or PKCS#1 RSA) and optionally `key-id` of an API
//! service app using `private_key_jwt` ("OAuth for Okta"), optionally `ca.crt`. A service app gets
//! a client-credentials token from the org authorization server (`{org}/oauth2/v1/token`) with
//! the scopes in [`SCOPES`]. Every token request carries a DPoP proof signed with a P-256 key the
//! operator generates (Okta requires DPoP of new service apps by default); `use_dpop_nonce` is
//! answered once with the server's nonce. A DPoP-bound token is then sent as `Authorization: DPoP`
//! with a fresh proof (`ath`) on every call; when the Management API asks for a nonce
//! (`use_dpop_nonce` with a `DPoP-Nonce` header) the call is retried once with it, and the nonce is
//! reused for the next calls. Tokens and their DPoP keys are cached in
//! [`ProviderDeps::tokens`] / [`ProviderDeps::facts`]; a 401 drops them and retries once.
//!
//! # What is configured
//! Coder's app is found by its client id (`GET /api/v1/apps/{clientId}` works when the client id
//! is the app id, Okta's default; otherwise the OIDC apps are listed, `filter=name eq
//! "oidc_client"`, page by page, and matched exactly on `credentials.oauthClient.client_id`, since
//! Okta cannot filter by client id; the app id found is remembered). `PUT /api/v1/apps/{id}`
//! replaces the whole app, so the app is sent back whole, as read right before the write, with only
//! `grant_types` and `refresh_token` changed (the client secret, which Okta does not show, is kept
//! by Okta when omitted).
//!
//! | policy (`spec.refreshTokens`) | Okta |
//! |---|---|
//! | always | `settings.oauthClient.grant_types` gets `refresh_token` |
//! | `rotation` | `settings.oauthClient.refresh_token`: `Rotate` → `ROTATE` with `leeway` 30 s (`rotationLeewaySeconds`), `RotateStrict` → `ROTATE`, leeway 0 (warning), `Reuse` → `STATIC` |
//! | `offlineAccess` | the rule that applies allows `offline_access` (`conditions.scopes.include`); Coder requests it |
//! | `accessTokenLifetime`, `lifetime`, `idleTimeout` | that rule's `actions.token.accessTokenLifetimeMinutes`, `refreshTokenLifetimeMinutes`, `refreshTokenWindowMinutes` (whole minutes, Okta's ranges); `Unsupported` on the org authorization server, whose lifetimes are fixed |
//!
//! The rule is the one Okta applies to Coder's sign-ins: in the active access policy of lowest
//! priority that includes Coder's client id (or `ALL_CLIENTS`), the active rule of lowest priority
//! allowing `authorization_code`. A rule whose policy also applies to other apps is changed only
//! with `allowSharedRule: true`; otherwise the plan fails as `Unsupported`, naming the other apps.
//!
//! # Rate limits
//! Okta answers every call with `X-Rate-Limit-Remaining` and `X-Rate-Limit-Reset`. When nothing
//! remains, the next call waits for the reset (measured against the answer's `Date`) if that is
//! short, else fails as throttled with that wait, before Okta has to answer 429; a 429 is retried
//! after the same wait.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::http;
use super::{
    Applied, Credentials, DesiredSettings, IdentityProvider, IdpPlan, ProviderDeps, ProviderError,
    ProviderKind, Snapshot as AnySnapshot, missing_credentials,
};
use crate::crd::OktaSpec;

mod errors;
pub mod jose;
pub mod model;

pub use errors::okta_message;
pub use model::{Plan, Snapshot};

const KIND: ProviderKind = ProviderKind::Okta;

/// The Okta API scopes a service app needs.
pub const SCOPES: &[&str] = &[
    "okta.apps.read",
    "okta.apps.manage",
    "okta.authorizationServers.read",
    "okta.authorizationServers.manage",
];
/// Most pages of apps read while looking for Coder's app by client id.
pub const MAX_APP_PAGES: usize = 50;
/// How long a resource server's DPoP nonce is reused before it is left out again.
const RESOURCE_NONCE_TTL: Duration = Duration::from_secs(300);
/// How long the app id found for a client id is remembered.
const APP_ID_TTL: Duration = Duration::from_secs(3600);

/// How the operator authenticates.
enum Auth {
    /// `Authorization: SSWS {token}`.
    ApiToken(SecretString),
    /// An API service app with `private_key_jwt`.
    Service {
        client_id: String,
        key: jose::SigningKey,
        kid: Option<String>,
    },
}

/// A cached token's DPoP key (`None`: a bearer token).
#[derive(Clone)]
struct Binding(Option<jose::SigningKey>);

/// What the last answer said of the rate limit.
#[derive(Clone, Copy)]
struct RateState {
    remaining: u64,
    reset_at: Instant,
}

/// Builds the provider for a policy.
pub fn connect(
    spec: &OktaSpec,
    credentials: Option<Credentials>,
    deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    let credentials = credentials.ok_or_else(|| missing_credentials(KIND))?;
    let org = normalize_org(&spec.org_url)?;
    let client = deps.http.client_for(KIND, &credentials)?;
    let (auth, fingerprint) = if let Some(token) = credentials.get("api-token") {
        (
            Auth::ApiToken(token.clone()),
            http::credentials_fingerprint(&[token]),
        )
    } else {
        let v = credentials
            .require(KIND, &["client-id", "private-key"])
            .map_err(|_| ProviderError::InvalidSecret {
                provider: KIND,
                detail: format!(
                    "Secret {:?} has neither api-token nor client-id + private-key (it has: {})",
                    credentials.secret_name,
                    credentials.keys_for_message()
                ),
            })?;
        let fingerprint = http::credentials_fingerprint(&[v[0], v[1]]);
        let key = jose::SigningKey::from_pem(v[1].expose_secret()).map_err(|why| {
            ProviderError::InvalidSecret {
                provider: KIND,
                detail: format!(
                    "private-key in Secret {:?} is not usable: {why}",
                    credentials.secret_name
                ),
            }
        })?;
        (
            Auth::Service {
                client_id: v[0].expose_secret().trim().to_string(),
                key,
                kid: credentials
                    .get("key-id")
                    .map(|k| k.expose_secret().trim().to_string()),
            },
            fingerprint,
        )
    };
    let token_key = format!(
        "okta|{org}|{}|{}|{fingerprint}",
        credentials.secret_name, credentials.version
    );
    let leeway = spec
        .rotation_leeway_seconds
        .map_or(model::DEFAULT_LEEWAY, u64::from)
        .min(model::MAX_LEEWAY);
    Ok(Arc::new(Okta {
        org,
        server: spec
            .authorization_server_id
            .clone()
            .filter(|s| !s.trim().is_empty()),
        secret_name: credentials.secret_name.clone(),
        auth,
        http: client,
        deps: deps.clone(),
        token_key,
        opts: model::Options {
            client_id: spec.client_id.clone(),
            leeway,
            allow_shared_rule: spec.allow_shared_rule,
        },
    }))
}

/// What a policy makes the operator write in Okta (see [`super::targets`]): Coder's app, and, when
/// the policy may change an access-policy rule shared with other apps (`allowSharedRule`), the
/// authorization server's shared rules. Without that opt-in the rule written applies to Coder's
/// app alone, so the app's key covers it.
pub fn targets(spec: &OktaSpec) -> Vec<String> {
    let org = normalize_org(&spec.org_url).unwrap_or_else(|_| spec.org_url.clone());
    let mut keys = vec![super::target_key(
        KIND,
        &org,
        ["apps", spec.client_id.as_str()],
    )];
    if spec.allow_shared_rule {
        let server = spec.authorization_server_id.as_deref().unwrap_or("org");
        keys.push(super::target_key(
            KIND,
            &org,
            ["authorizationServers", server, "shared-rules"],
        ));
    }
    keys
}

/// The org URL without a trailing `/`; a path is refused.
fn normalize_org(raw: &str) -> Result<String, ProviderError> {
    let u = raw.trim().trim_end_matches('/').to_string();
    let ok = reqwest::Url::parse(&u).is_ok_and(|p| {
        matches!(p.scheme(), "http" | "https")
            && p.host_str().is_some_and(|h| !h.is_empty())
            && p.path().trim_matches('/').is_empty()
            && p.query().is_none()
    });
    if ok {
        Ok(u)
    } else {
        Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "spec.provider.okta.orgUrl {raw:?} is not an Okta org URL such as https://example.okta.com (no path: \
                 not the issuer /oauth2/default, not the admin console URL)"
            ),
        })
    }
}

/// One kind of Management API call, for metrics and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    ReadApp,
    ListApps,
    PutApp,
    ListPolicies,
    ListRules,
    PutRule,
}

impl Op {
    fn metric(self) -> &'static str {
        match self {
            Op::ReadApp => "get_application",
            Op::ListApps => "list_applications",
            Op::PutApp => "replace_application",
            Op::ListPolicies => "list_policies",
            Op::ListRules => "list_policy_rules",
            Op::PutRule => "replace_policy_rule",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Op::ReadApp => "read Coder's app",
            Op::ListApps => "list the org's OIDC apps",
            Op::PutApp => "update Coder's app",
            Op::ListPolicies => "list the authorization server's access policies",
            Op::ListRules => "list the access policy's rules",
            Op::PutRule => "update the access policy rule",
        }
    }
}

/// The Okta provider for one policy.
pub struct Okta {
    org: String,
    server: Option<String>,
    secret_name: String,
    auth: Auth,
    http: reqwest::Client,
    deps: ProviderDeps,
    token_key: String,
    opts: model::Options,
}

impl fmt::Debug for Okta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Okta")
            .field("org", &self.org)
            .field("server", &self.server)
            .field("client_id", &self.opts.client_id)
            .field("secret_name", &self.secret_name)
            .finish_non_exhaustive()
    }
}

/// The writes of an Okta plan.
struct Writes {
    plan: Plan,
}

/// A Management API answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Okta {
    fn url(&self, segments: &[&str]) -> String {
        let mut url = reqwest::Url::parse(&self.org).expect("the org URL was checked");
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty();
            for s in segments {
                p.push(s);
            }
        }
        url.to_string()
    }

    /// The URL of `tail` under authorization server `sid`: `/api/v1/authorizationServers/{sid}/…`.
    fn server_url(&self, sid: &str, tail: &[&str]) -> String {
        let mut segments = vec!["api", "v1", "authorizationServers", sid];
        segments.extend_from_slice(tail);
        self.url(&segments)
    }

    fn binding_key(&self) -> String {
        format!("{}|dpop", self.token_key)
    }

    fn nonce_key(&self) -> String {
        format!("okta-dpop-nonce|{}", self.org)
    }

    fn rate_key(&self) -> String {
        format!("okta-rate|{}", self.org)
    }

    /// The authorization for a call: (scheme, token, DPoP key).
    async fn credentials(
        &self,
        force: bool,
    ) -> Result<(&'static str, SecretString, Option<jose::SigningKey>), ProviderError> {
        let (client_id, key, kid) = match &self.auth {
            Auth::ApiToken(t) => return Ok(("SSWS", t.clone(), None)),
            Auth::Service {
                client_id,
                key,
                kid,
            } => (client_id, key, kid),
        };
        if !force
            && let Some(t) = self.deps.tokens.get(&self.token_key)
            && let Some(Binding(b)) = self.deps.facts.get::<Binding>(&self.binding_key())
        {
            return Ok((if b.is_some() { "DPoP" } else { "Bearer" }, t, b));
        }
        let url = self.url(&["oauth2", "v1", "token"]);
        let dpop = jose::SigningKey::generate_ec().map_err(|e| self.protocol_token(e))?;
        let mut nonce: Option<String> = None;
        for _ in 0..2 {
            let assertion = jose::client_assertion(key, kid.as_deref(), client_id, &url)
                .map_err(|e| self.protocol_token(e))?;
            let proof = jose::dpop_proof(&dpop, "POST", &url, nonce.as_deref(), None)
                .map_err(|e| self.protocol_token(e))?;
            let scope = SCOPES.join(" ");
            let form: [(&str, &str); 4] = [
                ("grant_type", "client_credentials"),
                ("scope", &scope),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ];
            let req = self
                .http
                .post(&url)
                .header(reqwest::header::ACCEPT, "application/json")
                .header("DPoP", proof)
                .form(&form);
            let resp =
                http::send_capped(&self.deps, KIND, "token", req, http::MAX_TOKEN_BODY).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                let server_nonce = headers
                    .get("dpop-nonce")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if http::oauth_error_code(&body).as_deref() == Some("use_dpop_nonce")
                    && nonce.is_none()
                    && let Some(n) = server_nonce
                {
                    nonce = Some(n);
                    continue;
                }
                return Err(self.token_error(status, &headers, &body));
            }
            let v: Value = serde_json::from_str(&body).map_err(|e| {
                self.protocol_token(format!(
                    "the token endpoint answered something that is not JSON: {e}"
                ))
            })?;
            let token = v["access_token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    self.protocol_token("the token endpoint answered without access_token".into())
                })?;
            let bound = v["token_type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case("DPoP"));
            let ttl = v["expires_in"]
                .as_u64()
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(600))
                .min(http::MAX_TOKEN_LIFETIME);
            let token = SecretString::from(token.to_string());
            let binding = Binding(bound.then_some(dpop.clone()));
            self.deps.tokens.put(&self.token_key, token.clone(), ttl);
            self.deps
                .facts
                .put(&self.binding_key(), binding.clone(), ttl);
            return Ok((if bound { "DPoP" } else { "Bearer" }, token, binding.0));
        }
        Err(self.protocol_token(
            "Okta asked for a DPoP nonce twice; the token request was given up".into(),
        ))
    }

    fn protocol_token(&self, detail: String) -> ProviderError {
        ProviderError::Protocol {
            provider: KIND,
            operation: "get a Management API token".into(),
            detail,
        }
    }

    /// Waits for the rate-limit window to reset when the last answer said nothing remains.
    async fn respect_rate_limit(&self, op: Op) -> Result<(), ProviderError> {
        let Some(state) = self.deps.facts.get::<RateState>(&self.rate_key()) else {
            return Ok(());
        };
        if state.remaining > 0 {
            return Ok(());
        }
        let wait = state.reset_at.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Ok(());
        }
        if wait > http::MAX_INLINE_RETRY_AFTER {
            return Err(ProviderError::Throttled {
                provider: KIND,
                operation: op.what().into(),
                retry_after: Some(wait),
            });
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn remember_rate_limit(&self, headers: &HeaderMap) {
        let remaining = headers
            .get("x-rate-limit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let (Some(remaining), Some(wait)) = (remaining, http::rate_limit_reset_wait(headers))
        else {
            return;
        };
        let wait = wait.min(http::MAX_RETRY_AFTER);
        self.deps.facts.put(
            &self.rate_key(),
            RateState {
                remaining,
                reset_at: Instant::now() + wait,
            },
            wait,
        );
    }

    /// One Management API call: auth (renewed once on 401), a DPoP nonce retry when asked, rate
    /// limits.
    async fn call(
        &self,
        op: Op,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
        let mut renewed = false;
        // The resource server's last DPoP nonce, if it ever asked for one.
        let mut nonce: Option<String> = self.deps.facts.get::<String>(&self.nonce_key());
        let mut nonce_tried = false;
        loop {
            self.respect_rate_limit(op).await?;
            let (scheme, token, dpop) = self.credentials(renewed).await?;
            let mut req = self
                .http
                .request(method.clone(), url)
                .header(reqwest::header::ACCEPT, "application/json")
                .header(
                    reqwest::header::AUTHORIZATION,
                    format!("{scheme} {}", token.expose_secret()),
                );
            if let Some(key) = &dpop {
                let proof = jose::dpop_proof(
                    key,
                    method.as_str(),
                    url,
                    nonce.as_deref(),
                    Some(token.expose_secret()),
                )
                .map_err(|e| self.protocol_token(e))?;
                req = req.header("DPoP", proof);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = http::send(&self.deps, KIND, op.metric(), req).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            self.remember_rate_limit(&headers);
            let text = resp.text().await.map_err(|e| ProviderError::Unreachable {
                provider: KIND,
                operation: op.what().into(),
                detail: http::describe_reqwest_error(&e),
            })?;
            if dpop.is_some()
                && !nonce_tried
                && matches!(status.as_u16(), 400 | 401)
                && let Some(n) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok())
            {
                nonce = Some(n.to_string());
                self.deps
                    .facts
                    .put(&self.nonce_key(), n.to_string(), RESOURCE_NONCE_TTL);
                nonce_tried = true;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED
                && !renewed
                && matches!(self.auth, Auth::Service { .. })
            {
                self.deps.tokens.invalidate(&self.token_key);
                self.deps.facts.invalidate(&self.binding_key());
                renewed = true;
                continue;
            }
            return Ok(Answer {
                status,
                headers,
                body: text,
            });
        }
    }

    /// A call that must succeed with a JSON body.
    async fn json(
        &self,
        op: Op,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(Value, HeaderMap), ProviderError> {
        let a = self.call(op, method, url, body).await?;
        if !a.status.is_success() {
            return Err(self.api_error(op, a.status, &a.headers, &a.body));
        }
        let v = serde_json::from_str(&a.body).map_err(|e| ProviderError::Protocol {
            provider: KIND,
            operation: op.what().into(),
            detail: format!(
                "the answer is not JSON: {e}; is spec.provider.okta.orgUrl the Okta org URL?"
            ),
        })?;
        Ok((v, a.headers))
    }

    fn app_id_key(&self) -> String {
        format!("okta-app|{}|{}", self.org, self.opts.client_id)
    }

    /// Reads app `id` if it is Coder's app (its client id matches exactly).
    async fn read_app_if_coder(&self, id: &str) -> Result<Option<Value>, ProviderError> {
        let url = self.url(&["api", "v1", "apps", id]);
        let a = self.call(Op::ReadApp, Method::GET, &url, None).await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !a.status.is_success() {
            return Err(self.api_error(Op::ReadApp, a.status, &a.headers, &a.body));
        }
        let v: Value = serde_json::from_str(&a.body).map_err(|e| ProviderError::Protocol {
            provider: KIND,
            operation: Op::ReadApp.what().into(),
            detail: format!("the answer is not JSON: {e}"),
        })?;
        Ok((model::client_id_of(&v) == self.opts.client_id).then_some(v))
    }

    /// Finds Coder's app by client id (see the module docs).
    async fn find_app(&self) -> Result<Value, ProviderError> {
        let key = self.app_id_key();
        if let Some(id) = self.deps.facts.get::<String>(&key) {
            if let Some(app) = self.read_app_if_coder(&id).await? {
                return Ok(app);
            }
            self.deps.facts.invalidate(&key);
        }
        if let Some(app) = self.read_app_if_coder(&self.opts.client_id).await? {
            return Ok(app);
        }
        let mut url = reqwest::Url::parse(&self.url(&["api", "v1", "apps"])).expect("valid URL");
        url.query_pairs_mut()
            .append_pair("filter", "name eq \"oidc_client\"")
            .append_pair("limit", "200");
        let mut next = Some(url.to_string());
        let mut pages = 0;
        while let Some(page_url) = next.take() {
            pages += 1;
            if pages > MAX_APP_PAGES {
                break;
            }
            let (page, headers) = self
                .json(Op::ListApps, Method::GET, &page_url, None)
                .await?;
            let apps = page.as_array().cloned().unwrap_or_default();
            if let Some(app) = apps
                .into_iter()
                .find(|a| model::client_id_of(a) == self.opts.client_id)
            {
                if let Some(id) = app["id"].as_str() {
                    self.deps.facts.put(&key, id.to_string(), APP_ID_TTL);
                }
                return Ok(app);
            }
            next = next_link(&headers);
        }
        Err(ProviderError::ClientNotFound {
            provider: KIND,
            what: format!("OIDC app with client ID {}", self.opts.client_id),
            detail: format!(
                "no OIDC app of {} has client ID {:?}: spec.provider.okta.clientId must be CODER_OIDC_CLIENT_ID \
                 (Applications > Coder's app > General > Client ID)",
                self.org, self.opts.client_id
            ),
        })
    }

    async fn read(&self) -> Result<Snapshot, ProviderError> {
        let app = self.find_app().await?;
        let server = match &self.server {
            None => None,
            Some(sid) => {
                let url = self.server_url(sid, &["policies"]);
                let (policies, _) = self.json(Op::ListPolicies, Method::GET, &url, None).await?;
                let policies = policies.as_array().cloned().unwrap_or_default();
                let rules = match model::applying_policy(&policies, &self.opts.client_id)
                    .and_then(|p| p["id"].as_str())
                {
                    Some(pid) => {
                        let url = self.server_url(sid, &["policies", pid, "rules"]);
                        let (rules, _) = self.json(Op::ListRules, Method::GET, &url, None).await?;
                        rules.as_array().cloned().unwrap_or_default()
                    }
                    None => Vec::new(),
                };
                Some(model::ServerState {
                    id: sid.clone(),
                    policies,
                    rules,
                })
            }
        };
        Ok(Snapshot { app, server })
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|l| l.contains("rel=\"next\""))
        .and_then(|l| Some(l.split_once('<')?.1.split_once('>')?.0.to_string()))
}

#[async_trait]
impl IdentityProvider for Okta {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    fn check(&self, desired: &DesiredSettings) -> Result<(), ProviderError> {
        model::check_desired(desired, self.server.is_some())
    }

    async fn observe(&self, desired: &DesiredSettings) -> Result<AnySnapshot, ProviderError> {
        self.check(desired)?;
        Ok(AnySnapshot::new(KIND, self.read().await?))
    }

    fn plan(
        &self,
        snapshot: &AnySnapshot,
        desired: &DesiredSettings,
    ) -> Result<IdpPlan, ProviderError> {
        let snap: &Snapshot = snapshot.get()?;
        let p = model::plan(snap, desired, &self.opts)?;
        let observation = p.observation.clone();
        Ok(IdpPlan::new(KIND, desired, observation, Writes { plan: p }))
    }

    async fn apply(&self, todo: &IdpPlan) -> Result<Applied, ProviderError> {
        if todo.is_empty() {
            return Ok(Applied::unchanged(todo));
        }
        let Writes { plan: p } = todo.writes()?;
        let desired = todo.desired();
        // PUT replaces the whole app and rule, and Okta has no ETag: build the bodies from a read
        // taken right now, and write only if the owned fields still need exactly the planned
        // changes.
        let fresh = model::plan(&self.read().await?, desired, &self.opts)?;
        if fresh.observation.changes != p.observation.changes {
            return Err(ProviderError::Protocol {
                provider: KIND,
                operation: Op::PutApp.what().into(),
                detail: "Coder's app or its access policy rule was changed by someone else since it was read, so the \
                         planned update was not written; the next pass plans again"
                    .into(),
            });
        }
        let mut actions = Vec::new();
        let line = |target: &str| {
            p.observation
                .changes
                .iter()
                .filter(|c| c.target == target)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        if let Some(body) = &fresh.app_body {
            let id = body["id"].as_str().unwrap_or_default();
            let url = self.url(&["api", "v1", "apps", id]);
            self.json(Op::PutApp, Method::PUT, &url, Some(body)).await?;
            let target = model::app_target(body);
            actions.push(format!("updated {target}: {}", line(&target)));
        }
        if let (Some(rule), Some(sid)) = (&fresh.rule, &self.server) {
            let url = self.server_url(sid, &["policies", &rule.policy, "rules", &rule.rule]);
            self.json(Op::PutRule, Method::PUT, &url, Some(&rule.body))
                .await?;
            let targets: Vec<&str> = p
                .observation
                .changes
                .iter()
                .map(|c| c.target.as_str())
                .filter(|t| t.starts_with("Okta rule"))
                .collect();
            if let Some(t) = targets.first() {
                actions.push(format!("updated {t}: {}", line(t)));
            }
        }
        let observation = super::read_back(self, todo).await?;
        Ok(Applied {
            observation,
            actions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_wait_is_measured_against_the_answers_date() {
        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-reset", "1767225610".parse().unwrap());
        h.insert(
            reqwest::header::DATE,
            "Thu, 01 Jan 2026 00:00:05 GMT".parse().unwrap(),
        );
        // 2026-01-01T00:00:05Z is 1767225605: 5 s to the reset, plus one.
        assert_eq!(
            http::rate_limit_reset_wait(&h),
            Some(Duration::from_secs(6))
        );
        assert_eq!(http::retry_after(&h), Some(Duration::from_secs(6)));
        h.append("x-rate-limit-reset", "1767225620".parse().unwrap());
        assert_eq!(
            http::rate_limit_reset_wait(&h),
            None,
            "a doubled header is not trusted"
        );
        assert_eq!(http::rate_limit_reset_wait(&HeaderMap::new()), None);
    }

    #[test]
    fn org_urls_and_links() {
        assert_eq!(
            normalize_org("https://example.okta.com/").unwrap(),
            "https://example.okta.com"
        );
        for bad in [
            "example.okta.com",
            "https://example.okta.com/oauth2/default",
            "ftp://example.okta.com",
        ] {
            assert!(normalize_org(bad).is_err(), "{bad}");
        }
        let mut h = HeaderMap::new();
        h.append(
            reqwest::header::LINK,
            "<https://o/api/v1/apps?limit=2>; rel=\"self\""
                .parse()
                .unwrap(),
        );
        h.append(
            reqwest::header::LINK,
            "<https://o/api/v1/apps?after=x&limit=2>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://o/api/v1/apps?after=x&limit=2")
        );
    }
}
