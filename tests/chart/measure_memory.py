#!/usr/bin/env python3
"""Measures the operator's peak resident memory (VmHWM) and CPU time against the Kubernetes API
simulator, to size the chart's `resources` (charts/oidc-refresh-operator/README.md, "Resources").

    python3 tests/chart/measure_memory.py --operator target/release/oidc-refresh-operator \
        [--sandbox target/debug/oidc-refresh-operator] [--policies 100] [--secrets 200]

`--operator` is the binary measured (build it as the image does:
`cargo build --release --no-default-features --bin oidc-refresh-operator`); `--sandbox` serves the
simulator (`sandbox --provider google --serve`, needs the default `sandbox` feature). It creates
N Coder Deployments with one Google policy each and M Secrets in namespace `coder`, starts
`run` as the chart does (env LOG_FORMAT=json, LEADER_ELECT optional), waits until every policy is
Ready, and prints VmHWM / VmRSS after idle and after the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import stop_process_group  # noqa: E402


def status_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(rest.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--operator", required=True)
    ap.add_argument("--sandbox", default=None)
    ap.add_argument("--policies", type=int, default=100)
    ap.add_argument("--secrets", type=int, default=200)
    ap.add_argument("--leader-elect", action="store_true")
    args = ap.parse_args()
    sandbox_bin = args.sandbox or args.operator

    tmp = Path(tempfile.mkdtemp())
    kc = tmp / "kubeconfig"
    sb = subprocess.Popen([sandbox_bin, "sandbox", "--provider", "google", "--serve", "--kubeconfig", str(kc)],
                          cwd=tmp, stdout=open(tmp / "sandbox.log", "w"), stderr=subprocess.STDOUT,
                          start_new_session=True)
    op = None
    try:
        while not kc.exists():
            assert sb.poll() is None, (tmp / "sandbox.log").read_text()
            time.sleep(0.2)
        time.sleep(0.3)

        def kubectl(*a, stdin=None):
            p = subprocess.run(["kubectl", "--kubeconfig", str(kc), *a], input=stdin, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert p.returncode == 0, f"kubectl {a}: {p.stderr[-2000:]}"
            return p.stdout

        env = dict(os.environ, KUBECONFIG=str(kc), LOG_FORMAT="json", ADMIN_ADDR="127.0.0.1:18181",
                   POD_NAME="measure", POD_NAMESPACE="coder")
        if args.leader_elect:
            env["LEADER_ELECT"] = "true"
        op = subprocess.Popen([args.operator, "run"], env=env, stdout=open(tmp / "operator.log", "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(5)
        idle = status_kb(op.pid)

        dep = json.loads(kubectl("get", "deployment", "coder", "-n", "coder", "-o", "json"))
        items = []
        for i in range(args.policies):
            d = {"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": f"coder-{i}", "namespace": "coder"},
                 "spec": json.loads(json.dumps(dep["spec"]).replace('"coder"', f'"coder-{i}"'))}
            # Keep the container name the policy expects.
            for c in d["spec"]["template"]["spec"]["containers"]:
                c["name"] = "coder"
            items.append(d)
            items.append({"apiVersion": "oidcrefresh.dev/v1alpha1", "kind": "OidcRefreshPolicy",
                          "metadata": {"name": f"coder-{i}", "namespace": "coder"},
                          "spec": {"provider": {"google": {}}, "coder": {"deployment": f"coder-{i}"}}})
        for i in range(args.secrets):
            items.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s-{i}", "namespace": "coder"},
                          "stringData": {"k": "x" * 1024}})
        kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(o) for o in items))
        start = time.monotonic()
        while True:
            pols = json.loads(kubectl("get", "orp", "-n", "coder", "-o", "json"))["items"]
            ready = sum(1 for p in pols if any(c["type"] == "Ready" and c["status"] == "True"
                                               for c in p.get("status", {}).get("conditions", [])))
            if ready == len(pols):
                break
            assert time.monotonic() - start < 300, f"{ready}/{len(pols)} Ready after 300 s"
            time.sleep(1)
        converge = time.monotonic() - start
        time.sleep(5)
        loaded = status_kb(op.pid)
        metrics = urllib.request.urlopen("http://127.0.0.1:18181/metrics", timeout=5).read().decode()
        reconciles = next((line.split()[-1] for line in metrics.splitlines()
                           if line.startswith("oidc_refresh_reconciles_total")), "?")
        print(json.dumps({
            "policies": args.policies + 1, "deployments": args.policies + 1, "secrets": args.secrets,
            "idle_kib": idle, "loaded_kib": loaded, "converge_seconds": round(converge, 1),
            "cpu_seconds_total": round(cpu_seconds(op.pid), 2), "reconciles": reconciles,
            "binary_bytes": os.path.getsize(args.operator),
        }, indent=1))
    finally:
        if op is not None:
            stop_process_group(op)
        stop_process_group(sb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
