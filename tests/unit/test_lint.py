"""The code passes the project's ruff rules (pyproject.toml), so lint regressions fail CI."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_the_code_passes_ruff() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
