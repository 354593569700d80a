//! What the STS's and the admin API's error answers mean, with what to fix.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::KIND;
use crate::providers::ProviderError;
use crate::providers::http::{self, error_for_status, truncate};

/// A readable message from an error body: `ValidationProblemDetails` → `title: key: msg; …`; an
/// OAuth error → `error: description`; plain text otherwise.
pub fn duende_message(body: &str) -> String {
    http::error_body_message(body, |o| {
        let mut parts = Vec::new();
        if let Some(Value::Object(errors)) = o.get("errors") {
            for (k, v) in errors {
                let msgs: Vec<&str> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                parts.push(format!("{k}: {}", msgs.join(", ")));
            }
        }
        let title = o
            .get("title")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let text = match (title, parts.is_empty()) {
            (Some(t), true) => t.to_string(),
            (Some(t), false) => format!("{t} ({})", parts.join("; ")),
            (None, false) => parts.join("; "),
            (None, true) => return None,
        };
        Some(truncate(&text, 400))
    })
}

/// True for the admin API's "Client with id N doesn't exist" (a 400, never a 404).
pub fn is_unknown_id(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("errors")?.get("Error")?.as_array().cloned())
        .is_some_and(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .any(|m| m.starts_with("Client with id ") && m.ends_with("doesn't exist"))
        })
}

/// The error for a refused token request.
pub fn token_error(
    token_url: &str,
    scope: &str,
    secret: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> ProviderError {
    let msg = duende_message(body);
    let code = http::oauth_error_code(body).unwrap_or_default();
    match (status.as_u16(), code.as_str()) {
        (_, "invalid_client") => ProviderError::AuthenticationFailed {
            provider: KIND,
            detail: format!(
                "the STS refused the client credentials ({msg}); client-id and client-secret in Secret {secret:?} must be \
                 the ClientId and a secret of an STS client allowed the client_credentials grant"
            ),
        },
        (_, "unauthorized_client") => ProviderError::AuthenticationFailed {
            provider: KIND,
            detail: format!(
                "the STS client of Secret {secret:?} may not use the client_credentials grant ({msg}): add \
                 client_credentials to its AllowedGrantTypes"
            ),
        },
        (_, "invalid_scope") => ProviderError::AuthenticationFailed {
            provider: KIND,
            detail: format!(
                "the STS client of Secret {secret:?} may not request scope {scope:?} ({msg}): add it to the client's \
                 AllowedScopes (the admin API's OidcApiName, an ApiScope of the STS)"
            ),
        },
        (404, _) => ProviderError::ClientNotFound {
            provider: KIND,
            what: format!("token endpoint {token_url}"),
            detail: format!(
                "answered 404 ({msg}); spec.provider.duende.adminApi.authority must be the IdentityServer (STS) base URL, \
                 the admin API's IdentityServerBaseUrl"
            ),
        },
        (400 | 401, _) => ProviderError::AuthenticationFailed {
            provider: KIND,
            detail: format!(
                "the STS token endpoint answered HTTP {} ({msg}); check client-id and client-secret in Secret {secret:?}",
                status.as_u16()
            ),
        },
        _ => error_for_status(KIND, "get an admin API token", status, headers, msg),
    }
}

/// The error for an admin API answer that is not a success (other than an unknown id, which the
/// caller handles).
pub fn api_error(
    what: &str,
    scope: &str,
    secret: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> ProviderError {
    let msg = duende_message(body);
    match status.as_u16() {
        401 => ProviderError::AuthenticationFailed {
            provider: KIND,
            detail: format!(
                "the admin API refused a fresh token to {what}{}; its audience must be the admin API's OidcApiName \
                 ({scope:?}) and spec.provider.duende.adminApi.authority the STS the admin API trusts",
                headers
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| format!(" ({})", truncate(v, 200)))
                    .unwrap_or_default()
            ),
        },
        403 => ProviderError::Forbidden {
            provider: KIND,
            operation: what.into(),
            detail: format!(
                "the admin API's policy needs a token with scope {scope:?} and a role (or client_role) claim equal to \
                 its AdministrationRole (SkorubaIdentityAdminAdministrator by default): give the STS client of Secret \
                 {secret:?} the client claim role=<AdministrationRole>. With \
                 EmitScopesAsSpaceDelimitedStringInJwt the token must hold that one scope only"
            ),
        },
        404 => ProviderError::ClientNotFound {
            provider: KIND,
            what: "the admin API".into(),
            detail: format!(
                "{what} answered 404 ({msg}); spec.provider.duende.adminApi.url must be the Skoruba admin API's base URL, \
                 without /api"
            ),
        },
        400 | 422 => ProviderError::Rejected {
            provider: KIND,
            operation: what.into(),
            detail: msg,
        },
        _ => error_for_status(KIND, what, status, headers, msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_details_and_oauth_errors_read_well() {
        let b = r#"{"title":"One or more model validation errors occurred.","status":400,"instance":"/api/Clients","errors":{"Error":["Client with id 5 doesn't exist"]},"traceId":"x"}"#;
        assert_eq!(
            duende_message(b),
            "One or more model validation errors occurred. (Error: Client with id 5 doesn't exist)"
        );
        assert!(is_unknown_id(b));
        assert!(!is_unknown_id(
            r#"{"errors":{"Client already exists":["Client Id (x) already exists"]}}"#
        ));
        assert_eq!(
            duende_message(r#"{"error":"invalid_scope"}"#),
            "invalid_scope"
        );
        assert_eq!(duende_message("Bad Gateway"), "Bad Gateway");
    }
}
