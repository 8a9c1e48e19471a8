"""Order's clients of inventory and notification: domain values in, domain errors out.

Each call's deadline is what is left of the caller's (mesh.status.remaining).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from mesh.channels import Upstreams
from mesh.money import Money
from mesh.status import error_from_rpc, remaining
from order.domain import Event

T = TypeVar("T")


class HeldState(enum.IntEnum):
    RESERVED = 1
    COMMITTED = 2
    RELEASED = 3


@dataclass(frozen=True)
class Held:
    """What inventory holds for an order: the state and each SKU's unit price."""

    state: HeldState
    unit_prices: dict[str, Money]


async def _call(upstream: str, call: Awaitable[T]) -> T:
    """Awaits an upstream call; its failure comes out as the matching ShopError."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise error_from_rpc(upstream, error) from None


class InventoryClient:
    def __init__(self, upstreams: Upstreams, default_timeout: float):
        self._upstreams = upstreams
        self._timeout = default_timeout

    @property
    def _stub(self) -> inventory_pb2_grpc.InventoryServiceStub:
        # The stub of the current channel: it changes when the instances do.
        return self._upstreams.bound("inventory", "stub", inventory_pb2_grpc.InventoryServiceStub)

    async def reserve(self, reservation_id: str, lines: Sequence[tuple[str, int]]) -> Held:
        request = inventory_pb2.ReserveStockRequest(
            reservation_id=reservation_id,
            lines=[inventory_pb2.ReservationLine(sku=sku, quantity=quantity) for sku, quantity in lines],
        )
        reply = await _call("inventory", self._stub.ReserveStock(request, timeout=remaining(self._timeout)))
        return Held(
            HeldState(reply.state),
            {line.sku: Money(line.unit_price.currency_code, line.unit_price.minor_units) for line in reply.lines},
        )

    async def commit(self, reservation_id: str) -> None:
        request = inventory_pb2.CommitReservationRequest(reservation_id=reservation_id)
        await _call("inventory", self._stub.CommitReservation(request, timeout=remaining(self._timeout)))

    async def release(self, reservation_id: str) -> None:
        request = inventory_pb2.ReleaseReservationRequest(reservation_id=reservation_id)
        await _call("inventory", self._stub.ReleaseReservation(request, timeout=remaining(self._timeout)))


class NotificationClient:
    def __init__(self, upstreams: Upstreams, timeout: float):
        self._upstreams = upstreams
        self._timeout = timeout

    @property
    def _stub(self) -> notification_pb2_grpc.NotificationServiceStub:
        return self._upstreams.bound("notification", "stub", notification_pb2_grpc.NotificationServiceStub)

    async def send(self, event: Event) -> None:
        request = notification_pb2.SendNotificationRequest(
            event_id=event.event_id, user_id=event.user_id, kind=event.kind, subject=event.subject, body=event.body
        )
        # The outbox relay calls this outside any request, so its own timeout applies.
        await _call("notification", self._stub.SendNotification(request, timeout=self._timeout))
