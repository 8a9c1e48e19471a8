"""Schema migrations (Alembic): every service's database is brought to its newest revision at start.

    python -m mesh.data.migrate SERVICE revision -m "add gift wrap"   # write a new revision from store.py's tables
    python -m mesh.data.migrate SERVICE check                        # fail if store.py and the revisions differ
    python -m mesh.data.migrate SERVICE upgrade [--database-url URL] # what each service does when it starts

Revisions live in `<service>/migrations/`; `mesh/data/migrations/` holds the environment
they share. Several instances may start at once: on SQLite the write transaction
(`BEGIN IMMEDIATE`) and on PostgreSQL a transaction-scoped advisory lock let one
migrate while the others wait, then find nothing left to do. A database made
before migrations existed (tables, no `alembic_version`) has missing nullable
columns added, as the services did then, and is stamped with the first revision.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
import tempfile
import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect, text
from sqlalchemy.exc import OperationalError

from mesh.settings import DATABASE_SERVICES

logger = logging.getLogger(__name__)


def config(versions: Path, metadata: MetaData, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent / "migrations"))
    cfg.set_main_option("version_locations", str(versions))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.attributes["metadata"] = metadata
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection: Connection, versions: Path, metadata: MetaData) -> None:
    """Brings the database behind `connection` (in a write transaction) to the newest revision."""
    if connection.dialect.name == "postgresql":  # one migrator at a time; released at commit
        # A migration may take long and wait long for another instance's: not a call's timeouts.
        connection.execute(text("SET LOCAL lock_timeout = 0"))
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(str(versions.name).encode())
                                                                         ^ zlib.crc32(b"shopmesh-migrate")})
    cfg = config(versions, metadata, connection)
    tables = set(inspect(connection).get_table_names())
    if tables and "alembic_version" not in tables:  # made before migrations: catch up, then join history
        from mesh.data.db import create_missing

        create_missing(connection, metadata)
        first = ScriptDirectory.from_config(cfg).get_base()
        command.stamp(cfg, first)
    before = current(connection)
    command.upgrade(cfg, "head")
    after = current(connection)
    if after != before:
        logger.info("database schema %s: %s", "created" if before is None else f"migrated from {before}",
                    f"now at revision {after}")


def role_defaults(connection: Connection, parameters: dict[str, str]) -> bool:
    """Makes `parameters` the connecting role's defaults in this database, for the sessions a
    pooler opens to take them (`ServerTimeouts`); only what differs is written (a role may set its
    own). Whether anything changed: sessions opened before keep what they had."""
    database = connection.execute(text("SELECT current_database()")).scalar_one()
    changed = False
    for name, value in parameters.items():
        if _setting(connection, name) != value:
            connection.execute(text(f"ALTER ROLE CURRENT_USER IN DATABASE "
                                    f"{connection.dialect.identifier_preparer.quote(database)} SET {name} = '{value}'"))
            logger.info("database role: %s is %s in sessions opened from now on (a pooler's older server "
                        "connections take it as it renews them: PgBouncer's server_lifetime)", name, value)
            changed = True
    return changed


def _setting(connection: Connection, name: str) -> str | None:
    """The role's stored default for `name` in this database, as written (None when unset)."""
    row = connection.execute(text(
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = current_database() AND s.setrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
    )).scalar_one_or_none()
    return next((entry.split("=", 1)[1] for entry in row or () if entry.startswith(f"{name}=")), None)


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _service(name: str) -> tuple[Path, MetaData]:
    store = importlib.import_module(f"{name}.store")
    return Path(importlib.import_module(name).__file__ or "").resolve().parent / "migrations", store.metadata


async def _run(service: str, action: str, url: str, message: str) -> int:
    from mesh.data.db import Database
    from mesh.settings import Settings

    versions, metadata = _service(service)
    with tempfile.TemporaryDirectory() as scratch:
        if action in ("revision", "check"):  # compared against a scratch database at the newest revision
            url = f"sqlite+aiosqlite:///{Path(scratch) / 'scratch.db'}"
        settings = Settings.from_env(service)
        db = Database.of(settings, url)
        try:
            await db.migrate(versions, metadata)

            def act(sync: Connection) -> None:
                cfg = config(versions, metadata, sync)
                if action == "revision":  # numbered in order: 0001, 0002, ...
                    number = len(list(ScriptDirectory.from_config(cfg).walk_revisions())) + 1
                    command.revision(cfg, message=message, autogenerate=True, rev_id=f"{number:04d}")
                elif action == "check":
                    command.check(cfg)
                else:
                    print(f"{service}: at revision {current(sync)}")

            await db.run_sync(act)
        finally:
            await db.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.data.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=DATABASE_SERVICES)
    parser.add_argument("action", choices=("upgrade", "revision", "check"))
    parser.add_argument("-m", "--message", default="", help="what a new revision does (revision)")
    parser.add_argument("--database-url", default="", help="default: the service's SHOPMESH_*_DATABASE_URL")
    args = parser.parse_args(argv)
    if args.action == "revision" and not args.message:
        parser.error("revision needs -m MESSAGE")
    try:
        return asyncio.run(_run(args.service, args.action, args.database_url, args.message))
    except (OperationalError, OSError) as error:  # out of reach or unwritable: said plainly, as a service says it
        print(f"{args.service}: the database cannot be used: {getattr(error, 'orig', None) or error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
