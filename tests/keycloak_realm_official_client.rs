//! A realm write by the operator, checked through Keycloak's official admin client
//! (`@keycloak/keycloak-admin-client`, `tests/conformance/keycloak/realm-snapshot.mjs`): the
//! client sets the realm settings an administrator would choose and reads the whole realm
//! representation; the operator, allowed to change the realm, converges a policy whose rotation
//! and idle timeout need realm changes; the client reads the realm again. Every realm setting the
//! operator does not own (device authorization, CIBA, PAR, lifespans, login settings,
//! attributes, everything) is as it was; the ones it owns have the wanted values.
//!
//! Needs Node.js (≥ 18) on `PATH`; installs the suite's pinned dependencies with `npm ci` when
//! `node_modules` lacks them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use oidc_refresh_operator::crd::{KeycloakSpec, Rotation};
use oidc_refresh_operator::metrics::Metrics;
use oidc_refresh_operator::providers::{
    self, Credentials, DesiredSettings, IdentityProvider, ProviderDeps,
};
use serde_json::{Value, json};

const REALM: &str = "coder";
const OPERATOR: &str = "coder-operator";
const OPERATOR_SECRET: &str = "op-secret-realm-3c7e";
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/keycloak")
}

/// Runs `realm-snapshot.mjs <mode>` against the simulator and returns the realm it wrote.
async fn snapshot(url: &str, mode: &'static str, out: PathBuf) -> Value {
    let url = url.to_string();
    let path = out.clone();
    let (ok, log) = tokio::task::spawn_blocking(move || {
        let dir = suite_dir();
        suite_runner::npm_ci_unless_installed(&dir, &["@keycloak/keycloak-admin-client"]);
        let mut node = Command::new("node");
        node.arg("realm-snapshot.mjs")
            .arg(mode)
            .arg(&path)
            .current_dir(&dir)
            .env("KC_URL", url)
            .env("KC_REALM", REALM)
            .env("KC_CLIENT_ID", OPERATOR)
            .env("KC_CLIENT_SECRET", OPERATOR_SECRET)
            .env("NO_COLOR", "1");
        suite_runner::run(node, SCRIPT_TIMEOUT)
    })
    .await
    .unwrap();
    assert!(ok, "realm-snapshot.mjs {mode} failed:\n{log}");
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realm_write_keeps_every_setting_the_operator_does_not_own() {
    suite_runner::require_node("the Keycloak realm check (tests/conformance/keycloak)");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = sim_keycloak::start(sim_keycloak::SimConfig::default())
        .await
        .unwrap();
    sim.add_realm(REALM);
    let mut coder = sim_keycloak::stock_client("coder");
    coder["attributes"]["use.refresh.tokens"] = json!("false");
    sim.add_client(REALM, coder);
    sim.unlink_client_scope(REALM, "coder", "offline_access");
    sim.add_service_account(
        REALM,
        OPERATOR,
        OPERATOR_SECRET,
        REALM,
        &[
            "view-clients",
            "manage-clients",
            "view-realm",
            "manage-realm",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let url = sim.base_url();

    let before = snapshot(&url, "prepare", dir.path().join("before.json")).await;

    // A policy with `allowRealmChanges: true` whose settings need realm changes: rotation with a
    // reuse window (revokeRefreshToken, refreshTokenMaxReuse) and an idle timeout above the
    // realm's offline-session idle timeout.
    let spec = KeycloakSpec {
        url: url.clone(),
        realm: REALM.into(),
        client_id: "coder".into(),
        credentials_secret: "keycloak-admin".into(),
        auth_realm: None,
        allow_realm_changes: Some(true),
    };
    let credentials = Credentials::new(
        "keycloak-admin",
        "1",
        BTreeMap::from([
            ("client-id".to_string(), OPERATOR.as_bytes().to_vec()),
            (
                "client-secret".to_string(),
                OPERATOR_SECRET.as_bytes().to_vec(),
            ),
        ]),
    );
    let deps = ProviderDeps::new(Arc::new(Metrics::new()), Duration::from_secs(5));
    let kc: Arc<dyn IdentityProvider> =
        providers::keycloak::connect(&spec, Some(credentials), &deps).unwrap();
    let desired = DesiredSettings {
        offline_access: true,
        lifetime: Some(Duration::from_secs(720 * 3600)),
        idle_timeout: Some(Duration::from_secs(45 * 86400)),
        rotation: Some(Rotation::Rotate),
        access_token_lifetime: None,
    };
    let plan = kc.observe_plan(&desired).await.unwrap();
    let owned: BTreeMap<String, Value> = plan
        .changes()
        .iter()
        .filter(|c| c.target == format!("Keycloak realm {REALM:?}"))
        .map(|c| (c.setting.clone(), serde_json::from_str(&c.to).unwrap()))
        .collect();
    assert_eq!(
        owned.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "offlineSessionIdleTimeout",
            "refreshTokenMaxReuse",
            "revokeRefreshToken"
        ],
        "the policy needs these realm changes"
    );
    kc.apply(&plan).await.unwrap();

    let after = snapshot(&url, "read", dir.path().join("after.json")).await;

    // The owned settings as wanted.
    for (field, wanted) in &owned {
        assert_eq!(&after[field], wanted, "realm {field} set by the operator");
        assert_ne!(
            &before[field], wanted,
            "realm {field} was not already as wanted"
        );
    }
    // Everything else exactly as the official client read it before (attributes included,
    // except the mirrors of owned settings, which Keycloak keeps in its realm attributes too).
    let before = before.as_object().unwrap();
    let after = after.as_object().unwrap();
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut changed = Vec::new();
    for key in keys {
        if owned.contains_key(key.as_str()) {
            continue;
        }
        if key == "attributes" {
            let empty = serde_json::Map::new();
            let (b, a) = (
                before[key].as_object().unwrap_or(&empty),
                after[key].as_object().unwrap_or(&empty),
            );
            let names: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for name in names {
                if !owned.contains_key(name.as_str()) && b.get(name) != a.get(name) {
                    changed.push(format!(
                        "attributes.{name}: {:?} -> {:?}",
                        b.get(name),
                        a.get(name)
                    ));
                }
            }
        } else if before.get(key) != after.get(key) {
            changed.push(format!(
                "{key}: {:?} -> {:?}",
                before.get(key),
                after.get(key)
            ));
        }
    }
    assert!(
        changed.is_empty(),
        "realm settings the operator does not own changed:\n{}",
        changed.join("\n")
    );
    // The administrator's choices were among what the snapshots compared.
    assert_eq!(before["oauth2DeviceCodeLifespan"], json!(900));
    for (name, value) in [
        ("cibaBackchannelTokenDeliveryMode", "ping"),
        ("cibaExpiresIn", "240"),
        ("parRequestUriLifespan", "90"),
        ("example.com/owner", "platform-team"),
    ] {
        assert_eq!(before["attributes"][name], json!(value), "attribute {name}");
    }
    sim.shutdown().await;
}
