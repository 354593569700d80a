//! The configuration-database backend (Duende's EF Core `ConfigurationDbContext` tables).

use std::sync::Arc;

use super::KIND;
use crate::crd::DuendeDatabaseSpec;
use crate::providers::{Credentials, IdentityProvider, ProviderDeps, ProviderError};

/// Builds the database backend.
pub fn connect(
    _client_id: &str,
    _spec: &DuendeDatabaseSpec,
    _credentials: Option<Credentials>,
    _deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    Err(ProviderError::Unsupported {
        provider: KIND,
        detail: "this build has no database backend for Duende; use spec.provider.duende.adminApi"
            .into(),
    })
}
