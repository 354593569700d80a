//! Which policy may act on what: two policies that write the same Deployment container, or the
//! same identity-provider object (client, app registration, application, or realm-wide settings
//! a policy may change), would undo each other's changes at every interval. Each such object
//! belongs to one policy: the oldest (by `creationTimestamp`, then namespace and name, the same
//! order for every policy) among those not themselves held back by an older one. The others
//! change nothing and stall with `DuplicatePolicy` naming the owner; deleting the owner hands
//! over. Policies with identical settings follow the same rule: one owner. A policy in `Observe`
//! mode holds its objects too, so switching it to `Enforce` never starts a tug of war. Pure.
//!
//! Policies are compared through the controller's policy cache: with `--namespaces`, each listed
//! namespace has its own cache, so policies in two different listed namespaces do not see each
//! other's claims.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::crd::OidcRefreshPolicy;
use crate::providers;
use crate::status::{Reason, State, Verdict};

/// What an older policy already manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// The same Deployment container (always in the policy's own namespace): the owner's name.
    Container(String),
    /// The same identity-provider object.
    Idp {
        /// Namespace of the owner.
        namespace: String,
        /// Name of the owner.
        name: String,
        /// The object, as [`providers::targets`] names it.
        target: String,
    },
}

/// One thing a policy claims.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Container(String, String, String),
    Idp(String),
}

fn keys(p: &OidcRefreshPolicy) -> Vec<Key> {
    let mut keys = vec![Key::Container(
        p.namespace().unwrap_or_default(),
        p.spec.coder.deployment.clone(),
        p.spec.coder.container.clone(),
    )];
    keys.extend(
        providers::targets(&p.spec.provider)
            .into_iter()
            .map(Key::Idp),
    );
    keys
}

type Age = (Option<Time>, Option<String>, String);

fn age(p: &OidcRefreshPolicy) -> Age {
    (
        p.metadata.creation_timestamp.clone(),
        p.namespace(),
        p.name_any(),
    )
}

/// What an older policy in `all` (the controller's policy cache) already manages of what
/// `policy` would change, if anything. Container claims are reported before identity-provider
/// ones.
pub fn claimant(policy: &OidcRefreshPolicy, all: &[Arc<OidcRefreshPolicy>]) -> Option<Claimed> {
    let mine = age(policy);
    let wanted = keys(policy);
    let mut older: Vec<(Age, &OidcRefreshPolicy, Vec<Key>)> = all
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (age(p), p))
        .filter(|(a, _)| *a < mine)
        .map(|(a, p)| (a, p, keys(p)))
        .collect();
    // Only a direct overlap can hold `policy` back; the walk below decides whether its owner is
    // itself held back.
    if !older
        .iter()
        .any(|(_, _, k)| k.iter().any(|k| wanted.contains(k)))
    {
        return None;
    }
    older.sort_by(|a, b| a.0.cmp(&b.0));
    let mut owners: HashMap<&Key, &OidcRefreshPolicy> = HashMap::new();
    for (_, p, k) in &older {
        if k.iter().any(|k| owners.contains_key(k)) {
            continue;
        }
        owners.extend(k.iter().map(|k| (k, *p)));
    }
    wanted.iter().find_map(|k| {
        let owner = owners.get(k)?;
        Some(match k {
            Key::Container(..) => Claimed::Container(owner.name_any()),
            Key::Idp(target) => Claimed::Idp {
                namespace: owner.namespace().unwrap_or_default(),
                name: owner.name_any(),
                target: target.clone(),
            },
        })
    })
}

/// The verdict of a policy whose Deployment container or identity-provider object an older
/// policy already manages.
pub fn duplicate_verdict(policy: &OidcRefreshPolicy, claimed: &Claimed) -> Verdict {
    let message = match claimed {
        Claimed::Container(first) => {
            let coder = &policy.spec.coder;
            format!(
                "Policy {first:?} already manages container {:?} of Deployment {:?}; two policies writing the same env entries would undo each other's changes, so this one changes nothing (not at the identity provider either). \
                 Delete this policy, merge its settings into {first:?}, or point spec.coder at another Deployment or container.",
                coder.container, coder.deployment
            )
        }
        Claimed::Idp {
            namespace,
            name,
            target,
        } => format!(
            "Policy {name:?} in namespace {namespace:?} already manages {target} at the identity provider; two policies changing the same identity-provider object would undo each other's settings at every interval, so this one changes nothing (not the Deployment either). \
             Delete this policy, merge its settings into {name:?}, or point spec.provider at another client."
        ),
    };
    Verdict::new(State::Stalled, Reason::DuplicatePolicy, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn policy(ns: &str, name: &str, created: &str, spec: Value) -> Arc<OidcRefreshPolicy> {
        let mut spec = spec;
        if spec.get("provider").is_none() {
            spec["provider"] = json!({"google": {}});
        }
        if spec.get("coder").is_none() {
            spec["coder"] = json!({"deployment": "coder"});
        }
        let mut p: OidcRefreshPolicy = serde_json::from_value(json!({
            "apiVersion": "oidcrefresh.dev/v1alpha1", "kind": "OidcRefreshPolicy",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": spec
        }))
        .unwrap();
        p.metadata.creation_timestamp = Some(serde_json::from_value(json!(created)).unwrap());
        Arc::new(p)
    }

    fn keycloak(client: &str, deployment: &str, realm_changes: bool) -> Value {
        json!({
            "provider": {"keycloak": {
                "url": "https://KC.example:443/", "realm": "coder", "clientId": client,
                "credentialsSecret": "kc", "allowRealmChanges": realm_changes
            }},
            "coder": {"deployment": deployment}
        })
    }

    /// A policy on Keycloak client `client` of realm "coder", for Deployment `deployment`.
    fn keycloak_policy(
        ns: &str,
        name: &str,
        created: &str,
        client: &str,
        deployment: &str,
        realm_changes: bool,
    ) -> Arc<OidcRefreshPolicy> {
        policy(
            ns,
            name,
            created,
            keycloak(client, deployment, realm_changes),
        )
    }

    /// `v` stalls the policy as a duplicate, its message starting with `start`.
    fn assert_duplicate(v: &Verdict, start: &str) {
        assert_eq!(
            (v.state, v.reason),
            (State::Stalled, Reason::DuplicatePolicy)
        );
        assert!(v.message.starts_with(start), "{}", v.message);
    }

    #[test]
    fn the_oldest_policy_for_a_deployment_container_is_the_one_that_acts() {
        let first = policy("coder", "zeta", "2026-01-01T00:00:00Z", json!({}));
        let second = policy("coder", "alpha", "2026-02-01T00:00:00Z", json!({}));
        let same_time = policy("coder", "beta", "2026-01-01T00:00:00Z", json!({}));
        let other_container = policy(
            "coder",
            "web",
            "2025-01-01T00:00:00Z",
            json!({"coder": {"deployment": "coder", "container": "web"}}),
        );
        let elsewhere = policy("other", "elsewhere", "2025-01-01T00:00:00Z", json!({}));
        let all = vec![
            first.clone(),
            second.clone(),
            other_container.clone(),
            elsewhere,
        ];
        assert_eq!(claimant(&first, &all), None);
        assert_eq!(
            claimant(&second, &all),
            Some(Claimed::Container("zeta".into()))
        );
        assert_eq!(claimant(&other_container, &all), None);
        // Created in the same second: the name decides, the same way for every policy.
        let mut with_tie = all.clone();
        with_tie.push(same_time.clone());
        assert_eq!(
            claimant(&first, &with_tie),
            Some(Claimed::Container("beta".into()))
        );
        assert_eq!(claimant(&same_time, &with_tie), None);
        // A policy being deleted hands over.
        let mut leaving = (*first).clone();
        leaving.metadata.deletion_timestamp = leaving.metadata.creation_timestamp.clone();
        let handed = vec![Arc::new(leaving), second.clone()];
        assert_eq!(claimant(&second, &handed), None);
        let v = duplicate_verdict(&second, &Claimed::Container("zeta".into()));
        assert_duplicate(
            &v,
            r#"Policy "zeta" already manages container "coder" of Deployment "coder""#,
        );
    }

    #[test]
    fn the_oldest_policy_for_an_identity_provider_object_is_the_one_that_acts_in_any_namespace() {
        let old = keycloak_policy("team-a", "old", "2026-01-01T00:00:00Z", "coder", "a", false);
        // Another namespace, another Deployment, the same client (the URL written differently).
        let mut same = keycloak("coder", "b", false);
        same["provider"]["keycloak"]["url"] = json!("https://kc.example/admin");
        let new = policy("team-b", "new", "2026-01-02T00:00:00Z", same);
        let other_client = keycloak_policy(
            "team-b",
            "other",
            "2026-01-03T00:00:00Z",
            "portal",
            "c",
            false,
        );
        let all = vec![old.clone(), new.clone(), other_client.clone()];
        assert_eq!(claimant(&old, &all), None);
        let claimed = claimant(&new, &all).expect("the client is taken");
        assert_eq!(
            claimed,
            Claimed::Idp {
                namespace: "team-a".into(),
                name: "old".into(),
                target: "keycloak:https://kc.example/realms/coder/clients/coder".into(),
            }
        );
        let v = duplicate_verdict(&new, &claimed);
        assert_duplicate(
            &v,
            r#"Policy "old" in namespace "team-a" already manages keycloak:https://kc.example/realms/coder/clients/coder at the identity provider"#,
        );
        assert_eq!(claimant(&other_client, &all), None, "another client");

        // Realm-wide settings are claimed only by policies that may change them.
        let realm_a = keycloak_policy("team-c", "realm-a", "2026-01-04T00:00:00Z", "a", "d", true);
        let realm_b = keycloak_policy("team-c", "realm-b", "2026-01-05T00:00:00Z", "b", "e", true);
        let all = vec![
            old.clone(),
            other_client.clone(),
            realm_a.clone(),
            realm_b.clone(),
        ];
        assert_eq!(claimant(&realm_a, &all), None);
        assert_eq!(
            claimant(&realm_b, &all),
            Some(Claimed::Idp {
                namespace: "team-c".into(),
                name: "realm-a".into(),
                target: "keycloak:https://kc.example/realms/coder/realm-settings".into(),
            })
        );
        assert_eq!(claimant(&other_client, &all), None);
    }

    #[test]
    fn a_policy_held_back_by_an_older_one_does_not_hold_back_newer_ones() {
        // "middle" shares the Deployment container with "first" and the client with "last":
        // it changes nothing, so "last" owns the client.
        let first = keycloak_policy("ns", "first", "2026-01-01T00:00:00Z", "one", "coder", false);
        let middle = keycloak_policy(
            "ns",
            "middle",
            "2026-01-02T00:00:00Z",
            "two",
            "coder",
            false,
        );
        let last = keycloak_policy("ns", "last", "2026-01-03T00:00:00Z", "two", "portal", false);
        let all = vec![first.clone(), middle.clone(), last.clone()];
        assert_eq!(
            claimant(&middle, &all),
            Some(Claimed::Container("first".into()))
        );
        assert_eq!(claimant(&last, &all), None);
    }

    #[test]
    fn every_provider_names_the_objects_it_writes() {
        let targets =
            |provider: Value| providers::targets(&serde_json::from_value(provider).unwrap());
        assert_eq!(
            targets(json!({"pingFederate": {
                "adminUrl": "https://PF.example:9999/pf-admin-api/v1/", "clientId": "coder",
                "credentialsSecret": "pf"
            }})),
            ["pingFederate:https://pf.example:9999/pf-admin-api/v1/oauth/clients/coder"]
        );
        assert_eq!(
            targets(json!({"entraId": {
                "tenantId": "AAAAAAAA-0000-0000-0000-000000000000",
                "applicationId": "BBBBBBBB-0000-0000-0000-000000000000",
                "credentialsSecret": "entra"
            }})),
            [
                "entraId:https://graph.microsoft.com/tenants/aaaaaaaa-0000-0000-0000-000000000000/applications/bbbbbbbb-0000-0000-0000-000000000000"
            ]
        );
        assert_eq!(
            targets(json!({"logto": {
                "endpoint": "https://tenant1.logto.app/api/", "applicationId": "app1",
                "credentialsSecret": "logto"
            }})),
            ["logto:https://tenant1.logto.app/applications/app1"]
        );
        assert_eq!(
            targets(json!({"okta": {
                "orgUrl": "https://Example.okta.com/", "clientId": "0oa1",
                "authorizationServerId": "default", "credentialsSecret": "okta"
            }})),
            ["okta:https://example.okta.com/apps/0oa1"]
        );
        assert_eq!(
            targets(json!({"okta": {
                "orgUrl": "https://example.okta.com", "clientId": "0oa1",
                "authorizationServerId": "default", "credentialsSecret": "okta",
                "allowSharedRule": true
            }})),
            [
                "okta:https://example.okta.com/apps/0oa1",
                "okta:https://example.okta.com/authorizationServers/default/shared-rules"
            ]
        );
        assert_eq!(
            targets(json!({"duende": {
                "clientId": "coder", "credentialsSecret": "duende",
                "adminApi": {"url": "https://Admin-API.example.com/api/", "authority": "https://sts.example.com"}
            }})),
            ["duende:https://admin-api.example.com/clients/coder"]
        );
        assert!(
            targets(json!({"duende": {
                "clientId": "coder", "credentialsSecret": "duende-db", "database": {}
            }}))
            .is_empty()
        );
        // A `/` in a name cannot make two objects look alike.
        assert_eq!(
            targets(json!({"keycloak": {
                "url": "https://kc.example", "realm": "coder", "clientId": "x/realm-settings",
                "credentialsSecret": "kc"
            }})),
            ["keycloak:https://kc.example/realms/coder/clients/x%2Frealm-settings"]
        );
        assert!(targets(json!({"google": {}})).is_empty());
    }

    #[test]
    fn google_claims_nothing_at_the_identity_provider() {
        let a = policy("a", "a", "2026-01-01T00:00:00Z", json!({}));
        let b = policy(
            "b",
            "b",
            "2026-01-02T00:00:00Z",
            json!({"coder": {"deployment": "other"}}),
        );
        assert_eq!(claimant(&b, &[a, b.clone()]), None);
    }
}
