"""A real PostgreSQL server for the tests: Debian's binaries, a throwaway cluster on a loopback port.

The services' SQL is SQLAlchemy Core and meant to be portable; the tests that take a `database`
run on SQLite and again on this, so a statement only SQLite accepts fails CI.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

USER = "shopmesh"


def bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: Debian keeps them out of PATH, one folder per major version."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    def __init__(self, bin_path: Path, port: int, *settings: str):
        """`settings`: more `name=value` server settings (a benchmark's statistics, say)."""
        self._bin = bin_path
        self.port = port
        self._settings = "".join(f" -c {setting}" for setting in settings)
        # Not under pytest's tmp folders: as root the server runs as `postgres`, which must reach it.
        self._dir = Path(tempfile.mkdtemp(prefix="shopmesh-pg-"))
        self._as_postgres = os.geteuid() == 0  # PostgreSQL refuses to run as root
        self._names = itertools.count(1)

    def _run(self, *command: str) -> None:
        argv = [str(self._bin / command[0]), *command[1:]]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        if self._as_postgres:
            shutil.chown(self._dir, "postgres")
        data = self._dir / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", USER, "--no-sync")
        # Durability is not under test here; speed is welcome.
        self._options = (f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                         "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300" + self._settings)
        self.resume()

    def resume(self) -> None:
        """Starts the (initialised) server, waiting until it accepts connections."""
        self._run("pg_ctl", "-D", str(self._dir / "data"), "-o", self._options, "-l", str(self._dir / "server.log"),
                  "-w", "start")

    def halt(self) -> None:
        """`pg_ctl stop -m fast`: every session ended, the server down until `resume`."""
        self._run("pg_ctl", "-D", str(self._dir / "data"), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`, as an operator's restart does it."""
        self._run("pg_ctl", "-D", str(self._dir / "data"), "-m", "fast", "-o", self._options,
                  "-l", str(self._dir / "server.log"), "-w", "restart")

    def terminate_backends(self) -> None:
        """`pg_terminate_backend` of every client session but this one."""
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", "postgres", "-c",
                  "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")

    def create_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{name}"

    def log(self) -> str:
        """What the server has logged so far."""
        return (self._dir / "server.log").read_text(errors="replace")

    def hold_row(self, database: str, sql: str, seconds: float) -> subprocess.Popen[str]:
        """An outside session that runs `sql` (an UPDATE: its rows locked) in a transaction held
        open for `seconds`; returns at once with the session's process (`wait()` for its end)."""
        script = f"BEGIN; {sql}; SELECT pg_sleep({seconds}); COMMIT;"
        argv = [str(self._bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", database,
                "-q", "-v", "ON_ERROR_STOP=1", "-c", script]
        session = subprocess.Popen(argv, stdout=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + 10
        while self.query(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' "
                         "AND wait_event = 'PgSleep'") != "1":  # its UPDATE done, its lock held
            if session.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the session holding rows ({sql}) did not get to hold them")
            time.sleep(0.02)
        return session

    def lock_waiters(self, database: str) -> int:
        """How many of `database`'s sessions wait on a lock now."""
        return int(self.query(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' "
                              "AND wait_event_type = 'Lock'"))

    def query(self, sql: str) -> str:
        """One statement's result as psql prints it unaligned (`-At`), as the server's superuser."""
        argv = [str(self._bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", "postgres",
                "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout.strip()

    def wal_bytes(self) -> float:
        """Bytes of write-ahead log the server has written since it was made (its current LSN)."""
        return float(self.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))

    def run_sql_file(self, path: Path) -> None:
        """Runs a SQL script as the server's superuser, stopping at its first error."""
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", "postgres",
                  "-v", "ON_ERROR_STOP=1", "-f", str(path))

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{database}"

    def settings(self) -> dict[str, str]:
        """What a service needs besides its database URL to use this server: nothing."""
        return {}

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) the server has used: the postmaster's, its reaped children's
        (counted into the postmaster by the kernel when it waits for them) and its live backends'."""
        postmaster = int((self._dir / "data" / "postmaster.pid").read_text().split()[0])
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            pid, parent = int(stat.parent.name), int(fields[1])
            if pid == postmaster:
                total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
            elif parent == postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        try:
            if (self._dir / "data" / "postmaster.pid").exists():  # a test may have halted it
                self._run("pg_ctl", "-D", str(self._dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def throwaway_server(port: int, *settings: str) -> Iterator[PostgresServer]:
    """A started server for a script (the benchmarks), stopped and removed after; exits with a
    message naming the package when PostgreSQL is not installed."""
    binaries = bin_dir()
    if binaries is None:
        raise SystemExit("PostgreSQL's binaries are not installed (Debian: apt-get install postgresql)")
    server = PostgresServer(binaries, port, *settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class PgBouncer:
    """Debian's PgBouncer in transaction pooling mode in front of a `PostgresServer`, on its own
    loopback port, as production runs the mesh: `create_database()` makes the database on the
    server and answers its URL through the pooler."""

    def __init__(self, server: PostgresServer, port: int):
        self.server = server
        self.port = port
        self._dir = Path(tempfile.mkdtemp(prefix="shopmesh-pgbouncer-"))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        (self._dir / "users.txt").write_text(f'"{USER}" ""\n')
        ini = self._dir / "pgbouncer.ini"
        ini.write_text(f"""[databases]
* = host=127.0.0.1 port={self.server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self._dir / "users.txt"}
pool_mode = transaction
; the services name each prepared statement uniquely; DISCARD ALL drops them when a server
; connection goes back to the pool, so they do not pile up on the server
server_reset_query = DISCARD ALL
server_reset_query_always = 1
max_client_conn = 2000
default_pool_size = 20
; every test makes databases of its own, and each keeps its pool of server connections: idle
; ones go soon, and all of them together stay well under the server's max_connections (300)
; however many tests ran before (a suite that ran the PgBouncer tests first ran out)
server_idle_timeout = 5
max_user_connections = 150
logfile = {self._dir / "pgbouncer.log"}
""")
        argv = [binary, str(ini)]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            shutil.chown(self._dir, "postgres")
            for path in self._dir.iterdir():
                shutil.chown(path, "postgres")
            argv = ["runuser", "-u", "postgres", "--", *argv]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import socket
        import time

        deadline = time.monotonic() + 20
        while True:  # listening yet? (a tool's wait, not a test's: nothing here is under test)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start: {self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        path = self._dir / "pgbouncer.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) of the server and of PgBouncer (under `runuser` as root)."""
        assert self.process is not None
        ours = {self.process.pid}
        total = self.server.cpu_seconds()
        for stat in sorted(Path("/proc").glob("[0-9]*/stat")):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, parent = int(stat.parent.name), int(fields[1])
            if pid in ours or parent in ours:
                ours.add(pid)
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def create_database(self) -> str:
        """A fresh database on the server; its URL through the pooler."""
        return self.server.create_database().replace(f":{self.server.port}/", f":{self.port}/")

    def settings(self) -> dict[str, str]:
        return {"SHOPMESH_DATABASE_POOLER": "transaction"}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self._dir, ignore_errors=True)
