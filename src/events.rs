//! Events (`events.k8s.io/v1`) on policies. Each call creates one Event: the controller only
//! publishes on transitions and actions, so there is nothing to aggregate, and every Event keeps
//! its own message (a series would show the first message with a count).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use crate::crd::FIELD_MANAGER;
use crate::providers::http::truncate;

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
            reason: Some(note.reason.to_string()),
            note: Some(truncate(&note.note, 1000)),
            type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
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
