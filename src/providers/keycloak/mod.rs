//! Keycloak (24–26) through its Admin REST API.
//!
//! # Authentication
//! The policy's Secret holds either `client-id` + `client-secret` (client-credentials grant of a
//! confidential client with a service account) or `username` + `password` (password grant through
//! the public `admin-cli` client), and optionally `ca.crt` (PEM bundle for a private CA; TLS
//! verification is never switched off). Tokens come from
//! `{url}/realms/{authRealm}/protocol/openid-connect/token` (`authRealm` defaults to `realm`) and
//! are cached in [`ProviderDeps::tokens`] until shortly before they expire (a 60 s master-realm
//! token about 20 s before: see `cache_lifetime`), keyed by URL, auth
//! realm, Secret name, Secret `resourceVersion` and a hash of the credentials, so a rotated Secret
//! is picked up at once. A 401 from the admin API drops the token, fetches a new one and retries
//! the call once.
//!
//! Roles the admin account needs (realm-management client roles of the target realm, or of the
//! `<realm>-realm` client when it lives in `master`): `view-clients` (find the client, its scopes
//! and scope mappings; `query-clients` alone is not enough: Keycloak then lists no client at all,
//! which the provider reports as this missing role), `manage-clients` (update the client, link
//! the scope, map the role),
//! `view-realm` (read token settings and the `offline_access` role) and, only with
//! `allowRealmChanges`, `manage-realm`. `realm-admin` covers all of them.
//!
//! # What is configured
//! The client is found by `clientId` (never created or deleted). Updates read the client, change
//! only the attributes below and PUT the whole representation back (as `serde_json::Value`, so
//! every other field, attribute, redirect URI, the secret and fields this code does not know
//! survive untouched); everything is read back afterwards and compared.
//!
//! | policy (`spec.refreshTokens`) | Keycloak setting |
//! |---|---|
//! | always | client attribute `use.refresh.tokens` = `"true"` |
//! | `offlineAccess: true` | client scope `offline_access` linked to the client (optional, or already default); when `fullScopeAllowed` is false, realm role `offline_access` in the client's realm scope mappings only if the `offline_access` client scope's own scope mappings lack it (Keycloak's built-in scope carries it, and a requested scope brings its roles into the token); Coder requests scope `offline_access` |
//! | `idleTimeout`, offline | client attribute `client.offline.session.idle.timeout` (seconds); realm `offlineSessionIdleTimeout` must be at least as long |
//! | `lifetime`, offline | client attribute `client.offline.session.max.lifespan` (seconds), enforced per client by Keycloak 22+ even with the realm's `offlineSessionMaxLifespanEnabled` off; the switch is never turned on; only when it is already on must realm `offlineSessionMaxLifespan` be at least as long |
//! | `idleTimeout`, not offline | client attribute `client.session.idle.timeout` (ordinary refresh tokens live in the SSO session); realm `ssoSessionIdleTimeout` must be at least as long |
//! | `lifetime`, not offline | client attribute `client.session.max.lifespan`; realm `ssoSessionMaxLifespan` must be at least as long |
//! | `accessTokenLifetime` | client attribute `access.token.lifespan` (seconds) |
//! | `rotation: Rotate` | realm `revokeRefreshToken` = true and `refreshTokenMaxReuse` at least [`ROTATE_MAX_REUSE`] (5 uses after the first, so Coder's concurrent refreshes all succeed); without `allowRealmChanges` (or in a keycloak-config-cli realm) the reuse count is not written and a strict realm gets a warning instead |
//! | `rotation: RotateStrict` | realm `revokeRefreshToken` = true and `refreshTokenMaxReuse` = 0, with a warning: concurrent refreshes sign users out |
//! | `rotation: Reuse` | realm `revokeRefreshToken` = false |
//!
//! Whatever the policy asks, a realm whose refresh tokens are strictly one-time
//! (`revokeRefreshToken` on, `refreshTokenMaxReuse` 0) gets the warning
//! `StrictRefreshTokenRotation`.
//!
//! With `offlineAccess: true` Coder gets offline tokens, governed by the realm's offline-session
//! settings; without it, ordinary refresh tokens that end with the SSO session, so the client
//! session attributes are the ones that apply. Realm settings affect every client of the realm:
//! they are changed (a realm PUT of the whole representation read, with only those fields
//! replaced, because Keycloak resets device, CIBA and PAR settings a body leaves out) only when
//! `spec.provider.keycloak.allowRealmChanges` is true; otherwise planning fails with
//! [`ProviderError::Unsupported`] naming each realm setting and the value it needs.
//!
//! Effective values follow Keycloak's `SessionExpirationUtils`: a positive client value
//! (attribute, or the realm's `client*` default when the attribute is unset, empty or 0) caps the
//! user-session value, and the smaller one wins. The offline max lifespan: with the realm switch
//! off, the client attribute if positive, else none; with it on, attribute, else
//! `clientOfflineSessionMaxLifespan`, else `offlineSessionMaxLifespan`, capped by
//! `offlineSessionMaxLifespan`.
//!
//! The realm's discovery document is checked too: `refresh_token` in `grant_types_supported` and
//! `offline_access` in `scopes_supported` (non-blocking: a scope with
//! `include.in.openid.provider.metadata` false is left out but still works; whether it exists is
//! read through the admin API, and a missing scope is blocking).
//!
//! A realm imported by keycloak-config-cli (realm attributes `de.adorsys.keycloak.config.*`) is
//! not changed: its next import would undo the changes (it manages client-scope lists in full).
//! When something needs changing the plan carries the blocking finding
//! `ManagedByKeycloakConfigCli` saying what to add to the import file.
//!
//! A client the Keycloak operator manages (a `KeycloakOIDCClient` custom resource of the same
//! realm whose name is the clientId; looked up by the reconciler when that CRD is served) is not
//! changed either: the plan then carries the blocking finding `ManagedByKeycloakOperator`, which
//! names the resource and lists what the client needs (see [`keycloak_operator_finding`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::http;
use super::other_tools::ToolQuery;
use super::{
    Applied, CoderNeeds, Credentials, DesiredSettings, Finding, IdentityProvider, IdpPlan,
    Observation, ProviderDeps, ProviderError, ProviderKind, Snapshot as AnySnapshot,
    missing_credentials, read_back, show_duration,
};
use crate::crd::KeycloakSpec;

mod errors;
mod model;
mod other_tools;

pub use errors::keycloak_message;
pub use model::{
    ATTR_ACCESS_TOKEN, ATTR_OFFLINE_IDLE, ATTR_OFFLINE_MAX, ATTR_SESSION_IDLE, ATTR_SESSION_MAX,
    ATTR_USE_REFRESH_TOKENS, AttrChange, Plan, ROTATE_MAX_REUSE, RealmChange, RealmSettings,
    STRICT_ROTATION, ScopeLink, Snapshot, config_cli_markers, desired_attributes, effective,
    findings, plan, realm_body, realm_changes, strict_rotation_finding,
    without_optional_realm_changes,
};
pub use other_tools::{KEYCLOAK_OIDC_CLIENT, keycloak_operator_finding};

const KIND: ProviderKind = ProviderKind::Keycloak;
const OFFLINE_ACCESS: &str = "offline_access";

/// Builds the provider for a policy.
pub fn connect(
    spec: &KeycloakSpec,
    credentials: Option<Credentials>,
    deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    let credentials = credentials.ok_or_else(|| missing_credentials(KIND))?;
    let base = normalize_base_url(&spec.url)?;
    let auth_realm = spec
        .auth_realm
        .clone()
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| spec.realm.clone());
    let admin = AdminCredentials::from_secret(&credentials)?;
    let client = deps.http.client_for(KIND, &credentials)?;
    let token_key = format!(
        "keycloak|{base}|{auth_realm}|{}|{}|{}",
        credentials.secret_name,
        credentials.version,
        http::credentials_fingerprint(&admin.parts())
    );
    Ok(Arc::new(Keycloak {
        base,
        realm: spec.realm.clone(),
        client_id: spec.client_id.clone(),
        auth_realm,
        allow_realm_changes: spec.allow_realm_changes.unwrap_or(false),
        secret_name: credentials.secret_name.clone(),
        admin,
        http: client,
        deps: deps.clone(),
        token_key,
    }))
}

/// The objects a policy makes the operator write (see [`super::targets`]): the client, and the
/// realm's settings when `allowRealmChanges` is set.
pub fn targets(spec: &KeycloakSpec) -> Vec<String> {
    let base = normalize_base_url(&spec.url).unwrap_or_else(|_| spec.url.clone());
    let realm = spec.realm.as_str();
    let mut keys = vec![super::target_key(
        KIND,
        &base,
        ["realms", realm, "clients", spec.client_id.as_str()],
    )];
    if spec.allow_realm_changes == Some(true) {
        keys.push(super::target_key(
            KIND,
            &base,
            ["realms", realm, "realm-settings"],
        ));
    }
    keys
}

/// Normalizes the base URL: trims whitespace and trailing slashes and a trailing `/admin`; keeps a
/// legacy `/auth` prefix.
pub fn normalize_base_url(url: &str) -> Result<String, ProviderError> {
    let mut u = url.trim().trim_end_matches('/').to_string();
    if let Some(stripped) = u.strip_suffix("/admin") {
        u = stripped.trim_end_matches('/').to_string();
    }
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(u),
        _ => Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "spec.provider.keycloak.url {url:?} is not an http(s) URL such as https://sso.example.com"
            ),
        }),
    }
}

enum AdminCredentials {
    ClientCredentials {
        client_id: SecretString,
        client_secret: SecretString,
    },
    Password {
        username: SecretString,
        password: SecretString,
    },
}

impl AdminCredentials {
    fn from_secret(c: &Credentials) -> Result<Self, ProviderError> {
        let has = |k: &str| c.get(k).is_some();
        if has("client-id") || has("client-secret") {
            let v = c.require(KIND, &["client-id", "client-secret"])?;
            return Ok(AdminCredentials::ClientCredentials {
                client_id: v[0].clone(),
                client_secret: v[1].clone(),
            });
        }
        if has("username") || has("password") {
            let v = c.require(KIND, &["username", "password"])?;
            return Ok(AdminCredentials::Password {
                username: v[0].clone(),
                password: v[1].clone(),
            });
        }
        Err(ProviderError::InvalidSecret {
            provider: KIND,
            detail: format!(
                "Secret {:?} needs client-id + client-secret (client credentials of a client with a service account) or username + password (password grant through admin-cli); it has: {}",
                c.secret_name,
                c.keys_for_message()
            ),
        })
    }

    fn parts(&self) -> [&SecretString; 2] {
        match self {
            AdminCredentials::ClientCredentials {
                client_id,
                client_secret,
            } => [client_id, client_secret],
            AdminCredentials::Password { username, password } => [username, password],
        }
    }

    fn keys(&self) -> &'static str {
        match self {
            AdminCredentials::ClientCredentials { .. } => "client-id and client-secret",
            AdminCredentials::Password { .. } => "username and password",
        }
    }
}

/// What a 404 means for a call.
#[derive(Clone, Copy)]
enum NotFound {
    Realm,
    Client,
    Other,
}

/// One admin-API operation: metric label, description, role needed, meaning of 404.
struct Op {
    metric: &'static str,
    what: String,
    role: &'static str,
    not_found: NotFound,
}

struct Keycloak {
    base: String,
    realm: String,
    client_id: String,
    auth_realm: String,
    allow_realm_changes: bool,
    secret_name: String,
    admin: AdminCredentials,
    http: reqwest::Client,
    deps: ProviderDeps,
    token_key: String,
}

/// The writes of a Keycloak plan: what to change, and the representations read that the
/// whole-object PUTs send back.
struct Writes {
    snap: Snapshot,
    plan: Plan,
}

impl Keycloak {
    fn admin_url(&self, path: &str) -> String {
        format!("{}/admin/realms/{}{path}", self.base, enc(&self.realm))
    }

    fn op(&self, metric: &'static str, what: &str, role: &'static str, nf: NotFound) -> Op {
        Op {
            metric,
            what: what.to_string(),
            role,
            not_found: nf,
        }
    }

    async fn token(&self, force: bool) -> Result<SecretString, ProviderError> {
        if !force && let Some(t) = self.deps.tokens.get(&self.token_key) {
            return Ok(t);
        }
        let url = format!(
            "{}/realms/{}/protocol/openid-connect/token",
            self.base,
            enc(&self.auth_realm)
        );
        let form: Vec<(&str, &str)> = match &self.admin {
            AdminCredentials::ClientCredentials {
                client_id,
                client_secret,
            } => vec![
                ("grant_type", "client_credentials"),
                ("client_id", client_id.expose_secret()),
                ("client_secret", client_secret.expose_secret()),
            ],
            AdminCredentials::Password { username, password } => vec![
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", username.expose_secret()),
                ("password", password.expose_secret()),
            ],
        };
        let req = self.http.post(url).form(&form);
        let (status, headers, body) = match http::request_token(
            &self.deps,
            KIND,
            "get an admin token",
            req,
            &self.token_key,
            Duration::from_secs(60),
        )
        .await?
        {
            http::TokenAnswer::Token(token) => {
                // Keycloak's master-realm tokens live 60 s. The shared cache renews a tenth of
                // the lifetime early (6 s here), less than one reconcile with retries may take;
                // keep such short tokens a quarter of their life (up to 15 s) shorter on top.
                if let Some(keep) = jwt_lifetime(token.expose_secret()).map(cache_lifetime) {
                    self.deps.tokens.put(&self.token_key, token.clone(), keep);
                }
                return Ok(token);
            }
            http::TokenAnswer::Refused {
                status,
                headers,
                body,
            } => (status, headers, body),
        };
        Err(self.token_error(status, &headers, &body))
    }

    /// One admin call: token, send, one renewal on 401, error mapping. Returns the JSON body
    /// (`None` for an empty body such as 204).
    async fn call(
        &self,
        op: &Op,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ProviderError> {
        let call = http::BearerCall {
            metric: op.metric,
            what: &op.what,
            method,
            url,
            body,
        };
        let token = |force| self.token(force);
        match http::bearer_call(&self.deps, &self.http, KIND, &self.token_key, token, call).await? {
            http::BearerAnswer::Ok(v) => Ok(v),
            http::BearerAnswer::Status(status, headers, text) => {
                Err(self.error(op, status, &headers, &text))
            }
        }
    }

    /// Reads everything needed for `desired`. No writes.
    async fn read(&self, desired: &DesiredSettings) -> Result<Snapshot, ProviderError> {
        let realm_json = self
            .call(
                &self.op(
                    "get_realm",
                    &format!("read realm {:?}", self.realm),
                    "view-realm",
                    NotFound::Realm,
                ),
                Method::GET,
                &self.admin_url(""),
                None,
            )
            .await?
            .unwrap_or(Value::Null);
        let realm = RealmSettings::from_json(&realm_json).ok_or_else(|| ProviderError::Forbidden {
            provider: KIND,
            operation: format!("read the token settings of realm {:?}", self.realm),
            detail: format!(
                "Keycloak gave only the brief realm representation, so the admin account of Secret {:?} lacks the realm-management client role view-realm for realm {:?}; assign it (or realm-admin)",
                self.secret_name, self.realm
            ),
        })?;
        let list_url = format!(
            "{}?clientId={}",
            self.admin_url("/clients"),
            enc(&self.client_id)
        );
        let clients = self
            .call(
                &self.op(
                    "find_client",
                    &format!("find client {:?}", self.client_id),
                    "view-clients",
                    NotFound::Realm,
                ),
                Method::GET,
                &list_url,
                None,
            )
            .await?
            .unwrap_or(Value::Null);
        let client = clients
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|c| c.get("clientId").and_then(Value::as_str) == Some(&self.client_id))
            })
            .cloned();
        let Some(client) = client else {
            return Err(self.no_client_listed().await);
        };
        let id = client
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::Protocol {
                provider: KIND,
                operation: format!("find client {:?}", self.client_id),
                detail: "the client representation has no id".into(),
            })?
            .to_string();
        let client_url = self.admin_url(&format!("/clients/{}", enc(&id)));
        let scopes_of = |kind: &str| format!("{client_url}/{kind}-client-scopes");
        let read_scopes = self.op(
            "get_client_scopes",
            &format!("read the client scopes of client {:?}", self.client_id),
            "view-clients",
            NotFound::Client,
        );
        let has_offline = |v: Option<Value>| {
            v.and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .any(|s| s.get("name").and_then(Value::as_str) == Some(OFFLINE_ACCESS))
        };
        // Keycloak's client representation lists the names of the linked client scopes; read
        // the two link lists only when it does not.
        let listed = |field: &str| {
            client
                .get(field)
                .and_then(Value::as_array)
                .map(|a| a.iter().any(|n| n.as_str() == Some(OFFLINE_ACCESS)))
        };
        let (default, optional) = match (
            listed("defaultClientScopes"),
            listed("optionalClientScopes"),
        ) {
            (Some(d), Some(o)) => (d, o),
            _ => (
                has_offline(
                    self.call(&read_scopes, Method::GET, &scopes_of("default"), None)
                        .await?,
                ),
                has_offline(
                    self.call(&read_scopes, Method::GET, &scopes_of("optional"), None)
                        .await?,
                ),
            ),
        };
        let offline_scope = if default {
            ScopeLink::Default
        } else if optional {
            ScopeLink::Optional
        } else {
            ScopeLink::None
        };
        let mut snap = Snapshot {
            realm,
            realm_json,
            client,
            offline_scope,
            offline_scope_id: None,
            offline_scope_exists: None,
            offline_role_mapped: None,
            offline_scope_has_role: None,
            offline_role: None,
            discovery: Err("not read".into()),
        };
        let full_scope = snap.full_scope_allowed();
        // The scope's id: to link it, or (full scope off) to read its own role mappings.
        if desired.offline_access && (offline_scope == ScopeLink::None || !full_scope) {
            let all = self
                .call(
                    &self.op(
                        "list_client_scopes",
                        &format!("list the client scopes of realm {:?}", self.realm),
                        "view-clients",
                        NotFound::Realm,
                    ),
                    Method::GET,
                    &self.admin_url("/client-scopes"),
                    None,
                )
                .await?;
            snap.offline_scope_id = all
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .find(|s| s.get("name").and_then(Value::as_str) == Some(OFFLINE_ACCESS))
                .and_then(|s| s.get("id").and_then(Value::as_str).map(str::to_string));
            snap.offline_scope_exists = Some(snap.offline_scope_id.is_some());
        }
        if !full_scope && let Some(scope_id) = snap.offline_scope_id.clone() {
            let roles = self
                .call(
                    &self.op(
                        "get_client_scope_mappings",
                        &format!(
                            "read the realm scope mappings of client scope offline_access of realm {:?}",
                            self.realm
                        ),
                        "view-clients",
                        NotFound::Other,
                    ),
                    Method::GET,
                    &self.admin_url(&format!(
                        "/client-scopes/{}/scope-mappings/realm",
                        enc(&scope_id)
                    )),
                    None,
                )
                .await?;
            snap.offline_scope_has_role = Some(has_offline(roles));
        }
        if !full_scope && snap.offline_scope_has_role != Some(true) {
            let mapped = self
                .call(
                    &self.op(
                        "get_scope_mappings",
                        &format!(
                            "read the realm scope mappings of client {:?}",
                            self.client_id
                        ),
                        "view-clients",
                        NotFound::Client,
                    ),
                    Method::GET,
                    &format!("{client_url}/scope-mappings/realm"),
                    None,
                )
                .await?;
            let mapped = mapped
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .any(|r| r.get("name").and_then(Value::as_str) == Some(OFFLINE_ACCESS));
            snap.offline_role_mapped = Some(mapped);
            if desired.offline_access && !mapped {
                let role = self
                    .call(
                        &self.op(
                            "get_role",
                            &format!("read realm role offline_access of realm {:?}", self.realm),
                            "view-realm",
                            NotFound::Other,
                        ),
                        Method::GET,
                        &self.admin_url("/roles/offline_access"),
                        None,
                    )
                    .await;
                snap.offline_role = match role {
                    Ok(r) => r,
                    Err(ProviderError::ClientNotFound { .. }) => None,
                    Err(e) => return Err(e),
                };
            }
        }
        snap.discovery = self.discovery().await;
        Ok(snap)
    }

    /// The realm's discovery document, shared by every client of the realm for
    /// [`http::FACT_TTL`].
    async fn discovery(&self) -> Result<Value, String> {
        let key = format!("keycloak-discovery|{}|{}", self.base, self.realm);
        if let Some(doc) = self.deps.facts.get::<Value>(&key) {
            return Ok(doc);
        }
        let doc = self.read_discovery().await?;
        self.deps.facts.put(&key, doc.clone(), http::FACT_TTL);
        Ok(doc)
    }

    async fn read_discovery(&self) -> Result<Value, String> {
        let url = format!(
            "{}/realms/{}/.well-known/openid-configuration",
            self.base,
            enc(&self.realm)
        );
        let resp = http::send(&self.deps, KIND, "discovery", self.http.get(url))
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| http::describe_reqwest_error(&e))?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", keycloak_message(&text)));
        }
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
    }

    /// The error when the exact `clientId` lookup lists nothing. Keycloak answers `200 []` both
    /// when no client has the clientId and when the admin account may query clients but not view
    /// them (`query-clients` without `view-clients`, or fine-grained permissions without view on
    /// any client): `ClientsResource.getClients` leaves out the clients the caller cannot view.
    /// One page of any client tells them apart, because every realm has built-in clients
    /// (`account`, `admin-cli`, `broker`, `realm-management`, …).
    async fn no_client_listed(&self) -> ProviderError {
        let any = self
            .call(
                &self.op(
                    "list_clients",
                    &format!("list the clients of realm {:?}", self.realm),
                    "view-clients",
                    NotFound::Realm,
                ),
                Method::GET,
                &format!("{}?first=0&max=1", self.admin_url("/clients")),
                None,
            )
            .await;
        match any {
            Ok(Some(Value::Array(list))) if list.is_empty() => ProviderError::Forbidden {
                provider: KIND,
                operation: format!("find client {:?}", self.client_id),
                detail: format!(
                    "Keycloak lists no client at all in realm {:?} to the admin account of Secret {:?}, although every realm has built-in clients: the account may query clients (query-clients) but not view them; assign it the realm-management client role view-clients (or realm-admin), or with fine-grained admin permissions the view permission on client {:?}",
                    self.realm, self.secret_name, self.client_id
                ),
            },
            Err(e) => e,
            Ok(_) => self.client_not_found(),
        }
    }

    fn refuse_realm_changes(&self, plan: &Plan) -> Result<(), ProviderError> {
        // The reuse window of `rotation: Rotate` alone never stalls the policy: it is dropped
        // and a warning stands in for it.
        if !plan.realm.iter().any(|c| c.required) || self.allow_realm_changes {
            return Ok(());
        }
        let list: Vec<String> = plan
            .realm
            .iter()
            .map(|c| format!("{} to {} (now {})", c.field, c.to, c.from))
            .collect();
        Err(ProviderError::Unsupported {
            provider: KIND,
            detail: format!(
                "the policy needs realm-wide settings of realm {:?}, which affect every client in it: set {} (admin console: Realm settings, Sessions and Tokens tabs), or set spec.provider.keycloak.allowRealmChanges: true to let the operator change them",
                self.realm,
                list.join(", ")
            ),
        })
    }

    fn observation(&self, desired: &DesiredSettings, snap: &Snapshot, plan: &Plan) -> Observation {
        Observation {
            settings: effective(snap, desired.offline_access),
            changes: plan.changes(&self.realm, &self.client_id),
            findings: findings(desired, snap, &self.realm)
                .into_iter()
                .chain(strict_rotation_finding(
                    desired,
                    snap,
                    plan,
                    &self.realm,
                    self.allow_realm_changes,
                ))
                .collect(),
            coder: CoderNeeds {
                add_scopes: if desired.offline_access {
                    vec![OFFLINE_ACCESS.to_string()]
                } else {
                    Vec::new()
                },
                remove_scopes: Vec::new(),
                params: BTreeMap::new(),
            },
        }
    }

    async fn write(&self, snap: &Snapshot, plan: &Plan) -> Result<Vec<String>, ProviderError> {
        let mut actions = Vec::new();
        if !plan.realm.is_empty() {
            let body = realm_body(snap, plan);
            self.call(
                &self.op(
                    "update_realm",
                    &format!("update the token settings of realm {:?}", self.realm),
                    "manage-realm",
                    NotFound::Realm,
                ),
                Method::PUT,
                &self.admin_url(""),
                Some(&body),
            )
            .await?;
            actions.extend(plan.realm.iter().map(|c| {
                format!(
                    "set realm {} {} to {} (was {})",
                    self.realm, c.field, c.to, c.from
                )
            }));
        }
        let id = snap
            .client
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let client_url = self.admin_url(&format!("/clients/{}", enc(&id)));
        if !plan.attributes.is_empty() {
            let mut body = snap.client.clone();
            let Some(obj) = body.as_object_mut() else {
                return Err(ProviderError::Protocol {
                    provider: KIND,
                    operation: format!("update client {:?}", self.client_id),
                    detail: "the client representation is not a JSON object".into(),
                });
            };
            let attrs = obj
                .entry("attributes")
                .or_insert_with(|| Value::Object(Map::new()));
            if !attrs.is_object() {
                *attrs = Value::Object(Map::new());
            }
            if let Some(a) = attrs.as_object_mut() {
                for c in &plan.attributes {
                    a.insert(c.key.to_string(), Value::String(c.to.clone()));
                }
            }
            self.call(
                &self.op(
                    "update_client",
                    &format!("update client {:?}", self.client_id),
                    "manage-clients",
                    NotFound::Client,
                ),
                Method::PUT,
                &client_url,
                Some(&body),
            )
            .await?;
            actions.extend(plan.attributes.iter().map(|c| {
                format!(
                    "set client attribute {} to {} (was {})",
                    c.key,
                    c.to,
                    c.from.as_deref().unwrap_or("unset")
                )
            }));
        }
        if plan.link_offline_scope
            && let Some(scope_id) = &snap.offline_scope_id
        {
            self.call(
                &self.op(
                    "link_client_scope",
                    &format!(
                        "link client scope offline_access to client {:?}",
                        self.client_id
                    ),
                    "manage-clients",
                    NotFound::Other,
                ),
                Method::PUT,
                &format!("{client_url}/optional-client-scopes/{}", enc(scope_id)),
                None,
            )
            .await?;
            actions.push("linked client scope offline_access to the client as optional".into());
        }
        if plan.map_offline_role
            && let Some(role) = &snap.offline_role
        {
            let mut r = Map::new();
            for k in [
                "id",
                "name",
                "description",
                "composite",
                "clientRole",
                "containerId",
            ] {
                if let Some(v) = role.get(k) {
                    r.insert(k.to_string(), v.clone());
                }
            }
            self.call(
                &self.op(
                    "add_scope_mapping",
                    &format!(
                        "add realm role offline_access to the scope mappings of client {:?}",
                        self.client_id
                    ),
                    "manage-clients",
                    NotFound::Other,
                ),
                Method::POST,
                &format!("{client_url}/scope-mappings/realm"),
                Some(&Value::Array(vec![Value::Object(r)])),
            )
            .await?;
            actions.push("added realm role offline_access to the client's scope mappings".into());
        }
        Ok(actions)
    }
}

/// How long to cache a token that lives `lifetime`, before the cache's own margin: a quarter of
/// the lifetime, at most 15 s, less.
fn cache_lifetime(lifetime: Duration) -> Duration {
    lifetime.saturating_sub((lifetime / 4).min(Duration::from_secs(15)))
}

/// The lifetime (`exp` - `iat`) of a JWT access token, without verifying it; `None` when the
/// token is not a JWT with both claims. Measured on the token itself, so clock skew does not
/// matter.
fn jwt_lifetime(token: &str) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&base64url_decode(payload)?).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    let iat = claims.get("iat")?.as_i64()?;
    u64::try_from(exp - iat)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// Decodes unpadded (or padded) base64url.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
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

/// Percent-encodes one path or query component.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl IdentityProvider for Keycloak {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    fn check(&self, desired: &DesiredSettings) -> Result<(), ProviderError> {
        let fields = [
            ("lifetime", desired.lifetime),
            ("idleTimeout", desired.idle_timeout),
            ("accessTokenLifetime", desired.access_token_lifetime),
        ];
        for (name, d) in fields {
            let Some(d) = d else { continue };
            if d.subsec_nanos() != 0 || d.is_zero() || d.as_secs() > i32::MAX as u64 {
                return Err(ProviderError::Unsupported {
                    provider: KIND,
                    detail: format!(
                        "spec.refreshTokens.{name} is {}: Keycloak stores lifetimes as whole seconds between 1s and {}s",
                        show_duration(Some(d)),
                        i32::MAX
                    ),
                });
            }
        }
        Ok(())
    }

    async fn observe(&self, desired: &DesiredSettings) -> Result<AnySnapshot, ProviderError> {
        Ok(AnySnapshot::new(KIND, self.read(desired).await?))
    }

    fn plan(
        &self,
        snapshot: &AnySnapshot,
        desired: &DesiredSettings,
    ) -> Result<IdpPlan, ProviderError> {
        self.check(desired)?;
        let snap: &Snapshot = snapshot.get()?;
        let mut todo = plan(desired, snap);
        self.refuse_realm_changes(&todo)?;
        if !self.allow_realm_changes || !config_cli_markers(&snap.realm_json).is_empty() {
            todo = without_optional_realm_changes(todo);
        }
        let observation = self.observation(desired, snap, &todo);
        let writes = Writes {
            snap: snap.clone(),
            plan: todo,
        };
        Ok(IdpPlan::new(KIND, desired, observation, writes))
    }

    fn other_tools(&self) -> Vec<ToolQuery> {
        vec![other_tools::query(&self.client_id)]
    }

    fn managed_by_other_tools(
        &self,
        plan: &IdpPlan,
        query: &ToolQuery,
        found: &[Value],
    ) -> Vec<Finding> {
        super::other_tools::judge(plan, query, KEYCLOAK_OIDC_CLIENT, |w: &Writes| {
            keycloak_operator_finding(&w.plan, &self.realm, &self.client_id, found)
        })
    }

    async fn apply(&self, plan: &IdpPlan) -> Result<Applied, ProviderError> {
        if plan.is_empty() {
            return Ok(Applied::unchanged(plan));
        }
        let w: &Writes = plan.writes()?;
        let actions = self.write(&w.snap, &w.plan).await?;
        let observation = read_back(self, plan).await?;
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
    fn base_urls_are_normalized() {
        assert_eq!(
            normalize_base_url("https://sso.example.com/").unwrap(),
            "https://sso.example.com"
        );
        assert_eq!(
            normalize_base_url(" https://sso.example.com/auth// ").unwrap(),
            "https://sso.example.com/auth"
        );
        assert_eq!(
            normalize_base_url("https://sso.example.com/auth/admin/").unwrap(),
            "https://sso.example.com/auth"
        );
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(matches!(
            normalize_base_url("sso.example.com"),
            Err(ProviderError::Unsupported { .. })
        ));
        assert!(normalize_base_url("https:///x").is_err());
    }

    #[test]
    fn short_admin_tokens_are_renewed_well_before_they_expire() {
        // {"exp":1700000060,"iat":1700000000}: a 60 s master-realm token.
        let claims = r#"{"exp":1700000060,"iat":1700000000,"sub":"x"}"#;
        let b64: String = {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let bytes = claims.as_bytes();
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b))
                    << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        };
        assert_eq!(base64url_decode(&b64).unwrap(), claims.as_bytes());
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{b64}.sig");
        assert_eq!(jwt_lifetime(&token), Some(Duration::from_secs(60)));
        assert_eq!(jwt_lifetime("opaque-token"), None);
        assert_eq!(jwt_lifetime("a.!!!.c"), None);
        // 60 s: cached 45 s (the shared cache then drops it a tenth earlier: renewed after
        // about 40 s, 20 s before Keycloak rejects it); longer tokens lose at most 15 s.
        assert_eq!(
            cache_lifetime(Duration::from_secs(60)),
            Duration::from_secs(45)
        );
        assert_eq!(
            cache_lifetime(Duration::from_secs(300)),
            Duration::from_secs(285)
        );
        assert_eq!(
            cache_lifetime(Duration::from_secs(4)),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn path_components_are_encoded() {
        assert_eq!(enc("my realm/x"), "my%20realm%2Fx");
        assert_eq!(enc("coder-1_a.b~"), "coder-1_a.b~");
    }
}
