#!/usr/bin/env python3
"""Regenerates deploy/operator.yaml from the chart (default values): `python3 tests/chart/render_deploy.py`.
With --check, exits 1 when the committed file differs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chartlib import DEPLOY, deploy_manifest  # noqa: E402


def main() -> int:
    text = deploy_manifest()
    if "--check" in sys.argv[1:]:
        if DEPLOY.read_text() != text:
            print(f"{DEPLOY} is stale: run python3 tests/chart/render_deploy.py", file=sys.stderr)
            return 1
        return 0
    DEPLOY.write_text(text)
    print(f"wrote {DEPLOY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
