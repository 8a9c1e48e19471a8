"""Each service's revisions build exactly its tables, on SQLite and PostgreSQL, however it starts."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, insert, select, text

from mesh.data import migrate
from tests.conftest import ROOT

SERVICES = ("inventory", "order", "notification")


@pytest.fixture
def url(tmp_path: Path, database: object | None):
    """A fresh, empty database: a SQLite file, or one on the PostgreSQL server."""
    def fresh(name: str = "service") -> str:
        if database is None:
            return f"sqlite+aiosqlite:///{tmp_path / name}.db"
        return database.create_database()  # type: ignore[attr-defined]
    return fresh


def service(name: str) -> tuple[Path, MetaData]:
    return ROOT / name / "migrations", importlib.import_module(f"{name}.store").metadata


def state(conn: Connection, metadata: MetaData) -> tuple[str | None, list]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return context.get_current_revision(), compare_metadata(context, metadata)


def head(versions: Path, metadata: MetaData) -> str:
    return ScriptDirectory.from_config(migrate.config(versions, metadata)).get_current_head()  # type: ignore[return-value]


@pytest.mark.parametrize("name", SERVICES)
async def test_the_revisions_build_exactly_the_tables_the_store_declares(url, connect, name: str) -> None:
    versions, metadata = service(name)
    db = connect(url())
    try:
        await db.migrate(versions, metadata)
        revision, differences = await db.run_sync(state, metadata)
        # A table changed in store.py without a revision for it fails here.
        assert (revision, differences) == (head(versions, metadata), [])
        await db.migrate(versions, metadata)  # a second start finds nothing to do
        assert (await db.run_sync(state, metadata))[0] == revision
    finally:
        await db.close()


async def test_instances_starting_at_once_migrate_once_and_all_come_up(url, connect) -> None:
    versions, metadata = service("order")
    where = url("shared")
    instances = [connect(where) for _ in range(4)]
    try:
        await asyncio.gather(*(db.migrate(versions, metadata) for db in instances))
        revision, differences = await instances[0].run_sync(state, metadata)
        assert (revision, differences) == (head(versions, metadata), [])
        rows = await instances[1].run_sync(lambda c: c.execute(text("SELECT version_num FROM alembic_version")).all())
        assert len(rows) == 1
    finally:
        for db in instances:
            await db.close()


async def test_one_process_migrating_several_databases_at_once_keeps_them_apart(url, connect) -> None:
    names = ("inventory", "order", "notification")
    dbs = [connect(url(name)) for name in names]
    try:
        await asyncio.gather(*(db.migrate(*service(name)) for db, name in zip(dbs, names, strict=True)))
        for db, name in zip(dbs, names, strict=True):
            versions, metadata = service(name)
            assert await db.run_sync(state, metadata) == (head(versions, metadata), [])
    finally:
        for db in dbs:
            await db.close()


async def test_a_database_made_before_migrations_keeps_its_rows_and_joins_the_history(url, connect) -> None:
    versions, metadata = service("inventory")
    from inventory.store import products

    db = connect(url("legacy"))
    try:
        def old_release(conn: Connection) -> None:  # what the services did before: create_all, no history
            metadata.create_all(conn)
            conn.execute(text("ALTER TABLE reservations DROP COLUMN failure"))  # an older release lacked it
            conn.execute(insert(products).values(sku="kept", name="Kept", currency_code="USD", price_minor=1,
                                                 available=3, reserved=0, sold=0, create_time=text("CURRENT_TIMESTAMP"),
                                                 update_time=text("CURRENT_TIMESTAMP")))

        await db.run_sync(old_release)
        await db.migrate(versions, metadata)
        revision, differences = await db.run_sync(state, metadata)
        assert (revision, differences) == (head(versions, metadata), [])
        kept = await db.run_sync(lambda c: c.execute(select(products.c.available).where(products.c.sku == "kept")).all())
        assert kept == [(3,)]
    finally:
        await db.close()


def test_the_check_command_passes_for_every_service() -> None:
    for name in SERVICES:
        result = subprocess.run([sys.executable, "-m", "mesh.data.migrate", name, "check"], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "No new upgrade operations detected" in result.stdout + result.stderr

