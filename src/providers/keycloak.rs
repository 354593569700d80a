//! Keycloak provider (not implemented yet).

use std::sync::Arc;

use super::{Credentials, IdentityProvider, ProviderDeps, ProviderError, ProviderKind};
use crate::crd::KeycloakSpec;

/// Builds the provider for a policy.
pub fn connect(
    _spec: &KeycloakSpec,
    _credentials: Option<Credentials>,
    _deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    Err(ProviderError::Unsupported {
        provider: ProviderKind::Keycloak,
        detail: "this version of the operator does not configure Keycloak yet".into(),
    })
}
