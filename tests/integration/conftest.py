"""Real servers in this process on port 0, each with its own real database.

Every test that starts services runs three times: on SQLite files (the embedded default), on a
real PostgreSQL server (each service in its own database, so the SQL stays portable), and on that
server through PgBouncer in transaction pooling mode, as production runs it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.mesh import InProcess, Start


@pytest.fixture(params=["sqlite", "postgresql", "pgbouncer"])
def database(request: pytest.FixtureRequest) -> object | None:
    """None for SQLite files under the test's folder; else the PostgreSQL server, directly or
    through PgBouncer in transaction pooling mode."""
    return None if request.param == "sqlite" else request.getfixturevalue(
        {"postgresql": "postgres", "pgbouncer": "pgbouncer"}[request.param])


@pytest.fixture
def connect(database: object | None):  # type: ignore[no-untyped-def]
    """`connect(url)`: a `Database` on `url` the way the services connect to this database (through
    the pooler, with its setting, when there is one)."""
    from mesh.data.db import Database

    pooler = "none" if database is None else database.settings().get("SHOPMESH_DATABASE_POOLER", "none")  # type: ignore[attr-defined]
    return lambda url: Database.connect(url, pooler=pooler)


@pytest.fixture
async def start(tmp_path: Path, database: object | None) -> AsyncIterator[Start]:
    """`await start("inventory", SHOPMESH_X="y")` serves a service; all stop at the end."""
    mesh = InProcess(tmp_path, database)
    yield mesh.start
    await mesh.stop_all()
