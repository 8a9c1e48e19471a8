"""A flash sale: orders for one hot SKU against the same load spread over 100 SKUs, on PostgreSQL.

    .venv/bin/python scripts/bench_hot_sku.py --duration 10

Two order and two inventory instances (and one notification) on a throwaway PostgreSQL
(Debian's binaries, as the tests start it), one ghz per order instance. On PostgreSQL every
sale of a SKU takes that product's row lock from its UPDATE to its COMMIT, so sales of one SKU
run one at a time however many instances there are; sales of different SKUs do not wait for
each other. The script prints both loads side by side, measured in one run, with how long each
sale's write held its lock (inventory's shop_inventory_sale_write_seconds), lightly loaded and
under load, and the one-product ceiling that lock time implies.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_grpc import cpu_seconds, ghz_path  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.support.metrics import scrape, value  # noqa: E402
from tests.support.postgres import PostgresServer, throwaway_server  # noqa: E402
from tests.support.replicas import Replicas  # noqa: E402

SPREAD = 100


def ghz(address: str, data: dict, concurrency: int, duration: int, out: list[dict]) -> None:
    command = [ghz_path(), "--insecure", "--protoset", str(ROOT / "generated" / "shopmesh.protoset"),
               "--call", "shop.order.v1.OrderService.CreateOrder", "-d", json.dumps(data), "-c", str(concurrency),
               "-z", f"{duration}s", "--duration-stop", "wait", "-O", "json", address]
    out.append(json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout))


def sale_writes(replicas: Replicas) -> tuple[float, float]:
    """(seconds, sales) of the inventories' sale writes so far: first statement to commit, the
    longest the product's row lock can have been held (inventory/metrics.py)."""
    pages = [scrape(f"http://127.0.0.1:{replicas.metrics_ports[name]}/metrics")
             for name in replicas.names if name.startswith("inventory-")]
    return (sum(value(p, "shop_inventory_sale_write_seconds_sum") for p in pages),
            sum(value(p, "shop_inventory_sale_write_seconds_count") for p in pages))


SALE_STATEMENT = "query LIKE 'WITH taken AS%' AND query LIKE '%INSERT INTO reservations%'"


def statement_time(postgres: PostgresServer) -> tuple[float, float]:
    """(milliseconds, calls) PostgreSQL spent executing the one-statement sale since the last reset
    (pg_stat_statements): from the statement's start, through the stock UPDATE that takes the
    product's row lock, to its end; what it waited for the lock is in it too."""
    row = postgres.query(f"SELECT coalesce(sum(total_exec_time), 0), coalesce(sum(calls), 0) "
                         f"FROM pg_stat_statements WHERE {SALE_STATEMENT}")
    spent, calls = row.split("|")
    return float(spent), float(calls)


def load(replicas: Replicas, sku: str, concurrency: int, duration: int, postgres: PostgresServer) -> dict:
    order = {"request_id": "{{newUUID}}", "user_id": "flash-{{.RequestNumber}}", "lines": [{"sku": sku, "quantity": 1}]}
    pids = [p.pid for p in replicas.processes.values()]
    writes = sale_writes(replicas)
    postgres.query("SELECT pg_stat_statements_reset()")
    before = sum(cpu_seconds(p) for p in pids)
    reports: list[dict] = []
    threads = [threading.Thread(target=ghz, args=(replicas.address(f"order-{i + 1}"), order, concurrency,
                                                  duration, reports)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu = sum(cpu_seconds(p) for p in pids) - before
    written, sales = (now - then for now, then in zip(sale_writes(replicas), writes, strict=True))
    executed, calls = statement_time(postgres)
    ok = sum(r["statusCodeDistribution"].get("OK", 0) for r in reports)
    errors: dict[str, int] = {}
    for r in reports:
        for code, count in r["statusCodeDistribution"].items():
            if code != "OK":
                errors[code] = errors.get(code, 0) + count
    p99 = max(next((d["latency"] for d in r.get("latencyDistribution") or [] if d["percentage"] == 99), 0)
              for r in reports) / 1e6
    p50 = max(next((d["latency"] for d in r.get("latencyDistribution") or [] if d["percentage"] == 50), 0)
              for r in reports) / 1e6
    return {"rps": sum(r["rps"] for r in reports), "ok": ok, "errors": errors, "p50": p50, "p99": p99,
            "cpu_ms": 1000 * cpu / max(ok, 1), "lock_ms": 1000 * written / max(sales, 1),
            "statement_ms": executed / max(calls, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16, help="ghz workers per order instance")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="shopmesh-hot-"))
    with throwaway_server(free_port(), "shared_preload_libraries=pg_stat_statements") as postgres:
        postgres.query("CREATE EXTENSION pg_stat_statements")
        replicas = Replicas(postgres, folder)
        try:
            replicas.start_all()
            replicas.create_product("hot", 10**9)
            for i in range(SPREAD):
                replicas.create_product(f"cool-{i}", 10**9)
            load(replicas, "hot", 4, 2, postgres)  # warm-up: connections, caches, pools
            light = load(replicas, "hot", 1, args.duration, postgres)
            hot = load(replicas, "hot", args.concurrency, args.duration, postgres)
            spread = load(replicas, f"cool-{{{{randomInt 0 {SPREAD}}}}}", args.concurrency, args.duration, postgres)
        finally:
            replicas.stop_all(graceful=True)
    print(f"\n2 order + 2 inventory instances + 1 notification on PostgreSQL, ghz -c {args.concurrency} against "
          f"each order instance for {args.duration}s (ghz on the same cores)\n")
    print("| load | orders/s | p50 ms | p99 ms | errors | server CPU ms/order "
          "| sale statement in PostgreSQL, ms | sale write seen by inventory, ms |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for label, r in (("one hot SKU, 1 buyer per order instance", light), ("one hot SKU", hot),
                     (f"spread over {SPREAD} SKUs", spread)):
        print(f"| {label} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors'] or 'none'} "
              f"| {r['cpu_ms']:.2f} | {r['statement_ms']:.3f} | {r['lock_ms']:.3f} |")
    held = spread["statement_ms"]  # no other sale of the same row to wait for: the hold itself
    print(f"\nhot / spread: {hot['rps'] / spread['rps']:.2f}x the orders/s")
    print(f"row lock held per sale (the sale statement, uncontended, under load): {held:.3f} ms, so one product "
          f"sells at most ~{1000 / held:.0f} units/s one sale at a time (plus the commit's WAL flush where "
          "synchronous_commit is on; these throwaway servers run it off)")


if __name__ == "__main__":
    main()
