"""Shared fixtures of the chart tests: value sets, the operator binary, the sandbox (the Kubernetes
API simulator served by `oidc-refresh-operator sandbox --serve`) and kubectl against it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chartlib import ROOT  # noqa: E402

# Value sets rendered by every test that is parametrized over VARIANTS.
VARIANTS: dict[str, dict] = {
    "default": {},
    "watch-namespaces": {"watchNamespaces": ["coder", "team-b"]},
    "replicas-2": {"replicaCount": 2},
    "leader-election-1-replica": {"leaderElection": {"enabled": True}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "ingress": {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
            "apiServer": {"cidrs": ["10.0.0.1/32"]},
            "identityProviders": {
                "cidrs": ["203.0.113.0/24", "2001:db8::/32"],
                "ports": [{"port": 443, "protocol": "TCP"}, {"port": 9999, "protocol": "TCP"}],
            },
        }
    },
    "everything": {
        "replicaCount": 3,
        "watchNamespaces": ["coder", "team-b", "team-c"],
        "image": {"repository": "registry.example.com/oidc-refresh-operator",
                  "digest": "sha256:" + "ab" * 32, "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "fullnameOverride": "oro",
        "operator": {"logFormat": "text", "logLevel": "info,oidc_refresh_operator=debug",
                     "concurrency": 16, "providerTimeout": "1m30s", "adminPort": 9090,
                     "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"}]},
        "serviceAccount": {"name": "oro-sa", "annotations": {"example.com/owner": "platform"}},
        "podAnnotations": {"example.com/scrape": "true"},
        "podLabels": {"team": "platform"},
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "oidc-refresh-operator"}}}}]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "oidc-refresh-operator"}}}],
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
        "service": {"port": 9090, "annotations": {"example.com/a": "b"}},
        "serviceMonitor": {"enabled": True, "interval": "1m", "scrapeTimeout": "20s",
                           "relabelings": [{"action": "replace", "targetLabel": "team", "replacement": "platform"}]},
        "networkPolicy": {"enabled": True, "extraEgress": [{"to": [{"ipBlock": {"cidr": "198.51.100.7/32"}}],
                                                            "ports": [{"port": 3128, "protocol": "TCP"}]}]},
        "argocd": {"healthCheck": {"configMap": True}},
    },
}


def kinds(objs: list[dict]) -> list[str]:
    return [o["kind"] for o in objs]


def find(objs: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]


def one(objs: list[dict], kind: str, **kw) -> dict:
    found = find(objs, kind, **kw)
    assert len(found) == 1, f"expected one {kind} {kw}, got {len(found)}"
    return found[0]


def container(objs: list[dict]) -> dict:
    dep = one(objs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def env_of(objs: list[dict]) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objs).get("env", [])}


# --- the operator binary and the sandbox -----------------------------------------------------

def _cargo_build_binary() -> Path:
    """Builds the operator (with the sandbox feature) and returns the executable's path."""
    proc = subprocess.run(
        ["cargo", "build", "-q", "--bin", "oidc-refresh-operator", "--message-format=json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=1800,
    )
    assert proc.returncode == 0, f"cargo build failed:\n{proc.stderr[-4000:]}"
    exe = None
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["name"] == "oidc-refresh-operator":
            exe = msg["executable"]
    assert exe, "cargo build reported no oidc-refresh-operator executable"
    return Path(exe)


@pytest.fixture(scope="session")
def operator_bin() -> Path:
    override = os.environ.get("OIDC_REFRESH_OPERATOR_BIN")
    if override:
        return Path(override)
    return _cargo_build_binary()


class Sandbox:
    def __init__(self, proc: subprocess.Popen, kubeconfig: Path, log: Path):
        self.proc, self.kubeconfig, self.log = proc, kubeconfig, log

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], input=stdin,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
        return proc

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)


def stop_process_group(proc: subprocess.Popen) -> None:
    """Stops a process started with start_new_session=True, and its children (its own group)."""
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


@pytest.fixture(scope="session")
def sandbox(operator_bin: Path, tmp_path_factory) -> Sandbox:
    """`oidc-refresh-operator sandbox --provider google --serve`: the Kubernetes API simulator with
    a Coder Deployment, a Ready example policy and the controller; kubectl talks to it."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is required (it is part of the development image)")
    tmp = tmp_path_factory.mktemp("sandbox")
    kubeconfig, log = tmp / "kubeconfig", tmp / "sandbox.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(operator_bin), "sandbox", "--provider", "google", "--serve", "--kubeconfig", str(kubeconfig)],
            cwd=tmp, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while not kubeconfig.exists() or kubeconfig.stat().st_size == 0:
            if proc.poll() is not None:
                pytest.fail(f"the sandbox exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the sandbox wrote no kubeconfig within 120 s:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        yield Sandbox(proc, kubeconfig, log)
    finally:
        stop_process_group(proc)
