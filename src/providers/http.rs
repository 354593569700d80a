//! HTTP plumbing shared by the providers: one `reqwest::Client` per CA bundle, timeouts on every
//! call, an admin-token cache, `Retry-After` parsing, status-code mapping and call metrics.
//!
//! TLS verification is never switched off: a provider with a private CA takes a PEM bundle from
//! the `ca.crt` key of the policy's credentials Secret.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Credentials, ProviderDeps, ProviderError, ProviderKind};

/// Builds and caches HTTP clients (one per distinct CA bundle).
pub struct HttpClients {
    timeout: Duration,
    clients: Mutex<HashMap<[u8; 32], reqwest::Client>>,
}

impl HttpClients {
    /// Clients with the given per-request timeout.
    pub fn new(timeout: Duration) -> Self {
        HttpClients {
            timeout,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// A client for a policy: trusts the platform roots plus the `ca.crt` of its credentials
    /// Secret, if present.
    pub fn client_for(
        &self,
        provider: ProviderKind,
        credentials: &Credentials,
    ) -> Result<reqwest::Client, ProviderError> {
        let ca = credentials
            .get("ca.crt")
            .map(|c| c.expose_secret().as_bytes().to_vec());
        self.client(provider, ca.as_deref())
    }

    /// A client trusting the platform roots plus `ca_pem` if given.
    pub fn client(
        &self,
        provider: ProviderKind,
        ca_pem: Option<&[u8]>,
    ) -> Result<reqwest::Client, ProviderError> {
        let key: [u8; 32] = Sha256::digest(ca_pem.unwrap_or_default()).into();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("oidc-refresh-operator/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ProviderError::InvalidSecret {
                    provider,
                    detail: format!("ca.crt is not a PEM certificate bundle: {e}"),
                }
            })?;
            if certs.is_empty() {
                return Err(ProviderError::InvalidSecret {
                    provider,
                    detail: "ca.crt holds no PEM certificate".into(),
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| ProviderError::Protocol {
            provider,
            operation: "create an HTTP client".into(),
            detail: e.to_string(),
        })?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// Cache of admin access tokens, keyed by provider endpoint + credentials Secret version.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<String, (SecretString, Instant)>>,
}

impl TokenCache {
    /// A cached token that is not about to expire.
    pub fn get(&self, key: &str) -> Option<SecretString> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(key)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(t, _)| t.clone())
    }

    /// Stores a token valid for `expires_in`; it is dropped 30 s (or a tenth of its life) early.
    pub fn put(&self, key: &str, token: SecretString, expires_in: Duration) {
        let margin = (expires_in / 10).min(Duration::from_secs(30));
        let until = Instant::now() + expires_in.saturating_sub(margin);
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|_, (_, exp)| *exp > Instant::now());
        tokens.insert(key.to_string(), (token, until));
    }

    /// Forgets a token (after a 401).
    pub fn invalidate(&self, key: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// How long a [`FactCache`] entry is trusted before it is read again.
pub const FACT_TTL: Duration = Duration::from_secs(600);

/// Facts that belong to a server, realm or tenant rather than to one client: a realm's discovery
/// document, a server's version, Microsoft Graph's permission catalogue, an application's service
/// principal id. They are shared by every policy that points there, so a thousand policies at one
/// realm read them once per [`FACT_TTL`] instead of once per reconcile each. Only successful
/// answers are kept; keys name the server (and realm or tenant) they came from.
#[derive(Default)]
pub struct FactCache {
    facts: Mutex<HashMap<String, Fact>>,
}

/// A fact and when it expires.
type Fact = (Arc<dyn Any + Send + Sync>, Instant);

impl FactCache {
    /// The fact stored under `key`, unless it expired or has another type.
    pub fn get<T: Clone + Send + Sync + 'static>(&self, key: &str) -> Option<T> {
        let facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        let (value, until) = facts.get(key)?;
        if *until <= Instant::now() {
            return None;
        }
        value.downcast_ref::<T>().cloned()
    }

    /// Stores `value` under `key` for `ttl`; expired entries are dropped on the way.
    pub fn put<T: Send + Sync + 'static>(&self, key: &str, value: T, ttl: Duration) {
        let now = Instant::now();
        let mut facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        facts.retain(|_, (_, until)| *until > now);
        facts.insert(key.to_string(), (Arc::new(value), now + ttl));
    }

    /// Forgets `key` (the fact turned out to be wrong).
    pub fn invalidate(&self, key: &str) {
        self.facts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Entries held (expired ones included until the next `put`).
    pub fn len(&self) -> usize {
        self.facts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A token bucket per identity-provider host, shared by every policy, so many policies pointing
/// at one IdP do not exceed `qps` (with bursts up to `burst`). `qps <= 0` means unlimited.
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, tokio::time::Instant)>>,
}

impl RateLimiter {
    /// A limiter allowing `qps` requests per second per host, bursts of `burst`.
    pub fn new(qps: f64, burst: u32) -> Self {
        RateLimiter {
            qps,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self::new(0.0, 1)
    }

    /// Takes a token for `host`, waiting as long as needed.
    pub async fn acquire(&self, host: &str) {
        if self.qps <= 0.0 {
            return;
        }
        let wait = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            let (tokens, last) = buckets.entry(host.to_string()).or_insert((self.burst, now));
            *tokens =
                (*tokens + now.duration_since(*last).as_secs_f64() * self.qps).min(self.burst);
            *last = now;
            *tokens -= 1.0;
            if *tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-*tokens / self.qps)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Parses `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::strtime::parse("%a, %d %b %Y %H:%M:%S GMT", value)
        .ok()?
        .to_datetime()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp();
    let wait = when.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// Bounded outcome label for a status code.
pub fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "success",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        429 => "throttled",
        400..=499 => "client_error",
        _ => "server_error",
    }
}

/// Maps a non-success answer to an error. `detail` is the provider's own message, already
/// extracted from its error body.
pub fn error_for_status(
    provider: ProviderKind,
    operation: &str,
    status: StatusCode,
    headers: &HeaderMap,
    detail: String,
) -> ProviderError {
    let operation = operation.to_string();
    let detail = truncate(&detail, 500);
    match status.as_u16() {
        401 => ProviderError::AuthenticationFailed { provider, detail },
        403 => ProviderError::Forbidden {
            provider,
            operation,
            detail,
        },
        404 => ProviderError::ClientNotFound {
            provider,
            what: operation,
            detail,
        },
        429 => ProviderError::Throttled {
            provider,
            operation,
            retry_after: retry_after(headers),
        },
        503 if headers.contains_key(reqwest::header::RETRY_AFTER) => ProviderError::Throttled {
            provider,
            operation,
            retry_after: retry_after(headers),
        },
        500..=599 => ProviderError::Unreachable {
            provider,
            operation,
            detail: format!(
                "HTTP {status}{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                }
            ),
        },
        400 | 409 | 422 => ProviderError::Rejected {
            provider,
            operation,
            detail,
        },
        _ => ProviderError::Protocol {
            provider,
            operation,
            detail: format!("HTTP {status}: {detail}"),
        },
    }
}

/// How often one call is retried when the server throttles (429, or 503 with `Retry-After`).
pub const THROTTLE_RETRIES: u32 = 3;
/// Longest `Retry-After` waited for inside one call; a longer one fails the call with
/// [`ProviderError::Throttled`] so the controller requeues the policy instead.
pub const MAX_INLINE_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Sends a request with metrics, the per-host rate limit, and up to [`THROTTLE_RETRIES`] retries
/// when the server throttles (waiting its `Retry-After`, 1 s when absent, at most
/// [`MAX_INLINE_RETRY_AFTER`]), so a throttling IdP slows a reconcile down instead of failing it.
/// Network failures and timeouts become [`ProviderError::Unreachable`]; the final answer,
/// throttled or not, is returned for the provider to map.
pub async fn send(
    deps: &ProviderDeps,
    provider: ProviderKind,
    operation: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ProviderError> {
    let (client, built) = request.build_split();
    let mut request = built.map_err(|e| ProviderError::Protocol {
        provider,
        operation: operation.to_string(),
        detail: describe_reqwest_error(&e),
    })?;
    let host = request
        .url()
        .host_str()
        .map(|h| format!("{h}:{}", request.url().port_or_known_default().unwrap_or(0)));
    let mut attempt = 0;
    loop {
        // A copy for a retry (bodies here are in memory, so cloning succeeds).
        let spare = if attempt < THROTTLE_RETRIES {
            request.try_clone()
        } else {
            None
        };
        if let Some(host) = &host {
            deps.limiter.acquire(host).await;
        }
        let started = Instant::now();
        let result = client.execute(request).await;
        let elapsed = started.elapsed();
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                let label = if e.is_timeout() {
                    "timeout"
                } else {
                    "network_error"
                };
                deps.metrics
                    .provider_call(provider.as_str(), operation, label, elapsed);
                return Err(ProviderError::Unreachable {
                    provider,
                    operation: operation.to_string(),
                    detail: describe_reqwest_error(&e),
                });
            }
        };
        deps.metrics.provider_call(
            provider.as_str(),
            operation,
            outcome(resp.status()),
            elapsed,
        );
        let throttled = resp.status() == StatusCode::TOO_MANY_REQUESTS
            || (resp.status() == StatusCode::SERVICE_UNAVAILABLE
                && resp.headers().contains_key(reqwest::header::RETRY_AFTER));
        let wait = retry_after(resp.headers()).unwrap_or(Duration::from_secs(1));
        match spare {
            Some(next) if throttled && wait <= MAX_INLINE_RETRY_AFTER => {
                tracing::debug!(
                    provider = provider.as_str(),
                    operation,
                    wait_s = wait.as_secs_f64(),
                    "throttled; retrying"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
                request = next;
            }
            _ => return Ok(resp),
        }
    }
}

/// Answer of an OAuth token endpoint.
pub enum TokenAnswer {
    /// A token, now cached under the given key.
    Token(SecretString),
    /// The endpoint refused; the provider maps this to its own error.
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// Headers (for `Retry-After`).
        headers: HeaderMap,
        /// Body text.
        body: String,
    },
}

/// Posts a token request (`form`) and caches a successful answer under `cache_key` for its
/// `expires_in` (default `default_ttl`).
pub async fn request_token(
    deps: &ProviderDeps,
    provider: ProviderKind,
    operation: &'static str,
    request: reqwest::RequestBuilder,
    cache_key: &str,
    default_ttl: Duration,
) -> Result<TokenAnswer, ProviderError> {
    let resp = send(deps, provider, "token", request).await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Ok(TokenAnswer::Refused {
            status,
            headers,
            body,
        });
    }
    let protocol = |detail: String| ProviderError::Protocol {
        provider,
        operation: operation.into(),
        detail,
    };
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
        protocol(format!(
            "the token endpoint answered something that is not JSON: {e}"
        ))
    })?;
    let token = v
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| protocol("the token endpoint answered without access_token".into()))?;
    let ttl = v
        .get("expires_in")
        .and_then(|e| e.as_u64().or_else(|| e.as_str()?.parse().ok()))
        .map(Duration::from_secs)
        .unwrap_or(default_ttl);
    let token = SecretString::from(token.to_string());
    deps.tokens.put(cache_key, token.clone(), ttl);
    Ok(TokenAnswer::Token(token))
}

/// A short fingerprint of credential values for token-cache keys: the first 8 bytes (hex) of the
/// SHA-256 of the values, each followed by a NUL byte.
pub fn credentials_fingerprint(parts: &[&SecretString]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.expose_secret().as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    format!(
        "{:x}",
        u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
    )
}

/// The `error` code of an OAuth token-endpoint error body (`{"error": "..."}`).
pub fn oauth_error_code(body: &str) -> Option<String> {
    serde_json::from_str::<Value>(body)
        .ok()?
        .get("error")?
        .as_str()
        .map(str::to_string)
}

/// One JSON call of an admin API that takes a bearer token.
pub struct BearerCall<'a> {
    /// Metric label.
    pub metric: &'static str,
    /// What the call does, for messages.
    pub what: &'a str,
    /// HTTP method.
    pub method: Method,
    /// Full URL.
    pub url: &'a str,
    /// JSON body, if any.
    pub body: Option<&'a Value>,
}

/// Answer of a [`BearerCall`].
pub enum BearerAnswer {
    /// A success, with its JSON body (`None` for an empty body such as 204).
    Ok(Option<Value>),
    /// Any other status (a 401 only after a renewal), for the provider to map.
    Status(StatusCode, HeaderMap, String),
}

/// Sends `call` with a bearer token from `token(force)` (`Accept: application/json`, the body as
/// JSON). A 401 drops the cached token under `token_key`, fetches a fresh one and retries once.
pub async fn bearer_call<F, Fut>(
    deps: &ProviderDeps,
    client: &reqwest::Client,
    provider: ProviderKind,
    token_key: &str,
    token: F,
    call: BearerCall<'_>,
) -> Result<BearerAnswer, ProviderError>
where
    F: Fn(bool) -> Fut,
    Fut: Future<Output = Result<SecretString, ProviderError>>,
{
    let mut renewed = false;
    loop {
        let token = token(renewed).await?;
        let mut req = client
            .request(call.method.clone(), call.url)
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = call.body {
            req = req.json(b);
        }
        let resp = send(deps, provider, call.metric, req).await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED && !renewed {
            deps.tokens.invalidate(token_key);
            renewed = true;
            continue;
        }
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| ProviderError::Unreachable {
            provider,
            operation: call.what.to_string(),
            detail: describe_reqwest_error(&e),
        })?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(BearerAnswer::Ok(None));
            }
            return serde_json::from_str(&text)
                .map(|v| BearerAnswer::Ok(Some(v)))
                .map_err(|e| ProviderError::Protocol {
                    provider,
                    operation: call.what.to_string(),
                    detail: format!("the answer is not JSON: {e}"),
                });
        }
        return Ok(BearerAnswer::Status(status, headers, text));
    }
}

/// A reqwest error with its causes (request URLs never carry credentials).
pub fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "request timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    let mut msg = truncate(&msg, 500);
    if msg.contains("invalid peer certificate") {
        msg.push_str(
            ". The server's TLS certificate is not trusted: if it is issued by a private CA, put that CA's certificate (PEM) under the key ca.crt of the policy's credentials Secret",
        );
    }
    msg
}

/// Truncates to at most `max` bytes on a char boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    #[test]
    fn facts_expire_and_keep_their_type() {
        let facts = FactCache::default();
        facts.put("a", 7u32, Duration::from_secs(60));
        assert_eq!(facts.get::<u32>("a"), Some(7));
        assert_eq!(
            facts.get::<String>("a"),
            None,
            "another type is not this fact"
        );
        assert_eq!(facts.get::<u32>("b"), None);
        facts.put("gone", 1u32, Duration::ZERO);
        assert_eq!(facts.get::<u32>("gone"), None, "expired");
        facts.put("c", 2u32, Duration::from_secs(60));
        assert_eq!(facts.len(), 2, "expired entries are dropped on put");
        facts.invalidate("a");
        assert_eq!(facts.get::<u32>("a"), None);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn status_codes_map_to_errors() {
        let h = HeaderMap::new();
        let k = ProviderKind::Keycloak;
        assert!(matches!(
            error_for_status(k, "x", StatusCode::UNAUTHORIZED, &h, String::new()),
            ProviderError::AuthenticationFailed { .. }
        ));
        assert!(matches!(
            error_for_status(k, "x", StatusCode::FORBIDDEN, &h, String::new()),
            ProviderError::Forbidden { .. }
        ));
        assert!(matches!(
            error_for_status(k, "x", StatusCode::NOT_FOUND, &h, String::new()),
            ProviderError::ClientNotFound { .. }
        ));
        let mut ra = HeaderMap::new();
        ra.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        let e = error_for_status(k, "x", StatusCode::TOO_MANY_REQUESTS, &ra, String::new());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(e.is_transient());
        let e = error_for_status(k, "x", StatusCode::SERVICE_UNAVAILABLE, &ra, String::new());
        assert!(matches!(e, ProviderError::Throttled { .. }));
        let e = error_for_status(k, "x", StatusCode::BAD_GATEWAY, &h, String::new());
        assert!(matches!(e, ProviderError::Unreachable { .. }) && e.is_transient());
        let e = error_for_status(k, "x", StatusCode::UNPROCESSABLE_ENTITY, &h, "bad".into());
        assert!(matches!(e, ProviderError::Rejected { .. }) && !e.is_transient());
    }

    #[test]
    fn token_cache_expires_early_and_invalidates() {
        let c = TokenCache::default();
        c.put(
            "a",
            SecretString::from("t".to_string()),
            Duration::from_secs(300),
        );
        assert!(c.get("a").is_some());
        c.invalidate("a");
        assert!(c.get("a").is_none());
        c.put("b", SecretString::from("t".to_string()), Duration::ZERO);
        assert!(c.get("b").is_none(), "an expired token is not handed out");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_spaces_requests_per_host() {
        let l = RateLimiter::new(10.0, 2);
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            l.acquire("kc:443").await;
        }
        // Two from the burst, then one every 100 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        let other = tokio::time::Instant::now();
        l.acquire("pf:9999").await;
        assert_eq!(
            other.elapsed(),
            Duration::ZERO,
            "hosts have their own buckets"
        );
        let u = RateLimiter::unlimited();
        for _ in 0..100 {
            u.acquire("x").await;
        }
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
