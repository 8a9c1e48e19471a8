"""Long-lived client channels, one per upstream service, shared by every call.

A channel to several instances spreads calls with gRPC's round_robin policy.
Downstream deadlines come from `mesh.status.remaining`, so a call never outlives
the call that caused it.
"""

from __future__ import annotations

import logging

import grpc

from mesh.discovery import Discovery

logger = logging.getLogger(__name__)

CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
)


def target(addresses: list[str] | tuple[str, ...]) -> str:
    if len(addresses) == 1:
        return addresses[0]
    return "ipv4:" + ",".join(addresses)


class Upstreams:
    """Opens each upstream's channel on first use and keeps it until `close()`."""

    def __init__(self, discovery: Discovery):
        self._discovery = discovery
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, service: str) -> grpc.aio.Channel:
        channel = self._channels.get(service)
        if channel is None:
            addresses = list(self._discovery.addresses(service))
            options = [*CHANNEL_OPTIONS]
            if len(addresses) > 1:
                options.append(("grpc.lb_policy_name", "round_robin"))
            channel = grpc.aio.insecure_channel(target(addresses), options=options)
            self._channels[service] = channel
            logger.info("channel to %s at %s", service, ", ".join(addresses))
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
