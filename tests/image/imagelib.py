"""Helpers and fixtures of the image tests, imported by test_image.py (not a conftest.py: the chart
tests import their own `conftest` by name, and a second one would shadow it when both directories
run in one pytest session): the release binary, the image scripts/build-image makes of it (an OCI
layout), its unpacked bundle, and a bare Kubernetes API simulator
(`cargo run -p kube-sim --example serve`) for it to run against.

Nothing is skipped: a tool that is missing after an install attempt (apt-get, as root) fails the
test that needs it, naming the package to install."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "chart"))

BIN_NAME = "oidc-refresh-operator"
TAG = "test"
SOURCE = "https://example.com/oidc-refresh-operator"


def ensure_tool(tool: str, package: str) -> str:
    """The path of `tool`, installing Debian's `package` with apt-get (as root) when missing."""
    path = shutil.which(tool)
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is required and could not be installed: apt-get install -y {package} (as root)")
    return path


def cargo_executable(args: list[str], name: str) -> Path:
    """Runs `cargo build <args> --message-format=json` and returns the executable named `name`."""
    proc = subprocess.run(["cargo", "build", *args, "--message-format=json-render-diagnostics"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=3600)
    assert proc.returncode == 0, f"cargo build {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    exe = None
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == name:
            exe = msg["executable"]
    assert exe, f"cargo build {' '.join(args)} reported no {name} executable"
    return Path(exe)


@pytest.fixture(scope="session")
def release_bin() -> Path:
    """The binary the Dockerfile builds (cached by cargo after the first build)."""
    override = os.environ.get("OIDC_REFRESH_OPERATOR_RELEASE_BIN")
    if override:
        return Path(override)
    return cargo_executable(["--release", "--locked", "--no-default-features", "--bin", BIN_NAME], BIN_NAME)


class Image:
    def __init__(self, layout: Path, archive: Path, digest: str, binary: Path):
        self.layout, self.archive, self.digest, self.binary = layout, archive, digest, binary
        self.ref = f"{layout}:{TAG}"

    def blob(self, digest: str) -> bytes:
        algo, hexdigest = digest.split(":", 1)
        return (self.layout / "blobs" / algo / hexdigest).read_bytes()

    def manifest(self) -> dict:
        index = json.loads((self.layout / "index.json").read_text())
        (desc,) = [m for m in index["manifests"]
                   if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == TAG]
        return json.loads(self.blob(desc["digest"]))

    def config(self) -> dict:
        return json.loads(self.blob(self.manifest()["config"]["digest"]))


@pytest.fixture(scope="session")
def image(release_bin: Path, tmp_path_factory) -> Image:
    """scripts/build-image of the release binary: an OCI layout and its archive."""
    ensure_tool("umoci", "umoci")
    tmp = tmp_path_factory.mktemp("image")
    layout, archive = tmp / "oci", tmp / "image.tar"
    proc = subprocess.run([str(ROOT / "scripts" / "build-image"), "--binary", str(release_bin),
                           "--output", str(layout), "--tag", TAG, "--archive", str(archive), "--source", SOURCE],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert proc.returncode == 0, f"scripts/build-image failed:\n{proc.stdout}{proc.stderr}"
    out = json.loads(proc.stdout)
    return Image(layout, archive, out["digest"], release_bin)


@pytest.fixture(scope="session")
def bundle(image: Image, tmp_path_factory) -> Path:
    """`umoci unpack` of the image: an OCI runtime bundle (config.json and rootfs/)."""
    umoci = ensure_tool("umoci", "umoci")
    path = tmp_path_factory.mktemp("bundle") / "bundle"
    proc = subprocess.run([umoci, "unpack", "--image", image.ref, str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0, f"umoci unpack failed:\n{proc.stdout}{proc.stderr}"
    return path


def stop_process_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


class KubeSim:
    def __init__(self, proc: subprocess.Popen, kubeconfig: Path, log: Path):
        self.proc, self.kubeconfig, self.log = proc, kubeconfig, log

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], input=stdin,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
        assert proc.returncode == 0, f"kubectl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
        return proc.stdout

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json"))


def kube_sim_serve() -> Path:
    """The `serve` example of kube-sim: a bare Kubernetes API simulator that writes its kubeconfig."""
    override = os.environ.get("KUBE_SIM_SERVE_BIN")
    return Path(override) if override else cargo_executable(["-p", "kube-sim", "--example", "serve"], "serve")


@contextlib.contextmanager
def start_kube_sim(tmp: Path, env: dict[str, str] | None = None):
    """Runs a bare Kubernetes API simulator (no controller of ours in it), plain HTTP on 127.0.0.1,
    with `env` (KUBE_SIM_ROLLOUT_DELAY_MS, KUBE_SIM_STUCK_ROLLOUTS: see its source); yields a KubeSim."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is required (it is part of the development image)")
    serve = kube_sim_serve()
    kubeconfig, log = tmp / "kubeconfig", tmp / "kube-sim.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(serve), str(kubeconfig)], cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ, **(env or {})))
    try:
        deadline = time.monotonic() + 60
        while not kubeconfig.exists() or kubeconfig.stat().st_size == 0:
            if proc.poll() is not None:
                pytest.fail(f"kube-sim serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"kube-sim serve wrote no kubeconfig within 60 s:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
        yield KubeSim(proc, kubeconfig, log)
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="session")
def kube_sim(tmp_path_factory) -> KubeSim:
    """A bare Kubernetes API simulator (no controller of ours in it), plain HTTP on 127.0.0.1."""
    with start_kube_sim(tmp_path_factory.mktemp("kube-sim")) as sim:
        yield sim


# --- starting the image ------------------------------------------------------------------------

class Runtime:
    """Starts processes from the unpacked image as a container runtime does: the image's user,
    env and working directory, a read-only root filesystem, no capabilities, no new privileges
    (the chart's securityContext), in new pid/mount/ipc/uts namespaces. The host's network (the
    simulator listens on 127.0.0.1, the test reaches the admin port there).

    With runc (Debian package runc) when it can start a container here; crun refuses this
    machine's hybrid cgroup v1/v2 layout. Otherwise `unshare` + `chroot --userspec` (util-linux
    and coreutils) on a read-only bind mount of the rootfs: the same files, user and read-only
    root, without runc's /proc, /dev and /sys mounts."""

    def __init__(self, bundle: Path, tmp: Path):
        self.bundle, self.tmp = bundle, tmp
        self.base = json.loads((bundle / "config.json").read_text())
        self.rootfs = (bundle / self.base["root"]["path"]).resolve() \
            if not os.path.isabs(self.base["root"]["path"]) else Path(self.base["root"]["path"])
        self.state = tmp / "runc-state"
        self.count = 0
        self.kind = self._pick()

    def _pick(self) -> str:
        if os.environ.get("IMAGE_TEST_RUNTIME") == "chroot":  # to exercise the fallback
            return "chroot"
        if shutil.which("runc") is None and os.geteuid() == 0 and shutil.which("apt-get"):
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "-qq", "runc"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if shutil.which("runc"):
            probe = self.run(["--version"], kind="runc", check=False)
            if probe.returncode == 0:
                return "runc"
            print(f"runc cannot start a container here, using unshare + chroot:\n{probe.stdout}{probe.stderr}")
        else:
            print("runc is not installed (apt-get install -y runc), using unshare + chroot")
        for tool, package in (("unshare", "util-linux"), ("chroot", "coreutils")):
            ensure_tool(tool, package)
        if os.geteuid() != 0:
            pytest.fail("starting the image needs root (runc, or unshare + chroot), or a working rootless runc")
        return "chroot"

    def spec(self, args: list[str], env: dict[str, str], mounts: list[tuple[str, str]]) -> dict:
        spec = json.loads(json.dumps(self.base))
        proc = spec["process"]
        proc["terminal"] = False
        proc["args"] = [proc["args"][0], *args]  # the image's entrypoint
        proc["env"] = [e for e in proc["env"] if e.split("=", 1)[0] not in env and not e.startswith("TERM=")] \
            + [f"{k}={v}" for k, v in env.items()]
        proc["noNewPrivileges"] = True
        proc["capabilities"] = {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")}
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
        spec["mounts"] += [{"destination": dst, "type": "bind", "source": src, "options": ["rbind", "ro"]}
                           for src, dst in mounts]
        return spec

    def _command(self, args, env, mounts, kind) -> tuple[list[str], str | None]:
        self.count += 1
        cid = f"oro-image-test-{os.getpid()}-{self.count}"
        if kind == "runc":
            run_bundle = self.tmp / cid
            run_bundle.mkdir(parents=True)
            (run_bundle / "config.json").write_text(json.dumps(self.spec(args, env, mounts)))
            return ["runc", "--root", str(self.state), "run", "--bundle", str(run_bundle), cid], cid
        # unshare + chroot: the rootfs bind-mounted read-only in a private mount namespace, the
        # image's env only, the image's user (numeric: chroot needs no passwd lookup).
        cfg = self.base["process"]
        user = f"{cfg['user']['uid']}:{cfg['user']['gid']}"
        full_env = {e.split("=", 1)[0]: e.split("=", 1)[1] for e in cfg["env"] if not e.startswith("TERM=")} | env
        for src, dst in mounts:  # bind-mount targets (the bundle is this test's own copy)
            target = self.rootfs / dst.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        q, root = shlex.quote, shlex.quote(str(self.rootfs))
        binds = "".join(f"mount --bind {q(src)} {q(str(self.rootfs) + dst)} && " for src, dst in mounts)
        script = (f"mount --make-rprivate / && mount --bind {root} {root} && {binds}"
                  f"mount -o remount,bind,ro {root} && "
                  f"cd {root} && exec env -i {' '.join(q(f'{k}={v}') for k, v in full_env.items())} "
                  f"chroot --userspec={user} {root} {q(cfg['args'][0])} {' '.join(map(q, args))}")
        return ["unshare", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", script], None

    def run(self, args: list[str], env: dict[str, str] | None = None, mounts: list[tuple[str, str]] = (),
            kind: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd, cid = self._command(args, env or {}, list(mounts), kind or self.kind)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        if cid:
            subprocess.run(["runc", "--root", str(self.state), "delete", "--force", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if check:
            assert proc.returncode == 0, \
                f"{self.kind}: oidc-refresh-operator {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        return proc

    def start(self, args: list[str], env: dict[str, str], mounts: list[tuple[str, str]], log: Path) -> "Started":
        cmd, cid = self._command(args, env, list(mounts), self.kind)
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        return Started(self, proc, cid, log)


class Started:
    def __init__(self, runtime: Runtime, proc: subprocess.Popen, cid: str | None, log: Path):
        self.runtime, self.proc, self.cid, self.log = runtime, proc, cid, log

    def pid(self) -> int | None:
        """The host pid of the operator process (the container's init)."""
        if self.cid:
            state = subprocess.run(["runc", "--root", str(self.runtime.state), "state", self.cid],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            return json.loads(state.stdout)["pid"] if state.returncode == 0 else None
        # unshare → sh (exec) → env (exec) → chroot (exec) → the binary: the child of unshare.
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        return int(pids[0]) if pids else None

    def stop(self) -> int:
        """SIGTERM to the operator (as the kubelet does), then its exit code."""
        if self.proc.poll() is None:
            if self.cid:
                subprocess.run(["runc", "--root", str(self.runtime.state), "kill", self.cid, "TERM"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            else:
                pid = self.pid()
                if pid:
                    os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                stop_process_group(self.proc)
        if self.cid:
            subprocess.run(["runc", "--root", str(self.runtime.state), "delete", "--force", self.cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self.proc.returncode


@pytest.fixture(scope="session")
def runtime(bundle: Path, tmp_path_factory) -> Runtime:
    return Runtime(bundle, tmp_path_factory.mktemp("runtime"))
