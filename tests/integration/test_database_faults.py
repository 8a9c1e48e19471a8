"""PostgreSQL's faults as a store sees them: a backend killed under a pooled connection, a server
that does not answer. The use case gets `Unavailable` (UNAVAILABLE to its caller, who retries),
never the driver's exception, and the pool heals without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

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


@pytest.mark.parametrize("path", ["pgbouncer", "ordinary role"])
async def test_a_statement_behind_an_outside_lock_is_ended_by_the_server_and_its_connection_comes_back(
        request, postgres, path: str) -> None:  # type: ignore[no-untyped-def]
    """The backstop under every deadline: a statement once sent runs to its end (`Uncut`), so one
    waiting on a lock an outside session holds is ended by the server's lock_timeout, answered
    UNAVAILABLE while the lock is still held, and the pool's only connection is free again.
    Through PgBouncer in transaction mode the timeouts cannot be startup parameters: the service's
    migration makes them its role's defaults; and a production role is no superuser, so that runs
    as an ordinary role owning its database too."""
    import time

    import inventory
    from inventory.store import metadata as inventory_tables
    from mesh.data.db import ServerTimeouts
    from tests.support.postgres import USER

    if path == "pgbouncer":
        url = request.getfixturevalue("pgbouncer").create_database()
    else:
        url = postgres.create_database()
        role = f"ordinary_{url.rsplit('/', 1)[1]}"
        postgres.query(f"CREATE ROLE {role} LOGIN NOSUPERUSER")
        postgres.query(f"ALTER DATABASE {url.rsplit('/', 1)[1]} OWNER TO {role}")
        url = url.replace(f"//{USER}@", f"//{role}@")
    database = url.rsplit("/", 1)[1]
    db = Database.connect(url, pool_size=1, pooler="transaction", timeouts=ServerTimeouts(lock=0.5, statement=20))
    await db.migrate(Path(inventory.__file__).parent / "migrations", inventory_tables)
    await db.create_schema(metadata)
    store = Counters(db)
    async with store.write() as tx:
        await tx.conn.execute(insert(counters).values(name="c", value=7))
    holder = postgres.hold_row(database, "UPDATE counters SET value = value WHERE name = 'c'", 15)
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="did not answer in time"):
            async with store.write() as tx:  # no deadline of its own: only the server ends the wait
                await tx.conn.execute(counters.update().values(value=8))
        took = time.monotonic() - started
        assert took < 3, f"a statement waited {took:.1f}s on a lock with lock_timeout 0.5 s"
        assert holder.poll() is None and postgres.lock_waiters(database) == 0  # lock held; nobody waits
        async with store.read() as tx:  # the pool's one connection serves again, the lock still held
            assert await tx.value() == 7
    finally:
        holder.kill()
        holder.wait()
        await db.close()
    # What the migration left: the two defaults, for this role in this database only.
    async with Database.connect(url, pooler="transaction", timeouts=ServerTimeouts(lock=0.5, statement=20)).engine.connect() as conn:
        settings = (await conn.exec_driver_sql(
            "SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = current_database()")).scalar_one()
    assert sorted(settings) == ["lock_timeout=500ms", "statement_timeout=20000ms"], settings
