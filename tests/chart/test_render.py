"""The chart rendered by the real Helm engine: lint, objects per value set, restricted security
context, exact RBAC verbs, values.schema.json, and the generated files kept in sync."""

from __future__ import annotations

import json
import re
import tarfile

import helm_python as helm
import pytest
import yaml

from chartlib import (CHART, CHART_CRD, CRD, DEPLOY, HEALTH_LUA, NAMESPACE, deploy_manifest, lint,
                      render, render_notes, validate_values)
from conftest import VARIANTS, container, env_of, find, kinds, one

# Exactly what the operator uses on the namespaces it watches (README "Install on a cluster").
EXPECTED_RULES = {
    ("oidcrefresh.dev", "oidcrefreshpolicies"): ["list", "watch"],
    ("oidcrefresh.dev", "oidcrefreshpolicies/status"): ["patch"],
    ("apps", "deployments"): ["get", "list", "watch", "patch"],
    ("", "secrets"): ["get", "list", "watch"],
    ("", "configmaps"): ["get"],
    ("events.k8s.io", "events"): ["create"],
    ("k8s.keycloak.org", "keycloakoidcclients"): ["list"],
    ("entra.azure.com", "applications"): ["list"],
}
# Leader election, in the operator's own namespace only.
EXPECTED_LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "resourceNames": ["oidc-refresh-operator"], "verbs": ["get", "update"]},
]


def rules_by_resource(rules: list[dict]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for r in rules:
        assert "resourceNames" not in r and "nonResourceURLs" not in r, r
        for g in r["apiGroups"]:
            for res in r["resources"]:
                assert (g, res) not in out, f"duplicate rule for {(g, res)}"
                out[(g, res)] = r["verbs"]
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_is_clean(variant):
    report = lint(VARIANTS[variant], strict=True, kube_version="v1.33.0")
    assert report["errors"] == [], report
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_renders_named_and_namespaced_objects(variant):
    objs = render(VARIANTS[variant])
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for o in objs:
        assert o["metadata"]["name"], o
        if o["kind"] not in cluster_scoped:
            assert o["metadata"].get("namespace"), f"{o['kind']} {o['metadata']['name']} has no namespace"
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), names


def test_default_values_render_the_cluster_wide_install():
    objs = render()
    assert sorted(kinds(objs)) == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                          "Service", "Deployment"])
    dep = one(objs, "Deployment")
    assert dep["metadata"]["namespace"] == NAMESPACE
    assert dep["spec"]["replicas"] == 1
    c = container(objs)
    assert c["image"] == "oidc-refresh-operator:0.1.0"
    assert c["args"] == ["run"]
    env = env_of(objs)
    assert env["ADMIN_ADDR"] == "0.0.0.0:8080"
    assert env["LOG_FORMAT"] == "json"
    assert env["CONCURRENCY"] == "32"
    assert env["PROVIDER_TIMEOUT"] == "30s"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "WATCH_NAMESPACES" not in env and "LEADER_ELECT" not in env
    # The ClusterRoleBinding binds the ClusterRole to the chart's ServiceAccount.
    crb = one(objs, "ClusterRoleBinding")
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                              "name": one(objs, "ClusterRole")["metadata"]["name"]}
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "oidc-refresh-operator", "namespace": NAMESPACE}]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "oidc-refresh-operator"
    # The metrics Service points at the admin port of the operator's pods.
    svc = one(objs, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "admin", "protocol": "TCP"}]
    assert c["ports"] == [{"name": "admin", "containerPort": 8080, "protocol": "TCP"}]
    # Pod template labels carry the selector.
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_meets_the_restricted_pod_security_standard(variant):
    objs = render(VARIANTS[variant])
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] != 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostNetwork", "hostPID", "hostIPC", "volumes", "initContainers"):
        assert key not in pod, key
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc
    # Probes and resources.
    port = c["ports"][0]
    assert port["name"] == "admin"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    # /readyz is 200 on the leader and on a waiting replica alike.
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    assert env_of(objs)["ADMIN_ADDR"] == f"0.0.0.0:{port['containerPort']}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_rbac_grants_exactly_the_verbs_the_operator_uses(variant):
    values = VARIANTS[variant]
    objs = render(values)
    sa = one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    watch = values.get("watchNamespaces", [])
    if watch:
        assert find(objs, "ClusterRole") == [] and find(objs, "ClusterRoleBinding") == []
        for ns in watch:
            role = [r for r in find(objs, "Role", namespace=ns) if not r["metadata"]["name"].endswith("-leader-election")]
            assert len(role) == 1, f"one Role in {ns}"
            assert rules_by_resource(role[0]["rules"]) == EXPECTED_RULES
            binding = [b for b in find(objs, "RoleBinding", namespace=ns)
                       if b["roleRef"]["name"] == role[0]["metadata"]["name"]]
            assert len(binding) == 1
            assert binding[0]["roleRef"]["kind"] == "Role"
            assert binding[0]["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
        assert env_of(objs)["WATCH_NAMESPACES"] == ",".join(watch)
    else:
        assert rules_by_resource(one(objs, "ClusterRole")["rules"]) == EXPECTED_RULES
        assert one(objs, "ClusterRoleBinding")["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
        assert "WATCH_NAMESPACES" not in env_of(objs)

    leader = values.get("replicaCount", 1) > 1 or values.get("leaderElection", {}).get("enabled", False)
    lease_roles = [r for r in find(objs, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    if leader:
        assert env_of(objs)["LEADER_ELECT"] == "true"
        assert len(lease_roles) == 1
        lease_role_name = lease_roles[0]["metadata"]["name"]
        assert lease_roles[0]["metadata"]["namespace"] == NAMESPACE
        assert lease_roles[0]["rules"] == EXPECTED_LEASE_RULES
        binding = one(objs, "RoleBinding", name=lease_role_name, namespace=NAMESPACE)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": lease_role_name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    else:
        assert "LEADER_ELECT" not in env_of(objs)
        assert lease_roles == []
    # Nothing else grants anything.
    roles = [o for o in objs if o["kind"] in ("ClusterRole", "Role")]
    bindings = [o for o in objs if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert len(roles) == len(bindings) == (len(watch) or 1) + (1 if leader else 0)


def secret_grants(objs: list[dict]) -> list[tuple[str, str | None]]:
    """(kind, namespace) of every role that grants anything on Secrets."""
    return sorted((o["kind"], o["metadata"].get("namespace")) for o in objs
                  if o["kind"] in ("ClusterRole", "Role")
                  and any("secrets" in r.get("resources", []) for r in o["rules"]))


def test_secrets_are_readable_cluster_wide_only_without_watch_namespaces():
    # Default: one ClusterRole, so every Secret in the cluster is readable by the operator
    # (RBAC cannot narrow by label; the operator lists and watches only labelled ones).
    assert secret_grants(render()) == [("ClusterRole", None)]
    assert secret_grants(render({"replicaCount": 2})) == [("ClusterRole", None)]
    # watchNamespaces: a Role per listed namespace, nothing cluster-wide, none in the release
    # namespace (which the lease Role covers only for its Lease).
    assert secret_grants(render({"watchNamespaces": ["coder", "team-b"], "replicaCount": 2})) == [
        ("Role", "coder"), ("Role", "team-b")]


def test_watch_namespaces_uses_roles_and_no_cluster_access():
    objs = render({"watchNamespaces": ["coder", "team-b"]})
    assert sorted((o["kind"], o["metadata"]["namespace"]) for o in objs if o["kind"] in ("Role", "RoleBinding")) == [
        ("Role", "coder"), ("Role", "team-b"), ("RoleBinding", "coder"), ("RoleBinding", "team-b")]
    assert "ClusterRole" not in kinds(objs) and "ClusterRoleBinding" not in kinds(objs)
    assert "coder, team-b" in render_notes({"watchNamespaces": ["coder", "team-b"]})


def test_two_replicas_elect_a_leader():
    objs = render({"replicaCount": 2})
    assert one(objs, "Deployment")["spec"]["replicas"] == 2
    assert env_of(objs)["LEADER_ELECT"] == "true"
    assert env_of(objs)["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "kubectl -n oidc-refresh-operator get lease oidc-refresh-operator" in render_notes({"replicaCount": 2})
    # One replica without leaderElection.enabled: no Lease access at all.
    assert "LEADER_ELECT" not in env_of(render({"replicaCount": 1}))


def test_service_monitor_scrapes_the_metrics_port():
    objs = render(VARIANTS["service-monitor"])
    sm = one(objs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["selector"]["matchLabels"].items() <= one(objs, "Service")["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}]
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert "ServiceMonitor" not in kinds(render())
    with pytest.raises(helm.HelmRenderError, match="serviceMonitor.enabled needs service.enabled"):
        render({"serviceMonitor": {"enabled": True}, "service": {"enabled": False}})


def test_network_policy_allows_only_admin_ingress_and_dns_apiserver_idp_egress():
    objs = render(VARIANTS["network-policy"])
    np = one(objs, "NetworkPolicy")
    spec = np["spec"]
    assert spec["podSelector"]["matchLabels"] == one(objs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}],
                                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}]
    dns, api, idp = spec["egress"]
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert dns["to"] == [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert api == {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
                   "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}
    assert idp == {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 9999, "protocol": "TCP"}],
                   "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}, {"ipBlock": {"cidr": "2001:db8::/32"}}]}
    # Defaults: the ports only, any address; extra egress rules are appended.
    spec = one(render(VARIANTS["everything"]), "NetworkPolicy")["spec"]
    assert spec["ingress"] == [{"ports": [{"port": 9090, "protocol": "TCP"}]}]
    assert [sorted(r) for r in spec["egress"][1:3]] == [["ports"], ["ports"]]
    assert spec["egress"][3] == {"to": [{"ipBlock": {"cidr": "198.51.100.7/32"}}], "ports": [{"port": 3128, "protocol": "TCP"}]}
    assert "NetworkPolicy" not in kinds(render())


def test_everything_variant_passes_values_through():
    values = VARIANTS["everything"]
    objs = render(values)
    dep = one(objs, "Deployment", name="oro")
    pod = dep["spec"]["template"]["spec"]
    c = container(objs)
    assert c["image"] == "registry.example.com/oidc-refresh-operator@sha256:" + "ab" * 32
    assert c["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "oro-sa"
    assert one(objs, "ServiceAccount")["metadata"]["annotations"] == {"example.com/owner": "platform"}
    assert pod["priorityClassName"] == "system-cluster-critical"
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints"):
        assert pod[key] == values[key]
    assert dep["spec"]["strategy"] == values["strategy"]
    assert dep["spec"]["template"]["metadata"]["annotations"] == {"example.com/scrape": "true"}
    assert dep["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
    env = env_of(objs)
    assert env["RUST_LOG"] == "info,oidc_refresh_operator=debug"
    assert env["LOG_FORMAT"] == "text" and env["CONCURRENCY"] == "16" and env["PROVIDER_TIMEOUT"] == "1m30s"
    assert env["ADMIN_ADDR"] == "0.0.0.0:9090" and env["HTTPS_PROXY"] == "http://proxy.example.com:3128"
    assert env["WATCH_NAMESPACES"] == "coder,team-b,team-c" and env["LEADER_ELECT"] == "true"
    cm = one(objs, "ConfigMap", name="oro-argocd-health")
    assert cm["data"] == {"resource.customizations.health.oidcrefresh.dev_OidcRefreshPolicy": HEALTH_LUA.read_text()}


def test_existing_service_account_without_rbac():
    objs = render({"serviceAccount": {"create": False, "name": "mine"}, "rbac": {"create": False}})
    assert sorted(kinds(objs)) == ["Deployment", "Service"]
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    with pytest.raises(helm.HelmRenderError, match="serviceAccount.name is required"):
        render({"serviceAccount": {"create": False}})


BAD_VALUES = [
    ({"replicaCount": "2"}, "/replicaCount"),
    ({"replicaCount": -1}, "/replicaCount"),
    ({"unknownKey": True}, "unknownKey"),
    ({"image": {"repository": ""}}, "/image/repository"),
    ({"image": {"tag": "x", "registry": "y"}}, "registry"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"watchNamespaces": "coder"}, "/watchNamespaces"),
    ({"watchNamespaces": ["Team_B"]}, "/watchNamespaces/0"),
    ({"watchNamespaces": ["coder", "coder"]}, "/watchNamespaces"),
    ({"leaderElection": {"enabled": "yes"}}, "/leaderElection/enabled"),
    ({"leaderElection": {"leaseName": "x"}}, "leaseName"),
    ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
    ({"operator": {"concurrency": 0}}, "/operator/concurrency"),
    ({"operator": {"providerTimeout": "30 seconds"}}, "/operator/providerTimeout"),
    ({"operator": {"adminPort": 70000}}, "/operator/adminPort"),
    ({"operator": {"extraEnv": [{"value": "no name"}]}}, "/operator/extraEnv/0"),
    ({"serviceAccount": {"create": "true"}}, "/serviceAccount/create"),
    ({"podAnnotations": {"a": 1}}, "/podAnnotations/a"),
    ({"probes": {"liveness": {"path": "/other"}}}, "path"),
    ({"service": {"type": "ExternalName"}}, "/service/type"),
    ({"serviceMonitor": {"interval": "30 s"}}, "/serviceMonitor/interval"),
    ({"networkPolicy": {"apiServer": {"cidrs": ["10.0.0.1"]}}}, "/networkPolicy/apiServer/cidrs/0"),
    ({"networkPolicy": {"dns": {"ports": [{"protocol": "TCP"}]}}}, "/networkPolicy/dns/ports/0"),
    ({"networkPolicy": {"egress": []}}, "egress"),
    ({"argocd": {"healthCheck": {"configMap": "on"}}}, "/argocd/healthCheck/configMap"),
]


@pytest.mark.parametrize("values,where", BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_values_schema_rejects_bad_values(values, where):
    with pytest.raises(helm.HelmValuesError) as err:
        validate_values(values)
    assert where in str(err.value), str(err.value)
    # Rendering (helm install/template) refuses them too.
    with pytest.raises(helm.HelmValuesError):
        render(values)


@pytest.mark.parametrize("variant", VARIANTS)
def test_values_schema_accepts_every_variant(variant):
    validate_values(VARIANTS[variant])


def test_values_schema_is_strict_everywhere_it_can_be():
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    # Every default key is declared (so additionalProperties: false never rejects defaults), and
    # every declared object that is not a pass-through Kubernetes type is closed.
    passthrough = {"podSecurityContext", "securityContext", "strategy", "affinity", "global"}

    def walk(sch, vals, path):
        if sch.get("type") == "object" and "properties" in sch:
            assert sch.get("additionalProperties") is False, f"{path or '<root>'} is not closed"
            for key, val in (vals or {}).items():
                assert key in sch["properties"], f"{path}.{key} is not in values.schema.json"
                if key not in passthrough:
                    walk(sch["properties"][key], val, f"{path}.{key}")
    walk(schema, defaults, "")


def test_every_value_is_documented_in_the_chart_readme():
    readme = (CHART / "README.md").read_text().split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    # Maps a Kubernetes object passes through whole are documented as one row.
    whole = {"resources", "podSecurityContext", "securityContext", "probes.liveness", "probes.readiness",
             "networkPolicy.dns", "networkPolicy.apiServer", "networkPolicy.identityProviders"}

    def leaves(d, prefix=""):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v and key not in whole:
                yield from leaves(v, key + ".")
            else:
                yield key
    missing = [k for k in leaves(defaults) if k not in documented
               and not any(k.startswith(w + ".") for w in whole)]
    assert missing == [], f"values without a row in charts/oidc-refresh-operator/README.md: {missing}"
    stale = [k for k in documented if k not in set(leaves(defaults))]
    assert stale == [], f"README rows for values that do not exist: {stale}"


def test_deploy_operator_yaml_is_rendered_from_the_chart():
    assert DEPLOY.read_text() == deploy_manifest(), (
        "deploy/operator.yaml is stale: run `python3 tests/chart/render_deploy.py`")
    docs = [d for d in yaml.safe_load_all(DEPLOY.read_text()) if d]
    assert docs[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "oidc-refresh-operator",
                                      "pod-security.kubernetes.io/enforce": "restricted"}}}
    assert docs[1:] == render()
    assert DEPLOY.read_text().startswith("# GENERATED")


def test_chart_crd_is_the_generated_crd():
    assert CHART_CRD.read_text() == CRD.read_text(), (
        "charts/oidc-refresh-operator/crds/ is stale: cp crds/oidcrefreshpolicies.oidcrefresh.dev.yaml "
        "charts/oidc-refresh-operator/crds/")
    with helm.Chart.load(CHART) as chart:
        (crd,) = chart.crds
    assert crd["name"] == "crds/oidcrefreshpolicies.oidcrefresh.dev.yaml"


def test_chart_metadata():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] == "0.1.0"
    assert meta["name"] == "oidc-refresh-operator"


def test_packaged_chart_ships_the_health_check_but_not_its_tests(tmp_path):
    archive = helm.package(CHART, destination=tmp_path)
    names = tarfile.open(archive).getnames()
    prefix = "oidc-refresh-operator/"
    assert prefix + "argocd/resource_customizations/oidcrefresh.dev/OidcRefreshPolicy/health.lua" in names
    assert prefix + "crds/oidcrefreshpolicies.oidcrefresh.dev.yaml" in names
    assert prefix + "values.schema.json" in names and prefix + "README.md" in names
    assert not [n for n in names if "testdata" in n or n.endswith("health_test.yaml")], names
    # The packaged chart renders the same as the directory.
    with helm.Chart.load(archive) as packaged, helm.Chart.load(CHART) as directory:
        assert packaged.render(None, name="oidc-refresh-operator", namespace=NAMESPACE) == \
            directory.render(None, name="oidc-refresh-operator", namespace=NAMESPACE)
