//! What Microsoft Graph's and the token endpoint's error answers mean: the message of an error
//! body, and the errors (with what to fix) for their statuses.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{EntraId, KIND, Op};
use crate::providers::ProviderError;
use crate::providers::http::{self, error_for_status, truncate};

/// Extracts a readable message from a Graph error (`{"error":{"code","message"}}` →
/// `code: message`), a token-endpoint error (`{"error","error_description"}`, without the trace
/// lines) or plain text.
pub fn graph_message(body: &str) -> String {
    let body = body.trim();
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(body) {
        if let Some(Value::Object(e)) = o.get("error") {
            let s = |k: &str| e.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
            return match (s("code"), s("message")) {
                (Some(c), Some(m)) => truncate(&format!("{c}: {m}"), 400),
                (Some(c), None) => truncate(c, 400),
                (None, Some(m)) => truncate(m, 400),
                (None, None) => truncate(body, 400),
            };
        }
        let s = |k: &str| o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        if let Some(code) = s("error") {
            return match s("error_description") {
                Some(d) => truncate(&format!("{code}: {}", strip_trace(d)), 400),
                None => truncate(code, 400),
            };
        }
    }
    truncate(body, 400)
}

/// Drops the `Trace ID: … Correlation ID: … Timestamp: …` tail of an AAD error description.
fn strip_trace(d: &str) -> &str {
    let cut = ["\r\n", "\n", " Trace ID:"]
        .iter()
        .filter_map(|m| d.find(m))
        .min()
        .unwrap_or(d.len());
    d[..cut].trim()
}

impl EntraId {
    /// The error for a refused token request.
    pub(super) fn token_error(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
    ) -> ProviderError {
        let msg = graph_message(body);
        let code = http::oauth_error_code(body).unwrap_or_default();
        match status.as_u16() {
            400 | 401 if msg.contains("AADSTS90002") => ProviderError::ClientNotFound {
                provider: KIND,
                what: format!("tenant {}", self.tenant),
                detail: format!(
                    "the token endpoint {} does not know this tenant ({msg}); check spec.provider.entraId.tenantId and authorityHost (national clouds have their own)",
                    self.authority
                ),
            },
            400 | 401 => {
                let hint = match code.as_str() {
                    "invalid_client" => {
                        "; client-secret must be the secret's Value (not its Secret ID) and must not have expired"
                    }
                    "unauthorized_client" => {
                        "; client-id must be the Application (client) ID of a management app registered in this tenant"
                    }
                    "invalid_scope" => {
                        "; check spec.provider.entraId.graphEndpoint (the scope is <graphEndpoint>/.default)"
                    }
                    _ => "",
                };
                ProviderError::AuthenticationFailed {
                    provider: KIND,
                    detail: format!(
                        "the token endpoint of tenant {} answered HTTP {} ({msg}); check client-id and client-secret in Secret {:?}{hint}",
                        self.tenant,
                        status.as_u16(),
                        self.secret_name
                    ),
                }
            }
            404 => ProviderError::ClientNotFound {
                provider: KIND,
                what: format!("tenant {}", self.tenant),
                detail: format!(
                    "{}/{}/oauth2/v2.0/token answered 404 ({msg}); check spec.provider.entraId.authorityHost and tenantId",
                    self.authority, self.tenant
                ),
            },
            _ => error_for_status(KIND, "get a Microsoft Graph token", status, headers, msg),
        }
    }

    /// The error for a Graph answer that is not a success.
    pub(super) fn error(
        &self,
        op: Op,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
    ) -> ProviderError {
        let msg = graph_message(body);
        match status.as_u16() {
            401 => ProviderError::AuthenticationFailed {
                provider: KIND,
                detail: format!(
                    "Microsoft Graph answered 401 to \"{}\" even with a fresh token ({msg}); check that the management app of Secret {:?} belongs to tenant {} and that spec.provider.entraId.graphEndpoint matches the authority's cloud",
                    op.what(),
                    self.secret_name,
                    self.tenant
                ),
            },
            403 => ProviderError::Forbidden {
                provider: KIND,
                operation: op.what().into(),
                detail: format!(
                    "{}; the management app of Secret {:?} needs {} with admin consent in tenant {}{}",
                    msg.trim_end_matches('.'),
                    self.secret_name,
                    op.permission(),
                    self.tenant,
                    op.note()
                ),
            },
            404 if op == Op::ReadApp || op == Op::PatchApp => self.app_not_found(&msg),
            504 if headers.contains_key(reqwest::header::RETRY_AFTER) => ProviderError::Throttled {
                provider: KIND,
                operation: op.what().into(),
                retry_after: http::retry_after(headers),
            },
            _ => error_for_status(KIND, op.what(), status, headers, msg),
        }
    }

    fn app_not_found(&self, msg: &str) -> ProviderError {
        ProviderError::ClientNotFound {
            provider: KIND,
            what: format!(
                "application (client) id {} in tenant {}",
                self.app_id, self.tenant
            ),
            detail: format!(
                "Microsoft Graph has no app registration with this appId visible to the management app ({msg}); check spec.provider.entraId.applicationId (the Application (client) ID Coder uses as CODER_OIDC_CLIENT_ID, not the Object ID) and tenantId, and that the management app of Secret {:?} has one of the Microsoft Graph application permissions Application.Read.All, Application.ReadWrite.OwnedBy or Application.ReadWrite.All with admin consent; the operator never creates app registrations",
                self.secret_name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_errors_show_their_code() {
        let body = r#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation.","innerError":{"date":"2026-01-01T00:00:00","request-id":"x"}}}"#;
        assert_eq!(
            graph_message(body),
            "Authorization_RequestDenied: Insufficient privileges to complete the operation."
        );
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1\r\nCorrelation ID: 2\r\nTimestamp: 3","error_codes":[7000215]}"#;
        assert_eq!(
            graph_message(body),
            "invalid_client: AADSTS7000215: Invalid client secret provided."
        );
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Trace ID: 1 Correlation ID: 2"}"#;
        assert_eq!(
            graph_message(body),
            "invalid_client: AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(
            graph_message("upstream connect error"),
            "upstream connect error"
        );
    }
}
