//! Events (`events.k8s.io/v1`) on policies. Each call creates one Event: the controller only
//! publishes on transitions and actions, so there is nothing to aggregate, and every Event keeps
//! its own message (a series would show the first message with a count).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use crate::crd::{FIELD_MANAGER, OidcRefreshPolicyStatus};
use crate::providers::http::truncate;
use crate::status::{self, ConditionType, Outcome};

/// An Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNote {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Message (truncated to 1 kB on publishing).
    pub note: String,
}

/// Publishes Events as `oidc-refresh-operator` from one instance.
#[derive(Clone)]
pub struct Publisher {
    client: kube::Client,
    instance: String,
}

impl Publisher {
    /// A publisher; `instance` is the pod name (defaults to the controller name).
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        Publisher {
            client,
            instance: instance.unwrap_or_else(|| FIELD_MANAGER.to_string()),
        }
    }

    /// Creates the Event in the namespace of `regarding`.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        note: &EventNote,
    ) -> Result<(), kube::Error> {
        self.publish_parts(regarding, note.warning, note.reason, &note.note)
            .await
    }

    /// Creates an Event of this type, reason and message in the namespace of `regarding`.
    pub async fn publish_parts(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let now = Timestamp::now();
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or("object"),
            now.as_nanosecond() as u128 ^ u128::from(fastrand::u32(..))
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            action: Some("Reconcile".into()),
            reason: Some(reason.to_string()),
            note: Some(truncate(note, 1000)),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            regarding: Some(regarding.clone()),
            event_time: Some(MicroTime(now)),
            reporting_controller: Some(FIELD_MANAGER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &event)
            .await?;
        Ok(())
    }
}

/// Reason of the Event that tells users to sign in again.
pub const USERS_MUST_SIGN_IN_AGAIN: &str = "UsersMustSignInAgain";

/// The Event announcing that every user must sign in again to obtain a refresh token.
pub fn users_must_sign_in_again() -> EventNote {
    EventNote {
        warning: false,
        reason: USERS_MUST_SIGN_IN_AGAIN,
        note:
            "Coder now requests refresh tokens; every user must sign out and in once to obtain one"
                .into(),
    }
}

/// Events for what changed between the stored and the new status: the Ready transition, the
/// first time users must sign in again, and warnings that appeared. Pure.
pub fn for_status(
    old: Option<&OidcRefreshPolicyStatus>,
    new: &OidcRefreshPolicyStatus,
    pass: &Outcome,
) -> Vec<EventNote> {
    let mut events = Vec::new();
    if new.users_must_sign_in_again_since.is_some()
        && old
            .and_then(|s| s.users_must_sign_in_again_since.as_ref())
            .is_none()
    {
        events.push(users_must_sign_in_again());
    }
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    for c in status::transitions(old_conditions, &new.conditions) {
        if c.type_ == ConditionType::Ready.as_str() {
            let ready = c.status == "True";
            events.push(EventNote {
                warning: !ready && pass.is_stalled(),
                reason: if ready { "Ready" } else { "NotReady" },
                note: format!("{}: {}", c.reason, c.message),
            });
        }
    }
    for f in &pass.findings {
        if !old.is_some_and(|o| o.warnings.iter().any(|w| w.reason == f.reason)) {
            events.push(EventNote {
                warning: true,
                reason: f.reason,
                note: f.message.clone(),
            });
        }
    }
    events
}
