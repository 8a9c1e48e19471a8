"""Real servers in this process on port 0, each with its own real database.

Every test that starts services runs twice: on SQLite files (the embedded default) and on a
real PostgreSQL server, each service in its own database, so the SQL stays portable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

import inventory.app
import notification.app
import order.app
from mesh.client.discovery import create_discovery
from mesh.server.bootstrap import Running, create_server
from mesh.settings import Settings

BUILDERS = {"inventory": inventory.app.build, "notification": notification.app.build, "order": order.app.build}

Start = Callable[..., Awaitable[Running]]


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> object | None:
    """None for SQLite files under the test's folder; else the PostgreSQL server."""
    return request.getfixturevalue("postgres") if request.param == "postgresql" else None


@pytest.fixture
async def start(tmp_path: Path, database: object | None) -> AsyncIterator[Start]:
    """`await start("inventory", SHOPMESH_X="y")` serves a service; all stop at the end."""
    running: list[Running] = []

    async def _start(service: str, **env: str) -> Running:
        where = {} if database is None else {
            f"SHOPMESH_{service.upper()}_DATABASE_URL": database.create_database()}  # type: ignore[attr-defined]
        settings = Settings.from_env(
            service, {"SHOPMESH_DATA_DIR": str(tmp_path), f"SHOPMESH_{service.upper()}_PORT": "0", **where, **env}
        )
        app = await BUILDERS[service](settings, create_discovery(settings))
        served = await create_server(settings, app)
        running.append(served)
        return served

    yield _start
    for served in reversed(running):
        await served.server.stop(0)
        await served.app.close()


def channel(served: Running) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{served.port}")
