//! Watch streams: initial events, resumption from the history, 410 Expired,
//! bookmarks, selector transitions, timeouts and forced breaks.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::Shared;
use crate::server::{ApiRequest, Output, Reply};
use crate::store::{EventType, WatchEvent};
use crate::write::{Filters, present};

fn line(etype: &str, obj: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": etype, "object": obj})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct Watcher {
    ri: crate::resources::ResourceInfo,
    output: Output,
    filters: Filters,
}

impl Watcher {
    fn shape(&self, obj: &Value) -> Value {
        let v = present(&self.ri, obj);
        match self.output {
            Output::Metadata => {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v.get("metadata").cloned().unwrap_or(json!({}))})
            }
            // As the real server: each watch event carries a one-row Table.
            Output::Table { include } => crate::table::table(&self.ri, &[v], include, None),
            Output::Full => v,
        }
    }

    /// Translate one store event into what this watcher sees.
    fn translate(&self, ev: &WatchEvent) -> Option<Bytes> {
        if ev.storage != self.ri.storage {
            return None;
        }
        if let Some(ns) = &self.filters.namespace
            && ev.namespace != *ns
        {
            return None;
        }
        let now = self.filters.matches(&ev.obj);
        let before = ev.old.as_ref().is_some_and(|o| self.filters.matches(o));
        let etype = match ev.etype {
            EventType::Added if now => "ADDED",
            EventType::Modified if now && before => "MODIFIED",
            EventType::Modified if now => "ADDED",
            EventType::Modified if before => "DELETED",
            EventType::Deleted if before || now => "DELETED",
            _ => return None,
        };
        Some(line(etype, &self.shape(&ev.obj)))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (av, kind) = match self.output {
            Output::Metadata => (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadata".to_string(),
            ),
            _ => (self.ri.api_version(), self.ri.kind.clone()),
        };
        line(
            "BOOKMARK",
            &json!({"kind": kind, "apiVersion": av, "metadata": meta}),
        )
    }
}

/// Start a watch.
pub fn watch(shared: &Arc<Shared>, req: &ApiRequest) -> Reply {
    let filters = match Filters::from_req(req) {
        Ok(f) => f,
        Err(e) => return e.into(),
    };
    let w = Watcher {
        ri: req.ri.clone(),
        output: req.output,
        filters,
    };
    let bookmarks = req.q_bool("allowWatchBookmarks");
    let send_initial = req.q_bool("sendInitialEvents");
    let timeout = req
        .q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(3600));
    let rv_param = req
        .q("resourceVersion")
        .filter(|s| !s.is_empty())
        .map(String::from);
    let mut initial: Vec<Bytes> = Vec::new();
    let mut close_after_initial = false;
    let (sub, mut last_rv) = {
        let st = shared.lock();
        let sub = shared.tx.subscribe();
        let cur = st.rv;
        let from = match rv_param.as_deref() {
            None | Some("0") => None,
            Some(s) => match s.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    return crate::errors::SimError::bad_request(format!(
                        "invalid resource version: {s}"
                    ))
                    .into();
                }
            },
        };
        let resume_from = if send_initial { None } else { from };
        if let Some(n) = resume_from {
            if n < st.compacted_rv {
                initial.push(line(
                    "ERROR",
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("too old resource version: {n} ({})", st.compacted_rv + 1),
                        "reason": "Expired", "code": 410}),
                ));
                close_after_initial = true;
            } else {
                for ev in st.history.iter().filter(|e| e.rv > n) {
                    if let Some(b) = w.translate(ev) {
                        initial.push(b);
                    }
                }
            }
        } else {
            if let Some(b) = st.objects.get(&w.ri.storage) {
                for o in b.values() {
                    if w.filters.matches(o) {
                        initial.push(line("ADDED", &w.shape(o)));
                    }
                }
            }
            if send_initial {
                initial.push(w.bookmark(cur, true));
            }
        }
        (sub, cur)
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut breaker = shared.breaker.subscribe();
    breaker.mark_unchanged();
    let mut shutdown = shared.shutdown.subscribe();
    let bookmark_interval = shared.config.bookmark_interval;
    tokio::spawn(async move {
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        if close_after_initial {
            return;
        }
        let mut sub: broadcast::Receiver<Arc<WatchEvent>> = sub;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last_rv { continue; }
                        last_rv = ev.rv;
                        if let Some(b) = w.translate(&ev)
                            && tx.send(b).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(w.bookmark(last_rv, false)).await.is_err() { return; }
                }
                _ = &mut deadline => return,
                _ = breaker.changed() => return,
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Reply::Stream(Body::from_stream(stream))
}
