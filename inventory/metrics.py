"""Inventory's business metrics in Prometheus (the RPC ones are mesh/observe/metrics.py's).

An adapter: only the composition root imports it, and passes `PrometheusMetrics()` to the use
cases as their `Metrics` (inventory/ports.py). The series are registered when this module is
first imported, once per process, as Prometheus' client requires.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from inventory.ports import Store

UNITS = Counter("shop_inventory_units_total", "Units moved by reservations: reserved, then sold, released, "
                "or expired (released because nobody committed them in time).", ("movement",))
OPEN_RESERVATIONS = Gauge("shop_inventory_open_reservations", "Reservations held now, neither committed nor released "
                          "(read from the database at each scrape: the same for every instance).", multiprocess_mode="mostrecent")
RESERVED_UNITS = Gauge("shop_inventory_reserved_units", "Units held by open reservations (from the database).", multiprocess_mode="mostrecent")
for _movement in ("reserved", "sold", "released", "expired"):
    UNITS.labels(_movement)


class PrometheusMetrics:
    def units(self, movement: str, count: int) -> None:
        UNITS.labels(movement).inc(count)


async def refresh_gauges(store: Store) -> None:
    """The gauges read from the database, at each scrape."""
    async with store.read() as tx:
        count, units = await tx.open_reservations()
    OPEN_RESERVATIONS.set(count)
    RESERVED_UNITS.set(units)
