//! Deployment emulation, schema validation, patches and Event conversion.

mod common;

use std::time::Duration;

use common::*;
use kube_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};

const D: &str = "/apis/apps/v1/namespaces/default/deployments";
const W: &str = "/apis/example.dev/v1alpha1/namespaces/default/widgets";

async fn wait_for(sim: &SimHandle, path: &str, f: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let (_, v) = get(sim, path).await;
        if f(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition never met for {path}: {}", get(sim, path).await.1);
}

fn cond<'a>(v: &'a Value, ty: &str) -> &'a Value {
    v["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == ty)
        .unwrap()
}

#[tokio::test]
async fn deployment_rollout_emulation() {
    let sim = start_with(SimConfig {
        rollout_delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let (s, v) = post(&sim, D, deployment("web", "nginx:1")).await;
    assert_eq!(s, 201);
    assert_eq!(v["spec"]["strategy"]["type"], "RollingUpdate", "defaulted");
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    // In progress first.
    let p = wait_for(&sim, &format!("{D}/web"), |v| {
        v["status"]["observedGeneration"] == 1
    })
    .await;
    assert_eq!(cond(&p, "Progressing")["reason"], "ReplicaSetUpdated");
    // Then complete.
    let done = wait_for(&sim, &format!("{D}/web"), |v| {
        v["status"]["availableReplicas"] == 2
    })
    .await;
    assert_eq!(done["status"]["updatedReplicas"], 2);
    assert_eq!(done["status"]["readyReplicas"], 2);
    assert_eq!(done["status"]["replicas"], 2);
    let prog = cond(&done, "Progressing");
    assert_eq!(prog["status"], "True");
    assert_eq!(prog["reason"], "NewReplicaSetAvailable");
    let msg = prog["message"].as_str().unwrap();
    assert!(
        msg.starts_with("ReplicaSet \"web-") && msg.ends_with("\" has successfully progressed."),
        "{msg}"
    );
    assert_eq!(
        cond(&done, "Available")["reason"],
        "MinimumReplicasAvailable"
    );
    let kcm = done["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kube-controller-manager")
        .unwrap();
    assert_eq!(kcm["subresource"], "status");
    assert_eq!(
        sim.get_object("apps/v1", "Deployment", Some("default"), "web")
            .unwrap()["status"],
        done["status"]
    );

    // Stuck rollout.
    sim.set_rollout_stuck("default", "web", true);
    patch(&sim, &format!("{D}/web"), "application/strategic-merge-patch+json", json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}})).await;
    let stuck = wait_for(&sim, &format!("{D}/web"), |v| {
        v["status"]["observedGeneration"] == 2 && cond(v, "Progressing")["status"] == "False"
    })
    .await;
    let prog = cond(&stuck, "Progressing");
    assert_eq!(prog["reason"], "ProgressDeadlineExceeded");
    assert!(
        prog["message"]
            .as_str()
            .unwrap()
            .ends_with("\" has timed out progressing.")
    );
    assert!(stuck["status"]["updatedReplicas"].as_i64().unwrap_or(0) < 2);
    // Un-sticking lets it complete.
    sim.set_rollout_delay(Duration::from_millis(50));
    sim.set_rollout_stuck("default", "web", false);
    let ok = wait_for(&sim, &format!("{D}/web"), |v| {
        cond(v, "Progressing")["reason"] == "NewReplicaSetAvailable"
    })
    .await;
    assert_eq!(ok["status"]["updatedReplicas"], 2);
    sim.shutdown().await;
}

fn widget(spec: Value) -> Value {
    json!({"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec})
}

#[tokio::test]
async fn schema_validation_messages_defaults_and_pruning() {
    let sim = start().await;
    install_crd(&sim).await;
    let (s, e) = post(
        &sim,
        W,
        widget(json!({"mode": "Auto", "url": "u", "interval": "10s"})),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(
        e["message"],
        "Widget.example.dev \"w\" is invalid: spec.interval: Invalid value: \"object\": interval must be at least 30s"
    );
    assert_eq!(
        e["details"],
        json!({"name": "w", "group": "example.dev", "kind": "Widget", "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: \"object\": interval must be at least 30s", "field": "spec.interval"}]})
    );
    let (s, e) = post(
        &sim,
        W,
        widget(json!({"url": "u", "replicas": 11, "tags": ["a", "a"]})),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(
        e["message"],
        "Widget.example.dev \"w\" is invalid: [spec.mode: Required value, spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10, spec.tags[1]: Duplicate value: \"a\"]"
    );
    let (s, e) = post(&sim, W, widget(json!({"mode": "Auto", "url": 5}))).await;
    assert_eq!(s, 422);
    assert_eq!(
        e["message"],
        "Widget.example.dev \"w\" is invalid: spec.url: Invalid value: \"integer\": spec.url in body must be of type string: \"integer\""
    );
    // Unknown fields: Warn (default) prunes with a warning header; Strict rejects.
    let (s, v, h) = call_h(
        &sim,
        "POST",
        W,
        None,
        Some(widget(json!({"mode": "Auto", "url": "u", "extra": 1}))),
        None,
    )
    .await;
    assert_eq!(s, 201);
    assert!(v["spec"].get("extra").is_none());
    assert_eq!(v["spec"]["interval"], "5m");
    assert_eq!(
        h.get("warning").unwrap().to_str().unwrap(),
        "299 - \"unknown field \\\"spec.extra\\\"\""
    );
    let (s, e) = call(&sim, "POST", &format!("{W}?fieldValidation=Strict"), None, Some(json!({"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"mode": "Auto", "url": "u", "extra": 1}}))).await;
    assert_eq!(s, 400);
    assert_eq!(
        e["message"],
        "Widget in version \"v1alpha1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.extra\""
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn cel_transition_rules_and_message_expressions() {
    let sim = start().await;
    let mut crd = yaml(CRD_YAML);
    let spec_schema =
        &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    spec_schema["properties"]["mode"]["x-kubernetes-validations"] =
        json!([{"rule": "self == oldSelf", "message": "mode is immutable"}]);
    spec_schema["properties"]["name"]["x-kubernetes-validations"] = json!([{"rule": "self.size() <= 3", "messageExpression": "'name too long: ' + string(self.size())", "reason": "FieldValueForbidden"}]);
    let (s, _) = post(
        &sim,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd,
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = post(&sim, W, widget(json!({"mode": "Auto", "url": "u"}))).await;
    assert_eq!(s, 201, "transition rule skipped on create");
    let (s, e) = patch(
        &sim,
        &format!("{W}/w"),
        "application/merge-patch+json",
        json!({"spec": {"mode": "Manual", "name": "abcdef"}}),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(
        e["message"],
        "Widget.example.dev \"w\" is invalid: [spec.mode: Invalid value: \"string\": mode is immutable, spec.name: Forbidden: name too long: 6]"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn json_patch_test_failure_and_strategic_directives() {
    let sim = start_with(SimConfig {
        deployment_controller: false,
        ..Default::default()
    })
    .await;
    let mut d = deployment("web", "nginx:1");
    d["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]);
    d["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
    post(&sim, D, d).await;
    let (s, e) = patch(&sim, &format!("{D}/web"), "application/json-patch+json", json!([{"op": "test", "path": "/spec/replicas", "value": 3}, {"op": "replace", "path": "/spec/replicas", "value": 4}])).await;
    assert_eq!(s, 422);
    assert_eq!(e["reason"], "Invalid");
    let (s, v) = patch(&sim, &format!("{D}/web"), "application/json-patch+json", json!([{"op": "test", "path": "/spec/replicas", "value": 2}, {"op": "replace", "path": "/spec/replicas", "value": 4}])).await;
    assert_eq!(s, 200);
    assert_eq!(v["spec"]["replicas"], 4);
    assert_eq!(v["metadata"]["generation"], 2);
    let (s, v) = patch(&sim, &format!("{D}/web"), "application/strategic-merge-patch+json", json!({"spec": {"template": {"spec": {
        "containers": [{"name": "web", "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}], "ports": [{"containerPort": 81}]},
                       {"name": "sidecar", "image": "busybox"}]}}}})).await;
    assert_eq!(s, 200, "{v}");
    let cs = v["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0]["image"], "nginx:1");
    assert_eq!(
        cs[0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
    );
    assert_eq!(
        cs[0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81, "protocol": "TCP"}])
    );
    assert_eq!(cs[1]["name"], "sidecar");
    // Merge patch replaces lists wholesale.
    let (_, v) = patch(
        &sim,
        &format!("{D}/web"),
        "application/merge-patch+json",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}}}),
    )
    .await;
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (s, e) = patch(&sim, &format!("{D}/web"), "text/plain", json!({})).await;
    assert_eq!(s, 415, "{e}");
    sim.shutdown().await;
}

#[tokio::test]
async fn events_are_served_by_both_apis() {
    let sim = start().await;
    let (s, v) = post(&sim, "/apis/events.k8s.io/v1/namespaces/default/events", json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
        "eventTime": "2024-01-01T00:00:00.000000Z", "series": {"count": 2, "lastObservedTime": "2024-01-01T00:01:00.000000Z"},
        "regarding": {"kind": "Deployment", "name": "coder", "namespace": "default", "uid": "u1", "apiVersion": "apps/v1"},
        "reason": "Updated", "note": "changed env", "type": "Warning", "action": "Patch",
        "reportingController": "oidc-operator", "reportingInstance": "pod-1"
    })).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["apiVersion"], "events.k8s.io/v1");
    assert_eq!(v["note"], "changed env");
    let (_, core) = get(&sim, "/api/v1/namespaces/default/events/e1").await;
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["involvedObject"]["name"], "coder");
    assert_eq!(core["message"], "changed env");
    assert_eq!(core["reportingComponent"], "oidc-operator");
    assert_eq!(core["reportingInstance"], "pod-1");
    // deprecatedCount must be unset on create through events.k8s.io/v1
    // (ValidateEventCreate), so the core view has no count.
    assert!(core.get("count").is_none());
    assert_eq!(core["series"]["count"], 2);
    assert_eq!(core["type"], "Warning");
    // Field selectors as kubectl describe uses them.
    let q = "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dcoder,involvedObject.namespace%3Ddefault,involvedObject.kind%3DDeployment,involvedObject.uid%3Du1";
    let (_, l) = get(&sim, q).await;
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    let (_, l) = get(
        &sim,
        "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dother",
    )
    .await;
    assert_eq!(l["items"].as_array().unwrap().len(), 0);
    let (_, l) = get(
        &sim,
        "/api/v1/events?fieldSelector=type%3DWarning,reason%3DUpdated",
    )
    .await;
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    // Core writes show up in the new API.
    let (s, _) = post(&sim, "/api/v1/namespaces/default/events", json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e2"},
        "involvedObject": {"kind": "Pod", "name": "p"}, "message": "hi", "reason": "R", "source": {"component": "kubelet"}})).await;
    assert_eq!(s, 201);
    let (_, ev) = get(&sim, "/apis/events.k8s.io/v1/namespaces/default/events/e2").await;
    assert_eq!(ev["regarding"]["name"], "p");
    assert_eq!(ev["note"], "hi");
    assert_eq!(ev["deprecatedSource"]["component"], "kubelet");
    // A merge patch through events.k8s.io (as kube-runtime's Recorder does for series).
    let (s, v) = patch(
        &sim,
        "/apis/events.k8s.io/v1/namespaces/default/events/e1",
        "application/merge-patch+json",
        json!({"series": {"count": 5, "lastObservedTime": "2024-01-01T00:05:00.000000Z"}}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["series"]["count"], 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn deployment_validation_and_dry_run() {
    let sim = start_with(SimConfig {
        deployment_controller: false,
        ..Default::default()
    })
    .await;
    let mut d = deployment("web", "nginx:1");
    d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
    let (s, e) = post(&sim, D, d).await;
    assert_eq!(s, 422);
    assert_eq!(
        e["message"],
        "Deployment.apps \"web\" is invalid: [spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`, spec.template.spec.containers[0].image: Required value]"
    );
    // Dry run: validated, answered, not stored.
    let (s, v) = post(
        &sim,
        &format!("{D}?dryRun=All"),
        deployment("web", "nginx:1"),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(v["metadata"]["name"], "web");
    let (s, _) = get(&sim, &format!("{D}/web")).await;
    assert_eq!(s, 404);
    post(&sim, D, deployment("web", "nginx:1")).await;
    let (s, e) = patch(
        &sim,
        &format!("{D}/web"),
        "application/merge-patch+json",
        json!({"spec": {"selector": {"matchLabels": {"app": "web", "x": "y"}}}}),
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"x\":\"y\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"),
        "{e}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn network_policies_are_defaulted_and_validated() {
    const NP: &str = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies";
    let sim = start().await;
    let (s, v) = post(
        &sim,
        NP,
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "op"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "op"}},
                "ingress": [{"ports": [{"port": 8080}]}],
                "egress": [{"ports": [{"port": 443}], "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]
            }
        }),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["metadata"]["generation"], 1);
    assert_eq!(v["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(v["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");

    let (s, e) = post(
        &sim,
        NP,
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "bad"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]
            }
        }),
    )
    .await;
    assert_eq!(s, 422, "{e}");
    assert_eq!(
        e["message"],
        "NetworkPolicy.networking.k8s.io \"bad\" is invalid: [spec.egress[0].to[0]: Forbidden: may not specify both ipBlock and another peer, spec.egress[0].to[1].ipBlock.except[0]: Invalid value: \"192.168.0.0/16\": must be a strict subset of `cidr`]"
    );
    assert_eq!(e["details"]["kind"], "NetworkPolicy");
    assert_eq!(e["details"]["group"], "networking.k8s.io");

    // An update that breaks the policy is refused too, and the stored one is unchanged.
    let (s, e) = patch(
        &sim,
        &format!("{NP}/op"),
        "application/merge-patch+json",
        json!({"spec": {"policyTypes": ["Ingress", "Sideways"]}}),
    )
    .await;
    assert_eq!(s, 422, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains(
            "spec.policyTypes[1]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\""
        ),
        "{e}"
    );
    let (_, stored) = get(&sim, &format!("{NP}/op")).await;
    assert_eq!(stored["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(stored["metadata"]["generation"], 1);
}
