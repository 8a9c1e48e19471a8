"""The layers as import-linter contracts (pyproject.toml, [tool.importlinter]), run like any test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = (
    "Domain modules import neither gRPC nor SQLAlchemy",
    "Use cases import no adapter: no gRPC, SQL, Prometheus, store or tool",
    "The runtime imports no service and not the gateway",
    "No service imports another service or the gateway",
    "No test imports another test module: what tests share is in tests/support",
    "mesh's packages are layers: each imports only those below it",
)


def test_every_layer_contract_is_kept_over_the_whole_tree() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    analyzed = re.search(r"Analyzed (\d+) files", done.stdout)
    assert analyzed is not None and int(analyzed.group(1)) > 100, done.stdout  # the tree, not an empty one
    for name in CONTRACTS:
        assert f"{name} KEPT" in done.stdout, done.stdout
