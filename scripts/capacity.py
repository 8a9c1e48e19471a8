"""Capacity past this machine, on paper: what serves 1,000, 10,000 and 100,000 orders/s on PostgreSQL.

    .venv/bin/python scripts/capacity.py [--costs docs/capacity-costs.json] [--lock-ms 0.18]
    .venv/bin/python scripts/capacity.py --measure     # measure the costs first (bench_grpc, ~3 min)

The model (docs/capacity.md) takes the costs of one order measured on this machine by
`scripts/bench_grpc.py --database all --json FILE` (each service's CPU, PostgreSQL's CPU and
write-ahead log, PgBouncer's CPU) and the row-lock time of one sale from
`scripts/bench_hot_sku.py`, and says, for each rate: the cores and processes each service needs,
PostgreSQL's cores and WAL rate, the PgBouncer processes and server connections, and which
limit of one primary is reached first. It checks itself against this machine first: the orders/s
it predicts for these two cores (services, database and the load generator on them) beside the
orders/s measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("order", "inventory", "notification")
RATES = (1_000, 10_000, 100_000)


@dataclass(frozen=True)
class Costs:
    """What one order costs, measured (milliseconds of CPU, bytes of WAL)."""

    services_ms: dict[str, float]  # each service's CPU per order
    database_ms: float  # PostgreSQL's CPU per order (postmaster and backends)
    wal_bytes: float  # write-ahead log per order
    pooler_ms: float  # PgBouncer's own CPU per order (transaction mode)
    load_ms: float  # the load generator's CPU per order (only to check the model on this machine)
    measured_rps: float  # orders/s measured with all of the above sharing this machine's cores
    cores: int  # this machine's cores
    pool_size: int  # each instance's connections (SHOPMESH_DATABASE_POOL_SIZE)


@dataclass(frozen=True)
class Limits:
    """What one box and one row can do: assumptions, each a flag, each said in docs/capacity.md."""

    lock_ms: float = 0.18  # one sale's row lock, measured by bench_hot_sku (lightly loaded)
    commit_flush_ms: float = 0.0  # added per sale where synchronous_commit waits for the WAL flush
    utilisation: float = 0.6  # run processes at this share of their cores, keep the rest for bursts
    primary_cores: int = 64  # the largest primary one would buy
    wal_mb_s: float = 250.0  # write-ahead log one primary (and its replicas) sustain
    rtt_ms: float = 0.2  # a round trip between a service and the database in one zone
    round_trips: float = 4.0  # database round trips per order (attempt, order, sale, notification)


@dataclass(frozen=True)
class Plan:
    rate: int
    service_cores: dict[str, float]
    service_processes: dict[str, int]
    database_cores: float
    wal_mb_s: float
    poolers: int
    server_connections: int
    client_connections: int
    first_limit: str
    hot_share: float  # the largest share of these orders one product can have


def costs_from(report: dict) -> Costs:
    """The figures of bench_grpc's --json report: CreateOrder on PostgreSQL directly, and through
    PgBouncer when the run had it (its database column less the direct one is PgBouncer's)."""
    targets = report["targets"]
    direct = targets["CreateOrder end to end (3 services, PostgreSQL)"]
    pooled = targets.get("CreateOrder end to end (3 services, PostgreSQL via PgBouncer)")
    pooler = max(pooled["database_cpu_ms"] - direct["database_cpu_ms"], 0.0) if pooled else 0.0
    return Costs(dict(zip(SERVICES, direct["cpu_ms_each"], strict=True)), direct["database_cpu_ms"],
                 direct["wal_bytes"], pooler, direct["ghz_cpu_ms"], direct["rps"], report["cores"],
                 report["pool_size"])


def this_machine(costs: Costs) -> float:
    """Orders/s these cores give when everything in the measured run shares them, saturated."""
    per_order = sum(costs.services_ms.values()) + costs.database_ms + costs.load_ms
    return costs.cores * 1000 / per_order


def ceilings(costs: Costs, limits: Limits) -> dict[str, float]:
    """Orders/s at which each limit of one primary is reached."""
    return {
        "the primary's CPU": limits.primary_cores * limits.utilisation * 1000 / costs.database_ms,
        "the primary's WAL": limits.wal_mb_s * 1e6 / costs.wal_bytes,
    }


def hot_row(limits: Limits) -> float:
    """Sales/s of one product: its row is locked by one sale at a time."""
    return 1000 / (limits.lock_ms + limits.commit_flush_ms)


def plan(rate: int, costs: Costs, limits: Limits) -> Plan:
    cores = {s: rate * ms / 1000 / limits.utilisation for s, ms in costs.services_ms.items()}
    processes = {s: max(2, math.ceil(c)) for s, c in cores.items()}  # one process a core, two for redundancy
    # Little's law: connections busy = rate x the time a server connection is held per order.
    held_ms = costs.database_ms + limits.round_trips * limits.rtt_ms
    server = math.ceil(rate * held_ms / 1000 / 0.5)  # kept at most half busy, so none waits long
    found = ceilings(costs, limits)
    over = [name for name, ceiling in sorted(found.items(), key=lambda kv: kv[1]) if ceiling < rate]
    return Plan(
        rate=rate, service_cores=cores, service_processes=processes,
        database_cores=rate * costs.database_ms / 1000 / limits.utilisation,
        wal_mb_s=rate * costs.wal_bytes / 1e6,
        poolers=max(1, math.ceil(rate * costs.pooler_ms / 1000 / limits.utilisation)),
        server_connections=server,
        client_connections=sum(processes.values()) * costs.pool_size,
        first_limit=over[0] if over else "none of one primary's",
        hot_share=min(1.0, hot_row(limits) / rate),
    )


def render(costs: Costs, limits: Limits) -> str:
    predicted = this_machine(costs)
    lines = [
        "Measured per order: " + ", ".join(f"{s} {ms:.2f} ms" for s, ms in costs.services_ms.items())
        + f" of CPU; PostgreSQL {costs.database_ms:.2f} ms of CPU and {costs.wal_bytes:.0f} B of WAL; "
        f"PgBouncer {costs.pooler_ms:.2f} ms; a sale's row lock {limits.lock_ms:.3f} ms.",
        f"Check on this machine ({costs.cores} cores shared by the services, PostgreSQL and the load generator): "
        f"predicted {predicted:.0f} orders/s, measured {costs.measured_rps:.0f} "
        f"({100 * (predicted / costs.measured_rps - 1):+.0f}%).",
        "",
        "| orders/s | order cores (processes) | inventory | notification | PostgreSQL cores | WAL MB/s "
        "| PgBouncer processes | server connections | client connections | one product's largest share "
        "| first limit passed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for rate in RATES:
        p = plan(rate, costs, limits)
        each = [f"{p.service_cores[s]:.1f} ({p.service_processes[s]})" for s in SERVICES]
        lines.append(f"| {rate:,} | {' | '.join(each)} | {p.database_cores:.1f} | {p.wal_mb_s:.1f} | {p.poolers} "
                     f"| {p.server_connections} | {p.client_connections} | {p.hot_share:.0%} | {p.first_limit} |")
    lines += ["", "One primary's ceilings: " + ", ".join(
        f"{name} at {ceiling:,.0f} orders/s" for name, ceiling in sorted(ceilings(costs, limits).items(),
                                                                         key=lambda kv: kv[1]))
        + f" (at {limits.utilisation:.0%} of {limits.primary_cores} cores, {limits.wal_mb_s:.0f} MB/s of WAL); "
        f"one product's row at {hot_row(limits):,.0f} sales/s."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--costs", type=Path, default=ROOT / "docs" / "capacity-costs.json",
                        help="bench_grpc's --json report (default: the one recorded in docs/)")
    parser.add_argument("--measure", action="store_true", help="measure the costs now (bench_grpc --database all)")
    for field, default in Limits.__dataclass_fields__.items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default.default), default=default.default)
    args = parser.parse_args()
    path = args.costs
    if args.measure:
        path = Path(tempfile.mkdtemp(prefix="shopmesh-capacity-")) / "costs.json"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_grpc.py"), "--database", "all",
                        "--duration", "5", "--repeat", "3", "--json", str(path)], check=True)
    limits = Limits(**{field: getattr(args, field) for field in Limits.__dataclass_fields__})
    print(render(costs_from(json.loads(path.read_text())), limits))


if __name__ == "__main__":
    main()
