//! What Keycloak's error answers mean: the message of an error body, and the errors (with what
//! to fix) for the token endpoint's and the admin API's statuses.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{AdminCredentials, KIND, Keycloak, NotFound, Op};
use crate::providers::ProviderError;
use crate::providers::http::{self, error_for_status, truncate};

/// Extracts Keycloak's message from an error body: `{"error","error_description"}`,
/// `{"errorMessage"}`, or plain text.
pub fn keycloak_message(body: &str) -> String {
    let body = body.trim();
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(body) {
        let s = |k: &str| o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        if let Some(m) = s("errorMessage") {
            return truncate(m, 300);
        }
        return match (s("error"), s("error_description")) {
            (Some(e), Some(d)) => truncate(&format!("{e}: {d}"), 300),
            (Some(e), None) => truncate(e, 300),
            (None, Some(d)) => truncate(d, 300),
            (None, None) => truncate(body, 300),
        };
    }
    truncate(body, 300)
}

/// The `error_description` of an OAuth error body (empty when absent).
fn oauth_description(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error_description")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default()
}

impl Keycloak {
    /// The error for a refused token request.
    pub(super) fn token_error(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
    ) -> ProviderError {
        let msg = keycloak_message(body);
        match status.as_u16() {
            400 | 401 => {
                let code = http::oauth_error_code(body).unwrap_or_default();
                let description = oauth_description(body);
                let answered = format!(
                    "the token endpoint of realm {:?} answered HTTP {} ({msg})",
                    self.auth_realm,
                    status.as_u16()
                );
                let client_credentials =
                    matches!(self.admin, AdminCredentials::ClientCredentials { .. });
                // ClientIdAndSecretAuthenticator: an unknown or disabled client is
                // invalid_client, a known client with a wrong secret is unauthorized_client;
                // both say "Invalid client or Invalid client credentials".
                let bad_credentials = description.contains("Invalid client credentials");
                let specific = match code.as_str() {
                    "unauthorized_client" if client_credentials && bad_credentials => {
                        Some(format!(
                            "{answered}: the client named by client-id exists in realm {:?} but client-secret in Secret {:?} is wrong; copy the client's current secret (Credentials tab) into the Secret",
                            self.auth_realm, self.secret_name
                        ))
                    }
                    "invalid_client" if client_credentials && bad_credentials => Some(format!(
                        "{answered}: realm {:?} has no enabled client with the client-id in Secret {:?}; check client-id, that the client is enabled and that it lives in realm {:?} (spec.provider.keycloak.authRealm)",
                        self.auth_realm, self.secret_name, self.auth_realm
                    )),
                    "unauthorized_client"
                        if description.contains("not enabled to retrieve service account") =>
                    {
                        Some(format!(
                            "{answered}: the client named by client-id in Secret {:?} has service accounts turned off; enable Service accounts roles on it (Client authentication on) and give its service-account user the realm-management roles",
                            self.secret_name
                        ))
                    }
                    "unauthorized_client" if description.contains("Public client not allowed") => {
                        Some(format!(
                            "{answered}: the client named by client-id in Secret {:?} is public; turn Client authentication on and enable Service accounts roles",
                            self.secret_name
                        ))
                    }
                    _ => None,
                };
                if let Some(detail) = specific {
                    return ProviderError::AuthenticationFailed {
                        provider: KIND,
                        detail,
                    };
                }
                let hint = match (&self.admin, code.as_str()) {
                    (AdminCredentials::ClientCredentials { .. }, "unauthorized_client") => {
                        " and that the client has Client authentication and Service accounts roles enabled"
                    }
                    (AdminCredentials::Password { .. }, "unauthorized_client") => {
                        " and that the admin-cli client allows Direct access grants"
                    }
                    _ => "",
                };
                ProviderError::AuthenticationFailed {
                    provider: KIND,
                    detail: format!(
                        "the token endpoint of realm {:?} answered HTTP {} ({msg}); check {} in Secret {:?}, that they belong to realm {:?} (spec.provider.keycloak.authRealm){hint}",
                        self.auth_realm,
                        status.as_u16(),
                        self.admin.keys(),
                        self.secret_name,
                        self.auth_realm,
                    ),
                }
            }
            404 => ProviderError::ClientNotFound {
                provider: KIND,
                what: format!(
                    "realm {:?} (where the admin credentials live)",
                    self.auth_realm
                ),
                detail: format!(
                    "{} has no such realm ({msg}); check spec.provider.keycloak.url and spec.provider.keycloak.authRealm (default: realm)",
                    self.base
                ),
            },
            _ => error_for_status(KIND, "get an admin token", status, headers, msg),
        }
    }

    /// The error for an admin-API answer that is not a success.
    pub(super) fn error(
        &self,
        op: &Op,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
    ) -> ProviderError {
        let msg = keycloak_message(body);
        match status.as_u16() {
            401 => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "Keycloak answered 401 to {} even with a fresh token from realm {:?} ({msg}); check the admin credentials in Secret {:?} and that tokens of realm {:?} may manage realm {:?} (only master may manage other realms)",
                    op.what, self.auth_realm, self.secret_name, self.auth_realm, self.realm
                ),
            },
            403 => ProviderError::Forbidden {
                provider: KIND,
                operation: op.what.clone(),
                detail: format!(
                    "the admin account of Secret {:?} lacks the realm-management client role {} for realm {:?} ({msg}); assign it to the account's service-account user (or user) in realm {:?}{}, or assign realm-admin. The operator needs view-clients, manage-clients and view-realm{}",
                    self.secret_name,
                    op.role,
                    self.realm,
                    self.auth_realm,
                    if self.auth_realm != self.realm {
                        format!(
                            " (in {:?} the role belongs to the client {:?})",
                            self.auth_realm,
                            format!("{}-realm", self.realm)
                        )
                    } else {
                        String::new()
                    },
                    if self.allow_realm_changes {
                        ", plus manage-realm because allowRealmChanges is true"
                    } else {
                        ""
                    }
                ),
            },
            404 => match op.not_found {
                NotFound::Realm => self.realm_not_found(&msg),
                NotFound::Client => self.client_not_found(),
                NotFound::Other => ProviderError::ClientNotFound {
                    provider: KIND,
                    what: op.what.clone(),
                    detail: format!("Keycloak answered 404 ({msg})"),
                },
            },
            _ => error_for_status(KIND, &op.what, status, headers, msg),
        }
    }

    fn realm_not_found(&self, msg: &str) -> ProviderError {
        ProviderError::ClientNotFound {
            provider: KIND,
            what: format!("realm {:?}", self.realm),
            detail: format!(
                "{} has no realm {:?} ({msg}); check spec.provider.keycloak.realm (the realm name, not its display name) and spec.provider.keycloak.url",
                self.base, self.realm
            ),
        }
    }

    pub(super) fn client_not_found(&self) -> ProviderError {
        ProviderError::ClientNotFound {
            provider: KIND,
            what: format!("client {:?} in realm {:?}", self.client_id, self.realm),
            detail: "no client has this clientId; check spec.provider.keycloak.clientId (the Client ID Coder uses as CODER_OIDC_CLIENT_ID, not Keycloak's internal UUID) and spec.provider.keycloak.realm; the operator never creates clients (with fine-grained admin permissions, the admin account may also lack the view permission on this client)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::oauth_error_code;

    #[test]
    fn error_bodies_in_both_shapes() {
        assert_eq!(
            keycloak_message(
                r#"{"error":"invalid_client","error_description":"Invalid client or Invalid client credentials"}"#
            ),
            "invalid_client: Invalid client or Invalid client credentials"
        );
        assert_eq!(
            keycloak_message(r#"{"errorMessage":"Client coder already exists"}"#),
            "Client coder already exists"
        );
        assert_eq!(
            keycloak_message(r#"{"error":"HTTP 403 Forbidden"}"#),
            "HTTP 403 Forbidden"
        );
        assert_eq!(
            keycloak_message("  <html>bad gateway</html> "),
            "<html>bad gateway</html>"
        );
        assert_eq!(keycloak_message(""), "");
        assert_eq!(
            oauth_error_code(r#"{"error":"invalid_grant"}"#).as_deref(),
            Some("invalid_grant")
        );
    }
}
