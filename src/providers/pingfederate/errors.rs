//! What PingFederate's error answers mean: the readable part of an `ApiResult` body, scrubbing
//! of secrets, and the errors (with what to fix) for the admin API's statuses.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{KIND, PingFederate};
use crate::providers::ProviderError;
use crate::providers::http;

impl PingFederate {
    /// Hides anything that looks like an encrypted secret or the password in server messages.
    fn scrub(&self, text: &str) -> String {
        let mut out = scrub_obfuscated(text);
        let pw = self.password.expose_secret();
        if pw.len() >= 3 {
            out = out.replace(pw, "***");
        }
        out
    }

    pub(super) fn error(
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
            403 if operation == super::REPLICATE => ProviderError::Forbidden {
                provider: KIND,
                operation: operation.to_string(),
                detail: format!(
                    "the administrator account of Secret {:?} may not replicate{said_suffix}; replicating the \
                     configuration to the engine nodes (POST /cluster/replicate) needs the Admin role. Give the \
                     account the Admin role, or set spec.provider.pingFederate.replication to Manual and have an \
                     administrator replicate",
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
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::admin_base;
    use super::*;
    use crate::providers::{Credentials, ProviderDeps};

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
            replication: crate::crd::PingFederateReplication::Automatic,
            username: creds.get("username").unwrap().clone(),
            password: creds.get("password").unwrap().clone(),
            http: deps.http.client(KIND, None).unwrap(),
            deps,
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
        let e = pf.error(super::super::REPLICATE, StatusCode::FORBIDDEN, &h, "");
        assert!(matches!(e, ProviderError::Forbidden { .. }), "{e:?}");
        assert!(
            e.to_string().contains(
                "replicating the configuration to the engine nodes (POST /cluster/replicate) needs the Admin role"
            ),
            "{e}"
        );
        assert!(e.to_string().contains("replication to Manual"), "{e}");
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
}
