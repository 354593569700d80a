//! The plan: an `Observe` policy lists every change the operator would make, field by field, and
//! writes nothing; switched to `Enforce`, it writes exactly what the plan listed, no more and no
//! less, on every provider (checked against the simulators' own state), and the plan empties.

mod common;

use std::collections::BTreeSet;

use common::*;
use kube::Api;
use oidc_refresh_operator::crd::{OidcRefreshPolicy, PlannedChange};
use oidc_refresh_operator::sandbox::{self, IdpSetup, IdpSim, NAMESPACE, SandboxProvider};
use serde_json::{Map, Value, json};

/// The provider-side objects the operator may touch, as the simulator holds them. Lists of named
/// objects become maps keyed by name, so a change shows as the name of what changed.
fn idp_state(idp: &IdpSetup) -> Value {
    let p = &idp.provider;
    let raw = match &idp.sim {
        IdpSim::None => json!({}),
        IdpSim::Keycloak(s) => {
            let k = &p["keycloak"];
            let (realm, client_id) = (
                k["realm"].as_str().unwrap(),
                k["clientId"].as_str().unwrap(),
            );
            let (default, optional) = s.client_scope_links(realm, client_id);
            let mut links = Map::new();
            for n in default {
                links.insert(n, json!("default"));
            }
            for n in optional {
                links.insert(n, json!("optional"));
            }
            let mappings: Map<String, Value> = s
                .client_realm_scope_mappings(realm, client_id)
                .into_iter()
                .map(|n| (n, json!(true)))
                .collect();
            // The client representation repeats the scope links by name: compared once, below.
            let mut client = s.client(realm, client_id).unwrap_or(Value::Null);
            if let Some(c) = client.as_object_mut() {
                c.remove("defaultClientScopes");
                c.remove("optionalClientScopes");
            }
            json!({
                "client": client,
                "realm": s.realm(realm),
                "clientScopeLinks": links,
                "realmScopeMappings": mappings,
            })
        }
        IdpSim::PingFederate(s) => {
            let id = p["pingFederate"]["clientId"].as_str().unwrap();
            let mut client = s.client(id).unwrap_or(Value::Null);
            // A fresh ciphertext of the same secret on every read, as PingFederate does, and the
            // server's own record of the last change: not changes of a setting.
            if let Some(auth) = client.get_mut("clientAuth").and_then(Value::as_object_mut) {
                auth.remove("encryptedSecret");
            }
            if let Some(c) = client.as_object_mut() {
                c.remove("modificationDate");
            }
            json!({"client": client, "settings": s.auth_server_settings()})
        }
        IdpSim::Entra(s) => {
            let e = &p["entraId"];
            let (tenant, app) = (
                e["tenantId"].as_str().unwrap(),
                e["applicationId"].as_str().unwrap(),
            );
            let lifetime: Vec<Value> = s
                .assigned_policies(tenant, app)
                .into_iter()
                .map(|p| p["definition"].clone())
                .collect();
            json!({"app": s.application(tenant, app), "accessTokenLifetime": lifetime})
        }
        IdpSim::Logto(s) => {
            let id = p["logto"]["applicationId"].as_str().unwrap();
            json!({"app": s.application(id)})
        }
        IdpSim::Okta(s) => s.sandbox_state(),
        IdpSim::Duende(s) => {
            let id = s.id_of(p["duende"]["clientId"].as_str().unwrap()).unwrap();
            // Named as Duende's columns (the plan's settings); the ids of child rows, which every
            // full replace deletes and inserts again, left out.
            let mut client = serde_json::Map::new();
            for (k, mut v) in s.client(id).unwrap().as_object().unwrap().clone() {
                for child in v.as_array_mut().into_iter().flatten() {
                    if let Some(c) = child.as_object_mut() {
                        c.remove("id");
                    }
                }
                client.insert(format!("{}{}", k[..1].to_uppercase(), &k[1..]), v);
            }
            json!({"client": client})
        }
    };
    by_name(raw)
}

fn by_name(v: Value) -> Value {
    match v {
        Value::Array(items) if !items.is_empty() && items.iter().all(|i| i["name"].is_string()) => {
            Value::Object(
                items
                    .into_iter()
                    .map(|i| (i["name"].as_str().unwrap().to_string(), by_name(i)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(by_name).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, by_name(v))).collect()),
        v => v,
    }
}

/// Paths (key segments) of every leaf that differs between `a` and `b`.
fn changed_paths(a: &Value, b: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                at.push(k.clone());
                changed_paths(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    at,
                    out,
                );
                at.pop();
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                at.push(i.to_string());
                changed_paths(p, q, at, out);
                at.pop();
            }
        }
        (a, b) if a != b => out.push(at.clone()),
        _ => {}
    }
}

/// A plan entry accounts for a changed path when its field names one of the path's keys (below
/// the top-level object).
fn explains(entry: &PlannedChange, path: &[String]) -> bool {
    path.iter()
        .skip(1)
        .filter(|s| s.parse::<usize>().is_err())
        .any(|s| entry.field.contains(s.as_str()))
}

fn plan_of(p: &OidcRefreshPolicy) -> Vec<PlannedChange> {
    p.status
        .as_ref()
        .map(|s| s.plan.clone())
        .unwrap_or_default()
}

async fn observe_then_enforce(provider: SandboxProvider) {
    let sb = cluster().await;
    let idp = sandbox::start_idp(provider).await.unwrap();
    if let Some((name, data)) = idp.secret.clone() {
        sandbox::create_secret(&sb.client, &name, &data)
            .await
            .unwrap();
    }
    sandbox::create_coder(&sb.client, sandbox::coder_deployment("coder", json!([])))
        .await
        .unwrap();
    let mut policy = sandbox::example_policy("coder", idp.provider.clone());
    policy["spec"]["refreshTokens"] = sandbox::example_refresh_tokens(provider);
    policy["spec"]["managementPolicy"] = json!("Observe");
    let env_before = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    let state_before = idp_state(&idp);
    sandbox::create_policy(&sb.client, policy).await.unwrap();

    // Observe: the plan lists the identity provider's changes first, then Coder's; nothing is
    // written.
    let observed = wait_reason(&sb.client, "coder", "Ready", "False", "Drifted").await;
    let plan = plan_of(&observed);
    let status = observed.status.clone().unwrap();
    assert_eq!(status.pending_changes, Some(plan.len() as i64));
    let (idp_plan, coder_plan): (Vec<_>, Vec<_>) = plan
        .iter()
        .cloned()
        .partition(|c| !c.target.starts_with("Deployment "));
    assert_eq!(
        plan,
        [idp_plan.clone(), coder_plan.clone()].concat(),
        "identity provider first"
    );
    if matches!(idp.sim, IdpSim::None) {
        assert!(idp_plan.is_empty(), "{plan:#?}");
    } else {
        assert!(!idp_plan.is_empty(), "{provider:?}: {plan:#?}");
    }
    for c in &plan {
        assert!(
            !c.target.is_empty() && !c.field.is_empty() && !c.reason.is_empty(),
            "{c:?}"
        );
        assert_ne!(c.current, c.desired, "{c:?}");
    }
    let fields: Vec<&str> = coder_plan.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(
        fields,
        ["CODER_OIDC_SCOPES", "CODER_OIDC_AUTH_URL_PARAMS"],
        "{plan:#?}"
    );
    assert_eq!(idp.sim.writes(), 0, "Observe writes nothing");
    assert_eq!(idp_state(&idp), state_before);
    assert_eq!(
        sandbox::coder_env(&sb.client, "coder").await.unwrap(),
        env_before
    );

    // A pass that finds the same plan does not rewrite the status (the plan is quiet).
    let rv = observed.metadata.resource_version.clone();
    poke_policy(&sb.client, "coder", "1").await;
    let again = wait_policy_rv_past(&sb.client, "coder", &rv).await;
    assert_eq!(plan_of(&again), plan);

    // Enforce: exactly the plan is written.
    patch_policy_spec(&sb.client, "coder", json!({"managementPolicy": "Enforce"})).await;
    let ready = wait_ready(&sb.client, "coder").await;
    let state_after = idp_state(&idp);
    let mut changed = Vec::new();
    changed_paths(&state_before, &state_after, &mut Vec::new(), &mut changed);
    for path in &changed {
        assert!(
            idp_plan.iter().any(|e| explains(e, path)),
            "{provider:?}: {path:?} changed but no plan entry listed it; plan: {idp_plan:#?}"
        );
    }
    for entry in &idp_plan {
        assert!(
            changed.iter().any(|p| explains(entry, p)),
            "{provider:?}: the plan listed {entry:?} but nothing of it changed; changed: {changed:?}"
        );
    }
    let (scopes, params) = sandbox::coder_env(&sb.client, "coder").await.unwrap();
    assert_eq!(scopes.as_deref(), Some(coder_plan[0].desired.as_str()));
    assert_eq!(params.as_deref(), Some(coder_plan[1].desired.as_str()));

    let status = ready.status.unwrap();
    assert!(status.plan.is_empty(), "{:#?}", status.plan);
    assert_eq!(status.pending_changes, Some(0));
    let events = sandbox::policy_events(&sb.client, "coder").await.unwrap();
    let updated = events
        .iter()
        .filter(|e| e.1 == "IdentityProviderUpdated")
        .count();
    assert_eq!(updated, usize::from(!idp_plan.is_empty()), "{events:?}");
    idp.sim.shutdown().await;
    sb.stop().await;
}

/// Waits for the policy to be written again after `rv`.
async fn wait_policy_rv_past(
    client: &kube::Client,
    name: &str,
    rv: &Option<String>,
) -> OidcRefreshPolicy {
    let api: Api<OidcRefreshPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    let start = std::time::Instant::now();
    loop {
        let p = api.get(name).await.unwrap();
        if &p.metadata.resource_version != rv {
            // The annotation bumped it; give the pass it triggers time to finish.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let q = api.get(name).await.unwrap();
            assert_eq!(
                q.metadata.resource_version, p.metadata.resource_version,
                "a pass with the same plan wrote the status"
            );
            return q;
        }
        assert!(start.elapsed() < WAIT, "the annotation was not written");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn keycloak_observe_plan_is_what_enforce_writes() {
    observe_then_enforce(SandboxProvider::Keycloak).await;
}

#[tokio::test]
async fn pingfederate_12_observe_plan_is_what_enforce_writes() {
    observe_then_enforce(SandboxProvider::Pingfederate).await;
}

#[tokio::test]
async fn pingfederate_11_observe_plan_is_what_enforce_writes() {
    observe_then_enforce(SandboxProvider::Pingfederate11).await;
}

#[tokio::test]
async fn entra_id_observe_plan_is_what_enforce_writes() {
    observe_then_enforce(SandboxProvider::EntraId).await;
}

#[tokio::test]
async fn logto_observe_plan_is_what_enforce_writes() {
    observe_then_enforce(SandboxProvider::Logto).await;
}

#[tokio::test]
async fn okta_observe_plan_is_what_enforce_writes() {
    observe_then_enforce(SandboxProvider::Okta).await;
}

#[tokio::test]
async fn duende_observe_plan_is_what_enforce_writes() {
    observe_then_enforce(SandboxProvider::Duende).await;
}

#[tokio::test]
async fn google_observe_plan_lists_the_coder_entries_only() {
    observe_then_enforce(SandboxProvider::Google).await;
}

#[test]
fn a_change_outside_the_plan_is_caught() {
    let entry = PlannedChange {
        target: "t".into(),
        field: "attribute use.refresh.tokens".into(),
        current: "false".into(),
        desired: "true".into(),
        reason: "r".into(),
    };
    let before = json!({"client": {"attributes": {"use.refresh.tokens": "false", "x": "1"}}});
    let after = json!({"client": {"attributes": {"use.refresh.tokens": "true", "x": "2"}}});
    let mut changed = Vec::new();
    changed_paths(&before, &after, &mut Vec::new(), &mut changed);
    assert_eq!(changed.len(), 2);
    assert!(explains(&entry, &changed[0]), "{:?}", changed[0]);
    assert!(!explains(&entry, &changed[1]), "{:?}", changed[1]);
}
