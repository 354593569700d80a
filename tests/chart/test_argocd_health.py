"""The Argo CD health check (Lua) for OidcRefreshPolicy, run by a real Lua interpreter (Debian's
lua5.4) against the fixtures listed in health_test.yaml, the layout of Argo CD's
resource_customizations/<group>/<Kind>/ tests: each inputPath is loaded as the global `obj`, and
the script's {status, message} must equal healthStatus."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from chartlib import HEALTH_DIR, HEALTH_LUA, ROOT

TESTS = yaml.safe_load((HEALTH_DIR / "health_test.yaml").read_text())["tests"]
LUA = shutil.which("lua5.4")
# Argo CD runs health checks in gopher-lua, which implements Lua 5.1: when Debian's lua5.1 is
# installed too, every fixture also runs there, proving the script uses no 5.2+ feature.
LUA51 = shutil.which("lua5.1")
INTERPRETERS = ["lua5.4"] + (["lua5.1"] if LUA51 else [])


def lua_literal(value) -> str:
    """A Python value (from YAML) as a Lua table constructor, as Argo CD converts objects."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        out = []
        for byte in value.encode("utf-8"):
            ch = chr(byte)
            if ch.isalnum() or ch in " _-.:/,;()[]{}=+*'!?@#$%^&<>|~`":
                out.append(ch)
            else:
                out.append(f"\\{byte:03d}")
        return '"' + "".join(out) + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(str(k))}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def run_health(obj: dict, interpreter: str = "lua5.4") -> dict:
    if LUA is None:
        pytest.fail("lua5.4 is required: apt-get install -y lua5.4 (scripts/test-all installs it)")
    exe = LUA if interpreter == "lua5.4" else LUA51
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local hs = dofile({lua_literal(str(HEALTH_LUA))})\n"
        "io.write(tostring(hs.status), '\\0', tostring(hs.message))\n"
    )
    proc = subprocess.run([exe, "-"], input=program.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    status, message = proc.stdout.decode().split("\0")
    return {"status": status, "message": message}


@pytest.mark.parametrize("interpreter", INTERPRETERS)
@pytest.mark.parametrize("case", TESTS, ids=[t["inputPath"].split("/")[-1][:-5] for t in TESTS])
def test_health(case, interpreter):
    obj = yaml.safe_load((HEALTH_DIR / case["inputPath"]).read_text())
    assert run_health(obj, interpreter) == case["healthStatus"]


def test_fixtures_cover_every_status_and_every_file_is_listed():
    assert {t["healthStatus"]["status"] for t in TESTS} == {"Healthy", "Progressing", "Degraded"}
    listed = {t["inputPath"] for t in TESTS}
    on_disk = {f"testdata/{p.name}" for p in (HEALTH_DIR / "testdata").glob("*.yaml")}
    assert listed == on_disk


def test_terminal_reasons_match_the_readme_troubleshooting_table():
    """Degraded reasons are the README's "Troubleshooting by reason" rows minus the transient ones."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Troubleshooting by reason", 1)[1].split("\n## ", 1)[0]
    reasons = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            reasons |= set(re.findall(r"`([A-Z][A-Za-z]+)`", row.split("|")[1]))
    transient = {"Unreachable", "Throttled", "ProviderError", "RolloutInProgress", "WaitingForIdentityProvider",
                 "ReconcileTimeout", "InternalError"}
    lua = HEALTH_LUA.read_text()
    terminal = set(re.findall(r"^  ([A-Z][A-Za-z]+) = true,$", lua, re.MULTILINE))
    assert terminal == reasons - transient


@pytest.mark.parametrize("reason,want", [("Forbidden", "Degraded"), ("InvalidSpec", "Degraded"),
                                         ("ProviderError", "Progressing"), ("SomethingNew", "Progressing")])
def test_ready_false_reason_alone_decides(reason, want):
    obj = {"metadata": {"generation": 4}, "status": {"observedGeneration": 4, "conditions": [
        {"type": "Ready", "status": "False", "reason": reason, "message": "m"}]}}
    assert run_health(obj) == {"status": want, "message": "m"}


def test_the_guide_ships_the_same_script():
    guide = (ROOT / "docs" / "gitops.md").read_text()
    key = "resource.customizations.health.oidcrefresh.dev_OidcRefreshPolicy: |\n"
    block = guide.split(key, 1)[1].split("```", 1)[0]
    indent = len(block) - len(block.lstrip(" "))
    script = "".join(line[indent:] if line.strip() else line.lstrip(" ")
                     for line in block.splitlines(keepends=True))
    assert script == HEALTH_LUA.read_text(), "docs/gitops.md's argocd-cm snippet differs from health.lua"
