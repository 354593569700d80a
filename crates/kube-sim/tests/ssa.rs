//! Server-side apply and managedFields.

mod common;

use std::time::Duration;

use common::*;
use kube_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};

const APPLY: &str = "application/apply-patch+yaml";
const D: &str = "/apis/apps/v1/namespaces/default/deployments";

async fn sim() -> SimHandle {
    start_with(SimConfig {
        deployment_controller: false,
        ..Default::default()
    })
    .await
}

fn dep(env: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coder"},
        "spec": {"selector": {"matchLabels": {"app": "coder"}}, "template": {"metadata": {"labels": {"app": "coder"}},
            "spec": {"containers": [{"name": "coder", "image": "coder:1", "env": env}]}}}})
}

fn env_of(v: &Value) -> Value {
    v["spec"]["template"]["spec"]["containers"][0]["env"].clone()
}

fn entry<'a>(v: &'a Value, manager: &str) -> Option<&'a Value> {
    v["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == manager)
}

async fn apply(sim: &SimHandle, manager: &str, force: bool, body: Value) -> (u16, Value) {
    patch(
        sim,
        &format!("{D}/coder?fieldManager={manager}&force={force}"),
        APPLY,
        body,
    )
    .await
}

#[tokio::test]
async fn apply_creates_and_merges_list_map_env() {
    let sim = sim().await;
    let (s, v) = apply(
        &sim,
        "helm",
        false,
        dep(json!([{"name": "A", "value": "1"}])),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let helm = entry(&v, "helm").unwrap();
    assert_eq!(helm["operation"], "Apply");
    assert_eq!(helm["apiVersion"], "apps/v1");
    assert_eq!(helm["fieldsType"], "FieldsV1");
    // A second manager applies only its own env var into the same container.
    let (s, v) = apply(&sim, "operator", false, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coder"},
        "spec": {"template": {"spec": {"containers": [{"name": "coder", "env": [{"name": "B", "value": "2"}]}]}}}})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        env_of(&v),
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
    let op = entry(&v, "operator").unwrap();
    assert_eq!(
        op["fieldsV1"],
        json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"coder\"}": {".": {}, "f:env": {"k:{\"name\":\"B\"}": {".": {}, "f:name": {}, "f:value": {}}}, "f:name": {}}}}}}})
    );
    // Same value = shared ownership, no conflict.
    let (s, _) = apply(&sim, "operator", false, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coder"},
        "spec": {"template": {"spec": {"containers": [{"name": "coder", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}}})).await;
    assert_eq!(s, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn conflicts_messages_and_force() {
    let sim = sim().await;
    apply(
        &sim,
        "helm",
        false,
        dep(json!([{"name": "CODER_OIDC_SCOPES", "value": "openid"}, {"name": "X", "value": "1"}])),
    )
    .await;
    let mut cfg = dep(json!([{"name": "CODER_OIDC_SCOPES", "value": "openid,offline_access"}]));
    let (s, e) = apply(&sim, "operator", false, cfg.clone()).await;
    assert_eq!(s, 409);
    assert_eq!(e["reason"], "Conflict");
    assert_eq!(
        e["message"],
        "Apply failed with 1 conflict: conflict with \"helm\" using apps/v1: .spec.template.spec.containers[name=\"coder\"].env[name=\"CODER_OIDC_SCOPES\"].value"
    );
    assert_eq!(
        e["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"helm\" using apps/v1", "field": ".spec.template.spec.containers[name=\"coder\"].env[name=\"CODER_OIDC_SCOPES\"].value"}])
    );
    cfg["spec"]["template"]["spec"]["containers"][0]["image"] = json!("coder:2");
    let (s, e) = apply(&sim, "operator", false, cfg.clone()).await;
    assert_eq!(s, 409);
    assert_eq!(
        e["message"],
        "Apply failed with 2 conflicts: conflicts with \"helm\" using apps/v1:\n- .spec.template.spec.containers[name=\"coder\"].env[name=\"CODER_OIDC_SCOPES\"].value\n- .spec.template.spec.containers[name=\"coder\"].image"
    );
    let (s, v) = apply(&sim, "operator", true, cfg).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"][0]["image"],
        "coder:2"
    );
    let helm = entry(&v, "helm").unwrap();
    let c = &helm["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"coder\"}"];
    assert!(c.get("f:image").is_none());
    assert!(
        c["f:env"]["k:{\"name\":\"CODER_OIDC_SCOPES\"}"]
            .get("f:value")
            .is_none()
    );
    assert!(c["f:env"]["k:{\"name\":\"X\"}"].get("f:value").is_some());
    // Helm re-applying its old value now conflicts with the operator.
    let (s, e) = apply(
        &sim,
        "helm",
        false,
        dep(json!([{"name": "CODER_OIDC_SCOPES", "value": "openid"}, {"name": "X", "value": "1"}])),
    )
    .await;
    assert_eq!(s, 409);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("conflicts with \"operator\" using apps/v1:"),
        "{e}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn removed_fields_are_pruned_unless_owned_elsewhere() {
    let sim = sim().await;
    let mut cfg = dep(json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
    cfg["metadata"]["labels"] = json!({"keep": "1", "drop": "1"});
    apply(&sim, "helm", false, cfg.clone()).await;
    // Another manager co-owns B.
    apply(&sim, "operator", false, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coder"},
        "spec": {"template": {"spec": {"containers": [{"name": "coder", "env": [{"name": "B", "value": "2"}]}]}}}})).await;
    cfg["spec"]["template"]["spec"]["containers"][0]["env"] = json!([]);
    cfg["metadata"]["labels"] = json!({"keep": "1"});
    let (s, v) = apply(&sim, "helm", false, cfg).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        env_of(&v),
        json!([{"name": "B", "value": "2"}]),
        "A pruned, B kept (owned by operator)"
    );
    assert_eq!(v["metadata"]["labels"], json!({"keep": "1"}));
    sim.shutdown().await;
}

#[tokio::test]
async fn noop_apply_keeps_resource_version_and_is_silent() {
    let sim = sim().await;
    let cfg = dep(json!([{"name": "A", "value": "1"}]));
    let (_, v1) = apply(&sim, "helm", false, cfg.clone()).await;
    let mut w = Watch::open(&sim, &format!("{D}?watch=1&resourceVersion={}", rv(&v1))).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, v2) = apply(&sim, "helm", false, cfg).await;
    assert_eq!(s, 200);
    assert_eq!(rv(&v2), rv(&v1));
    assert_eq!(
        v2["metadata"]["managedFields"], v1["metadata"]["managedFields"],
        "time unchanged"
    );
    assert!(w.next(Duration::from_millis(300)).await.is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn update_managers_recorded_and_take_ownership() {
    let sim = sim().await;
    apply(
        &sim,
        "helm",
        false,
        dep(json!([{"name": "A", "value": "1"}])),
    )
    .await;
    // Merge patch with a User-Agent derived manager.
    let url = format!("{}{D}/coder", sim.base_url());
    let resp = http()
        .patch(&url)
        .header("content-type", "application/merge-patch+json")
        .header("user-agent", "kubectl-edit/v1.32.0 (linux/amd64) kubernetes/abc")
        .body(r#"{"spec":{"replicas":5,"template":{"spec":{"containers":[{"name":"coder","image":"coder:9","env":[{"name":"A","value":"1"}]}]}}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    let edit = entry(&v, "kubectl-edit").unwrap();
    assert_eq!(edit["operation"], "Update");
    let f = &edit["fieldsV1"]["f:spec"];
    assert!(f.get("f:replicas").is_some());
    assert!(
        f["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"coder\"}"]
            .get("f:image")
            .is_some()
    );
    let helm = entry(&v, "helm").unwrap();
    assert!(helm["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"coder\"}"].get("f:image").is_none(), "image moved to kubectl-edit");
    // PUT with an explicit fieldManager.
    let mut body = v.clone();
    body["metadata"]["labels"] = json!({"team": "a"});
    let (s, v) = put(&sim, &format!("{D}/coder?fieldManager=my-put"), body).await;
    assert_eq!(s, 200);
    assert_eq!(
        entry(&v, "my-put").unwrap()["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:team": {}}}})
    );
    // Apply now conflicts with the Update manager, mentioning its time.
    let mut cfg = dep(json!([{"name": "A", "value": "1"}]));
    cfg["spec"]["template"]["spec"]["containers"][0]["image"] = json!("coder:1");
    let (s, e) = apply(&sim, "helm", false, cfg).await;
    assert_eq!(s, 409);
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1 at "
        ),
        "{msg}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn apply_requires_field_manager_and_status_apply_records_subresource() {
    let sim = sim().await;
    let (s, e) = patch(&sim, &format!("{D}/coder"), APPLY, dep(json!([]))).await;
    assert_eq!(s, 422);
    assert_eq!(
        e["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    // YAML bodies are accepted.
    let url = format!("{}{D}/coder?fieldManager=yaml-user", sim.base_url());
    let resp = http()
        .patch(&url)
        .header("content-type", APPLY)
        .body("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: coder\nspec:\n  selector:\n    matchLabels: {app: coder}\n  template:\n    metadata:\n      labels: {app: coder}\n    spec:\n      containers:\n      - name: coder\n        image: coder:1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let (s, v) = patch(&sim, &format!("{D}/coder/status?fieldManager=ctrl"), APPLY,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coder"}, "status": {"replicas": 1}, "spec": {"replicas": 9}})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"]["replicas"], 1);
    assert_eq!(v["spec"]["replicas"], 1, "spec ignored on /status");
    let e = entry(&v, "ctrl").unwrap();
    assert_eq!(e["subresource"], "status");
    assert_eq!(e["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));
    sim.shutdown().await;
}

#[tokio::test]
async fn apply_custom_resource_uses_crd_list_types() {
    let sim = sim().await;
    install_crd(&sim).await;
    let base = "/apis/example.dev/v1alpha1/namespaces/default/widgets";
    let w = |tags: Value, eps: Value| {
        json!({"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"mode": "Auto", "url": "u", "tags": tags, "endpoints": eps}})
    };
    let (s, v) = patch(
        &sim,
        &format!("{base}/w?fieldManager=a"),
        APPLY,
        w(json!(["x"]), json!([{"name": "e1", "port": 1}])),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = patch(&sim, &format!("{base}/w?fieldManager=b"), APPLY,
        json!({"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"tags": ["y"], "endpoints": [{"name": "e2", "port": 2}]}})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["spec"]["tags"], json!(["x", "y"]));
    assert_eq!(
        v["spec"]["endpoints"],
        json!([{"name": "e1", "port": 1}, {"name": "e2", "port": 2}])
    );
    let b = entry(&v, "b").unwrap();
    assert_eq!(
        b["fieldsV1"],
        json!({"f:spec": {"f:endpoints": {"k:{\"name\":\"e2\"}": {".": {}, "f:name": {}, "f:port": {}}}, "f:tags": {"v:\"y\"": {}}}})
    );
    // Unknown fields are rejected under Strict validation.
    let (s, e) = patch(&sim, &format!("{base}/w?fieldManager=b&fieldValidation=Strict"), APPLY,
        json!({"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"bogus": 1}})).await;
    assert_eq!(s, 400);
    assert_eq!(e["message"], ".spec.bogus: field not declared in schema");
    sim.shutdown().await;
}
