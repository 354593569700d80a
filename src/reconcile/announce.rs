//! Announcements that survive a restart. An Event about a write is recorded in the policy's
//! status (`status.pendingAnnouncements`) before the write is made, and the status keeps every
//! Event whose publication failed; the pass publishes, then writes the status without what it
//! published. A process killed between a write and its Event (or whose Events the API server
//! refused) leaves the announcement in status, and the next pass, in this process or the next
//! one, publishes it.
//!
//! Exactly once in the common case: an announcement a pass makes afresh (the write was made again
//! after the restart, or the transition seen again) replaces a recorded one of the same reason,
//! and this process remembers the ids it has published or dropped, so a pass that still sees an
//! older copy of the status does not publish them again. Only a kill after publishing and before
//! the status write can announce twice; never zero times. A recorded announcement whose write did
//! not happen (killed before it) is replaced by the fresh one the next pass makes when it writes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use kube::{Resource, ResourceExt};

use super::Context;
use super::backoff::PolicyKey;
use crate::crd::{OidcRefreshPolicy, OidcRefreshPolicyStatus, PendingAnnouncement};
use crate::error::Result;
use crate::events::{EventNote, Publisher};
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

/// `carried`, then `fresh` (with new ids): a fresh announcement replaces a carried one of the same
/// reason. Returns the list and the ids of the carried ones replaced.
pub fn merge(
    carried: Vec<PendingAnnouncement>,
    fresh: &[EventNote],
) -> (Vec<PendingAnnouncement>, Vec<String>) {
    let (replaced, mut kept): (Vec<_>, Vec<_>) = carried
        .into_iter()
        .partition(|a| fresh.iter().any(|n| n.reason == a.reason));
    kept.extend(fresh.iter().map(stored));
    (kept, replaced.into_iter().map(|a| a.id).collect())
}

/// At most [`MAX_PENDING`], the newest.
pub fn bounded(mut list: Vec<PendingAnnouncement>) -> Vec<PendingAnnouncement> {
    if list.len() > MAX_PENDING {
        list.drain(..list.len() - MAX_PENDING);
    }
    list
}

/// Records `notes` in the policy's status before the writes they announce; returns their ids.
/// Fails (and the writes are not made) when the status cannot be written.
pub async fn record(
    policy: &OidcRefreshPolicy,
    ns: &str,
    ctx: &Context,
    notes: &[EventNote],
) -> Result<Vec<String>> {
    let key = (ns.to_string(), policy.name_any());
    let mut status = policy.status.clone().unwrap_or_default();
    let carried = carried(Some(&status), &ctx.announced, &key);
    let (list, _) = merge(carried, notes);
    let ids: Vec<String> = list[list.len() - notes.len()..]
        .iter()
        .map(|a| a.id.clone())
        .collect();
    status.pending_announcements = bounded(list);
    super::patch_status(policy, ns, &status, ctx).await?;
    Ok(ids)
}

/// Publishes `list` about `policy`; returns the ones that could not be published (logged), and
/// remembers the others as published.
pub async fn publish(
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
