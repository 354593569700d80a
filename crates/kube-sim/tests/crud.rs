//! Focused tests of CRUD semantics, errors, status, finalizers, namespaces.

mod common;

use common::*;
use serde_json::json;

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn create_get_conflicts_and_errors() {
    let sim = start().await;
    let (s, v) = post(&sim, CMS, cm("a", json!({"k": "v"}))).await;
    assert_eq!(s, 201);
    assert!(v["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(
        v["metadata"].get("generation").is_none(),
        "configmaps have no generation"
    );
    let ts = v["metadata"]["creationTimestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 20, "second precision RFC3339: {ts}");
    assert_eq!(v["metadata"]["managedFields"][0]["manager"], "unknown");
    assert_eq!(v["metadata"]["managedFields"][0]["operation"], "Update");
    assert_eq!(
        v["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:data": {".": {}, "f:k": {}}})
    );

    let (s, e) = post(&sim, CMS, cm("a", json!({}))).await;
    assert_eq!(s, 409);
    assert_eq!(e["reason"], "AlreadyExists");
    assert_eq!(e["message"], "configmaps \"a\" already exists");
    assert_eq!(e["kind"], "Status");

    let (s, e) = get(&sim, "/api/v1/namespaces/default/configmaps/nope").await;
    assert_eq!(s, 404);
    assert_eq!(e["reason"], "NotFound");
    assert_eq!(e["message"], "configmaps \"nope\" not found");
    assert_eq!(e["details"], json!({"name": "nope", "kind": "configmaps"}));

    // Stale resourceVersion.
    let mut stale = v.clone();
    let (s, updated) = put(&sim, &format!("{CMS}/a"), {
        let mut u = v.clone();
        u["data"]["k"] = json!("v2");
        u
    })
    .await;
    assert_eq!(s, 200);
    assert_ne!(rv(&updated), rv(&v));
    stale["data"]["k"] = json!("v3");
    let (s, e) = put(&sim, &format!("{CMS}/a"), stale).await;
    assert_eq!(s, 409);
    assert_eq!(e["reason"], "Conflict");
    assert_eq!(
        e["message"],
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // Missing namespace, invalid name, bad method.
    let (s, e) = post(
        &sim,
        "/api/v1/namespaces/missing/configmaps",
        cm("x", json!({})),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(e["message"], "namespaces \"missing\" not found");
    let (s, e) = post(&sim, CMS, cm("Bad_Name", json!({}))).await;
    assert_eq!(s, 422);
    assert_eq!(e["reason"], "Invalid");
    assert!(e["message"].as_str().unwrap().starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
    let (s, e) = call(&sim, "POST", &format!("{CMS}/a"), None, Some(json!({}))).await;
    assert_eq!(s, 405);
    assert_eq!(e["reason"], "MethodNotAllowed");
    let (s, _) = get(&sim, "/api/v1/namespaces/default/nothings").await;
    assert_eq!(s, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn generate_name_and_secret_string_data() {
    let sim = start().await;
    let (s, v) = post(
        &sim,
        "/api/v1/namespaces/default/secrets",
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"generateName": "tok-"}, "data": {"a": "eA=="}, "stringData": {"b": "hello"}}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let name = v["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("tok-") && name.len() == 9, "{name}");
    assert_eq!(v["data"], json!({"a": "eA==", "b": "aGVsbG8="}));
    assert!(v.get("stringData").is_none());
    assert_eq!(v["type"], "Opaque");
    sim.shutdown().await;
}

#[tokio::test]
async fn noop_update_keeps_resource_version() {
    let sim = start().await;
    let (_, v) = post(&sim, CMS, cm("a", json!({"k": "v"}))).await;
    let mut w = Watch::open(
        &sim,
        &format!("{CMS}?watch=true&resourceVersion={}", rv(&v)),
    )
    .await;
    let (s, same) = put(&sim, &format!("{CMS}/a"), v.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(rv(&same), rv(&v));
    let (s, same) = patch(
        &sim,
        &format!("{CMS}/a"),
        "application/merge-patch+json",
        json!({"data": {"k": "v"}}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(rv(&same), rv(&v));
    assert_eq!(
        same["metadata"]["managedFields"],
        v["metadata"]["managedFields"]
    );
    assert!(
        w.next(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "no-op writes emit no events"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let sim = start().await;
    let mut obj = cm("f", json!({}));
    obj["metadata"]["finalizers"] = json!(["example.dev/x"]);
    let (_, v) = post(&sim, CMS, obj).await;
    let mut w = Watch::open(&sim, &format!("{CMS}?watch=1&resourceVersion={}", rv(&v))).await;
    let (s, d) = delete(&sim, &format!("{CMS}/f")).await;
    assert_eq!(s, 200);
    assert!(d["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(d["metadata"]["deletionGracePeriodSeconds"], 0);
    let ev = w.next(std::time::Duration::from_secs(2)).await.unwrap();
    assert_eq!(ev["type"], "MODIFIED");
    // Still there.
    let (s, _) = get(&sim, &format!("{CMS}/f")).await;
    assert_eq!(s, 200);
    // Adding finalizers while deleting is forbidden.
    let (s, _) = patch(
        &sim,
        &format!("{CMS}/f"),
        "application/merge-patch+json",
        json!({"metadata": {"finalizers": ["example.dev/x", "other"]}}),
    )
    .await;
    assert_eq!(s, 422);
    let (s, _) = patch(
        &sim,
        &format!("{CMS}/f"),
        "application/json-patch+json",
        json!([{"op": "remove", "path": "/metadata/finalizers"}]),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = get(&sim, &format!("{CMS}/f")).await;
    assert_eq!(s, 404);
    let evs = w.take(2, std::time::Duration::from_secs(2)).await;
    assert_eq!(evs.last().unwrap()["type"], "DELETED");
    sim.shutdown().await;
}

#[tokio::test]
async fn delete_returns_status_and_garbage_collects_dependents() {
    let sim = start().await;
    let (_, owner) = post(&sim, CMS, cm("owner", json!({}))).await;
    let mut dep = cm("dependent", json!({}));
    dep["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]);
    let (s, _) = post(&sim, CMS, dep).await;
    assert_eq!(s, 201);
    let (s, st) = call(
        &sim,
        "DELETE",
        &format!("{CMS}/owner"),
        None,
        Some(
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}),
        ),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["status"], "Success");
    assert_eq!(st["details"]["name"], "owner");
    let (s, _) = get(&sim, &format!("{CMS}/dependent")).await;
    assert_eq!(s, 404, "dependent garbage collected");
    // Precondition mismatch.
    let (_, v) = post(&sim, CMS, cm("p", json!({}))).await;
    let (s, e) = call(
        &sim,
        "DELETE",
        &format!("{CMS}/p"),
        None,
        Some(json!({"preconditions": {"resourceVersion": "1"}})),
    )
    .await;
    assert_eq!(s, 409, "{e}");
    let (s, _) = call(
        &sim,
        "DELETE",
        &format!("{CMS}/p"),
        None,
        Some(json!({"preconditions": {"resourceVersion": rv(&v)}})),
    )
    .await;
    assert_eq!(s, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn namespaces_terminate_and_forbid_creates() {
    let sim = start().await;
    let (s, ns) = post(
        &sim,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team"
    );
    let mut held = cm("held", json!({}));
    held["metadata"]["finalizers"] = json!(["x/y"]);
    post(&sim, "/api/v1/namespaces/team/configmaps", held).await;
    post(
        &sim,
        "/api/v1/namespaces/team/configmaps",
        cm("free", json!({})),
    )
    .await;
    let (s, d) = delete(&sim, "/api/v1/namespaces/team").await;
    assert_eq!(s, 200);
    assert_eq!(d["status"]["phase"], "Terminating");
    let (s, e) = post(
        &sim,
        "/api/v1/namespaces/team/configmaps",
        cm("late", json!({})),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(e["reason"], "Forbidden");
    assert_eq!(
        e["message"],
        "configmaps \"late\" is forbidden: unable to create new content in namespace team because it is being terminated"
    );
    let (s, _) = get(&sim, "/api/v1/namespaces/team/configmaps/free").await;
    assert_eq!(s, 404);
    let (s, _) = patch(
        &sim,
        "/api/v1/namespaces/team/configmaps/held",
        "application/merge-patch+json",
        json!({"metadata": {"finalizers": []}}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = get(&sim, "/api/v1/namespaces/team").await;
    assert_eq!(s, 404, "namespace removed once empty");
    sim.shutdown().await;
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let sim = start().await;
    install_crd(&sim).await;
    let base = "/apis/example.dev/v1alpha1/namespaces/default/widgets";
    let (s, v) = post(
        &sim,
        base,
        json!({"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"mode": "Auto", "url": "u"}, "status": {"observedGeneration": 9}}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(v.get("status").is_none(), "status dropped on create");
    assert_eq!(v["metadata"]["generation"], 1);
    assert_eq!(v["spec"]["interval"], "5m", "defaulted");
    // Main resource ignores status.
    let (_, v2) = patch(
        &sim,
        &format!("{base}/w"),
        "application/merge-patch+json",
        json!({"status": {"observedGeneration": 1}}),
    )
    .await;
    assert!(v2.get("status").is_none());
    assert_eq!(
        rv(&v2),
        rv(&v),
        "status-only change on main resource is a no-op"
    );
    // Status subresource changes only status, no generation bump.
    let (s, v3) = patch(
        &sim,
        &format!("{base}/w/status"),
        "application/merge-patch+json",
        json!({"spec": {"mode": "Manual"}, "status": {"observedGeneration": 1}}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v3["status"]["observedGeneration"], 1);
    assert_eq!(v3["spec"]["mode"], "Auto");
    assert_eq!(v3["metadata"]["generation"], 1);
    let entry = v3["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subresource"] == "status")
        .unwrap()
        .clone();
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:status": {"f:observedGeneration": {}}})
    );
    // Spec change bumps generation.
    let (_, v4) = patch(
        &sim,
        &format!("{base}/w"),
        "application/merge-patch+json",
        json!({"spec": {"mode": "Manual"}}),
    )
    .await;
    assert_eq!(v4["metadata"]["generation"], 2);
    // Label change does not.
    let (_, v5) = patch(
        &sim,
        &format!("{base}/w"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await;
    assert_eq!(v5["metadata"]["generation"], 2);
    // Strategic merge is not supported for custom resources.
    let (s, e) = patch(
        &sim,
        &format!("{base}/w"),
        "application/strategic-merge-patch+json",
        json!({"spec": {}}),
    )
    .await;
    assert_eq!(s, 415);
    assert_eq!(e["reason"], "UnsupportedMediaType");
    // The CRD got established.
    let (_, crd) = get(
        &sim,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.dev",
    )
    .await;
    let conds = crd["status"]["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    );
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "NamesAccepted" && c["status"] == "True")
    );
    assert_eq!(crd["status"]["acceptedNames"]["shortNames"], json!(["wg"]));
    // Deleting the CRD removes the resource and its objects.
    let (s, _) = delete(
        &sim,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.dev",
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = get(&sim, base).await;
    assert_eq!(s, 404);
    let (s, _) = get(&sim, "/apis/example.dev/v1alpha1").await;
    assert_eq!(s, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn crd_validation_is_light_but_real() {
    let sim = start().await;
    let mut crd = yaml(CRD_YAML);
    crd["metadata"]["name"] = json!("wrong.example.dev");
    crd["spec"]["versions"][0]["storage"] = json!(false);
    let (s, e) = post(
        &sim,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd,
    )
    .await;
    assert_eq!(s, 422);
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "CustomResourceDefinition.apiextensions.k8s.io \"wrong.example.dev\" is invalid: ["
        ),
        "{msg}"
    );
    assert!(msg.contains("metadata.name: Invalid value: \"wrong.example.dev\": must be spec.names.plural+\".\"+spec.group"), "{msg}");
    assert!(
        msg.contains("must have exactly one version marked as storage version"),
        "{msg}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn counters_by_verb_resource_outcome() {
    let sim = start().await;
    sim.reset_counters();
    post(&sim, CMS, cm("a", json!({}))).await;
    post(&sim, CMS, cm("a", json!({}))).await;
    get(&sim, &format!("{CMS}/a")).await;
    get(&sim, CMS).await;
    patch(
        &sim,
        &format!("{CMS}/a"),
        "application/merge-patch+json",
        json!({"data": {"x": "1"}}),
    )
    .await;
    let before = sim.counters();
    delete(&sim, &format!("{CMS}/a")).await;
    let c = sim.counters();
    assert_eq!(c.get("create", "configmaps"), 2);
    assert_eq!(c.get("get", "configmaps"), 1);
    assert_eq!(c.get("list", "configmaps"), 1);
    assert_eq!(c.writes(), 4);
    assert_eq!(c.writes_to("configmaps"), 4);
    assert_eq!(c.total(), 6);
    assert!(
        c.entries()
            .contains(&("create".into(), "configmaps".into(), "409".into(), 1))
    );
    assert_eq!(
        c.diff(&before).entries(),
        vec![(
            "delete".to_string(),
            "configmaps".to_string(),
            "200".to_string(),
            1
        )]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn direct_store_access() {
    let sim = start().await;
    let v = sim
        .create_object("v1", "ConfigMap", cm("direct", json!({"a": "b"})))
        .unwrap();
    assert_eq!(v["metadata"]["namespace"], "default");
    let got = sim
        .get_object("v1", "ConfigMap", Some("default"), "direct")
        .unwrap();
    assert_eq!(got["data"]["a"], "b");
    let (s, _) = get(&sim, &format!("{CMS}/direct")).await;
    assert_eq!(s, 200);
    let e = sim
        .create_object("v1", "ConfigMap", cm("direct", json!({})))
        .unwrap_err();
    assert_eq!(e.code, 409);
    assert!(
        sim.get_object("v1", "ConfigMap", Some("default"), "nope")
            .is_none()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let sim = start().await;
    let url = format!("{}/version", sim.base_url());
    let clone = sim.clone();
    assert_eq!(
        http().get(&url).send().await.unwrap().status().as_u16(),
        200
    );
    drop(sim);
    assert_eq!(
        http().get(&url).send().await.unwrap().status().as_u16(),
        200,
        "a clone keeps it alive"
    );
    drop(clone);
    let mut stopped = false;
    for _ in 0..50 {
        if http().get(&url).send().await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        stopped,
        "server still answering after the last handle was dropped"
    );
}

#[tokio::test]
async fn storage_only_kinds_round_trip() {
    let sim = start().await;
    let cases = [
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "cr"}, "rules": []}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": []}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "crb"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cr"}}),
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}),
        ),
        (
            "/api/v1/namespaces/default/serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}),
        ),
        (
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}),
        ),
        (
            "/api/v1/namespaces/default/pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        ),
    ];
    for (path, obj) in cases {
        let (s, created) = post(&sim, path, obj.clone()).await;
        assert_eq!(s, 201, "{path}: {created}");
        let name = obj["metadata"]["name"].as_str().unwrap();
        let (s, got) = get(&sim, &format!("{path}/{name}")).await;
        assert_eq!(s, 200);
        assert_eq!(got["kind"], obj["kind"]);
        assert_eq!(rv(&got), rv(&created));
        if obj["metadata"]["name"] == "leader" {
            // Leader election relies on optimistic concurrency.
            let mut stale = got.clone();
            let mut newer = got.clone();
            newer["spec"]["holderIdentity"] = json!("b");
            assert_eq!(put(&sim, &format!("{path}/{name}"), newer).await.0, 200);
            stale["spec"]["holderIdentity"] = json!("c");
            assert_eq!(put(&sim, &format!("{path}/{name}"), stale).await.0, 409);
        }
    }
    // Wrong scope in the path.
    let (s, _) = get(
        &sim,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/clusterroles",
    )
    .await;
    assert_eq!(s, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_metadata_is_a_bad_request_not_a_crash() {
    let sim = start().await;
    for body in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "labels": "oops"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": "oops"}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": 5}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "y", "finalizers": [1]}}),
    ] {
        let (s, e) = post(&sim, "/api/v1/namespaces", body).await;
        assert_eq!(s, 400, "{e}");
        assert_eq!(e["reason"], "BadRequest");
    }
    let (s, _) = post(&sim, CMS, json!("not an object")).await;
    assert_eq!(s, 400);
    let (s, _) = call(&sim, "POST", CMS, None, None).await;
    assert_eq!(s, 400);
    // Still serving.
    let (s, _) = get(&sim, "/api/v1/namespaces/default").await;
    assert_eq!(s, 200);
    sim.shutdown().await;
}
