"""The benchmarks' smoke mode: each script runs for a second a target and prints its table.

The figures come from the full runs recorded in BENCHMARKS.md; this only proves the scripts
work on a clean checkout (real services, ghz, wrk), so a recorded command can be run again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import ROOT, needed, tool
from tests.support.postgres import bin_dir


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
                      "CreateOrder end to end (3 services, SQLite)", "GetProduct (inventory + SQLite) @ HEAD",
                      "CreateOrder end to end (3 services, SQLite) @ HEAD", "GetProduct (inventory + SQLite) @ 2 workers",
                      "CreateOrder end to end (3 services, SQLite) @ 2 workers"]
    for row in rows:
        assert float(row[1]) > 0 and row[5] == "none", row  # calls answered, none failed
        assert float(row[6].split()[0]) > 0, row  # server CPU was measured
    assert "x the requests/s of HEAD" in out and "x the requests/s of 1 worker" in out
    assert len(table_rows(out, "| target | load |")) == 6


def test_bench_grpc_measures_every_database_in_the_same_rounds() -> None:
    if bin_dir() is None:
        needed("PostgreSQL's binaries", "apt-get install postgresql (scripts/test.sh does)")
    costs = Path(tempfile.mkdtemp(prefix="shopmesh-costs-")) / "costs.json"
    out = run("scripts/bench_grpc.py", "--duration", "1", "--repeat", "1", "--database", "all", "--json", str(costs))
    rows = {row[0]: row for row in table_rows(out, "| target | requests/s |")}
    for database in ("SQLite", "PostgreSQL", "PostgreSQL via PgBouncer"):
        for label in (f"GetProduct (inventory + {database})", f"CreateOrder end to end (3 services, {database})"):
            row = rows[label]
            assert float(row[1]) > 0 and row[5] == "none", row
            assert float(row[6].split()[0]) > 0, row  # the services' CPU
            assert (row[7] != "") == (database != "SQLite"), row  # the database server's, where it is one
            if database != "SQLite":
                assert float(row[7].split()[0]) > 0, row
            if database != "SQLite" and label.startswith("CreateOrder"):
                assert int(row[7].split("(")[1].split()[0]) > 1000, row  # bytes of WAL an order
    assert out.count("x SQLite's services' CPU per request") == 4
    # The capacity model reads that run's figures and checks itself against it.
    model = run("scripts/capacity.py", "--costs", str(costs))
    assert "Check on this machine (" in model and "orders/s, measured" in model
    assert [row[0] for row in table_rows(model, "| orders/s |")] == ["1,000", "10,000", "100,000"]


def test_bench_gateway_observability_and_validate_run_and_print_their_tables() -> None:
    tool("wrk", "apt-get install wrk (scripts/test.sh does, as root)")
    gateway = run("scripts/bench_gateway.py", "--duration", "1", "--repeat", "1")
    assert "|---" in gateway and "Traceback" not in gateway
    rows = {row[0]: row for row in table_rows(gateway, "| front |")}
    for label in ("the same gateway, Connect unary POST, JSON", "the same gateway, Connect unary POST, proto",
                  "the same gateway, Connect GET, JSON"):  # Connect beside REST, answered without an error
        assert float(rows[label][1]) > 0 and rows[label][4] == "none" and float(rows[label][5]) > 0, rows[label]
    assert "Connect JSON vs REST on the same gateway" in gateway
    observability = run("scripts/bench_observability.py", "--duration", "1", "--repeat", "1")
    assert "|---" in observability
    validate = run("scripts/bench_validate.py", "--rounds", "200")
    assert validate.strip()


def test_storage_per_order_measures_every_table_and_projects_a_day() -> None:
    out = run("scripts/storage_per_order.py", "--orders", "300")
    rows = {(row[0], row[1]): float(row[2]) for row in table_rows(out, "| database | table |")}
    for table in (("order", "orders"), ("order", "order_lines"), ("order", "outbox"), ("inventory", "reservations"),
                  ("notification", "notifications")):
        assert rows[table] * 300 > 5 * 4096, (table, rows)  # every order left a row there: pages of them
    assert rows[("order", "order_attempts")] * 300 <= 4 * 4096  # and none here (empty root pages): every attempt ended
    assert len(table_rows(out, "| database | after one day |")) == 3


def _postgres() -> None:
    from tests.support.postgres import bin_dir

    if bin_dir() is None:
        from tests.conftest import needed

        needed("PostgreSQL", "apt-get install postgresql (scripts/test.sh does, as root)")


def test_bench_hot_sku_compares_one_hot_sku_with_a_spread_load_on_postgresql() -> None:
    _postgres()
    out = run("scripts/bench_hot_sku.py", "--duration", "1", "--concurrency", "4")
    rows = table_rows(out, "| load | orders/s |")
    assert [row[0] for row in rows] == ["one hot SKU, 1 buyer per order instance", "one hot SKU", "spread over 100 SKUs"]
    assert all(float(row[1]) > 0 and row[4] == "none" for row in rows), rows
    assert all(0 < float(row[6]) < float(row[7]) for row in rows), rows  # PostgreSQL's part of inventory's write
    assert "row lock held per sale" in out


def test_bench_streams_opens_streams_and_times_events_across_instances() -> None:
    _postgres()
    out = run("scripts/bench_streams.py", "--streams", "50", "--idle", "1", "--events", "5")
    [row] = table_rows(out, "| code | streams open |")
    assert row[0] == "today" and row[1] == "50" and row[-1] == "0", row  # all open, every event arrived


def test_bench_transport_measures_connections_streams_and_hostile_clients() -> None:
    out = run("scripts/bench_transport.py", "--connections", "100", "--streams", "50", "--seconds", "2")
    assert "1. 100 idle keep-alive connections:" in out and "2. 50 open SSE streams:" in out
    [row] = [line.split() for line in out.splitlines() if line.startswith("this tree")]
    assert float(row[4]) < 64, row  # the gateway's peak above idle, in MB, with the hostile clients


def test_soak_on_postgresql_kills_restarts_and_checks_every_invariant() -> None:
    if bin_dir() is None:
        needed("PostgreSQL's binaries", "apt-get install postgresql (scripts/test.sh does)")
    out = run("scripts/soak.py", "--minutes", "0.4", "--seed", "3", "--database", "postgresql", timeout=400)
    assert "on postgresql, seed 3" in out and "'postgresql restarts': 2" in out, out[-2000:]
    assert "invariant violations 0" in out and "RESULT: PASS" in out, out[-2000:]
