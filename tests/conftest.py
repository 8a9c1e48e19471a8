"""Fixtures every tier shares: the real command-line tools and free loopback ports."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.tools.ports import free_port

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
def dns_server() -> Iterator[tuple[object, int]]:
    """A DNS server whose answers the test sets (tests/support/dns.py): (answers, port)."""
    from tests.support.dns import serving

    with serving() as found:
        yield found


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


def _postgres_server() -> Iterator[object]:
    from tests.support.postgres import PostgresServer, bin_dir

    binaries = bin_dir()
    if binaries is None:
        needed("PostgreSQL", "Debian: apt-get install postgresql")
    server = PostgresServer(binaries, free_port())  # type: ignore[arg-type]
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """One real PostgreSQL server for the session (Debian's `postgresql` package)."""
    yield from _postgres_server()


@pytest.fixture
def own_postgres() -> Iterator[object]:
    """A PostgreSQL server of the test's own, for a test that stops, restarts or breaks it."""
    yield from _postgres_server()


@pytest.fixture(scope="session")
def pgbouncer(postgres: object) -> Iterator[object]:
    """Debian's PgBouncer in transaction pooling mode in front of the session's PostgreSQL."""
    import shutil

    from tests.support.postgres import PgBouncer

    if shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists():
        needed("PgBouncer", "Debian: apt-get install pgbouncer")
    bouncer = PgBouncer(postgres, free_port())  # type: ignore[arg-type]
    bouncer.start()
    yield bouncer
    bouncer.stop()


# --- No process of the mesh may log a traceback or an asyncio error during the suite ---------------
#
# Real processes write their logs under the test's temporary folders (`*.log`); after every test
# the lines they added are read, and any of these fails that test. Servers run in this process
# (the integration tier) log through `logging`: an asyncio ERROR or a record with a traceback
# fails the test too. A test that provokes one on purpose says so with
# `@pytest.mark.allow_log("text of the line")`.
LOG_PROBLEMS = ("Traceback (most recent call last)", "Task was destroyed but it is pending",
                "Task exception was never retrieved", "Exception in callback", "ERROR   asyncio:",
                '"level": "ERROR", "logger": "asyncio"', "Unclosed client session", "was never awaited")
NOT_OURS = {"consul.log", "postgres.log", "postgresql.log"}  # other programs' logs
_read_up_to: dict[Path, int] = {}


NOT_WALKED = {"containerd", "etcd"}  # the test cluster's stores: large, changing while walked, no logs of ours


def _log_files(base: Path) -> list[Path]:
    """Every `*.log` under `base`. os.walk, not Path.rglob: a directory that disappears while it is
    walked (containerd removes snapshots as pods go) is skipped, not an error failing the test."""
    found = []
    for folder, subfolders, files in os.walk(base):
        subfolders[:] = [name for name in subfolders if name not in NOT_WALKED]
        found += [Path(folder, name) for name in files if name.endswith(".log") and name not in NOT_OURS]
    return found


def _new_problems(base: Path, allowed: tuple[str, ...]) -> list[str]:
    found = []
    for path in _log_files(base):
        start = _read_up_to.get(path, 0)
        try:
            with path.open("rb") as file:
                file.seek(start)
                added = file.read()
        except OSError:
            continue
        _read_up_to[path] = start + len(added)
        lines = added.decode(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if any(problem in line for problem in LOG_PROBLEMS) and not any(a in line for a in allowed):
                context = "\n".join(lines[max(0, i - 2):i + 12])
                found.append(f"{path.relative_to(base)}:\n{context}")
    return found


class _Watch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if (record.name == "asyncio" and record.levelno >= logging.ERROR) or record.exc_info:
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_tracebacks_in_logs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    marker = request.node.get_closest_marker("allow_log")
    allowed = tuple(marker.args) if marker else ()
    base = tmp_path_factory.getbasetemp()
    _new_problems(base, ("\0",))  # whatever earlier fixtures wrote is theirs
    watch = _Watch()
    logging.getLogger().addHandler(watch)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(watch)
    problems = _new_problems(base, allowed)
    problems += [f"in this process: {r.name} {r.levelname}: {r.getMessage()}" for r in watch.records
                 if not any(a in r.getMessage() for a in allowed)]
    if problems:
        pytest.fail("a process of the mesh logged a traceback or an asyncio error:\n" + "\n---\n".join(problems))


@pytest.fixture(scope="session", autouse=True)
def no_tracebacks_at_shutdown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What processes shared by many tests log as they stop, after the last test (set up first, so
    torn down after the fixtures that stop them)."""
    yield
    problems = _new_problems(tmp_path_factory.getbasetemp(), ())
    if problems:
        pytest.fail("a process of the mesh logged a traceback or an asyncio error as it stopped:\n"
                    + "\n---\n".join(problems))
