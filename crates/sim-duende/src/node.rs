//! Running the Node.js conformance scripts in `tests/conformance/duende` (Skoruba's published API
//! client, pinned in its `package.json` and `package-lock.json`) against a simulator: used by
//! this crate's conformance test and by the operator's provider tests. Needs Node.js (≥ 18) on
//! `PATH`; installs the pinned dependencies with `npm ci` when they are missing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one script may run.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `npm ci` may run.
pub const NPM_TIMEOUT: Duration = Duration::from_secs(300);
/// The pinned client package.
pub const CLIENT_PACKAGE: &str = "@skoruba/duende.identityserver.admin.api.client";

/// `tests/conformance/duende` of the workspace.
pub fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/duende")
}

/// Runs `cmd` to completion or until `timeout`; returns (success, stdout + stderr).
pub fn run(mut cmd: Command, timeout: Duration) -> (bool, String) {
    let what = format!("{cmd:?}");
    let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot start {what}: {e}")),
    };
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
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break None,
        }
    };
    let text = format!(
        "{}\n{}",
        out_reader.join().unwrap_or_default(),
        err_reader.join().unwrap_or_default()
    );
    match status {
        Some(s) => (s.success(), text),
        None => (
            false,
            format!("{what} did not finish within {timeout:?}\n{text}"),
        ),
    }
}

/// Panics with a clear message when Node.js is missing.
pub fn require_node() {
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`node --version` failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "Node.js is required for the Duende conformance scripts (tests/conformance/duende) and was not found on PATH: {e}"
        ),
    }
}

/// Installs the pinned dependencies when they are missing.
pub fn ensure_dependencies() {
    let dir = suite_dir();
    if dir
        .join("node_modules")
        .join(CLIENT_PACKAGE)
        .join("package.json")
        .exists()
    {
        return;
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir);
    let (ok, out) = run(npm, NPM_TIMEOUT);
    assert!(ok, "npm ci in {} failed:\n{out}", dir.display());
}

/// Runs `node <args>` in the suite directory with `env` (and `TZ=UTC`: the client parses
/// zone-less date-times as local time), after making sure Node.js and the dependencies are there.
pub fn node(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    require_node();
    ensure_dependencies();
    let mut cmd = Command::new("node");
    cmd.args(args)
        .current_dir(suite_dir())
        .env("NO_COLOR", "1")
        .env("TZ", "UTC");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd, SCRIPT_TIMEOUT)
}
