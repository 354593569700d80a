//! End to end: another tool that manages the same identity-provider object from a custom
//! resource (the Keycloak operator's `KeycloakOIDCClient`, Azure Service Operator's Entra
//! `Application`) is a conflict the policy reports, not a fight. Through the Kubernetes API
//! simulator (CRDs registered or not, RBAC enforced or not) and the identity-provider
//! simulators.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use oidc_refresh_operator::crd::OidcRefreshPolicy;
use oidc_refresh_operator::sandbox::{self, IdpSim, NAMESPACE, Sandbox, SandboxProvider};
use serde_json::{Value, json};

const KEYCLOAK_CRD: &str =
    include_str!("fixtures/other-tools/keycloakoidcclients.k8s.keycloak.org.yaml");
const ASO_CRD: &str = include_str!("fixtures/other-tools/applications.entra.azure.com.yaml");
const DEPLOY: &str = include_str!("../deploy/operator.yaml");
const KEYCLOAK_GV: &str = "/apis/k8s.keycloak.org/v2alpha1";
/// Where the other tools' resources live in these tests (not the policy's namespace).
const TOOLS_NS: &str = "identity";

/// Registers a CRD and waits until its group-version is discoverable.
async fn install_crd(client: &Client, yaml: &str) {
    let crd: CustomResourceDefinition = serde_saphyr::from_str(yaml).unwrap();
    let group_version = format!("{}/{}", crd.spec.group, crd.spec.versions[0].name);
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let started = Instant::now();
    while client
        .list_api_group_resources(&group_version)
        .await
        .is_err()
    {
        assert!(started.elapsed() < WAIT, "{group_version} was not served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn api_for(client: &Client, obj: &Value) -> Api<DynamicObject> {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().unwrap());
    let ns = obj["metadata"]["namespace"].as_str().unwrap();
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// Creates a namespaced object of any kind (its namespace too, if missing).
async fn create(client: &Client, obj: Value) {
    let ns = obj["metadata"]["namespace"].as_str().unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    if namespaces.get_opt(ns).await.unwrap().is_none() {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let dynamic: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    api_for(client, &obj)
        .create(&PostParams::default(), &dynamic)
        .await
        .unwrap_or_else(|e| panic!("create {obj}: {e}"));
}

fn keycloak_client(name: &str, realm: &str) -> Value {
    json!({
        "apiVersion": "k8s.keycloak.org/v2alpha1",
        "kind": "KeycloakOIDCClient",
        "metadata": {"namespace": TOOLS_NS, "name": name},
        "spec": {"keycloakCRName": "keycloak", "realm": realm, "client": {
            "enabled": true,
            "redirectUris": ["https://coder.example.com/api/v2/users/oidc/callback"],
            "loginFlows": ["STANDARD"],
            "auth": {"method": "client-jwt"}
        }}
    })
}

fn aso_application(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "entra.azure.com/v1",
        "kind": "Application",
        "metadata": {"namespace": TOOLS_NS, "name": name},
        "spec": spec
    })
}

/// The Coder Deployment, the credentials Secret and the policy, created with `client`.
async fn create_policy(client: &Client, provider: SandboxProvider, idp: &sandbox::IdpSetup) {
    let (name, data) = idp.secret.clone().unwrap();
    sandbox::create_secret(client, &name, &data).await.unwrap();
    sandbox::create_coder(client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let mut p = sandbox::example_policy("coder", idp.provider.clone());
    p["spec"]["refreshTokens"] = sandbox::example_refresh_tokens(provider);
    sandbox::create_policy(client, p).await.unwrap();
}

/// A cluster with the Keycloak operator's CRD and the Keycloak simulator: (sandbox, simulator,
/// realm, clientId of the sandbox policy).
async fn keycloak_with_crd() -> (Sandbox, sandbox::IdpSetup, String, String) {
    let sb = cluster().await;
    install_crd(&sb.client, KEYCLOAK_CRD).await;
    let idp = sandbox::start_idp(SandboxProvider::Keycloak).await.unwrap();
    let (realm, client_id) = keycloak_target(&idp);
    (sb, idp, realm, client_id)
}

/// Realm and clientId of the sandbox Keycloak policy.
fn keycloak_target(idp: &sandbox::IdpSetup) -> (String, String) {
    let k = &idp.provider["keycloak"];
    (
        k["realm"].as_str().unwrap().to_string(),
        k["clientId"].as_str().unwrap().to_string(),
    )
}

fn warnings(p: &OidcRefreshPolicy) -> Vec<(String, String)> {
    let s = p.status.as_ref().unwrap();
    s.warnings
        .iter()
        .map(|w| (w.reason.clone(), w.message.clone()))
        .collect()
}

/// The Keycloak operator's group-version was asked for once (404), its resources never listed.
fn assert_one_discovery_and_no_list(sim: &kube_sim::SimHandle) {
    let counters = sim.counters();
    assert_eq!(
        counters.get("get", KEYCLOAK_GV),
        1,
        "{:?}",
        counters.entries()
    );
    assert_eq!(counters.get("list", "keycloakoidcclients"), 0);
}

#[tokio::test]
async fn without_the_crd_a_policy_converges_with_one_cached_discovery_and_no_list() {
    let sb = cluster().await;
    let idp = sandbox::start_idp(SandboxProvider::Keycloak).await.unwrap();
    create_policy(&sb.client, SandboxProvider::Keycloak, &idp).await;
    let p = wait_ready(&sb.client, "coder").await;
    assert!(warnings(&p).is_empty(), "{:?}", warnings(&p));
    assert_one_discovery_and_no_list(&sb.kube);

    // A new generation that needs another identity-provider write: the discovery answer is
    // reused, nothing else is asked.
    let api: Api<OidcRefreshPolicy> = Api::namespaced(sb.client.clone(), NAMESPACE);
    api.patch(
        "coder",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"refreshTokens": {"idleTimeout": "240h"}}})),
    )
    .await
    .unwrap();
    let p = sandbox::wait_policy(&sb.client, "coder", WAIT, |p| {
        sandbox::is_ready(p)
            && p.status.as_ref().unwrap().observed_generation == p.metadata.generation
            && p.metadata.generation == Some(2)
    })
    .await
    .unwrap();
    assert_eq!(
        p.status
            .unwrap()
            .identity_provider
            .unwrap()
            .idle_timeout
            .as_deref(),
        Some("240h")
    );
    assert_one_discovery_and_no_list(&sb.kube);
    sb.stop().await;
    idp.sim.shutdown().await;
}

#[tokio::test]
async fn keycloak_operator_clients_of_other_realms_or_client_ids_do_not_block() {
    let (sb, idp, realm, client_id) = keycloak_with_crd().await;
    create(&sb.client, keycloak_client(&client_id, "another-realm")).await;
    create(&sb.client, keycloak_client("grafana", &realm)).await;
    create_policy(&sb.client, SandboxProvider::Keycloak, &idp).await;
    let p = wait_ready(&sb.client, "coder").await;
    assert!(warnings(&p).is_empty(), "{:?}", warnings(&p));
    let counters = sb.kube.counters();
    assert_eq!(counters.get("list", "keycloakoidcclients"), 1);
    assert!(idp.sim.writes() > 0);
    sb.stop().await;
    idp.sim.shutdown().await;
}

#[tokio::test]
async fn a_client_the_keycloak_operator_manages_stalls_the_policy_without_a_write() {
    let (sb, idp, realm, client_id) = keycloak_with_crd().await;
    create(&sb.client, keycloak_client(&client_id, &realm)).await;
    create_policy(&sb.client, SandboxProvider::Keycloak, &idp).await;
    let p = wait_reason(
        &sb.client,
        "coder",
        "IdentityProviderConfigured",
        "False",
        "ManagedByKeycloakOperator",
    )
    .await;
    assert!(sandbox::is_stalled(&p));
    let (_, _, message) = cond(&p, "IdentityProviderConfigured");
    for part in [
        format!("KeycloakOIDCClient (k8s.keycloak.org/v2alpha1) {TOOLS_NS}/{client_id}"),
        "add offline_access to optionalClientScopes".to_string(),
        "\"use.refresh.tokens\": \"true\"".to_string(),
        "has no field for client scopes".to_string(),
    ] {
        assert!(message.contains(&part), "{part:?} not in {message}");
    }
    assert_eq!(
        idp.sim.writes(),
        0,
        "the identity provider received no write"
    );
    let (scopes, _) = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    assert_eq!(scopes, None, "Coder waits for the identity provider");

    // The Keycloak operator no longer manages the client: the next pass configures it.
    api_for(&sb.client, &keycloak_client(&client_id, &realm))
        .delete(&client_id, &DeleteParams::default())
        .await
        .unwrap();
    poke_policy(&sb.client, "coder", "released").await;
    wait_ready(&sb.client, "coder").await;
    assert!(idp.sim.writes() > 0);
    sb.stop().await;
    idp.sim.shutdown().await;
}

/// The Entra ID sandbox app (it has `isFallbackPublicClient: true`, which the operator turns
/// off): its object id and display name.
fn entra_app(idp: &sandbox::IdpSetup) -> (String, String) {
    let IdpSim::Entra(sim) = &idp.sim else {
        unreachable!()
    };
    let e = &idp.provider["entraId"];
    let app = sim
        .application(
            e["tenantId"].as_str().unwrap(),
            e["applicationId"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(app["isFallbackPublicClient"], true);
    (
        app["id"].as_str().unwrap().to_string(),
        app["displayName"].as_str().unwrap().to_string(),
    )
}

/// A cluster with Azure Service Operator's CRD and the Entra ID simulator: (sandbox, simulator,
/// object id and display name of the sandbox app).
async fn entra_with_crd() -> (Sandbox, sandbox::IdpSetup, String, String) {
    let sb = cluster().await;
    install_crd(&sb.client, ASO_CRD).await;
    let idp = sandbox::start_idp(SandboxProvider::EntraId).await.unwrap();
    let (object_id, display_name) = entra_app(&idp);
    (sb, idp, object_id, display_name)
}

#[tokio::test]
async fn an_aso_application_that_turns_public_client_flows_on_stalls_the_policy_without_a_write() {
    let (sb, idp, object_id, display_name) = entra_with_crd().await;
    // Another app, and this one (recognised by the object id ASO recorded).
    create(
        &sb.client,
        aso_application(
            "grafana",
            json!({"displayName": "Grafana", "isFallbackPublicClient": true}),
        ),
    )
    .await;
    let mut managed = aso_application(
        "coder-sso",
        json!({"displayName": display_name, "isFallbackPublicClient": true}),
    );
    managed["metadata"]["annotations"] =
        json!({"serviceoperator.azure.com/resource-id": object_id});
    create(&sb.client, managed).await;
    create_policy(&sb.client, SandboxProvider::EntraId, &idp).await;
    let p = wait_reason(
        &sb.client,
        "coder",
        "IdentityProviderConfigured",
        "False",
        "ManagedByAzureServiceOperator",
    )
    .await;
    let (_, _, message) = cond(&p, "IdentityProviderConfigured");
    assert!(
        message.contains(&format!(
            "Application (entra.azure.com/v1) {TOOLS_NS}/coder-sso"
        )) && message.contains("Set spec.isFallbackPublicClient: false"),
        "{message}"
    );
    assert_eq!(
        idp.sim.writes(),
        0,
        "the identity provider received no write"
    );
    sb.stop().await;
    idp.sim.shutdown().await;
}

#[tokio::test]
async fn an_aso_application_that_leaves_public_client_flows_alone_does_not_block() {
    // ASO's Application has no requiredResourceAccess and sends isFallbackPublicClient only when
    // its spec sets it: the operator's changes are not reverted, the policy converges.
    let (sb, idp, _, display_name) = entra_with_crd().await;
    create(
        &sb.client,
        aso_application("coder-sso", json!({"displayName": display_name})),
    )
    .await;
    create_policy(&sb.client, SandboxProvider::EntraId, &idp).await;
    let p = wait_ready(&sb.client, "coder").await;
    assert!(
        !warnings(&p)
            .iter()
            .any(|(r, _)| r == "OtherToolsNotChecked"),
        "{:?}",
        warnings(&p)
    );
    assert_eq!(sb.kube.counters().get("list", "applications"), 1);
    assert!(idp.sim.writes() > 0);
    sb.stop().await;
    idp.sim.shutdown().await;
}

/// The chart's ClusterRole rules without the one for `group`.
fn chart_rules_without(group: &str) -> Value {
    let docs: Vec<Value> = serde_saphyr::from_multiple(DEPLOY).expect("deploy/operator.yaml");
    let role = docs
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let rules: Vec<Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["apiGroups"] != json!([group]))
        .cloned()
        .collect();
    assert_eq!(rules.len() + 1, role["rules"].as_array().unwrap().len());
    Value::Array(rules)
}

#[tokio::test]
async fn a_list_rbac_forbids_is_a_warning_not_a_crash_or_a_loop() {
    let (sim, admin) = common::rbac_cluster().await;
    install_crd(&admin, KEYCLOAK_CRD).await;
    let idp = sandbox::start_idp(SandboxProvider::Keycloak).await.unwrap();
    let (realm, client_id) = keycloak_target(&idp);
    // The Keycloak operator does manage the client, but the operator may not see it.
    create(&admin, keycloak_client(&client_id, &realm)).await;
    // The chart's RBAC without the rule for KeycloakOIDCClients.
    let sa = "oidc-refresh-operator";
    create(
        &admin,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"namespace": sa, "name": sa}}),
    )
    .await;
    let rbac = |kind: &str, body: Value| {
        let mut obj = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": sa}});
        obj.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        serde_json::from_value::<DynamicObject>(obj).unwrap()
    };
    let gvk = |kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "rbac.authorization.k8s.io",
            "v1",
            kind,
        ))
    };
    Api::<DynamicObject>::all_with(admin.clone(), &gvk("ClusterRole"))
        .create(
            &PostParams::default(),
            &rbac(
                "ClusterRole",
                json!({"rules": chart_rules_without("k8s.keycloak.org")}),
            ),
        )
        .await
        .unwrap();
    Api::<DynamicObject>::all_with(admin.clone(), &gvk("ClusterRoleBinding"))
        .create(
            &PostParams::default(),
            &rbac(
                "ClusterRoleBinding",
                json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sa},
                       "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa}]}),
            ),
        )
        .await
        .unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap(),
        )
        .await
        .unwrap();
    let policies: Api<OidcRefreshPolicy> = Api::namespaced(admin.clone(), NAMESPACE);
    let started = Instant::now();
    while policies.list(&ListParams::default()).await.is_err() {
        assert!(started.elapsed() < WAIT, "the CRD was not served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sb = Sandbox::start_controller(
        sim.clone(),
        client_with_token(&sim, &sim.service_account_token(sa, sa)),
    );
    create_policy(&admin, SandboxProvider::Keycloak, &idp).await;
    wait_ready(&admin, "coder").await;
    // Reported as a Warning Event by the pass that looked (and wrote); later passes, with nothing
    // to write, do not look again.
    let events = sandbox::policy_events(&admin, "coder").await.unwrap();
    let (_, _, message) = events
        .iter()
        .find(|(_, r, _)| r == "OtherToolsNotChecked")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert!(
        message.contains("the Keycloak operator")
            && message.contains("list on keycloakoidcclients.k8s.keycloak.org"),
        "{message}"
    );
    assert!(
        idp.sim.writes() > 0,
        "the pass went on and configured the client"
    );
    // One refused list, for the one pass that had something to write; none since.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let counters = sim.counters();
    assert_eq!(
        counters.get("list", "keycloakoidcclients"),
        1,
        "{:?}",
        counters.entries()
    );
    sb.stop().await;
    idp.sim.shutdown().await;
}
