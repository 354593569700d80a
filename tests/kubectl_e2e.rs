//! The user's view: the real kubectl against the Kubernetes API simulator, with the committed CRD
//! and the examples. kubectl is part of this machine image; the tests fail if it is missing.

mod common;

use common::*;
use oidc_refresh_operator::sandbox::{self, NAMESPACE, Sandbox};
use serde_json::json;

const CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crds/oidcrefreshpolicies.oidcrefresh.dev.yaml"
);

async fn plain_cluster() -> (kube_sim::SimHandle, tempfile::TempDir, std::path::PathBuf) {
    let sim = kube_sim::Simulator::start(kube_sim::SimConfig::default())
        .await
        .unwrap();
    let (dir, path) = kubeconfig(&sim);
    let (ok, _, err) = kubectl(&path, &["apply", "-f", CRD], None).await;
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(
        &path,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: coder\n"),
    )
    .await;
    assert!(ok, "{err}");
    (sim, dir, path)
}

fn policy_yaml(spec: &str) -> String {
    format!(
        "apiVersion: oidcrefresh.dev/v1alpha1\nkind: OidcRefreshPolicy\nmetadata:\n  name: bad\n  namespace: coder\nspec:\n{spec}"
    )
}

#[tokio::test]
async fn the_committed_crd_and_every_example_apply() {
    let (sim, _dir, path) = plain_cluster().await;
    for example in [
        "google",
        "keycloak",
        "pingfederate",
        "entra-id",
        "logto",
        "okta",
        "duende",
        "observe-only",
    ] {
        let file = format!("{}/examples/{example}.yaml", env!("CARGO_MANIFEST_DIR"));
        let (ok, out, err) =
            kubectl(&path, &["apply", "-f", &file, "--dry-run=server"], None).await;
        assert!(ok, "{example}: {out}{err}");
    }
    let (ok, out, err) = kubectl(
        &path,
        &["explain", "oidcrefreshpolicies.spec.refreshTokens.rotation"],
        None,
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("One-time use") || out.contains("Rotate"),
        "{out}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_policies_are_rejected_by_kubectl_apply_with_the_schema_message() {
    let (sim, _dir, path) = plain_cluster().await;
    let cases = [
        (
            "  provider: {}\n  coder: {deployment: coder}\n",
            "set exactly one provider",
        ),
        (
            "  provider: {google: {}, keycloak: {url: 'https://kc', realm: r, clientId: c, credentialsSecret: s}}\n  coder: {deployment: coder}\n",
            "set exactly one provider",
        ),
        (
            "  provider: {google: {}}\n  coder: {deployment: coder}\n  interval: 5s\n",
            "interval must be at least 30s",
        ),
        (
            "  provider: {google: {}}\n  coder: {deployment: coder}\n  refreshTokens: {lifetime: 30days}\n",
            "spec.refreshTokens.lifetime",
        ),
        (
            "  provider: {google: {}}\n  coder: {deployment: coder}\n  refreshTokens: {rotation: Sometimes}\n",
            "Unsupported value: \"Sometimes\"",
        ),
        (
            "  provider: {google: {}}\n  coder: {deployment: coder, scopes: ['openid email']}\n",
            "spec.coder.scopes[0]",
        ),
        (
            "  provider: {google: {}}\n  coder: {deployment: coder}\n  refreshTokens: {lifetime: 1h, idleTimeout: 2h}\n",
            "idleTimeout must not be longer than lifetime",
        ),
        ("  provider: {google: {}}\n", "spec.coder: Required value"),
    ];
    for (spec, want) in cases {
        let (ok, out, err) = kubectl(&path, &["apply", "-f", "-"], Some(&policy_yaml(spec))).await;
        assert!(!ok, "accepted:\n{spec}\n{out}");
        assert!(
            err.contains(want),
            "for\n{spec}expected {want:?} in:\n{err}"
        );
    }
    let (ok, out, _) = kubectl(&path, &["get", "orp", "-n", NAMESPACE, "-o", "name"], None).await;
    assert!(ok && out.trim().is_empty(), "nothing was stored: {out}");
    sim.shutdown().await;
}

#[tokio::test]
async fn get_and_describe_show_columns_conditions_and_events() {
    let (sim, client) = Sandbox::start_cluster().await.unwrap();
    let sb = Sandbox::start_controller(sim.clone(), client.clone());
    sandbox::create_coder(&client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let (_dir, path) = kubeconfig(&sim);
    let file = format!("{}/examples/google.yaml", env!("CARGO_MANIFEST_DIR"));
    let (ok, _, err) = kubectl(&path, &["apply", "-f", &file], None).await;
    assert!(ok, "{err}");
    wait_ready(&client, "coder").await;

    let (ok, out, err) = kubectl(&path, &["get", "orp", "-n", NAMESPACE], None).await;
    assert!(ok, "{err}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PROVIDER",
            "DEPLOYMENT",
            "READY",
            "REASON",
            "PENDING",
            "AGE"
        ]
    );
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        ["coder", "google", "coder", "True", "Configured", "0"]
    );

    let (ok, out, err) = kubectl(&path, &["describe", "orp", "coder", "-n", NAMESPACE], None).await;
    assert!(ok, "{err}");
    for want in [
        "Conditions:",
        "IdentityProviderConfigured",
        "CoderRolledOut",
        "RolloutComplete",
        "Events:",
        "DeploymentPatched",
        "UsersMustSignInAgain",
    ] {
        assert!(out.contains(want), "describe lacks {want:?}:\n{out}");
    }

    let (ok, out, err) = kubectl(&path, &["get", "deploy", "coder", "-n", NAMESPACE, "-o", "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"CODER_OIDC_AUTH_URL_PARAMS\")].value}"], None).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        r#"{"access_type":"offline","hd":"example.com","prompt":"consent"}"#
    );
    sb.stop().await;
}

#[tokio::test]
async fn an_observe_policy_shows_its_plan_in_get_and_describe() {
    let (sim, client) = Sandbox::start_cluster().await.unwrap();
    let sb = Sandbox::start_controller(sim.clone(), client.clone());
    sandbox::create_coder(&client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let mut policy = sandbox::example_policy("coder", json!({"google": {}}));
    policy["spec"]["managementPolicy"] = json!("Observe");
    sandbox::create_policy(&client, policy).await.unwrap();
    wait_reason(&client, "coder", "Ready", "False", "Drifted").await;
    let (_dir, path) = kubeconfig(&sim);

    let (ok, out, err) = kubectl(&path, &["get", "orp", "-n", NAMESPACE], None).await;
    assert!(ok, "{err}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        ["coder", "google", "coder", "False", "Drifted", "2"]
    );

    let (ok, out, err) = kubectl(&path, &["describe", "orp", "coder", "-n", NAMESPACE], None).await;
    assert!(ok, "{err}");
    // describe aligns values in columns: compare with runs of spaces collapsed.
    let flat: String = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    for want in [
        "Pending Changes: 2",
        "Plan:",
        "Target: Deployment \"coder\", container \"coder\"",
        "Field: CODER_OIDC_SCOPES",
        "Current: unset (Coder's default: openid,profile,email)",
        "Desired: openid,profile,email,groups",
        "Field: CODER_OIDC_AUTH_URL_PARAMS",
    ] {
        assert!(flat.contains(want), "describe lacks {want:?}:\n{out}");
    }
    let (ok, out, err) = kubectl(
        &path,
        &[
            "get",
            "orp",
            "coder",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.status.plan[*].field}",
        ],
        None,
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, "CODER_OIDC_SCOPES CODER_OIDC_AUTH_URL_PARAMS");
    assert_eq!(
        sandbox::coder_env(&client, "coder").await.unwrap(),
        (None, None),
        "Observe writes nothing"
    );
    sb.stop().await;
}
