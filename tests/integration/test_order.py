"""Order with real inventory and notification servers: pricing, errors, outages, cancel."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from generated.shop.order.v1 import order_pb2 as pb
from generated.shop.order.v1 import order_pb2_grpc
from tests.conftest import free_port
from tests.support.mesh import Start, channel
from tests.support.shop import open_shop, order_request
from tests.support.waiting import eventually_async


async def test_an_order_is_priced_by_inventory_not_the_client(start: Start) -> None:
    shop = await open_shop(start)
    request = order_request(mug=2, pot=1)
    request.lines[0].unit_price.CopyFrom(money_pb2.Money(currency_code="USD", minor_units=1))  # ignored
    order = await shop.orders.CreateOrder(request)
    assert [(l.sku, l.unit_price.minor_units, l.line_total.minor_units) for l in order.lines] == [("mug", 1299, 2598), ("pot", 3450, 3450)]
    assert (order.total.currency_code, order.total.minor_units) == ("USD", 6048)
    assert order.status == pb.Order.CONFIRMED
    assert await shop.orders.GetOrder(pb.GetOrderRequest(order_id=order.order_id)) == order
    mug = await shop.product("mug")
    assert (mug.available, mug.reserved, mug.sold) == (8, 0, 2)
    assert await eventually_async(lambda: shop.notes("alice")) == [f"order.created:{order.order_id}"]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.CreateOrderRequest(user_id="u", lines=[pb.OrderLine(sku="mug", quantity=1)]), "request_id"),
        (pb.CreateOrderRequest(request_id="r", lines=[pb.OrderLine(sku="mug", quantity=1)]), "user_id"),
        (pb.CreateOrderRequest(request_id="r", user_id="u"), "lines"),
        (pb.CreateOrderRequest(request_id="r", user_id="u", lines=[pb.OrderLine(quantity=1)]), "lines[0].sku"),
        (pb.CreateOrderRequest(request_id="r", user_id="u", lines=[pb.OrderLine(sku="mug", quantity=-3)]), "lines[0].quantity"),
        (pb.CreateOrderRequest(request_id="r", user_id="u", lines=[pb.OrderLine(sku="mug", quantity=1), pb.OrderLine(sku="mug", quantity=1)]), "lines[1].sku"),
        (pb.CreateOrderRequest(request_id="r" * 129, user_id="u", lines=[pb.OrderLine(sku="mug", quantity=1)]), "request_id"),
    ],
)
async def test_a_bad_order_names_its_field(start: Start, request_, field: str) -> None:
    shop = await open_shop(start)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field + ":")


async def test_every_broken_rule_of_the_contract_is_named_at_once(start: Start) -> None:
    shop = await open_shop(start)
    request_ = pb.CreateOrderRequest(request_id="", user_id="u" * 129, lines=[
        pb.OrderLine(sku="mug", quantity=1), pb.OrderLine(sku="has space", quantity=0)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = status_pb2.Status.FromString(dict(caught.value.trailing_metadata())["grpc-status-details-bin"])
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    violations = [(v.field, v.description) for v in bad_request.field_violations]
    assert violations == [
        ("request_id", "value is required"),
        ("user_id", "must be at most 128 characters"),
        ("lines[1].sku", "does not match regex pattern `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`"),
        ("lines[1].quantity", "must be greater than or equal to 1 and less than or equal to 1000000"),
    ]
    assert caught.value.details() == "; ".join(f"{field}: {problem}" for field, problem in violations)
    mug = await shop.product("mug")  # refused before any work: nothing reserved
    assert (mug.available, mug.reserved) == (10, 0)


async def test_not_enough_stock_names_the_sku_and_takes_nothing(start: Start) -> None:
    shop = await open_shop(start)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(order_request(mug=1, pot=4))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'pot'" in caught.value.details()
    assert (await shop.product("mug")).available == 10


async def test_an_unknown_sku_or_order_is_not_found(start: Start) -> None:
    shop = await open_shop(start)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(order_request(ghost=1))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "'ghost'" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.GetOrder(pb.GetOrderRequest(order_id="no-such-order"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_mixed_currencies_are_refused_and_the_stock_released(start: Start) -> None:
    shop = await open_shop(start)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.CreateOrder(order_request(mug=1, tee=1))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "EUR" in caught.value.details() and "USD" in caught.value.details()
    assert [(p.available, p.reserved) for p in [await shop.product("mug"), await shop.product("tee")]] == [(10, 0), (5, 0)]


async def test_an_order_stands_while_notification_is_down_and_is_announced_when_it_returns(start: Start) -> None:
    port = free_port()
    inv = await start("inventory")
    orders = await start(
        "order",
        SHOPMESH_INVENTORY_ADDR=f"127.0.0.1:{inv.port}",
        SHOPMESH_NOTIFICATION_ADDR=f"127.0.0.1:{port}",
        SHOPMESH_OUTBOX_INTERVAL_SECONDS="0.2",
        SHOPMESH_CALL_TIMEOUT_SECONDS="1",
    )
    inventory = inventory_pb2_grpc.InventoryServiceStub(channel(inv))
    product = inventory_pb2.Product(sku="mug", name="Mug", price=money_pb2.Money(currency_code="USD", minor_units=100), available=10)
    await inventory.CreateProduct(inventory_pb2.CreateProductRequest(product=product))
    stub = order_pb2_grpc.OrderServiceStub(channel(orders))
    placed = [await stub.CreateOrder(order_request(f"r{i}")) for i in range(3)]
    assert all(o.status == pb.Order.CONFIRMED for o in placed)

    note = await start("notification", SHOPMESH_NOTIFICATION_PORT=str(port))
    notifications = notification_pb2_grpc.NotificationServiceStub(channel(note))

    async def delivered() -> list[str]:
        reply = await notifications.ListNotifications(notification_pb2.ListNotificationsRequest(user_id="alice"))
        return sorted(n.event_id for n in reply.notifications) if len(reply.notifications) == 3 else []

    assert await eventually_async(delivered, 15) == sorted(f"order.created:{o.order_id}" for o in placed)


async def test_inventory_down_is_unavailable_naming_it_not_internal(start: Start) -> None:
    note = await start("notification")
    orders = await start(
        "order",
        SHOPMESH_INVENTORY_ADDR=f"127.0.0.1:{free_port()}",
        SHOPMESH_NOTIFICATION_ADDR=f"127.0.0.1:{note.port}",
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await order_pb2_grpc.OrderServiceStub(channel(orders)).CreateOrder(order_request())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "inventory" in caught.value.details()


async def test_cancel_returns_stock_once_and_announces_it(start: Start) -> None:
    shop = await open_shop(start)
    order = await shop.orders.CreateOrder(order_request(mug=3))
    for _ in range(2):
        cancelled = await shop.orders.CancelOrder(pb.CancelOrderRequest(order_id=order.order_id, reason="too slow"))
        assert cancelled.status == pb.Order.CANCELLED
    mug = await shop.product("mug")
    assert (mug.available, mug.reserved, mug.sold) == (10, 0, 0)
    expected = sorted([f"order.created:{order.order_id}", f"order.cancelled:{order.order_id}"])
    assert await eventually_async(lambda: _sorted_if(shop.notes("alice"), 2)) == expected


async def _sorted_if(notes, count: int) -> list[str]:
    found = await notes
    return sorted(found) if len(found) >= count else []


async def test_a_users_orders_page_newest_first(start: Start) -> None:
    shop = await open_shop(start)
    ids = [(await shop.orders.CreateOrder(order_request(f"r{i}", mug=1))).order_id for i in range(5)]
    await shop.orders.CreateOrder(order_request("bob-1", user="bob", mug=1))
    seen, token = [], ""
    while True:
        page = await shop.orders.ListOrders(pb.ListOrdersRequest(user_id="alice", page_size=2, page_token=token))
        seen += [o.order_id for o in page.orders]
        if not (token := page.next_page_token):
            break
    assert seen == ids[::-1]
