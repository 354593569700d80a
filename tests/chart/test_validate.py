"""Every rendered manifest validates against the Kubernetes OpenAPI schemas with
kubernetes-validate --strict (unknown fields are errors)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from chartlib import CHART_CRD, DEPLOY, render
from conftest import VARIANTS

KUBERNETES_VERSION = "1.33"
# Kinds whose schema is not part of Kubernetes (CRDs of other projects): checked structurally.
NOT_IN_KUBERNETES = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def validate(obj: dict) -> None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{obj['kind']} {obj['metadata'].get('name')}: {e.message} at {list(e.path)}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_validate_strictly(variant):
    checked = 0
    for obj in render(VARIANTS[variant]):
        if (obj["apiVersion"], obj["kind"]) in NOT_IN_KUBERNETES:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
            assert set(obj["spec"]) <= {"selector", "namespaceSelector", "endpoints"}
            for ep in obj["spec"]["endpoints"]:
                assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings"}
            continue
        validate(obj)
        checked += 1
    assert checked >= 5


def test_the_crd_validates_strictly():
    docs = [d for d in yaml.safe_load_all(CHART_CRD.read_text()) if d]
    assert [d["kind"] for d in docs] == ["CustomResourceDefinition"]
    validate(docs[0])


def test_strict_validation_catches_an_unknown_field():
    obj = render()[-1]
    assert obj["kind"] == "Deployment"
    obj["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validate_cli_accepts_deploy_operator_yaml():
    exe = shutil.which("kubernetes-validate")
    cmd = [exe] if exe else [sys.executable, "-m", "kubernetes_validate"]
    proc = subprocess.run([*cmd, "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(DEPLOY)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
    assert "ERROR" not in proc.stdout, proc.stdout
