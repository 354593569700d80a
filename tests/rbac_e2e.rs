//! The real operator binary with exactly the chart's RBAC, against the Kubernetes API simulator
//! with RBAC enforced: the ServiceAccount, ClusterRole and ClusterRoleBinding of
//! `deploy/operator.yaml` (the chart's default rendering) suffice for a full convergence against
//! Keycloak; removing one rule gives a clear `Forbidden` condition, not a crash, and restoring it
//! recovers. With leader election, the chart's Lease Role (`lease-rbac.yaml`, whose rule for the
//! Lease uses `resourceNames`) suffices too. With `watchNamespaces`, the chart's Roles in the
//! watched namespace suffice, and the operator's account can read no other namespace's Secrets.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use oidc_refresh_operator::crd::OidcRefreshPolicy;
use oidc_refresh_operator::sandbox::{self, NAMESPACE, SandboxProvider};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_oidc-refresh-operator");
const OPERATOR_NS: &str = "oidc-refresh-operator";
const OPERATOR_SA: &str = "oidc-refresh-operator";
const DEPLOY: &str = include_str!("../deploy/operator.yaml");
/// Upper bound for recovering after a rule is restored: the policies' interval (30s, the
/// minimum) plus its jitter and margin.
const RECOVERY: Duration = Duration::from_secs(60);
const LEASE_RBAC_TEMPLATE: &str =
    include_str!("../charts/oidc-refresh-operator/templates/lease-rbac.yaml");

/// Creates (or, with `replace`, replaces) an object of any kind as the admin.
async fn put_object(client: &Client, obj: &Value, replace: bool) {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let kind = obj["kind"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let name = obj["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let dynamic: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    if replace {
        let mut current = api.get(name).await.unwrap();
        current.data = dynamic.data;
        api.replace(name, &PostParams::default(), &current)
            .await
            .unwrap_or_else(|e| panic!("replace {kind} {name}: {e}"));
    } else {
        api.create(&PostParams::default(), &dynamic)
            .await
            .unwrap_or_else(|e| panic!("create {kind} {name}: {e}"));
    }
}

/// The documents of `deploy/operator.yaml` the install creates before the operator runs: the
/// Namespace, the ServiceAccount and the RBAC objects (not the Deployment and Service).
fn chart_rbac() -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(DEPLOY).expect("deploy/operator.yaml");
    let wanted = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let objs: Vec<Value> = docs
        .into_iter()
        .filter(|d| d["kind"].as_str().is_some_and(|k| wanted.contains(&k)))
        .collect();
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding"
        ],
        "deploy/operator.yaml changed shape; update this test"
    );
    objs
}

/// The chart's Lease Role and RoleBinding (`templates/lease-rbac.yaml`) for release and namespace
/// `oidc-refresh-operator`: the template with its includes substituted and the label lines dropped.
fn chart_lease_rbac() -> Vec<Value> {
    let rendered: String = LEASE_RBAC_TEMPLATE
        .lines()
        .filter(|l| !l.trim_start().starts_with("{{-") && l.trim() != "labels:")
        .map(|l| {
            l.replace("{{ include \"oro.fullname\" . }}", OPERATOR_SA)
                .replace("{{ include \"oro.serviceAccountName\" . }}", OPERATOR_SA)
                .replace("{{ .Release.Namespace }}", OPERATOR_NS)
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!rendered.contains("{{"), "unrendered template:\n{rendered}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&rendered).expect("lease-rbac.yaml");
    let docs: Vec<Value> = docs.into_iter().filter(|d| d.is_object()).collect();
    assert_eq!(docs.len(), 2, "{rendered}");
    assert_eq!(docs[0]["kind"], "Role");
    assert_eq!(
        docs[0]["rules"][1]["resourceNames"],
        json!(["oidc-refresh-operator"])
    );
    docs
}

/// The operator process; killed when dropped.
struct Operator {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Operator {
    fn start(sim: &kube_sim::SimHandle, extra: &[&str]) -> Operator {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let token = sim.service_account_token(OPERATOR_NS, OPERATOR_SA);
        std::fs::write(
            &kubeconfig,
            sim.kubeconfig_yaml_with_token(Some(OPERATOR_NS), &token),
        )
        .unwrap();
        let port = free_port();
        let log = dir.path().join("operator.log");
        let child = Command::new(BIN)
            // The identity-provider simulator listens on loopback over plain http.
            .args([
                "run",
                "--allow-insecure-http",
                "--admin-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Operator {
            child,
            port,
            _dir: dir,
            log,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asserts the process is running and `/healthz` answers 200.
    async fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the operator exited:\n{}",
            self.logs()
        );
        let started = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{}/healthz", self.port)).await {
                assert_eq!(r.status().as_u16(), 200, "{}", self.logs());
                return;
            }
            assert!(started.elapsed() < WAIT, "admin server not up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chart's RBAC with `watchNamespaces: [coder]`: the ClusterRole's rules in a Role of that
/// namespace, bound by a RoleBinding, and nothing cluster-wide (`templates/rbac.yaml` renders both
/// modes from the same rules, and tests/chart checks that the rules are the same).
fn chart_namespaced_rbac() -> Vec<Value> {
    chart_rbac()
        .into_iter()
        .map(|mut o| {
            match o["kind"].as_str() {
                Some("ClusterRole") => o["kind"] = json!("Role"),
                Some("ClusterRoleBinding") => {
                    o["kind"] = json!("RoleBinding");
                    o["roleRef"]["kind"] = json!("Role");
                }
                _ => return o,
            }
            o["metadata"]["namespace"] = json!(NAMESPACE);
            o
        })
        .collect()
}

/// A simulator with RBAC on, the CRD, the namespaces, the chart's RBAC, Keycloak with its Secret,
/// the Coder Deployment and a policy. Returns the simulator, the admin client and the IdP.
async fn install(
    with_lease_rbac: bool,
    interval: &str,
) -> (kube_sim::SimHandle, Client, sandbox::IdpSetup) {
    install_with(chart_rbac(), with_lease_rbac, interval).await
}

/// [`install`] with the RBAC objects `rbac`.
async fn install_with(
    rbac: Vec<Value>,
    with_lease_rbac: bool,
    interval: &str,
) -> (kube_sim::SimHandle, Client, sandbox::IdpSetup) {
    let (sim, admin) = common::rbac_cluster().await;
    put_object(
        &admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        false,
    )
    .await;
    for obj in rbac {
        put_object(&admin, &obj, false).await;
    }
    if with_lease_rbac {
        for obj in chart_lease_rbac() {
            put_object(&admin, &obj, false).await;
        }
    }
    let policies: Api<OidcRefreshPolicy> = Api::namespaced(admin.clone(), NAMESPACE);
    let started = Instant::now();
    while policies.list(&ListParams::default()).await.is_err() {
        assert!(started.elapsed() < WAIT, "the CRD was not served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let idp = sandbox::start_idp(SandboxProvider::Keycloak).await.unwrap();
    let (secret, data) = idp.secret.clone().unwrap();
    sandbox::create_secret(&admin, &secret, &data)
        .await
        .unwrap();
    // Coder also loads a ConfigMap with envFrom: before writing the two env entries, the operator
    // checks its keys (the chart's `get` on configmaps).
    put_object(
        &admin,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "coder-extra", "namespace": NAMESPACE},
            "data": {"CODER_TELEMETRY_ENABLE": "false"}}),
        false,
    )
    .await;
    let mut coder = sandbox::coder_deployment("coder", json!([]));
    coder["spec"]["template"]["spec"]["containers"][0]["envFrom"] =
        json!([{"configMapRef": {"name": "coder-extra"}}]);
    sandbox::create_coder(&admin, coder).await.unwrap();
    let mut policy = sandbox::example_policy("coder", idp.provider.clone());
    policy["spec"]["refreshTokens"] = sandbox::example_refresh_tokens(SandboxProvider::Keycloak);
    policy["spec"]["interval"] = json!(interval);
    sandbox::create_policy(&admin, policy).await.unwrap();
    (sim, admin, idp)
}

/// The requests the simulator refused (verb, resource, outcome, count).
fn refused(sim: &kube_sim::SimHandle) -> Vec<(String, String, String, u64)> {
    sim.counters()
        .entries()
        .into_iter()
        .filter(|(_, _, o, _)| o == "401" || o == "403")
        .collect()
}

/// Asserts the full convergence: IdP configured, Deployment patched and rolled out, status and
/// Events written.
async fn assert_converged(admin: &Client, idp: &sandbox::IdpSetup, op: &Operator) {
    let p = sandbox::wait_policy(admin, "coder", WAIT, sandbox::is_ready)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\noperator log:\n{}", op.logs()));
    for t in [
        "IdentityProviderConfigured",
        "CoderConfigured",
        "CoderRolledOut",
    ] {
        assert_eq!(cond(&p, t).0, "True", "{t}: {:?}", cond(&p, t));
    }
    let (scopes, params) = sandbox::coder_env(admin, "coder").await.unwrap();
    assert!(
        scopes
            .as_deref()
            .is_some_and(|s| s.contains("offline_access")),
        "{scopes:?}"
    );
    assert!(params.is_some());
    let client: std::collections::BTreeMap<String, String> =
        idp.sim.describe().into_iter().collect();
    assert_eq!(
        client.get("use.refresh.tokens").map(String::as_str),
        Some("true"),
        "{client:?}"
    );
    let events = sandbox::policy_events(admin, "coder").await.unwrap();
    assert!(
        events
            .iter()
            .any(|(_, r, _)| r == "IdentityProviderUpdated"),
        "{events:?}"
    );
}

#[tokio::test]
async fn operator_converges_with_exactly_the_charts_rbac() {
    let (sim, admin, idp) = install(false, "10m").await;
    let mut op = Operator::start(&sim, &[]);
    assert_converged(&admin, &idp, &op).await;
    op.assert_alive().await;
    // Nothing the operator asked for was refused: the chart's RBAC covers every request.
    assert_eq!(refused(&sim), vec![], "operator log:\n{}", op.logs());
    // And it really ran as the ServiceAccount: the cluster-wide Deployment watch was served.
    assert!(sim.counters().get("watch", "deployments") > 0);
    // The envFrom ConfigMap was read (and allowed).
    assert!(sim.counters().get("get", "configmaps") > 0);
    drop(op);
    idp.sim.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn operator_converges_with_the_charts_roles_in_the_watched_namespace_only() {
    let (sim, admin, idp) = install_with(chart_namespaced_rbac(), false, "10m").await;
    put_object(
        &admin,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}}),
        false,
    )
    .await;
    let mut op = Operator::start(&sim, &["--watch-namespaces", NAMESPACE]);
    assert_converged(&admin, &idp, &op).await;
    op.assert_alive().await;
    assert_eq!(refused(&sim), vec![], "operator log:\n{}", op.logs());
    // The operator's account reads Secrets of the watched namespace only.
    let operator = client_with_token(&sim, &sim.service_account_token(OPERATOR_NS, OPERATOR_SA));
    let lp = ListParams::default();
    let secrets = |ns: Option<&str>| -> Api<k8s_openapi::api::core::v1::Secret> {
        match ns {
            Some(ns) => Api::namespaced(operator.clone(), ns),
            None => Api::all(operator.clone()),
        }
    };
    assert!(secrets(Some(NAMESPACE)).list_metadata(&lp).await.is_ok());
    for ns in [None, Some("elsewhere"), Some(OPERATOR_NS)] {
        match secrets(ns).list_metadata(&lp).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{ns:?}: {s:?}"),
            other => panic!("{ns:?}: Secrets readable: {other:?}"),
        }
    }
    drop(op);
    idp.sim.shutdown().await;
    sim.shutdown().await;
}

/// Converges, then takes verbs away from one rule of the chart's ClusterRole (`resource` keeps
/// only `verbs_left`) and changes the policy (one more scope, which needs a Deployment write):
/// the policy must show `condition=False`, reason `Forbidden`, with a message naming
/// `verb`, the resource and the namespace, while the operator stays up. Then the rule is
/// restored and the policy must become Ready by itself, with the new scope in the Deployment.
/// Prints the observed message and timings.
async fn forbid_then_restore(resource: &str, verbs_left: Value, condition: &str, verb: &str) {
    let (sim, admin, idp) = install(false, "30s").await;
    let mut op = Operator::start(&sim, &[]);
    assert_converged(&admin, &idp, &op).await;

    let original = chart_rbac()
        .into_iter()
        .find(|o| o["kind"] == "ClusterRole")
        .unwrap();
    let mut reduced = original.clone();
    for rule in reduced["rules"].as_array_mut().unwrap() {
        if rule["resources"] == json!([resource]) {
            rule["verbs"] = verbs_left.clone();
        }
    }
    assert_ne!(reduced, original, "no rule for {resource}");
    put_object(&admin, &reduced, true).await;

    let policies: Api<OidcRefreshPolicy> = Api::namespaced(admin.clone(), NAMESPACE);
    policies
        .patch(
            "coder",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"coder": {"scopes": ["groups", "extra"]}}})),
        )
        .await
        .unwrap();
    let p = sandbox::wait_policy(&admin, "coder", WAIT, |p| {
        p.status.as_ref().is_some_and(|s| {
            s.observed_generation == p.metadata.generation
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == condition && c.status == "False" && c.reason == "Forbidden")
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\noperator log:\n{}", op.logs()));
    let (_, _, message) = cond(&p, condition);
    eprintln!("observed {condition} message: {message}");
    let plural = resource.rsplit('/').next().unwrap();
    assert!(
        message.contains(&format!("cannot {verb} resource \"{plural}\""))
            && message.contains(&format!("in the namespace \"{NAMESPACE}\"")),
        "{message}"
    );
    assert_eq!(cond(&p, "Ready").0, "False", "{p:?}");
    // The Deployment did not get the new scope; the operator is up and healthy.
    let (scopes, _) = sandbox::coder_env(&admin, "coder").await.unwrap();
    assert!(!scopes.unwrap_or_default().contains("extra"));
    op.assert_alive().await;
    assert!(
        refused(&sim)
            .iter()
            .any(|(v, r, o, _)| v == verb && r == plural && o == "403"),
        "{:?}",
        refused(&sim)
    );
    // No hot loop: the refused request is not retried in a tight loop.
    let count = |sim: &kube_sim::SimHandle| {
        refused(sim)
            .iter()
            .filter(|(v, r, _, _)| v == verb && r == plural)
            .map(|e| e.3)
            .sum::<u64>()
    };
    let before = count(&sim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let more = count(&sim) - before;
    eprintln!("refused {verb} {plural}: {before} until the condition, {more} more in the next 3s");
    assert!(more <= 3, "{more} refused requests in 3s");
    op.assert_alive().await;

    // Restore the rule: the operator recovers by itself. Granting a permission changes none of
    // the objects it watches, so the retry comes at the policy's interval (30s here) at the latest.
    put_object(&admin, &original, true).await;
    let restored = Instant::now();
    let p = sandbox::wait_policy(&admin, "coder", RECOVERY, sandbox::is_ready)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\noperator log:\n{}", op.logs()));
    eprintln!(
        "{condition}: Ready again {:?} after the rule was restored",
        restored.elapsed()
    );
    assert_eq!(cond(&p, condition).0, "True");
    let (scopes, _) = sandbox::coder_env(&admin, "coder").await.unwrap();
    assert!(scopes.unwrap_or_default().contains("extra"));
    op.assert_alive().await;
    drop(op);
    idp.sim.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn removing_patch_on_deployments_gives_a_forbidden_condition_and_restoring_it_recovers() {
    forbid_then_restore(
        "deployments",
        json!(["get", "list", "watch"]),
        "CoderConfigured",
        "patch",
    )
    .await;
}

#[tokio::test]
async fn removing_get_on_deployments_gives_a_forbidden_condition_and_restoring_it_recovers() {
    forbid_then_restore(
        "deployments",
        json!(["list", "watch", "patch"]),
        "CoderConfigured",
        "get",
    )
    .await;
}

#[tokio::test]
async fn removing_get_on_secrets_gives_a_forbidden_condition_and_restoring_it_recovers() {
    // The metadata watch of Secrets keeps working; reading the named Secret does not.
    forbid_then_restore(
        "secrets",
        json!(["list", "watch"]),
        "IdentityProviderConfigured",
        "get",
    )
    .await;
}

#[tokio::test]
async fn leader_election_works_with_the_charts_lease_role() {
    let (sim, admin, idp) = install(true, "10m").await;
    let mut op = Operator::start(&sim, &["--leader-elect", "--lease-namespace", OPERATOR_NS]);
    assert_converged(&admin, &idp, &op).await;
    op.assert_alive().await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), OPERATOR_NS);
    let lease = leases.get("oidc-refresh-operator").await.unwrap();
    assert!(
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .is_some_and(|h| !h.is_empty()),
        "no holder"
    );
    assert_eq!(refused(&sim), vec![], "operator log:\n{}", op.logs());
    drop(op);
    idp.sim.shutdown().await;
    sim.shutdown().await;
}
