//! Running the official-client suite in `tests/conformance/logto` (Node.js, `@logto/api`,
//! `@logto/schemas` and `@logto/phrases` pinned in its `package.json` and `package-lock.json`):
//! the simulator's own conformance test and the operator's tests that change Logto through the
//! official client share the install and the bounded runner.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use suite_runner::run;

/// `tests/conformance/logto` of this repository.
pub fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/logto")
}

/// Runs `node <args>` in the suite's directory with `env`, after making sure Node.js and the
/// pinned packages are there. Returns (success, stdout + stderr).
pub fn node(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> (bool, String) {
    suite_runner::require_node("the Logto conformance suite (tests/conformance/logto)");
    let dir = suite_dir();
    suite_runner::npm_ci_unless_installed(
        &dir,
        &["@logto/api", "@logto/schemas", "@logto/phrases", "zod"],
    );
    let mut node = Command::new("node");
    node.args(args).current_dir(&dir).env("NO_COLOR", "1");
    for (k, v) in env {
        node.env(k, v);
    }
    run(node, timeout)
}
