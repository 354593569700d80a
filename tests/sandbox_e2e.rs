//! End to end against the Kubernetes API simulator (with its Deployment controller emulation)
//! and the controller running in-process: the behaviours users depend on.

mod common;

use std::time::Duration;

use common::*;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use oidc_refresh_operator::crd::OidcRefreshPolicy;
use oidc_refresh_operator::sandbox::{self, NAMESPACE, Sandbox};
use serde_json::json;

const GOOGLE_SCOPES: &str = "openid,profile,email,groups";
const GOOGLE_PARAMS: &str = r#"{"access_type":"offline","hd":"example.com","prompt":"consent"}"#;

async fn google_ready() -> Sandbox {
    let sb = cluster().await;
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    sandbox::create_policy(
        &sb.client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    wait_ready(&sb.client, "coder").await;
    sb
}

#[tokio::test]
async fn google_converges_and_a_second_reconcile_writes_nothing() {
    let sb = cluster().await;
    let existing = json!([
        {"name": "CODER_OIDC_SCOPES", "value": "openid,profile,email,offline_access,teams"},
        {"name": "CODER_OIDC_AUTH_URL_PARAMS", "value": r#"{"hd":"corp.example.com","login_hint":"x"}"#}
    ]);
    // Values set by a hand edit, not by Helm: drift the operator may take over.
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    merge_patch_as(&sb.client, "kubectl-edit", "coder", json!({"spec": {"template": {"spec": {"containers": [{"name": "coder", "env": existing}]}}}})).await;
    sandbox::create_policy(
        &sb.client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    let p = wait_ready(&sb.client, "coder").await;

    let (scopes, params) = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    // offline_access is removed for Google; custom scopes survive; spec scopes are appended.
    assert_eq!(scopes.as_deref(), Some("openid,profile,email,teams,groups"));
    // Existing params survive; Google's are set; spec params win for their keys.
    assert_eq!(
        params.as_deref(),
        Some(r#"{"access_type":"offline","hd":"example.com","login_hint":"x","prompt":"consent"}"#)
    );
    let status = p.status.clone().unwrap();
    assert_eq!(status.provider.as_deref(), Some("google"));
    assert_eq!(
        status.coder.as_ref().unwrap().scopes.as_deref(),
        Some("openid,profile,email,teams,groups")
    );
    assert!(status.users_must_sign_in_again_since.is_some());
    assert_eq!(cond(&p, "CoderRolledOut").1, "RolloutComplete");
    let events = sandbox::policy_events(&sb.client, "coder").await.unwrap();
    assert!(
        events.iter().any(|e| e.1 == "UsersMustSignInAgain"),
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.1 == "UsersMustSignInAgain")
            .count(),
        1
    );

    // Restart the controller: its first pass over the converged policy must write nothing.
    let (sim, client) = (sb.kube.clone(), sb.client.clone());
    let rv = p.metadata.resource_version.clone();
    sb.stop_controller_only().await;
    let before = sim.counters();
    let sb = Sandbox::start_controller(sim.clone(), client.clone());
    wait_for_reconciles(&sb, 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let diff = sim.counters().diff(&before);
    assert_eq!(
        diff.writes(),
        0,
        "a converged policy is reconciled without writes: {:?}",
        diff.entries()
    );
    assert!(
        diff.get("get", "deployments") >= 1,
        "the reconcile did run: {:?}",
        diff.entries()
    );
    let api: Api<OidcRefreshPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    assert_eq!(
        api.get("coder").await.unwrap().metadata.resource_version,
        rv
    );
    sb.stop().await;
}

/// Creates the example Google policy and waits for `CoderConfigured=False` with `reason`.
async fn google_policy_stalls_on_coder(sb: &Sandbox, reason: &str) -> OidcRefreshPolicy {
    sandbox::create_policy(
        &sb.client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    wait_reason(&sb.client, "coder", "CoderConfigured", "False", reason).await
}

fn reconciles(sb: &Sandbox) -> u64 {
    sb.metrics
        .encode()
        .lines()
        .find(|l| l.starts_with("oidc_refresh_reconciles_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

async fn wait_for_reconciles(sb: &Sandbox, n: u64) {
    let start = std::time::Instant::now();
    loop {
        if reconciles(sb) >= n {
            return;
        }
        assert!(start.elapsed() < WAIT, "controller did not reconcile");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_hand_edit_is_corrected_on_the_next_watch_event() {
    let sb = google_ready().await;
    merge_patch_as(
        &sb.client,
        "kubectl-edit",
        "coder",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "coder", "env": [
            {"name": "CODER_OIDC_SCOPES", "value": "openid,profile,email"},
            {"name": "CODER_OIDC_AUTH_URL_PARAMS", "value": r#"{"access_type":"online"}"#}]}]}}}}),
    )
    .await;
    let start = std::time::Instant::now();
    loop {
        let env = sandbox::coder_env(&sb.client, "coder").await.unwrap();
        if env == (Some(GOOGLE_SCOPES.into()), Some(GOOGLE_PARAMS.into())) {
            break;
        }
        assert!(start.elapsed() < WAIT, "drift not corrected: {env:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = sandbox::policy_events(&sb.client, "coder").await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.1 == "DriftCorrected" && e.2.contains("\"kubectl-edit\"")),
        "{events:?}"
    );
    wait_ready(&sb.client, "coder").await;
    sb.stop().await;
}

#[tokio::test]
async fn a_declarative_owner_is_a_conflict_that_changes_nothing_and_recovers() {
    let sb = cluster().await;
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let argo = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coder", "namespace": NAMESPACE},
        "spec": {"template": {"spec": {"containers": [{"name": "coder", "env": [{"name": "CODER_OIDC_SCOPES", "value": "openid,email"}]}]}}}});
    apply_as(&sb.client, "argocd-controller", false, argo)
        .await
        .unwrap();
    let p = google_policy_stalls_on_coder(&sb, "FieldConflict").await;
    let (_, _, msg) = cond(&p, "CoderConfigured");
    assert!(
        msg.contains("\"argocd-controller\"") && msg.contains("managedFieldsManagers"),
        "{msg}"
    );
    assert_eq!(cond(&p, "Stalled").0, "True");
    assert_eq!(cond(&p, "Ready").1, "FieldConflict");
    let (scopes, params) = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    assert_eq!(
        (scopes.as_deref(), params),
        (Some("openid,email"), None),
        "nothing the user had is changed"
    );

    // Resolve with conflictPolicy: Force.
    let api: Api<OidcRefreshPolicy> = Api::namespaced(sb.client.clone(), NAMESPACE);
    api.patch(
        "coder",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"coder": {"conflictPolicy": "Force"}}})),
    )
    .await
    .unwrap();
    wait_ready(&sb.client, "coder").await;
    let (scopes, _) = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    assert_eq!(scopes.as_deref(), Some("openid,email,groups"));
    sb.stop().await;
}

#[tokio::test]
async fn value_from_entries_are_never_rewritten_and_recover() {
    let sb = cluster().await;
    let env = json!([{"name": "CODER_OIDC_AUTH_URL_PARAMS", "valueFrom": {"configMapKeyRef": {"name": "oidc", "key": "params"}}}]);
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("coder", env))
        .await
        .unwrap();
    let p = google_policy_stalls_on_coder(&sb, "EnvFromReference").await;
    assert!(
        cond(&p, "CoderConfigured")
            .2
            .contains("CODER_OIDC_AUTH_URL_PARAMS")
    );
    let (scopes, _) = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    assert_eq!(scopes, None, "nothing written while blocked");

    // The user removes the valueFrom entry (an edit round trip: get, change, replace).
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(sb.client.clone(), NAMESPACE);
    let mut d = deployments.get("coder").await.unwrap();
    let container = &mut d
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0];
    container
        .env
        .as_mut()
        .unwrap()
        .retain(|e| e.name != "CODER_OIDC_AUTH_URL_PARAMS");
    let pp = kube::api::PostParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    deployments.replace("coder", &pp, &d).await.unwrap();
    wait_ready(&sb.client, "coder").await;
    let (_, params) = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    assert_eq!(params.as_deref(), Some(GOOGLE_PARAMS));
    sb.stop().await;
}

#[tokio::test]
async fn a_missing_deployment_and_container_stall_and_recover() {
    let sb = cluster().await;
    let mut policy = sandbox::example_policy("coder", json!({"google": {}}));
    policy["spec"]["coder"]["container"] = json!("server");
    sandbox::create_policy(&sb.client, policy).await.unwrap();
    let p = wait_reason(
        &sb.client,
        "coder",
        "CoderConfigured",
        "False",
        "DeploymentNotFound",
    )
    .await;
    assert!(
        cond(&p, "Ready")
            .2
            .contains("Deployment \"coder\" not found in namespace \"coder\"")
    );
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let p = wait_reason(
        &sb.client,
        "coder",
        "CoderConfigured",
        "False",
        "ContainerNotFound",
    )
    .await;
    assert!(cond(&p, "CoderConfigured").2.contains("it has: coder"));
    let api: Api<OidcRefreshPolicy> = Api::namespaced(sb.client.clone(), NAMESPACE);
    api.patch(
        "coder",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"coder": {"container": "coder"}}})),
    )
    .await
    .unwrap();
    wait_ready(&sb.client, "coder").await;
    sb.stop().await;
}

#[tokio::test]
async fn a_stuck_rollout_is_reported_and_recovers() {
    let sb = cluster().await;
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    // Let the initial rollout finish, then make the next one get stuck.
    tokio::time::sleep(Duration::from_millis(600)).await;
    sb.kube.set_rollout_stuck(NAMESPACE, "coder", true);
    sandbox::create_policy(
        &sb.client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    let p = wait_reason(
        &sb.client,
        "coder",
        "CoderRolledOut",
        "False",
        "RolloutFailed",
    )
    .await;
    assert!(
        cond(&p, "CoderRolledOut").2.contains("progress deadline"),
        "{:?}",
        cond(&p, "CoderRolledOut")
    );
    assert_eq!(cond(&p, "CoderConfigured").0, "True");
    assert_eq!(cond(&p, "Stalled").0, "True");
    sb.kube.set_rollout_stuck(NAMESPACE, "coder", false);
    // The Deployment's status change is a watch event that maps back to the policy.
    wait_ready(&sb.client, "coder").await;
    sb.stop().await;
}

#[tokio::test]
async fn a_missing_secret_stalls_and_nothing_is_changed() {
    let sb = cluster().await;
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let policy = sandbox::example_policy(
        "coder",
        json!({"keycloak": {"url": "http://127.0.0.1:9", "realm": "coder", "clientId": "coder", "credentialsSecret": "keycloak-admin"}}),
    );
    sandbox::create_policy(&sb.client, policy).await.unwrap();
    let p = wait_reason(
        &sb.client,
        "coder",
        "IdentityProviderConfigured",
        "False",
        "SecretNotFound",
    )
    .await;
    assert!(
        cond(&p, "Ready")
            .2
            .contains("Secret \"keycloak-admin\" not found in namespace \"coder\"")
    );
    assert_eq!(cond(&p, "CoderConfigured").0, "Unknown");
    assert_eq!(
        sandbox::coder_env(&sb.client, "coder").await.unwrap(),
        (None, None)
    );
    // The Secret appears: the policy is reconciled again at once (Secret watch), now failing on
    // the credentials' keys rather than the missing Secret.
    let data = [("username".to_string(), "s3cr3t-user".to_string())]
        .into_iter()
        .collect();
    sandbox::create_secret(&sb.client, "keycloak-admin", &data)
        .await
        .unwrap();
    let p = wait_reason(
        &sb.client,
        "coder",
        "IdentityProviderConfigured",
        "False",
        "InvalidSecret",
    )
    .await;
    let (_, _, msg) = cond(&p, "IdentityProviderConfigured");
    assert!(msg.contains("password"), "names the missing key: {msg}");
    assert!(!msg.contains("s3cr3t-user"), "never a value: {msg}");
    assert_eq!(
        sandbox::coder_env(&sb.client, "coder").await.unwrap(),
        (None, None)
    );
    sb.stop().await;
}

#[tokio::test]
async fn observe_mode_writes_nothing_and_reports_the_difference() {
    let sb = cluster().await;
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let before = sb.kube.counters();
    let mut policy = sandbox::example_policy("coder", json!({"google": {}}));
    policy["spec"]["managementPolicy"] = json!("Observe");
    sandbox::create_policy(&sb.client, policy).await.unwrap();
    let p = wait_reason(&sb.client, "coder", "CoderConfigured", "False", "Drifted").await;
    let (_, _, msg) = cond(&p, "CoderConfigured");
    assert!(
        msg.contains("CODER_OIDC_SCOPES unset -> openid,profile,email,groups"),
        "{msg}"
    );
    assert_eq!(cond(&p, "Ready").1, "Drifted");
    let diff = sb.kube.counters().diff(&before);
    assert_eq!(diff.writes_to("deployments"), 0, "{:?}", diff.entries());
    assert_eq!(
        sandbox::coder_env(&sb.client, "coder").await.unwrap(),
        (None, None)
    );
    sb.stop().await;
}

#[tokio::test]
async fn a_deleted_policy_leaves_the_deployment_as_it_is() {
    let sb = google_ready().await;
    let api: Api<OidcRefreshPolicy> = Api::namespaced(sb.client.clone(), NAMESPACE);
    api.delete("coder", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = sb.kube.counters();
    // A later Deployment change maps to no policy and causes no write.
    merge_patch_as(
        &sb.client,
        "kubectl-edit",
        "coder",
        json!({"metadata": {"labels": {"touched": "yes"}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let diff = sb.kube.counters().diff(&before);
    assert_eq!(
        diff.writes(),
        1,
        "only the test's own patch: {:?}",
        diff.entries()
    );
    let (scopes, params) = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    assert_eq!(
        (scopes.as_deref(), params.as_deref()),
        (Some(GOOGLE_SCOPES), Some(GOOGLE_PARAMS))
    );
    sb.stop().await;
}

#[tokio::test]
async fn unsupported_settings_stall_with_an_explanation() {
    let sb = cluster().await;
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let mut policy = sandbox::example_policy("coder", json!({"google": {}}));
    policy["spec"]["refreshTokens"] = json!({"lifetime": "720h"});
    sandbox::create_policy(&sb.client, policy).await.unwrap();
    let p = wait_reason(
        &sb.client,
        "coder",
        "IdentityProviderConfigured",
        "False",
        "Unsupported",
    )
    .await;
    assert!(
        cond(&p, "Ready").2.contains("spec.refreshTokens.lifetime"),
        "{:?}",
        cond(&p, "Ready")
    );
    assert_eq!(
        sandbox::coder_env(&sb.client, "coder").await.unwrap(),
        (None, None)
    );
    sb.stop().await;
}

#[tokio::test]
async fn scopes_loaded_with_env_from_are_never_overridden() {
    let sb = cluster().await;
    // The user keeps Coder's OIDC settings in a ConfigMap loaded with envFrom (`coder.envFrom`
    // in Coder's chart).
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(sb.client.clone(), NAMESPACE);
    cms.create(
        &Default::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "coder-oidc"},
            "data": {"CODER_OIDC_SCOPES": "openid,profile,email,teams", "CODER_OIDC_EMAIL_DOMAIN": "example.com"}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let mut d = sandbox::coder_deployment("coder", json!([]));
    d["spec"]["template"]["spec"]["containers"][0]["envFrom"] =
        json!([{"configMapRef": {"name": "coder-oidc"}}]);
    sandbox::create_coder(&sb.client, d).await.unwrap();
    let before = sb.kube.counters();
    let p = google_policy_stalls_on_coder(&sb, "EnvFromReference").await;
    let (_, _, msg) = cond(&p, "CoderConfigured");
    assert!(
        msg.contains(r#"CODER_OIDC_SCOPES in container "coder" comes from ConfigMap "coder-oidc" through envFrom"#),
        "{msg}"
    );
    assert_eq!(cond(&p, "Stalled").0, "True");
    // Nothing was written to the Deployment: the ConfigMap's scopes still apply.
    let diff = sb.kube.counters().diff(&before);
    assert_eq!(diff.writes_to("deployments"), 0, "{:?}", diff.entries());
    assert!(diff.get("get", "configmaps") >= 1, "{:?}", diff.entries());
    assert_eq!(
        sandbox::coder_env(&sb.client, "coder").await.unwrap(),
        (None, None)
    );

    // The user moves the variable into env, as the message says: the operator merges it,
    // keeping the user's scopes, and stops reading the ConfigMap.
    merge_patch_as(
        &sb.client,
        "kubectl-edit",
        "coder",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "coder", "env": [
            {"name": "CODER_OIDC_SCOPES", "value": "openid,profile,email,teams"}
        ]}]}}}}),
    )
    .await;
    wait_ready(&sb.client, "coder").await;
    let (scopes, params) = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    assert_eq!(scopes.as_deref(), Some("openid,profile,email,teams,groups"));
    assert_eq!(params.as_deref(), Some(GOOGLE_PARAMS));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (reads, passes) = (sb.kube.counters().get("get", "configmaps"), reconciles(&sb));
    poke_policy(&sb.client, "coder", "1").await;
    wait_for_reconciles(&sb, passes + 1).await;
    assert_eq!(
        sb.kube.counters().get("get", "configmaps"),
        reads,
        "both variables are in env now: the ConfigMap cannot matter"
    );
    sb.stop().await;
}

#[tokio::test]
async fn a_second_policy_for_the_same_deployment_changes_nothing_until_the_first_is_gone() {
    let sb = google_ready().await;
    let before = sb.kube.counters();
    let mut second = sandbox::example_policy("coder-copy", json!({"google": {}}));
    second["spec"]["coder"]["scopes"] = json!(["teams"]);
    second["spec"]["coder"]["authURLParams"] = json!({"hd": "other.example.com"});
    sandbox::create_policy(&sb.client, second).await.unwrap();
    let p = wait_reason(
        &sb.client,
        "coder-copy",
        "CoderConfigured",
        "False",
        "DuplicatePolicy",
    )
    .await;
    let (_, _, msg) = cond(&p, "CoderConfigured");
    assert!(
        msg.starts_with(
            r#"Policy "coder" already manages container "coder" of Deployment "coder""#
        ),
        "{msg}"
    );
    assert_eq!(cond(&p, "Ready").1, "DuplicatePolicy");
    assert_eq!(cond(&p, "Stalled").0, "True");
    // The first policy stays Ready and the Deployment keeps its values: no flapping.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let diff = sb.kube.counters().diff(&before);
    assert_eq!(diff.writes_to("deployments"), 0, "{:?}", diff.entries());
    assert_eq!(
        sandbox::coder_env(&sb.client, "coder").await.unwrap(),
        (Some(GOOGLE_SCOPES.into()), Some(GOOGLE_PARAMS.into()))
    );
    assert!(sandbox::is_ready(
        &Api::<OidcRefreshPolicy>::namespaced(sb.client.clone(), NAMESPACE)
            .get("coder")
            .await
            .unwrap()
    ));

    // Deleting the first hands the Deployment over, without waiting for the interval.
    let api: Api<OidcRefreshPolicy> = Api::namespaced(sb.client.clone(), NAMESPACE);
    api.delete("coder", &DeleteParams::default()).await.unwrap();
    wait_ready(&sb.client, "coder-copy").await;
    let (scopes, params) = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    assert_eq!(scopes.as_deref(), Some("openid,profile,email,groups,teams"));
    assert_eq!(
        params.as_deref(),
        Some(r#"{"access_type":"offline","hd":"other.example.com","prompt":"consent"}"#)
    );
    sb.stop().await;
}

#[tokio::test]
async fn a_paused_deployment_is_reported_and_becomes_ready_once_resumed() {
    let sb = cluster().await;
    let mut coder = sandbox::coder_deployment("coder", json!([]));
    coder["spec"]["paused"] = json!(true);
    sandbox::create_coder(&sb.client, coder).await.unwrap();
    sandbox::create_policy(
        &sb.client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    let p = wait_reason(
        &sb.client,
        "coder",
        "CoderRolledOut",
        "False",
        "DeploymentPaused",
    )
    .await;
    let c = sandbox::condition(
        &p,
        oidc_refresh_operator::status::ConditionType::CoderRolledOut,
    )
    .unwrap();
    assert!(
        c.message
            .contains("kubectl rollout resume deployment/coder"),
        "{}",
        c.message
    );
    assert!(!sandbox::is_ready(&p));
    // The env is written; only the rollout waits.
    assert_eq!(
        sandbox::coder_env(&sb.client, "coder").await.unwrap(),
        (Some(GOOGLE_SCOPES.into()), Some(GOOGLE_PARAMS.into()))
    );
    // `kubectl rollout resume` patches spec.paused.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(sb.client.clone(), NAMESPACE);
    deployments
        .patch(
            "coder",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"paused": null}})),
        )
        .await
        .unwrap();
    wait_ready(&sb.client, "coder").await;
    sb.stop().await;
}

#[tokio::test]
async fn entries_the_deployment_was_created_with_are_taken_over_without_a_drift_warning() {
    let sb = cluster().await;
    // kubectl create: the entries belong to the `kubectl-create` manager.
    let coder = sandbox::coder_deployment(
        "coder",
        json!([{"name": "CODER_OIDC_SCOPES", "value": "openid,profile,email"}]),
    );
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(sb.client.clone(), NAMESPACE);
    api.create(
        &kube::api::PostParams {
            field_manager: Some("kubectl-create".into()),
            ..Default::default()
        },
        &serde_json::from_value(coder).unwrap(),
    )
    .await
    .unwrap();
    sandbox::create_policy(
        &sb.client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    wait_ready(&sb.client, "coder").await;
    let events = sandbox::policy_events(&sb.client, "coder").await.unwrap();
    assert!(
        events.iter().any(|e| e.1 == "DeploymentPatched"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.1 == "DriftCorrected"),
        "a first configuration is no drift: {events:?}"
    );
    sb.stop().await;
}

#[tokio::test]
async fn two_policies_on_two_containers_of_one_deployment_keep_each_others_entries() {
    let sb = cluster().await;
    let mut coder = sandbox::coder_deployment("coder", json!([]));
    let mut second = coder["spec"]["template"]["spec"]["containers"][0].clone();
    second["name"] = json!("coder-canary");
    second["env"] = json!([]);
    coder["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(second);
    sandbox::create_coder(&sb.client, coder).await.unwrap();
    sandbox::create_policy(
        &sb.client,
        sandbox::example_policy("coder", json!({"google": {}})),
    )
    .await
    .unwrap();
    wait_ready(&sb.client, "coder").await;
    let mut canary = sandbox::example_policy("canary", json!({"google": {}}));
    canary["spec"]["coder"]["container"] = json!("coder-canary");
    canary["spec"]["coder"]["scopes"] = json!(["canary"]);
    sandbox::create_policy(&sb.client, canary).await.unwrap();
    wait_ready(&sb.client, "canary").await;
    // The second policy's apply (its own field manager) left the first container's entries.
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(sb.client.clone(), NAMESPACE);
    let d = api.get("coder").await.unwrap();
    let env_of = |name: &str| -> Vec<(String, Option<String>)> {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == "CODER_OIDC_SCOPES" || e.name == "CODER_OIDC_AUTH_URL_PARAMS")
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    };
    assert_eq!(
        env_of("coder"),
        [
            (
                "CODER_OIDC_SCOPES".to_string(),
                Some(GOOGLE_SCOPES.to_string())
            ),
            (
                "CODER_OIDC_AUTH_URL_PARAMS".to_string(),
                Some(GOOGLE_PARAMS.to_string())
            ),
        ]
    );
    assert_eq!(
        env_of("coder-canary")[0],
        (
            "CODER_OIDC_SCOPES".to_string(),
            Some("openid,profile,email,canary".to_string())
        )
    );
    // A pass of the first policy (same generation, poked) rewrites nothing and prunes nothing.
    poke_policy(&sb.client, "coder", "1").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let again = api.get("coder").await.unwrap();
    assert_eq!(again.metadata.resource_version, d.metadata.resource_version);
    sb.stop().await;
}
