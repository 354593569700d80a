"""The operator's container image, built without a container engine by scripts/build-image from
the release binary (`cargo build --release --no-default-features`), checked as an OCI image
(layout, digests, config, files) and started: `--version` and `crd` in a container with a
read-only root as UID 65532, then `run` against a Kubernetes API simulator, reconciling a policy
to Ready and serving /healthz, /readyz and /metrics."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import re
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from imagelib import (  # noqa: F401 (fixtures)
    ROOT, SOURCE, TAG, Image, KubeSim, Runtime, bundle, ensure_tool, image, kube_sim, release_bin, runtime,
)

BIN = "/usr/local/bin/oidc-refresh-operator"
CA = "etc/ssl/certs/ca-certificates.crt"
UID = 65532
# Uncompressed size of the image's one layer: the binary plus glibc, libgcc_s and the CA bundle.
MAX_LAYER_MIB = 64
# What the libraries and the rest may add to the binary.
MAX_OVERHEAD_MIB = 8


def cargo_version() -> str:
    import tomllib
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["package"]["version"]


def dockerfile() -> dict:
    """The Dockerfile's final stage: LABELs, USER, EXPOSE, ENTRYPOINT, CMD."""
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):].replace("\\\n", " ")
    out: dict = {"labels": {}}
    for line in final.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "LABEL":
            out["labels"].update(dict(re.findall(r'(\S+?)="([^"]*)"', rest)))
        elif word in ("USER", "EXPOSE"):
            out[word] = rest.strip()
        elif word in ("ENTRYPOINT", "CMD"):
            out[word] = json.loads(rest)
        elif word == "COPY":
            out["COPY"] = rest.split()[-1]
    return out


def layer_members(image: Image) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    """Path (no leading ./ or /) -> (entry, content of regular files), over every layer."""
    out = {}
    for layer in image.manifest()["layers"]:
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip", layer
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.blob(layer["digest"])))) as tar:
            for m in tar.getmembers():
                name = m.name.lstrip("./").lstrip("/")
                out[name] = (m, tar.extractfile(m).read() if m.isfile() else None)
    return out


def ldd_paths(binary: Path) -> list[str]:
    out = subprocess.run(["ldd", str(binary)], stdout=subprocess.PIPE, text=True, check=True).stdout
    assert "not found" not in out, out
    return [m for m in re.findall(r"(/\S+) \(0x", out)]


def go_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


# --- the image as an artefact -----------------------------------------------------------------

def test_layout_is_a_valid_oci_image(image: Image):
    index = json.loads((image.layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    assert json.loads((image.layout / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    (desc,) = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == TAG]
    assert desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    manifest = image.manifest()
    assert manifest["schemaVersion"] == 2
    assert manifest.get("mediaType", desc["mediaType"]) == desc["mediaType"]  # optional in a manifest
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    # Every blob is what its descriptor says (content-addressed, sizes right).
    for desc in [desc, manifest["config"], *manifest["layers"]]:
        data = image.blob(desc["digest"])
        assert len(data) == desc["size"], desc
        assert "sha256:" + hashlib.sha256(data).hexdigest() == desc["digest"], desc
    # Layers' diff_ids are the digests of the uncompressed tars.
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(image.blob(l["digest"]))).hexdigest()
                for l in manifest["layers"]]
    assert image.config()["rootfs"] == {"type": "layers", "diff_ids": diff_ids}

    # Independent readers agree: skopeo (containers/image, as podman and CRI-O read images) on the
    # layout and on the archive, and umoci.
    skopeo = ensure_tool("skopeo", "skopeo")
    for ref in (f"oci:{image.ref}", f"oci-archive:{image.archive}:{TAG}"):
        proc = subprocess.run([skopeo, "inspect", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.returncode == 0, f"skopeo inspect {ref}:\n{proc.stderr}"
        assert json.loads(proc.stdout)["Digest"] == image.digest
    umoci = ensure_tool("umoci", "umoci")
    proc = subprocess.run([umoci, "stat", "--image", image.ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 0, proc.stderr


def test_config_matches_the_dockerfile(image: Image):
    cfg = image.config()
    assert cfg["os"] == "linux" and cfg["architecture"] == go_arch()
    c = cfg["config"]
    df = dockerfile()
    assert c["User"] == df["USER"] == f"{UID}:{UID}"
    assert c["Entrypoint"] == df["ENTRYPOINT"] == [BIN]
    assert df["COPY"] == BIN
    assert c["Cmd"] == df["CMD"] == ["run"]
    assert set(c["ExposedPorts"]) == {f"{df['EXPOSE']}/tcp"} == {"8080/tcp"}
    labels = c["Labels"]
    for key, value in df["labels"].items():
        if key == "org.opencontainers.image.version":
            continue
        assert labels.get(key) == value, key
    assert labels["org.opencontainers.image.version"] == df["labels"]["org.opencontainers.image.version"] \
        == cargo_version()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"] == SOURCE
    # The manifest carries the same annotations (what registries show).
    assert image.manifest()["annotations"]["org.opencontainers.image.version"] == cargo_version()


def test_files_are_the_binary_its_libraries_and_certificates(image: Image):
    files = layer_members(image)
    binary, content = files[BIN.lstrip("/")]
    assert binary.isfile() and binary.mode & 0o777 == 0o755 and (binary.uid, binary.gid) == (0, 0)
    assert content == image.binary.read_bytes(), "the image holds another binary than the release build"

    # Exactly the libraries ldd lists (glibc, libgcc_s, the loader), at the paths it lists, as
    # regular files with this machine's content.
    libs = ldd_paths(image.binary)
    names = {Path(p).name for p in libs}
    assert any(n.startswith("libc.so") for n in names) and any(n.startswith("ld-linux") for n in names), libs
    for lib in libs:
        entry, data = files.get(lib.lstrip("/"), (None, None))
        assert entry is not None and entry.isfile(), f"{lib} (needed by the binary, ldd) is not in the image"
        assert data == Path(lib).resolve().read_bytes(), lib
    shared = {p for p, (m, _) in files.items() if re.search(r"\.so(\.|$)", Path(p).name)}
    assert shared == {p.lstrip("/") for p in libs}, "libraries the binary does not need"

    # No shell, no package manager, nothing else to execute.
    executables = {p for p, (m, _) in files.items() if m.isfile() and m.mode & 0o111}
    assert executables == {BIN.lstrip("/")} | shared, executables
    for shell in ("bin/sh", "bin/bash", "bin/dash", "usr/bin/sh", "bin/busybox", "usr/bin/apt", "usr/bin/dpkg"):
        assert shell not in files
    assert not [p for p, (m, _) in files.items() if m.issym() or m.islnk()], "no links are expected"

    # CA certificates from Debian's ca-certificates, for the identity providers' TLS.
    entry, bundle_pem = files[CA]
    assert entry.isfile() and bundle_pem.count(b"-----BEGIN CERTIFICATE-----") > 100
    assert "SSL_CERT_FILE=/" + CA in image.config()["config"]["Env"]

    # The non-root user and group, as distroless has them.
    passwd = files["etc/passwd"][1].decode()
    group = files["etc/group"][1].decode()
    assert f"nonroot:x:{UID}:{UID}:nonroot:/home/nonroot:/sbin/nologin" in passwd.splitlines()
    assert f"nonroot:x:{UID}:" in group.splitlines()
    home, _ = files["home/nonroot"]
    assert home.isdir() and (home.uid, home.gid) == (UID, UID)
    assert files["tmp"][0].mode & 0o7777 == 0o1777

    size = sum(m.size for m, _ in files.values())
    print(f"layer: {size / 2**20:.1f} MiB uncompressed, binary {binary.size / 2**20:.1f} MiB, "
          f"{sum(l['size'] for l in image.manifest()['layers']) / 2**20:.1f} MiB compressed")
    assert size < MAX_LAYER_MIB * 2**20
    assert size - binary.size < MAX_OVERHEAD_MIB * 2**20


# --- the image started -----------------------------------------------------------------------

def test_version_and_crd_in_a_container(runtime: Runtime):
    print(f"runtime: {runtime.kind}")
    out = runtime.run(["--version"]).stdout
    assert out.strip() == f"oidc-refresh-operator {cargo_version()}", out
    crd = runtime.run(["crd"]).stdout
    expected = (ROOT / "crds" / "oidcrefreshpolicies.oidcrefresh.dev.yaml").read_text()
    assert [d for d in yaml.safe_load_all(crd) if d] == [d for d in yaml.safe_load_all(expected) if d]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str) -> tuple[int | None, dict, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), ""
    except OSError:
        return None, {}, ""


CODER_DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "coder", "namespace": "coder"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "coder"}},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "coder"}},
            "spec": {"containers": [{
                "name": "coder", "image": "ghcr.io/coder/coder:v2.27.0", "args": ["server"],
                "env": [{"name": "CODER_ACCESS_URL", "value": "https://coder.example.com"},
                        {"name": "CODER_OIDC_ISSUER_URL", "value": "https://accounts.google.com"},
                        {"name": "CODER_OIDC_CLIENT_ID", "value": "coder"}],
            }]},
        },
    },
}


def ready(policy: dict) -> bool:
    conds = policy.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def test_run_against_the_api_simulator(runtime: Runtime, kube_sim: KubeSim, tmp_path: Path):
    """The image started as the chart's Deployment starts it (its args and env, fieldRefs
    resolved as the kubelet would, the kubeconfig mounted read-only in place of the
    ServiceAccount token) reconciles a Google policy to Ready and serves its admin endpoints."""
    from chartlib import NAMESPACE, render  # tests/chart (imagelib put it on sys.path)

    objs = render({})
    (dep,) = [o for o in objs if o["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsUser"] == UID and c["securityContext"]["readOnlyRootFilesystem"] is True

    crd = runtime.run(["crd"]).stdout
    kube_sim.kubectl("apply", "--server-side", "-f", "-", stdin=crd)
    deadline = time.monotonic() + 30
    while "oidcrefreshpolicies" not in kube_sim.kubectl("api-resources", "--api-group=oidcrefresh.dev"):
        assert time.monotonic() < deadline, "the CRD is not served"
        time.sleep(0.2)
    kube_sim.kubectl("create", "namespace", "coder")
    kube_sim.kubectl("create", "namespace", NAMESPACE)
    kube_sim.kubectl("apply", "-f", "-", stdin=json.dumps(CODER_DEPLOYMENT))
    kube_sim.kubectl("apply", "-f", str(ROOT / "examples" / "google.yaml"))

    port = free_port()
    env = {}
    for e in c.get("env", []):
        if "valueFrom" in e:
            e_value = {"metadata.name": "oidc-refresh-operator-image-test", "metadata.namespace": NAMESPACE}[
                e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            e_value = e["value"]
        env[e["name"]] = e_value
    env["ADMIN_ADDR"] = f"127.0.0.1:{port}"  # the chart's 0.0.0.0:8080, on a free port of the host network
    env["KUBECONFIG"] = "/etc/oidc-refresh-operator/kubeconfig"
    mounts = [(str(kube_sim.kubeconfig), env["KUBECONFIG"])]
    started = runtime.start(c["args"], env, mounts, tmp_path / "operator.log")
    log = lambda: started.log.read_text()[-4000:]  # noqa: E731
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not (http_get(base + "/healthz")[0] == 200 and http_get(base + "/readyz")[0] == 200):
            assert started.proc.poll() is None, f"the operator exited with {started.proc.returncode}:\n{log()}"
            assert time.monotonic() < deadline, f"not ready within 60 s:\n{log()}"
            time.sleep(0.3)

        # The process runs as 65532 with no capabilities.
        pid = started.pid()
        assert pid, f"no pid for the container:\n{log()}"
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        assert status["Uid"].split() == [str(UID)] * 4 and status["Gid"].split() == [str(UID)] * 4, status
        if runtime.kind == "runc":
            assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
            assert status["NoNewPrivs"].strip() == "1"

        deadline = time.monotonic() + 90
        while not ready(policy := kube_sim.get("oidcrefreshpolicies", "-n", "coder", "coder")):
            assert started.proc.poll() is None, f"the operator exited with {started.proc.returncode}:\n{log()}"
            assert time.monotonic() < deadline, \
                f"the policy is not Ready within 90 s: {json.dumps(policy.get('status'))}\n{log()}"
            time.sleep(0.5)
        env_after = {e["name"]: e.get("value") for e in
                     kube_sim.get("deployment", "-n", "coder", "coder")["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "access_type" in (env_after.get("CODER_OIDC_AUTH_URL_PARAMS") or ""), env_after

        code, headers, text = http_get(base + "/metrics")
        assert code == 200 and headers.get("content-type", "").startswith("application/openmetrics-text")
        m = re.search(r"^oidc_refresh_reconciles_total (\d+)", text, re.MULTILINE)
        assert m and int(m.group(1)) >= 1, text
        assert re.search(r'^oidc_refresh_writes_total\{category="deployment"\} [1-9]', text, re.MULTILINE), text
        # LOG_FORMAT=json from the chart: every line is a JSON object.
        lines = [l for l in started.log.read_text().splitlines() if l.strip()]
        assert lines and all(l.startswith("{") for l in lines), log()
        for l in lines:
            json.loads(l)
    finally:
        code = started.stop()
    assert code == 0, f"exit code {code} after SIGTERM:\n{log()}"
