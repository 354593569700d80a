"""scripts/release on the release binary the image tests build: the binary, its SHA-256, and its
CycloneDX SBOM, which must be valid CycloneDX 1.5 JSON (checked with the CycloneDX project's own
Python library and schemas) and list exactly the crates compiled into the binary: the normal
dependencies of the release feature set (`--no-default-features`), none of the simulators."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from imagelib import ROOT, release_bin  # noqa: F401 (fixture)

BIN_NAME = "oidc-refresh-operator"
SIMULATORS = {"kube-sim", "sim-kit", "sim-keycloak", "sim-pingfederate", "sim-entra", "sim-logto", "sim-okta",
              "sim-duende"}


def linked_crates(*features: str) -> set[tuple[str, str]]:
    """(name, version) of every crate compiled into the binary for `features`: `cargo tree` of the
    normal (not build or dev) dependencies for this host, from Cargo.lock."""
    proc = subprocess.run(["cargo", "tree", "--locked", "-p", BIN_NAME, *features, "-e", "normal",
                           "--prefix", "none", "--format", "{p}"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    crates = set()
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts and parts[1].startswith("v"):
            crates.add((parts[0], parts[1][1:]))
    return crates


@pytest.fixture(scope="module")
def release(release_bin: Path, tmp_path_factory) -> dict:  # noqa: F811 (fixture)
    out = tmp_path_factory.mktemp("release")
    proc = subprocess.run([str(ROOT / "scripts" / "release"), "--binary", str(release_bin), "--output", str(out)],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=3600)
    assert proc.returncode == 0, f"scripts/release failed:\n{proc.stdout}{proc.stderr}"
    summary = json.loads(proc.stdout)
    summary["bom"] = json.loads(Path(summary["sbom"]).read_text())
    summary["source"] = release_bin
    return summary


def test_the_sbom_is_valid_cyclonedx(release):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    text = Path(release["sbom"]).read_text()
    errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    assert errors is None, errors
    bom = release["bom"]
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.5")
    assert any(t["name"] == "cargo-cyclonedx" for t in bom["metadata"]["tools"])
    # The check can fail: an SBOM with a component lacking its required fields is rejected.
    broken = json.loads(text)
    broken["components"][0].pop("name")
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(broken)) is not None


def test_the_sbom_describes_the_released_binary(release):
    binary = Path(release["binary"])
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    assert binary.read_bytes() == release["source"].read_bytes()
    assert release["sha256"] == digest
    assert Path(str(binary) + ".sha256").read_text() == f"{digest}  {binary.name}\n"
    component = release["bom"]["metadata"]["component"]
    assert (component["name"], component["type"]) == (BIN_NAME, "application")
    assert component["hashes"] == [{"alg": "SHA-256", "content": digest}]
    assert release["version"] == component["version"] and binary.name.startswith(f"{BIN_NAME}-{component['version']}-")
    # Nothing left in the source tree.
    leftovers = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True).stdout
    assert ".cdx.json" not in leftovers, leftovers


def test_the_sbom_lists_exactly_the_crates_in_the_binary(release):
    listed = {(c["name"], c["version"]) for c in release["bom"]["components"]}
    linked = linked_crates("--no-default-features") - {(BIN_NAME, release["version"])}
    assert not linked - listed, f"crates in the binary the SBOM does not list: {linked - listed}"
    assert not listed - linked, f"crates the SBOM lists that are not in the binary: {listed - linked}"
    assert not {name for name, _ in listed} & SIMULATORS
    # The simulators are what the default (sandbox) build would add: the comparison can tell.
    assert SIMULATORS <= {name for name, _ in linked_crates()}
    for c in release["bom"]["components"]:
        assert c["purl"].startswith(f"pkg:cargo/{c['name']}@{c['version']}"), c
        assert c.get("hashes") or c["purl"].startswith("pkg:cargo/") and "download_url=file" in c["purl"], c
