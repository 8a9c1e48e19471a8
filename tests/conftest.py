"""Fixtures every tier shares: the real command-line tools and free loopback ports."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
IN_CI = os.environ.get("CI", "").lower() == "true"


def tool(name: str, install: str = "run scripts/install-tools.sh") -> str:
    """Path of a real tool; in CI a missing tool fails the test instead of skipping it."""
    found = shutil.which(name) or (str(TOOLS_BIN / name) if (TOOLS_BIN / name).exists() else None)
    if found is None:
        needed(name, install)
    return found  # type: ignore[return-value]


@pytest.fixture
def grpcurl() -> str:
    return tool("grpcurl")


@pytest.fixture
def health_probe() -> str:
    return tool("grpc-health-probe")


def needed(what: str, install: str) -> None:
    """A missing tool: skip here, fail in CI."""
    message = f"{what} not installed; {install}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """One real PostgreSQL server for the session (Debian's `postgresql` package)."""
    from tests.postgres import PostgresServer, bin_dir

    binaries = bin_dir()
    if binaries is None:
        needed("PostgreSQL", "Debian: apt-get install postgresql")
    server = PostgresServer(binaries, free_port())  # type: ignore[arg-type]
    server.start()
    yield server
    server.stop()
