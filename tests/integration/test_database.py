"""SQLite under concurrent writers, in one process and across two: never "database is locked"."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update

from mesh.db import Database

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
    async with first.read() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one() == "wal"
    await first.close()
    await second.close()
