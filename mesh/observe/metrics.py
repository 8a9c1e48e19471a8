"""Prometheus metrics for every process, served as text at `/metrics`.

RPC families follow the gRPC Prometheus convention (go-grpc-prometheus: the same
names, labels and meaning), so existing dashboards and alerts apply:

    grpc_server_started_total / grpc_server_handled_total / grpc_server_handling_seconds
    grpc_client_started_total / grpc_client_handled_total / grpc_client_handling_seconds
    labels: grpc_type, grpc_service, grpc_method (+ grpc_code on *_handled_total)

The gateway adds `http_requests_total`, `http_request_duration_seconds` (by route
template, never the raw path) and `http_requests_in_flight`; each service adds its
business counters (`shop_*`) next to its handlers. Recording on the RPC path happens
only when SHOPMESH_METRICS is on (the default); off, no wrapper or interceptor is
installed at all. prometheus_client also exports `process_cpu_seconds_total` and
friends, so CPU per request can be read from the same page.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

logger = logging.getLogger(__name__)

# Latency buckets from 0.5 ms (a cached read) to 10 s (a deadline).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RPC = ("grpc_type", "grpc_service", "grpc_method")

SERVER_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _RPC)
SERVER_HANDLED = Counter("grpc_server_handled_total", "RPCs completed on the server, by status code.",
                         (*_RPC, "grpc_code"))
SERVER_SECONDS = Histogram("grpc_server_handling_seconds", "Time from an RPC's start to its status, on the server.",
                           _RPC, buckets=BUCKETS)
SERVER_MSG_SENT = Counter("grpc_server_msg_sent_total", "Stream messages sent by the server.", _RPC)
CLIENT_STARTED = Counter("grpc_client_started_total", "RPCs started by this process as a client.", _RPC)
CLIENT_HANDLED = Counter("grpc_client_handled_total", "RPCs this process called that completed, by status code.",
                         (*_RPC, "grpc_code"))
CLIENT_SECONDS = Histogram("grpc_client_handling_seconds", "Time from an RPC's start to its status, as the client.",
                           _RPC, buckets=BUCKETS)
HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests answered by the gateway.", ("route", "method", "code"))
HTTP_SECONDS = Histogram("http_request_duration_seconds", "Time to answer an HTTP request (to the first byte "
                         "of a stream).", ("route", "method"), buckets=BUCKETS)
HTTP_IN_FLIGHT = Gauge("http_requests_in_flight", "HTTP requests being answered now.", multiprocess_mode="livesum")
HTTP_CONNECTIONS = Gauge("http_connections_open", "HTTP connections open now.", multiprocess_mode="livesum")
HTTP_LIMIT_REFUSALS = Counter("http_limit_refusals_total", "Connections, requests and streams refused or ended by "
                              "a limit: connections (the process is full), client_connections, client_streams "
                              "(a client's share), stream_buffer (a stream's reader fell behind), send_timeout "
                              "(a reply left unread).", ("limit",))

# The classic text format every Prometheus (2.x and 3.x) and agent parses; our names need nothing newer.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_enabled = False


BREAKER = Gauge("shop_upstream_breaker_state", "The circuit breaker in front of each upstream service: 0 closed "
                "(calls go through), 1 open (calls fail at once), 2 half-open (one probe goes through); the "
                "highest among a group's workers.", ("upstream",), multiprocess_mode="max")


IN_FLIGHT = Gauge("shop_server_in_flight", "The server's own calls (kind=calls) and open streams (kind=streams) "
                  "being served now, summed over a group's workers.", ("kind",), multiprocess_mode="livesum")
IN_FLIGHT_LIMIT = Gauge("shop_server_in_flight_limit", "How many of each kind the server takes at once before it "
                        "refuses more (SHOPMESH_MAX_CONCURRENT_RPCS, SHOPMESH_MAX_OPEN_STREAMS), summed over a "
                        "group's workers.", ("kind",), multiprocess_mode="livesum")


def in_flight_gauge(kind: str, limit: int) -> Gauge:
    """The gauge of `kind` an Admission moves as calls enter and leave; its limit is set here."""
    IN_FLIGHT_LIMIT.labels(kind).set(limit)
    return IN_FLIGHT.labels(kind)


def breaker_gauge(upstream: str) -> Callable[[int], None]:
    """What a breaker calls on each change of its state: the gauge of `upstream` follows it."""
    series = BREAKER.labels(upstream)
    series.set(0)
    return lambda state: series.set(int(state))


def setup(enabled: bool) -> None:
    global _enabled
    _enabled = enabled
    disable_created_metrics()  # `*_created` series would double the page for what no dashboard here reads


def enabled() -> bool:
    return _enabled


def _split(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method


class MethodMetrics:
    """One method's series, resolved once: a call pays for no label lookup."""

    def __init__(self, full_method: str, grpc_type: str, *, server: bool):
        labels = (grpc_type, *_split(full_method))
        self._labels = labels
        self._handled_family = SERVER_HANDLED if server else CLIENT_HANDLED
        self.started = (SERVER_STARTED if server else CLIENT_STARTED).labels(*labels)
        self.seconds = (SERVER_SECONDS if server else CLIENT_SECONDS).labels(*labels)
        self.sent = SERVER_MSG_SENT.labels(*labels) if server and grpc_type == "server_stream" else None
        self._handled: dict[grpc.StatusCode, Any] = {}
        self.handled(grpc.StatusCode.OK)  # a method with no calls yet shows 0, not nothing

    def handled(self, code: grpc.StatusCode) -> Any:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._handled_family.labels(*self._labels, code.name)
        return child

    def done(self, code: grpc.StatusCode, started: float) -> None:
        self.handled(code).inc()
        self.seconds.observe(time.perf_counter() - started)


async def exposition(refreshers: Sequence[Callable[[], Awaitable[None]]] = ()) -> bytes:
    """The Prometheus text page (CONTENT_TYPE), after gauges read from the database are brought up to date."""
    for refresh in refreshers:
        try:
            await refresh()
        except Exception as error:  # a scrape still answers with what it has
            logger.warning("could not refresh a gauge: %s", error)
    return bytes(generate_latest(_registry()))


def _registry() -> Any:
    """This process's series; for a worker of several (SHOPMESH_WORKERS), all workers' merged."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, directory)
    registry.register(GroupProcessCollector(os.getppid()))
    return registry


class GroupProcessCollector:
    """The standard `process_*` series for a group of workers (SHOPMESH_WORKERS): one instance is
    the supervisor and its worker processes, so its CPU, memory and open files are their sums and
    its start time the supervisor's, read from /proc at each scrape. prometheus_client's own
    ProcessCollector sees one process, and its multiprocess mode leaves these out altogether."""

    _TICKS = os.sysconf("SC_CLK_TCK")
    _PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self, supervisor: int):
        self.supervisor = supervisor

    def _group(self) -> list[tuple[int, list[str]]]:
        """(pid, its /proc stat fields after the name) of the supervisor and its children."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            pid = int(stat.parent.name)
            if pid == self.supervisor or int(fields[1]) == self.supervisor:
                found.append((pid, fields))
        return found

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        group = self._group()
        if not group:
            return
        boot = next((float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime ")), 0.0)
        cpu = sum(int(f[11]) + int(f[12]) for _, f in group) / self._TICKS
        rss = sum(int(f[21]) for _, f in group) * self._PAGE
        vsize = sum(int(f[20]) for _, f in group)
        start = next((boot + int(f[19]) / self._TICKS for pid, f in group if pid == self.supervisor), 0.0)
        fds = 0
        for pid, _ in group:
            with contextlib.suppress(OSError):
                fds += len(os.listdir(f"/proc/{pid}/fd"))
        yield CounterMetricFamily("process_cpu_seconds", "User and system CPU of the instance's processes "
                                  "(the supervisor and its workers), in seconds.", value=cpu)
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory of the instance's processes.",
                                value=rss)
        yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory of the instance's processes.",
                                value=vsize)
        yield GaugeMetricFamily("process_start_time_seconds", "When the instance's supervisor started, "
                                "in seconds since the epoch.", value=start)
        yield GaugeMetricFamily("process_open_fds", "Open file descriptors of the instance's processes.", value=fds)
        yield GaugeMetricFamily("process_workers", "Worker processes the instance runs now.", value=len(group) - 1)
