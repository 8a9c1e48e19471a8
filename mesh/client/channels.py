"""Long-lived client channels, one per upstream service, shared by every call.

A channel spreads calls over every instance discovery lists (gRPC's
round_robin) and retries a call that failed with UNAVAILABLE on another
instance when that is safe: reads, and writes that carry an idempotency key
(the RETRIED_METHODS list below; AdjustStock and CreateProduct are left out). When
the instance set changes, a new channel replaces the old one, which is closed
once its in-flight calls had time to end. Downstream deadlines come from
`mesh.kernel.deadline.remaining`, so a call never outlives the call that caused it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from mesh.client.breaker import Breaker
from mesh.client.discovery import Discovery
from mesh.kernel.errors import Unavailable
from mesh.observe import logs, metrics, telemetry
from mesh.observe.metrics import MethodMetrics
from mesh.rpc import softerrors, status, tls
from mesh.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RECONNECT_BACKOFF_MS = 5_000
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
    # DNS discovery: a connection that ends (a server's maximum age, a pod gone) has the name
    # resolved again at once, at most this often, so a new instance is called within seconds.
    ("grpc.dns_min_time_between_resolutions_ms", 1_000),
    # An instance that died and came back on its address is called again within seconds:
    # gRPC's default backoff grows to 120 s, and a restarted instance sat idle that long.
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    # Each channel its own connections: a new set of instances (discovery changed) starts
    # fresh, not from the old channel's subchannel still waiting out a dead address's backoff.
    ("grpc.use_local_subchannel_pool", 1),
)
RETRIED_METHODS = {
    "shop.inventory.v1.InventoryService": ["GetProduct", "ListProducts", "ReserveStock", "CommitReservation",
                                           "ReleaseReservation"],
    "shop.order.v1.OrderService": ["CreateOrder", "GetOrder", "ListOrders", "CancelOrder"],
    "shop.notification.v1.NotificationService": ["SendNotification", "BatchSendNotifications", "ListNotifications"],
    "grpc.health.v1.Health": ["Check"],
}
SERVICE_CONFIG = json.dumps({
    # gRPC's outlier detection (gRFC A50) around round_robin: an instance failing most of its
    # calls is ejected for a while (at most half of them), and put back to be tried again. It
    # counts every non-OK status, so our calls take the caller's mistakes soft (mesh/rpc/softerrors.py):
    # only what an instance caused (UNAVAILABLE, INTERNAL, ...) counts against it.
    "loadBalancingConfig": [{"outlier_detection_experimental": {
        "interval": "2s",
        "baseEjectionTime": "10s",
        "maxEjectionTime": "120s",
        "maxEjectionPercent": 50,
        "failurePercentageEjection": {"threshold": 85, "enforcementPercentage": 100, "minimumHosts": 2,
                                      "requestVolume": 20},
        "childPolicy": [{"round_robin": {}}],
    }}],
    "methodConfig": [{
        "name": [{"service": service, "method": method} for service, methods in RETRIED_METHODS.items() for method in methods],
        "retryPolicy": {
            "maxAttempts": 3,
            "initialBackoff": "0.05s",
            "maxBackoff": "0.5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": sorted(code.name for code in status.RETRYABLE),
        },
    }],
    # A retry budget: retries stop when more than half the recent calls failed.
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
})
OLD_CHANNEL_GRACE = 30.0


class _Call:
    """A unary call whose outcome is counted and traced when it is awaited; all else is the call's own."""

    __slots__ = ("_call", "_metrics", "_span", "_breaker", "_started", "_done", "_timeout")

    def __init__(self, call: Any, method_metrics: MethodMetrics | None, span: telemetry.ClientSpan | None,
                 breaker: Breaker, timeout: float | None = None):
        self._call, self._metrics, self._span, self._breaker = call, method_metrics, span, breaker
        self._timeout = timeout
        self._started, self._done = time.perf_counter(), False
        if method_metrics is not None:
            method_metrics.started.inc()

    def __await__(self) -> Any:
        try:
            response = yield from self._call.__await__()
            # A soft error's answer is empty (mesh/rpc/softerrors.py): look why. (Bytes when the caller
            # passes messages through unparsed, as the gateway's Connect and gRPC-Web do.)
            if not (response if isinstance(response, bytes) else response.ByteSize()):
                soft = softerrors.error_in((yield from self._call.trailing_metadata().__await__()))
                if soft is not None:  # a caller's mistake, carried as OK past the outlier detection
                    raise soft
        except grpc.aio.AioRpcError as error:
            self._finish(error.code())
            raise
        except asyncio.CancelledError:
            self._finish(grpc.StatusCode.CANCELLED)
            raise
        self._finish(grpc.StatusCode.OK)
        return response

    def _finish(self, code: grpc.StatusCode) -> None:
        if self._done:
            return
        self._done = True
        self._breaker.record(code, self._timeout)
        if self._metrics is not None:
            self._metrics.done(code, self._started)
        if self._span is not None:
            self._span.end(code)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class _Stream(_Call):
    """A server-streaming call, finished when its stream ends, fails or is cancelled."""

    __slots__ = ()

    def __aiter__(self) -> Any:
        return self._read()

    async def _read(self) -> Any:
        try:
            async for item in self._call:
                yield item
        except grpc.aio.AioRpcError as error:
            self._finish(error.code())
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self._finish(grpc.StatusCode.CANCELLED)
            raise
        self._finish(grpc.StatusCode.OK)

    def cancel(self) -> bool:
        self._finish(grpc.StatusCode.CANCELLED)
        return bool(self._call.cancel())


class _Refused:
    """The call a open breaker gives instead of sending one: it fails at once with UNAVAILABLE."""

    def __init__(self, method: str, retry_in: float):
        details = f"circuit open: kept failing, so calls are not sent; next try in {retry_in:.1f}s"
        self._error = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                           details=details)

    def __await__(self) -> Any:
        raise self._error
        yield  # pragma: no cover - makes this a generator, as __await__ must be

    async def initial_metadata(self) -> Any:
        raise self._error

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        raise self._error

    def cancel(self) -> bool:
        return False


class _Method:
    __slots__ = ("_inner", "_name", "_metrics", "_wrap", "_breaker")

    def __init__(self, inner: Any, name: str, kind: str, wrap: type[_Call], breaker: Breaker):
        self._inner, self._name, self._wrap, self._breaker = inner, name, wrap, breaker
        self._metrics = MethodMetrics(name, kind, server=False) if metrics.enabled() else None

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        if not self._breaker.allow():
            if self._metrics is not None:
                self._metrics.started.inc()
                self._metrics.done(grpc.StatusCode.UNAVAILABLE, time.perf_counter())
            return _Refused(self._name, self._breaker.retry_in())
        request_id = logs.request_id.get()
        if request_id is not None:  # the request this call serves, named in every process's logs
            kwargs["metadata"] = (*tuple(kwargs.get("metadata") or ()), ("x-request-id", request_id))
        if self._wrap is _Call:  # unary: the caller's mistakes come soft (mesh/rpc/softerrors.py)
            kwargs["metadata"] = (*tuple(kwargs.get("metadata") or ()), softerrors.ASK)
        span = telemetry.client_span(self._name)
        if span is not None:
            kwargs["metadata"] = span.metadata(kwargs.get("metadata"))
        return self._wrap(self._inner(request, **kwargs), self._metrics, span, self._breaker, kwargs.get("timeout"))


class InstrumentedChannel:
    """A grpc.aio channel whose calls carry the request's x-request-id, count as grpc_client_*
    (metrics on) and carry a client span (tracing on).

    Cheaper than grpc.aio client interceptors, which run every call through an
    extra task: the call is the channel's own, wrapped to see its outcome.
    """

    def __init__(self, channel: grpc.aio.Channel, breaker: Breaker):
        self._channel = channel
        self._breaker = breaker

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Method(self._channel.unary_unary(method, *args, **kwargs), method, "unary", _Call, self._breaker)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Method(self._channel.unary_stream(method, *args, **kwargs), method, "server_stream", _Stream,
                       self._breaker)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def target(addresses: Sequence[str]) -> str:
    if len(addresses) == 1 and "://" in addresses[0]:
        return addresses[0]  # a target gRPC resolves itself (mesh.client.discovery.dns_target)
    if len(addresses) == 1 and not addresses[0][0].isdigit() and not addresses[0].startswith("["):
        return addresses[0]  # a host name: let gRPC's DNS resolver find every address behind it
    scheme = "ipv6" if all(a.startswith("[") for a in addresses) else "ipv4"
    return f"{scheme}:" + ",".join(addresses)


class Upstreams:
    """The current channel of each upstream, and what callers built on it."""

    def __init__(self, discovery: Discovery, settings: Settings | None = None):
        self._discovery = discovery
        self._settings = settings or Settings(service="gateway")  # the defaults, for tests
        # mTLS when the settings name certificates (mesh/rpc/tls.py), else plaintext.
        self._credentials = tls.channel_credentials(self._settings) if self._settings.tls else None
        self._breakers: dict[str, Breaker] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._bound: dict[tuple[str, Any], Any] = {}
        self._retired: set[asyncio.Task[None]] = set()
        discovery.subscribe(self._changed)

    async def watch(self, *services: str) -> None:
        for service in services:
            await self._discovery.watch(service)

    def channel(self, service: str) -> grpc.aio.Channel:
        channel = self._channels.get(service)
        if channel is None:
            addresses = list(self._discovery.addresses(service))
            if not addresses:
                raise Unavailable(f"{service} did not answer: no healthy instance is known")
            options = [*CHANNEL_OPTIONS, ("grpc.service_config", SERVICE_CONFIG), *tls.channel_options(self._settings)]
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(target(addresses), self._credentials, options=options)
            else:
                channel = grpc.aio.insecure_channel(target(addresses), options=options)
            channel = InstrumentedChannel(channel, self._breaker(service))  # type: ignore[assignment]
            self._channels[service] = channel
            logger.info("channel to %s at %s", service, ", ".join(addresses))
        return channel

    def _breaker(self, service: str) -> Breaker:
        found = self._breakers.get(service)
        if found is None:
            found = self._breakers[service] = Breaker(self._settings.breaker_failures, self._settings.breaker_cooldown,
                                                      min_deadline=self._settings.breaker_min_deadline,
                                                      changed=metrics.breaker_gauge(service))
        return found

    def bound(self, service: str, key: Any, make: Callable[[grpc.aio.Channel], T]) -> T:
        """`make(channel)` (a stub, a multicallable) for the current channel, built once per channel."""
        found = self._bound.get((service, key))
        if found is None:
            found = self._bound[(service, key)] = make(self.channel(service))
        return found  # type: ignore[no-any-return]

    def _changed(self, service: str, addresses: Sequence[str]) -> None:
        old = self._channels.pop(service, None)
        self._breakers.pop(service, None)  # a new set of instances gets a fresh chance
        for key in [k for k in self._bound if k[0] == service]:
            del self._bound[key]
        if old is not None:
            task = asyncio.get_running_loop().create_task(self._retire(old))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    @staticmethod
    async def _retire(channel: grpc.aio.Channel) -> None:
        await asyncio.sleep(OLD_CHANNEL_GRACE)
        await channel.close()

    async def close(self) -> None:
        for task in list(self._retired):
            task.cancel()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._bound.clear()
