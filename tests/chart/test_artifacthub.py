"""Artifact Hub metadata in Chart.yaml: the documented annotations parse, the images listed are the
ones the chart deploys, and the example policies are valid against the CRD (created with
server-side dry run and strict field validation in the Kubernetes API simulator)."""

from __future__ import annotations

import copy

import yaml

from chartlib import CHART, render
from conftest import Sandbox, container

CHART_YAML = yaml.safe_load((CHART / "Chart.yaml").read_text())
ANNOTATIONS = CHART_YAML["annotations"]
# Artifact Hub's documented Helm annotations (artifacthub.io docs, "Helm annotations").
DOCUMENTED = {"changes", "containsSecurityUpdates", "images", "crds", "crdsExamples", "license", "links",
              "maintainers", "operator", "operatorCapabilities", "prerelease", "alternativeName", "category",
              "recommendations", "screenshots", "signKey"}
CAPABILITIES = {"Basic Install", "Seamless Upgrades", "Full Lifecycle", "Deep Insights", "Auto Pilot"}
CHANGE_KINDS = {"added", "changed", "deprecated", "removed", "fixed", "security"}
EXAMPLES_NAMESPACE = "artifacthub-examples"


def annotation(key: str):
    return yaml.safe_load(ANNOTATIONS[f"artifacthub.io/{key}"])


def test_only_documented_annotations_with_their_types():
    keys = {k.removeprefix("artifacthub.io/") for k in ANNOTATIONS if k.startswith("artifacthub.io/")}
    assert keys <= DOCUMENTED, keys - DOCUMENTED
    assert {"operator", "operatorCapabilities", "crds", "crdsExamples", "images", "links", "changes", "license",
            "containsSecurityUpdates", "prerelease"} <= keys
    for flag in ("operator", "containsSecurityUpdates", "prerelease"):
        assert ANNOTATIONS[f"artifacthub.io/{flag}"] in ("true", "false"), flag
    assert ANNOTATIONS["artifacthub.io/operator"] == "true"
    assert ANNOTATIONS["artifacthub.io/operatorCapabilities"] in CAPABILITIES
    assert ANNOTATIONS["artifacthub.io/license"] == "Apache-2.0"
    # A 0.x chart is a pre-release.
    assert (ANNOTATIONS["artifacthub.io/prerelease"] == "true") == CHART_YAML["version"].startswith("0.")
    for link in annotation("links"):
        assert set(link) == {"name", "url"} and link["url"].startswith("https://"), link
    changes = annotation("changes")
    assert changes and all(set(c) <= {"kind", "description", "links"} and c["kind"] in CHANGE_KINDS
                           for c in changes), changes


def test_crds_name_the_chart_crd():
    crd = yaml.safe_load((CHART / "crds" / "oidcrefreshpolicies.oidcrefresh.dev.yaml").read_text())
    served = {(crd["spec"]["names"]["kind"], v["name"]) for v in crd["spec"]["versions"] if v["served"]}
    listed = annotation("crds")
    assert {(c["kind"], c["version"]) for c in listed} <= served
    assert all(c["name"] == crd["metadata"]["name"] for c in listed)
    examples = annotation("crdsExamples")
    assert {(e["kind"], e["apiVersion"].split("/")[1]) for e in examples} == {(c["kind"], c["version"]) for c in listed}
    assert all(e["apiVersion"].split("/")[0] == crd["spec"]["group"] for e in examples)


def test_images_are_the_ones_the_chart_deploys():
    images = annotation("images")
    assert [i["image"] for i in images] == [container(render())["image"]]
    assert not any(i["image"].endswith(":latest") for i in images), "Artifact Hub does not scan :latest"


def dry_run_create(sandbox: Sandbox, obj: dict):
    return sandbox.kubectl("create", "--dry-run=server", "--validate=strict", "-n", EXAMPLES_NAMESPACE,
                           "-o", "json", "-f", "-", stdin=yaml.safe_dump(obj), check=False)


def test_crds_examples_validate_against_the_crd(sandbox: Sandbox):
    sandbox.kubectl("apply", "-f", "-",
                    stdin=f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {EXAMPLES_NAMESPACE}\n")
    for example in annotation("crdsExamples"):
        proc = dry_run_create(sandbox, example)
        assert proc.returncode == 0, f"{example['metadata']['name']}: {proc.stderr}"
    # The check can fail: an unknown field and a wrong type are rejected.
    bad = copy.deepcopy(annotation("crdsExamples")[0])
    bad["spec"]["coder"]["deploymentName"] = bad["spec"]["coder"].pop("deployment")
    proc = dry_run_create(sandbox, bad)
    assert proc.returncode != 0 and "deploymentName" in proc.stderr, proc.stderr
    bad = copy.deepcopy(annotation("crdsExamples")[0])
    bad["spec"]["coder"]["deployment"] = 7
    assert dry_run_create(sandbox, bad).returncode != 0
