"""PostgreSQL's faults as a store sees them: a backend killed under a pooled connection, a server
that does not answer. The use case gets `Unavailable` (UNAVAILABLE to its caller, who retries),
never the driver's exception, and the pool heals without a restart."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text

from mesh.data.db import Database, Store
from mesh.kernel.errors import Unavailable

metadata = MetaData()
counters = Table("counters", metadata, Column("name", String(20), primary_key=True), Column("value", Integer))


class Tx:
    def __init__(self, conn):  # type: ignore[no-untyped-def]
        self.conn = conn

    async def value(self) -> int:
        return (await self.conn.execute(select(counters.c.value).where(counters.c.name == "c"))).scalar_one()


class Counters(Store[Tx]):
    tx = Tx


async def _kill_backends(admin: Database, database: str) -> int:
    async with admin.write() as conn:
        return len((await conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"),
            {"name": database})).all())


@pytest.mark.allow_log("the database cannot be reached")
async def test_killed_backends_cost_at_most_one_unavailable_then_the_pool_reconnects(postgres) -> None:  # type: ignore[no-untyped-def]
    url = postgres.create_database()
    db, admin = Database.connect(url), Database.connect(postgres.url("postgres"))
    await db.create_schema(metadata)
    async with db.write() as conn:
        await conn.execute(insert(counters).values(name="c", value=7))
    store = Counters(db)

    async def read() -> int:
        async with store.read() as tx:
            return await tx.value()

    assert await asyncio.gather(*(read() for _ in range(5))) == [7] * 5  # the pool holds several connections
    assert await _kill_backends(admin, url.rsplit("/", 1)[1]) >= 1
    outcomes = []
    for _ in range(10):
        try:
            outcomes.append(await read())
        except Unavailable as error:
            outcomes.append(str(error))
    # The first call on a dead connection learns it and invalidates the whole pool; the rest reconnect.
    assert outcomes.count(7) >= 9 and outcomes[-1] == 7, outcomes
    assert set(outcomes) <= {7, "the database cannot be reached; retry shortly"}, outcomes
    async with store.write() as tx:  # writes too
        await tx.conn.execute(counters.update().values(value=8))
    assert await read() == 8
    await db.close()
    await admin.close()


@pytest.mark.allow_log("the database cannot be reached")
async def test_a_server_that_refuses_connections_is_unavailable_at_once(postgres) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import free_port

    db = Database.connect(f"postgresql+asyncpg://shopmesh@127.0.0.1:{free_port()}/nothing")
    store = Counters(db)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Unavailable, match="the database cannot be reached"):
        async with store.read() as tx:
            await tx.value()
    with pytest.raises(Unavailable):
        async with store.write() as tx:
            await tx.value()
    assert loop.time() - started < 5
    await db.close()


async def test_write_one_is_one_statement_without_a_transaction_and_refuses_a_second(postgres) -> None:  # type: ignore[no-untyped-def]
    db = Database.connect(postgres.create_database())
    await db.create_schema(metadata)
    store = Counters(db)
    async with store.write_one() as tx:
        await tx.conn.execute(insert(counters).values(name="c", value=1))
        # autocommit: the row is there for everyone before the block ends
        async with store.read() as other:
            assert await other.value() == 1
    with pytest.raises(RuntimeError, match="write_one\\(\\) runs one statement"):
        async with store.write_one() as tx:
            await tx.conn.execute(counters.update().values(value=2))
            await tx.conn.execute(counters.update().values(value=3))
    async with store.read() as tx:
        assert await tx.value() == 2  # the first ran (and is kept: it was its own transaction)
    await db.close()


@pytest.mark.allow_log("the database cannot be reached")
async def test_a_listener_whose_connection_is_killed_listens_again(postgres) -> None:  # type: ignore[no-untyped-def]
    from tests.support.waiting import eventually_async

    url = postgres.create_database()
    db, admin = Database.connect(url), Database.connect(postgres.url("postgres"))
    heard: list[str] = []
    async with db.listening("shopmesh_test", heard.append) as listening:
        assert listening
        assert await _kill_backends(admin, url.rsplit("/", 1)[1]) >= 1  # the LISTEN connection among them
        other = Database.connect(url)  # another instance on the same database, NOTIFYing

        async def notify_heard() -> bool:
            try:
                async with other.write() as conn:
                    await conn.execute(text("SELECT pg_notify('shopmesh_test', 'again')"))
            except Exception:  # noqa: BLE001 - not up again yet
                return False
            await asyncio.sleep(0.1)
            return "again" in heard

        await eventually_async(notify_heard, 10, "a NOTIFY heard on a new LISTEN connection", every=0.2)
        await other.close()
    await db.close()
    await admin.close()
