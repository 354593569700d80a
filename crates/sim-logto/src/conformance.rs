//! Running the official-client suite in `tests/conformance/logto` (Node.js, `@logto/api` and
//! `@logto/schemas` pinned in its `package.json` and `package-lock.json`): the simulator's own
//! conformance test and the operator's tests that change Logto through the official client use
//! the same dependency install and the same bounded process runner.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long `npm ci` may take on a fresh machine.
pub const NPM_TIMEOUT: Duration = Duration::from_secs(300);

/// `tests/conformance/logto` of this repository.
pub fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/logto")
}

/// Runs `cmd` to completion or until `timeout` (then kills it); returns (success, stdout +
/// stderr).
pub fn run(mut cmd: Command, timeout: Duration) -> (bool, String) {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let readers = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
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
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = readers.map(|r| r.join().unwrap_or_default()).join("\n");
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
            "Node.js is required for the Logto conformance suite (tests/conformance/logto) and was not found on PATH: {e}"
        ),
    }
}

/// Installs the suite's pinned dependencies with `npm ci` unless they are there (once per
/// process; tests in one binary may ask at the same time).
pub fn ensure_dependencies() {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = suite_dir();
    let installed = ["@logto/api", "@logto/schemas", "zod"].iter().all(|p| {
        dir.join("node_modules")
            .join(p)
            .join("package.json")
            .exists()
    });
    if installed {
        return;
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir);
    let (ok, out) = run(npm, NPM_TIMEOUT);
    assert!(ok, "npm ci in {} failed:\n{out}", dir.display());
}

/// Runs `node <args>` in the suite's directory with `env`, after making sure Node.js and the
/// dependencies are there. Returns (success, output).
pub fn node(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> (bool, String) {
    require_node();
    ensure_dependencies();
    let mut node = Command::new("node");
    node.args(args)
        .current_dir(suite_dir())
        .env("NO_COLOR", "1");
    for (k, v) in env {
        node.env(k, v);
    }
    run(node, timeout)
}
