//! Running the Node.js conformance scripts in `tests/conformance/duende` (Skoruba's published API
//! client, pinned in its `package.json` and `package-lock.json`) against a simulator: used by
//! this crate's conformance test and by the operator's provider tests. Needs Node.js (≥ 18) on
//! `PATH`; installs the pinned dependencies with `npm ci` when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one script may run.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// The pinned client package.
pub const CLIENT_PACKAGE: &str = "@skoruba/duende.identityserver.admin.api.client";

/// `tests/conformance/duende` of the workspace.
pub fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/duende")
}

/// Runs `node <args>` in the suite directory with `env` (and `TZ=UTC`: the client parses
/// zone-less date-times as local time), after making sure Node.js and the dependencies are there.
/// Returns (success, stdout + stderr).
pub fn node(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    suite_runner::require_node("the Duende conformance scripts (tests/conformance/duende)");
    let dir = suite_dir();
    suite_runner::npm_ci_unless_installed(&dir, &[CLIENT_PACKAGE]);
    let mut cmd = Command::new("node");
    cmd.args(args)
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .env("TZ", "UTC");
    for (k, v) in env {
        cmd.env(k, v);
    }
    suite_runner::run(cmd, SCRIPT_TIMEOUT)
}
