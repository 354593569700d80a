//! The in-memory object store: one map per storage key, a single global
//! resourceVersion counter (like etcd's revision) and the bounded watch history.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::resources::ResourceInfo;

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

/// One change, as kept in the watch history and fanned out to watchers.
#[derive(Debug)]
pub struct WatchEvent {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Storage key (`apps/deployments`).
    pub storage: String,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// Change type.
    pub etype: EventType,
    /// The object after the change (for deletes: the last state, with the delete's RV).
    pub obj: Arc<Value>,
    /// The object before the change.
    pub old: Option<Arc<Value>>,
}

/// Objects of one storage key, ordered by (namespace, name) like etcd keys.
pub type Bucket = BTreeMap<(String, String), Arc<Value>>;

/// All mutable server state, behind one mutex.
pub struct State {
    /// Current global resourceVersion.
    pub rv: u64,
    /// Objects by storage key.
    pub objects: BTreeMap<String, Bucket>,
    /// Recent changes for watch resumption.
    pub history: VecDeque<Arc<WatchEvent>>,
    /// Watches from RVs below this get 410 Gone.
    pub compacted_rv: u64,
    /// Max events kept.
    pub history_limit: usize,
    /// Served resources.
    pub resources: Vec<ResourceInfo>,
    /// Fan-out of new events.
    pub tx: broadcast::Sender<Arc<WatchEvent>>,
    /// Deployments whose template changed: (namespace, name), consumed by the rollout emulation.
    pub rollout_queue: Vec<(String, String)>,
}

impl State {
    /// New empty state.
    pub fn new(history_limit: usize, tx: broadcast::Sender<Arc<WatchEvent>>) -> Self {
        State {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted_rv: 0,
            history_limit,
            resources: crate::resources::builtins(),
            tx,
            rollout_queue: vec![],
        }
    }

    /// Look up a served resource.
    pub fn resource(&self, group: &str, version: &str, resource: &str) -> Option<ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.resource == resource)
            .cloned()
    }

    /// Look up by apiVersion + kind.
    pub fn resource_for_kind(&self, api_version: &str, kind: &str) -> Option<ResourceInfo> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .cloned()
    }

    /// Get a stored object.
    pub fn get(&self, storage: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(storage)
            .and_then(|b| b.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Whether a namespace exists; returns its object.
    pub fn namespace(&self, ns: &str) -> Option<Arc<Value>> {
        self.get("/namespaces", "", ns)
    }

    /// Next resourceVersion.
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Store `obj` (already carrying its new resourceVersion `rv`) and emit an event.
    pub fn put(&mut self, storage: &str, ns: &str, name: &str, obj: Value, rv: u64) -> Arc<Value> {
        let obj = Arc::new(obj);
        let old = self
            .objects
            .entry(storage.to_string())
            .or_default()
            .insert((ns.to_string(), name.to_string()), obj.clone());
        let etype = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(WatchEvent {
            rv,
            storage: storage.into(),
            namespace: ns.into(),
            etype,
            obj: obj.clone(),
            old,
        });
        obj
    }

    /// Remove an object, emitting DELETED with a fresh resourceVersion.
    pub fn remove(&mut self, storage: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        let old = self
            .objects
            .get_mut(storage)?
            .remove(&(ns.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let last = Arc::new(last);
        self.emit(WatchEvent {
            rv,
            storage: storage.into(),
            namespace: ns.into(),
            etype: EventType::Deleted,
            obj: last.clone(),
            old: Some(old),
        });
        Some(last)
    }

    fn emit(&mut self, ev: WatchEvent) {
        let ev = Arc::new(ev);
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
        let _ = self.tx.send(ev);
    }

    /// Forget all history: watches from any RV older than now get 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }
}
