//! Runs the official-client conformance suites under `tests/conformance/<server>` (Node.js): a
//! child process bounded in time with its output collected, Node.js required with a clear
//! message, and the suite's pinned packages installed with `npm ci` when they are missing.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long `npm ci` may take on a fresh machine.
pub const NPM_TIMEOUT: Duration = Duration::from_secs(300);

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

/// Panics with a clear message when Node.js is not on `PATH`; `suite` names what needs it.
pub fn require_node(suite: &str) {
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`node --version` failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("Node.js is required for {suite} and was not found on PATH: {e}"),
    }
}

/// Installs the pinned dependencies of the suite in `dir` with `npm ci` unless every package of
/// `packages` is in its `node_modules` (one install at a time in a process: tests of one binary
/// may ask together).
pub fn npm_ci_unless_installed(dir: &Path, packages: &[&str]) {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let installed = packages.iter().all(|p| {
        dir.join("node_modules")
            .join(p)
            .join("package.json")
            .exists()
    });
    if installed {
        return;
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    let (ok, out) = run(npm, NPM_TIMEOUT);
    assert!(ok, "npm ci in {} failed:\n{out}", dir.display());
}
