//! Google: no admin API. Refresh tokens come from `access_type=offline` plus `prompt=consent`
//! (Google only returns a refresh token on a consent screen); the `offline_access` scope is
//! rejected by Google with `invalid_scope`, so it is removed from Coder's scopes.

use async_trait::async_trait;

use super::{
    Applied, CoderNeeds, DesiredSettings, IdentityProvider, IdpPlan, IdpSettings, Observation,
    ProviderError, ProviderKind, Snapshot,
};

/// The Google provider.
#[derive(Debug, Clone, Copy)]
pub struct Google;

impl Google {
    fn observation() -> Observation {
        Observation {
            settings: IdpSettings::default(),
            changes: Vec::new(),
            findings: Vec::new(),
            coder: CoderNeeds {
                add_scopes: Vec::new(),
                remove_scopes: vec!["offline_access".into()],
                params: [("access_type", "offline"), ("prompt", "consent")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        }
    }
}

#[async_trait]
impl IdentityProvider for Google {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Google
    }

    fn check(&self, desired: &DesiredSettings) -> Result<(), ProviderError> {
        let mut set = Vec::new();
        if desired.lifetime.is_some() {
            set.push("lifetime");
        }
        if desired.idle_timeout.is_some() {
            set.push("idleTimeout");
        }
        if desired.rotation.is_some() {
            set.push("rotation");
        }
        if desired.access_token_lifetime.is_some() {
            set.push("accessTokenLifetime");
        }
        if set.is_empty() {
            return Ok(());
        }
        Err(ProviderError::Unsupported {
            provider: ProviderKind::Google,
            detail: format!(
                "Google has no admin API for token settings, so spec.refreshTokens.{} cannot be applied. \
                 Google refresh tokens stay valid until revoked, unused for six months, or replaced \
                 (a user has at most 100 per client); access tokens last one hour. Remove {} from the policy.",
                set.join(", spec.refreshTokens."),
                if set.len() == 1 { "it" } else { "them" }
            ),
        })
    }

    async fn observe(&self, desired: &DesiredSettings) -> Result<Snapshot, ProviderError> {
        self.check(desired)?;
        Ok(Snapshot::new(ProviderKind::Google, ()))
    }

    fn plan(&self, _: &Snapshot, desired: &DesiredSettings) -> Result<IdpPlan, ProviderError> {
        self.check(desired)?;
        Ok(IdpPlan::new(
            ProviderKind::Google,
            desired,
            Self::observation(),
            (),
        ))
    }

    async fn apply(&self, plan: &IdpPlan) -> Result<Applied, ProviderError> {
        Ok(Applied::unchanged(plan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn google_needs_consent_and_no_offline_access_scope() {
        let obs = Google
            .observe_plan(&DesiredSettings {
                offline_access: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .observation;
        assert_eq!(obs.coder.remove_scopes, ["offline_access"]);
        assert_eq!(
            obs.coder.params.get("access_type").map(String::as_str),
            Some("offline")
        );
        assert_eq!(
            obs.coder.params.get("prompt").map(String::as_str),
            Some("consent")
        );
        assert!(obs.changes.is_empty());
    }

    #[test]
    fn lifetimes_are_unsupported_with_a_reason() {
        let err = Google
            .check(&DesiredSettings {
                lifetime: Some(Duration::from_secs(3600)),
                rotation: Some(crate::crd::Rotation::Rotate),
                ..Default::default()
            })
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ProviderError::Unsupported { .. }));
        assert!(
            msg.contains("spec.refreshTokens.lifetime, spec.refreshTokens.rotation"),
            "{msg}"
        );
        assert!(msg.contains("Remove them"), "{msg}");
    }
}
