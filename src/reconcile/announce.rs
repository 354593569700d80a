//! Announcements that survive a restart. An Event about a write is recorded in the policy's
//! status (`status.pendingAnnouncements`) before the write is made, and the status keeps every
//! Event whose publication failed; the pass publishes, then writes the status without what it
//! published. A process killed between a write and its Event (or whose Events the API server
//! refused) leaves the announcement in status, and a later pass, in this process or the next
//! one, publishes it.
//!
//! A recorded announcement of a write is published only by a pass that sees the write made (the
//! identity provider converged, Coder configured); while the write is still to make (it failed,
//! or could not be judged) it stays recorded, unchanged, so retrying a failing write neither
//! announces it nor rewrites the status. A pass that makes the write again announces it afresh,
//! replacing the recorded one of the same reason.
//!
//! Exactly once in the common case: this process remembers the ids it has published or replaced,
//! so a pass that still sees an older copy of the status does not publish them again. Only a kill
//! after publishing and before the status write can announce twice; never zero times.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use kube::{Resource, ResourceExt};

use super::Context;
use super::backoff::PolicyKey;
use crate::crd::{OidcRefreshPolicy, OidcRefreshPolicyStatus, PendingAnnouncement};
use crate::error::Result;
use crate::events::{self, EventNote, Publisher};
use crate::metrics::Metrics;
use crate::providers::http::truncate;

/// Most announcements kept in status (the oldest are dropped first).
pub const MAX_PENDING: usize = 16;
/// Ids remembered per policy as published or dropped by this process.
const REMEMBERED: usize = 64;

/// Ids of announcements this process has published or dropped, per policy.
#[derive(Default)]
pub struct Announced {
    inner: Mutex<HashMap<PolicyKey, VecDeque<String>>>,
}

impl Announced {
    fn is_done(&self, key: &PolicyKey, id: &str) -> bool {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).is_some_and(|ids| ids.iter().any(|i| i == id))
    }

    /// Remembers `ids` as published or dropped.
    pub fn done(&self, key: &PolicyKey, ids: impl IntoIterator<Item = String>) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids = ids.into_iter().peekable();
        if ids.peek().is_none() {
            return;
        }
        let entry = map.entry(key.clone()).or_default();
        for id in ids {
            if entry.len() >= REMEMBERED {
                entry.pop_front();
            }
            entry.push_back(id);
        }
    }

    /// Forgets a deleted policy.
    pub fn forget(&self, key: &PolicyKey) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// A fresh id.
fn new_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

fn stored(note: &EventNote) -> PendingAnnouncement {
    PendingAnnouncement {
        id: new_id(),
        type_: if note.warning { "Warning" } else { "Normal" }.into(),
        reason: note.reason.to_string(),
        note: truncate(&note.note, 1000),
    }
}

/// The announcements in `old` that this process has not published or dropped.
pub fn carried(
    old: Option<&OidcRefreshPolicyStatus>,
    announced: &Announced,
    key: &PolicyKey,
) -> Vec<PendingAnnouncement> {
    old.map(|s| s.pending_announcements.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|a| !announced.is_done(key, &a.id))
        .cloned()
        .collect()
}

/// Reasons of the Events that announce a write (recorded before it is made).
pub const IDP_UPDATED: &str = "IdentityProviderUpdated";
/// See [`IDP_UPDATED`].
pub const DEPLOYMENT_PATCHED: &str = "DeploymentPatched";
/// See [`IDP_UPDATED`].
pub const DRIFT_CORRECTED: &str = "DriftCorrected";
/// The reasons announcing a Coder write.
pub const CODER_WRITES: [&str; 3] = [
    DEPLOYMENT_PATCHED,
    DRIFT_CORRECTED,
    events::USERS_MUST_SIGN_IN_AGAIN,
];

fn announces_a_write(reason: &str) -> bool {
    reason == IDP_UPDATED || CODER_WRITES.contains(&reason)
}

/// `carried`, then `fresh`: a fresh announcement replaces a carried one of the same reason (and
/// keeps its id when its type and message are the same, so recording it again changes nothing).
/// Returns the list and the ids of the carried ones replaced.
pub fn merge(
    carried: Vec<PendingAnnouncement>,
    fresh: &[EventNote],
) -> (Vec<PendingAnnouncement>, Vec<String>) {
    let (replaced, mut kept): (Vec<_>, Vec<_>) = carried
        .into_iter()
        .partition(|a| fresh.iter().any(|n| n.reason == a.reason));
    let mut gone = Vec::new();
    for n in fresh {
        let mut new = stored(n);
        match replaced
            .iter()
            .find(|a| a.reason == new.reason && a.note == new.note && a.type_ == new.type_)
        {
            Some(same) => new.id = same.id.clone(),
            None => gone.extend(
                replaced
                    .iter()
                    .filter(|a| a.reason == new.reason)
                    .map(|a| a.id.clone()),
            ),
        }
        kept.push(new);
    }
    (kept, gone)
}

/// At most [`MAX_PENDING`], the newest.
pub fn bounded(mut list: Vec<PendingAnnouncement>) -> Vec<PendingAnnouncement> {
    if list.len() > MAX_PENDING {
        list.drain(..list.len() - MAX_PENDING);
    }
    list
}

/// What [`record`] recorded.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// The announcements recorded for this pass's writes.
    pub entries: Vec<PendingAnnouncement>,
    /// The status was written (it did not hold them already).
    pub written: bool,
}

/// Records `notes` in the policy's status before the writes they announce (no status write when
/// it holds them already). Fails (and the writes are not made) when the status cannot be written.
pub async fn record(
    policy: &OidcRefreshPolicy,
    ns: &str,
    ctx: &Context,
    notes: &[EventNote],
) -> Result<Recorded> {
    let key = (ns.to_string(), policy.name_any());
    let mut status = policy.status.clone().unwrap_or_default();
    let carried = carried(Some(&status), &ctx.announced, &key);
    let (list, _) = merge(carried, notes);
    let entries = list[list.len() - notes.len()..].to_vec();
    let list = bounded(list);
    if list == status.pending_announcements {
        return Ok(Recorded {
            entries,
            written: false,
        });
    }
    status.pending_announcements = list;
    super::patch_status(policy, ns, &status, ctx).await?;
    Ok(Recorded {
        entries,
        written: true,
    })
}

/// Publishes what is due of `carried`, this pass's `recorded` entries and its `fresh` Events
/// (merged as [`merge`] says) about `policy`. An announcement of a write is due only when its
/// reason is in `settled` (the pass saw that write made); the others are kept as they are.
/// Returns what stays pending, for the status.
pub async fn settle(
    policy: &OidcRefreshPolicy,
    ctx: &Context,
    carried: Vec<PendingAnnouncement>,
    recorded: Vec<PendingAnnouncement>,
    fresh: &[EventNote],
    settled: &[&str],
) -> Vec<PendingAnnouncement> {
    let key = (policy.namespace().unwrap_or_default(), policy.name_any());
    let mut all = carried;
    for r in recorded {
        if !all.iter().any(|a| a.id == r.id) {
            all.push(r);
        }
    }
    let (list, replaced) = merge(all, fresh);
    let (due, waiting): (Vec<_>, Vec<_>) = list.into_iter().partition(|a| {
        !announces_a_write(&a.reason)
            || settled.contains(&a.reason.as_str())
            || fresh.iter().any(|n| n.reason == a.reason)
    });
    let failed = publish(&ctx.events, &ctx.metrics, &ctx.announced, policy, due).await;
    ctx.announced.done(&key, replaced);
    bounded(waiting.into_iter().chain(failed).collect())
}

/// Publishes `list` about `policy`; returns the ones that could not be published (logged), and
/// remembers the others as published.
async fn publish(
    publisher: &Publisher,
    metrics: &Metrics,
    announced: &Announced,
    policy: &OidcRefreshPolicy,
    list: Vec<PendingAnnouncement>,
) -> Vec<PendingAnnouncement> {
    let key = (policy.namespace().unwrap_or_default(), policy.name_any());
    let reference = policy.object_ref(&());
    let mut failed = Vec::new();
    let mut published = Vec::new();
    for a in list {
        match publisher
            .publish_parts(&reference, a.type_ == "Warning", &a.reason, &a.note)
            .await
        {
            Ok(()) => {
                metrics.wrote("event");
                published.push(a.id);
            }
            Err(e) => {
                tracing::warn!(error = %e, reason = %a.reason, "could not publish Event; kept in status.pendingAnnouncements and retried");
                failed.push(a);
            }
        }
    }
    announced.done(&key, published);
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(reason: &'static str, text: &str) -> EventNote {
        EventNote {
            warning: false,
            reason,
            note: text.into(),
        }
    }

    #[test]
    fn a_fresh_announcement_replaces_a_carried_one_of_the_same_reason() {
        let (carried, _) = merge(
            Vec::new(),
            &[
                note("IdentityProviderUpdated", "a"),
                note("DeploymentPatched", "b"),
            ],
        );
        assert_ne!(carried[0].id, carried[1].id);
        let old_patch = carried[1].id.clone();
        let (list, replaced) = merge(carried, &[note("DeploymentPatched", "c")]);
        assert_eq!(replaced, [old_patch]);
        let seen: Vec<(&str, &str)> = list
            .iter()
            .map(|a| (a.reason.as_str(), a.note.as_str()))
            .collect();
        assert_eq!(
            seen,
            [("IdentityProviderUpdated", "a"), ("DeploymentPatched", "c")]
        );
        // Recorded again with the same message: the same entry, nothing to write.
        let (again, replaced) = merge(list.clone(), &[note("DeploymentPatched", "c")]);
        assert_eq!(again, list);
        assert!(replaced.is_empty());
    }

    #[test]
    fn announcements_done_in_this_process_are_not_carried_and_the_list_is_bounded() {
        let announced = Announced::default();
        let key: PolicyKey = ("ns".into(), "p".into());
        let (list, _) = merge(Vec::new(), &[note("A", "a"), note("B", "b")]);
        let status = OidcRefreshPolicyStatus {
            pending_announcements: list.clone(),
            ..Default::default()
        };
        assert_eq!(carried(Some(&status), &announced, &key), list);
        announced.done(&key, [list[0].id.clone()]);
        assert_eq!(carried(Some(&status), &announced, &key), list[1..]);
        assert_eq!(
            carried(Some(&status), &announced, &("ns".into(), "q".into())),
            list
        );
        announced.forget(&key);
        assert_eq!(carried(Some(&status), &announced, &key), list);

        let many: Vec<EventNote> = (0..40).map(|_| note("X", "x")).collect();
        let (list, _) = merge(Vec::new(), &many);
        let last = list.last().unwrap().id.clone();
        let kept = bounded(list);
        assert_eq!(kept.len(), MAX_PENDING);
        assert_eq!(kept.last().unwrap().id, last, "the newest are kept");
        for _ in 0..3 {
            announced.done(&key, (0..40).map(|i| i.to_string()));
        }
        assert!(announced.inner.lock().unwrap()[&key].len() <= REMEMBERED);
    }
}
