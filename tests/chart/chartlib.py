"""Rendering the chart with the real Helm engine (helm-python-sdk embeds Helm's Go SDK through
libhelm_c; no helm binary, no cluster, no network) and generating deploy/operator.yaml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "oidc-refresh-operator"
CRD = ROOT / "crds" / "oidcrefreshpolicies.oidcrefresh.dev.yaml"
CHART_CRD = CHART / "crds" / "oidcrefreshpolicies.oidcrefresh.dev.yaml"
DEPLOY = ROOT / "deploy" / "operator.yaml"
HEALTH_DIR = CHART / "argocd" / "resource_customizations" / "oidcrefresh.dev" / "OidcRefreshPolicy"
HEALTH_LUA = HEALTH_DIR / "health.lua"

RELEASE = "oidc-refresh-operator"
NAMESPACE = "oidc-refresh-operator"

# Helm's install order (pkg/release/util/kind_sorter.go); unknown kinds go last.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]

DOC_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)


def render_files(values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE,
                 release: str = RELEASE) -> dict[str, str]:
    """Template path -> rendered text, as Helm renders them (NOTES.txt included)."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=release, namespace=namespace, is_install=True)


def _documents(path: str, text: str) -> list[tuple[str, str, dict]]:
    docs = []
    for part in DOC_SPLIT.split(text):
        body = part.strip("\n")
        obj = yaml.safe_load(body) if body.strip() else None
        if obj is None:
            continue
        docs.append((path, body, obj))
    return docs


def _order(kind: str) -> int:
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


def render_documents(values: dict[str, Any] | None = None, **kw) -> list[tuple[str, str, dict]]:
    """The rendered manifests as (template path, text, object), in Helm's install order, like
    `helm template` prints them (NOTES.txt and partials excluded)."""
    docs = []
    for path, text in sorted(render_files(values, **kw).items()):
        if path.endswith("NOTES.txt") or Path(path).name.startswith("_"):
            continue
        docs.extend(_documents(path, text))
    return sorted(docs, key=lambda d: _order(d[2]["kind"]))  # stable: keeps path order per kind


def render(values: dict[str, Any] | None = None, **kw) -> list[dict]:
    """The rendered manifests as objects."""
    return [obj for _, _, obj in render_documents(values, **kw)]


def render_notes(values: dict[str, Any] | None = None, **kw) -> str:
    files = render_files(values, **kw)
    return next(text for path, text in files.items() if path.endswith("NOTES.txt"))


def template_output(values: dict[str, Any] | None = None, **kw) -> str:
    """The text `helm template` prints: `---`, `# Source: <template>`, the manifest."""
    out = []
    for path, body, _ in render_documents(values, **kw):
        out.append(f"---\n# Source: {path}\n{body}\n")
    return "".join(out)


DEPLOY_HEADER = """\
# GENERATED: do not edit. The plain-manifest install of oidc-refresh-operator, rendered from
# charts/oidc-refresh-operator with its default values (release and namespace
# oidc-refresh-operator): the Namespace, then `helm template` output. Regenerate with
#   python3 tests/chart/render_deploy.py
# (tests/chart checks that this file is in sync with the chart).
#
# Install: the CRD first, then this file; build and push the image it names first (README,
# "Install with Helm" / Dockerfile), or edit the image below.
#   kubectl apply --server-side -f crds/
#   kubectl apply -f deploy/operator.yaml
"""

NAMESPACE_DOC = f"""\
---
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    app.kubernetes.io/part-of: oidc-refresh-operator
    # The operator's pod meets the restricted Pod Security Standard.
    pod-security.kubernetes.io/enforce: restricted
"""


def deploy_manifest() -> str:
    """The full text of deploy/operator.yaml."""
    return DEPLOY_HEADER + NAMESPACE_DOC + template_output()


def lint(values: dict[str, Any] | None = None, **kw) -> dict[str, Any]:
    return helm.lint(CHART, values, namespace=NAMESPACE, **kw)


def validate_values(values: dict[str, Any] | None) -> None:
    """Raises helm_python.HelmValuesError when values.schema.json rejects the values."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
