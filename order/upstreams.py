"""Order's clients of inventory and notification: domain values in, domain errors out.

Each call's deadline is what is left of the caller's (mesh.kernel.deadline.remaining).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TypeVar

import grpc

from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from mesh.client.channels import Upstreams
from mesh.kernel.deadline import remaining
from mesh.kernel.money import Money
from mesh.rpc.status import error_from_rpc
from order.domain import Event, Held, HeldState

T = TypeVar("T")


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

    async def sell(self, reservation_id: str, lines: Sequence[tuple[str, int]]) -> Held:
        """Sells every line at once (ReserveStock with commit): one call, one transaction. An
        inventory older than `commit` holds instead, and says RESERVED."""
        request = inventory_pb2.ReserveStockRequest(
            reservation_id=reservation_id,
            lines=[inventory_pb2.ReservationLine(sku=sku, quantity=quantity) for sku, quantity in lines],
            commit=True,
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

    async def send(self, events: Sequence[Event]) -> None:
        """Delivers `events` in one call and one transaction of notification's: all or none."""
        request = notification_pb2.BatchSendNotificationsRequest(requests=[
            notification_pb2.SendNotificationRequest(
                event_id=e.event_id, user_id=e.user_id, kind=e.kind, subject=e.subject, body=e.body)
            for e in events
        ])
        # The outbox relay calls this outside any request, so its own timeout applies.
        await _call("notification", self._stub.BatchSendNotifications(request, timeout=self._timeout))
