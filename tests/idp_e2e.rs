//! End to end with identity-provider simulators: the controller configures Keycloak and
//! PingFederate through their admin APIs, wires Coder, and then leaves a converged policy alone.

mod common;

use std::time::Duration;

use common::*;
use kube::Api;
use kube::api::{Patch, PatchParams};
use oidc_refresh_operator::crd::OidcRefreshPolicy;
use oidc_refresh_operator::sandbox::{self, NAMESPACE, Sandbox, SandboxProvider};
use serde_json::json;

async fn setup(provider: SandboxProvider) -> (Sandbox, sandbox::IdpSetup) {
    cluster_with_idp(provider).await
}

fn policy(provider: SandboxProvider, idp: &sandbox::IdpSetup) -> serde_json::Value {
    let mut p = sandbox::example_policy("coder", idp.provider.clone());
    p["spec"]["refreshTokens"] = sandbox::example_refresh_tokens(provider);
    p
}

async fn converge_then_stay_quiet(provider: SandboxProvider) {
    let (sb, idp) = setup(provider).await;
    sandbox::create_policy(&sb.client, policy(provider, &idp))
        .await
        .unwrap();
    let p = wait_ready(&sb.client, "coder").await;
    let (scopes, params) = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    assert_eq!(
        scopes.as_deref(),
        Some("openid,profile,email,offline_access,groups")
    );
    let expected_params = if provider == SandboxProvider::Logto {
        // Logto drops offline_access without prompt=consent.
        r#"{"access_type":"offline","hd":"example.com","prompt":"consent"}"#
    } else {
        r#"{"access_type":"offline","hd":"example.com"}"#
    };
    assert_eq!(params.as_deref(), Some(expected_params));
    let status = p.status.clone().unwrap();
    let seen = status.identity_provider.unwrap();
    assert_eq!(
        (seen.refresh_token_grant, seen.offline_access),
        (Some(true), Some(true))
    );
    // Rotation keeps a window for Coder's concurrent refreshes, shown in status.
    let window = match provider {
        SandboxProvider::Keycloak => Some("5 reuses"),
        SandboxProvider::Pingfederate | SandboxProvider::Pingfederate11 => Some("60s"),
        // Okta's leeway: the sandbox asks for Rotate, which keeps a 30 s grace period.
        SandboxProvider::Okta => Some("30s"),
        // The Logto and Duende examples turn rotation off (neither has a reuse window).
        _ => None,
    };
    assert_eq!(seen.rotation_window.as_deref(), window, "{provider:?}");
    if provider == SandboxProvider::EntraId {
        // Fixed by Microsoft, reported as it is.
        assert_eq!(seen.idle_timeout.as_deref(), Some("2160h"));
    } else if provider == SandboxProvider::Logto {
        // No idle timeout in Logto; the lifetime is refreshTokenTtlInDays.
        assert_eq!(seen.idle_timeout, None);
        assert_eq!(seen.lifetime.as_deref(), Some("2160h"));
    } else {
        assert_eq!(seen.idle_timeout.as_deref(), Some("720h"));
        assert_eq!(seen.lifetime.as_deref(), Some("2160h"));
    }
    let events = sandbox::policy_events(&sb.client, "coder").await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.1 == "IdentityProviderUpdated")
            .count(),
        1,
        "{events:?}"
    );

    // Converging costs a bounded number of admin-API requests: one read before writing, the
    // writes, one read-back; passes that follow the rollout reuse the verified state.
    let converge_requests = idp.sim.requests();
    assert!(
        converge_requests <= max_requests_to_converge(provider),
        "{provider:?}: {converge_requests} admin-API requests to converge"
    );

    // A pass triggered by the Deployment alone (here: an annotation edit) checks Coder and
    // reuses the identity provider's state verified moments ago.
    let k_before = sb.kube.counters();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(sb.client.clone(), NAMESPACE);
    deployments
        .patch(
            "coder",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"example.com/touched": "yes"}}})),
        )
        .await
        .unwrap();
    let start = std::time::Instant::now();
    while sb.kube.counters().diff(&k_before).get("get", "deployments") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no pass after the Deployment edit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        idp.sim.requests(),
        converge_requests,
        "a Deployment event does not re-read the identity provider"
    );

    // Every body the operator sent validates against the provider's contract.
    let checked = idp
        .sim
        .validate_bodies()
        .unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(checked > 0, "bodies were sent and checked");

    // A restarted controller finds everything converged: no writes anywhere.
    let (sim, client) = (sb.kube.clone(), sb.client.clone());
    sb.stop_controller_only().await;
    let (k_before, idp_before) = (sim.counters(), idp.sim.writes());
    let sb = Sandbox::start_controller(sim.clone(), client.clone());
    let start = std::time::Instant::now();
    // Wait for the restarted controller to finish a pass, then a little longer for anything
    // that pass might have set off.
    while !sb
        .metrics
        .encode()
        .lines()
        .any(|l| l.starts_with("oidc_refresh_reconciles_total ") && !l.ends_with(" 0"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the restarted controller finished no pass"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let diff = sim.counters().diff(&k_before);
    assert_eq!(
        diff.writes(),
        0,
        "no Kubernetes writes: {:?}",
        diff.entries()
    );
    assert_eq!(idp.sim.writes(), idp_before, "no identity-provider writes");
    let api: Api<OidcRefreshPolicy> = Api::namespaced(client, NAMESPACE);
    assert_eq!(
        api.get("coder").await.unwrap().metadata.resource_version,
        p.metadata.resource_version
    );
    sb.stop().await;
    idp.sim.shutdown().await;
}

/// Upper bound of admin-API requests (tokens included) for the sandbox client to converge.
fn max_requests_to_converge(provider: SandboxProvider) -> u64 {
    match provider {
        SandboxProvider::Google => 0,
        // Token; realm, client, client scopes, the offline_access scope's role mappings,
        // discovery document; three writes (realm rotation settings, client, scope link); realm,
        // client, client scopes and scope role mappings read back.
        SandboxProvider::Keycloak => 14,
        // Version, client, server settings, cluster status; the common scope, the client read
        // again right before its PUT, the client, the cluster status, the replication; client,
        // server settings and cluster status read back.
        SandboxProvider::Pingfederate | SandboxProvider::Pingfederate11 => 12,
        // Token; app, Graph catalogue, service principal, grants (refused: no permission in the
        // sandbox), token-lifetime policies; the app patch; app, grants and policies read back.
        SandboxProvider::EntraId => 10,
        // Token; app; the app read again right before its PATCH, the PATCH; app read back.
        SandboxProvider::Logto => 5,
        // Two token requests (the DPoP nonce handshake); Coder's app by client id (not its app
        // id: 404), the OIDC apps listed, policies, rules; the app (by the id found), policies and
        // rules read again right before the writes, the app and rule PUTs; app, policies and
        // rules read back.
        SandboxProvider::Okta => 14,
        // Token; search by clientId, the client by id; the client read again right before its
        // PUT (a full replace), the PUT; the client read back.
        SandboxProvider::Duende => 6,
    }
}

#[tokio::test]
async fn keycloak_converges_and_a_second_reconcile_writes_nothing() {
    converge_then_stay_quiet(SandboxProvider::Keycloak).await;
}

#[tokio::test]
async fn pingfederate_12_converges_and_a_second_reconcile_writes_nothing() {
    converge_then_stay_quiet(SandboxProvider::Pingfederate).await;
}

#[tokio::test]
async fn pingfederate_11_converges_and_a_second_reconcile_writes_nothing() {
    converge_then_stay_quiet(SandboxProvider::Pingfederate11).await;
}

#[tokio::test]
async fn entra_id_converges_and_a_second_reconcile_writes_nothing() {
    converge_then_stay_quiet(SandboxProvider::EntraId).await;
}

#[tokio::test]
async fn logto_converges_and_a_second_reconcile_writes_nothing() {
    converge_then_stay_quiet(SandboxProvider::Logto).await;
}

#[tokio::test]
async fn okta_converges_and_a_second_reconcile_writes_nothing() {
    converge_then_stay_quiet(SandboxProvider::Okta).await;
}

#[tokio::test]
async fn duende_converges_and_a_second_reconcile_writes_nothing() {
    converge_then_stay_quiet(SandboxProvider::Duende).await;
}

#[tokio::test]
async fn observe_mode_makes_no_identity_provider_writes() {
    let (sb, idp) = setup(SandboxProvider::Keycloak).await;
    let mut p = policy(SandboxProvider::Keycloak, &idp);
    p["spec"]["managementPolicy"] = json!("Observe");
    sandbox::create_policy(&sb.client, p).await.unwrap();
    let p = wait_reason(
        &sb.client,
        "coder",
        "IdentityProviderConfigured",
        "False",
        "Drifted",
    )
    .await;
    let msg = cond(&p, "IdentityProviderConfigured").2;
    assert!(
        msg.contains("use.refresh.tokens"),
        "lists what differs: {msg}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(idp.sim.writes(), 0);
    assert_eq!(
        sandbox::coder_env(&sb.client, "coder").await.unwrap(),
        (None, None)
    );
    sb.stop().await;
    idp.sim.shutdown().await;
}

#[tokio::test]
async fn an_expiring_client_secret_is_a_warning_reported_once() {
    let (sb, idp) = setup(SandboxProvider::EntraId).await;
    let sandbox::IdpSim::Entra(graph) = &idp.sim else {
        unreachable!()
    };
    let spec = &idp.provider["entraId"];
    let (tenant, app) = (
        spec["tenantId"].as_str().unwrap(),
        spec["applicationId"].as_str().unwrap(),
    );
    let soon = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * 10))
        .unwrap();
    graph.update_application(tenant, app, |a| {
        a.insert(
            "passwordCredentials".into(),
            json!([sim_entra::password_credential("coder-oidc", soon)]),
        );
    });
    sandbox::create_policy(&sb.client, policy(SandboxProvider::EntraId, &idp))
        .await
        .unwrap();
    let p = wait_ready(&sb.client, "coder").await;
    let warnings = p.status.as_ref().unwrap().warnings.clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].reason, "ClientSecretExpiring");
    // Reconciles keep finding it, but it is announced once.
    poke_policy(&sb.client, "coder", "1").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let events = sandbox::policy_events(&sb.client, "coder").await.unwrap();
    let found: Vec<_> = events
        .iter()
        .filter(|e| e.1 == "ClientSecretExpiring")
        .collect();
    assert_eq!(found.len(), 1, "{events:?}");
    assert_eq!(found[0].0, "Warning");
    assert!(
        sb.metrics
            .encode()
            .contains(r#"oidc_refresh_findings_total{reason="ClientSecretExpiring"} 1"#)
    );
    sb.stop().await;
    idp.sim.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_provider_backs_off_and_recovers_without_touching_coder() {
    let (sb, idp) = setup(SandboxProvider::Keycloak).await;
    let sandbox::IdpSim::Keycloak(kc) = &idp.sim else {
        unreachable!()
    };
    kc.fail_next(3, 503, None);
    sandbox::create_policy(&sb.client, policy(SandboxProvider::Keycloak, &idp))
        .await
        .unwrap();
    let p = wait_reason(&sb.client, "coder", "Reconciling", "True", "Unreachable").await;
    assert_eq!(
        cond(&p, "Stalled").0,
        "False",
        "a transient error is not a stall"
    );
    assert_eq!(cond(&p, "CoderConfigured").1, "WaitingForIdentityProvider");
    assert_eq!(
        sandbox::coder_env(&sb.client, "coder").await.unwrap(),
        (None, None),
        "Coder untouched while the provider is down"
    );
    wait_ready(&sb.client, "coder").await;
    sb.stop().await;
    idp.sim.shutdown().await;
}

#[tokio::test]
async fn throttling_is_reported_with_the_servers_retry_after() {
    let (sb, idp) = setup(SandboxProvider::Pingfederate).await;
    let sandbox::IdpSim::PingFederate(pf) = &idp.sim else {
        unreachable!()
    };
    // Throttled on every try of one call (the call itself retries three times): surfaced.
    pf.fail_next(4, 429, Some(2));
    sandbox::create_policy(&sb.client, policy(SandboxProvider::Pingfederate, &idp))
        .await
        .unwrap();
    let p = wait_reason(&sb.client, "coder", "Reconciling", "True", "Throttled").await;
    assert!(
        cond(&p, "Reconciling").2.contains("retrying after 2s"),
        "{:?}",
        cond(&p, "Reconciling")
    );
    wait_ready(&sb.client, "coder").await;
    sb.stop().await;
    idp.sim.shutdown().await;
}

#[tokio::test]
async fn wrong_credentials_stall_and_a_fixed_secret_is_picked_up_without_restart() {
    let (sb, idp) = setup(SandboxProvider::Keycloak).await;
    let (name, mut data) = idp.secret.clone().unwrap();
    let real = data.clone();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(sb.client.clone(), NAMESPACE);
    for v in data.values_mut() {
        v.push_str("-wrong");
    }
    secrets
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": data})),
        )
        .await
        .unwrap();
    sandbox::create_policy(&sb.client, policy(SandboxProvider::Keycloak, &idp))
        .await
        .unwrap();
    let p = wait_reason(
        &sb.client,
        "coder",
        "IdentityProviderConfigured",
        "False",
        "AuthenticationFailed",
    )
    .await;
    let msg = cond(&p, "Ready").2;
    assert_eq!(cond(&p, "Stalled").0, "True");
    for secret in real.values() {
        assert!(
            !msg.contains(secret.as_str()),
            "no credential in the message: {msg}"
        );
    }
    secrets
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": real})),
        )
        .await
        .unwrap();
    wait_ready(&sb.client, "coder").await;
    sb.stop().await;
    idp.sim.shutdown().await;
}

#[tokio::test]
async fn identity_provider_drift_is_corrected_on_the_interval() {
    let (sb, idp) = setup(SandboxProvider::Keycloak).await;
    let sandbox::IdpSim::Keycloak(kc) = &idp.sim else {
        unreachable!()
    };
    let mut p = policy(SandboxProvider::Keycloak, &idp);
    p["spec"]["interval"] = json!("30s");
    sandbox::create_policy(&sb.client, p).await.unwrap();
    wait_ready(&sb.client, "coder").await;
    let use_refresh = |kc: &sim_keycloak::SimHandle| {
        kc.client("coder", "coder").unwrap()["attributes"]["use.refresh.tokens"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(use_refresh(kc).as_deref(), Some("true"));
    // Let the rollout's follow-up reconciles pass: from here on only the interval triggers one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Someone switches refresh tokens off in the admin console; nothing in Kubernetes changes.
    kc.update_client("coder", "coder", |c| {
        c["attributes"]["use.refresh.tokens"] = json!("false");
    });
    let start = std::time::Instant::now();
    while use_refresh(kc).as_deref() != Some("true") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "drift not corrected within the interval"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let updates = wait_event_messages(
        &sb.client,
        "coder",
        "IdentityProviderUpdated",
        2,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        updates[1].contains("use.refresh.tokens to true (was false)"),
        "{updates:?}"
    );
    sb.stop().await;
    idp.sim.shutdown().await;
}

#[tokio::test]
async fn two_policies_on_one_keycloak_client_do_not_undo_each_other() {
    let (sb, idp) = setup(SandboxProvider::Keycloak).await;
    let sandbox::IdpSim::Keycloak(kc) = &idp.sim else {
        unreachable!()
    };
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("portal", json!([])))
        .await
        .unwrap();
    let max_lifespan = |kc: &sim_keycloak::SimHandle| {
        kc.client("coder", "coder").unwrap()["attributes"]["client.offline.session.max.lifespan"]
            .as_str()
            .map(str::to_string)
    };
    let mut older = policy(SandboxProvider::Keycloak, &idp);
    older["spec"]["interval"] = json!("30s");
    sandbox::create_policy(&sb.client, older).await.unwrap();
    wait_ready(&sb.client, "coder").await;
    assert_eq!(max_lifespan(kc).as_deref(), Some("7776000"), "90 days");
    // Created a second later: a creationTimestamp has whole seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Another Deployment, the same Keycloak client, another lifetime.
    let mut newer = policy(SandboxProvider::Keycloak, &idp);
    newer["metadata"]["name"] = json!("portal");
    newer["spec"]["coder"]["deployment"] = json!("portal");
    newer["spec"]["refreshTokens"]["lifetime"] = json!("1440h");
    newer["spec"]["interval"] = json!("30s");
    let writes = kc.writes();
    sandbox::create_policy(&sb.client, newer).await.unwrap();
    let p = wait_reason(
        &sb.client,
        "portal",
        "IdentityProviderConfigured",
        "False",
        "DuplicatePolicy",
    )
    .await;
    let (_, _, msg) = cond(&p, "IdentityProviderConfigured");
    assert!(
        msg.starts_with(&format!(
            "Policy \"coder\" in namespace {NAMESPACE:?} already manages keycloak:{}/realms/coder/clients/coder at the identity provider",
            kc.base_url().trim_end_matches('/')
        )),
        "{msg}"
    );
    assert_eq!(cond(&p, "Ready").1, "DuplicatePolicy");
    assert_eq!(cond(&p, "Stalled").0, "True");
    // Nothing of the newer policy reaches Keycloak or its Deployment; the older stays Ready.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(kc.writes(), writes, "no identity-provider writes");
    assert_eq!(max_lifespan(kc).as_deref(), Some("7776000"));
    assert_eq!(
        sandbox::coder_env(&sb.client, "portal").await.unwrap(),
        (None, None)
    );
    let api: Api<OidcRefreshPolicy> = Api::namespaced(sb.client.clone(), NAMESPACE);
    assert!(sandbox::is_ready(&api.get("coder").await.unwrap()));

    // Deleting the older policy hands the client over without waiting for the interval.
    api.delete("coder", &Default::default()).await.unwrap();
    wait_ready(&sb.client, "portal").await;
    assert_eq!(max_lifespan(kc).as_deref(), Some("5184000"), "60 days");
    sb.stop().await;
    idp.sim.shutdown().await;
}

#[tokio::test]
async fn what_was_written_is_announced_once_even_after_a_kill_before_the_events() {
    let (sb, idp) = setup(SandboxProvider::Keycloak).await;
    // The process dies right after its writes, as with a SIGKILL: no Event is ever created, and
    // of its status writes only the first (the one made before the writes) lands.
    sb.kube.fail_requests("create", "events", 0, usize::MAX);
    sb.kube
        .fail_requests("patch", "oidcrefreshpolicies/status", 1, usize::MAX);
    let writes = idp.sim.writes();
    sandbox::create_policy(&sb.client, policy(SandboxProvider::Keycloak, &idp))
        .await
        .unwrap();
    let p = sandbox::wait_policy(&sb.client, "coder", WAIT, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| !s.pending_announcements.is_empty())
    })
    .await
    .unwrap();
    let recorded: Vec<String> = p
        .status
        .unwrap()
        .pending_announcements
        .into_iter()
        .map(|a| a.reason)
        .collect();
    assert_eq!(
        recorded,
        [
            "IdentityProviderUpdated",
            "DeploymentPatched",
            "UsersMustSignInAgain"
        ]
    );
    let start = std::time::Instant::now();
    while sandbox::coder_env(&sb.client, "coder")
        .await
        .unwrap()
        .0
        .is_none()
    {
        assert!(start.elapsed() < WAIT, "the Deployment was not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(idp.sim.writes() > writes, "Keycloak was written");
    let (sim, client) = (sb.kube.clone(), sb.client.clone());
    sb.stop_controller_only().await;
    assert!(
        sandbox::policy_events(&client, "coder")
            .await
            .unwrap()
            .is_empty()
    );

    // A new process on the same cluster announces what the first one did, once.
    sim.fail_requests("create", "events", 0, 0);
    sim.fail_requests("patch", "oidcrefreshpolicies/status", 0, 0);
    let writes = idp.sim.writes();
    let sb = Sandbox::start_controller(sim.clone(), client.clone());
    let p = wait_ready(&client, "coder").await;
    let status = p.status.unwrap();
    assert!(status.users_must_sign_in_again_since.is_some());
    let count = |events: &[(String, String, String)], reason: &str| {
        events.iter().filter(|e| e.1 == reason).count()
    };
    let start = std::time::Instant::now();
    loop {
        let events = sandbox::policy_events(&client, "coder").await.unwrap();
        if count(&events, "UsersMustSignInAgain") > 0 {
            break;
        }
        assert!(start.elapsed() < WAIT, "{events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Further passes publish nothing again and write nothing.
    poke_policy(&client, "coder", "1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = sandbox::policy_events(&client, "coder").await.unwrap();
    for reason in [
        "IdentityProviderUpdated",
        "DeploymentPatched",
        "UsersMustSignInAgain",
    ] {
        assert_eq!(count(&events, reason), 1, "{reason}: {events:?}");
    }
    assert_eq!(idp.sim.writes(), writes, "nothing written again");
    let p = Api::<OidcRefreshPolicy>::namespaced(client.clone(), NAMESPACE)
        .get("coder")
        .await
        .unwrap();
    assert!(p.status.unwrap().pending_announcements.is_empty());
    sb.stop().await;
    idp.sim.shutdown().await;
}
