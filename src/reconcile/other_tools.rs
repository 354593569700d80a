//! Observe, continued: the custom resources through which other tools manage the
//! identity-provider object a plan would change (the Keycloak operator's `KeycloakOIDCClient`,
//! Azure Service Operator's `Application`).
//!
//! Looked up only when the plan has something to write (a converged policy costs nothing), and
//! only for kinds the API server serves: discovery of the kind's group-version is cached for
//! [`SERVED_TTL`], whatever it answered, so a cluster without the CRD costs one discovery request
//! per group-version in that time and never a list. A served kind is listed cluster-wide (the
//! other tool's resources live where that tool's resources live, not with the policy), narrowed
//! by the provider's field selector. Whether a listed resource manages the same object is the
//! provider's decision ([`IdentityProvider::managed_by_other_tools`]); its blocking findings stall
//! the policy before anything is written. When the list is refused (RBAC) or fails, the pass goes
//! on with a non-blocking [`NOT_CHECKED`] finding instead of an error, and is not retried until
//! the next pass with something to write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};
use serde_json::Value;

use crate::providers::other_tools::{ToolKind, ToolQuery};
use crate::providers::{Finding, IdentityProvider, IdpPlan};

/// How long a discovery answer (served or not) is reused.
pub const SERVED_TTL: Duration = Duration::from_secs(300);
/// Resources per list page.
const PAGE: u32 = 250;
/// Pages followed at most (a larger list is reported as not checked).
const MAX_PAGES: usize = 20;
/// Reason of the non-blocking finding when other tools' resources could not be looked up.
pub const NOT_CHECKED: &str = "OtherToolsNotChecked";

/// Cached discovery: whether each group-version serves the kind asked about.
#[derive(Default)]
pub struct ServedKinds {
    known: Mutex<HashMap<ToolKind, (bool, Instant)>>,
}

impl ServedKinds {
    fn cached(&self, kind: &ToolKind) -> Option<bool> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .get(kind)
            .filter(|(_, at)| at.elapsed() < SERVED_TTL)
            .map(|(served, _)| *served)
    }

    fn remember(&self, kind: &ToolKind, served: bool) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.insert(*kind, (served, Instant::now()));
    }

    /// Whether the API server serves `kind` (discovery of its group-version; a 404 means no).
    async fn served(&self, client: &kube::Client, kind: &ToolKind) -> Result<bool, String> {
        if let Some(served) = self.cached(kind) {
            return Ok(served);
        }
        let served = match client.list_api_group_resources(&kind.api_version()).await {
            Ok(list) => list.resources.iter().any(|r| r.name == kind.plural),
            Err(kube::Error::Api(s)) if s.code == 404 => false,
            Err(e) => return Err(format!("discovery of {} failed: {e}", kind.api_version())),
        };
        self.remember(kind, served);
        Ok(served)
    }
}

/// Adds to `plan` the findings about other tools managing the object it would change.
pub async fn check(
    provider: &dyn IdentityProvider,
    plan: &mut IdpPlan,
    client: &kube::Client,
    served: &ServedKinds,
) {
    if plan.is_empty() {
        return;
    }
    for query in provider.other_tools() {
        let findings = match lookup(client, served, &query).await {
            Ok(None) => Vec::new(),
            Ok(Some(found)) => provider.managed_by_other_tools(plan, &query, &found),
            Err(why) => vec![not_checked(&query.kind, &why)],
        };
        plan.observation.findings.extend(findings);
    }
}

/// The resources of `query`, or `None` when the kind is not served.
async fn lookup(
    client: &kube::Client,
    served: &ServedKinds,
    query: &ToolQuery,
) -> Result<Option<Vec<Value>>, String> {
    let kind = &query.kind;
    if !served.served(client, kind).await? {
        return Ok(None);
    }
    let ar = ApiResource {
        group: kind.group.into(),
        version: kind.version.into(),
        api_version: kind.api_version(),
        kind: kind.kind.into(),
        plural: kind.plural.into(),
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut params = ListParams::default().limit(PAGE);
    if let Some(fields) = &query.field_selector {
        params = params.fields(fields);
    }
    let mut out = Vec::new();
    for _ in 0..MAX_PAGES {
        let list = match api.list(&params).await {
            Ok(list) => list,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                // The CRD went away since discovery.
                served.remember(kind, false);
                return Ok(None);
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(format!(
                    "the API server refused to list them ({}); grant the operator's ServiceAccount list on {}.{} in all namespaces (the chart's ClusterRole has it)",
                    s.message, kind.plural, kind.group
                ));
            }
            Err(e) => return Err(format!("listing them failed: {e}")),
        };
        out.extend(
            list.items
                .into_iter()
                .filter_map(|o| serde_json::to_value(o).ok()),
        );
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(Some(out)),
        }
    }
    Err(format!(
        "there are more than {} of them",
        PAGE as usize * MAX_PAGES
    ))
}

fn not_checked(kind: &ToolKind, why: &str) -> Finding {
    Finding {
        reason: NOT_CHECKED,
        message: format!(
            "could not check whether {} manages this identity-provider object through {} resources: {why}. The operator goes on without that check; if {} does manage it, its next update may undo the operator's changes",
            kind.tool,
            kind.describe(),
            kind.tool
        ),
        blocking: false,
        expires_at: None,
    }
}
