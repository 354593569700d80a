//! HTTP plumbing shared by the providers: one `reqwest::Client` per CA bundle, timeouts on every
//! call, an admin-token cache, `Retry-After` parsing, status-code mapping and call metrics.
//!
//! TLS verification is never switched off: a provider with a private CA takes a PEM bundle from
//! the `ca.crt` key of the policy's credentials Secret.
//!
//! Everything here treats the identity provider as untrusted (whoever can create a policy chooses
//! the URL): every answer body is read in full by [`send`] with a size cap
//! ([`MAX_ADMIN_BODY`], [`MAX_TOKEN_BODY`]) and within the request timeout, so providers only ever
//! parse bounded, in-memory bodies; at most [`TenantPolicy::max_in_flight_per_host`] requests run
//! against one host at a time; every duration an answer carries is clamped before arithmetic;
//! error bodies have the credentials the request carried blanked out before anyone turns them into
//! a message; and [`TenantPolicy`] decides which hosts may be called at all (checked on the URL
//! and again on every address the name resolves to, at connect time).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Credentials, ProviderDeps, ProviderError, ProviderKind};

/// Largest admin-API answer read (JSON documents of one client, realm or application).
pub const MAX_ADMIN_BODY: usize = 2 * 1024 * 1024;
/// Largest token-endpoint answer read.
pub const MAX_TOKEN_BODY: usize = 64 * 1024;
/// Longest token lifetime believed (`expires_in` beyond it is clamped).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Longest `Retry-After` believed: the controller's default backoff cap.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Distinct CA bundles whose clients are kept (least recently used dropped first).
pub const MAX_CACHED_CLIENTS: usize = 64;
/// Entries a per-host map (rate-limit buckets, in-flight limits) keeps before idle ones go.
pub const MAX_HOST_ENTRIES: usize = 1024;
/// Entries of the token and fact caches before the oldest are dropped.
pub const MAX_CACHE_ENTRIES: usize = 10_000;
/// Error text from an identity provider kept for messages.
pub const MAX_REMOTE_TEXT: usize = 300;

/// What a policy's author can make the operator do over the network, and with which Secrets.
/// One operator serves every namespace, so this is the operator's, not the policy's, to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantPolicy {
    /// Plain `http` to a loopback address (tests, the sandbox). Never to anything else.
    pub allow_insecure_http: bool,
    /// Host suffixes identity providers may be at (`example.com` allows `example.com` and
    /// `sso.example.com`; an IP address must be listed exactly). Empty: any host that is not
    /// denied. A listed host is allowed even when it would be denied.
    pub allowed_hosts: Vec<String>,
    /// Hosts never called unless listed in `allowed_hosts`: the Kubernetes API server, as
    /// `host` or `host:port`.
    pub denied_hosts: Vec<String>,
    /// A Secret is used as identity-provider credentials only when it carries
    /// [`CREDENTIALS_LABEL`]`=true`.
    pub require_credentials_label: bool,
    /// Requests in flight to one host at a time (0: unlimited).
    pub max_in_flight_per_host: usize,
}

/// Label that opts a Secret in to being used as identity-provider credentials.
pub const CREDENTIALS_LABEL: &str = "oidcrefresh.dev/credentials";

/// Host names of cloud metadata services, always denied unless listed.
const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.azure.internal",
    "instance-data",
    "instance-data.ec2.internal",
];

impl Default for TenantPolicy {
    /// Permissive defaults for the library and its tests (loopback http allowed, no label
    /// required); `oidc-refresh-operator run` uses [`TenantPolicy::strict`] plus its flags.
    fn default() -> Self {
        TenantPolicy {
            allow_insecure_http: true,
            allowed_hosts: Vec::new(),
            denied_hosts: Vec::new(),
            require_credentials_label: false,
            max_in_flight_per_host: 8,
        }
    }
}

impl TenantPolicy {
    /// The defaults of `oidc-refresh-operator run`: https only, credentials opt-in by label.
    pub fn strict() -> Self {
        TenantPolicy {
            allow_insecure_http: false,
            require_credentials_label: true,
            ..TenantPolicy::default()
        }
    }

    fn listed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_hosts.iter().any(|s| {
            let s = s
                .trim()
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            !s.is_empty() && (host == s || host.ends_with(&format!(".{s}")))
        })
    }

    /// Whether an address may be connected to for a host that is not listed.
    fn address_allowed(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if ip.is_unspecified() || is_link_local(ip) || is_metadata(ip) || ip.is_multicast() {
            return false;
        }
        !ip.is_loopback() || self.allow_insecure_http
    }

    /// Checks a URL the operator is about to call (or build calls on): `Err` says why not, in
    /// words for the policy's status.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the URL carries a user name or password (user:password@host); put credentials in the credentials Secret instead".into());
        }
        let Some(host) = url.host_str() else {
            return Err(format!("{url} has no host"));
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ip: Option<IpAddr> = bare.parse().ok();
        match url.scheme() {
            "https" => {}
            "http" => {
                let loopback = ip.is_some_and(|ip| canonical(ip).is_loopback())
                    || bare.eq_ignore_ascii_case("localhost");
                if !(self.allow_insecure_http && loopback) {
                    return Err(format!(
                        "{host} is called over plain http, which would send the credentials unencrypted; use https (plain http is allowed only to a loopback address, and only when the operator runs with --allow-insecure-http)"
                    ));
                }
            }
            other => return Err(format!("the URL scheme {other:?} is not http or https")),
        }
        if self.listed(bare) {
            return Ok(());
        }
        if !self.allowed_hosts.is_empty() {
            return Err(format!(
                "{host} is not among the identity-provider hosts this operator may call (--allowed-idp-hosts: {}); ask the operator's administrator to add it",
                self.allowed_hosts.join(", ")
            ));
        }
        let lower = bare.trim_end_matches('.').to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(0);
        let denied = self.denied_hosts.iter().any(|d| {
            let d = d.trim().to_ascii_lowercase();
            d == lower || d == format!("{lower}:{port}") || d == format!("[{lower}]:{port}")
        });
        if denied || is_cluster_api_name(&lower) {
            return Err(format!(
                "{host} is the Kubernetes API server, which the operator never calls on a policy's behalf"
            ));
        }
        if METADATA_HOSTS.contains(&lower.as_str()) {
            return Err(format!(
                "{host} is a cloud metadata service, which the operator never calls"
            ));
        }
        if let Some(ip) = ip
            && !self.address_allowed(ip)
        {
            return Err(format!(
                "{host} is a link-local, metadata, loopback or unspecified address, which the operator does not call unless --allowed-idp-hosts lists it"
            ));
        }
        Ok(())
    }
}

fn is_cluster_api_name(host: &str) -> bool {
    matches!(
        host,
        "kubernetes" | "kubernetes.default" | "kubernetes.default.svc"
    ) || host.starts_with("kubernetes.default.svc.")
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn is_metadata(ip: IpAddr) -> bool {
    const AWS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    matches!(ip, IpAddr::V4(v4) if v4 == Ipv4Addr::new(169, 254, 169, 254) || v4 == Ipv4Addr::new(100, 100, 100, 200))
        || ip == IpAddr::V6(AWS_V6)
}

/// Resolves names and drops the addresses [`TenantPolicy`] denies, at connect time, so a name
/// that resolves (or is re-pointed) to a link-local or metadata address is never connected to.
struct GuardedResolver {
    policy: Arc<TenantPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let listed = policy.listed(&host);
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| listed || policy.address_allowed(a.ip()))
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                return Err(format!(
                    "{host} resolves only to addresses the operator does not call (link-local, metadata, loopback or unspecified)"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// Builds and caches HTTP clients (one per distinct CA bundle, at most [`MAX_CACHED_CLIENTS`]),
/// and holds the [`TenantPolicy`] and the per-host in-flight limits.
pub struct HttpClients {
    timeout: Duration,
    policy: Arc<TenantPolicy>,
    clients: Mutex<HashMap<[u8; 32], (reqwest::Client, Instant)>>,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl HttpClients {
    /// Clients with the given per-request timeout and the permissive [`TenantPolicy::default`].
    pub fn new(timeout: Duration) -> Self {
        Self::with_policy(timeout, TenantPolicy::default())
    }

    /// Clients with the given per-request timeout and tenant policy.
    pub fn with_policy(timeout: Duration, policy: TenantPolicy) -> Self {
        HttpClients {
            timeout,
            policy: Arc::new(policy),
            clients: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant policy.
    pub fn policy(&self) -> &TenantPolicy {
        &self.policy
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Distinct clients cached.
    pub fn cached_clients(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A permit to send one request to `host`, waiting at most `wait`; `None` when the host
    /// already has [`TenantPolicy::max_in_flight_per_host`] requests in flight all that time.
    async fn host_permit(
        &self,
        host: &str,
        wait: Duration,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ()> {
        let max = self.policy.max_in_flight_per_host;
        if max == 0 {
            return Ok(None);
        }
        let sem = {
            let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= MAX_HOST_ENTRIES && !map.contains_key(host) {
                // Idle hosts (nobody holds or waits for a permit) are forgotten.
                map.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < max);
            }
            map.entry(host.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(max)))
                .clone()
        };
        match tokio::time::timeout(wait, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(Some(p)),
            _ => Err(()),
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
        if let Some((c, used)) = clients.get_mut(&key) {
            *used = Instant::now();
            return Ok(c.clone());
        }
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("oidc-refresh-operator/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(4)
            .pool_idle_timeout(Duration::from_secs(60))
            .dns_resolver(Arc::new(GuardedResolver {
                policy: self.policy.clone(),
            }));
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
        if clients.len() >= MAX_CACHED_CLIENTS
            && let Some(oldest) = clients
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
        {
            clients.remove(&oldest);
        }
        clients.insert(key, (client.clone(), Instant::now()));
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
    /// `expires_in` comes from the identity provider: it is clamped to [`MAX_TOKEN_LIFETIME`].
    pub fn put(&self, key: &str, token: SecretString, expires_in: Duration) {
        let expires_in = expires_in.min(MAX_TOKEN_LIFETIME);
        let margin = (expires_in / 10).min(Duration::from_secs(30));
        let now = Instant::now();
        let Some(until) = now.checked_add(expires_in.saturating_sub(margin)) else {
            return;
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|_, (_, exp)| *exp > now);
        if tokens.len() >= MAX_CACHE_ENTRIES
            && let Some(first) = tokens
                .iter()
                .min_by_key(|(_, (_, exp))| *exp)
                .map(|(k, _)| k.clone())
        {
            tokens.remove(&first);
        }
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
        let Some(until) = now.checked_add(ttl) else {
            return;
        };
        let mut facts = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        facts.retain(|_, (_, until)| *until > now);
        if facts.len() >= MAX_CACHE_ENTRIES
            && let Some(first) = facts
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| k.clone())
        {
            facts.remove(&first);
        }
        facts.insert(key.to_string(), (Arc::new(value), until));
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
    /// A limiter allowing `qps` requests per second per host, bursts of `burst` (a `qps` that is
    /// not a finite positive number means unlimited).
    pub fn new(qps: f64, burst: u32) -> Self {
        RateLimiter {
            qps: if qps.is_finite() { qps } else { 0.0 },
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self::new(0.0, 1)
    }

    /// Hosts with a bucket.
    pub fn hosts(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Takes a token for `host`, waiting as long as needed.
    pub async fn acquire(&self, host: &str) {
        if self.qps <= 0.0 {
            return;
        }
        let wait = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            if buckets.len() >= MAX_HOST_ENTRIES && !buckets.contains_key(host) {
                // A bucket that has refilled completely is the same as no bucket.
                let (qps, burst) = (self.qps, self.burst);
                buckets.retain(|_, (t, last)| {
                    *t + now.duration_since(*last).as_secs_f64() * qps < burst
                });
            }
            let (tokens, last) = buckets.entry(host.to_string()).or_insert((self.burst, now));
            *tokens =
                (*tokens + now.duration_since(*last).as_secs_f64() * self.qps).min(self.burst);
            *last = now;
            *tokens -= 1.0;
            if *tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::try_from_secs_f64(-*tokens / self.qps)
                    .unwrap_or(MAX_RETRY_AFTER)
                    .min(MAX_RETRY_AFTER)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Parses `Retry-After` as seconds or an HTTP date, else Okta-style rate-limit headers
/// ([`rate_limit_reset_wait`]), clamped to [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers)
        .or_else(|| rate_limit_reset_wait(headers))
        .map(|d| d.min(MAX_RETRY_AFTER))
}

/// The wait until an `X-Rate-Limit-Reset` window resets (UTC epoch seconds), measured against the
/// answer's own `Date` (so a skewed local clock does not matter), plus one second, as Okta's SDKs
/// compute it. `None` without the header, or when it appears more than once (Okta's SDKs then do
/// not trust it either).
pub fn rate_limit_reset_wait(headers: &HeaderMap) -> Option<Duration> {
    let mut values = headers.get_all("x-rate-limit-reset").iter();
    let value = values.next()?.to_str().ok()?.trim();
    if values.next().is_some() || value.contains(',') {
        return None;
    }
    let reset: i64 = value.parse().ok()?;
    let date = headers
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|d| jiff::fmt::strtime::parse("%a, %d %b %Y %H:%M:%S GMT", d.trim()).ok())
        .and_then(|t| t.to_datetime().ok())
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp().as_second())
        .unwrap_or_else(|| jiff::Timestamp::now().as_second());
    let secs = reset.saturating_sub(date).max(0).saturating_add(1);
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Any number of digits: a value too large for u64 is "very long", not "absent".
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
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
    let detail = truncate(&detail, MAX_REMOTE_TEXT);
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
/// [`ProviderError::Throttled`] so the controller requeues the policy instead. Inline waits hold a
/// reconcile slot and count against the reconcile deadline, so they stay short.
pub const MAX_INLINE_RETRY_AFTER: Duration = Duration::from_secs(3);
/// Longest wait for a free in-flight slot of a host (see
/// [`TenantPolicy::max_in_flight_per_host`]) before the call fails as unreachable.
pub const MAX_HOST_SLOT_WAIT: Duration = Duration::from_secs(10);

/// Sends a request with metrics, the per-host rate limit and in-flight cap, and up to
/// [`THROTTLE_RETRIES`] retries when the server throttles (waiting its `Retry-After`, 1 s when
/// absent, at most [`MAX_INLINE_RETRY_AFTER`]), so a throttling IdP slows a reconcile down instead
/// of failing it. The URL must pass the [`TenantPolicy`]. The answer's body is read here, in full,
/// within the request timeout and at most [`MAX_ADMIN_BODY`] bytes (a larger one is a
/// [`ProviderError::Protocol`] error naming the cap), so the returned response holds its body in
/// memory; an error body has every credential the request carried replaced by `[REDACTED]`.
/// Network failures and timeouts become [`ProviderError::Unreachable`]; the final answer,
/// throttled or not, is returned for the provider to map.
pub async fn send(
    deps: &ProviderDeps,
    provider: ProviderKind,
    operation: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ProviderError> {
    send_capped(deps, provider, operation, request, MAX_ADMIN_BODY).await
}

/// [`send`] with a body cap of `cap` bytes.
pub async fn send_capped(
    deps: &ProviderDeps,
    provider: ProviderKind,
    operation: &'static str,
    request: reqwest::RequestBuilder,
    cap: usize,
) -> Result<reqwest::Response, ProviderError> {
    let (client, built) = request.build_split();
    let mut request = built.map_err(|e| ProviderError::Protocol {
        provider,
        operation: operation.to_string(),
        detail: describe_reqwest_error(&e),
    })?;
    if let Err(why) = deps.http.policy().check_url(request.url()) {
        return Err(ProviderError::Unsupported {
            provider,
            detail: format!("the operator will not {operation}: {why}"),
        });
    }
    let redactor = Redactor::from_request(&request);
    let host = request
        .url()
        .host_str()
        .map(|h| format!("{h}:{}", request.url().port_or_known_default().unwrap_or(0)));
    let slot_wait = deps.http.timeout().min(MAX_HOST_SLOT_WAIT);
    let mut attempt = 0;
    loop {
        // A copy for a retry (bodies here are in memory, so cloning succeeds).
        let spare = if attempt < THROTTLE_RETRIES {
            request.try_clone()
        } else {
            None
        };
        let mut permit = None;
        if let Some(host) = &host {
            deps.limiter.acquire(host).await;
            permit = deps
                .http
                .host_permit(host, slot_wait)
                .await
                .map_err(|()| ProviderError::Unreachable {
                    provider,
                    operation: operation.to_string(),
                    detail: format!(
                        "{} requests to {host} were already in flight for {}s without an answer; the identity provider is too slow",
                        deps.http.policy().max_in_flight_per_host,
                        slot_wait.as_secs()
                    ),
                })?;
        }
        let started = Instant::now();
        let result = client.execute(request).await;
        let unreachable = |e: &reqwest::Error, elapsed: Duration| {
            let label = if e.is_timeout() {
                "timeout"
            } else {
                "network_error"
            };
            deps.metrics
                .provider_call(provider.as_str(), operation, label, elapsed);
            ProviderError::Unreachable {
                provider,
                operation: operation.to_string(),
                detail: describe_reqwest_error(e),
            }
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => return Err(unreachable(&e, started.elapsed())),
        };
        let status = resp.status();
        let version = resp.version();
        let mut headers = resp.headers().clone();
        let body = read_capped(resp, cap).await;
        drop(permit);
        let elapsed = started.elapsed();
        let body = match body {
            Ok(body) => body,
            Err(BodyError::Read(e)) => return Err(unreachable(&e, elapsed)),
            Err(BodyError::TooLarge) => {
                deps.metrics
                    .provider_call(provider.as_str(), operation, "too_large", elapsed);
                return Err(ProviderError::Protocol {
                    provider,
                    operation: operation.to_string(),
                    detail: format!(
                        "the answer (HTTP {status}) is larger than {} KiB, the most the operator reads from an identity provider",
                        cap / 1024
                    ),
                });
            }
        };
        deps.metrics
            .provider_call(provider.as_str(), operation, outcome(status), elapsed);
        let body = if status.is_success() {
            body
        } else {
            headers.remove(reqwest::header::CONTENT_LENGTH);
            redactor.redact_bytes(body)
        };
        let throttled = status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::SERVICE_UNAVAILABLE
                && headers.contains_key(reqwest::header::RETRY_AFTER));
        let wait = retry_after(&headers).unwrap_or(Duration::from_secs(1));
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
            _ => return Ok(in_memory_response(status, version, headers, body)),
        }
    }
}

enum BodyError {
    TooLarge,
    Read(reqwest::Error),
}

/// Reads a body chunk by chunk, giving up as soon as it exceeds `cap` bytes.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|l| l > cap as u64) {
        return Err(BodyError::TooLarge);
    }
    let hint = resp.content_length().unwrap_or(0).min(64 * 1024) as usize;
    let mut body = Vec::with_capacity(hint.min(cap));
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A response whose body is already in memory.
fn in_memory_response(
    status: StatusCode,
    version: reqwest::Version,
    headers: HeaderMap,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut r = axum::http::Response::new(body);
    *r.status_mut() = status;
    *r.version_mut() = version;
    *r.headers_mut() = headers;
    reqwest::Response::from(r)
}

/// Form fields of a token request whose values are credentials.
const SECRET_FORM_FIELDS: &[&str] = &[
    "client_secret",
    "password",
    "username",
    "client_id",
    "client_assertion",
    "assertion",
    "refresh_token",
    "code",
    "code_verifier",
];

/// Shortest value redacted: shorter ones would blank out ordinary words.
const MIN_REDACTED: usize = 3;

/// Blanks out known credential values, and the ways a server could echo them (as sent, form- or
/// percent-encoded, JSON-escaped), from text that came back from a server.
#[derive(Default, Clone)]
pub struct Redactor {
    needles: Vec<Vec<u8>>,
}

impl Redactor {
    /// A redactor for `values`.
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut r = Redactor::default();
        for v in values {
            r.add(v);
        }
        r
    }

    /// A redactor for the credentials a request carries: its `Authorization` header (Basic user
    /// and password, Bearer token) and the credential fields of a form body.
    pub fn from_request(request: &reqwest::Request) -> Self {
        let mut r = Redactor::default();
        if let Some(auth) = request
            .headers()
            .get(reqwest::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let (scheme, value) = auth.split_once(' ').unwrap_or(("", auth));
            r.add(value.trim());
            if scheme.eq_ignore_ascii_case("basic")
                && let Some(decoded) = base64_decode(value.trim())
                && let Ok(pair) = String::from_utf8(decoded)
            {
                let (user, password) = pair.split_once(':').unwrap_or((&pair, ""));
                // Raw (RFC 7617) or form-URL-encoded (RFC 6749 §2.3.1): both forms.
                for v in [user, password] {
                    r.add(v);
                    r.add(&percent_decode(v));
                }
            }
        }
        if let Some(body) = request.body().and_then(reqwest::Body::as_bytes)
            && let Ok(text) = std::str::from_utf8(body)
        {
            for pair in text.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if SECRET_FORM_FIELDS.contains(&percent_decode(k).as_str()) {
                    r.add(v);
                    r.add(&percent_decode(v));
                }
            }
        }
        r
    }

    fn add(&mut self, value: &str) {
        if value.len() < MIN_REDACTED {
            return;
        }
        let json = serde_json::to_string(value).unwrap_or_default();
        let json = json.trim_matches('"').to_string();
        for v in [
            value.to_string(),
            form_encode(value),
            form_encode(value).replace('+', "%20"),
            json,
        ] {
            if v.len() >= MIN_REDACTED && !self.needles.iter().any(|n| n == v.as_bytes()) {
                self.needles.push(v.into_bytes());
            }
        }
        // Longest first, so a value containing another is blanked out whole.
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    }

    /// Nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every known value replaced by `[REDACTED]`.
    pub fn redact(&self, text: &str) -> String {
        if self.needles.is_empty() {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.redact_bytes(text.as_bytes().to_vec())).into_owned()
    }

    /// `bytes` with every known value replaced by `[REDACTED]`.
    pub fn redact_bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        let mut out = bytes;
        for needle in &self.needles {
            if out.len() < needle.len() {
                continue;
            }
            let mut next = Vec::with_capacity(out.len());
            let mut i = 0;
            let mut found = false;
            while i < out.len() {
                if out[i..].starts_with(needle) {
                    next.extend_from_slice(b"[REDACTED]");
                    i += needle.len();
                    found = true;
                } else {
                    next.push(out[i]);
                    i += 1;
                }
            }
            if found {
                out = next;
            }
        }
        out
    }
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
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
        /// Body text (at most [`MAX_TOKEN_BODY`], the request's credentials redacted).
        body: String,
    },
}

/// HTTP Basic client authentication at an OAuth 2.0 token endpoint (`client_secret_basic`): the
/// client id and secret are form-URL-encoded before they are joined with `:` and base64-encoded
/// (RFC 6749 §2.3.1), as Keycloak (`BasicAuthHelper.RFC6749`) and node-oidc-provider
/// (`client_auth.js`, which Logto runs) decode them. Sent raw, a `+` in a secret reads as a
/// space, a `%` starts an escape and a `:` in the id splits it.
pub fn client_secret_basic(
    request: reqwest::RequestBuilder,
    client_id: &str,
    client_secret: &str,
) -> reqwest::RequestBuilder {
    request.basic_auth(form_encode(client_id), Some(form_encode(client_secret)))
}

/// Whether a client id or secret is VSCHAR only (`%x20-7E`, RFC 6749 Appendix A), the only
/// characters node-oidc-provider accepts from HTTP Basic once decoded (anything else answers 400
/// `invalid_request`). Other credentials have to go in the form body (`client_secret_post`).
pub fn basic_safe_credential(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// Posts a token request (`form`) and caches a successful answer under `cache_key` for its
/// `expires_in` (default `default_ttl`; at most [`MAX_TOKEN_LIFETIME`]).
pub async fn request_token(
    deps: &ProviderDeps,
    provider: ProviderKind,
    operation: &'static str,
    request: reqwest::RequestBuilder,
    cache_key: &str,
    default_ttl: Duration,
) -> Result<TokenAnswer, ProviderError> {
    let resp = send_capped(deps, provider, "token", request, MAX_TOKEN_BODY).await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    // In memory already (`send_capped`).
    let body = resp
        .bytes()
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
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
        .and_then(|e| {
            e.as_u64()
                .or_else(|| {
                    e.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0)
                        .map(|f| f.min(u64::MAX as f64) as u64)
                })
                .or_else(|| e.as_str()?.trim().parse().ok())
        })
        .map(|secs| Duration::from_secs(secs.min(MAX_TOKEN_LIFETIME.as_secs())))
        .unwrap_or(default_ttl)
        .min(MAX_TOKEN_LIFETIME);
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

/// `error: description` of an OAuth token-endpoint error object (`{"error","error_description"}`),
/// at most 400 bytes; `None` when it has no `error`.
pub fn oauth_error_message(body: &serde_json::Map<String, Value>) -> Option<String> {
    let s = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let code = s("error")?;
    Some(truncate(
        &match s("error_description") {
            Some(d) => format!("{code}: {d}"),
            None => code.to_string(),
        },
        400,
    ))
}

/// A readable message from an error body: an OAuth token-endpoint error
/// ([`oauth_error_message`]), else what `own` reads from the server's own JSON error object, else
/// the body itself, at most 400 bytes.
pub fn error_body_message(
    body: &str,
    own: impl FnOnce(&serde_json::Map<String, Value>) -> Option<String>,
) -> String {
    let body = body.trim();
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(body)
        && let Some(m) = oauth_error_message(&o).or_else(|| own(&o))
    {
        return m;
    }
    truncate(body, 400)
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
        // In memory already: `send` read it with a cap.
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
    fn error_bodies_read_oauth_first_then_the_servers_own_shape() {
        let own = |o: &serde_json::Map<String, Value>| {
            o.get("message").and_then(Value::as_str).map(str::to_string)
        };
        assert_eq!(
            error_body_message(
                r#" {"error":"invalid_client","error_description":"no"} "#,
                own
            ),
            "invalid_client: no"
        );
        assert_eq!(
            error_body_message(r#"{"error":"invalid_scope","message":"m"}"#, own),
            "invalid_scope"
        );
        assert_eq!(error_body_message(r#"{"message":"m"}"#, own), "m");
        assert_eq!(error_body_message(r#"{"other":1}"#, own), r#"{"other":1}"#);
        assert_eq!(error_body_message(" Bad Gateway\n", own), "Bad Gateway");
        let long = "x".repeat(500);
        assert_eq!(error_body_message(&long, own).len(), 400 + '…'.len_utf8());
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
    fn absurd_durations_are_clamped_not_panicking() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("99999999999999999999999999"),
        );
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 01 Jan 9000 00:00:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        let c = TokenCache::default();
        c.put("a", SecretString::from("t".to_string()), Duration::MAX);
        assert!(c.get("a").is_some());
        let f = FactCache::default();
        f.put("a", 1u8, Duration::MAX);
        let l = RateLimiter::new(1e-300, 1);
        drop(l);
    }

    #[test]
    fn redaction_covers_the_ways_a_value_is_echoed() {
        let r = Redactor::from_values(["pa ss/+=\"w", "ab"]);
        let echoed = r#"raw pa ss/+="w form pa+ss%2F%2B%3D%22w pct pa%20ss%2F%2B%3D%22w json pa ss/+=\"w ab"#;
        let out = r.redact(echoed);
        assert!(!out.contains("ss/"), "{out}");
        assert!(!out.contains("ss%2F"), "{out}");
        assert_eq!(out.matches("[REDACTED]").count(), 4, "{out}");
        assert!(out.ends_with(" ab"), "too short to redact: {out}");
    }

    #[test]
    fn client_secret_basic_form_url_encodes_id_and_secret() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let req = client_secret_basic(
            client.post("https://idp.example.com/token"),
            "app:1",
            "a+b%c:d é",
        )
        .build()
        .unwrap();
        let auth = req.headers()[reqwest::header::AUTHORIZATION]
            .to_str()
            .unwrap();
        let pair = auth.strip_prefix("Basic ").and_then(base64_decode).unwrap();
        assert_eq!(
            String::from_utf8(pair).unwrap(),
            "app%3A1:a%2Bb%25c%3Ad+%C3%A9"
        );
        // The secret as it is, not only as it travels, is redacted.
        let r = Redactor::from_request(&req);
        assert_eq!(
            r.redact("echo a+b%c:d é / a%2Bb%25c%3Ad+%C3%A9"),
            "echo [REDACTED] / [REDACTED]"
        );
        assert!(basic_safe_credential("a+b%c:d ~"));
        assert!(!basic_safe_credential("d é"));
        assert!(!basic_safe_credential("a\nb"));
    }

    #[test]
    fn redaction_reads_the_credentials_a_request_carries() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let req = client
            .post("https://idp.example.com/token")
            .basic_auth("admin-user", Some("hunter2-pw"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_secret", "s3cr3t/+x"),
            ])
            .build()
            .unwrap();
        let r = Redactor::from_request(&req);
        let out = r.redact("admin-user hunter2-pw s3cr3t/+x s3cr3t%2F%2Bx client_credentials");
        assert_eq!(
            out,
            "[REDACTED] [REDACTED] [REDACTED] [REDACTED] client_credentials"
        );
        let bearer = client
            .get("https://idp.example.com/x")
            .bearer_auth("tok-123456")
            .build()
            .unwrap();
        assert_eq!(
            Redactor::from_request(&bearer).redact("bad token tok-123456"),
            "bad token [REDACTED]"
        );
    }

    #[test]
    fn tenant_policy_checks_targets() {
        let url = |s: &str| Url::parse(s).unwrap();
        let strict = TenantPolicy {
            denied_hosts: vec!["10.96.0.1:443".into()],
            ..TenantPolicy::strict()
        };
        assert!(strict.check_url(&url("https://sso.example.com/x")).is_ok());
        for (bad, why) in [
            ("http://sso.example.com", "plain http"),
            ("http://127.0.0.1:8080", "plain http"),
            ("https://admin:pw@sso.example.com", "user name or password"),
            ("https://169.254.169.254/latest", "link-local"),
            ("https://[fe80::1]/", "link-local"),
            ("https://[::ffff:169.254.169.254]/", "link-local"),
            ("https://metadata.google.internal/", "metadata"),
            ("https://10.96.0.1/", "Kubernetes API server"),
            ("https://kubernetes.default.svc/", "Kubernetes API server"),
            ("https://127.0.0.1/", "loopback"),
            ("https://0.0.0.0/", "unspecified"),
        ] {
            let e = strict.check_url(&url(bad)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(strict.check_url(&url("https://10.96.0.1:8443/")).is_ok());
        let dev = TenantPolicy::default();
        assert!(dev.check_url(&url("http://127.0.0.1:8080")).is_ok());
        assert!(dev.check_url(&url("http://localhost:8080")).is_ok());
        assert!(dev.check_url(&url("http://10.0.0.1:8080")).is_err());
        let listed = TenantPolicy {
            allowed_hosts: vec!["example.com".into(), "169.254.10.10".into()],
            ..TenantPolicy::strict()
        };
        assert!(listed.check_url(&url("https://sso.example.com")).is_ok());
        assert!(listed.check_url(&url("https://example.com")).is_ok());
        assert!(listed.check_url(&url("https://badexample.com")).is_err());
        assert!(listed.check_url(&url("https://evil.com")).is_err());
        assert!(listed.check_url(&url("https://169.254.10.10")).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_drops_denied_addresses() {
        use reqwest::dns::Resolve;
        let strict = GuardedResolver {
            policy: Arc::new(TenantPolicy::strict()),
        };
        let e = strict
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("loopback only");
        assert!(e.to_string().contains("resolves only to addresses"), "{e}");
        let dev = GuardedResolver {
            policy: Arc::new(TenantPolicy::default()),
        };
        assert!(dev.resolve("localhost".parse().unwrap()).await.is_ok());
    }

    #[test]
    fn client_cache_is_bounded() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let h = HttpClients::new(Duration::from_secs(1));
        for i in 0..(MAX_CACHED_CLIENTS + 5) {
            // Distinct bundles: a valid self-signed-looking PEM is not needed for the key, but
            // the client build needs one; use the platform roots with distinct keys instead.
            let key: [u8; 32] = Sha256::digest(i.to_string()).into();
            let client = reqwest::Client::new();
            let mut clients = h.clients.lock().unwrap();
            if clients.len() >= MAX_CACHED_CLIENTS
                && let Some(oldest) = clients.iter().min_by_key(|(_, (_, u))| *u).map(|(k, _)| *k)
            {
                clients.remove(&oldest);
            }
            clients.insert(key, (client, Instant::now()));
        }
        drop(h.client(ProviderKind::Keycloak, None).unwrap());
        assert!(h.cached_clients() <= MAX_CACHED_CLIENTS);
    }

    #[tokio::test]
    async fn per_host_slots_are_capped_and_forgotten_when_idle() {
        let h = HttpClients::with_policy(
            Duration::from_secs(1),
            TenantPolicy {
                max_in_flight_per_host: 2,
                ..TenantPolicy::default()
            },
        );
        let a = h.host_permit("a:443", Duration::from_millis(10)).await;
        let b = h.host_permit("a:443", Duration::from_millis(10)).await;
        assert!(a.is_ok() && b.is_ok());
        assert!(
            h.host_permit("a:443", Duration::from_millis(10))
                .await
                .is_err(),
            "a third request to the host waits, then gives up"
        );
        assert!(
            h.host_permit("b:443", Duration::from_millis(10))
                .await
                .is_ok()
        );
        drop((a, b));
        for i in 0..(MAX_HOST_ENTRIES + 10) {
            let _ = h
                .host_permit(&format!("h{i}:443"), Duration::from_millis(10))
                .await;
        }
        assert!(h.in_flight.lock().unwrap().len() <= MAX_HOST_ENTRIES);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_buckets_are_bounded() {
        let l = RateLimiter::new(1000.0, 1);
        for i in 0..(MAX_HOST_ENTRIES + 10) {
            l.acquire(&format!("h{i}")).await;
            tokio::time::advance(Duration::from_millis(5)).await;
        }
        assert!(l.hosts() <= MAX_HOST_ENTRIES, "{}", l.hosts());
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
