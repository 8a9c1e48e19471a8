"""Order's store on each database: storing an order, its lines, its event and the end of its
attempt is all or nothing (one statement on PostgreSQL, a transaction of four on SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from mesh.kernel.money import Money
from order import domain
from order.domain import AttemptTaken, Order, OrderLine, OrderStatus, RequestIdTaken
from order.store import OrderStore, metadata, order_attempts, order_lines, orders, outbox

MIGRATIONS = Path(domain.__file__).resolve().parent / "migrations"


@pytest.fixture
async def store(tmp_path: Path, database: object | None, connect) -> AsyncIterator[OrderStore]:  # type: ignore[no-untyped-def]
    url = f"sqlite+aiosqlite:///{tmp_path}/order.db" if database is None else database.create_database()  # type: ignore[attr-defined]
    db = connect(url)
    await db.migrate(MIGRATIONS, metadata)
    yield OrderStore(db)
    await db.close()


def an_order(request_id: str, order_id: str) -> tuple[domain.OrderRequest, Order]:
    request = domain.check_request(request_id, "alice", [("mug", 2), ("pot", 1)])
    lines = (OrderLine("mug", 2, Money("USD", 1299)), OrderLine("pot", 1, Money("USD", 3450)))
    return request, Order(order_id=order_id, user_id="alice", lines=lines, total=Money("USD", 6048),
                          status=OrderStatus.CONFIRMED, request_id=request_id, reservation_id=request.reservation_id)


async def begin(store: OrderStore, request: domain.OrderRequest) -> None:
    async with store.write_one() as tx:
        await tx.begin_attempt(request)


async def keep(store: OrderStore, order: Order, fingerprint: str) -> Order:
    async with store.write_one() as tx:
        return await tx.store(order, fingerprint, domain.created_event(order))


async def counts(store: OrderStore) -> dict[str, int]:
    async with store.read() as tx:
        return {table.name: (await tx.conn.execute(select(func.count()).select_from(table))).scalar_one()
                for table in (orders, order_lines, outbox, order_attempts)}


async def test_an_order_is_stored_with_its_lines_and_event_and_its_attempt_ends(store: OrderStore) -> None:
    request, order = an_order("r1", "00000000-0000-4000-8000-000000000001")
    await begin(store, request)
    async with store.write_one() as tx:
        stored = await tx.store(order, request.fingerprint, domain.created_event(order), committed=True)
    assert stored.sequence and stored.create_time is not None
    async with store.read() as tx:
        again = await tx.get(order.order_id)
        assert (await tx.by_request("r1"))[1] == request.fingerprint  # type: ignore[index]
        assert [e.event_id for e in await tx.pending_events(10)] == [f"order.created:{order.order_id}"]
        assert await tx.uncommitted(stored.create_time + timedelta(seconds=1), 10) == []
    assert again is not None and again.lines == order.lines and again.total == order.total
    assert await counts(store) == {"orders": 1, "order_lines": 2, "outbox": 1, "order_attempts": 0}


async def test_an_abandoned_or_missing_attempt_stores_nothing(store: OrderStore) -> None:
    request, order = an_order("r2", "00000000-0000-4000-8000-000000000002")
    await begin(store, request)
    async with store.write_one() as tx:
        assert await tx.abandon_attempt("r2")  # recovery began returning its stock
    with pytest.raises(AttemptTaken):
        await keep(store, order, request.fingerprint)
    assert await counts(store) == {"orders": 0, "order_lines": 0, "outbox": 0, "order_attempts": 1}
    _, other = an_order("r3", "00000000-0000-4000-8000-000000000003")
    with pytest.raises(AttemptTaken):  # never begun (or recovery finished it)
        await keep(store, other, request.fingerprint)
    assert await counts(store) == {"orders": 0, "order_lines": 0, "outbox": 0, "order_attempts": 1}


async def test_a_request_id_already_stored_is_refused_and_its_new_attempt_kept(store: OrderStore) -> None:
    request, order = an_order("r4", "00000000-0000-4000-8000-000000000004")
    await begin(store, request)
    await keep(store, order, request.fingerprint)
    await begin(store, request)  # a repeat's own attempt
    _, twin = an_order("r4", "00000000-0000-4000-8000-000000000005")
    with pytest.raises(RequestIdTaken):
        await keep(store, twin, request.fingerprint)
    assert await counts(store) == {"orders": 1, "order_lines": 2, "outbox": 1, "order_attempts": 1}
