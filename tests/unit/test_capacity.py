"""scripts/capacity.py's arithmetic (pure logic; the costs it reads are measured by bench_grpc)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import capacity  # noqa: E402

REPORT = {
    "cores": 2, "pool_size": 10,
    "targets": {
        "CreateOrder end to end (3 services, PostgreSQL)": {
            "rps": 400.0, "cpu_ms_each": [1.5, 1.0, 0.5], "database_cpu_ms": 1.0, "wal_bytes": 2000.0,
            "ghz_cpu_ms": 1.0},
        "CreateOrder end to end (3 services, PostgreSQL via PgBouncer)": {
            "rps": 300.0, "cpu_ms_each": [1.7, 1.1, 0.6], "database_cpu_ms": 3.0, "wal_bytes": 2100.0,
            "ghz_cpu_ms": 1.1},
    },
}


def test_costs_are_read_from_the_direct_run_and_the_pooler_is_the_difference() -> None:
    costs = capacity.costs_from(REPORT)
    assert costs.services_ms == {"order": 1.5, "inventory": 1.0, "notification": 0.5}
    assert (costs.database_ms, costs.wal_bytes, costs.pooler_ms, costs.load_ms) == (1.0, 2000.0, 2.0, 1.0)


def test_this_machine_is_its_cores_over_everything_an_order_costs_on_them() -> None:
    assert capacity.this_machine(capacity.costs_from(REPORT)) == pytest.approx(2 * 1000 / 5.0)


def test_a_plan_scales_each_part_and_names_the_first_limit_it_passes() -> None:
    costs, limits = capacity.costs_from(REPORT), capacity.Limits(lock_ms=0.5, utilisation=0.5, primary_cores=10,
                                                                 wal_mb_s=100.0, rtt_ms=0.25, round_trips=4)
    small = capacity.plan(1_000, costs, limits)
    assert small.service_cores == {"order": 3.0, "inventory": 2.0, "notification": 1.0}
    assert small.service_processes == {"order": 3, "inventory": 2, "notification": 2}  # at least two each
    assert small.database_cores == pytest.approx(2.0) and small.wal_mb_s == pytest.approx(2.0)
    assert small.poolers == 4  # 2 ms of PgBouncer an order at 50%
    assert small.server_connections == 4  # 1000/s x (1 + 4 x 0.25) ms, half busy
    assert small.client_connections == 7 * 10
    assert small.first_limit == "none of one primary's" and small.hot_share == 1.0
    # Ceilings: CPU 10 x 0.5 x 1000 / 1 = 5,000/s; WAL 100 MB/s / 2000 B = 50,000/s; one row 2,000 sales/s.
    assert capacity.plan(4_000, costs, limits).hot_share == 0.5
    assert capacity.plan(10_000, costs, limits).first_limit == "the primary's CPU"
    wal_bound = capacity.Limits(primary_cores=1000, wal_mb_s=10.0)
    assert capacity.plan(10_000, costs, wal_bound).first_limit == "the primary's WAL"  # 5,000/s of WAL


def test_the_recorded_costs_render_and_the_model_is_within_20_percent_of_this_machine() -> None:
    """The recorded run in docs/ (measured by bench_grpc --json): the check the docs page quotes."""
    recorded = json.loads((ROOT / "docs" / "capacity-costs.json").read_text())
    costs = capacity.costs_from(recorded)
    assert abs(capacity.this_machine(costs) / costs.measured_rps - 1) <= 0.20
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "capacity.py")], capture_output=True, text=True,
                         check=True).stdout
    assert "| 100,000 |" in out and "predicted" in out
