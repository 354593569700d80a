//! What Okta's error answers mean: the message of an error body, and the errors (with what to fix)
//! for the token endpoint's and the Management API's statuses.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{KIND, Okta, Op};
use crate::providers::ProviderError;
use crate::providers::http::{error_body_message, error_for_status, truncate};

/// A readable message from an Okta error body: `{"errorCode","errorSummary","errorCauses"}` →
/// `E0000001: Api validation failed: … (cause; cause)`; an OAuth error `{"error",
/// "error_description"}` → `error: description`; or plain text.
pub fn okta_message(body: &str) -> String {
    error_body_message(body, |o| {
        let s = |k: &str| o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let summary = s("errorSummary")?;
        let causes: Vec<&str> = o
            .get("errorCauses")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get("errorSummary").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let head = match s("errorCode") {
            Some(c) => format!("{c}: {summary}"),
            None => summary.to_string(),
        };
        Some(truncate(
            &if causes.is_empty() {
                head
            } else {
                format!("{head} ({})", causes.join("; "))
            },
            600,
        ))
    })
}

impl Okta {
    /// The error for a refused token request.
    pub(super) fn token_error(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
    ) -> ProviderError {
        let msg = okta_message(body);
        let code = crate::providers::http::oauth_error_code(body).unwrap_or_default();
        let secret = &self.secret_name;
        match code.as_str() {
            "invalid_client" => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "Okta's token endpoint refused the service app's client assertion ({msg}); client-id, private-key \
                     and key-id in Secret {secret:?} must be the client ID of an API service app of this org using \
                     public/private key authentication, and a private key whose public key is registered on it"
                ),
            },
            "invalid_scope" => ProviderError::Forbidden {
                provider: KIND,
                operation: "get a Management API token".into(),
                detail: format!(
                    "{msg}. Grant the service app of Secret {secret:?} the Okta API scopes {} (Applications > the app \
                     > Okta API Scopes)",
                    super::SCOPES.join(", ")
                ),
            },
            "unauthorized_client" => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "{msg}. The app of client-id in Secret {secret:?} must be an API service app allowed the client \
                     credentials grant"
                ),
            },
            "invalid_dpop_proof" | "use_dpop_nonce" => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!("Okta refused the operator's DPoP proof ({msg})"),
            },
            _ => error_for_status(KIND, "get a Management API token", status, headers, msg),
        }
    }

    /// The error for a Management API answer.
    pub(super) fn api_error(
        &self,
        op: Op,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
    ) -> ProviderError {
        let msg = okta_message(body);
        let secret = &self.secret_name;
        match status.as_u16() {
            401 => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "the Management API refused the credentials of Secret {secret:?} ({msg}). An API token (api-token) \
                     is revoked after 30 days unused and dies with its admin; create a new one, or use a service app"
                ),
            },
            403 => ProviderError::Forbidden {
                provider: KIND,
                operation: op.what().into(),
                detail: format!(
                    "{msg}. The operator needs to read and update Coder's app and the authorization server's access \
                     policies: an API token of an admin with the Application Administrator and API Access Management \
                     Administrator roles (or Super Administrator), or a service app with the scopes {} and such a \
                     role",
                    super::SCOPES.join(", ")
                ),
            },
            _ => error_for_status(KIND, op.what(), status, headers, msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn okta_bodies_read_well() {
        assert_eq!(
            okta_message(
                r#"{"errorCode":"E0000001","errorSummary":"Api validation failed: x","errorCauses":[{"errorSummary":"leeway: too big"}]}"#
            ),
            "E0000001: Api validation failed: x (leeway: too big)"
        );
        assert_eq!(
            okta_message(r#"{"error":"invalid_client","error_description":"nope"}"#),
            "invalid_client: nope"
        );
        assert_eq!(okta_message("plain"), "plain");
    }
}
