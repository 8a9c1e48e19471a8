"""Fixtures every tier shares: the real command-line tools and free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
IN_CI = os.environ.get("CI", "").lower() == "true"


def tool(name: str, install: str = "run scripts/install-tools.sh") -> str:
    """Path of a real tool; in CI a missing tool fails the test instead of skipping it."""
    found = shutil.which(name) or (str(TOOLS_BIN / name) if (TOOLS_BIN / name).exists() else None)
    if found is None:
        message = f"{name} not installed; {install}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def grpcurl() -> str:
    return tool("grpcurl")


@pytest.fixture
def health_probe() -> str:
    return tool("grpc-health-probe")
