"""The rendered chart applied with the real kubectl to the Kubernetes API simulator (the sandbox),
and the operator started with exactly the configuration the chart's Deployment gives it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request

import pytest
import yaml

from chartlib import CHART_CRD, DEPLOY, render
from conftest import VARIANTS, Sandbox, env_of, one, stop_process_group

# What a cluster with the Prometheus Operator has: the ServiceMonitor CRD (trimmed to its shape).
SERVICE_MONITOR_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def dump(objs: list[dict]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)


def served_kinds(sb: Sandbox) -> set[tuple[str, str]]:
    out = sb.kubectl("api-resources", "--no-headers", "-o", "wide").stdout
    served = set()
    for line in out.splitlines():
        cols = line.split()
        # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND VERBS...: find APIVERSION by its position
        # before true/false.
        idx = next(i for i, c in enumerate(cols) if c in ("true", "false"))
        served.add((cols[idx - 1], cols[idx + 1]))
    return served


def ensure_namespace(sb: Sandbox, name: str) -> None:
    sb.kubectl("apply", "-f", "-", stdin=f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")


def assert_stored(sb: Sandbox, objs: list[dict]) -> None:
    for o in objs:
        ns = o["metadata"].get("namespace")
        args = [f"{o['kind'].lower()}.{o['apiVersion'].split('/')[0]}" if "/" in o["apiVersion"] else o["kind"].lower(),
                o["metadata"]["name"]]
        if ns:
            args += ["-n", ns]
        live = sb.get(*args)
        assert live["metadata"]["labels"] == o["metadata"]["labels"], o["metadata"]["name"]
        for key in ("rules", "subjects", "roleRef"):
            if key in o:
                assert live[key] == o[key], (o["kind"], o["metadata"]["name"], key)
        if o["kind"] == "Deployment":
            want = o["spec"]["template"]["spec"]["containers"][0]
            got = live["spec"]["template"]["spec"]["containers"][0]
            for key in ("image", "args", "env", "securityContext", "resources"):
                assert got[key] == want[key], key


def test_default_install_applies_with_kubectl(sandbox: Sandbox):
    out = sandbox.kubectl("apply", "-f", str(CHART_CRD)).stdout
    assert "customresourcedefinition.apiextensions.k8s.io/oidcrefreshpolicies.oidcrefresh.dev" in out
    out = sandbox.kubectl("apply", "-f", str(DEPLOY)).stdout
    for line in ("namespace/oidc-refresh-operator", "serviceaccount/oidc-refresh-operator",
                 "clusterrole.rbac.authorization.k8s.io/oidc-refresh-operator",
                 "clusterrolebinding.rbac.authorization.k8s.io/oidc-refresh-operator",
                 "service/oidc-refresh-operator-metrics", "deployment.apps/oidc-refresh-operator"):
        assert line in out, out
    assert_stored(sandbox, render())
    # Applying again changes nothing.
    out = sandbox.kubectl("apply", "-f", str(DEPLOY)).stdout
    assert all(line.endswith("unchanged") for line in out.splitlines()), out
    # The sandbox's own policy is still Ready: nothing the chart installs interferes.
    ready = sandbox.kubectl("get", "orp", "coder", "-n", "coder", "-o",
                            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}").stdout
    assert ready == "True"


def test_namespaced_leader_elected_install_applies_with_kubectl(sandbox: Sandbox):
    values = VARIANTS["watch-namespaces"] | {"replicaCount": 2}
    objs = render(values, release="oro-ns", namespace="oro-ns")
    for ns in ("oro-ns", "team-b"):
        ensure_namespace(sandbox, ns)
    out = sandbox.kubectl("apply", "-f", "-", stdin=dump(objs)).stdout
    assert "role.rbac.authorization.k8s.io/oro-ns-oidc-refresh-operator created" in out, out
    assert "role.rbac.authorization.k8s.io/oro-ns-oidc-refresh-operator-leader-election created" in out, out
    assert_stored(sandbox, objs)
    roles = sandbox.get("roles", "-A", "-l", "app.kubernetes.io/instance=oro-ns")["items"]
    assert sorted((r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles) == [
        ("coder", "oro-ns-oidc-refresh-operator"),
        ("oro-ns", "oro-ns-oidc-refresh-operator-leader-election"),
        ("team-b", "oro-ns-oidc-refresh-operator"),
    ]
    assert sandbox.get("clusterroles", "-l", "app.kubernetes.io/instance=oro-ns")["items"] == []


def test_optional_objects_apply_with_kubectl(sandbox: Sandbox):
    values = VARIANTS["service-monitor"] | VARIANTS["network-policy"] | {"argocd": {"healthCheck": {"configMap": True}}}
    objs = render(values, release="oro-opt", namespace="oro-opt")
    ensure_namespace(sandbox, "oro-opt")
    sandbox.kubectl("apply", "-f", "-", stdin=SERVICE_MONITOR_CRD)
    served = served_kinds(sandbox)
    applied = [o for o in objs if (o["apiVersion"], o["kind"]) in served]
    missing = sorted({f"{o['apiVersion']} {o['kind']}" for o in objs} - {f"{a} {k}" for a, k in served})
    sandbox.kubectl("apply", "-f", "-", stdin=dump(applied))
    assert_stored(sandbox, applied)
    sm = sandbox.get("servicemonitor", "oro-opt-oidc-refresh-operator", "-n", "oro-opt")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert "ConfigMap" in {o["kind"] for o in applied}
    assert not missing, f"kinds the chart renders that the simulator does not serve: {missing}"


def test_network_policy_applies_with_kubectl(sandbox: Sandbox):
    objs = [o for o in render(VARIANTS["network-policy"], release="oro-np", namespace="oro-np")
            if o["kind"] == "NetworkPolicy"]
    assert objs, "the variant renders a NetworkPolicy"
    ensure_namespace(sandbox, "oro-np")
    sandbox.kubectl("apply", "-f", "-", stdin=dump(objs))
    assert_stored(sandbox, objs)
    # The API server defaults policyTypes and each port's protocol; the chart sets both, so what
    # is stored is what was rendered and Argo CD sees no drift.
    stored = sandbox.get("networkpolicy", objs[0]["metadata"]["name"], "-n", "oro-np")
    assert stored["spec"] == objs[0]["spec"]
    # kubectl prints the server's Table: the pod selector, formatted like the API server does.
    table = sandbox.kubectl("get", "networkpolicy", "-n", "oro-np").stdout
    labels = objs[0]["spec"]["podSelector"]["matchLabels"]
    assert "POD-SELECTOR" in table.splitlines()[0], table
    assert ",".join(f"{k}={v}" for k, v in sorted(labels.items())) in table, table
    # A second apply of the same objects changes nothing.
    out = sandbox.kubectl("apply", "-f", "-", stdin=dump(objs)).stdout
    assert "unchanged" in out, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@pytest.mark.parametrize("variant", ["default", "watch-namespaces+replicas-2"])
def test_operator_accepts_the_charts_configuration(sandbox: Sandbox, operator_bin, tmp_path, variant):
    """The binary started with the Deployment's args and env (fieldRefs resolved as the kubelet
    would) serves /healthz and /readyz; with leader election it takes the Lease."""
    values = {} if variant == "default" else VARIANTS["watch-namespaces"] | {"replicaCount": 2}
    namespace = "oidc-refresh-operator" if variant == "default" else "oro-ns"
    objs = render(values, namespace=namespace)
    ensure_namespace(sandbox, namespace)
    c = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("WATCH_NAMESPACE", "WATCH_NAMESPACES", "LEADER_ELECT")}
    pod_name = f"oidc-refresh-operator-test-{variant.split('+')[0]}"
    for name, value in env_of(objs).items():
        if isinstance(value, dict):
            value = {"metadata.name": pod_name, "metadata.namespace": namespace}[value["fieldRef"]["fieldPath"]]
        env[name] = value
    env["ADMIN_ADDR"] = f"127.0.0.1:{port}"  # the chart's 0.0.0.0:8080, on a free local port
    env["KUBECONFIG"] = str(sandbox.kubeconfig)
    log = tmp_path / "operator.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(operator_bin), *c["args"]], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (http_status(f"http://127.0.0.1:{port}/healthz") == 200
                   and http_status(f"http://127.0.0.1:{port}/readyz") == 200):
            assert proc.poll() is None, f"the operator exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"not ready within 60 s:\n{log.read_text()[-4000:]}"
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert b"oidc_refresh" in resp.read()
        if "LEADER_ELECT" in env_of(objs):
            # Ready means healthy, leader or standby: wait for the Lease to name this process.
            deadline = time.monotonic() + 60
            while True:
                leases = sandbox.get("leases", "-n", namespace)["items"]
                holders = [l["spec"].get("holderIdentity") for l in leases if l["metadata"]["name"] == "oidc-refresh-operator"]
                if holders == [pod_name]:
                    break
                assert proc.poll() is None, f"the operator exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
                assert time.monotonic() < deadline, f"Lease not taken within 60 s: {holders}\n{log.read_text()[-4000:]}"
                time.sleep(0.3)
    finally:
        stop_process_group(proc)
    assert proc.returncode == 0, log.read_text()[-4000:]
