"""Long-lived client channels, one per upstream service, shared by every call.

A channel spreads calls over every instance discovery lists (gRPC's
round_robin) and retries a call that failed with UNAVAILABLE on another
instance when that is safe: reads, and writes that carry an idempotency key
(the RETRYABLE list below; AdjustStock and CreateProduct are left out). When
the instance set changes, a new channel replaces the old one, which is closed
once its in-flight calls had time to end. Downstream deadlines come from
`mesh.status.remaining`, so a call never outlives the call that caused it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from mesh import metrics, telemetry
from mesh.discovery import Discovery
from mesh.errors import Unavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
)
RETRYABLE = {
    "shop.inventory.v1.InventoryService": ["GetProduct", "ListProducts", "ReserveStock", "CommitReservation",
                                           "ReleaseReservation"],
    "shop.order.v1.OrderService": ["CreateOrder", "GetOrder", "ListOrders", "CancelOrder"],
    "shop.notification.v1.NotificationService": ["SendNotification", "ListNotifications"],
    "grpc.health.v1.Health": ["Check"],
}
SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": service, "method": method} for service, methods in RETRYABLE.items() for method in methods],
        "retryPolicy": {
            "maxAttempts": 3,
            "initialBackoff": "0.05s",
            "maxBackoff": "0.5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
    # A retry budget: retries stop when more than half the recent calls failed.
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
})
OLD_CHANNEL_GRACE = 30.0


def target(addresses: Sequence[str]) -> str:
    if len(addresses) == 1 and not addresses[0][0].isdigit():
        return addresses[0]  # a host name: let gRPC's DNS resolver find every address behind it
    return "ipv4:" + ",".join(addresses)


class Upstreams:
    """The current channel of each upstream, and what callers built on it."""

    def __init__(self, discovery: Discovery):
        self._discovery = discovery
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._bound: dict[tuple[str, Any], Any] = {}
        self._retired: set[asyncio.Task[None]] = set()
        discovery.subscribe(self._changed)

    async def watch(self, *services: str) -> None:
        for service in services:
            await self._discovery.watch(service)

    def channel(self, service: str) -> grpc.aio.Channel:
        channel = self._channels.get(service)
        if channel is None:
            addresses = list(self._discovery.addresses(service))
            if not addresses:
                raise Unavailable(f"{service} did not answer: no healthy instance is known")
            channel = grpc.aio.insecure_channel(
                target(addresses),
                options=[*CHANNEL_OPTIONS, ("grpc.service_config", SERVICE_CONFIG)],
                interceptors=telemetry.client_interceptors() or None,
            )
            channel = metrics.metered(channel)
            self._channels[service] = channel
            logger.info("channel to %s at %s", service, ", ".join(addresses))
        return channel

    def bound(self, service: str, key: Any, make: Callable[[grpc.aio.Channel], T]) -> T:
        """`make(channel)` (a stub, a multicallable) for the current channel, built once per channel."""
        found = self._bound.get((service, key))
        if found is None:
            found = self._bound[(service, key)] = make(self.channel(service))
        return found  # type: ignore[no-any-return]

    def _changed(self, service: str, addresses: Sequence[str]) -> None:
        old = self._channels.pop(service, None)
        for key in [k for k in self._bound if k[0] == service]:
            del self._bound[key]
        if old is not None:
            task = asyncio.get_running_loop().create_task(self._retire(old))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    @staticmethod
    async def _retire(channel: grpc.aio.Channel) -> None:
        await asyncio.sleep(OLD_CHANNEL_GRACE)
        await channel.close()

    async def close(self) -> None:
        for task in list(self._retired):
            task.cancel()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._bound.clear()
