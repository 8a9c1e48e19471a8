"""Order's business metrics in Prometheus (the RPC ones are mesh/observe/metrics.py's).

An adapter: only the composition root imports it, and passes `PrometheusMetrics()` to the use
cases as their `Metrics` (order/ports.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from order.ports import Store

ORDERS = Counter("shop_orders_total", "Orders by outcome: confirmed when placed, cancelled when cancelled, "
                 "rejected when placing failed (out of stock, unknown product, upstream down).", ("status",))
OUTBOX_PENDING = Gauge("shop_order_outbox_pending", "Order events not yet delivered to notification "
                       "(read from the database at each scrape).", multiprocess_mode="mostrecent")
ATTEMPTS_OPEN = Gauge("shop_order_attempts_open", "Orders being placed, or abandoned by their process or caller "
                      "and not yet settled by recovery (read from the database at each scrape).", multiprocess_mode="mostrecent")
for _status in ("confirmed", "cancelled", "rejected"):
    ORDERS.labels(_status)


class PrometheusMetrics:
    def orders(self, status: str) -> None:
        ORDERS.labels(status).inc()


async def refresh_gauges(store: Store) -> None:
    """The gauges read from the database, at each scrape."""
    async with store.read() as tx:
        OUTBOX_PENDING.set(await tx.count_pending())
        ATTEMPTS_OPEN.set(await tx.count_attempts())
