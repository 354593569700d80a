//! A pass abandoned at its deadline (`--reconcile-timeout`) or on a panic leaves the policy's
//! status saying so, in the operator's own words (never a remote body, never the panic's text,
//! which may hold remote text), instead of the status of the last pass that finished. The
//! controller retries the policy with backoff; the status write this makes does not cut the
//! backoff short (a pass triggered by it waits for the backoff like any other).

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use jiff::Timestamp;
use kube::ResourceExt;
use tracing::warn;

use super::{Context, announce, patch_status};
use crate::crd::OidcRefreshPolicy;
use crate::error::Error;
use crate::events;
use crate::status::{self, Outcome, Reason, State, Verdict, Verdicts};

/// Longest the status write of an abandoned pass may take.
const REPORT_DEADLINE: Duration = Duration::from_secs(10);

/// The verdicts of a pass abandoned with `error`, if it was abandoned (other errors are failures
/// to talk to Kubernetes, which could not write the status either).
pub fn verdicts(error: &Error) -> Option<Verdicts> {
    let (reason, message) = match error {
        Error::DeadlineExceeded(d) => (
            Reason::ReconcileTimeout,
            format!(
                "The last reconcile did not finish within its deadline of {}s (--reconcile-timeout) and was cancelled; it is retried with backoff. \
                 An identity provider or Kubernetes API server that answers slowly or not at all is the usual cause: see the operator's log and its oidc_refresh_provider_* metrics.",
                d.as_secs()
            ),
        ),
        Error::Panicked => (
            Reason::InternalError,
            "The last reconcile stopped on an internal error of the operator (a bug) and was abandoned; the operator keeps running and retries with backoff. \
             Please report it with the operator's log."
                .to_string(),
        ),
        Error::Kube { .. } | Error::NotLeader => return None,
    };
    let unknown = Verdict::new(
        State::Unknown,
        reason,
        "Not evaluated: the last reconcile was abandoned.",
    );
    Some(Verdicts {
        idp: Verdict::new(State::Progressing, reason, message),
        coder: unknown.clone(),
        rollout: unknown,
    })
}

/// Writes the status of a pass abandoned with `error` (and publishes its Events). Failures are
/// logged; the policy is retried with backoff either way.
pub async fn report(policy: &OidcRefreshPolicy, ctx: &Context, error: &Error) {
    let Some(verdicts) = verdicts(error) else {
        return;
    };
    let write = AssertUnwindSafe(write(policy, ctx, verdicts)).catch_unwind();
    match tokio::time::timeout(REPORT_DEADLINE, write).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "could not write the status of an abandoned reconcile"),
        Ok(Err(_panic)) => {
            warn!("writing the status of an abandoned reconcile panicked (a bug)")
        }
        Err(_elapsed) => warn!("writing the status of an abandoned reconcile timed out"),
    }
}

async fn write(
    policy: &OidcRefreshPolicy,
    ctx: &Context,
    verdicts: Verdicts,
) -> crate::error::Result<()> {
    let ns = policy.namespace().unwrap_or_default();
    let key = (ns.clone(), policy.name_any());
    let mut pass = Outcome::without_io(verdicts);
    // Nothing was learnt: the plan, the settings and the warnings last seen are kept.
    pass.pending = None;
    let old = policy.status.as_ref();
    let mut new_status = status::build(policy, old, &pass, Timestamp::now());
    let notes = events::for_status(old, &new_status, &pass);
    let carried = announce::carried(old, &ctx.announced, &key);
    new_status.pending_announcements =
        announce::settle(policy, ctx, carried, Vec::new(), &notes, &[]).await;
    if status::changed(old, &new_status) {
        patch_status(policy, &ns, &new_status, ctx).await?;
    }
    ctx.metrics
        .policy_pass(&ns, &key.1, &new_status, &pass.verdicts);
    Ok(())
}

#[cfg(all(test, feature = "sandbox"))]
mod tests {
    use std::sync::Arc;

    use kube::Api;
    use kube::runtime::controller::Action;
    use serde_json::json;

    use super::*;
    use crate::controller::guarded;
    use crate::events::Publisher;
    use crate::metrics::Metrics;
    use crate::providers::ProviderDeps;
    use crate::sandbox::{self, NAMESPACE, Sandbox};

    fn ready(p: &OidcRefreshPolicy) -> (String, String, String) {
        let c = status::find(
            &p.status.as_ref().expect("a status").conditions,
            status::ConditionType::Ready,
        )
        .expect("a Ready condition");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[tokio::test]
    async fn a_reconcile_cancelled_at_its_deadline_or_panicking_says_so_in_status() {
        let (sim, client) = Sandbox::start_cluster().await.unwrap();
        let api: Api<OidcRefreshPolicy> = Api::namespaced(client.clone(), NAMESPACE);
        sandbox::create_policy(
            &client,
            sandbox::example_policy("coder", json!({"google": {}})),
        )
        .await
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let ctx = Arc::new(Context::new(
            client.clone(),
            Publisher::new(client.clone(), None),
            metrics.clone(),
            ProviderDeps::new(metrics, Duration::from_secs(5)),
        ));

        // A pass that never ends (a tarpit identity provider, a hung API call).
        let policy = Arc::new(api.get("coder").await.unwrap());
        let r = guarded(policy, ctx.clone(), Duration::from_secs(1), |_, _| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Action::await_change())
        })
        .await;
        assert!(matches!(r, Err(Error::DeadlineExceeded(_))), "{r:?}");
        let p = api.get("coder").await.unwrap();
        let (state, reason, message) = ready(&p);
        assert_eq!(
            (state.as_str(), reason.as_str()),
            ("False", "ReconcileTimeout")
        );
        assert!(
            message.starts_with(
                "The last reconcile did not finish within its deadline of 1s (--reconcile-timeout)"
            ),
            "{message}"
        );
        let reconciling = status::find(
            &p.status.as_ref().unwrap().conditions,
            status::ConditionType::Reconciling,
        )
        .unwrap();
        assert_eq!(reconciling.status, "True", "retried: not stalled");

        // A pass that panics, with remote text in the panic.
        let r = guarded(
            Arc::new(p),
            ctx.clone(),
            Duration::from_secs(5),
            |_, _| async {
                if std::hint::black_box(true) {
                    panic!("boom with remote text");
                }
                Ok(Action::await_change())
            },
        )
        .await;
        assert!(matches!(r, Err(Error::Panicked)), "{r:?}");
        let p = api.get("coder").await.unwrap();
        let (state, reason, message) = ready(&p);
        assert_eq!(
            (state.as_str(), reason.as_str()),
            ("False", "InternalError")
        );
        assert!(
            message.starts_with("The last reconcile stopped on an internal error of the operator"),
            "{message}"
        );
        assert!(!message.contains("boom"), "{message}");
        // Alerts see it too: the policy's readiness series follows the abandoned pass.
        let exported = ctx.metrics.encode();
        assert!(
            exported
                .lines()
                .any(|l| l.starts_with("oidc_refresh_policy_ready{")
                    && l.contains("reason=\"InternalError\"")
                    && l.contains("status=\"False\"")),
            "{exported}"
        );
        let events = sandbox::policy_events(&client, "coder").await.unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.1 == "NotReady" && e.2.starts_with("ReconcileTimeout: ")),
            "{events:?}"
        );
        assert!(events.iter().all(|e| !e.2.contains("boom")), "{events:?}");

        // Another abandoned pass with nothing new writes nothing.
        let before = sim.counters();
        let r = guarded(Arc::new(p), ctx, Duration::from_secs(5), |_, _| async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            Ok(Action::await_change())
        })
        .await;
        assert!(r.is_err());
        assert_eq!(
            sim.counters()
                .diff(&before)
                .writes_to("oidcrefreshpolicies/status"),
            0
        );
        sim.shutdown().await;
    }
}
