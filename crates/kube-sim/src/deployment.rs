//! Deployment controller emulation: defaults, and rollout status progression
//! (observedGeneration, replica counts, `Available`/`Progressing` conditions)
//! written through the store as `kube-controller-manager` on `/status`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::Shared;
use crate::errors::{FieldError, FieldErrorKind};
use crate::util::{fnv32, now_rfc3339, safe_encode};

/// Apply the API server's Deployment defaults.
pub fn defaults(d: &mut Value) {
    let spec = &mut d["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    if spec.get("replicas").is_none() {
        spec["replicas"] = json!(1);
    }
    if spec.get("revisionHistoryLimit").is_none() {
        spec["revisionHistoryLimit"] = json!(10);
    }
    if spec.get("progressDeadlineSeconds").is_none() {
        spec["progressDeadlineSeconds"] = json!(600);
    }
    if spec.get("strategy").is_none() {
        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    }
    if let Some(ps) = spec
        .pointer_mut("/template/spec")
        .and_then(|p| p.as_object_mut())
    {
        ps.entry("restartPolicy").or_insert(json!("Always"));
        ps.entry("terminationGracePeriodSeconds")
            .or_insert(json!(30));
        ps.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
        ps.entry("schedulerName")
            .or_insert(json!("default-scheduler"));
        ps.entry("securityContext").or_insert(json!({}));
        for list in ["containers", "initContainers"] {
            if let Some(cs) = ps.get_mut(list).and_then(|c| c.as_array_mut()) {
                for c in cs {
                    if let Some(c) = c.as_object_mut() {
                        c.entry("terminationMessagePath")
                            .or_insert(json!("/dev/termination-log"));
                        c.entry("terminationMessagePolicy").or_insert(json!("File"));
                        if !c.contains_key("imagePullPolicy") {
                            let latest = c.get("image").and_then(|i| i.as_str()).is_some_and(|i| {
                                i.ends_with(":latest")
                                    || !i.rsplit('/').next().unwrap_or("").contains(':')
                            });
                            c.insert(
                                "imagePullPolicy".into(),
                                json!(if latest { "Always" } else { "IfNotPresent" }),
                            );
                        }
                        if let Some(ports) = c.get_mut("ports").and_then(|p| p.as_array_mut()) {
                            for p in ports {
                                if let Some(p) = p.as_object_mut() {
                                    p.entry("protocol").or_insert(json!("TCP"));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The Deployment validation rules the operator is most likely to meet
/// (a subset of the real ones).
pub fn validate(d: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = vec![];
    let selector = d.pointer("/spec/selector");
    let match_labels = selector
        .and_then(|s| s.get("matchLabels"))
        .and_then(|m| m.as_object());
    let has_exprs = selector
        .and_then(|s| s.get("matchExpressions"))
        .and_then(|m| m.as_array())
        .is_some_and(|a| !a.is_empty());
    if selector.is_none() {
        errs.push(FieldError::new(
            "spec.selector",
            FieldErrorKind::Required,
            "",
        ));
    } else if match_labels.is_none_or(|m| m.is_empty()) && !has_exprs {
        errs.push(FieldError::new(
            "spec.selector",
            FieldErrorKind::Invalid(selector.cloned().unwrap_or(Value::Null)),
            "empty selector is invalid for deployment",
        ));
    }
    let labels = d
        .pointer("/spec/template/metadata/labels")
        .and_then(|l| l.as_object());
    if let Some(ml) = match_labels
        && !ml
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    {
        errs.push(FieldError::new(
            "spec.template.metadata.labels",
            FieldErrorKind::InvalidRaw(crate::errors::go_string_map(
                d.pointer("/spec/template/metadata/labels"),
            )),
            "`selector` does not match template `labels`",
        ));
    }
    match d
        .pointer("/spec/template/spec/containers")
        .and_then(|c| c.as_array())
    {
        None => errs.push(FieldError::new(
            "spec.template.spec.containers",
            FieldErrorKind::Required,
            "",
        )),
        Some(cs) if cs.is_empty() => errs.push(FieldError::new(
            "spec.template.spec.containers",
            FieldErrorKind::Required,
            "",
        )),
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                if c["name"].as_str().is_none_or(|n| n.is_empty()) {
                    errs.push(FieldError::new(
                        format!("spec.template.spec.containers[{i}].name"),
                        FieldErrorKind::Required,
                        "",
                    ));
                }
                if c["image"].as_str().is_none_or(|n| n.is_empty()) {
                    errs.push(FieldError::new(
                        format!("spec.template.spec.containers[{i}].image"),
                        FieldErrorKind::Required,
                        "",
                    ));
                }
            }
        }
    }
    if let Some(r) = d.pointer("/spec/replicas").and_then(|r| r.as_i64())
        && r < 0
    {
        errs.push(FieldError::new(
            "spec.replicas",
            FieldErrorKind::Invalid(json!(r)),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(o) = old
        && o.pointer("/spec/selector") != selector
    {
        let rendered = format!(
            "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}",
            crate::errors::go_string_map(selector.and_then(|s| s.get("matchLabels")))
        );
        errs.push(FieldError::new(
            "spec.selector",
            FieldErrorKind::InvalidRaw(rendered),
            "field is immutable",
        ));
    }
    errs
}

fn rs_name(d: &Value) -> String {
    let t = d
        .pointer("/spec/template")
        .map(|t| t.to_string())
        .unwrap_or_default();
    format!(
        "{}-{}",
        d.pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or(""),
        safe_encode(fnv32(t.as_bytes()) as u64)
    )
}

fn condition(old: &Value, ty: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    let prev = old
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty));
    let transition = match prev {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let update = match prev {
        Some(p) if p["status"] == status && p["reason"] == reason && p["message"] == message => {
            p["lastUpdateTime"].clone()
        }
        _ => json!(now),
    };
    json!({"type": ty, "status": status, "lastUpdateTime": update, "lastTransitionTime": transition, "reason": reason, "message": message})
}

enum Phase {
    Progressing,
    Complete,
    Stuck,
}

fn status_for(d: &Value, phase: Phase) -> Value {
    let now = now_rfc3339();
    let replicas = d
        .pointer("/spec/replicas")
        .and_then(|r| r.as_i64())
        .unwrap_or(1);
    let generation = d
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let rs = rs_name(d);
    let prev_ready = d
        .pointer("/status/readyReplicas")
        .and_then(|r| r.as_i64())
        .unwrap_or(0);
    let available = |n: i64| {
        if n >= replicas.min(1) && n > 0 || replicas == 0 {
            condition(
                d,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                &now,
            )
        } else {
            condition(
                d,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                &now,
            )
        }
    };
    let mut s = json!({"observedGeneration": generation});
    match phase {
        Phase::Complete => {
            s["replicas"] = json!(replicas);
            s["updatedReplicas"] = json!(replicas);
            s["readyReplicas"] = json!(replicas);
            s["availableReplicas"] = json!(replicas);
            s["conditions"] = json!([
                available(replicas),
                condition(
                    d,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{rs}\" has successfully progressed."),
                    &now
                ),
            ]);
        }
        Phase::Progressing | Phase::Stuck => {
            let ready = prev_ready.min(replicas);
            s["replicas"] = json!(replicas.max(ready) + if replicas > 0 { 1 } else { 0 });
            s["updatedReplicas"] = json!(if replicas > 0 { 1.min(replicas) } else { 0 });
            s["readyReplicas"] = json!(ready);
            s["availableReplicas"] = json!(ready);
            s["unavailableReplicas"] = json!((replicas - ready).max(0));
            let prog = if matches!(phase, Phase::Stuck) {
                condition(
                    d,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{rs}\" has timed out progressing."),
                    &now,
                )
            } else {
                condition(
                    d,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{rs}\" is progressing."),
                    &now,
                )
            };
            s["conditions"] = json!([available(ready), prog]);
            if replicas == 0 {
                s.as_object_mut().unwrap().remove("readyReplicas");
            }
        }
    }
    for k in [
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
        "replicas",
        "unavailableReplicas",
    ] {
        if s.get(k).and_then(|v| v.as_i64()) == Some(0) {
            s.as_object_mut().unwrap().remove(k);
        }
    }
    s
}

/// The controller loop.
pub async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = shared.deploy_notify.notified() => {}
            _ = shutdown.changed() => return,
        }
        let queue = std::mem::take(&mut shared.lock().rollout_queue);
        for (ns, name) in queue {
            let shared = shared.clone();
            tokio::spawn(async move { rollout(shared, ns, name).await });
        }
    }
}

async fn rollout(shared: Arc<Shared>, ns: String, name: String) {
    let generation_now = {
        let mut st = shared.lock();
        let Some(ri) = st.resource("apps", "v1", "deployments") else {
            return;
        };
        let Some(d) = st.get(&ri.storage, &ns, &name) else {
            return;
        };
        let generation_now = d.pointer("/metadata/generation").cloned();
        let complete = d.pointer("/status/observedGeneration") == generation_now.as_ref()
            && d.pointer("/status/updatedReplicas") == d.pointer("/spec/replicas")
            && d.pointer("/status/conditions")
                .and_then(|c| c.as_array())
                .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "NewReplicaSetAvailable"));
        if complete {
            return;
        }
        let status = status_for(&d, Phase::Progressing);
        crate::write::controller_status_write(
            &mut st,
            &ri,
            &ns,
            &name,
            status,
            "kube-controller-manager",
        );
        generation_now
    };
    let delay = *shared.rollout_delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let stuck = shared
        .stuck
        .lock()
        .unwrap()
        .contains(&(ns.clone(), name.clone()));
    let mut st = shared.lock();
    let Some(ri) = st.resource("apps", "v1", "deployments") else {
        return;
    };
    let Some(d) = st.get(&ri.storage, &ns, &name) else {
        return;
    };
    if d.pointer("/metadata/generation").cloned() != generation_now {
        return; // superseded by a newer rollout
    }
    let status = status_for(&d, if stuck { Phase::Stuck } else { Phase::Complete });
    crate::write::controller_status_write(
        &mut st,
        &ri,
        &ns,
        &name,
        status,
        "kube-controller-manager",
    );
}
