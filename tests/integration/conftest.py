"""Real servers in this process on port 0, each with its own real database.

Every test that starts services runs twice: on SQLite files (the embedded default) and on a
real PostgreSQL server, each service in its own database, so the SQL stays portable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.mesh import InProcess, Start


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> object | None:
    """None for SQLite files under the test's folder; else the PostgreSQL server."""
    return request.getfixturevalue("postgres") if request.param == "postgresql" else None


@pytest.fixture
async def start(tmp_path: Path, database: object | None) -> AsyncIterator[Start]:
    """`await start("inventory", SHOPMESH_X="y")` serves a service; all stop at the end."""
    mesh = InProcess(tmp_path, database)
    yield mesh.start
    await mesh.stop_all()
