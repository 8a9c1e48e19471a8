"""Bytes each database keeps per order: the services on SQLite, N orders through ghz, then every table's size.

    .venv/bin/python scripts/storage_per_order.py --orders 20000

Each database is copied with VACUUM INTO (no free pages, no WAL) and measured table by table
(indexes included) with SQLite's dbstat. What a table keeps depends on its retention
(README "Settings"): orders and notifications are kept, delivered outbox events and settled
reservations for SHOPMESH_OUTBOX_RETENTION_SECONDS / SHOPMESH_RESERVATION_RETENTION_SECONDS
(7 days each), an order's attempt only while it is placed. The last table projects a day and
the steady state at a given rate of orders.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_grpc import ghz_path, settle, start_services, stop_all  # noqa: E402

# table -> how long its rows stay (None: as long as the shop keeps them).
KEPT = {
    ("order", "orders"): None, ("order", "order_lines"): None,
    ("order", "outbox"): "retention (7 days)", ("order", "order_attempts"): "while placed",
    ("inventory", "reservations"): "retention (7 days)", ("inventory", "reservation_lines"): "retention (7 days)",
    ("inventory", "products"): None, ("inventory", "stock_movements"): None,
    ("notification", "notifications"): None,
}
RETENTION_DAYS = 7


def table_bytes(database: Path) -> dict[str, int]:
    """Bytes of each table with its indexes, in a vacuumed copy of `database`."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "copy.db"
        with sqlite3.connect(database) as source:
            source.execute("VACUUM INTO ?", (str(copy),))
        with sqlite3.connect(copy) as db:
            owners = dict(db.execute("SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')"))
            sizes: dict[str, int] = {}
            for name, size in db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
                table = owners.get(name, name)
                sizes[table] = sizes.get(table, 0) + int(size)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=100.0, help="orders per second for the projection")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shopmesh-storage-"))
    processes: dict[str, subprocess.Popen] = {}
    try:
        ports = start_services(ROOT, work, processes, "")
        order = {"request_id": "{{newUUID}}", "user_id": "user-{{.RequestNumber}}",
                 "lines": [{"sku": "bench", "quantity": 1}]}
        subprocess.run([ghz_path(), "--insecure", "--protoset", str(ROOT / "generated" / "shopmesh.protoset"),
                        "--call", "shop.order.v1.OrderService.CreateOrder", "-d", json.dumps(order), "-c", "16",
                        "-n", str(args.orders), f"127.0.0.1:{ports['order']}"], check=True, capture_output=True)
        settle([p.pid for p in processes.values()], step=2.0)  # every event delivered, every mark written
    finally:
        stop_all(processes.values())
    print(f"\n{args.orders} orders of one line (the benchmark's), each database vacuumed, dbstat per table "
          "with its indexes\n")
    print("| database | table | bytes per order | kept |")
    print("|---|---|---:|---|")
    kept_forever: dict[str, float] = {}
    kept_retention: dict[str, float] = {}
    for service in ("order", "inventory", "notification"):
        for table, size in sorted(table_bytes(work / "current" / f"{service}.db").items()):
            if table in ("alembic_version", "sqlite_schema", "sqlite_sequence", "sqlite_stat1"):
                continue
            per_order = size / args.orders
            how = KEPT.get((service, table), "?")
            if how is None:
                kept_forever[service] = kept_forever.get(service, 0) + per_order
            elif how.startswith("retention"):
                kept_retention[service] = kept_retention.get(service, 0) + per_order
            print(f"| {service} | {table} | {per_order:.0f} | {how or 'as long as the shop keeps orders'} |")
    day = args.rate * 86400
    print(f"\nAt {args.rate:g} orders/s ({day / 1e6:.2f} M a day): what each database holds\n")
    print("| database | after one day | after a year (retention purges at work) | without retention, after a year |")
    print("|---|---:|---:|---:|")
    for service in ("order", "inventory", "notification"):
        forever, purged = kept_forever.get(service, 0.0), kept_retention.get(service, 0.0)
        one_day = (forever + purged) * day
        year = forever * day * 365 + purged * day * RETENTION_DAYS
        unbounded = (forever + purged) * day * 365
        print(f"| {service} | {one_day / 1e9:.2f} GB | {year / 1e9:.1f} GB | {unbounded / 1e9:.1f} GB |")


if __name__ == "__main__":
    main()
