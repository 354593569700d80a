//! Drives the real `/usr/bin/kubectl` against the simulator.

mod common;

use std::process::Command;

use common::*;
use kube_sim::SimHandle;
use serde_json::{Value, json};

const KUBECTL: &str = "/usr/bin/kubectl";

struct Kubectl {
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
    dir: std::path::PathBuf,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(sim: &SimHandle) -> Kubectl {
        assert!(
            std::path::Path::new(KUBECTL).exists(),
            "kubectl is required at {KUBECTL} for this test suite"
        );
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, sim.kubeconfig_yaml(Some("default"))).unwrap();
        Kubectl {
            kubeconfig,
            dir: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_string_lossy().into_owned()
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[]).await
    }

    async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let kc = self.kubeconfig.clone();
        let cache = self.dir.join("cache");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let o = Command::new(KUBECTL)
                .arg("--kubeconfig")
                .arg(&kc)
                .arg("--cache-dir")
                .arg(&cache)
                .args(&args)
                .envs(env)
                .output()
                .expect("run kubectl");
            Out {
                ok: o.status.success(),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            }
        })
        .await
        .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args).await;
        assert!(
            o.ok,
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            o.stdout, o.stderr
        );
        assert!(
            !o.stderr.to_lowercase().contains("openapi"),
            "kubectl {args:?} warned about openapi: {}",
            o.stderr
        );
        o.stdout
    }

    async fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args).await;
        assert!(
            !o.ok,
            "kubectl {args:?} unexpectedly succeeded: {}",
            o.stdout
        );
        o.stderr
    }
}

const WIDGET: &str = "apiVersion: example.dev/v1alpha1
kind: Widget
metadata:
  name: w1
spec:
  mode: Auto
  url: https://example.com
  interval: 45s
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_custom_resource_get_describe_explain() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    let crd = k.file("crd.yaml", CRD_YAML);
    let out = k.ok(&["apply", "-f", &crd]).await;
    assert_eq!(
        out.trim(),
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.dev created"
    );
    let w = k.file("w.yaml", WIDGET);
    let out = k.ok(&["apply", "-f", &w]).await;
    assert_eq!(out.trim(), "widget.example.dev/w1 created");
    // Client-side re-apply of a changed custom resource (JSON merge patch).
    let w2 = k.file("w2.yaml", &WIDGET.replace("interval: 45s", "interval: 60s"));
    let out = k.ok(&["apply", "-f", &w2]).await;
    assert_eq!(out.trim(), "widget.example.dev/w1 configured");
    let w = k.file("w3.yaml", WIDGET);
    let out = k.ok(&["apply", "-f", &w]).await;
    assert_eq!(out.trim(), "widget.example.dev/w1 configured");
    let out = k.ok(&["apply", "-f", &w]).await;
    assert_eq!(out.trim(), "widget.example.dev/w1 unchanged");

    // Status through the subresource, then columns.
    let (s, _) = patch(&sim, "/apis/example.dev/v1alpha1/namespaces/default/widgets/w1/status", "application/merge-patch+json",
        json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Synced", "message": "all good", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}})).await;
    assert_eq!(s, 200);
    let out = k.ok(&["get", "wg"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        vec!["NAME", "MODE", "READY", "AGE"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..3], &["w1", "Auto", "True"]);
    assert!(row[3].ends_with('s'), "age column: {}", row[3]);

    let y = k.ok(&["get", "widget", "w1", "-o", "yaml"]).await;
    assert!(y.contains("interval: 45s"), "{y}");
    assert!(y.contains("kind: Widget"));
    let j: Value = serde_json::from_str(
        &k.ok(&["get", "widgets.example.dev", "w1", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(j["spec"]["mode"], "Auto");
    assert_eq!(j["metadata"]["generation"], 3, "two spec changes");
    let jp = k
        .ok(&["get", "wg", "w1", "-o", "jsonpath={.spec.url}"])
        .await;
    assert_eq!(jp, "https://example.com");

    // An events.k8s.io/v1 Event about the object shows in describe.
    let uid = j["metadata"]["uid"].as_str().unwrap().to_string();
    let (s, v) = post(&sim, "/apis/events.k8s.io/v1/namespaces/default/events", json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "w1.1", "namespace": "default"},
        "eventTime": "2024-01-01T00:00:00.000000Z",
        "regarding": {"apiVersion": "example.dev/v1alpha1", "kind": "Widget", "name": "w1", "namespace": "default", "uid": uid},
        "reason": "Reconciled", "note": "widget reconciled successfully", "type": "Normal",
        "action": "Reconcile", "reportingController": "widget-operator", "reportingInstance": "widget-operator-0"
    })).await;
    assert_eq!(s, 201, "{v}");
    let d = k.ok(&["describe", "wg", "w1"]).await;
    assert!(d.contains("Ready"), "{d}");
    assert!(d.contains("all good"), "{d}");
    let ev_line = d
        .lines()
        .find(|l| l.contains("Reconciled"))
        .unwrap_or_else(|| panic!("no event in describe:\n{d}"));
    assert!(ev_line.contains("widget-operator"), "{ev_line}");
    assert!(
        ev_line.contains("widget reconciled successfully"),
        "{ev_line}"
    );

    let e = k.ok(&["explain", "widgets.spec.mode"]).await;
    assert!(e.contains("How the widget operates."), "{e}");
    assert!(e.contains("Auto"), "{e}");
    let e = k.ok(&["explain", "wg.spec"]).await;
    assert!(e.contains("interval"), "{e}");
    assert!(e.contains("Refresh interval as a Go duration."), "{e}");
    let e = k
        .ok(&["explain", "deployment.spec.template.spec.containers.env"])
        .await;
    assert!(
        e.contains("List of environment variables to set in the container."),
        "{e}"
    );

    // kubectl diff uses server-side dry-run: shows the change, persists nothing.
    let manual = k.file("manual.yaml", &WIDGET.replace("mode: Auto", "mode: Manual"));
    let d = k.run(&["diff", "-f", &manual]).await;
    assert!(!d.ok, "diff exits 1 when there are differences");
    assert!(
        d.stdout.contains("-  mode: Auto") && d.stdout.contains("+  mode: Manual"),
        "{}",
        d.stdout
    );
    assert!(!d.stdout.contains("-  resourceVersion"), "{}", d.stdout);
    assert!(d.stderr.is_empty(), "{}", d.stderr);
    let out = k
        .ok(&["get", "wg", "w1", "-o", "jsonpath={.spec.mode}"])
        .await;
    assert_eq!(out, "Auto");

    // Delete.
    let out = k.ok(&["delete", "wg", "w1"]).await;
    assert_eq!(out.trim(), "widget.example.dev \"w1\" deleted");
    let err = k.fails(&["get", "wg", "w1"]).await;
    assert!(
        err.contains("widgets.example.dev \"w1\" not found"),
        "{err}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_custom_resources_are_rejected() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    let crd = k.file("crd.yaml", CRD_YAML);
    k.ok(&["apply", "-f", &crd]).await;
    let both = k.file("both.yaml", "apiVersion: example.dev/v1alpha1\nkind: Widget\nmetadata:\n  name: both\nspec:\n  mode: Auto\n  url: https://x\n  secretRef: sec\n  interval: 10s\n");
    let err = k.fails(&["apply", "-f", &both]).await;
    assert!(err.contains("The Widget \"both\" is invalid:"), "{err}");
    assert!(
        err.contains(
            "spec: Invalid value: \"object\": exactly one of url or secretRef must be set"
        ),
        "{err}"
    );
    assert!(
        err.contains("spec.interval: Invalid value: \"object\": interval must be at least 30s"),
        "{err}"
    );
    let bad = k.file("bad.yaml", "apiVersion: example.dev/v1alpha1\nkind: Widget\nmetadata:\n  name: bad\nspec:\n  mode: Sometimes\n  name: ABC\n  url: https://x\n");
    let err = k.fails(&["create", "-f", &bad]).await;
    assert!(
        err.contains(
            "spec.mode: Unsupported value: \"Sometimes\": supported values: \"Auto\", \"Manual\""
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "spec.name: Invalid value: \"ABC\": spec.name in body should match '^[a-z]+$'"
        ),
        "{err}"
    );
    let unknown = k.file("unknown.yaml", "apiVersion: example.dev/v1alpha1\nkind: Widget\nmetadata:\n  name: unk\nspec:\n  mode: Auto\n  url: https://x\n  colour: blue\n");
    let err = k.fails(&["apply", "-f", &unknown]).await;
    assert!(
        err.contains("strict decoding error: unknown field \"spec.colour\""),
        "{err}"
    );
    sim.shutdown().await;
}

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: coder
  labels: {app: coder}
spec:
  replicas: 2
  selector:
    matchLabels: {app: coder}
  template:
    metadata:
      labels: {app: coder}
    spec:
      containers:
      - name: coder
        image: coder:1
        env:
        - name: CODER_OIDC_SCOPES
          value: openid
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_and_force() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    let d1 = k.file("d1.yaml", DEPLOY);
    let out = k
        .ok(&["apply", "--server-side", "--field-manager=helm", "-f", &d1])
        .await;
    assert_eq!(out.trim(), "deployment.apps/coder serverside-applied");
    let d2 = k.file(
        "d2.yaml",
        &DEPLOY.replace("value: openid", "value: openid,offline_access"),
    );
    let err = k
        .fails(&[
            "apply",
            "--server-side",
            "--field-manager=operator",
            "-f",
            &d2,
        ])
        .await;
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"helm\" using apps/v1: .spec.template.spec.containers[name=\"coder\"].env[name=\"CODER_OIDC_SCOPES\"].value"),
        "{err}"
    );
    let out = k
        .ok(&[
            "apply",
            "--server-side",
            "--field-manager=operator",
            "--force-conflicts",
            "-f",
            &d2,
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/coder serverside-applied");
    let j: Value = serde_json::from_str(
        &k.ok(&[
            "get",
            "deploy",
            "coder",
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(
        j["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "openid,offline_access"
    );
    let mf = j["metadata"]["managedFields"].as_array().unwrap();
    let helm = mf.iter().find(|e| e["manager"] == "helm").unwrap();
    let env = &helm["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"coder\"}"]
        ["f:env"]["k:{\"name\":\"CODER_OIDC_SCOPES\"}"];
    assert!(
        env.get("f:value").is_none(),
        "helm lost ownership of the value: {helm}"
    );
    let op = mf.iter().find(|e| e["manager"] == "operator").unwrap();
    assert_eq!(op["operation"], "Apply");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_deployment_merge_json_strategic() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    let d1 = k.file("d1.yaml", DEPLOY);
    assert_eq!(
        k.ok(&["apply", "-f", &d1]).await.trim(),
        "deployment.apps/coder created"
    );
    let out = k
        .ok(&[
            "patch",
            "deployment",
            "coder",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":3}}"#,
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/coder patched");
    let out = k.ok(&["patch", "deployment", "coder", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"coder:2"}]"#]).await;
    assert_eq!(out.trim(), "deployment.apps/coder patched");
    let out = k.ok(&["patch", "deployment", "coder", "--type=strategic", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"coder","env":[{"name":"EXTRA","value":"1"}]}]}}}}"#]).await;
    assert_eq!(out.trim(), "deployment.apps/coder patched");
    let err = k
        .fails(&[
            "patch",
            "deployment",
            "coder",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/spec/replicas","value":7}]"#,
        ])
        .await;
    assert!(err.contains("test"), "{err}");
    let j: Value = serde_json::from_str(
        &k.ok(&[
            "get",
            "deploy",
            "coder",
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(j["spec"]["replicas"], 3);
    let c = &j["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "coder:2");
    assert_eq!(
        c["env"],
        json!([{"name": "CODER_OIDC_SCOPES", "value": "openid"}, {"name": "EXTRA", "value": "1"}])
    );
    let managers: Vec<&str> = j["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert!(
        managers.contains(&"kubectl-client-side-apply"),
        "{managers:?}"
    );
    assert!(managers.contains(&"kubectl-patch"), "{managers:?}");
    // Client-side re-apply of the original removes nothing it did not set and resets the env list it owns.
    let out = k.ok(&["apply", "-f", &d1]).await;
    assert_eq!(out.trim(), "deployment.apps/coder configured");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_round_trip_and_conflict() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    let cmf = k.file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"1\"\n",
    );
    assert_eq!(
        k.ok(&["create", "-f", &cmf]).await.trim(),
        "configmap/settings created"
    );
    let mut j: Value =
        serde_json::from_str(&k.ok(&["get", "cm", "settings", "-o", "json"]).await).unwrap();
    j["data"]["b"] = json!("2");
    let edited = k.file("edited.json", &j.to_string());
    assert_eq!(
        k.ok(&["replace", "-f", &edited]).await.trim(),
        "configmap/settings replaced"
    );
    // Replaying the same (now stale) resourceVersion conflicts.
    let err = k.fails(&["replace", "-f", &edited]).await;
    assert!(
        err.contains("Operation cannot be fulfilled on configmaps \"settings\": the object has been modified; please apply your changes to the latest version and try again"),
        "{err}"
    );
    let out = k
        .ok(&["get", "cm", "settings", "-o", "jsonpath={.data.b}"])
        .await;
    assert_eq!(out, "2");
    // The real `kubectl edit`, with sed as the editor.
    let o = k
        .run_env(
            &["edit", "cm", "settings"],
            &[("KUBE_EDITOR", "sed -i -e s/b:.*/b:\\ \\\"3\\\"/")],
        )
        .await;
    assert!(o.ok, "edit failed: {} {}", o.stdout, o.stderr);
    assert_eq!(o.stdout.trim(), "configmap/settings edited");
    let j: Value = serde_json::from_str(
        &k.ok(&[
            "get",
            "cm",
            "settings",
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(j["data"], json!({"a": "1", "b": "3"}));
    let managers: Vec<&str> = j["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"kubectl-edit"), "{managers:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_waits_for_finalizer() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    let f = k.file("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: guarded\n  finalizers: [example.dev/cleanup]\n");
    k.ok(&["create", "-f", &f]).await;
    let sim2 = sim.clone();
    let remover = tokio::spawn(async move {
        // Wait until the delete marked the object, then drop the finalizer.
        for _ in 0..100 {
            let (_, v) = get(&sim2, "/api/v1/namespaces/default/configmaps/guarded").await;
            if v["metadata"]["deletionTimestamp"].is_string() {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                let (s, _) = patch(
                    &sim2,
                    "/api/v1/namespaces/default/configmaps/guarded",
                    "application/merge-patch+json",
                    json!({"metadata": {"finalizers": null}}),
                )
                .await;
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        0
    });
    let out = k.ok(&["delete", "cm", "guarded", "--timeout=20s"]).await;
    assert_eq!(out.trim(), "configmap \"guarded\" deleted");
    assert_eq!(remover.await.unwrap(), 200);
    let (s, _) = get(&sim, "/api/v1/namespaces/default/configmaps/guarded").await;
    assert_eq!(s, 404);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generators_rollout_status_scale_and_wait() {
    let sim = start().await;
    let k = Kubectl::new(&sim);
    // Typed generators send protobuf.
    assert_eq!(
        k.ok(&["create", "namespace", "team"]).await.trim(),
        "namespace/team created"
    );
    assert_eq!(
        k.ok(&[
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=b",
            "-n",
            "team"
        ])
        .await
        .trim(),
        "configmap/cfg created"
    );
    assert_eq!(
        k.ok(&[
            "create",
            "secret",
            "generic",
            "sec",
            "--from-literal=token=s3cr3t",
            "-n",
            "team"
        ])
        .await
        .trim(),
        "secret/sec created"
    );
    let tok = k
        .ok(&[
            "get",
            "secret",
            "sec",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.token}",
        ])
        .await;
    assert_eq!(tok, "czNjcjN0");
    // The generator sends an empty type; the server defaults it, and the Table shows it.
    let out = k.ok(&["get", "secret", "sec", "-n", "team"]).await;
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["sec", "Opaque", "1", l.split_whitespace().last().unwrap()]),
        "{out}"
    );
    let out = k
        .ok(&["get", "cm", "cfg", "-n", "team", "-o", "jsonpath={.data.a}"])
        .await;
    assert_eq!(out, "b");
    let out = k
        .ok(&["create", "configmap", "plain", "--from-literal=x=y"])
        .await;
    assert_eq!(out.trim(), "configmap/plain created");
    // Rollout status follows the emulated controller.
    let d1 = k.file("d1.yaml", DEPLOY);
    k.ok(&["apply", "-f", &d1]).await;
    let out = k
        .ok(&["rollout", "status", "deployment/coder", "--timeout=20s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let out = k
        .ok(&["scale", "deployment", "coder", "--replicas=4"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/coder scaled");
    let out = k
        .ok(&["get", "deploy", "coder", "-o", "jsonpath={.spec.replicas}"])
        .await;
    assert_eq!(out, "4");
    let out = k
        .ok(&[
            "wait",
            "--for=condition=Available",
            "deployment/coder",
            "--timeout=20s",
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/coder condition met");
    let out = k.ok(&["get", "deploy"]).await;
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], &["coder", "4/4", "4", "4"], "{out}");
    sim.shutdown().await;
}
