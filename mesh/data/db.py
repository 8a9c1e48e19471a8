"""The database every service uses: SQLAlchemy 2 Core, async, portable SQL.

Services only ever call `read()` and `write()`, each one transaction, and run
the same SQLAlchemy Core statements whatever is underneath.

PostgreSQL: ordinary async transactions on the async engine (reads and one-statement writes in
autocommit), every statement run to its end even if its caller hangs up (`Uncut`).

SQLite (the embedded default) gets WAL (readers never wait for the writer), a
busy timeout (another process's writer is waited for, not failed) and write
transactions that start with `BEGIN IMMEDIATE`: a deferred BEGIN that reads and
then writes must upgrade its lock mid-transaction, which fails with "database
is locked" whatever the busy timeout. On top of that, measured (BENCHMARKS.md):
every statement through aiosqlite costs several thread hand-offs, which made
one GetProduct cost ~1.8 ms of CPU and one order ~2.5 ms per write transaction.
So SQLite transactions run inline on the event loop thread through a plain
sqlite3 connection whenever they cannot wait:

- a read never waits in WAL mode, so every read runs inline;
- a write runs inline only if `BEGIN IMMEDIATE` gets the write lock at once
  (busy timeout 0 on that connection); when another process holds it, the
  write goes to aiosqlite's thread, which waits there without blocking the loop.

Inline transactions never yield to the loop, so they cannot interleave; the
stores keep to that by never awaiting anything but the database inside one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy.engine import Result, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from mesh.kernel import aio
from mesh.kernel.errors import Duplicate, Unavailable
from mesh.observe import telemetry

if TYPE_CHECKING:
    from mesh.settings import Settings

logger = logging.getLogger(__name__)

_WRITE = "shopmesh_write"
SQLITE_BUSY_TIMEOUT_MS = 10_000
# How long a call waits for a free pooled connection before it is answered UNAVAILABLE (a caller's
# own deadline, usually shorter, ends it first).
POOL_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class ServerTimeouts:
    """What bounds a statement on PostgreSQL: one sent runs to its end even if its caller hangs up
    or its deadline passes (`Uncut`), so a lock waited for longer than `lock`, or a statement
    running longer than `statement` (seconds; 0 = never), is ended by the server and answered
    UNAVAILABLE, and its pooled connection is free again. A direct connection sends them as
    startup parameters; through a transaction pooler, which refuses those (PgBouncer 1.18) and
    hands each transaction any server connection, `Database.migrate` makes them the service role's
    defaults in its database (`ALTER ROLE CURRENT_USER IN DATABASE ... SET`), which every server
    connection the pooler opens then has, and DISCARD ALL resets to."""

    lock: float = 10.0
    statement: float = 30.0

    def parameters(self) -> dict[str, str]:
        return {"lock_timeout": f"{round(self.lock * 1000)}ms", "statement_timeout": f"{round(self.statement * 1000)}ms"}


# How soon a LISTEN connection the server dropped is opened again (tried again at this pace).
LISTEN_RETRY_SECONDS = 1.0


def _sqlite_setup(engine: Engine, *, begin_hook: bool = True) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver: transactions are begun explicitly below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # NORMAL in WAL mode: a commit survives a process crash; only an OS crash
        # or power loss can lose the last transactions, never corrupt the file.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    if begin_hook:

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            write = connection.get_execution_options().get(_WRITE, False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class InlineConnection:
    """A sync connection behind the async `execute` the stores call; never yields to the loop."""

    def __init__(self, conn: Connection):
        self._conn = conn

    async def execute(self, statement: Any, parameters: Any = None) -> Result[Any]:
        return self._conn.execute(statement, parameters)

    async def exec_driver_sql(self, statement: str) -> Result[Any]:
        return self._conn.exec_driver_sql(statement)


class Uncut:
    """A PostgreSQL connection as the stores use it: a statement sent runs to its end even if its
    caller hangs up meanwhile (`aio.uncut`); the cancellation goes on at the statement's boundary,
    and the transaction rolls back as for any error.

    Cut mid-statement, asyncpg sends a cancel request (a connection of its own to the server) and
    the pool closes the connection whose statement was cut: each caller hanging up cost everyone
    a connection and its setup again, and asyncpg 0.32's cancel request, itself cut by that close
    while negotiating TLS, left an unread future that asyncio logs as an error (asyncpg issues
    #1211, #1310; seen in CI run 42). tests/integration/test_hang_ups.py. What bounds a statement
    instead is the server's lock and statement timeouts (`ServerTimeouts`).

    `one=True` (autocommit): a second statement is refused, as two would not be one transaction.
    """

    def __init__(self, conn: AsyncConnection, *, one: bool = False):
        self._conn = conn
        self._one, self._ran = one, False
        self.dialect = conn.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Result[Any]:
        if self._one:
            if self._ran:
                raise RuntimeError("write_one() runs one statement; use write() for a transaction of several")
            self._ran = True
        return await aio.uncut(self._conn.execute(statement, parameters))

    async def exec_driver_sql(self, statement: str) -> Result[Any]:
        return await aio.uncut(self._conn.exec_driver_sql(statement))


def on_postgresql(conn: object) -> bool:
    """Whether a transaction object's connection speaks to PostgreSQL (SQLite's inline one has no
    dialect): for the few statements PostgreSQL runs as one where SQLite needs several."""
    dialect = getattr(conn, "dialect", None)
    return dialect is not None and dialect.name == "postgresql"


class _Inline:
    """One long-lived sqlite3 connection used only from the event loop thread."""

    def __init__(self, engine: Engine, begin: str, busy_timeout_ms: int | None = None):
        self._engine = engine
        self._begin = begin
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: Connection | None = None
        self.busy = False

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
            if self._busy_timeout_ms is not None:
                self._driver.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        return self._conn

    @property
    def _driver(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn.connection.driver_connection  # type: ignore[return-value]

    def try_begin(self) -> bool:
        """Begins a transaction; False if the database is locked by someone else."""
        self._connection()
        try:
            self._driver.execute(self._begin)  # directly: SQLAlchemy's begin costs more than a read
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                return False
            raise
        self.busy = True
        return True

    @contextlib.contextmanager
    def transaction(self) -> Iterator[InlineConnection]:
        """The body of a transaction `try_begin` opened; commits or rolls back."""
        assert self._conn is not None
        try:
            yield InlineConnection(self._conn)
        except BaseException:
            self._conn.rollback()
            if self._driver.in_transaction:
                self._driver.execute("ROLLBACK")
            raise
        else:
            self._conn.commit()
            if self._driver.in_transaction:  # nothing ran, so SQLAlchemy had nothing to end
                self._driver.execute("COMMIT")
        finally:
            self.busy = False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._engine.dispose()


def create_missing(conn: Connection, metadata: MetaData) -> None:
    """Creates missing tables, and adds the nullable columns a newer version defined to existing ones."""
    metadata.create_all(conn)
    _add_missing_columns(conn, metadata)


def _add_missing_columns(conn: Connection, metadata: MetaData) -> None:
    from sqlalchemy import inspect

    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                if not column.nullable:
                    raise RuntimeError(f"cannot add NOT NULL column {table.name}.{column.name} to existing rows")
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
                logger.info("added column %s.%s", table.name, column.name)


_MIGRATIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


class Database:
    """One service's database: `async with db.write() as conn:` is one transaction."""

    def __init__(self, engine: AsyncEngine, inline_engine: Engine | None = None, *, pooled: bool = False,
                 timeouts: ServerTimeouts | None = None):
        self.engine = engine
        self.timeouts = timeouts or ServerTimeouts()
        telemetry.instrument_engines(engine.sync_engine, *([inline_engine] if inline_engine is not None else []))
        self.is_sqlite = engine.dialect.name == "sqlite"
        # Behind a transaction pooler a server connection is ours only inside a transaction: every
        # statement runs in one (asyncpg prepares and executes in two exchanges) and no LISTEN.
        self.pooled = pooled
        # Set when a call finds the server out of reach: whoever follows the database's health
        # (mesh/server/bootstrap.py) checks it at once instead of at its next period.
        self.lost = asyncio.Event()
        # PostgreSQL reads run without BEGIN/COMMIT: at READ COMMITTED (its default) each statement
        # takes its own snapshot inside a transaction too, so a read transaction only added two
        # round trips; so does a write of one statement, atomic by itself (`write_one`). The same
        # pool, connections switched to autocommit while checked out.
        self._autocommit = None if self.is_sqlite or pooled else engine.execution_options(isolation_level="AUTOCOMMIT")
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._reader = self._writer = None
        if inline_engine is not None:
            self._reader = _Inline(inline_engine, "BEGIN")
            self._writer = _Inline(inline_engine, "BEGIN IMMEDIATE", busy_timeout_ms=0)

    @classmethod
    def of(cls, settings: Settings, url: str = "") -> Database:
        """A service's database as its settings describe it: the URL (or `url`), pool, pooler and
        server timeouts."""
        return cls.connect(url or settings.database_url, settings.database_pool_size,
                           "none" if url else settings.database_pooler,
                           ServerTimeouts(settings.database_lock_timeout, settings.database_statement_timeout))

    @classmethod
    def connect(cls, url: str, pool_size: int = 10, pooler: str = "none",
                timeouts: ServerTimeouts | None = None) -> Database:
        parsed = make_url(url)
        timeouts = timeouts or ServerTimeouts()
        if parsed.get_backend_name() != "sqlite" and pooler == "transaction":
            # Through PgBouncer in transaction mode (1.18, Debian 12's, keeps no prepared statement
            # per client): no statement cache on either side, and each statement prepared under a
            # name of its own, so two clients' statements never meet on one server connection
            # (the pooler's `server_reset_query_always` with DISCARD ALL drops them). Costs a
            # prepare per statement: measured in BENCHMARKS.md.
            engine = create_async_engine(
                parsed.update_query_dict({"prepared_statement_cache_size": "0"}),
                pool_size=pool_size, max_overflow=0, pool_timeout=POOL_WAIT_SECONDS,
                connect_args={"statement_cache_size": 0,
                              "prepared_statement_name_func": lambda: f"__shopmesh_{uuid.uuid4().hex}__"})
            return cls(engine, pooled=True, timeouts=timeouts)
        if parsed.get_backend_name() != "sqlite":
            # A fixed pool: `pool_size` connections kept and reused, none opened for a burst and
            # closed after it (each new one cost a handshake, asyncpg's type setup and its prepared
            # statements again: measured, BENCHMARKS.md). No ping per checkout (on asyncpg a BEGIN
            # and a ROLLBACK, two round trips before every transaction): a connection found dead
            # mid-call invalidates the whole pool instead, and the call is answered UNAVAILABLE
            # (`Store`), so the caller's retry gets fresh connections.
            return cls(create_async_engine(
                parsed, pool_size=pool_size, max_overflow=0, pool_timeout=POOL_WAIT_SECONDS,
                connect_args={"server_settings": timeouts.parameters()}), timeouts=timeouts)
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        # Transactions always end in COMMIT or ROLLBACK here, so the pool's
        # extra rollback on every check-in would only cost a thread hop.
        engine = create_async_engine(parsed, connect_args=connect_args, pool_reset_on_return=None)
        _sqlite_setup(engine.sync_engine)
        inline = None
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            inline = create_engine(parsed.set(drivername="sqlite"), connect_args=connect_args)
            _sqlite_setup(inline, begin_hook=False)
        return cls(engine, inline)

    async def migrate(self, versions: Path, metadata: MetaData) -> None:
        """Brings the schema to the newest revision in `versions` (mesh/data/migrate.py), in one write transaction."""
        from mesh.data import migrate

        # Alembic keeps its running migration in a module global, and run_sync may switch to
        # another coroutine at each statement: one migration at a time per process (and loop).
        lock = _MIGRATIONS.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            await self.run_sync(migrate.upgrade, versions, metadata)
            if self.pooled and await self.run_sync(migrate.role_defaults, self.timeouts.parameters()):
                await self._renew_server_session()

    async def _renew_server_session(self) -> None:
        """Ends the server session the pooler lent us, so that the next is opened with the role's
        new defaults: the one a migration just ran on would otherwise be lent on for an hour
        without them. Its end is the expected answer; the pool drops the connection."""
        async with self.engine.connect() as conn:
            try:
                await conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
            except Exception:  # noqa: BLE001 - the session ended, as asked
                await conn.invalidate()

    async def run_sync(self, work: Callable[..., Any], *args: Any) -> Any:
        """`work(connection, *args)` on a plain SQLAlchemy Connection in one write transaction: schema work, tools."""
        async with self._async_write() as conn:
            return await conn.run_sync(work, *args)

    async def create_schema(self, metadata: MetaData) -> None:
        """Creates missing tables, and adds columns a newer version defined to existing ones.

        For tables outside a service's revisions (tests); the services use `migrate`,
        which also runs this once for a database made before migrations existed.
        """
        await self.run_sync(create_missing, metadata)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection | InlineConnection | Uncut]:
        if self._reader is not None and not self._reader.busy and self._reader.try_begin():
            with self._reader.transaction() as conn:
                yield conn
            return
        if self._autocommit is not None:
            async with self._autocommit.connect() as conn:
                yield Uncut(conn)
            return
        async with self.engine.connect() as conn, self._transaction(conn):
            yield conn if self.is_sqlite else Uncut(conn)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection | InlineConnection | Uncut]:
        writer = self._writer
        if (
            writer is not None
            and not writer.busy
            and not self._write_lock.locked()  # type: ignore[union-attr]
            and writer.try_begin()
        ):
            with writer.transaction() as conn:
                yield conn
            return
        async with self._async_write() as conn:
            yield conn if self.is_sqlite else Uncut(conn)

    @contextlib.asynccontextmanager
    async def write_one(self) -> AsyncIterator[AsyncConnection | InlineConnection | Uncut]:
        """A write of exactly one statement: on PostgreSQL without BEGIN and COMMIT (a statement is
        its own transaction there; two round trips fewer), on SQLite a write transaction as `write`."""
        if self._autocommit is None:
            async with self.write() as conn:
                yield conn
            return
        async with self._autocommit.connect() as conn:
            yield Uncut(conn, one=True)

    @contextlib.asynccontextmanager
    async def _async_write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock or contextlib.nullcontext():
            async with self.engine.connect() as conn:
                await conn.execution_options(**{_WRITE: True})
                async with self._transaction(conn):
                    yield conn

    @contextlib.asynccontextmanager
    async def _transaction(self, conn: AsyncConnection) -> AsyncIterator[None]:
        """`conn.begin()`; on PostgreSQL its COMMIT and ROLLBACK run to their end even if the
        caller hangs up meanwhile, as its statements do (`Uncut`)."""
        if self.is_sqlite:
            async with conn.begin():
                yield
            return
        transaction = await conn.begin()  # (on asyncpg the BEGIN itself goes with the first statement)
        try:
            yield
        except BaseException:
            if transaction.is_active:
                await aio.uncut(transaction.rollback())
            raise
        await aio.uncut(transaction.commit())

    async def reachable(self, timeout: float = 2.0) -> bool:
        """Whether the server answers a `SELECT 1` within `timeout` seconds (SQLite: a file, always)."""
        if self.is_sqlite:
            return True
        try:
            async with asyncio.timeout(timeout), (self._autocommit or self.engine).connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception:  # noqa: BLE001 - whatever the failure, the answer is "not reachable now"
            return False
        return True

    @contextlib.asynccontextmanager
    async def listening(self, channel: str, heard: Callable[[str], None]) -> AsyncIterator[bool]:
        """On PostgreSQL, `heard(payload)` for every NOTIFY on `channel` (from any instance), on a
        connection of its own held for as long as this lasts, opened again when the server drops
        it (a restart, a killed backend); True. On SQLite, or behind a transaction pooler (LISTEN
        needs a session), nothing; False: the caller polls (and must anyway for what was
        committed while no connection listened)."""
        if self.is_sqlite or self.pooled:
            yield False
            return

        def on_notify(_connection: object, _pid: int, _channel: str, payload: str) -> None:
            heard(payload)

        stop = asyncio.Event()
        first: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def hold() -> None:
            while not stop.is_set():
                dropped = asyncio.Event()
                try:
                    async with self.engine.connect() as conn:
                        driver = (await conn.get_raw_connection()).driver_connection  # asyncpg's own
                        driver.add_termination_listener(lambda _connection, dropped=dropped: dropped.set())  # type: ignore[union-attr]
                        await driver.add_listener(channel, on_notify)  # type: ignore[union-attr]
                        if not first.done():
                            first.set_result(True)
                        elif not stop.is_set():
                            logger.info("listening on %s again", channel)
                        await aio.first_set(stop, dropped)
                        if dropped.is_set():
                            await conn.invalidate()
                        else:
                            with contextlib.suppress(Exception):  # the connection may be going meanwhile
                                await driver.remove_listener(channel, on_notify)  # type: ignore[union-attr]
                except Exception as error:
                    if not first.done():  # out of reach at the start: the caller's to handle
                        first.set_exception(error)
                        return
                    if not _lost(error):
                        logger.exception("listening on %s failed; trying again", channel)
                    self.lost.set()
                if not stop.is_set():
                    await aio.first_set(stop, timeout=LISTEN_RETRY_SECONDS)

        holder = asyncio.create_task(hold(), name=f"listen-{channel}")
        try:
            yield await first
        finally:
            stop.set()
            await holder

    async def close(self) -> None:
        await self.engine.dispose()
        for inline in (self._reader, self._writer):
            if inline is not None:
                inline.close()


Tx = TypeVar("Tx")


class Store(Generic[Tx]):
    """A service's store: `async with store.write() as tx:` gives its transaction object.

    Subclasses name their transaction class; it is built around the open connection. What the
    driver raises never reaches a use case: a row already stored under a written key is
    `Duplicate`, a database out of reach (refused, restarted, its backend killed) `Unavailable`.
    """

    tx: Callable[[AsyncConnection | InlineConnection | Uncut], Tx]

    def __init__(self, db: Database):
        self.db = db

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        with _translated(self.db):
            async with self.db.read() as conn:
                yield self.tx(conn)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """A write transaction; `Duplicate` whether the driver said so at the statement or at commit."""
        with _translated(self.db):
            async with self.db.write() as conn:
                yield self.tx(conn)

    @contextlib.asynccontextmanager
    async def write_one(self) -> AsyncIterator[Tx]:
        """A write of one statement (`Database.write_one`): two round trips fewer on PostgreSQL."""
        with _translated(self.db):
            async with self.db.write_one() as conn:
                yield self.tx(conn)


@contextlib.contextmanager
def _translated(db: Database) -> Iterator[None]:
    """The driver's errors in the use cases' terms: `Duplicate`, `Unavailable` (and `db.lost` set);
    anything else as is."""
    try:
        yield
    except IntegrityError as error:
        raise Duplicate(str(error.orig)) from error
    except Exception as error:
        if _timed_out(error):
            raise Unavailable("the database did not answer in time (a lock held too long, or a long statement); "
                              "retry shortly") from error
        if not _lost(error):
            raise
        db.lost.set()
        raise _unavailable(error) from error


def _lost(error: BaseException) -> bool:
    """Whether `error` says the database server could not be reached or the connection was lost
    (SQLAlchemy then invalidates the pool, so a retry connects afresh). SQLite's own errors (a
    locked or unwritable file) are not: they stay errors of this process."""
    if isinstance(error, (OSError, PoolTimeout)):
        return True
    if isinstance(error, DBAPIError):
        if isinstance(error.orig, sqlite3.Error):
            return False
        return error.connection_invalidated or isinstance(error, (OperationalError, InterfaceError)) or _driver_lost(
            error.orig)
    return _driver_lost(error)


def _timed_out(error: BaseException) -> bool:
    """PostgreSQL ended the statement on one of our timeouts: lock_not_available (lock_timeout) or
    query_canceled (statement_timeout), by SQLSTATE, which SQLAlchemy's asyncpg adapter copies onto
    the error it raises (its `orig` is the adapter's error, the driver's is only its cause)."""
    orig = error.orig if isinstance(error, DBAPIError) else error
    return getattr(orig, "sqlstate", None) in ("55P03", "57014")


def _driver_lost(error: BaseException | None) -> bool:
    """asyncpg's own words for a server out of reach, which reach us unwrapped when a new connection
    fails ("the database system is shutting down", "... is starting up"): its connection errors,
    its interface errors (a connection closed under us), operator intervention (class 57: admin
    shutdown, crash shutdown, cannot connect now)."""
    try:
        from asyncpg import exceptions
    except ImportError:  # the postgres extra is not installed: no asyncpg error can happen
        return False
    return isinstance(error, (exceptions.PostgresConnectionError, exceptions.OperatorInterventionError,
                              exceptions.InterfaceError))


_said_unreachable = 0.0


def _unavailable(error: BaseException) -> Unavailable:
    """The caller's answer (UNAVAILABLE, retry); the log says so at most every 10 s, not per call."""
    global _said_unreachable
    at = time.monotonic()
    if at - _said_unreachable >= 10:
        _said_unreachable = at
        logger.warning("the database cannot be reached: %s", getattr(error, "orig", None) or error)
    return Unavailable("the database cannot be reached; retry shortly")
