//! RBAC enforcement (`SimConfig { rbac: true, .. }`): authentication by token,
//! Roles/ClusterRoles and their bindings, and the real server's 401/403 answers.

mod common;

use std::process::Command;

use common::*;
use kube_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};

const SA: &str = "system:serviceaccount:ops:bot";

async fn rbac_sim() -> SimHandle {
    start_with(SimConfig {
        rbac: true,
        ..Default::default()
    })
    .await
}

/// A request with an optional bearer token; (status, JSON body).
async fn req(
    sim: &SimHandle,
    token: Option<&str>,
    method: &str,
    path: &str,
    ct: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = http().request(m, format!("{}{}", sim.base_url(), path));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb
            .header("content-type", ct.unwrap_or("application/json"))
            .body(serde_json::to_vec(&b).unwrap());
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Create an object as the admin; asserts 201.
async fn admin_create(sim: &SimHandle, path: &str, body: Value) -> Value {
    let (s, v) = req(
        sim,
        Some(&sim.admin_token()),
        "POST",
        path,
        None,
        Some(body),
    )
    .await;
    assert_eq!(s, 201, "{path}: {v}");
    v
}

async fn namespace(sim: &SimHandle, name: &str) {
    admin_create(
        sim,
        "/api/v1/namespaces",
        json!({"metadata": {"name": name}}),
    )
    .await;
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

async fn cluster_role(sim: &SimHandle, name: &str, rules: Value) {
    admin_create(
        sim,
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        json!({"metadata": {"name": name}, "rules": rules}),
    )
    .await;
}

async fn role(sim: &SimHandle, ns: &str, name: &str, rules: Value) {
    admin_create(
        sim,
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
        json!({"metadata": {"name": name}, "rules": rules}),
    )
    .await;
}

fn sa_subject(ns: &str, name: &str) -> Value {
    json!({"kind": "ServiceAccount", "name": name, "namespace": ns})
}

async fn cluster_binding(sim: &SimHandle, name: &str, role: &str, subjects: Value) {
    admin_create(
        sim,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        json!({"metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects}),
    )
    .await;
}

async fn binding(sim: &SimHandle, ns: &str, name: &str, kind: &str, role: &str, subjects: Value) {
    admin_create(
        sim,
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        json!({"metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": subjects}),
    )
    .await;
}

fn forbidden_message(v: &Value) -> &str {
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["reason"], "Forbidden", "{v}");
    assert_eq!(v["code"], 403, "{v}");
    v["message"].as_str().unwrap()
}

#[tokio::test]
async fn off_by_default_and_tokens_are_ignored() {
    let sim = start().await;
    let (s, _) = get(&sim, "/api/v1/namespaces/default/secrets").await;
    assert_eq!(s, 200);
    let (s, _) = req(
        &sim,
        Some("nonsense"),
        "GET",
        "/api/v1/namespaces",
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(!sim.kubeconfig_yaml(None).contains("token"));
}

#[tokio::test]
async fn missing_or_unknown_token_is_401_and_discovery_needs_authentication_only() {
    let sim = rbac_sim().await;
    for token in [None, Some("not-a-token")] {
        for path in [
            "/api",
            "/apis",
            "/version",
            "/openapi/v3",
            "/api/v1/namespaces",
        ] {
            let (s, v) = req(&sim, token, "GET", path, None, None).await;
            assert_eq!(s, 401, "{path}: {v}");
            assert_eq!(
                v,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
            );
        }
    }
    // Health endpoints need no token.
    let (s, _) = req(&sim, None, "GET", "/healthz", None, None).await;
    assert_eq!(s, 200);
    // Any authenticated user (no bindings at all) may read discovery and OpenAPI.
    let t = sim.service_account_token("ops", "bot");
    for path in [
        "/api",
        "/api/v1",
        "/apis",
        "/apis/apps",
        "/apis/apps/v1",
        "/version",
        "/openapi/v3",
        "/openapi/v3/apis/apps/v1",
    ] {
        let (s, v) = req(&sim, Some(&t), "GET", path, None, None).await;
        assert_eq!(s, 200, "{path}: {v}");
    }
    // But no resources.
    let (s, _) = req(&sim, Some(&t), "GET", "/api/v1/namespaces", None, None).await;
    assert_eq!(s, 403);
    // The admin token is always allowed, and is what kubeconfig_yaml uses.
    let (s, _) = req(
        &sim,
        Some(&sim.admin_token()),
        "GET",
        "/api/v1/namespaces/kube-system/secrets",
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        sim.kubeconfig_yaml(None)
            .contains(&format!("token: {}", sim.admin_token()))
    );
}

#[tokio::test]
async fn forbidden_messages_are_the_real_servers() {
    let sim = rbac_sim().await;
    namespace(&sim, "coder").await;
    let t = sim.service_account_token("ops", "bot");
    // Named, namespaced, non-core.
    let (s, v) = req(
        &sim,
        Some(&t),
        "PATCH",
        "/apis/apps/v1/namespaces/coder/deployments/coder",
        Some("application/merge-patch+json"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        v,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("deployments.apps \"coder\" is forbidden: User \"{SA}\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"coder\""),
            "reason": "Forbidden",
            "details": {"name": "coder", "group": "apps", "kind": "deployments"},
            "code": 403})
    );
    // Cluster-wide list.
    let (s, v) = req(
        &sim,
        Some(&t),
        "GET",
        "/apis/apps/v1/deployments",
        None,
        None,
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        forbidden_message(&v),
        format!(
            "deployments.apps is forbidden: User \"{SA}\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        )
    );
    assert_eq!(
        v["details"],
        json!({"group": "apps", "kind": "deployments"})
    );
    // Watch.
    let (s, v) = req(
        &sim,
        Some(&t),
        "GET",
        "/apis/apps/v1/deployments?watch=true",
        None,
        None,
    )
    .await;
    assert_eq!(s, 403);
    assert!(forbidden_message(&v).contains("cannot watch resource \"deployments\""));
    // Core group: empty group, no group in details.
    let (s, v) = req(
        &sim,
        Some(&t),
        "GET",
        "/api/v1/namespaces/coder/secrets/x",
        None,
        None,
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        forbidden_message(&v),
        format!(
            "secrets \"x\" is forbidden: User \"{SA}\" cannot get resource \"secrets\" in API group \"\" in the namespace \"coder\""
        )
    );
    assert_eq!(v["details"], json!({"name": "x", "kind": "secrets"}));
    // Subresource: the combined resource in the message, the resource in details.
    let (s, v) = req(
        &sim,
        Some(&t),
        "PATCH",
        "/apis/apps/v1/namespaces/coder/deployments/coder/status",
        Some("application/merge-patch+json"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        forbidden_message(&v),
        format!(
            "deployments.apps \"coder\" is forbidden: User \"{SA}\" cannot patch resource \"deployments/status\" in API group \"apps\" in the namespace \"coder\""
        )
    );
    // Cluster-scoped named.
    let (s, v) = req(
        &sim,
        Some(&t),
        "DELETE",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/x",
        None,
        None,
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        forbidden_message(&v),
        format!(
            "clusterroles.rbac.authorization.k8s.io \"x\" is forbidden: User \"{SA}\" cannot delete resource \"clusterroles\" in API group \"rbac.authorization.k8s.io\" at the cluster scope"
        )
    );
    // A namespace is authorized in its own namespace (as the real RequestInfoFactory does).
    let (s, v) = req(
        &sim,
        Some(&t),
        "DELETE",
        "/api/v1/namespaces/coder",
        None,
        None,
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(
        forbidden_message(&v),
        format!(
            "namespaces \"coder\" is forbidden: User \"{SA}\" cannot delete resource \"namespaces\" in API group \"\" in the namespace \"coder\""
        )
    );
    // A binding to a missing role adds the RBAC reason.
    binding(
        &sim,
        "coder",
        "dangling",
        "Role",
        "missing",
        json!([sa_subject("ops", "bot")]),
    )
    .await;
    let (_, v) = req(
        &sim,
        Some(&t),
        "GET",
        "/api/v1/namespaces/coder/secrets/x",
        None,
        None,
    )
    .await;
    assert!(
        forbidden_message(&v).ends_with(
            "in the namespace \"coder\": RBAC: role.rbac.authorization.k8s.io \"missing\" not found"
        ),
        "{v}"
    );
    // Denials are counted with outcome 403.
    let c = sim.counters();
    assert!(
        c.entries()
            .iter()
            .any(|(v, r, o, n)| v == "patch" && r == "deployments" && o == "403" && *n == 1),
        "{:?}",
        c.entries()
    );
}

/// (method, path, content type, body, allowed).
type Case = (
    &'static str,
    String,
    Option<&'static str>,
    Option<Value>,
    bool,
);

#[tokio::test]
async fn verbs_are_checked_one_by_one() {
    let sim = rbac_sim().await;
    namespace(&sim, "coder").await;
    let t = sim.service_account_token("ops", "bot");
    role(
        &sim,
        "coder",
        "cm-reader",
        json!([rule(&[""], &["configmaps"], &["get", "list", "watch"])]),
    )
    .await;
    binding(
        &sim,
        "coder",
        "cm-reader",
        "Role",
        "cm-reader",
        json!([sa_subject("ops", "bot")]),
    )
    .await;
    admin_create(
        &sim,
        "/api/v1/namespaces/coder/configmaps",
        cm("a", json!({"k": "v"})),
    )
    .await;
    let base = "/api/v1/namespaces/coder/configmaps";
    let cases: Vec<Case> = vec![
        ("GET", format!("{base}/a"), None, None, true),
        ("GET", base.to_string(), None, None, true),
        (
            "GET",
            format!("{base}?watch=true&timeoutSeconds=1"),
            None,
            None,
            true,
        ),
        (
            "POST",
            base.to_string(),
            None,
            Some(cm("b", json!({}))),
            false,
        ),
        (
            "PUT",
            format!("{base}/a"),
            None,
            Some(cm("a", json!({"k": "w"}))),
            false,
        ),
        (
            "PATCH",
            format!("{base}/a"),
            Some("application/merge-patch+json"),
            Some(json!({"data": {"k": "x"}})),
            false,
        ),
        ("DELETE", format!("{base}/a"), None, None, false),
        ("DELETE", base.to_string(), None, None, false),
        // Another namespace: the Role does not reach it.
        (
            "GET",
            "/api/v1/namespaces/default/configmaps".to_string(),
            None,
            None,
            false,
        ),
        // Cluster-wide list needs a ClusterRoleBinding.
        ("GET", "/api/v1/configmaps".to_string(), None, None, false),
        // Another resource.
        (
            "GET",
            "/api/v1/namespaces/coder/secrets".to_string(),
            None,
            None,
            false,
        ),
    ];
    for (m, path, ct, body, allowed) in &cases {
        let (s, v) = req(&sim, Some(&t), m, path, *ct, body.clone()).await;
        if *allowed {
            assert_eq!(s, 200, "{m} {path}: {v}");
        } else {
            assert_eq!(s, 403, "{m} {path}: {v}");
        }
    }
    // Grant the writes: now each succeeds (and the expected verb is the one checked).
    role(
        &sim,
        "coder",
        "cm-writer",
        json!([rule(
            &[""],
            &["configmaps"],
            &["create", "update", "patch", "delete", "deletecollection"]
        )]),
    )
    .await;
    binding(
        &sim,
        "coder",
        "cm-writer",
        "Role",
        "cm-writer",
        json!([sa_subject("ops", "bot")]),
    )
    .await;
    let (s, v) = req(&sim, Some(&t), "POST", base, None, Some(cm("b", json!({})))).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = req(
        &sim,
        Some(&t),
        "PATCH",
        &format!("{base}/a"),
        Some("application/merge-patch+json"),
        Some(json!({"data": {"k": "x"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = req(&sim, Some(&t), "DELETE", &format!("{base}/a"), None, None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = req(&sim, Some(&t), "DELETE", base, None, None).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn resource_names_limit_get_update_patch_delete_but_never_create() {
    let sim = rbac_sim().await;
    namespace(&sim, "ops").await;
    let t = sim.service_account_token("ops", "bot");
    // The chart's Lease Role shape.
    role(
        &sim,
        "ops",
        "lease",
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"], "resourceNames": ["mine"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["mine"], "verbs": ["get", "update", "patch", "delete"]}
        ]),
    )
    .await;
    // A ServiceAccount subject without a namespace defaults to the RoleBinding's.
    binding(
        &sim,
        "ops",
        "lease",
        "Role",
        "lease",
        json!([{"kind": "ServiceAccount", "name": "bot"}]),
    )
    .await;
    let base = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";
    let lease = |n: &str| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n}, "spec": {"holderIdentity": "a"}});
    // A POST create carries no name in its attributes: a resourceNames rule never matches.
    let (s, v) = req(&sim, Some(&t), "POST", base, None, Some(lease("mine"))).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        forbidden_message(&v),
        format!(
            "leases.coordination.k8s.io is forbidden: User \"{SA}\" cannot create resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"ops\""
        )
    );
    admin_create(&sim, base, lease("mine")).await;
    admin_create(&sim, base, lease("other")).await;
    let (s, _) = req(&sim, Some(&t), "GET", &format!("{base}/mine"), None, None).await;
    assert_eq!(s, 200);
    let (s, v) = req(&sim, Some(&t), "GET", &format!("{base}/other"), None, None).await;
    assert_eq!(s, 403);
    assert!(forbidden_message(&v).starts_with("leases.coordination.k8s.io \"other\" is forbidden"));
    let patch = json!({"spec": {"holderIdentity": "b"}});
    let (s, _) = req(
        &sim,
        Some(&t),
        "PATCH",
        &format!("{base}/mine"),
        Some("application/merge-patch+json"),
        Some(patch.clone()),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = req(
        &sim,
        Some(&t),
        "PATCH",
        &format!("{base}/other"),
        Some("application/merge-patch+json"),
        Some(patch),
    )
    .await;
    assert_eq!(s, 403);
    // Lists have no name: denied.
    let (s, _) = req(&sim, Some(&t), "GET", base, None, None).await;
    assert_eq!(s, 403);
    let (s, _) = req(
        &sim,
        Some(&t),
        "DELETE",
        &format!("{base}/other"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = req(
        &sim,
        Some(&t),
        "DELETE",
        &format!("{base}/mine"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    // Server-side apply of a missing object is patch + create; the create attributes carry the
    // name, so the named create rule matches it.
    let (s, v) = req(
        &sim,
        Some(&t),
        "PATCH",
        &format!("{base}/mine?fieldManager=bot"),
        Some("application/apply-patch+yaml"),
        Some(lease("mine")),
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn server_side_apply_that_creates_needs_create() {
    let sim = rbac_sim().await;
    namespace(&sim, "coder").await;
    let t = sim.service_account_token("ops", "bot");
    role(
        &sim,
        "coder",
        "patcher",
        json!([rule(&[""], &["configmaps"], &["get", "patch"])]),
    )
    .await;
    binding(
        &sim,
        "coder",
        "patcher",
        "Role",
        "patcher",
        json!([sa_subject("ops", "bot")]),
    )
    .await;
    let path = "/api/v1/namespaces/coder/configmaps/a?fieldManager=bot";
    let (s, v) = req(
        &sim,
        Some(&t),
        "PATCH",
        path,
        Some("application/apply-patch+yaml"),
        Some(cm("a", json!({"k": "v"}))),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(forbidden_message(&v), "configmaps \"a\" is forbidden: ");
    assert!(
        sim.get_object("v1", "ConfigMap", Some("coder"), "a")
            .is_none()
    );
    // Once it exists, apply is a patch.
    admin_create(
        &sim,
        "/api/v1/namespaces/coder/configmaps",
        cm("a", json!({"k": "v"})),
    )
    .await;
    let (s, v) = req(
        &sim,
        Some(&t),
        "PATCH",
        path,
        Some("application/apply-patch+yaml"),
        Some(cm("a", json!({"k2": "w"}))),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn subresources_are_separate_and_star_slash_matches_them() {
    let sim = rbac_sim().await;
    namespace(&sim, "coder").await;
    let t = sim.service_account_token("ops", "bot");
    admin_create(
        &sim,
        "/apis/apps/v1/namespaces/coder/deployments",
        deployment("web", "nginx"),
    )
    .await;
    role(
        &sim,
        "coder",
        "status-only",
        json!([rule(&["apps"], &["deployments/status"], &["get", "patch"])]),
    )
    .await;
    binding(
        &sim,
        "coder",
        "status-only",
        "Role",
        "status-only",
        json!([sa_subject("ops", "bot")]),
    )
    .await;
    let base = "/apis/apps/v1/namespaces/coder/deployments/web";
    let (s, _) = req(&sim, Some(&t), "GET", &format!("{base}/status"), None, None).await;
    assert_eq!(s, 200);
    let (s, _) = req(&sim, Some(&t), "GET", base, None, None).await;
    assert_eq!(s, 403);
    let (s, _) = req(
        &sim,
        Some(&t),
        "PATCH",
        &format!("{base}/status"),
        Some("application/merge-patch+json"),
        Some(json!({"status": {"observedGeneration": 1}})),
    )
    .await;
    assert_eq!(s, 200);
    // `deployments` alone does not cover /status; `*/status` covers every resource's status.
    let (s, _) = req(
        &sim,
        Some(&t),
        "GET",
        "/apis/apps/v1/namespaces/coder/deployments/web/scale",
        None,
        None,
    )
    .await;
    assert_eq!(s, 403);
    role(
        &sim,
        "coder",
        "all-status",
        json!([rule(&["*"], &["*/status"], &["get"])]),
    )
    .await;
    binding(
        &sim,
        "coder",
        "all-status",
        "Role",
        "all-status",
        json!([sa_subject("ops", "bot")]),
    )
    .await;
    let (s, v) = req(&sim, Some(&t), "GET", &format!("{base}/status"), None, None).await;
    assert_eq!(s, 200, "{v}");
    // `/api/v1/namespaces/coder/status` is authorized in namespace `coder`: the Role grants it.
    let (s, v) = req(
        &sim,
        Some(&t),
        "GET",
        "/api/v1/namespaces/coder/status",
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = req(
        &sim,
        Some(&t),
        "GET",
        "/api/v1/namespaces/default/status",
        None,
        None,
    )
    .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn rolebinding_to_clusterrole_grants_in_its_namespace_only() {
    let sim = rbac_sim().await;
    namespace(&sim, "a").await;
    namespace(&sim, "b").await;
    let t = sim.service_account_token("ops", "bot");
    cluster_role(
        &sim,
        "secret-reader",
        json!([rule(&[""], &["secrets"], &["get", "list", "watch"])]),
    )
    .await;
    binding(
        &sim,
        "a",
        "read",
        "ClusterRole",
        "secret-reader",
        json!([sa_subject("ops", "bot")]),
    )
    .await;
    let (s, _) = req(
        &sim,
        Some(&t),
        "GET",
        "/api/v1/namespaces/a/secrets",
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = req(
        &sim,
        Some(&t),
        "GET",
        "/api/v1/namespaces/b/secrets",
        None,
        None,
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = req(&sim, Some(&t), "GET", "/api/v1/secrets", None, None).await;
    assert_eq!(s, 403);
    // A ClusterRoleBinding grants everywhere, including cluster-wide lists.
    cluster_binding(
        &sim,
        "read",
        "secret-reader",
        json!([sa_subject("ops", "bot")]),
    )
    .await;
    for path in [
        "/api/v1/namespaces/b/secrets",
        "/api/v1/secrets",
        "/api/v1/secrets?watch=true&timeoutSeconds=1",
    ] {
        let (s, v) = req(&sim, Some(&t), "GET", path, None, None).await;
        assert_eq!(s, 200, "{path}: {v}");
    }
    // Replacing the ClusterRole takes effect at once.
    let (s, v) = req(
        &sim,
        Some(&sim.admin_token()),
        "PUT",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/secret-reader",
        None,
        Some(json!({"metadata": {"name": "secret-reader"}, "rules": [rule(&[""], &["secrets"], &["get"])]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = req(
        &sim,
        Some(&t),
        "GET",
        "/api/v1/namespaces/a/secrets",
        None,
        None,
    )
    .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn wildcards_groups_users_and_metadata_requests() {
    let sim = rbac_sim().await;
    namespace(&sim, "coder").await;
    cluster_role(&sim, "everything", json!([rule(&["*"], &["*"], &["*"])])).await;
    // Group subject: every service account of namespace `ops`.
    cluster_binding(
        &sim,
        "ops-sas",
        "everything",
        json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccounts:ops"}]),
    )
    .await;
    let bot = sim.service_account_token("ops", "bot");
    let other = sim.service_account_token("dev", "bot");
    for path in [
        "/apis/apps/v1/deployments",
        "/api/v1/namespaces/coder/secrets",
        "/api/v1/namespaces",
    ] {
        let (s, _) = req(&sim, Some(&bot), "GET", path, None, None).await;
        assert_eq!(s, 200, "{path}");
        let (s, _) = req(&sim, Some(&other), "GET", path, None, None).await;
        assert_eq!(s, 403, "{path}");
    }
    // User subject, and user_token groups.
    let alice = sim.user_token("alice", &["devs"]);
    let bob = sim.user_token("bob", &[]);
    role(
        &sim,
        "coder",
        "cm",
        json!([rule(&[""], &["configmaps"], &["list"])]),
    )
    .await;
    binding(
        &sim,
        "coder",
        "alice",
        "Role",
        "cm",
        json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]),
    )
    .await;
    let path = "/api/v1/namespaces/coder/configmaps";
    assert_eq!(
        req(&sim, Some(&alice), "GET", path, None, None).await.0,
        200
    );
    let (s, v) = req(&sim, Some(&bob), "GET", path, None, None).await;
    assert_eq!(s, 403);
    assert!(forbidden_message(&v).contains("User \"bob\" cannot list"));
    // A group binding for bob's group "system:authenticated".
    binding(
        &sim,
        "coder",
        "all",
        "Role",
        "cm",
        json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:authenticated"}]),
    )
    .await;
    assert_eq!(req(&sim, Some(&bob), "GET", path, None, None).await.0, 200);
    // Metadata-only requests need the same verbs.
    let resp = http()
        .get(format!(
            "{}/api/v1/namespaces/coder/secrets",
            sim.base_url()
        ))
        .bearer_auth(&alice)
        .header(
            "accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let resp = http()
        .get(format!(
            "{}/api/v1/namespaces/coder/configmaps",
            sim.base_url()
        ))
        .bearer_auth(&alice)
        .header(
            "accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["kind"], "PartialObjectMetadataList", "{v}");
}

#[tokio::test]
async fn a_metadata_name_field_selector_names_a_list() {
    let sim = rbac_sim().await;
    namespace(&sim, "coder").await;
    let t = sim.service_account_token("ops", "bot");
    role(
        &sim,
        "coder",
        "one",
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"], "resourceNames": ["one"]}]),
    )
    .await;
    binding(
        &sim,
        "coder",
        "one",
        "Role",
        "one",
        json!([sa_subject("ops", "bot")]),
    )
    .await;
    let base = "/api/v1/namespaces/coder/secrets";
    let (s, _) = req(&sim, Some(&t), "GET", base, None, None).await;
    assert_eq!(s, 403);
    let (s, v) = req(
        &sim,
        Some(&t),
        "GET",
        &format!("{base}?fieldSelector=metadata.name%3Done"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = req(
        &sim,
        Some(&t),
        "GET",
        &format!("{base}?fieldSelector=metadata.name%3Dtwo"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 403);
    assert!(forbidden_message(&v).starts_with("secrets \"two\" is forbidden"));
}

#[tokio::test]
async fn kube_client_with_a_service_account_token() {
    let sim = rbac_sim().await;
    namespace(&sim, "coder").await;
    role(
        &sim,
        "coder",
        "cm",
        json!([rule(&[""], &["configmaps"], &["get", "list"])]),
    )
    .await;
    binding(
        &sim,
        "coder",
        "cm",
        "Role",
        "cm",
        json!([sa_subject("ops", "bot")]),
    )
    .await;
    let token = sim.service_account_token("ops", "bot");
    let kubeconfig: kube::config::Kubeconfig =
        serde_saphyr::from_str(&sim.kubeconfig_yaml_with_token(Some("coder"), &token)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let cms: kube::Api<ConfigMap> = kube::Api::default_namespaced(client.clone());
    cms.list(&Default::default()).await.unwrap();
    let secrets: kube::Api<Secret> = kube::Api::default_namespaced(client);
    match secrets.list(&Default::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert_eq!(s.reason, "Forbidden");
            assert_eq!(
                s.message,
                format!(
                    "secrets is forbidden: User \"{SA}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"coder\""
                )
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
}

/// A TLS-terminating proxy in front of the simulator, with a throwaway self-signed certificate
/// (made by `openssl`): kubectl, like every client-go client, sends credentials only over TLS.
/// Returns the `https://` URL.
async fn tls_proxy(sim: &SimHandle, dir: &std::path::Path) -> String {
    let (cert, key) = (dir.join("cert.der"), dir.join("key.der"));
    let pem = dir.join("key.pem");
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&pem)
        .args(["-outform", "DER", "-out"])
        .arg(&cert)
        .output()
        .expect("openssl is required for the kubectl RBAC test")
        .status
        .success();
    assert!(ok, "openssl req failed");
    let ok = Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&key)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl pkcs8 failed");
    let cert = tokio_rustls::rustls::pki_types::CertificateDer::from(std::fs::read(&cert).unwrap());
    let key =
        tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(std::fs::read(&key).unwrap().into());
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = sim.base_url().trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    format!("https://127.0.0.1:{port}")
}

#[tokio::test]
async fn kubectl_with_a_service_account_kubeconfig_gets_the_real_message() {
    const KUBECTL: &str = "/usr/bin/kubectl";
    assert!(
        std::path::Path::new(KUBECTL).exists(),
        "kubectl is required at {KUBECTL} for this test suite"
    );
    let sim = rbac_sim().await;
    namespace(&sim, "coder").await;
    role(
        &sim,
        "coder",
        "cm",
        json!([rule(&[""], &["configmaps"], &["get", "list"])]),
    )
    .await;
    binding(
        &sim,
        "coder",
        "cm",
        "Role",
        "cm",
        json!([sa_subject("ops", "bot")]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let https = tls_proxy(&sim, dir.path()).await;
    // kubectl over TLS (the proxy's certificate is not verified).
    let tls = |kubeconfig: String| {
        kubeconfig.replace(
            &format!("    server: {}", sim.base_url()),
            &format!("    server: {https}\n    insecure-skip-tls-verify: true"),
        )
    };
    let sa = dir.path().join("sa");
    std::fs::write(
        &sa,
        tls(sim.kubeconfig_yaml_with_token(
            Some("coder"),
            &sim.service_account_token("ops", "bot"),
        )),
    )
    .unwrap();
    let admin = dir.path().join("admin");
    std::fs::write(&admin, tls(sim.kubeconfig_yaml(Some("coder")))).unwrap();
    let cache = dir.path().join("cache");
    let run = move |kc: std::path::PathBuf, args: Vec<&'static str>| {
        let cache = cache.clone();
        tokio::task::spawn_blocking(move || {
            let o = Command::new(KUBECTL)
                .arg("--kubeconfig")
                .arg(&kc)
                .arg("--cache-dir")
                .arg(&cache)
                .args(&args)
                .output()
                .unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
    };
    let (ok, out, err) = run(
        admin.clone(),
        vec!["create", "configmap", "x", "--from-literal=a=b"],
    )
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(sa.clone(), vec!["get", "configmaps"]).await.unwrap();
    assert!(ok, "{out}{err}");
    assert!(out.contains('x'), "{out}");
    let (ok, out, err) = run(sa.clone(), vec!["get", "secrets"]).await.unwrap();
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!(
            "Error from server (Forbidden): secrets is forbidden: User \"{SA}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"coder\""
        )),
        "{err}"
    );
    let (ok, out, err) = run(sa, vec!["delete", "configmap", "x"]).await.unwrap();
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!(
            "Error from server (Forbidden): configmaps \"x\" is forbidden: User \"{SA}\" cannot delete resource \"configmaps\" in API group \"\" in the namespace \"coder\""
        )),
        "{err}"
    );
    // With no token kubectl gets 401.
    let anon = dir.path().join("anon");
    std::fs::write(
        &anon,
        tls(sim.kubeconfig_yaml(Some("coder")))
            .replace(&format!("token: {}", sim.admin_token()), "token: wrong"),
    )
    .unwrap();
    let (ok, _, err) = run(anon, vec!["get", "configmaps"]).await.unwrap();
    assert!(!ok);
    assert!(
        err.contains("You must be logged in to the server") || err.contains("Unauthorized"),
        "{err}"
    );
}
