//! Runs the conformance suite in `tests/conformance/entra/`: Microsoft's own Python libraries
//! (`azure-identity`, `msgraph-sdk`, versions pinned in `requirements.txt`) against the
//! simulator served over https. Installs the pinned libraries when they are missing. Fails,
//! never skips, when `python3` is missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sim_entra::permissions as perm;
use sim_entra::{SimConfig, key_credential, password_credential, stock_application};

const TENANT: &str = "8f0c6c0e-5a53-4d2a-9c1e-2b7d4a6e9f31";
const APP: &str = "3d7f2b9a-6c41-4e85-a0d2-9b1c7e5f4a68";
const MGMT: &str = "c5a1e7d3-2f84-4b96-8e0a-71d3f9b2c645";
const MGMT_SECRET: &str = "sim~conformance-secret";
const READER: &str = "d6b2f8e4-3a95-4ca7-9f1b-82e4a0c3d756";
const READER_SECRET: &str = "sim~reader-secret";
const OTHER_APPS: usize = 4;
const POLICIES: usize = 5;
const KEYCRED_LIMIT: usize = 5;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `name==version` pins of the requirements file.
fn pins(requirements: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(requirements)
        .expect("tests/conformance/entra/requirements.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (n, v) = l
                .split_once("==")
                .unwrap_or_else(|| panic!("{l:?} is not pinned with =="));
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

fn installed(pins: &[(String, String)]) -> bool {
    let check = pins
        .iter()
        .map(|(n, v)| format!("importlib.metadata.version({n:?}) == {v:?}"))
        .collect::<Vec<_>>()
        .join(" and ");
    Command::new("python3")
        .args([
            "-c",
            &format!("import importlib.metadata, sys; sys.exit(0 if {check} else 1)"),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ensure_requirements(requirements: &Path) {
    let pins = pins(requirements);
    if installed(&pins) {
        return;
    }
    let req = requirements.to_str().unwrap();
    let mut out = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "-r", req])
        .output()
        .expect("python3 is required for the Entra ID conformance suite");
    if !out.status.success() {
        // Debian-style Pythons refuse system-wide installs without this flag.
        out = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--break-system-packages",
                "-r",
                req,
            ])
            .output()
            .expect("python3 -m pip");
    }
    assert!(
        out.status.success() && installed(&pins),
        "installing {req} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_libraries_agree_with_the_simulator() {
    let version = Command::new("python3").arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "python3 is required for the Entra ID conformance suite: {version:?}"
    );
    let root = repo_root();
    let suite_dir = root.join("tests/conformance/entra");
    let requirements = suite_dir.join("requirements.txt");
    tokio::task::spawn_blocking({
        let requirements = requirements.clone();
        move || ensure_requirements(&requirements)
    })
    .await
    .unwrap();

    let dir = support::temp_dir("conformance");
    let pki = support::make_pki(&dir);
    let sim = sim_entra::start(SimConfig {
        tls: Some(pki.identity.clone()),
        key_credentials_per_minute: KEYCRED_LIMIT,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    sim.add_tenant(TENANT);
    let mut app = stock_application(APP, "Coder");
    let end = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * 200))
        .unwrap();
    app["passwordCredentials"] = serde_json::json!([password_credential("coder-oidc", end)]);
    app["keyCredentials"] = serde_json::json!([key_credential("coder-cert", "Verify", end)]);
    app["isFallbackPublicClient"] = serde_json::json!(true);
    app["web"]["redirectUris"] =
        serde_json::json!(["https://coder.example.com/api/v2/users/oidc/callback"]);
    app["requiredResourceAccess"] = serde_json::json!([
        {"resourceAppId": sim_entra::GRAPH_APP_ID, "resourceAccess": [
            {"id": "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "type": "Scope"},
            {"id": "37f7f235-527c-4136-accd-4a02d197296e", "type": "Scope"}]},
        {"resourceAppId": "797f4846-ba00-4fd7-ba43-dac1f8f63013", "resourceAccess": [
            {"id": "41094075-9dad-400e-a0bd-54e686782033", "type": "Scope"}]}
    ]);
    sim.add_application(TENANT, app);
    for i in 0..OTHER_APPS {
        sim.add_application(
            TENANT,
            stock_application(
                &format!("7a1e0c55-0000-4000-8000-00000000000{i}"),
                &format!("Other app {i}"),
            ),
        );
    }
    sim.add_permission_grant(
        TENANT,
        APP,
        "AllPrincipals",
        "openid profile email User.Read",
    );
    sim.add_permission_grant(TENANT, APP, "Principal", "User.Read");
    let def = "{\"TokenLifetimePolicy\":{\"Version\":1,\"AccessTokenLifetime\":\"01:00:00\"}}";
    sim.add_token_lifetime_policy(TENANT, &format!("oidc-refresh-operator {APP}"), def);
    for i in 1..POLICIES {
        sim.add_token_lifetime_policy(TENANT, &format!("other policy {i}"), def);
    }
    sim.add_management_app(
        TENANT,
        MGMT,
        MGMT_SECRET,
        &[
            perm::APPLICATION_READWRITE_ALL,
            perm::DELEGATED_PERMISSION_GRANT_READ_ALL,
            perm::POLICY_READWRITE_APPLICATIONCONFIGURATION,
        ],
    );
    sim.add_management_app(TENANT, READER, READER_SECRET, &[perm::APPLICATION_READ_ALL]);

    let base = sim.base_url();
    let ca = pki.ca_file.to_str().unwrap().to_string();
    let script = suite_dir.join("suite.py");
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("SIM_BASE", &base)
            .env("SIM_TENANT", TENANT)
            .env("SIM_APP_ID", APP)
            .env("SIM_CLIENT_ID", MGMT)
            .env("SIM_CLIENT_SECRET", MGMT_SECRET)
            .env("SIM_READER_ID", READER)
            .env("SIM_READER_SECRET", READER_SECRET)
            .env("SIM_POLICY_COUNT", POLICIES.to_string())
            .env("SIM_APP_COUNT", (OTHER_APPS + 1).to_string())
            .env("SIM_KEYCRED_LIMIT", KEYCRED_LIMIT.to_string())
            .env("SSL_CERT_FILE", &ca)
            .env("REQUESTS_CA_BUNDLE", &ca)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .output()
            .expect("python3 runs the suite")
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Entra ID conformance suite failed ({elapsed:?}):\n{stdout}\n{stderr}"
    );
    println!("{stdout}(in {elapsed:?})");
}
