//! Behaviours checked against the Kubernetes source (see
//! `docs/fidelity/kubernetes.md`): paused Deployments, ReplicaSets and the
//! `kubectl rollout` commands, orphaning deletes, managedFields resets and
//! `before-first-apply`, Deployment generation, unconditional updates of
//! custom resources, Event validation.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use kube_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};

const D: &str = "/apis/apps/v1/namespaces/default/deployments";
const RS: &str = "/apis/apps/v1/namespaces/default/replicasets";
const KUBECTL: &str = "/usr/bin/kubectl";

async fn wait_for(sim: &SimHandle, path: &str, f: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..400 {
        let (_, v) = get(sim, path).await;
        if f(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition never met for {path}: {}", get(sim, path).await.1);
}

fn cond(v: &Value, ty: &str) -> Value {
    v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty).cloned())
        .unwrap_or(Value::Null)
}

fn complete(v: &Value) -> bool {
    v["status"]["observedGeneration"] == v["metadata"]["generation"]
        && cond(v, "Progressing")["reason"] == "NewReplicaSetAvailable"
}

async fn replica_sets(sim: &SimHandle) -> Vec<Value> {
    let (_, l) = get(sim, RS).await;
    l["items"].as_array().cloned().unwrap_or_default()
}

async fn kubectl(sim: &SimHandle, dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let kc = dir.join("kubeconfig");
    std::fs::write(&kc, sim.kubeconfig_yaml(Some("default"))).unwrap();
    let cache = dir.join("cache");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let o = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("--cache-dir")
            .arg(&cache)
            .args(&args)
            .output()
            .expect("run kubectl");
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn replica_sets_pause_resume_history_undo_and_orphaning() {
    let sim = start_with(SimConfig {
        rollout_delay: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = deployment("web", "nginx:1");
    d["metadata"]["annotations"] = json!({"kubernetes.io/change-cause": "first"});
    let (s, _) = post(&sim, D, d).await;
    assert_eq!(s, 201);
    let done = wait_for(&sim, &format!("{D}/web"), complete).await;
    assert_eq!(
        done["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let rss = replica_sets(&sim).await;
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    assert_eq!(
        rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"],
        hash
    );
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        rs["metadata"]["ownerReferences"][0]["uid"],
        done["metadata"]["uid"]
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        rs["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "first"
    );
    assert_eq!(rs["status"]["readyReplicas"], 2);

    // Pause: a template change creates no ReplicaSet; Progressing is Unknown/DeploymentPaused.
    let (ok, out) = kubectl(&sim, dir.path(), &["rollout", "pause", "deployment/web"]).await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &sim,
        dir.path(),
        &["set", "image", "deployment/web", "web=nginx:2"],
    )
    .await;
    assert!(ok, "{out}");
    let paused = wait_for(&sim, &format!("{D}/web"), |v| {
        v["status"]["observedGeneration"] == v["metadata"]["generation"]
            && cond(v, "Progressing")["reason"] == "DeploymentPaused"
    })
    .await;
    let p = cond(&paused, "Progressing");
    assert_eq!(p["status"], "Unknown");
    assert_eq!(p["message"], "Deployment is paused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        replica_sets(&sim).await.len(),
        1,
        "no new ReplicaSet while paused"
    );
    let (ok, out) = kubectl(&sim, dir.path(), &["rollout", "undo", "deployment/web"]).await;
    // kubectl looks for the previous revision first: only one exists yet.
    assert!(!ok && out.contains("no rollout history found"), "{out}");

    // Resume rolls out.
    let (ok, out) = kubectl(&sim, dir.path(), &["rollout", "resume", "deployment/web"]).await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &sim,
        dir.path(),
        &["rollout", "status", "deployment/web", "--timeout=20s"],
    )
    .await;
    assert!(ok && out.contains("successfully rolled out"), "{out}");
    let v2 = wait_for(&sim, &format!("{D}/web"), complete).await;
    assert_eq!(
        v2["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let rss = replica_sets(&sim).await;
    assert_eq!(rss.len(), 2);
    let old = rss
        .iter()
        .find(|r| r["metadata"]["name"] == format!("web-{hash}"))
        .unwrap();
    assert_eq!(old["spec"]["replicas"], 0, "old ReplicaSet scaled down");

    let (ok, out) = kubectl(&sim, dir.path(), &["rollout", "history", "deployment/web"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("1         first") || out.contains("1         "),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with('2')), "{out}");

    // Undo returns to revision 1's template, which becomes revision 3.
    let (ok, out) = kubectl(&sim, dir.path(), &["rollout", "undo", "deployment/web"]).await;
    assert!(ok && out.contains("rolled back"), "{out}");
    let v3 = wait_for(&sim, &format!("{D}/web"), |v| {
        complete(v) && v["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    })
    .await;
    assert_eq!(
        v3["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1"
    );
    let rss = replica_sets(&sim).await;
    assert_eq!(rss.len(), 2, "undo reuses the old ReplicaSet");
    let back = rss
        .iter()
        .find(|r| r["metadata"]["name"] == format!("web-{hash}"))
        .unwrap();
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(back["spec"]["replicas"], 2);

    // --cascade=orphan leaves the ReplicaSets, without owner references.
    let (ok, out) = kubectl(
        &sim,
        dir.path(),
        &["delete", "deployment", "web", "--cascade=orphan"],
    )
    .await;
    assert!(ok, "{out}");
    let rss = replica_sets(&sim).await;
    assert_eq!(rss.len(), 2);
    assert!(
        rss.iter()
            .all(|r| r["metadata"].get("ownerReferences").is_none())
    );
    // A default (background) delete takes the ReplicaSets with it.
    post(&sim, D, deployment("api", "nginx:1")).await;
    wait_for(&sim, &format!("{D}/api"), complete).await;
    assert_eq!(replica_sets(&sim).await.len(), 3);
    delete(&sim, &format!("{D}/api")).await;
    assert_eq!(replica_sets(&sim).await.len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn paused_on_create_makes_no_replica_set() {
    let sim = start().await;
    let mut d = deployment("p", "nginx:1");
    d["spec"]["paused"] = json!(true);
    post(&sim, D, d).await;
    let v = wait_for(&sim, &format!("{D}/p"), |v| {
        cond(v, "Progressing")["reason"] == "DeploymentPaused"
    })
    .await;
    assert_eq!(v["status"]["observedGeneration"], 1);
    assert!(v["status"].get("updatedReplicas").is_none());
    assert_eq!(cond(&v, "Available")["status"], "False");
    assert!(replica_sets(&sim).await.is_empty());
    patch(
        &sim,
        &format!("{D}/p"),
        "application/merge-patch+json",
        json!({"spec": {"paused": false}}),
    )
    .await;
    wait_for(&sim, &format!("{D}/p"), complete).await;
    assert_eq!(replica_sets(&sim).await.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn deployment_generation_tracks_spec_and_annotations() {
    let sim = start_with(SimConfig {
        deployment_controller: false,
        ..Default::default()
    })
    .await;
    let p = format!("{D}/g");
    post(&sim, D, deployment("g", "nginx:1")).await;
    let mp = "application/merge-patch+json";
    let (_, v) = patch(&sim, &p, mp, json!({"metadata": {"labels": {"x": "1"}}})).await;
    assert_eq!(v["metadata"]["generation"], 1, "labels do not bump");
    let (_, v) = patch(
        &sim,
        &p,
        mp,
        json!({"metadata": {"annotations": {"a": "1"}}}),
    )
    .await;
    assert_eq!(v["metadata"]["generation"], 2, "annotations bump");
    let (_, v) = patch(&sim, &p, mp, json!({"spec": {"replicas": 3}})).await;
    assert_eq!(v["metadata"]["generation"], 3, "spec bumps");
    let (_, v) = patch(
        &sim,
        &format!("{p}/status"),
        mp,
        json!({"status": {"replicas": 3}}),
    )
    .await;
    assert_eq!(v["metadata"]["generation"], 3, "status does not bump");
    sim.shutdown().await;
}

fn applied_cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
}

#[tokio::test]
async fn managed_fields_reset_and_before_first_apply() {
    let sim = start().await;
    let p = "/api/v1/namespaces/default/configmaps/c";
    let (s, _) = post(
        &sim,
        "/api/v1/namespaces/default/configmaps?fieldManager=creator",
        cm("c", json!({"a": "1", "b": "2"})),
    )
    .await;
    assert_eq!(s, 201);
    for reset in [json!([{}]), json!([])] {
        let (s, v) = patch(
            &sim,
            p,
            "application/merge-patch+json",
            json!({"metadata": {"managedFields": reset}}),
        )
        .await;
        assert_eq!(s, 200);
        assert!(v["metadata"].get("managedFields").is_none(), "{reset}: {v}");
    }
    // Updates do not start tracking again.
    let (_, v) = patch(
        &sim,
        p,
        "application/merge-patch+json",
        json!({"data": {"c": "3"}}),
    )
    .await;
    assert!(v["metadata"].get("managedFields").is_none(), "{v}");
    // The first apply conflicts with before-first-apply on a differing value...
    let ap = format!("{p}?fieldManager=applier");
    let (s, v) = patch(
        &sim,
        &ap,
        "application/apply-patch+yaml",
        applied_cm(json!({"a": "9"})),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("conflict with \"before-first-apply\"") && msg.contains(".data.a"),
        "{msg}"
    );
    // ...not on an equal one, and then both managers are recorded.
    let (s, v) = patch(
        &sim,
        &ap,
        "application/apply-patch+yaml",
        applied_cm(json!({"a": "1"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mf = v["metadata"]["managedFields"].as_array().unwrap();
    let bfa = mf
        .iter()
        .find(|e| e["manager"] == "before-first-apply")
        .unwrap();
    assert_eq!(bfa["operation"], "Update");
    assert_eq!(bfa["fieldsV1"]["f:data"]["f:b"], json!({}));
    assert_eq!(bfa["fieldsV1"]["f:data"]["f:c"], json!({}));
    assert!(
        mf.iter()
            .any(|e| e["manager"] == "applier" && e["operation"] == "Apply")
    );

    // Client-written managedFields in an update are taken as given.
    let (_, cur) = get(&sim, p).await;
    let mut body = cur.clone();
    body["metadata"]["managedFields"] = json!([{"manager": "flux", "operation": "Apply", "apiVersion": "v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}, "f:b": {}, "f:c": {}}}}]);
    let (s, v) = put(&sim, p, body).await;
    assert_eq!(s, 200, "{v}");
    let mf = v["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(mf.len(), 1, "{v}");
    assert_eq!(mf[0]["manager"], "flux");
    let (s, v) = patch(
        &sim,
        &ap,
        "application/apply-patch+yaml",
        applied_cm(json!({"a": "2"})),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("conflict with \"flux\""),
        "{v}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn custom_resource_put_needs_resource_version() {
    let sim = start().await;
    install_crd(&sim).await;
    let w = "/apis/example.dev/v1alpha1/namespaces/default/widgets";
    let (s, v) = post(&sim, w, json!({"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"mode": "Auto", "url": "u"}})).await;
    assert_eq!(s, 201, "{v}");
    let mut body = v.clone();
    body["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let (s, e) = put(&sim, &format!("{w}/w"), body).await;
    assert_eq!(s, 422, "{e}");
    assert_eq!(
        e["message"],
        "widgets.example.dev \"w\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    );
    assert_eq!(e["details"]["kind"], "widgets");
    // Built-ins allow unconditional updates.
    post(
        &sim,
        "/api/v1/namespaces/default/configmaps",
        cm("u", json!({})),
    )
    .await;
    let (s, _) = put(
        &sim,
        "/api/v1/namespaces/default/configmaps/u",
        cm("u", json!({"k": "v"})),
    )
    .await;
    assert_eq!(s, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn events_are_validated_as_the_api_server_does() {
    let sim = start().await;
    let ev = "/apis/events.k8s.io/v1/namespaces/default/events";
    let good = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
        "regarding": {"kind": "ConfigMap", "name": "c", "namespace": "default"}, "note": "n", "reason": "Synced",
        "type": "Normal", "reportingController": "example.dev/op", "reportingInstance": "op-1", "action": "Reconcile",
        "eventTime": "2024-01-01T00:00:00.000000Z"});
    let (s, v) = post(&sim, ev, good.clone()).await;
    assert_eq!(s, 201, "{v}");
    // Missing required fields.
    let (s, v) = post(&sim, ev, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e2"},
        "regarding": {"kind": "ConfigMap", "name": "c", "namespace": "default"}, "reason": "R", "type": "Normal"})).await;
    assert_eq!(s, 422, "{v}");
    let fields: Vec<&str> = v["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["eventTime"], "{v}");
    let mut bad = good.clone();
    bad["metadata"]["name"] = json!("e3");
    bad["reportingController"] = json!("");
    bad["action"] = json!("a".repeat(129));
    bad["note"] = json!("n".repeat(1025));
    bad["type"] = json!("Info");
    let (s, v) = post(&sim, ev, bad).await;
    assert_eq!(s, 422, "{v}");
    let msg = v["message"].as_str().unwrap();
    for part in [
        "reportingController: Required value",
        "action: Invalid value: \"\": can have at most 128 characters",
        "message: Invalid value: \"\": can have at most 1024 characters",
        "type: Invalid value: \"\": has invalid value: Info",
    ] {
        assert!(msg.contains(part), "{part} in {msg}");
    }
    let mut long = good.clone();
    long["metadata"]["name"] = json!("x".repeat(254));
    let (s, v) = post(&sim, ev, long).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("metadata.name"),
        "{v}"
    );
    // core/v1 keeps the legacy rules: no eventTime needed, names are free.
    let (s, v) = post(&sim, "/api/v1/namespaces/default/events", json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "Legacy.Event"}, "involvedObject": {"kind": "ConfigMap", "name": "c", "namespace": "default"},
        "reason": "Old", "message": "m", "type": "Normal"})).await;
    assert_eq!(s, 201, "{v}");
    // ...but a core Event with eventTime gets the reporting checks.
    let (s, v) = post(&sim, "/api/v1/namespaces/default/events", json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "e5"}, "involvedObject": {"kind": "ConfigMap", "name": "c", "namespace": "default"},
        "reason": "Old", "type": "Normal", "eventTime": "2024-01-01T00:00:00.000000Z"})).await;
    assert_eq!(s, 422, "{v}");
    // Strict updates: reason is immutable through events.k8s.io.
    let (s, v) = patch(
        &sim,
        &format!("{ev}/e1"),
        "application/merge-patch+json",
        json!({"reason": "Other"}),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("reason: Invalid value: \"Other\": field is immutable"),
        "{v}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn custom_resource_nulls_and_validation_ratcheting() {
    let sim = start().await;
    install_crd(&sim).await;
    let w = "/apis/example.dev/v1alpha1/namespaces/default/widgets";
    // null with a default -> the default; null without one (not nullable) -> dropped.
    let (s, v) = post(
        &sim,
        w,
        json!({"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "n"},
        "spec": {"mode": "Auto", "url": "u", "interval": null, "name": null, "replicas": 8}}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["spec"]["interval"], "5m");
    assert!(v["spec"].get("name").is_none(), "{v}");
    // Tighten the schema: the stored replicas (8) is now invalid.
    let crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.dev";
    let (s, v) = patch(&sim, crd, "application/json-patch+json", json!([{"op": "replace",
        "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/replicas/maximum", "value": 5}])).await;
    assert_eq!(s, 200, "{v}");
    // Unchanged invalid values do not block other changes...
    let mp = "application/merge-patch+json";
    let (s, v) = patch(
        &sim,
        &format!("{w}/n"),
        mp,
        json!({"spec": {"mode": "Manual"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // ...changed ones are validated.
    let (s, v) = patch(
        &sim,
        &format!("{w}/n"),
        mp,
        json!({"spec": {"replicas": 9}}),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("spec.replicas"),
        "{v}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn services_get_defaults_and_a_cluster_ip_that_stays() {
    let sim = start().await;
    let svc = "/api/v1/namespaces/default/services";
    let body = |name: &str, extra: Value| {
        let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]}});
        for (k, v) in extra.as_object().unwrap() {
            s["spec"][k] = v.clone();
        }
        s
    };
    let (s, a) = post(&sim, svc, body("a", json!({}))).await;
    assert_eq!(s, 201, "{a}");
    let ip = a["spec"]["clusterIP"].as_str().unwrap().to_string();
    let parsed: std::net::Ipv4Addr = ip.parse().unwrap();
    assert_eq!(&parsed.octets()[..1], &[10]);
    assert!(
        (96..112).contains(&parsed.octets()[1]),
        "{ip} in 10.96.0.0/12"
    );
    assert_eq!(a["spec"]["clusterIPs"], json!([ip]));
    assert_eq!(a["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(a["spec"]["ipFamilyPolicy"], "SingleStack");
    assert_eq!(a["spec"]["type"], "ClusterIP");
    assert_eq!(a["spec"]["sessionAffinity"], "None");
    assert_eq!(a["spec"]["internalTrafficPolicy"], "Cluster");
    assert_eq!(
        a["spec"]["ports"],
        json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}])
    );

    // A PUT without the allocated fields keeps them; changing the address is refused.
    let mut update = body("a", json!({}));
    update["metadata"]["resourceVersion"] = a["metadata"]["resourceVersion"].clone();
    let (s, v) = put(&sim, &format!("{svc}/a"), update).await;
    assert_eq!(
        (s, v["spec"]["clusterIP"].as_str()),
        (200, Some(ip.as_str())),
        "{v}"
    );
    let (s, v) = patch(
        &sim,
        &format!("{svc}/a"),
        "application/merge-patch+json",
        json!({"spec": {"clusterIP": "10.96.0.77"}}),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        v["message"],
        "Service \"a\" is invalid: spec.clusterIPs[0]: Invalid value: \"10.96.0.77\": may not change once set"
    );

    // A requested address: taken, outside the range, or headless.
    let (s, _) = post(&sim, svc, body("b", json!({"clusterIP": "10.96.0.50"}))).await;
    assert_eq!(s, 201);
    let (s, v) = post(&sim, svc, body("c", json!({"clusterIP": "10.96.0.50"}))).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().ends_with(
            "spec.clusterIPs: Invalid value: []string{\"10.96.0.50\"}: failed to allocate IP 10.96.0.50: provided IP is already allocated"
        ),
        "{v}"
    );
    let (s, v) = post(&sim, svc, body("d", json!({"clusterIP": "192.168.0.1"}))).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
        "{v}"
    );
    let (s, v) = post(&sim, svc, body("h", json!({"clusterIP": "None"}))).await;
    assert_eq!(
        (s, &v["spec"]["clusterIPs"]),
        (201, &json!(["None"])),
        "{v}"
    );
    // ExternalName: no ClusterIP.
    let (s, v) = post(
        &sim,
        svc,
        body(
            "x",
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(v["spec"].get("clusterIP").is_none(), "{v}");
    assert!(v["spec"].get("internalTrafficPolicy").is_none(), "{v}");
}
