"""Notification's business metrics in Prometheus (the RPC ones are mesh/observe/metrics.py's).

An adapter: only the composition root imports it, and passes `PrometheusMetrics()` to the use
cases as their `Metrics` (notification/ports.py). No label by kind: callers choose kinds freely,
and a label must not grow without bound.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SENT = Counter("shop_notifications_sent_total", "Notifications stored and delivered, one per event.")
STREAMS = Gauge("shop_notification_streams_open", "Live notification streams this instance serves now.", multiprocess_mode="livesum")


class PrometheusMetrics:
    def sent(self, count: int) -> None:
        SENT.inc(count)

    def streams(self, change: int) -> None:
        STREAMS.inc(change)
