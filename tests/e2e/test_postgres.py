"""The mesh on PostgreSQL, with two inventories and two order services side by side.

What comes next for the SQL: the same SQLAlchemy statements on a real PostgreSQL server, each
service in its own database, several instances of one service sharing it (static discovery
with `ip:port,ip:port`). A burst of concurrent orders for scarce stock sells exactly what there
is, spread over every instance, and each sale is notified exactly once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from generated.shop.order.v1 import order_pb2, order_pb2_grpc
from tests.support.replicas import Replicas
from tests.support.waiting import eventually_async, settled

STOCK, ORDERS, USERS = 60, 200, 8


@pytest.fixture(params=["direct", "pgbouncer"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Replicas]:
    """The replicas on the PostgreSQL server directly, or through PgBouncer in transaction mode."""
    server = request.getfixturevalue("postgres" if request.param == "direct" else "pgbouncer")
    mesh = Replicas(server, tmp_path)
    try:
        mesh.start_all()
        yield mesh
    finally:
        mesh.stop_all(graceful=True)


@pytest.fixture
def fast_replicas(postgres: object, tmp_path: Path) -> Iterator[Replicas]:
    mesh = Replicas(postgres, tmp_path, SHOPMESH_RESERVATION_TTL_SECONDS="3", SHOPMESH_CALL_TIMEOUT_SECONDS="1")
    try:
        mesh.start_all()
        yield mesh
    finally:
        mesh.stop_all(graceful=True)


RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


async def order_burst(replicas: Replicas, sku: str, users: str,
                      meanwhile: Callable[[], Awaitable[None]] | None = None) -> tuple[Counter, int]:
    """ORDERS concurrent orders of one unit, alternating over the order instances, each retried with its
    request_id on the other instance while the answer says to retry (as a client should): the final
    answer of each (its order's status, or the error code) and how many needed a retry."""
    channels = [grpc.aio.insecure_channel(replicas.address(f"order-{i + 1}")) for i in range(2)]
    stubs = [order_pb2_grpc.OrderServiceStub(c) for c in channels]
    retried = 0

    async def one(n: int) -> str:
        nonlocal retried
        request = order_pb2.CreateOrderRequest(request_id=str(uuid.uuid4()), user_id=f"{users}{n % USERS}",
                                               lines=[order_pb2.OrderLine(sku=sku, quantity=1)])
        give_up, attempt = time.monotonic() + 60, n
        while True:
            try:
                order = await stubs[attempt % 2].CreateOrder(request, timeout=10)
                return order_pb2.Order.Status.Name(order.status)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() > give_up:
                    return error.code().name
            retried += attempt == n
            attempt += 1
            await asyncio.sleep(0.2)

    try:
        outcomes = asyncio.gather(*(one(n) for n in range(ORDERS)))
        if meanwhile is not None:
            await meanwhile()
        return Counter(await outcomes), retried
    finally:
        for channel in channels:
            await channel.close()


def test_replicas_on_postgresql_sell_exactly_the_stock_and_notify_each_sale_once(replicas: Replicas) -> None:
    sku = f"pg-{uuid.uuid4().hex[:8]}"
    replicas.create_product(sku, STOCK)
    final, retried = asyncio.run(order_burst(replicas, sku, "pg-user-"))
    assert final == {"CONFIRMED": STOCK, "FAILED_PRECONDITION": ORDERS - STOCK}, (final, retried)
    product = replicas.product(sku)  # read on the other instance than the one that created it
    assert (product.available, product.reserved, product.sold) == (0, 0, STOCK), product
    # Both order instances took orders, and both inventories took reservations (called in turn).
    assert all(replicas.served(f"order-{i + 1}", "CreateOrder") > 0 for i in range(2))
    assert all(replicas.served(f"inventory-{i + 1}", "ReserveStock") > 0 for i in range(2))
    # (a fresh database: every event is this test's)
    events = settled(lambda: replicas.created_events(USERS, "pg-user-"), lambda found: len(found) >= STOCK,
                     30, f"{STOCK} order events notified")
    assert len(events) == STOCK and len(set(events)) == STOCK, Counter(events).most_common(3)
    print(f"{dict(final)} over two order and two inventory instances ({retried} retried)")


def test_kill_9_of_an_order_replica_mid_burst_loses_nothing(fast_replicas: Replicas) -> None:
    replicas, sku = fast_replicas, f"pg-crash-{uuid.uuid4().hex[:8]}"
    replicas.create_product(sku, STOCK)

    async def kill_mid_burst() -> None:
        async def answered_a_few() -> bool:
            return await asyncio.to_thread(replicas.served, "order-1", "CreateOrder") >= 10

        await eventually_async(answered_a_few, 30, "order-1 to answer 10 orders", every=0.05)
        await asyncio.to_thread(replicas.kill, "order-1")

    final, retried = asyncio.run(order_burst(replicas, sku, "crash-user-", kill_mid_burst))
    assert retried > 0, "the kill came after the burst: nothing was in flight"
    assert set(final) <= {"CONFIRMED", "CANCELLED", "FAILED_PRECONDITION"}, final  # every request got an answer
    confirmed = final["CONFIRMED"]
    assert 0 < confirmed <= STOCK, final
    # Held stock of orders that died half-way is released by expiry or settled by recovery.
    product = settled(lambda: replicas.product(sku), lambda found: not found.reserved, 30, "no stock left held")
    assert (product.reserved, product.sold, product.available) == (0, confirmed, STOCK - confirmed), (product, final)
    events = settled(lambda: replicas.created_events(USERS, "crash-user-"), lambda found: len(found) >= confirmed,
                     30, f"{confirmed} order events notified")
    assert len(events) == len(set(events)) == confirmed, (len(events), len(set(events)), final)
    print(f"{dict(final)} after kill -9 of order-1 mid-burst ({retried} requests retried on order-2); "
          f"stock {product.available}+{product.sold} of {STOCK}")
