"""The benchmarks' smoke mode: each script runs for a second a target and prints its table.

The figures come from the full runs recorded in BENCHMARKS.md; this only proves the scripts
work on a clean checkout (real services, ghz, wrk), so a recorded command can be run again.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT, tool


def run(*args: str, timeout: float = 300) -> str:
    env = dict(os.environ, PATH=f"{os.path.dirname(tool('ghz'))}:{os.environ['PATH']}")
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done.stdout


def table_rows(output: str, header: str) -> list[list[str]]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_bench_grpc_runs_every_target_today_beside_a_baseline_and_two_workers() -> None:
    out = run("scripts/bench_grpc.py", "--duration", "1", "--repeat", "1", "--connections", "2",
              "--baseline", "HEAD", "--workers", "2", "--open-loop", "50")
    rows = table_rows(out, "| target | requests/s |")
    labels = [row[0] for row in rows]
    assert labels == ["ceiling: bare grpc.aio GetProduct", "GetProduct (inventory + SQLite)",
                      "CreateOrder end to end (3 services)", "GetProduct (inventory + SQLite) @ HEAD",
                      "CreateOrder end to end (3 services) @ HEAD", "GetProduct (inventory + SQLite) @ 2 workers",
                      "CreateOrder end to end (3 services) @ 2 workers"]
    for row in rows:
        assert float(row[1]) > 0 and row[5] == "none", row  # calls answered, none failed
        assert float(row[6].split()[0]) > 0, row  # server CPU was measured
    assert "x the requests/s of HEAD" in out and "x the requests/s of 1 worker" in out
    assert len(table_rows(out, "| target | load |")) == 6


def test_bench_gateway_observability_and_validate_run_and_print_their_tables() -> None:
    tool("wrk", "apt-get install wrk (scripts/test.sh does, as root)")
    gateway = run("scripts/bench_gateway.py", "--duration", "1", "--repeat", "1")
    assert "|---" in gateway and "Traceback" not in gateway
    observability = run("scripts/bench_observability.py", "--duration", "1", "--repeat", "1")
    assert "|---" in observability
    validate = run("scripts/bench_validate.py", "--rounds", "200")
    assert validate.strip()
