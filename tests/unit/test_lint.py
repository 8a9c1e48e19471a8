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


def test_the_log_watch_finds_a_traceback_a_process_wrote_and_only_new_lines(tmp_path) -> None:
    """tests/conftest.py's watch, which fails any test after which a mesh process logged a traceback."""
    from tests import conftest

    log = tmp_path / "order.log"
    log.write_text("10:00 INFO fine\n")
    assert conftest._new_problems(tmp_path, ()) == []
    with log.open("a") as out:
        out.write("Traceback (most recent call last):\n  File x\nKeyError: 1\n")
        out.write("10:01 ERROR   asyncio: Task was destroyed but it is pending!\n")
    found = conftest._new_problems(tmp_path, ())
    assert len(found) == 2 and "KeyError" in found[0]
    assert conftest._new_problems(tmp_path, ()) == []  # read once
    (tmp_path / "consul.log").write_text("Traceback (most recent call last):\n")  # not ours
    assert conftest._new_problems(tmp_path, ()) == []
