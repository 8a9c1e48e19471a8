"""A caller who hangs up mid-call costs only its own call.

When a client cancels (or dies, or its deadline passes) while its call is inside a database
statement, the statement is not torn down under the connection: cutting an asyncpg query costs a
cancel request to the server, the pooled connection (SQLAlchemy closes a connection whose
statement was cut), a new connection for whoever comes next, and, with asyncpg's TLS upgrade in
the cancel path, an unread future that asyncio logs as an error (CI run 42: "Future exception
was never retrieved ... unexpected connection_lost() call" after an order instance was killed
mid-burst). The call's work runs to its end instead, bounded by the database's statement and lock
timeouts, then the cancellation goes on (`mesh.server.guard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import grpc
import pytest

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2 as pb
from generated.shop.inventory.v1 import inventory_pb2_grpc
from tests.support.mesh import Start, channel

HANG_UPS = 400
CUT = "canceling statement due to user request"  # PostgreSQL's log line for a statement cancelled


def _backends(server: object, database: str) -> set[str]:
    rows = server.query(  # type: ignore[attr-defined]
        f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}' AND backend_type = 'client backend'")
    return set(rows.split())


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_callers_hanging_up_mid_statement_cost_no_connection_and_a_polite_caller_nothing(
        start: Start, database: object) -> None:
    url = database.create_database()  # type: ignore[attr-defined]
    served = await start("inventory", SHOPMESH_INVENTORY_DATABASE_URL=url, SHOPMESH_DATABASE_POOL_SIZE="2")
    name = url.rsplit("/", 1)[1]
    async with channel(served) as ch:
        stub = inventory_pb2_grpc.InventoryServiceStub(ch)
        price = money_pb2.Money(currency_code="USD", minor_units=100)
        for sku in ("mug", "cup"):
            await stub.CreateProduct(pb.CreateProductRequest(product=pb.Product(
                sku=sku, name=sku, price=price, available=1_000_000)))

        async def polite(n: int, sku: str = "mug") -> list[grpc.StatusCode]:
            codes = []
            for i in range(n):
                try:
                    await stub.ReserveStock(pb.ReserveStockRequest(
                        reservation_id=f"polite-{n}-{i}-{random.random()}", lines=[pb.ReservationLine(sku=sku, quantity=1)]),
                        timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
            return codes

        await asyncio.gather(*(polite(5) for _ in range(12)))  # every pooled connection opened
        before = _backends(database, name)
        cut = database.log().count(CUT)  # type: ignore[attr-defined]
        # An outside session holds mug's row for a moment: the rude callers' sales wait on it, and
        # they hang up while they wait (some of them before, some after, for good measure).
        holder = database.hold_row(name, "UPDATE products SET name = name WHERE sku = 'mug'", seconds=1.5)  # type: ignore[attr-defined]

        async def hang_up(i: int) -> None:
            request = pb.ReserveStockRequest(reservation_id=f"rude-{i}", lines=[pb.ReservationLine(sku="mug", quantity=1)])
            call = stub.ReserveStock(request) if i % 4 else stub.GetProduct(pb.GetProductRequest(sku="mug"))
            await asyncio.sleep(random.uniform(0, 0.3))
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call

        rude = asyncio.gather(*(hang_up(i) for i in range(HANG_UPS)))
        waiting = 0
        for _ in range(20):  # the sales reach the held row within the hold (1.5 s), even on a busy machine
            waiting = await asyncio.to_thread(database.lock_waiters, name)  # type: ignore[attr-defined]
            if waiting:
                break
            await asyncio.sleep(0.02)
        codes = [code for batch in await asyncio.gather(*(polite(10, "cup") for _ in range(4))) for code in batch]
        await rude
        holder.wait(timeout=30)
        assert waiting >= 1, "no sale waited on the held row: nobody hung up mid-statement"
        assert codes == [grpc.StatusCode.OK] * 40
        await asyncio.gather(*(polite(5) for _ in range(12)))
        after = _backends(database, name)
    # The same connections serve on: none was closed under a cut statement and reopened.
    assert after == before, f"connections closed and reopened: {sorted(before - after)} -> {sorted(after - before)}"
    assert database.log().count(CUT) == cut, "statements were cancelled under their callers"  # type: ignore[attr-defined]
