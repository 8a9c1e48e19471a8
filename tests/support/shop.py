"""A small shop over real gRPC for the integration tests: inventory, order and notification
served in the test's process, three products, and the helpers the tests share to call them."""

from __future__ import annotations

import grpc
from google.rpc import status_pb2

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from generated.shop.order.v1 import order_pb2 as pb
from generated.shop.order.v1 import order_pb2_grpc
from tests.support.mesh import Start, channel


def status_details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a refusal carries in its trailers."""
    for key, value in error.trailing_metadata():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no google.rpc.Status in the trailers")


class Shop:
    def __init__(self, inventory, orders, notifications, channels):
        self.inventory, self.orders, self.notifications, self.channels = inventory, orders, notifications, channels

    async def product(self, sku: str) -> inventory_pb2.Product:
        return await self.inventory.GetProduct(inventory_pb2.GetProductRequest(sku=sku))

    async def notes(self, user: str) -> list[str]:
        reply = await self.notifications.ListNotifications(notification_pb2.ListNotificationsRequest(user_id=user))
        return [n.event_id for n in reply.notifications]


async def open_shop(start: Start, notification_port: int | None = None, **order_env: str) -> Shop:
    inv = await start("inventory")
    note = await start("notification", **({"SHOPMESH_NOTIFICATION_PORT": str(notification_port)} if notification_port else {}))
    env = {"SHOPMESH_INVENTORY_ADDR": f"127.0.0.1:{inv.port}", "SHOPMESH_NOTIFICATION_ADDR": f"127.0.0.1:{note.port}", **order_env}
    orders = await start("order", **env)
    channels = [channel(inv), channel(orders), channel(note)]
    shop = Shop(
        inventory_pb2_grpc.InventoryServiceStub(channels[0]),
        order_pb2_grpc.OrderServiceStub(channels[1]),
        notification_pb2_grpc.NotificationServiceStub(channels[2]),
        channels,
    )
    for sku, cents, currency, stock in (("mug", 1299, "USD", 10), ("pot", 3450, "USD", 3), ("tee", 900, "EUR", 5)):
        product = inventory_pb2.Product(sku=sku, name=sku, price=money_pb2.Money(currency_code=currency, minor_units=cents), available=stock)
        await shop.inventory.CreateProduct(inventory_pb2.CreateProductRequest(product=product))
    return shop


def order_request(request_id: str = "r1", user: str = "alice", **lines: int) -> pb.CreateOrderRequest:
    return pb.CreateOrderRequest(
        request_id=request_id, user_id=user, lines=[pb.OrderLine(sku=s, quantity=q) for s, q in (lines or {"mug": 2}).items()]
    )
