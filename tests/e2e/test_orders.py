"""The order flow across the real mesh, under concurrency, with generated stubs."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from pathlib import Path

import grpc
import pytest

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from generated.shop.order.v1 import order_pb2, order_pb2_grpc
from tests.support.mesh import Launcher, Mesh


class Shop:
    """Generated async stubs for the three services of one mesh."""

    def __init__(self, address: callable):
        self.channels = [grpc.aio.insecure_channel(address(s)) for s in ("inventory", "order", "notification")]
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self.channels[0])
        self.orders = order_pb2_grpc.OrderServiceStub(self.channels[1])
        self.notifications = notification_pb2_grpc.NotificationServiceStub(self.channels[2])

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    async def new_product(self, stock: int, cents: int = 500) -> str:
        sku = f"sku-{uuid.uuid4().hex[:10]}"
        product = inventory_pb2.Product(
            sku=sku, name="Test product", price=money_pb2.Money(currency_code="USD", minor_units=cents), available=stock
        )
        await self.inventory.CreateProduct(inventory_pb2.CreateProductRequest(product=product), timeout=10)
        return sku

    async def product(self, sku: str) -> inventory_pb2.Product:
        return await self.inventory.GetProduct(inventory_pb2.GetProductRequest(sku=sku), timeout=10)

    async def order(self, user: str, sku: str, quantity: int = 1, request_id: str | None = None) -> order_pb2.Order:
        request = order_pb2.CreateOrderRequest(
            request_id=request_id or str(uuid.uuid4()),
            user_id=user,
            lines=[order_pb2.OrderLine(sku=sku, quantity=quantity)],
        )
        return await self.orders.CreateOrder(request, timeout=60)

    async def notifications_of(self, user: str) -> list[notification_pb2.Notification]:
        reply = await self.notifications.ListNotifications(
            notification_pb2.ListNotificationsRequest(user_id=user, page_size=1000), timeout=10
        )
        return list(reply.notifications)

    async def wait_for_notifications(self, user: str, count: int, timeout: float = 20) -> list[notification_pb2.Notification]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = await self.notifications_of(user)
            if len(found) >= count or loop.time() > deadline:
                await asyncio.sleep(1.0)  # anything extra (a duplicate) would arrive by now
                return await self.notifications_of(user)
            await asyncio.sleep(0.2)


@pytest.fixture
async def shop(launcher: Launcher):
    client = Shop(launcher.address)
    yield client
    await client.close()


async def test_200_buyers_for_50_units_exactly_50_orders_succeed(shop: Shop) -> None:
    sku = await shop.new_product(stock=50)
    user = f"crowd-{uuid.uuid4().hex[:8]}"
    negative_reads: list[int] = []
    done = asyncio.Event()

    async def watch_stock() -> int:
        reads = 0
        while not done.is_set():
            product = await shop.product(sku)
            reads += 1
            if product.available < 0 or product.reserved < 0:
                negative_reads.append(product.available)
            await asyncio.sleep(0.01)
        return reads

    async def buy() -> order_pb2.Order | grpc.aio.AioRpcError:
        try:
            return await shop.order(user, sku)
        except grpc.aio.AioRpcError as error:
            return error

    watcher = asyncio.create_task(watch_stock())
    results = await asyncio.gather(*(buy() for _ in range(200)))
    done.set()
    reads = await watcher

    orders = [r for r in results if isinstance(r, order_pb2.Order)]
    failures = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(orders) == 50
    assert Counter(f.code() for f in failures) == {grpc.StatusCode.FAILED_PRECONDITION: 150}
    assert all(sku in f.details() for f in failures)
    assert reads > 0 and negative_reads == []

    product = await shop.product(sku)
    assert (product.available, product.reserved, product.sold) == (0, 0, 50)
    notes = await shop.wait_for_notifications(user, 50)
    assert sorted(n.event_id for n in notes) == sorted(f"order.created:{o.order_id}" for o in orders)


async def test_20_concurrent_retries_of_one_request_make_one_order(shop: Shop) -> None:
    sku = await shop.new_product(stock=10)
    user = f"retry-{uuid.uuid4().hex[:8]}"
    request_id = str(uuid.uuid4())
    results = await asyncio.gather(*(shop.order(user, sku, 3, request_id) for _ in range(20)))
    assert len({o.order_id for o in results}) == 1
    assert all(o == results[0] for o in results)
    product = await shop.product(sku)
    assert (product.available, product.sold) == (7, 3)
    listed = await shop.orders.ListOrders(order_pb2.ListOrdersRequest(user_id=user), timeout=10)
    assert [o.order_id for o in listed.orders] == [results[0].order_id]
    assert len(await shop.wait_for_notifications(user, 1)) == 1


async def test_a_request_id_reused_for_another_order_is_rejected_without_effect(shop: Shop) -> None:
    sku = await shop.new_product(stock=10)
    request_id = str(uuid.uuid4())
    await shop.order("u1", sku, 1, request_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.order("u1", sku, 2, request_id)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert request_id in caught.value.details()
    assert (await shop.product(sku)).available == 9


async def test_cancel_returns_the_stock_and_tells_the_user(shop: Shop) -> None:
    sku = await shop.new_product(stock=5)
    user = f"cancel-{uuid.uuid4().hex[:8]}"
    order = await shop.order(user, sku, 2)
    cancelled = await shop.orders.CancelOrder(order_pb2.CancelOrderRequest(order_id=order.order_id, reason="changed my mind"), timeout=10)
    assert cancelled.status == order_pb2.Order.CANCELLED
    product = await shop.product(sku)
    assert (product.available, product.reserved, product.sold) == (5, 0, 0)
    kinds = sorted(n.kind for n in await shop.wait_for_notifications(user, 2))
    assert kinds == ["order.cancelled", "order.created"]


async def test_sigterm_under_load_loses_no_acknowledged_order(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path)
    try:
        mesh.start("inventory")
        mesh.start("notification")
        order_process = mesh.start("order", SHOPMESH_SHUTDOWN_DRAIN_SECONDS="0.5")
        shop = Shop(mesh.address)
        sku = await shop.new_product(stock=10_000)
        acknowledged: list[order_pb2.Order] = []
        unanswered: list[str] = []  # request ids whose outcome the client never learned
        refused: Counter[grpc.StatusCode] = Counter()

        async def keep_buying() -> None:
            while True:
                request_id = str(uuid.uuid4())
                try:
                    acknowledged.append(await shop.order("steady", sku, request_id=request_id))
                except grpc.aio.AioRpcError as error:
                    refused[error.code()] += 1
                    unanswered.append(request_id)
                    return

        buyers = [asyncio.create_task(keep_buying()) for _ in range(16)]
        await asyncio.sleep(1.5)
        order_process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*buyers), 30)
        assert await asyncio.to_thread(order_process.wait, 30) == 0
        assert acknowledged, "no order was placed before the shutdown"
        # Calls the stopping server never ran are refused, never failed half-way.
        assert set(refused) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, refused

        await shop.close()
        mesh.processes.pop("order")
        mesh.start("order")
        shop = Shop(mesh.address)
        for order in acknowledged:
            stored = await shop.orders.GetOrder(order_pb2.GetOrderRequest(order_id=order.order_id), timeout=10)
            assert stored == order
        # A client retries what it never heard back about; each retry yields one order.
        retried = [await shop.order("steady", sku, request_id=r) for r in unanswered]
        orders = {o.order_id for o in acknowledged} | {o.order_id for o in retried}
        assert len(orders) == len(acknowledged) + len(unanswered)
        product = await shop.product(sku)
        assert product.sold + product.reserved == len(orders)
        assert product.available + product.reserved + product.sold == 10_000
        await shop.close()
    finally:
        mesh.stop_all()
