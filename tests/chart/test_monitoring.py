"""The monitoring pack: the PrometheusRule (checked and unit-tested with promtool) and the Grafana
dashboard ConfigMap, whose queries use only metrics the operator exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chartlib import CHART, NAMESPACE, ROOT, render, validate_values
from conftest import find, one

DASHBOARD = CHART / "dashboards" / "oidc-refresh-operator.json"
PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool" / "rules_test.yaml"
MONITORING = {"prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
              "grafanaDashboard": {"enabled": True}}
ALERTS = ["OidcRefreshOperatorDown", "OidcRefreshReconcileErrors", "OidcRefreshPolicyStalled",
          "OidcRefreshPolicyNotReady", "OidcRefreshRolloutSlow", "OidcRefreshProviderErrors", "OidcRefreshProviderThrottled",
          "OidcRefreshClientSecretExpiring", "OidcRefreshClientSecretExpired"]
# Series Prometheus itself adds to every scrape target.
PROMETHEUS_SERIES = {"up"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is required: apt-get install -y prometheus (Debian's package ships promtool)")
    return path


def exported_metrics() -> set[str]:
    """Every series name the operator exposes, from the registrations in src/metrics.rs: the
    `oidc_refresh` prefix, `_total` for counters, `_bucket`/`_sum`/`_count` for histograms."""
    src = (ROOT / "src" / "metrics.rs").read_text()
    struct = src[src.index("pub struct Metrics {"):]
    struct = struct[:struct.index("\n}")]
    field_types = dict(re.findall(r"^\s*(\w+):\s*(.+?),\s*$", struct, re.MULTILINE))
    names = set()
    for name, field in re.findall(r'register\(\s*"(\w+)",.*?,\s*(\w+)\.clone\(\),?\s*\)', src, re.DOTALL):
        kind = field_types[field]
        full = f"oidc_refresh_{name}"
        if "Counter" in kind:
            names.add(full + "_total")
        elif "Histogram" in kind:
            names |= {full + "_bucket", full + "_sum", full + "_count"}
        elif "Gauge" in kind:
            names.add(full)
        else:
            raise AssertionError(f"unknown metric type {kind} of {field}")
    assert "oidc_refresh_reconciles_total" in names and len(names) >= 9, names
    return names


def series_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers not followed by `(`, outside strings, not
    label names or keywords)."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    idents = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    keywords = {"and", "or", "unless", "bool", "offset", "le", "e"}
    return {i for i in idents if i not in keywords and not re.fullmatch(r"[0-9e]+", i)}


def rules(values: dict | None = None) -> dict:
    return one(render(MONITORING | (values or {})), "PrometheusRule")


def test_off_by_default():
    objs = render({})
    assert not find(objs, "PrometheusRule")
    assert not [o for o in find(objs, "ConfigMap") if "grafana_dashboard" in o["metadata"].get("labels", {})]


def test_prometheus_rule_renders_every_alert_with_labels():
    r = rules({"prometheusRule": {"enabled": True, "labels": {"release": "prometheus"},
                                  "additionalLabels": {"team": "platform"}}})
    assert r["metadata"]["namespace"] == NAMESPACE and r["metadata"]["labels"]["release"] == "prometheus"
    alerts = [rule for g in r["spec"]["groups"] for rule in g["rules"]]
    assert [a["alert"] for a in alerts] == ALERTS
    for a in alerts:
        assert a["labels"]["team"] == "platform" and a["labels"]["severity"] in ("warning", "critical")
        assert 'job="oidc-refresh-operator", namespace="oidc-refresh-operator"' in a["expr"], a["expr"]
    # Values reach the expressions; alerts can be left out; a custom selector replaces the default.
    r = rules({"prometheusRule": {"enabled": True, "clientSecretExpiryDays": 7, "notReadyFor": "2h",
                                  "disabledAlerts": ["OidcRefreshOperatorDown"], "seriesSelector": 'job="oro"'}})
    alerts = {rule["alert"]: rule for g in r["spec"]["groups"] for rule in g["rules"]}
    assert "OidcRefreshOperatorDown" not in alerts and len(alerts) == len(ALERTS) - 1
    assert "< 604800" in alerts["OidcRefreshClientSecretExpiring"]["expr"]
    assert alerts["OidcRefreshPolicyNotReady"]["for"] == "2h"
    assert all('{job="oro"' in a["expr"] for a in alerts.values())


@pytest.mark.parametrize("bad", [{"clientSecretExpiryDays": 0}, {"disabledAlerts": ["NoSuchAlert"]},
                                 {"notReadyFor": "soon"}, {"unknown": 1}])
def test_schema_rejects_bad_prometheus_rule_values(bad):
    import helm_python as helm
    with pytest.raises(helm.HelmValuesError):
        validate_values({"prometheusRule": {"enabled": True, **bad}})


def test_promtool_checks_and_unit_tests_the_rules(tmp_path):
    tool = promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules()["spec"], sort_keys=False))
    shutil.copy(PROMTOOL_TESTS, tmp_path / "rules_test.yaml")
    check = subprocess.run([tool, "check", "rules", str(tmp_path / "rules.yaml")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert check.returncode == 0, check.stdout
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout, check.stdout
    test = subprocess.run([tool, "test", "rules", str(tmp_path / "rules_test.yaml")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert test.returncode == 0, test.stdout
    # Every alert has a unit test.
    tested = set(re.findall(r"alertname: (\w+)", PROMTOOL_TESTS.read_text()))
    assert tested == set(ALERTS), set(ALERTS) - tested


def test_dashboard_config_map():
    cm = [o for o in find(render(MONITORING | {"grafanaDashboard": {
        "enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "Operators"}}}), "ConfigMap")
        if o["metadata"]["name"].endswith("-dashboard")]
    assert len(cm) == 1
    cm = cm[0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Operators"}
    assert json.loads(cm["data"]["oidc-refresh-operator.json"]) == json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    # Grafana's label_values(<series selector>, <label>): the selector is PromQL.
    exprs += [re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", v["query"]["query"])
              for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_dashboard_is_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "oidc-refresh-operator" and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "job", "namespace"}


def test_rules_and_dashboard_use_only_exported_metrics():
    exported = exported_metrics()
    used = {}
    for rule in (rule for g in rules()["spec"]["groups"] for rule in g["rules"]):
        for name in series_names(rule["expr"]):
            used.setdefault(name, []).append(rule["alert"])
    for expr in dashboard_exprs():
        expr = expr.replace("$__rate_interval", "5m")
        for name in series_names(expr):
            used.setdefault(name, []).append("dashboard")
    unknown = {n: where for n, where in used.items() if n not in exported | PROMETHEUS_SERIES}
    assert not unknown, f"metrics the operator does not export: {unknown}"
    # Every exported family is on the dashboard.
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported}
    on_dashboard = {re.sub(r"_(bucket|sum|count)$", "", n) for n, where in used.items() if "dashboard" in where}
    assert families <= on_dashboard, families - on_dashboard


# What a cluster with the Prometheus Operator has: the PrometheusRule CRD (trimmed to its shape).
PROMETHEUS_RULE_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: prometheusrules.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: PrometheusRule, listKind: PrometheusRuleList, plural: prometheusrules, singular: prometheusrule}
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


def test_monitoring_objects_apply_with_kubectl(sandbox):
    objs = [o for o in render(MONITORING, release="oro-mon", namespace="oro-mon")
            if o["kind"] in ("PrometheusRule", "ConfigMap")]
    assert sorted(o["kind"] for o in objs) == ["ConfigMap", "PrometheusRule"]
    sandbox.kubectl("apply", "-f", "-", stdin="apiVersion: v1\nkind: Namespace\nmetadata:\n  name: oro-mon\n")
    sandbox.kubectl("apply", "-f", "-", stdin=PROMETHEUS_RULE_CRD)
    out = sandbox.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objs, sort_keys=False)).stdout
    assert "prometheusrule.monitoring.coreos.com/oro-mon-oidc-refresh-operator created" in out, out
    rule = sandbox.get("prometheusrule", "oro-mon-oidc-refresh-operator", "-n", "oro-mon")
    assert rule["spec"] == one(objs, "PrometheusRule")["spec"]
    cm = sandbox.get("configmap", "oro-mon-oidc-refresh-operator-dashboard", "-n", "oro-mon")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["oidc-refresh-operator.json"])["uid"] == "oidc-refresh-operator"
