"""Server bootstrap shared by every service: health, reflection, errors, shutdown.

A service describes itself as an `App` (its servicers and what to close);
`create_server` builds the grpc.aio server from it, `serve` runs it until
SIGTERM/SIGINT and shuts down gracefully the way every process does (`mesh/server/lifecycle.py`):
health NOT_SERVING for every service name, the drain, no new calls while those in flight get
the grace period, then the app closes (database, channels) and the process exits 0.

Health names: each service's own full name (and "") say whether it takes calls, readiness;
`LIVENESS` says only that the process is alive and stays SERVING while it drains, so an
orchestrator takes a stopping instance out of its endpoints rather than killing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import sqlalchemy
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mesh.client.discovery import Discovery, create_discovery
from mesh.data.db import Database
from mesh.kernel.faults import FaultPoints
from mesh.observe import logs, metrics, telemetry
from mesh.rpc import tls
from mesh.server import lifecycle, reflection, workers
from mesh.server.guard import Admission, Guarded
from mesh.server.http import Limits, Request, Response, serve_http
from mesh.settings import Settings, SettingsError

logger = logging.getLogger(__name__)

LIVENESS = "liveness"


@dataclass(frozen=True)
class Binding:
    """One gRPC service a process serves: its full name, registrar and servicer."""

    name: str
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any


@dataclass
class App:
    bindings: Sequence[Binding]
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Set when shutdown starts, so long-lived streams can end cleanly.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    # Brings gauges read from the database up to date before each /metrics scrape.
    gauges: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The service's database: while it cannot be reached, health says NOT_SERVING (`follow_database`).
    database: Database | None = None

    async def close(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:
                logger.exception("error while closing")


QUIET = 0.2  # seconds with none of our calls in flight before a stop stops waiting on gRPC core


@dataclass
class Running:
    """A started server, as `mesh.server.lifecycle` stops it."""

    not_ready_means = "health NOT_SERVING"
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    app: App
    # The process's own calls and streams in flight (Guarded counts them).
    calls: Admission = field(default_factory=lambda: Admission(1))
    streams: Admission = field(default_factory=lambda: Admission(1))

    async def not_ready(self) -> None:
        await self.serving(False)
        self.app.stopping.set()  # long-lived streams end

    async def serving(self, yes: bool) -> None:
        """Health of the process and each of its services (LIVENESS stays SERVING: a restart would
        not help a process that is only waiting for its database)."""
        status = health_pb2.HealthCheckResponse.SERVING if yes else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *(b.name for b in self.app.bindings)]:
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """gRPC's graceful stop, but not waiting on what none of our handlers serves, nor past the grace.

        Under load, about one SIGTERM in a hundred left gRPC's stop waiting the whole grace with no
        handler of ours running (the tasks dumped half-way showed none): gRPC core still counted a
        call that arrived as shutdown began and never reached Python. So once none of our calls or
        streams has been in flight for QUIET seconds, whatever core still holds is cancelled; and
        so it is at the grace's end (plus half the stop margin) if gRPC's own stop has not ended."""
        loop = asyncio.get_running_loop()
        force_at = loop.time() + grace + lifecycle.STOP_MARGIN / 2
        stopping = asyncio.ensure_future(self.server.stop(grace))
        quiet_since = None
        while not stopping.done():
            loop_time = loop.time()
            if self.calls.in_flight or self.streams.in_flight:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = loop_time
            elif loop_time - quiet_since >= QUIET:
                logger.info("stopping: no call of ours in flight, yet gRPC waits on one; cancelling what it holds")
                break
            if loop_time >= force_at:
                logger.warning("stopping: the grace is over and gRPC still waits on %d calls and %d streams of "
                               "ours; cancelling them", self.calls.in_flight, self.streams.in_flight)
                break
            await asyncio.wait({stopping}, timeout=0.05)
        if not stopping.done():
            await self.server.stop(None)
        await stopping

    async def close(self) -> None:
        await self.app.close()


async def create_server(settings: Settings, app: App) -> Running:
    options: list[tuple[str, int]] = [
        # Off, so that a second process on our port fails to start; on for the workers of one
        # service (SHOPMESH_WORKERS), which share it.
        ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
        # What one connection may hold: at most every call and stream the process admits (a client
        # opening more is refused at HTTP/2, REFUSED_STREAM, before any handler runs); the budgets
        # themselves are the Admission below, which answer RESOURCE_EXHAUSTED.
        ("grpc.max_concurrent_streams", settings.max_concurrent_rpcs + settings.max_open_streams),
        # Keepalive enforcement: a client may ping, even with no call open (our channels do, every
        # 30 s), but not more often than every 10 s; one that does gets GOAWAY (too_many_pings).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        # And the server pings a silent client every minute: a peer that vanished (a machine gone, a
        # partition) frees its connection and streams within 80 s, not TCP's hours.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]
    if settings.max_connection_idle:  # a connection with no call for this long is closed (GOAWAY)
        options.append(("grpc.max_connection_idle_ms", int(settings.max_connection_idle * 1000)))
    if settings.max_connection_age:  # no grace: calls and streams on an old connection finish
        options.append(("grpc.max_connection_age_ms", int(settings.max_connection_age * 1000)))
    logs.explain_unsent_replies()
    server = grpc.aio.server(options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # One budget for all of the process's services: unary calls, and open streams apart.
    admission = Admission(settings.max_concurrent_rpcs)
    faults = FaultPoints(settings.faults)  # the rpc.<Method> points (test only)
    streams = Admission(settings.max_open_streams, "streams", "SHOPMESH_MAX_OPEN_STREAMS")
    for binding in app.bindings:
        service = descriptor_pool.Default().FindServiceByName(binding.name)
        binding.add_to_server(Guarded(binding.servicer, service, admission, streams, faults), server)
    names = [b.name for b in app.bindings]
    reflection.enable([*names, health.SERVICE_NAME], server)
    try:
        if settings.tls:
            port = server.add_secure_port(settings.bind_address, tls.server_credentials(settings))
        else:
            port = server.add_insecure_port(settings.bind_address)
    except RuntimeError:  # grpcio's way to say the bind failed; its reason went to its own log line
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {settings.bind_address}: the address is in use or not this host's")
    await server.start()
    for name in ["", LIVENESS, *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return Running(server, port, health_servicer, app, admission, streams)


DATABASE_CHECK_SECONDS = 5.0  # how often a process that can reach its database asks again
DATABASE_RETRY_SECONDS = 1.0  # ... and one that cannot


async def follow_database(db: Database, running: Running, stopping: asyncio.Event) -> None:
    """Health NOT_SERVING while the database cannot be reached (readiness probes and Consul take the
    instance out of rotation; liveness stays, a restart would not help), SERVING again once it can,
    with no restart. Asked every DATABASE_CHECK_SECONDS, and at once when a call finds it out of reach."""
    serving = True
    while not stopping.is_set():
        if serving:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(db.lost.wait(), DATABASE_CHECK_SECONDS)
        else:
            await asyncio.sleep(DATABASE_RETRY_SECONDS)
        db.lost.clear()
        reachable = await db.reachable()
        if reachable == serving or stopping.is_set():  # a stop's NOT_SERVING is not undone
            continue
        serving = reachable
        await running.serving(serving)
        if serving:
            logger.info("the database can be reached again: health SERVING")
        else:
            logger.warning("the database cannot be reached: health NOT_SERVING until it can")


async def serve(settings: Settings, build: Callable[[Settings, Discovery], Awaitable[App]]) -> None:
    for concern in settings.concerns():
        logger.warning("%s", concern)
    discovery = create_discovery(settings)
    app = await build(settings, discovery)
    metrics_server = None
    try:
        if settings.metrics:
            metrics_server = await serve_http(metrics_endpoint(app.gauges), settings.host, settings.metrics_port,
                                              Limits(max_body=1024), f"shopmesh-{settings.service}",
                                              reuse_port=settings.reuse_port)
        running = await create_server(settings, app)
    except Exception:
        if metrics_server is not None:
            metrics_server.close()
        await app.close()
        await discovery.close()
        raise
    if app.database is not None and not app.database.is_sqlite:
        app.background.append(asyncio.create_task(follow_database(app.database, running, app.stopping),
                                                  name="database-health"))
    await discovery.register(settings.service, app.bindings[0].name, running.port)
    logger.info("%s serving on %s:%d (instance %s)", settings.service, settings.host, running.port, settings.instance_id)
    if metrics_server is not None:
        port = metrics_server.port
        logger.info("metrics at http://%s:%d/metrics", settings.advertise_host, port)
    await lifecycle.until_signalled()
    await lifecycle.shut_down(running, settings, discovery)
    if metrics_server is not None:
        metrics_server.close()


def start_process(service: str) -> Settings:
    """What every process of the mesh (each service, the gateway) does first: its settings (exit 2
    naming a bad one), logging, and either supervising its workers (SHOPMESH_WORKERS; this exits)
    or tracing and metrics for itself."""
    try:
        settings = Settings.from_env(service)
    except SettingsError as error:
        print(f"{service}: bad setting: {error}", file=sys.stderr)
        sys.exit(2)
    logs.configure(service, settings.instance_id, settings.log_level, settings.log_format)
    if settings.workers > 1:
        sys.exit(workers.supervise(service, settings))
    telemetry.setup(settings)
    metrics.setup(settings.metrics)
    lifecycle.arm_watchdog()
    return settings


def main(service: str, build: Callable[[Settings, Discovery], Awaitable[App]]) -> None:
    """Entry point of `python -m <service>`: settings, logging, serve, exit code."""
    settings = start_process(service)
    if settings.faults:
        logger.warning("FAULT INJECTION ON (test only): %s", settings.faults)
    try:
        asyncio.run(serve(settings, build))
    except OSError as error:
        logger.error("cannot start: %s", error)
        sys.exit(1)
    except sqlalchemy.exc.OperationalError as error:  # the database is out of reach or unwritable
        url = sqlalchemy.engine.make_url(settings.database_url).render_as_string(hide_password=True)
        logger.error("cannot start: the database %s cannot be used: %s", url, error.orig)
        sys.exit(1)
    finally:
        telemetry.shutdown()


def metrics_endpoint(refreshers: Sequence[Callable[[], Awaitable[None]]] = ()) -> Callable[[Request], Awaitable[Response]]:
    """An HTTP handler serving `/metrics` (and `/healthz`, the metrics port is up) and 404 elsewhere."""

    async def handle(request: Request) -> Response:
        if request.path == "/metrics" and request.method in ("GET", "HEAD"):
            return Response(200, await metrics.exposition(refreshers), metrics.CONTENT_TYPE)
        if request.path == "/healthz":
            return Response(200, b'{"status": "ok"}')
        return Response(404, b'{"code": 5, "message": "this port serves /metrics only", "details": []}')

    return handle
