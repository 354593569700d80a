//! Runs the Node.js scripts of `tests/conformance/keycloak` (Keycloak's official
//! `@keycloak/keycloak-admin-client`, pinned in its `package.json`): finds Node, installs the
//! pinned dependencies with `npm ci` when `node_modules` lacks them, and runs a script with a
//! time limit. Included with `#[path]` by the tests that drive a Keycloak through it.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `npm ci` may take.
pub const NPM_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `cmd` to completion or until `timeout`; returns (success, stdout + stderr).
pub fn run(mut cmd: Command, timeout: Duration) -> (bool, String) {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!(
        "{}\n{}",
        out_reader.join().unwrap_or_default(),
        err_reader.join().unwrap_or_default()
    );
    match status {
        Some(s) => (s.success(), text),
        None => (false, format!("{what} timed out after {timeout:?}\n{text}")),
    }
}

/// Panics with a clear message when Node.js is not on `PATH`.
pub fn require_node() {
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`node --version` failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "Node.js is required for the Keycloak conformance suite (tests/conformance/keycloak) and was not found on PATH: {e}"
        ),
    }
}

/// `npm ci` in `dir` unless the official admin client is installed there already.
pub fn ensure_dependencies(dir: &Path) {
    if dir
        .join("node_modules/@keycloak/keycloak-admin-client/package.json")
        .exists()
    {
        return;
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    let (ok, out) = run(npm, NPM_TIMEOUT);
    assert!(ok, "npm ci in {} failed:\n{out}", dir.display());
}
