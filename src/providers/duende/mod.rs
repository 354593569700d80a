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

use async_trait::async_trait;

use super::{
    Applied, Credentials, DesiredSettings, Finding, IdentityProvider, IdpPlan, ProviderDeps,
    ProviderError, ProviderKind, Snapshot as AnySnapshot, applied_after,
};
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

/// What a policy makes the operator write in Duende (see [`super::targets`]): Coder's client
/// behind the admin API. A database backend claims nothing: the database is named only by the
/// connection string in the policy's Secret, and a key made of what the spec says (a Secret name, a
/// schema, a client id) would make unrelated Duende installations in different namespaces look
/// alike and stall one of them for nothing. Two policies writing one client through the database
/// are therefore not detected (docs/reliability.md says so).
pub fn targets(spec: &DuendeSpec) -> Vec<String> {
    match &spec.admin_api {
        Some(api) => vec![admin_api::target_key(&api.url, &spec.client_id)],
        None => Vec::new(),
    }
}

/// `Duende client "coder"`, for messages.
pub fn target(client_id: &str) -> String {
    format!("Duende client {client_id:?}")
}

/// What a backend reads and writes; [`Duende`] makes the provider of it (observe → plan → apply
/// with a read-back, the same for both).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// What `read` returns.
    type Snapshot: Send + Sync + 'static;

    /// `ClientId` of Coder's client.
    fn client_id(&self) -> &str;

    /// Reads Coder's client.
    async fn read(&self) -> Result<Self::Snapshot, ProviderError>;

    /// The refresh columns of a snapshot.
    fn refresh(&self, snap: &Self::Snapshot) -> Result<Refresh, ProviderError>;

    /// Findings added to a plan that writes.
    fn write_findings(&self) -> Vec<Finding> {
        Vec::new()
    }

    /// Writes what `planned` planned, after checking on a fresh read that the client still needs
    /// exactly those changes ([`recheck`]); returns the action line for the Event.
    async fn write(
        &self,
        planned: &Plan,
        desired: &DesiredSettings,
    ) -> Result<String, ProviderError>;

    /// The plan for a snapshot. Pure.
    fn plan_of(
        &self,
        snap: &Self::Snapshot,
        desired: &DesiredSettings,
    ) -> Result<Plan, ProviderError> {
        let mut p = model::plan(&self.refresh(snap)?, desired, &target(self.client_id()))?;
        if p.next.is_some() {
            p.observation.findings.extend(self.write_findings());
        }
        Ok(p)
    }
}

/// The columns to write after a fresh read planned `again`: those of `planned`, or an error when
/// the client changed since it was planned (nothing is written; the next pass plans again).
pub fn recheck(client_id: &str, planned: &Plan, again: Plan) -> Result<Refresh, ProviderError> {
    match again.next {
        Some(next) if again.observation.changes == planned.observation.changes => Ok(next),
        _ => Err(ProviderError::Protocol {
            provider: KIND,
            operation: "update the client".into(),
            detail: format!(
                "{} was changed by someone else since it was read, so the planned update was not written; the next \
                 pass plans again",
                target(client_id)
            ),
        }),
    }
}

/// The Duende provider over one backend.
#[derive(Debug)]
pub struct Duende<B>(pub B);

struct Writes {
    plan: Plan,
}

#[async_trait]
impl<B: Backend> IdentityProvider for Duende<B> {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    fn check(&self, desired: &DesiredSettings) -> Result<(), ProviderError> {
        model::check_desired(desired)
    }

    async fn observe(&self, desired: &DesiredSettings) -> Result<AnySnapshot, ProviderError> {
        model::check_desired(desired)?;
        Ok(AnySnapshot::new(KIND, self.0.read().await?))
    }

    fn plan(
        &self,
        snapshot: &AnySnapshot,
        desired: &DesiredSettings,
    ) -> Result<IdpPlan, ProviderError> {
        let snap: &B::Snapshot = snapshot.get()?;
        let p = self.0.plan_of(snap, desired)?;
        let observation = p.observation.clone();
        Ok(IdpPlan::new(KIND, desired, observation, Writes { plan: p }))
    }

    async fn apply(&self, todo: &IdpPlan) -> Result<Applied, ProviderError> {
        if todo.is_empty() {
            return Ok(Applied::unchanged(todo));
        }
        let Writes { plan } = todo.writes()?;
        let desired = todo.desired();
        let action = self.0.write(plan, desired).await?;
        // Read back: AllowOfflineAccess must be true before Coder asks for offline_access.
        let after = self.0.plan_of(&self.0.read().await?, desired)?;
        applied_after(KIND, vec![action], after.observation)
    }
}
