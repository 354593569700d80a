"""The chart installed, upgraded and uninstalled by Helm 4 itself (helm-python-sdk's embedded Go
SDK: the same install/upgrade/uninstall actions and `--wait` watcher as the helm CLI) into the
Kubernetes API simulator, whose Deployment controller emulation rolls the operator's Deployment
out after a delay (no Pods run: the wait is on the Deployment's status, as kstatus reads it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from chartlib import CHART, CHART_CRD

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "image"))
from imagelib import start_kube_sim  # noqa: E402

RELEASE = "oro"
STUCK = "oro-stuck"
# Long enough that a Deployment is not yet available when an install without --wait returns.
ROLLOUT_DELAY_MS = 1500
WAIT_S = 60


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A bare simulator; the rollouts of the `oro-stuck` release's Deployment never complete."""
    env = {"KUBE_SIM_ROLLOUT_DELAY_MS": str(ROLLOUT_DELAY_MS),
           "KUBE_SIM_STUCK_ROLLOUTS": f"{STUCK}/{STUCK}-oidc-refresh-operator"}
    with start_kube_sim(tmp_path_factory.mktemp("helm-install"), env) as sim:
        yield sim


def helm_config(cluster, namespace: str) -> helm.Config:
    return helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace)


def deployment(cluster, namespace: str, name: str) -> dict | None:
    out = cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json")
    return next((d for d in json.loads(out)["items"] if d["metadata"]["name"] == name), None)


def rolled_out(d: dict) -> bool:
    """What `kubectl rollout status` calls complete."""
    s, spec = d.get("status", {}), d["spec"]
    return (s.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and s.get("updatedReplicas") == spec["replicas"] == s.get("availableReplicas")
            and s.get("replicas") == spec["replicas"])


def test_install_waits_for_the_rollout_then_upgrade_and_uninstall(cluster):
    ns, name = RELEASE, f"{RELEASE}-oidc-refresh-operator"
    with helm_config(cluster, ns) as cfg, helm.Chart.load(CHART) as chart:
        release = cfg.install(chart, RELEASE, {}, namespace=ns, create_namespace=True, wait="watcher",
                              timeout=WAIT_S)
        assert (release["status"], release["revision"]) == ("deployed", 1)
        d = deployment(cluster, ns, name)
        assert rolled_out(d), d["status"]
        # Helm installed the CRD from crds/ first, and stored the release as a Secret.
        crd = json.loads(cluster.kubectl("get", "crd", "oidcrefreshpolicies.oidcrefresh.dev", "-o", "json"))
        assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
        assert crd["spec"]["versions"] == yaml.safe_load(CHART_CRD.read_text())["spec"]["versions"]
        secrets = json.loads(cluster.kubectl("get", "secrets", "-n", ns, "-l", "owner=helm", "-o", "json"))["items"]
        assert [s["metadata"]["name"] for s in secrets] == [f"sh.helm.release.v1.{RELEASE}.v1"]
        objects = [(o["kind"], o["metadata"]["name"]) for o in
                   json.loads(cluster.kubectl("get", "serviceaccounts,services,deployments", "-n", ns, "-o", "json"))[
                       "items"] if o["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE]
        assert ("ServiceAccount", name) in objects and ("Deployment", name) in objects, objects

        # An upgrade that changes the pod template: a new rollout, waited for too.
        generation = d["metadata"]["generation"]
        release = cfg.upgrade(chart, RELEASE, {"operator": {"logLevel": "debug"}}, namespace=ns, wait="watcher", timeout=WAIT_S)
        assert (release["status"], release["revision"]) == ("deployed", 2)
        d = deployment(cluster, ns, name)
        assert d["metadata"]["generation"] > generation
        assert rolled_out(d), d["status"]
        assert {"name": "RUST_LOG", "value": "debug"} in d["spec"]["template"]["spec"]["containers"][0]["env"]
        assert [r["revision"] for r in cfg.history(RELEASE)] == [1, 2]

        cfg.uninstall(RELEASE, wait="watcher", timeout=WAIT_S)
        assert deployment(cluster, ns, name) is None
        # The garbage collector took the Deployment's ReplicaSets with it.
        assert not json.loads(cluster.kubectl("get", "replicasets", "-n", ns, "-o", "json"))["items"]
        assert not json.loads(cluster.kubectl("get", "secrets", "-n", ns, "-l", "owner=helm", "-o", "json"))["items"]
        # Helm keeps CRDs on uninstall (policies would go with them).
        cluster.kubectl("get", "crd", "oidcrefreshpolicies.oidcrefresh.dev")


def test_legacy_wait_strategy_waits_for_the_rollout_too(cluster):
    """`--wait=legacy`: Helm 3's ready checker (the Deployment's new ReplicaSet and its ready
    replicas) instead of kstatus."""
    ns = f"{RELEASE}-legacy"
    with helm_config(cluster, ns) as cfg:
        release = cfg.install(CHART, ns, {}, namespace=ns, create_namespace=True, wait="legacy", timeout=WAIT_S)
        assert release["status"] == "deployed"
        d = deployment(cluster, ns, f"{ns}-oidc-refresh-operator")
        assert rolled_out(d), d["status"]
        cfg.uninstall(ns, wait="legacy", timeout=WAIT_S)
        assert deployment(cluster, ns, f"{ns}-oidc-refresh-operator") is None


def test_without_wait_install_returns_before_the_rollout(cluster):
    """The control: the same install without --wait returns while the Deployment still rolls out, so
    the test above sees the wait, not a fast simulator."""
    ns = f"{RELEASE}-nowait"
    with helm_config(cluster, ns) as cfg:
        release = cfg.install(CHART, ns, {}, namespace=ns, create_namespace=True, timeout=WAIT_S)
        assert release["status"] == "deployed"
        d = deployment(cluster, ns, f"{ns}-oidc-refresh-operator")
        assert not rolled_out(d), d["status"]
        cfg.uninstall(ns)


def test_install_wait_fails_on_a_rollout_past_its_progress_deadline(cluster):
    ns = STUCK
    with helm_config(cluster, ns) as cfg:
        with pytest.raises(helm.HelmReleaseError) as err:
            cfg.install(CHART, STUCK, {}, namespace=ns, create_namespace=True, wait="watcher", timeout=WAIT_S)
        assert f"Deployment/{ns}/{STUCK}-oidc-refresh-operator not ready" in str(err.value), err.value
        assert "Progress deadline exceeded" in str(err.value), err.value
        assert cfg.status(STUCK)["status"] == "failed"
        cfg.uninstall(STUCK)
