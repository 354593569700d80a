//! Deployment controller emulation: defaults, and rollout status progression
//! (observedGeneration, replica counts, `Available`/`Progressing` conditions)
//! written through the store as `kube-controller-manager` on `/status`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::Shared;
use crate::errors::{FieldError, FieldErrorKind};
use crate::resources::ResourceInfo;
use crate::store::State;
use crate::util::{fnv32, now_rfc3339, safe_encode};
use crate::write::{Op, Validation, WriteCtx};

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

const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// `annotationsToSkip` of `pkg/controller/deployment/util/deployment_util.go`:
/// Deployment annotations not copied to its ReplicaSets.
const SKIP_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// JSON with object keys sorted (a stable input for the template hash).
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// `pod-template-hash` of a Deployment's template (`controller.ComputeHash`:
/// FNV-32a, then `rand.SafeEncodeString`; the real input is Go's deep-hash
/// printing of the struct, here canonical JSON, so values differ).
fn template_hash(template: &Value, collision_count: i64) -> String {
    let mut input = canonical(template);
    if collision_count > 0 {
        input.push_str(&collision_count.to_string());
    }
    safe_encode(fnv32(input.as_bytes()) as u64)
}

/// Drop nulls, empty objects and empty lists: JSON forms that decode to the
/// same Go value (zero structs, nil and empty maps/slices are equal under
/// `apiequality.Semantic.DeepEqual`).
fn semantic(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                let x = semantic(x);
                let empty = x.is_null()
                    || x.as_object().is_some_and(|o| o.is_empty())
                    || x.as_array().is_some_and(|a| a.is_empty());
                if !empty {
                    out.insert(k.clone(), x);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(semantic).collect()),
        other => other.clone(),
    }
}

/// A template with the `pod-template-hash` label removed (and an empty label
/// map dropped), for `equalIgnoreHash`.
fn strip_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(|l| l.as_object_mut())
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty()
            && let Some(m) = t.get_mut("metadata").and_then(|m| m.as_object_mut())
        {
            m.remove("labels");
        }
    }
    semantic(&t)
}

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(|x| x.as_i64()).unwrap_or(0)
}

fn revision(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.as_str())
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Resolve an int-or-percent against `total` (round up for surge, down for unavailable).
fn int_or_percent(v: Option<&Value>, total: i64, round_up: bool) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => {
                let x = p * total;
                if round_up { (x + 99) / 100 } else { x / 100 }
            }
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// `(maxSurge, maxUnavailable)` as `deploymentutil.ResolveFenceposts` does.
fn fenceposts(d: &Value) -> (i64, i64) {
    if d.pointer("/spec/strategy/type").and_then(|t| t.as_str()) == Some("Recreate") {
        return (0, 0);
    }
    let replicas = int(d, "/spec/replicas");
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let surge = int_or_percent(ru.and_then(|r| r.get("maxSurge")), replicas, true);
    let unavailable = int_or_percent(ru.and_then(|r| r.get("maxUnavailable")), replicas, false);
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

/// `deploymentutil.MaxUnavailable`.
fn max_unavailable(d: &Value) -> i64 {
    let replicas = int(d, "/spec/replicas");
    if replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

fn owned_replica_sets(st: &State, d: &Value) -> Vec<Value> {
    let uid = d
        .pointer("/metadata/uid")
        .and_then(|u| u.as_str())
        .unwrap_or("");
    let ns = d
        .pointer("/metadata/namespace")
        .and_then(|u| u.as_str())
        .unwrap_or("");
    let Some(bucket) = st.objects.get("apps/replicasets") else {
        return vec![];
    };
    bucket
        .range((ns.to_string(), String::new())..)
        .take_while(|((n, _), _)| n == ns)
        .filter(|(_, rs)| {
            rs.pointer("/metadata/ownerReferences")
                .and_then(|r| r.as_array())
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r["uid"] == uid && r["controller"] == true)
                })
        })
        .map(|(_, rs)| (**rs).clone())
        .collect()
}

fn rs_ri(st: &State) -> Option<ResourceInfo> {
    st.resource("apps", "v1", "replicasets")
}

/// Annotations a Deployment's new ReplicaSet carries
/// (`SetNewReplicaSetAnnotations`).
fn rs_annotations(d: &Value, rev: i64, existing: Option<&Value>) -> Value {
    let mut a = existing
        .and_then(|e| e.as_object())
        .cloned()
        .unwrap_or_default();
    if let Some(da) = d
        .pointer("/metadata/annotations")
        .and_then(|a| a.as_object())
    {
        for (k, v) in da {
            if !SKIP_ANNOTATIONS.contains(&k.as_str()) {
                a.insert(k.clone(), v.clone());
            }
        }
    }
    let replicas = int(d, "/spec/replicas");
    a.insert(REVISION.into(), json!(rev.to_string()));
    a.insert(DESIRED.into(), json!(replicas.to_string()));
    a.insert(
        MAX_REPLICAS.into(),
        json!((replicas + fenceposts(d).0).to_string()),
    );
    Value::Object(a)
}

fn rs_write(st: &mut State, rs: Value) -> Option<Value> {
    let ri = rs_ri(st)?;
    let ns = rs.pointer("/metadata/namespace")?.as_str()?.to_string();
    let name = rs.pointer("/metadata/name")?.as_str()?.to_string();
    let mut ctx = WriteCtx {
        manager: MANAGER.into(),
        subresource: None,
        dry_run: false,
        validation: Validation::Ignore,
        warnings: vec![],
    };
    let old = st.get(&ri.storage, &ns, &name);
    let res = match old {
        Some(old) => {
            let mut new = rs;
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            crate::write::commit(st, &ri, Some(ns), Some(old), new, Op::Update, &mut ctx)
        }
        None => crate::write::create_inner(st, &ri, Some(&ns), rs, &mut ctx),
    };
    res.ok().map(|(_, v)| v)
}

/// The ReplicaSet controller's status for an RS whose pods are all ready
/// (`ready = true`) or none yet.
fn rs_status_write(st: &mut State, rs: &Value, ready: bool) {
    let Some(ri) = rs_ri(st) else { return };
    let replicas = int(rs, "/spec/replicas");
    let mut s = json!({"replicas": replicas, "fullyLabeledReplicas": replicas,
        "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1))});
    if ready {
        s["readyReplicas"] = json!(replicas);
        s["availableReplicas"] = json!(replicas);
    }
    let obj = s.as_object_mut().unwrap();
    obj.retain(|k, v| k == "replicas" || v.as_i64() != Some(0));
    let ns = rs
        .pointer("/metadata/namespace")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let name = rs
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    crate::write::controller_status_write(st, &ri, ns, name, s, MANAGER, None);
}

fn scale_rs(st: &mut State, rs: &Value, replicas: i64, ready: bool) -> Value {
    let mut new = rs.clone();
    new["spec"]["replicas"] = json!(replicas);
    let written = rs_write(st, new).unwrap_or_else(|| rs.clone());
    rs_status_write(st, &written, ready);
    let ns = written
        .pointer("/metadata/namespace")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let name = written
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let storage = "apps/replicasets";
    st.get(storage, ns, name)
        .map(|v| (*v).clone())
        .unwrap_or(written)
}

const MANAGER: &str = "kube-controller-manager";

/// Where a controller pass leaves the rollout.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// First pass after a change: new ReplicaSet created/scaled up, pods not ready yet.
    Start,
    /// After the rollout delay: new pods ready, old ReplicaSets scaled down.
    Finish,
    /// After the rollout delay with the rollout stuck: deadline exceeded.
    TimeOut,
}

/// One pass of the Deployment controller (`syncDeployment`) over `ns/name`.
/// Returns whether the rollout still needs a `Finish` pass.
fn sync_deployment(st: &mut State, ns: &str, name: &str, step: Step) -> bool {
    let Some(ri) = st.resource("apps", "v1", "deployments") else {
        return false;
    };
    let Some(d) = st.get(&ri.storage, ns, name) else {
        return false;
    };
    let d = (*d).clone();
    if d.pointer("/metadata/deletionTimestamp").is_some() {
        return false;
    }
    let now = now_rfc3339();
    let paused = d.pointer("/spec/paused").and_then(|p| p.as_bool()) == Some(true);
    let replicas = int(&d, "/spec/replicas");
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut status = d.get("status").cloned().unwrap_or(json!({}));
    if !status.is_object() {
        status = json!({});
    }
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(|c| c.as_array())
        .cloned()
        .unwrap_or_default();
    let prog_reason = conditions
        .iter()
        .find(|c| c["type"] == "Progressing")
        .map(|c| c["reason"].as_str().unwrap_or("").to_string());
    let set_cond = |conditions: &mut Vec<Value>, c: Value| {
        conditions.retain(|x| x["type"] != c["type"]);
        conditions.push(c);
    };
    // checkPausedConditions.
    if prog_reason.as_deref() != Some("ProgressDeadlineExceeded") {
        if paused && prog_reason.as_deref() != Some("DeploymentPaused") {
            set_cond(
                &mut conditions,
                condition(
                    &d,
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused",
                    &now,
                ),
            );
        } else if !paused && prog_reason.as_deref() == Some("DeploymentPaused") {
            set_cond(
                &mut conditions,
                condition(
                    &d,
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed",
                    &now,
                ),
            );
        }
    }
    let all = owned_replica_sets(st, &d);
    let stripped = strip_hash(&template);
    let (mut news, mut olds): (Vec<Value>, Vec<Value>) = all
        .into_iter()
        .partition(|rs| rs.pointer("/spec/template").map(strip_hash).as_ref() == Some(&stripped));
    // FindNewReplicaSet: the oldest matching one.
    news.sort_by_key(|rs| {
        rs.pointer("/metadata/creationTimestamp")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string()
    });
    let mut new_rs = if news.is_empty() {
        None
    } else {
        Some(news.remove(0))
    };
    olds.append(&mut news);
    let max_old = olds.iter().map(revision).max().unwrap_or(0);
    let new_revision = max_old + 1;
    let mut more = false;
    if let Some(rs) = &new_rs {
        // Sync the existing new ReplicaSet's annotations (and revision).
        let rev = revision(rs).max(new_revision);
        let ann = rs_annotations(&d, rev, rs.pointer("/metadata/annotations"));
        if rs.pointer("/metadata/annotations") != Some(&ann) {
            let mut n = rs.clone();
            n["metadata"]["annotations"] = ann;
            if let Some(w) = rs_write(st, n) {
                new_rs = Some(w);
            }
        }
    }
    if paused {
        // `sync`: scale the active (or latest) ReplicaSet only; never create one.
        let active: Vec<&Value> = new_rs
            .iter()
            .chain(olds.iter())
            .filter(|rs| int(rs, "/spec/replicas") > 0)
            .collect();
        let target = match active.len() {
            0 => new_rs
                .clone()
                .or_else(|| olds.iter().max_by_key(|r| revision(r)).cloned()),
            1 => Some(active[0].clone()),
            _ => None,
        };
        if let Some(t) = target
            && int(&t, "/spec/replicas") != replicas
        {
            let scaled = scale_rs(st, &t, replicas, true);
            let tname = scaled.pointer("/metadata/name").cloned();
            if new_rs
                .as_ref()
                .and_then(|r| r.pointer("/metadata/name"))
                .cloned()
                == tname
            {
                new_rs = Some(scaled);
            } else {
                for o in olds.iter_mut() {
                    if o.pointer("/metadata/name").cloned() == tname {
                        *o = scaled.clone();
                    }
                }
            }
        }
    } else {
        let rs = match new_rs.take() {
            Some(rs) => rs,
            None => {
                // Create the new ReplicaSet (getNewReplicaSet, createIfNotExisted).
                let collision = int(&d, "/status/collisionCount");
                let hash = template_hash(&template, collision);
                let mut t = template.clone();
                t["metadata"]["labels"][HASH_LABEL] = json!(hash);
                let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
                selector["matchLabels"][HASH_LABEL] = json!(hash);
                let mut labels = template
                    .pointer("/metadata/labels")
                    .cloned()
                    .unwrap_or(json!({}));
                labels[HASH_LABEL] = json!(hash);
                let mut spec = json!({"replicas": 0, "selector": selector, "template": t});
                if int(&d, "/spec/minReadySeconds") > 0 {
                    spec["minReadySeconds"] = d["spec"]["minReadySeconds"].clone();
                }
                let rs = json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {
                        "name": format!("{name}-{hash}"), "namespace": ns, "labels": labels,
                        "annotations": rs_annotations(&d, new_revision, None),
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                            "uid": d.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
                            "controller": true, "blockOwnerDeletion": true}],
                    },
                    "spec": spec,
                });
                match rs_write(st, rs) {
                    Some(rs) => rs,
                    None => return false,
                }
            }
        };
        let old_active = olds.iter().any(|o| int(o, "/spec/replicas") > 0);
        let new_ready =
            int(&rs, "/status/readyReplicas") >= replicas && int(&rs, "/spec/replicas") == replicas;
        let rs =
            if int(&rs, "/spec/replicas") != replicas && !old_active && new_ready_or_scaling(&rs) {
                // A scaling event of a completed rollout: pods come and go at once.
                scale_rs(st, &rs, replicas, true)
            } else if !new_ready || old_active {
                match step {
                    Step::Start => {
                        // One step of rolloutRolling: scale up within maxSurge
                        // (NewRSNewReplicas), then down within maxUnavailable
                        // (reconcileOldReplicaSets); new pods are not ready yet.
                        more = true;
                        let (surge, unavailable) = fenceposts(&d);
                        let old_total: i64 = olds.iter().map(|o| int(o, "/spec/replicas")).sum();
                        let cur_new = int(&rs, "/spec/replicas");
                        let target = if old_total == 0 {
                            replicas
                        } else {
                            let room = (replicas + surge - old_total - cur_new).max(0);
                            (cur_new + room).min(replicas).max(cur_new.min(replicas))
                        };
                        let rs = if target != cur_new {
                            scale_rs(st, &rs, target, false)
                        } else {
                            rs
                        };
                        let new_unavailable = target - int(&rs, "/status/availableReplicas");
                        let mut down = (old_total + target)
                            - (replicas - unavailable)
                            - new_unavailable.max(0);
                        olds.sort_by_key(revision);
                        for o in olds.iter_mut() {
                            let n = int(o, "/spec/replicas");
                            if down <= 0 {
                                break;
                            }
                            if n > 0 {
                                let by = n.min(down);
                                *o = scale_rs(st, o, n - by, true);
                                down -= by;
                            }
                        }
                        rs
                    }
                    Step::Finish => {
                        let rs = scale_rs(st, &rs, replicas, true);
                        for o in olds.iter_mut() {
                            if int(o, "/spec/replicas") > 0 {
                                *o = scale_rs(st, o, 0, true);
                            }
                        }
                        rs
                    }
                    Step::TimeOut => rs,
                }
            } else {
                rs
            };
        new_rs = Some(rs);
        // cleanupDeployment: keep revisionHistoryLimit old, scaled-down ReplicaSets.
        let limit = d
            .pointer("/spec/revisionHistoryLimit")
            .and_then(|l| l.as_i64())
            .unwrap_or(10);
        let mut dead: Vec<&Value> = olds
            .iter()
            .filter(|o| int(o, "/spec/replicas") == 0 && int(o, "/status/replicas") == 0)
            .collect();
        if dead.len() as i64 > limit {
            dead.sort_by_key(|o| revision(o));
            let n = dead.len() - limit.max(0) as usize;
            let doomed: Vec<String> = dead[..n]
                .iter()
                .filter_map(|o| {
                    o.pointer("/metadata/name")
                        .and_then(|v| v.as_str())
                        .map(String::from)
                })
                .collect();
            for dn in doomed {
                st.remove("apps/replicasets", ns, &dn);
                olds.retain(|o| {
                    o.pointer("/metadata/name").and_then(|v| v.as_str()) != Some(dn.as_str())
                });
            }
        }
    }
    // calculateStatus.
    let all: Vec<&Value> = new_rs.iter().chain(olds.iter()).collect();
    let sum = |p: &str| all.iter().map(|r| int(r, p)).sum::<i64>();
    let total = sum("/spec/replicas");
    let available = sum("/status/availableReplicas");
    let mut s = json!({
        "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": sum("/status/replicas"),
        "updatedReplicas": new_rs.as_ref().map(|r| int(r, "/status/replicas")).unwrap_or(0),
        "readyReplicas": sum("/status/readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": (total - available).max(0),
    });
    if let Some(c) = status.get("collisionCount") {
        s["collisionCount"] = c.clone();
    }
    if available >= replicas - max_unavailable(&d) {
        set_cond(
            &mut conditions,
            condition(
                &d,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                &now,
            ),
        );
    } else {
        set_cond(
            &mut conditions,
            condition(
                &d,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                &now,
            ),
        );
    }
    // syncRolloutStatus (not while paused).
    if !paused && let Some(rs) = &new_rs {
        let rs_name = rs
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let complete = s["updatedReplicas"] == json!(replicas)
            && s["replicas"] == json!(replicas)
            && available >= replicas;
        let c = if complete {
            Some(condition(
                &d,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                &now,
            ))
        } else if step == Step::TimeOut {
            Some(condition(
                &d,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                &now,
            ))
        } else if step == Step::Start {
            Some(condition(
                &d,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{rs_name}\" is progressing."),
                &now,
            ))
        } else {
            None
        };
        if let Some(c) = c {
            set_cond(&mut conditions, c);
        }
    }
    // Available first, as the real controller leaves them after the first rollout.
    conditions.sort_by_key(|c| if c["type"] == "Available" { 0 } else { 1 });
    s["conditions"] = json!(conditions);
    let obj = s.as_object_mut().unwrap();
    obj.retain(|_, v| v.as_i64() != Some(0));
    if let Some(og) = d.pointer("/metadata/generation") {
        obj.insert("observedGeneration".into(), og.clone());
    }
    // The Deployment's revision annotation (written with the status, as the
    // controller's UpdateStatus does).
    let mut annotations = d
        .pointer("/metadata/annotations")
        .cloned()
        .unwrap_or(json!({}));
    if let Some(rs) = &new_rs {
        annotations[REVISION] = json!(revision(rs).to_string());
    }
    let ann = if d.pointer("/metadata/annotations") != Some(&annotations) {
        Some(annotations)
    } else {
        None
    };
    crate::write::controller_status_write(st, &ri, ns, name, s, MANAGER, ann);
    more
}

fn new_ready_or_scaling(rs: &Value) -> bool {
    int(rs, "/status/readyReplicas") >= int(rs, "/spec/replicas") && int(rs, "/spec/replicas") > 0
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
        if !sync_deployment(&mut st, &ns, &name, Step::Start) {
            return;
        }
        st.get("apps/deployments", &ns, &name)
            .and_then(|d| d.pointer("/metadata/generation").cloned())
    };
    let delay = *shared.rollout_delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let stuck = shared
        .stuck
        .lock()
        .unwrap()
        .contains(&(ns.clone(), name.clone()));
    let mut st = shared.lock();
    let Some(d) = st.get("apps/deployments", &ns, &name) else {
        return;
    };
    if d.pointer("/metadata/generation").cloned() != generation_now {
        return; // superseded by a newer rollout
    }
    sync_deployment(
        &mut st,
        &ns,
        &name,
        if stuck { Step::TimeOut } else { Step::Finish },
    );
}
