//! Duende IdentityServer, through one of two backends chosen by the policy:
//!
//! - [`admin_api`]: the open-source Skoruba `Duende.IdentityServer.Admin` API (the usual admin
//!   HTTP API of Duende deployments; Duende itself has none).
//! - [`database`]: Duende's EF Core configuration database (`ConfigurationDbContext` tables),
//!   updating only the refresh columns of Coder's `Clients` row.
//!
//! Both follow observe → plan (pure, [`model`]) → apply with a read-back, and map the policy the
//! same way:
//!
//! | policy (`spec.refreshTokens`) | Duende client |
//! |---|---|
//! | `offlineAccess: true` | `AllowOfflineAccess = true`, read back before Coder asks for `offline_access` (Duende refuses the login with `invalid_scope` otherwise) |
//! | `lifetime` | `AbsoluteRefreshTokenLifetime` (seconds) |
//! | `idleTimeout` | `RefreshTokenExpiration = Sliding` + `SlidingRefreshTokenLifetime` (seconds) |
//! | `rotation` | `RefreshTokenUsage`: `Reuse` → `ReUse`; `Rotate`/`RotateStrict` → `OneTimeOnly` (no reuse window; reported, with ReUse recommended for a confidential client like Coder) |
//! | `accessTokenLifetime` | `AccessTokenLifetime` (seconds) |

use std::sync::Arc;

use super::{Credentials, IdentityProvider, ProviderDeps, ProviderError, ProviderKind};
use crate::crd::DuendeSpec;

pub mod admin_api;
pub mod database;
mod errors;
pub mod model;

pub use model::{Plan, Refresh};

const KIND: ProviderKind = ProviderKind::Duende;

/// Builds the provider for a policy: the backend it names.
pub fn connect(
    spec: &DuendeSpec,
    credentials: Option<Credentials>,
    deps: &ProviderDeps,
) -> Result<Arc<dyn IdentityProvider>, ProviderError> {
    match (&spec.admin_api, &spec.database) {
        (Some(api), None) => admin_api::connect(&spec.client_id, api, credentials, deps),
        (None, Some(db)) => database::connect(&spec.client_id, db, credentials, deps),
        _ => Err(ProviderError::Unsupported {
            provider: KIND,
            detail:
                "set exactly one of spec.provider.duende.adminApi or spec.provider.duende.database"
                    .into(),
        }),
    }
}

/// `Duende client "coder"`, for messages.
pub fn target(client_id: &str) -> String {
    format!("Duende client {client_id:?}")
}
