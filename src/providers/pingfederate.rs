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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, HeaderMap};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::http;
use super::{
    Applied, Change, CoderNeeds, Credentials, DesiredSettings, Finding, IdentityProvider,
    IdpSettings, Observation, ProviderDeps, ProviderError, ProviderKind,
};
use crate::crd::{PingFederateSpec, Rotation};

const KIND: ProviderKind = ProviderKind::PingFederate;
const OFFLINE_ACCESS: &str = "offline_access";
const REFRESH_TOKEN: &str = "REFRESH_TOKEN";
const OVERRIDE: &str = "OVERRIDE_SERVER_DEFAULT";
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
    let ca = creds
        .get("ca.crt")
        .map(|c| c.expose_secret().as_bytes().to_vec());
    let http = deps.http.client(KIND, ca.as_deref())?;
    let base = admin_base(&spec.admin_url)?;
    Ok(Arc::new(PingFederate {
        base,
        client_id: spec.client_id.clone(),
        secret_name: creds.secret_name.clone(),
        username,
        password,
        http,
        deps: deps.clone(),
        version: Mutex::new(None),
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
    version: Mutex<Option<ServerVersion>>,
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

/// Major and minor version of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ServerVersion(u32, u32);

impl ServerVersion {
    /// 12.1 added the client-level `offline_access` controls.
    fn has_offline_controls(self) -> bool {
        self >= ServerVersion(12, 1)
    }

    fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('.');
        let major = parts.next()?.trim().parse().ok()?;
        let minor = parts.next().unwrap_or("0").trim().parse().ok()?;
        Some(ServerVersion(major, minor))
    }
}

/// State read from the server.
struct Snapshot {
    version: ServerVersion,
    client: Value,
    settings: Value,
}

impl PingFederate {
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().extend(segments);
        }
        url
    }

    /// Hides anything that looks like an encrypted secret or the password in server messages.
    fn scrub(&self, text: &str) -> String {
        let mut out = scrub_obfuscated(text);
        let pw = self.password.expose_secret();
        if pw.len() >= 3 {
            out = out.replace(pw, "***");
        }
        out
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

    fn error(
        &self,
        operation: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
    ) -> ProviderError {
        let said = self.scrub(&api_result_detail(body));
        let said_suffix = if said.is_empty() {
            String::new()
        } else {
            format!(" (PingFederate said: {said})")
        };
        match status.as_u16() {
            401 => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "HTTP Basic login with the username and password of Secret {:?} failed{said_suffix}; \
                     check both values, that the account is a native PingFederate administrator account, \
                     and that pf.admin.api.authentication in run.properties includes native",
                    self.secret_name
                ),
            },
            403 => ProviderError::Forbidden {
                provider: KIND,
                operation: operation.to_string(),
                detail: format!(
                    "the administrator account of Secret {:?} lacks the permission{said_suffix}; \
                     it needs the Admin role (the Auditor role is read-only)",
                    self.secret_name
                ),
            },
            404 if operation.ends_with("OAuth client") => ProviderError::ClientNotFound {
                provider: KIND,
                what: format!("OAuth client {:?}", self.client_id),
                detail: format!(
                    "{} has no OAuth client with this id; check spec.provider.pingFederate.clientId (the client ID, not its name)",
                    self.base
                ),
            },
            404 => ProviderError::ClientNotFound {
                provider: KIND,
                what: format!("admin API resource ({operation})"),
                detail: format!(
                    "{} answered 404; check spec.provider.pingFederate.adminUrl (the admin port, usually 9999; /pf-admin-api/v1 is appended)",
                    self.base
                ),
            },
            _ => http::error_for_status(KIND, operation, status, headers, said),
        }
    }

    async fn version(&self) -> Result<ServerVersion, ProviderError> {
        if let Some(v) = *self.version.lock().unwrap_or_else(|e| e.into_inner()) {
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
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
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

    async fn observe(&self, desired: &DesiredSettings) -> Result<Observation, ProviderError> {
        check_desired(desired)?;
        let snap = self.snapshot().await?;
        Ok(plan(&snap, desired).observation)
    }

    async fn apply(&self, desired: &DesiredSettings) -> Result<Applied, ProviderError> {
        check_desired(desired)?;
        let snap = self.snapshot().await?;
        let p = plan(&snap, desired);
        if p.observation.changes.is_empty() {
            return Ok(Applied {
                observation: p.observation,
                actions: Vec::new(),
            });
        }
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

// ---------------------------------------------------------------------------------------------
// Pure parts

/// Settings PingFederate cannot honour.
fn check_desired(desired: &DesiredSettings) -> Result<(), ProviderError> {
    let mut problems = Vec::new();
    if desired.access_token_lifetime.is_some() {
        problems.push(
            "spec.refreshTokens.accessTokenLifetime cannot be set per client: in PingFederate the access-token \
             lifetime belongs to the access token manager, which many clients share, so changing it would change \
             every client using that manager. Remove accessTokenLifetime from the policy and set the lifetime on \
             the access token manager Coder's client uses (Applications > OAuth > Access Token Management)"
                .to_string(),
        );
    }
    for (name, d) in [
        ("lifetime", desired.lifetime),
        ("idleTimeout", desired.idle_timeout),
    ] {
        if let Some(d) = d
            && grant_time(d).is_none()
        {
            problems.push(format!(
                "spec.refreshTokens.{name} ({}) is not a positive whole number of minutes; PingFederate stores \
                 persistent-grant times in MINUTES, HOURS or DAYS",
                crate::duration::format(d)
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ProviderError::Unsupported {
            provider: KIND,
            detail: problems.join("; "),
        })
    }
}

/// The largest unit that represents `d` exactly: `(value, unit)`; `None` unless a positive whole
/// number of minutes.
fn grant_time(d: Duration) -> Option<(i64, &'static str)> {
    if d.subsec_nanos() != 0 || d.as_secs() == 0 || !d.as_secs().is_multiple_of(60) {
        return None;
    }
    let secs = d.as_secs();
    let (n, unit) = if secs.is_multiple_of(86_400) {
        (secs / 86_400, "DAYS")
    } else if secs.is_multiple_of(3_600) {
        (secs / 3_600, "HOURS")
    } else {
        (secs / 60, "MINUTES")
    };
    Some((i64::try_from(n).ok()?, unit))
}

/// A `(time, unit)` pair as a duration; `None` for -1 (indefinite), 0, or an unknown unit.
fn duration_of(time: &Value, unit: &Value) -> Option<Duration> {
    let n = u64::try_from(time.as_i64()?).ok().filter(|n| *n > 0)?;
    let secs = match unit.as_str()? {
        "SECONDS" => 1,
        "MINUTES" => 60,
        "HOURS" => 3_600,
        "DAYS" => 86_400,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

fn show(d: Option<Duration>) -> String {
    d.map(crate::duration::format)
        .unwrap_or_else(|| "indefinite".into())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

fn encrypted_secret(client: &Value) -> Option<&str> {
    client["clientAuth"]["encryptedSecret"].as_str()
}

fn has_scope(settings: &Value, list: &str, name: &str) -> bool {
    settings[list]
        .as_array()
        .is_some_and(|a| a.iter().any(|e| e["name"].as_str() == Some(name)))
}

/// One persistent-grant time: the client fields and the server-default fields.
struct GrantTime {
    setting: &'static str,
    ty: &'static str,
    time: &'static str,
    unit: &'static str,
    server_time: &'static str,
    server_unit: &'static str,
}

const LIFETIME: GrantTime = GrantTime {
    setting: "persistentGrantExpiration",
    ty: "persistentGrantExpirationType",
    time: "persistentGrantExpirationTime",
    unit: "persistentGrantExpirationTimeUnit",
    server_time: "persistentGrantLifetime",
    server_unit: "persistentGrantLifetimeUnit",
};

const IDLE: GrantTime = GrantTime {
    setting: "persistentGrantIdleTimeout",
    ty: "persistentGrantIdleTimeoutType",
    time: "persistentGrantIdleTimeout",
    unit: "persistentGrantIdleTimeoutTimeUnit",
    server_time: "persistentGrantIdleTimeout",
    server_unit: "persistentGrantIdleTimeoutTimeUnit",
};

impl GrantTime {
    fn kind<'a>(&self, client: &'a Value) -> &'a str {
        client[self.ty].as_str().unwrap_or("SERVER_DEFAULT")
    }

    /// The effective value (`None` = indefinite).
    fn effective(&self, client: &Value, settings: &Value) -> Option<Duration> {
        match self.kind(client) {
            "INDEFINITE_EXPIRY" => None,
            OVERRIDE => duration_of(&client[self.time], &client[self.unit]),
            _ => duration_of(&settings[self.server_time], &settings[self.server_unit]),
        }
    }

    /// Sets the override in `new` when the client does not already override with `want`.
    fn ensure(
        &self,
        client: &Value,
        settings: &Value,
        want: Duration,
        new: &mut Value,
        changes: &mut Vec<Change>,
    ) {
        let current = duration_of(&client[self.time], &client[self.unit]);
        if self.kind(client) == OVERRIDE && current == Some(want) {
            return;
        }
        let Some((n, unit)) = grant_time(want) else {
            return;
        };
        new[self.ty] = json!(OVERRIDE);
        new[self.time] = json!(n);
        new[self.unit] = json!(unit);
        changes.push(Change {
            setting: self.setting.into(),
            from: format!(
                "{} ({})",
                self.kind(client),
                show(self.effective(client, settings))
            ),
            to: format!("{OVERRIDE} ({n} {unit})"),
        });
    }
}

fn rotation_of(client: &Value, settings: &Value) -> Option<Rotation> {
    match client["refreshRolling"].as_str() {
        Some("ROLL") => Some(Rotation::Rotate),
        Some("DONT_ROLL") => Some(Rotation::Reuse),
        _ => settings["rollRefreshTokenValues"]
            .as_bool()
            .map(|r| if r { Rotation::Rotate } else { Rotation::Reuse }),
    }
}

/// The effective minimum age before a refresh token rolls, when not zero. The value is in hours
/// unless a 12.1 unit field says otherwise.
fn rolling_interval(client: &Value, settings: &Value) -> Option<Duration> {
    let hours = json!("HOURS");
    let (time, unit) = if client["refreshTokenRollingIntervalType"].as_str() == Some(OVERRIDE) {
        (
            &client["refreshTokenRollingInterval"],
            client.get("refreshTokenRollingIntervalTimeUnit"),
        )
    } else {
        (
            &settings["refreshRollingInterval"],
            settings.get("refreshRollingIntervalTimeUnit"),
        )
    };
    duration_of(time, unit.filter(|u| u.is_string()).unwrap_or(&hours))
}

/// 12.1 client values `SERVER_DEFAULT|YES|NO` resolved against the server's boolean.
fn tri_state(client: &Value, settings: &Value, field: &str) -> bool {
    match client[field].as_str() {
        Some("YES") => true,
        Some("NO") => false,
        _ => settings[field].as_bool().unwrap_or(false),
    }
}

/// `(offline_access required for refresh tokens, prompt=consent required for offline_access)`.
fn offline_controls(client: &Value, settings: &Value) -> (bool, bool) {
    let required = tri_state(
        client,
        settings,
        "requireOfflineAccessScopeToIssueRefreshTokens",
    );
    let consent = required && tri_state(client, settings, "offlineAccessRequireConsentPrompt");
    (required, consent)
}

/// What to do, computed from a snapshot.
struct Plan {
    observation: Observation,
    client_changes: Vec<Change>,
    client_update: Option<Value>,
    add_scope: bool,
}

fn plan(snap: &Snapshot, desired: &DesiredSettings) -> Plan {
    let (client, settings) = (&snap.client, &snap.settings);
    let mut new = client.clone();
    let mut client_changes = Vec::new();

    let grants = strings(&client["grantTypes"]);
    let has_refresh = grants.iter().any(|g| g == REFRESH_TOKEN);
    if !has_refresh {
        let mut wanted = grants.clone();
        wanted.push(REFRESH_TOKEN.into());
        new["grantTypes"] = json!(wanted);
        client_changes.push(Change {
            setting: "grantTypes".into(),
            from: list(&grants),
            to: list(&wanted),
        });
    }

    let common = has_scope(settings, "scopes", OFFLINE_ACCESS);
    let exclusive = has_scope(settings, "exclusiveScopes", OFFLINE_ACCESS);
    let restricts = client["restrictScopes"].as_bool() == Some(true);
    let restricted = strings(&client["restrictedScopes"]);
    let client_exclusive = strings(&client["exclusiveScopes"]);
    let offline_now = (common && (!restricts || restricted.iter().any(|s| s == OFFLINE_ACCESS)))
        || (exclusive && client_exclusive.iter().any(|s| s == OFFLINE_ACCESS));
    let mut add_scope = false;
    let mut scope_changes = Vec::new();
    if desired.offline_access && !offline_now {
        if exclusive {
            let mut wanted = client_exclusive.clone();
            wanted.push(OFFLINE_ACCESS.into());
            new["exclusiveScopes"] = json!(wanted);
            client_changes.push(Change {
                setting: "exclusiveScopes".into(),
                from: list(&client_exclusive),
                to: list(&wanted),
            });
        } else {
            if !common {
                add_scope = true;
                scope_changes.push(Change {
                    setting: "authorization server common scope offline_access".into(),
                    from: "not defined".into(),
                    to: "defined".into(),
                });
            }
            if restricts && !restricted.iter().any(|s| s == OFFLINE_ACCESS) {
                let mut wanted = restricted.clone();
                wanted.push(OFFLINE_ACCESS.into());
                new["restrictedScopes"] = json!(wanted);
                client_changes.push(Change {
                    setting: "restrictedScopes".into(),
                    from: list(&restricted),
                    to: list(&wanted),
                });
            }
        }
    }

    if let Some(d) = desired.lifetime {
        LIFETIME.ensure(client, settings, d, &mut new, &mut client_changes);
    }
    if let Some(d) = desired.idle_timeout {
        IDLE.ensure(client, settings, d, &mut new, &mut client_changes);
    }
    if let Some(r) = desired.rotation {
        let want = match r {
            Rotation::Rotate => "ROLL",
            Rotation::Reuse => "DONT_ROLL",
        };
        let current = client["refreshRolling"]
            .as_str()
            .unwrap_or("SERVER_DEFAULT");
        if current != want {
            new["refreshRolling"] = json!(want);
            client_changes.push(Change {
                setting: "refreshRolling".into(),
                from: current.into(),
                to: want.into(),
            });
        }
    }

    let mut findings = Vec::new();
    let mut coder = CoderNeeds::default();
    if desired.offline_access {
        coder.add_scopes.push(OFFLINE_ACCESS.into());
    }
    if snap.version.has_offline_controls() {
        let (required, consent) = offline_controls(client, settings);
        if required && !desired.offline_access {
            findings.push(Finding {
                reason: "OfflineAccessRequired",
                message: "PingFederate issues refresh tokens to this client only when offline_access is requested \
                          (requireOfflineAccessScopeToIssueRefreshTokens); set spec.refreshTokens.offlineAccess to true"
                    .into(),
                blocking: true,
            });
        }
        if consent && desired.offline_access {
            coder.params.insert("prompt".into(), "consent".into());
            findings.push(Finding {
                reason: "ConsentPromptRequired",
                message: "PingFederate requires prompt=consent with offline_access for this client \
                          (offlineAccessRequireConsentPrompt), so Coder sends prompt=consent and users see the \
                          consent page at each sign-in"
                    .into(),
                blocking: false,
            });
        }
    }

    if desired.rotation == Some(Rotation::Rotate)
        && let Some(interval) = rolling_interval(client, settings)
    {
        findings.push(Finding {
            reason: "RefreshRollingInterval",
            message: format!(
                "PingFederate replaces a refresh token on use only once it is at least {} old \
                 (refresh token rolling interval); until then refreshing returns the same token",
                crate::duration::format(interval)
            ),
            blocking: false,
        });
    }

    let settings_now = IdpSettings {
        refresh_token_grant: Some(has_refresh),
        offline_access: Some(offline_now),
        lifetime: LIFETIME.effective(client, settings),
        idle_timeout: IDLE.effective(client, settings),
        rotation: rotation_of(client, settings),
        access_token_lifetime: None,
    };

    let client_update = (!client_changes.is_empty()).then(|| {
        // GET never returns a plaintext secret; make sure none is ever sent back (it would rotate
        // the secret Coder uses). `encryptedSecret` stays as read.
        if let Some(auth) = new.get_mut("clientAuth").and_then(Value::as_object_mut) {
            auth.remove("secret");
        }
        new
    });
    let mut changes = scope_changes;
    changes.extend(client_changes.iter().cloned());
    Plan {
        observation: Observation {
            settings: settings_now,
            changes,
            findings,
            coder,
        },
        client_changes,
        client_update,
        add_scope,
    }
}

/// The readable part of an `ApiResult` error body: message plus `fieldPath: message` per
/// validation error. Falls back to the (truncated) text.
fn api_result_detail(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return http::truncate(body.trim(), 300);
    };
    let mut parts = Vec::new();
    if let Some(m) = v["message"].as_str().filter(|m| !m.is_empty()) {
        parts.push(m.to_string());
    }
    let errors: Vec<String> = v["validationErrors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let msg = e["message"]
                .as_str()
                .or(e["developerMessage"].as_str())
                .unwrap_or("invalid");
            let id = e["errorId"]
                .as_str()
                .map(|i| format!(" [{i}]"))
                .unwrap_or_default();
            match e["fieldPath"].as_str().filter(|p| !p.is_empty()) {
                Some(p) => format!("{p}: {msg}{id}"),
                None => format!("{msg}{id}"),
            }
        })
        .collect();
    if !errors.is_empty() {
        parts.push(errors.join("; "));
    }
    if parts.is_empty() {
        http::truncate(body.trim(), 300)
    } else {
        parts.join(": ")
    }
}

/// Replaces PingFederate obfuscated/encrypted values (`OBF:...`) with `OBF:***`.
fn scrub_obfuscated(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("OBF:") {
        out.push_str(&rest[..i]);
        out.push_str("OBF:***");
        let tail = &rest[i + 4..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ')' | ']' | '}'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 86_400)
    }

    fn client() -> Value {
        json!({
            "clientId": "coder", "name": "Coder",
            "grantTypes": ["AUTHORIZATION_CODE", "CLIENT_CREDENTIALS"],
            "restrictScopes": true, "restrictedScopes": ["openid", "profile", "email"],
            "refreshRolling": "SERVER_DEFAULT",
            "persistentGrantExpirationType": "SERVER_DEFAULT",
            "persistentGrantExpirationTime": 0, "persistentGrantExpirationTimeUnit": "DAYS",
            "persistentGrantIdleTimeoutType": "SERVER_DEFAULT",
            "persistentGrantIdleTimeout": 0, "persistentGrantIdleTimeoutTimeUnit": "DAYS",
            "clientAuth": {"type": "SECRET", "encryptedSecret": "OBF:JWE:abc.def"},
            "futureField": {"kept": [1, 2]}
        })
    }

    fn settings() -> Value {
        json!({
            "scopes": [{"name": "profile", "description": "p"}, {"name": "email", "description": "e"}],
            "exclusiveScopes": [],
            "persistentGrantLifetime": -1, "persistentGrantLifetimeUnit": "DAYS",
            "persistentGrantIdleTimeout": 30, "persistentGrantIdleTimeoutTimeUnit": "DAYS",
            "rollRefreshTokenValues": false,
            "requireOfflineAccessScopeToIssueRefreshTokens": false,
            "offlineAccessRequireConsentPrompt": false
        })
    }

    fn snap(client: Value, settings: Value, v: ServerVersion) -> Snapshot {
        Snapshot {
            version: v,
            client,
            settings,
        }
    }

    fn want() -> DesiredSettings {
        DesiredSettings {
            offline_access: true,
            lifetime: Some(days(90)),
            idle_timeout: Some(Duration::from_secs(36 * 3600)),
            rotation: Some(Rotation::Rotate),
            access_token_lifetime: None,
        }
    }

    #[test]
    fn unit_selection_uses_the_largest_exact_unit() {
        assert_eq!(grant_time(days(90)), Some((90, "DAYS")));
        assert_eq!(
            grant_time(Duration::from_secs(36 * 3600)),
            Some((36, "HOURS"))
        );
        assert_eq!(
            grant_time(Duration::from_secs(90 * 60)),
            Some((90, "MINUTES"))
        );
        assert_eq!(grant_time(Duration::from_secs(90)), None);
        assert_eq!(grant_time(Duration::ZERO), None);
        assert_eq!(grant_time(Duration::from_millis(60_500)), None);
    }

    #[test]
    fn check_rejects_access_token_lifetime_and_sub_minute_values() {
        let err = check_desired(&DesiredSettings {
            access_token_lifetime: Some(Duration::from_secs(3600)),
            lifetime: Some(Duration::from_secs(90)),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, ProviderError::Unsupported { .. }));
        let msg = err.to_string();
        assert!(msg.contains("access token manager"), "{msg}");
        assert!(msg.contains("spec.refreshTokens.lifetime"), "{msg}");
        assert!(check_desired(&want()).is_ok());
    }

    #[test]
    fn effective_values_resolve_server_defaults() {
        let s = snap(client(), settings(), ServerVersion(12, 1));
        let obs = plan(&s, &DesiredSettings::default()).observation;
        assert_eq!(
            obs.settings,
            IdpSettings {
                refresh_token_grant: Some(false),
                offline_access: Some(false),
                lifetime: None,
                idle_timeout: Some(days(30)),
                rotation: Some(Rotation::Reuse),
                access_token_lifetime: None,
            }
        );
        assert_eq!(
            obs.changes.len(),
            1,
            "only the refresh grant: {:?}",
            obs.changes
        );
        let mut c = client();
        c["persistentGrantExpirationType"] = json!("OVERRIDE_SERVER_DEFAULT");
        c["persistentGrantExpirationTime"] = json!(12);
        c["persistentGrantExpirationTimeUnit"] = json!("HOURS");
        c["persistentGrantIdleTimeoutType"] = json!("INDEFINITE_EXPIRY");
        c["refreshRolling"] = json!("ROLL");
        let obs = plan(
            &snap(c, settings(), ServerVersion(11, 3)),
            &DesiredSettings::default(),
        )
        .observation;
        assert_eq!(obs.settings.lifetime, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(obs.settings.idle_timeout, None);
        assert_eq!(obs.settings.rotation, Some(Rotation::Rotate));
    }

    #[test]
    fn plan_changes_only_owned_fields_and_keeps_the_rest() {
        let s = snap(client(), settings(), ServerVersion(12, 1));
        let p = plan(&s, &want());
        let changes: Vec<String> = p
            .observation
            .changes
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            changes,
            [
                "authorization server common scope offline_access: not defined -> defined",
                "grantTypes: AUTHORIZATION_CODE, CLIENT_CREDENTIALS -> AUTHORIZATION_CODE, CLIENT_CREDENTIALS, REFRESH_TOKEN",
                "restrictedScopes: openid, profile, email -> openid, profile, email, offline_access",
                "persistentGrantExpiration: SERVER_DEFAULT (indefinite) -> OVERRIDE_SERVER_DEFAULT (90 DAYS)",
                "persistentGrantIdleTimeout: SERVER_DEFAULT (720h) -> OVERRIDE_SERVER_DEFAULT (36 HOURS)",
                "refreshRolling: SERVER_DEFAULT -> ROLL",
            ]
        );
        assert!(p.add_scope);
        let mut expected = client();
        expected["grantTypes"] =
            json!(["AUTHORIZATION_CODE", "CLIENT_CREDENTIALS", "REFRESH_TOKEN"]);
        expected["restrictedScopes"] = json!(["openid", "profile", "email", "offline_access"]);
        expected["persistentGrantExpirationType"] = json!("OVERRIDE_SERVER_DEFAULT");
        expected["persistentGrantExpirationTime"] = json!(90);
        expected["persistentGrantIdleTimeoutType"] = json!("OVERRIDE_SERVER_DEFAULT");
        expected["persistentGrantIdleTimeout"] = json!(36);
        expected["persistentGrantIdleTimeoutTimeUnit"] = json!("HOURS");
        expected["refreshRolling"] = json!("ROLL");
        assert_eq!(p.client_update, Some(expected.clone()));
        assert_eq!(p.observation.coder.add_scopes, ["offline_access"]);
        assert!(p.observation.coder.params.is_empty());

        // Converged: nothing to do, even when the override uses another unit.
        let mut done = expected;
        done["persistentGrantIdleTimeout"] = json!(36 * 60);
        done["persistentGrantIdleTimeoutTimeUnit"] = json!("MINUTES");
        let mut st = settings();
        st["scopes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "offline_access", "description": "o"}));
        let p = plan(&snap(done, st, ServerVersion(12, 1)), &want());
        assert_eq!(p.observation.changes, []);
        assert_eq!(p.client_update, None);
        assert!(!p.add_scope);
        assert_eq!(p.observation.settings.offline_access, Some(true));
    }

    #[test]
    fn plaintext_secret_is_never_sent_back() {
        let mut c = client();
        c["clientAuth"]["secret"] = json!("plain");
        let p = plan(&snap(c, settings(), ServerVersion(11, 3)), &want());
        let body = p.client_update.unwrap();
        assert_eq!(
            body["clientAuth"],
            json!({"type": "SECRET", "encryptedSecret": "OBF:JWE:abc.def"})
        );
    }

    #[test]
    fn consent_prompt_and_required_offline_access_on_12_1() {
        let mut c = client();
        c["requireOfflineAccessScopeToIssueRefreshTokens"] = json!("YES");
        c["offlineAccessRequireConsentPrompt"] = json!("YES");
        let p = plan(&snap(c.clone(), settings(), ServerVersion(12, 1)), &want());
        assert_eq!(
            p.observation.coder.params.get("prompt").map(String::as_str),
            Some("consent")
        );
        // Consent from the server default applies only when offline_access is required.
        let mut st = settings();
        st["offlineAccessRequireConsentPrompt"] = json!(true);
        c["offlineAccessRequireConsentPrompt"] = json!("SERVER_DEFAULT");
        assert_eq!(offline_controls(&c, &st), (true, true));
        c["requireOfflineAccessScopeToIssueRefreshTokens"] = json!("NO");
        assert_eq!(offline_controls(&c, &st), (false, false));
        c["requireOfflineAccessScopeToIssueRefreshTokens"] = json!("SERVER_DEFAULT");
        st["requireOfflineAccessScopeToIssueRefreshTokens"] = json!(true);
        assert_eq!(offline_controls(&c, &st), (true, true));
        // Without offline_access wanted this blocks.
        let p = plan(
            &snap(c.clone(), st.clone(), ServerVersion(12, 1)),
            &DesiredSettings::default(),
        );
        assert_eq!(p.observation.findings.len(), 1);
        assert_eq!(p.observation.findings[0].reason, "OfflineAccessRequired");
        assert!(p.observation.findings[0].blocking);
        // 11.3 has no such controls: the fields are ignored.
        let p = plan(&snap(c, st, ServerVersion(11, 3)), &want());
        assert!(p.observation.coder.params.is_empty());
        assert!(p.observation.findings.is_empty());
    }

    #[test]
    fn exclusive_offline_access_scope_goes_to_exclusive_scopes() {
        let mut st = settings();
        st["exclusiveScopes"] = json!([{"name": "offline_access", "description": "o"}]);
        let p = plan(
            &snap(client(), st, ServerVersion(12, 1)),
            &DesiredSettings {
                offline_access: true,
                ..Default::default()
            },
        );
        assert!(!p.add_scope);
        assert_eq!(
            p.client_update.unwrap()["exclusiveScopes"],
            json!(["offline_access"])
        );
    }

    #[test]
    fn api_result_errors_show_field_paths() {
        let body = r#"{"resultId":"validation_error","message":"Validation error(s) occurred.",
            "validationErrors":[{"fieldPath":"restrictedScopes[3]","errorId":"invalid_scope","message":"The scope 'x' is not defined."},
            {"errorId":"other","message":"Something else."}]}"#;
        assert_eq!(
            api_result_detail(body),
            "Validation error(s) occurred.: restrictedScopes[3]: The scope 'x' is not defined. [invalid_scope]; Something else. [other]"
        );
        assert_eq!(api_result_detail("  plain text "), "plain text");
        assert_eq!(api_result_detail(""), "");
    }

    #[test]
    fn rolling_interval_is_reported_when_rotation_is_wanted() {
        let mut st = settings();
        st["refreshRollingInterval"] = json!(2);
        let p = plan(&snap(client(), st.clone(), ServerVersion(11, 3)), &want());
        assert_eq!(p.observation.findings.len(), 1);
        assert_eq!(p.observation.findings[0].reason, "RefreshRollingInterval");
        assert!(
            p.observation.findings[0].message.contains("2h"),
            "{:?}",
            p.observation.findings
        );
        let mut c = client();
        c["refreshTokenRollingIntervalType"] = json!(OVERRIDE);
        c["refreshTokenRollingInterval"] = json!(30);
        c["refreshTokenRollingIntervalTimeUnit"] = json!("MINUTES");
        assert_eq!(rolling_interval(&c, &st), Some(Duration::from_secs(1800)));
        c["refreshTokenRollingInterval"] = json!(0);
        assert_eq!(rolling_interval(&c, &st), None);
        let reuse = DesiredSettings {
            rotation: Some(Rotation::Reuse),
            ..want()
        };
        assert!(
            plan(&snap(client(), st, ServerVersion(11, 3)), &reuse)
                .observation
                .findings
                .is_empty()
        );
    }

    #[test]
    fn status_codes_become_errors_that_say_what_to_fix() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let deps = ProviderDeps::new(
            Arc::new(crate::metrics::Metrics::new()),
            Duration::from_secs(1),
        );
        let creds = Credentials::new(
            "pf-admin",
            "1",
            [("username", "admin"), ("password", "hunter2-secret")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        );
        let pf = PingFederate {
            base: admin_base("https://pf.example.com:9999").unwrap(),
            client_id: "coder".into(),
            secret_name: creds.secret_name.clone(),
            username: creds.get("username").unwrap().clone(),
            password: creds.get("password").unwrap().clone(),
            http: deps.http.client(KIND, None).unwrap(),
            deps,
            version: Mutex::new(None),
        };
        let h = HeaderMap::new();
        let e = pf.error(
            "read the OAuth client",
            StatusCode::UNAUTHORIZED,
            &h,
            r#"{"message":"bad hunter2-secret"}"#,
        );
        assert!(matches!(e, ProviderError::AuthenticationFailed { .. }));
        assert!(e.to_string().contains("Secret \"pf-admin\""), "{e}");
        assert!(!format!("{e} {e:?} {pf:?}").contains("hunter2-secret"));
        let e = pf.error("update the OAuth client", StatusCode::FORBIDDEN, &h, "");
        assert_eq!(
            e.to_string(),
            "PingFederate refused to update the OAuth client: the administrator account of Secret \"pf-admin\" \
             lacks the permission; it needs the Admin role (the Auditor role is read-only)"
        );
        let e = pf.error("read the OAuth client", StatusCode::NOT_FOUND, &h, "");
        assert!(
            matches!(e, ProviderError::ClientNotFound { ref what, .. } if what == "OAuth client \"coder\"")
        );
        let e = pf.error(
            "update the OAuth client",
            StatusCode::UNPROCESSABLE_ENTITY,
            &h,
            r#"{"message":"Invalid.","validationErrors":[{"fieldPath":"clientAuth.encryptedSecret","message":"OBF:JWE:zzz is bad"}]}"#,
        );
        assert_eq!(
            e.to_string(),
            "PingFederate rejected update the OAuth client: Invalid.: clientAuth.encryptedSecret: OBF:*** is bad"
        );
        let e = pf.error("read the OAuth client", StatusCode::BAD_GATEWAY, &h, "");
        assert!(matches!(e, ProviderError::Unreachable { .. }));
    }

    #[test]
    fn obfuscated_values_are_scrubbed() {
        assert_eq!(
            scrub_obfuscated(r#"bad "OBF:JWE:abc.def" and OBF:xyz, ok"#),
            r#"bad "OBF:***" and OBF:***, ok"#
        );
    }

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

    #[test]
    fn versions_parse() {
        assert_eq!(ServerVersion::parse("12.1.0.4"), Some(ServerVersion(12, 1)));
        assert!(ServerVersion(12, 1).has_offline_controls());
        assert!(ServerVersion(13, 0).has_offline_controls());
        assert!(
            !ServerVersion::parse("11.3.5")
                .unwrap()
                .has_offline_controls()
        );
        assert!(!ServerVersion(12, 0).has_offline_controls());
        assert_eq!(ServerVersion::parse("x"), None);
    }
}
