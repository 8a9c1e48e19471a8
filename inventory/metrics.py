"""Inventory's business metrics in Prometheus (the RPC ones are mesh/observe/metrics.py's).

An adapter: only the composition root imports it, and passes `PrometheusMetrics()` to the use
cases as their `Metrics` (inventory/ports.py). The series are registered when this module is
first imported, once per process, as Prometheus' client requires.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from inventory.ports import Store

UNITS = Counter("shop_inventory_units_total", "Units moved by reservations: reserved, then sold, released, "
                "or expired (released because nobody committed them in time).", ("movement",))
OPEN_RESERVATIONS = Gauge("shop_inventory_open_reservations", "Reservations held now, neither committed nor released "
                          "(read from the database at each scrape: the same for every instance).", multiprocess_mode="mostrecent")
RESERVED_UNITS = Gauge("shop_inventory_reserved_units", "Units held by open reservations (from the database).", multiprocess_mode="mostrecent")
SALE_WRITE = Histogram(
    "shop_inventory_sale_write_seconds", "How long a sale's write took from its first statement to its commit, "
    "as inventory saw it: the longest a product's row lock (PostgreSQL) or the file's write lock (SQLite) "
    "was held for it. Its mean bounds how many sales of one hot product a second the database can take.",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0))
for _movement in ("reserved", "sold", "released", "expired"):
    UNITS.labels(_movement)


class PrometheusMetrics:
    def units(self, movement: str, count: int) -> None:
        UNITS.labels(movement).inc(count)

    def sale_written(self, seconds: float) -> None:
        SALE_WRITE.observe(seconds)


async def refresh_gauges(store: Store) -> None:
    """The gauges read from the database, at each scrape."""
    async with store.read() as tx:
        count, units = await tx.open_reservations()
    OPEN_RESERVATIONS.set(count)
    RESERVED_UNITS.set(units)
