//! What Logto's error answers mean: the message of an error body, and the errors (with what to
//! fix) for the token endpoint's and the Management API's statuses.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{KIND, Logto, Op};
use crate::providers::ProviderError;
use crate::providers::http::{self, error_body_message, error_for_status, truncate};

/// A readable message from a Logto error: `{"code","message","details"}` → `code: message
/// (details)`; an OAuth error `{"error","error_description"}` → `error: description`; a bare
/// `{"message"}` (bad JSON, 500); or plain text.
pub fn logto_message(body: &str) -> String {
    error_body_message(body, |o| {
        let s = |k: &str| o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let head = match (s("code"), s("message")) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_string(),
            (None, Some(m)) => m.to_string(),
            (None, None) => return None,
        };
        Some(truncate(
            &match s("details") {
                Some(d) => format!("{head} ({})", d.replace('\n', "; ")),
                None => head,
            },
            400,
        ))
    })
}

/// The `code` of a Management API error body.
fn logto_code(body: &str) -> Option<String> {
    serde_json::from_str::<Value>(body)
        .ok()?
        .get("code")?
        .as_str()
        .map(str::to_string)
}

impl Logto {
    /// The error for a refused token request.
    pub(super) fn token_error(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
    ) -> ProviderError {
        let msg = logto_message(body);
        let code = http::oauth_error_code(body).unwrap_or_default();
        let secret = &self.secret_name;
        match (status.as_u16(), code.as_str()) {
            (_, "invalid_client") => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "Logto's token endpoint refused the client credentials ({msg}); client-id and client-secret in Secret \
                     {secret:?} must be the App ID and an App secret of a machine-to-machine app of this Logto tenant"
                ),
            },
            (_, "unauthorized_client") => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "the app of client-id in Secret {secret:?} may not use client credentials ({msg}): only a \
                     machine-to-machine app may. Create one (Logto Console > Applications > Machine-to-machine), \
                     assign it a role with the Logto Management API permission `all`, and put its App ID and secret \
                     in the Secret"
                ),
            },
            (_, "invalid_target") => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "Logto does not know the resource indicator {} ({msg}): self-hosted Logto's Management API is \
                     https://default.logto.app/api, a Logto Cloud tenant's is https://<tenant-id>.logto.app/api. Set \
                     spec.provider.logto.tenantId to the tenant id (Logto Cloud behind a custom domain) or correct \
                     spec.provider.logto.endpoint",
                    self.indicator
                ),
            },
            (404, _) => ProviderError::ClientNotFound {
                provider: KIND,
                what: format!("token endpoint {}/oidc/token", self.endpoint),
                detail: format!(
                    "answered 404 ({msg}); spec.provider.logto.endpoint must be the Logto endpoint itself (a Cloud \
                     tenant's https://<tenant-id>.logto.app, or a self-hosted Logto's core URL, port 3001 by default), \
                     not the Admin Console's"
                ),
            },
            (400 | 401, _) => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "Logto's token endpoint answered HTTP {} ({msg}); check client-id and client-secret in Secret {secret:?}",
                    status.as_u16()
                ),
            },
            _ => error_for_status(
                KIND,
                "get a Logto Management API token",
                status,
                headers,
                msg,
            ),
        }
    }

    /// The error for a Management API answer that is not a success.
    pub(super) fn error(
        &self,
        op: Op,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
    ) -> ProviderError {
        let msg = logto_message(body);
        let code = logto_code(body).unwrap_or_default();
        match status.as_u16() {
            401 => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "the Logto Management API refused a fresh access token to \"{}\" ({msg}); the token's audience must be \
                     this tenant's Management API, {}: check spec.provider.logto.endpoint and tenantId",
                    op.what(),
                    self.indicator
                ),
            },
            403 => ProviderError::Forbidden {
                provider: KIND,
                operation: op.what().into(),
                detail: format!(
                    "{msg}; the machine-to-machine app of Secret {:?} needs a role with the Logto Management API \
                     permission `all` (Logto Console > Roles > a machine-to-machine role with permission `all` of \
                     \"Logto Management API\", assigned to the app)",
                    self.secret_name
                ),
            },
            404 => ProviderError::ClientNotFound {
                provider: KIND,
                what: format!("application {}", self.app_id),
                detail: format!(
                    "Logto has no application with this ID ({msg}); spec.provider.logto.applicationId must be the App ID \
                     Coder uses as CODER_OIDC_CLIENT_ID, in the tenant of spec.provider.logto.endpoint. The operator \
                     never creates applications"
                ),
            },
            400 | 422 => {
                let hint = if msg.contains("refreshTokenTtlInDays")
                    && msg.contains(&format!(
                        "less than or equal to {}",
                        super::model::LEGACY_MAX_TTL_DAYS
                    )) {
                    format!(
                        "; Logto before 1.34.0 allows at most {} days: upgrade Logto or set spec.refreshTokens.lifetime \
                         to at most {}h",
                        super::model::LEGACY_MAX_TTL_DAYS,
                        super::model::LEGACY_MAX_TTL_DAYS * 24
                    )
                } else if code == "application.saml.use_saml_app_api" {
                    "; the application is a SAML app, not an OIDC client".to_string()
                } else {
                    String::new()
                };
                ProviderError::Rejected {
                    provider: KIND,
                    operation: op.what().into(),
                    detail: format!("{msg}{hint}"),
                }
            }
            _ => error_for_status(KIND, op.what(), status, headers, msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_code_and_details() {
        assert_eq!(
            logto_message(
                r#"{"code":"guard.invalid_input","message":"The request body is invalid.","details":"Error in key path \"customClientMetadata.refreshTokenTtlInDays\": (too_big) Number must be less than or equal to 180","data":{"issues":[]}}"#
            ),
            "guard.invalid_input: The request body is invalid. (Error in key path \"customClientMetadata.refreshTokenTtlInDays\": (too_big) Number must be less than or equal to 180)"
        );
        assert_eq!(
            logto_message(
                r#"{"error":"invalid_target","error_description":"resource indicator is missing, or unknown"}"#
            ),
            "invalid_target: resource indicator is missing, or unknown"
        );
        assert_eq!(
            logto_message(r#"{"message":"Internal server error."}"#),
            "Internal server error."
        );
        assert_eq!(logto_message("Bad Gateway"), "Bad Gateway");
    }
}
