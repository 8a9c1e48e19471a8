"""SQLite under concurrent writers, in one process and across two: never "database is locked"."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update

from mesh.data.db import Database

metadata = MetaData()
counters = Table("counters", metadata, Column("name", String(20), primary_key=True), Column("value", Integer))


async def test_concurrent_read_modify_writes_from_two_engines_lose_no_update(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    first, second = Database.connect(url), Database.connect(url)  # as two instances would
    await first.create_schema(metadata)
    async with first.write() as conn:
        await conn.execute(insert(counters).values(name="c", value=0))

    async def increment(db: Database) -> None:
        # Read, then write in one transaction: the pattern that upgrades a
        # read lock and fails with "database is locked" under plain BEGIN.
        async with db.write() as conn:
            value = (await conn.execute(select(counters.c.value))).scalar_one()
            await conn.execute(update(counters).values(value=value + 1))

    await asyncio.gather(*(increment(db) for db in [first, second] * 100))
    async with second.read() as conn:
        assert (await conn.execute(select(counters.c.value))).scalar_one() == 200
    async with first.write() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one() == "wal"
    await first.close()
    await second.close()


async def test_a_read_sees_a_consistent_snapshot_while_a_write_is_open(tmp_path: Path) -> None:
    db = Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'snap.db'}")
    await db.create_schema(metadata)
    async with db.write() as conn:
        await conn.execute(insert(counters).values(name="c", value=1))
    async with db.write() as conn:
        await conn.execute(update(counters).values(value=2))
        async with db.read() as reader:  # WAL: the reader neither waits nor sees uncommitted data
            assert (await reader.execute(select(counters.c.value))).scalar_one() == 1
    async with db.read() as reader:
        assert (await reader.execute(select(counters.c.value))).scalar_one() == 2
    await db.close()


async def test_an_empty_read_leaves_no_transaction_open(tmp_path: Path) -> None:
    db = Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    await db.create_schema(metadata)
    async with db.read():
        pass
    async with db.read() as reader:
        assert (await reader.execute(select(counters.c.value))).all() == []
    await db.close()


INCREMENTER = """
import asyncio, sys
from sqlalchemy import select, update
from mesh.data.db import Database
from tests.integration.test_database import counters

async def main(url, times):
    db = Database.connect(url)
    async def increment():
        async with db.write() as conn:
            value = (await conn.execute(select(counters.c.value))).scalar_one()
            await asyncio.sleep(0)  # let other writers of this process try meanwhile
            await conn.execute(update(counters).values(value=value + 1))
    await asyncio.gather(*(increment() for _ in range(times)))
    await db.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_three_processes_writing_one_file_lose_no_update_and_never_see_locked(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    url = f"sqlite+aiosqlite:///{tmp_path / 'two.db'}"
    db = Database.connect(url)
    await db.create_schema(metadata)
    async with db.write() as conn:
        await conn.execute(insert(counters).values(name="c", value=0))
    await db.close()
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", INCREMENTER, url, "300", cwd=ROOT, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    results = [await asyncio.wait_for(w.communicate(), 120) for w in workers]
    for worker, (_, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err.decode()[-2000:]
    db = Database.connect(url)
    async with db.read() as conn:
        assert (await conn.execute(select(counters.c.value))).scalar_one() == 900
    await db.close()
