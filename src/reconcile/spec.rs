//! The policy's spec as the controller uses it: parsed settings and the resync interval. Pure.

use std::time::Duration;

use crate::crd::OidcRefreshPolicy;
use crate::duration;
use crate::providers::DesiredSettings;

/// Spec values the schema cannot fully check, parsed.
pub fn desired_settings(policy: &OidcRefreshPolicy) -> Result<DesiredSettings, String> {
    let r = &policy.spec.refresh_tokens;
    let parse = |field: &str, v: &Option<String>| -> Result<Option<Duration>, String> {
        v.as_deref()
            .map(|s| duration::parse(s).map_err(|e| format!("spec.refreshTokens.{field}: {e}")))
            .transpose()
    };
    Ok(DesiredSettings {
        offline_access: r.offline_access.unwrap_or(true),
        lifetime: parse("lifetime", &r.lifetime)?,
        idle_timeout: parse("idleTimeout", &r.idle_timeout)?,
        rotation: r.rotation,
        access_token_lifetime: parse("accessTokenLifetime", &r.access_token_lifetime)?,
    })
}

/// The policy's resync interval (at least 30 s).
pub fn interval(policy: &OidcRefreshPolicy) -> Duration {
    duration::parse(&policy.spec.interval)
        .unwrap_or(Duration::from_secs(600))
        .max(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn desired_settings_default_offline_access_and_parse_durations() {
        let p: OidcRefreshPolicy = serde_json::from_value(json!({
            "apiVersion": "oidcrefresh.dev/v1alpha1", "kind": "OidcRefreshPolicy",
            "metadata": {"name": "a", "namespace": "b"},
            "spec": {"provider": {"google": {}}, "coder": {"deployment": "c"}, "refreshTokens": {"idleTimeout": "1h30m"}}
        }))
        .unwrap();
        let d = desired_settings(&p).unwrap();
        assert!(d.offline_access);
        assert_eq!(d.idle_timeout, Some(Duration::from_secs(5400)));
        let mut bad = p.clone();
        bad.spec.refresh_tokens.lifetime = Some("3 days".into());
        assert!(
            desired_settings(&bad)
                .unwrap_err()
                .contains("spec.refreshTokens.lifetime")
        );
    }
}
