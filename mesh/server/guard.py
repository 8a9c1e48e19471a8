"""What every RPC a service serves passes through, composed of small named hooks.

`Guarded` wraps each method of a servicer once, when the server is built, in one function (no
grpc.aio interceptor: those cost about 10% of a GetProduct, BENCHMARKS.md). That function runs:

    hooks' enter, in order -> contract validation -> the handler -> the answer -> hooks' leave, reversed

The hooks, each a small class with a name (only those switched on are in the list):

- `Counted`  grpc_server_* metrics (`mesh.observe.metrics` on)
- `Shedding` load shedding past SHOPMESH_MAX_CONCURRENT_RPCS (RESOURCE_EXHAUSTED at once)
- `Deadline` the call's deadline, which downstream calls inherit (`mesh.kernel.deadline.remaining`)
- `Named`    the caller's x-request-id in every log line and downstream call
- `Traced`   a server span (tracing on)
- `Logged`   one log line per RPC: failures the caller caused at INFO, server-side ones at WARNING
             (at most one per method and code each 10 s, counting the rest)

The answer is the one error table (`mesh.rpc.status`): a ShopError becomes its status with a
google.rpc.Status in the trailers, anything else INTERNAL without its text.

Soft errors (`mesh/rpc/softerrors.py`): to our own channels, a failure the caller caused is answered as
OK with its status in the trailers, so gRPC's outlier detection counts only what an instance caused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from mesh.kernel import errors, validate
from mesh.kernel.deadline import set_deadline
from mesh.kernel.faults import Fault, FaultPoints
from mesh.observe import logs, metrics, telemetry
from mesh.observe.metrics import MethodMetrics
from mesh.rpc import softerrors
from mesh.rpc.status import CALLER_FAULT, code_of, details, status_code

logger = logging.getLogger(__name__)



class Call:
    """One RPC as the hooks see it."""

    __slots__ = ("method", "context", "started", "span", "request_id")

    def __init__(self, method: str, context: grpc.aio.ServicerContext):
        self.method, self.context = method, context
        self.started = time.perf_counter()
        self.span: telemetry.ServerSpan | None = None
        self.request_id: str | None = None


class Refused(Exception):
    """A hook says no before the handler runs: the call ends with this code and message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class Hook:
    name = "hook"

    def enter(self, call: Call) -> None:
        """Before the handler; raise Refused to end the call (the hooks before it then leave)."""

    def leave(self, call: Call, code: grpc.StatusCode) -> None:
        """After the call, with its status: for every hook whose enter ran to its end."""


class Counted(Hook):
    name = "metrics"

    def __init__(self, method: str, kind: str):
        self.metrics = MethodMetrics(method, kind, server=True)

    def enter(self, call: Call) -> None:
        self.metrics.started.inc()

    def leave(self, call: Call, code: grpc.StatusCode) -> None:
        self.metrics.done(code, call.started)


class Admission:
    """Load shedding: past `limit` of the service's own calls at once, a call is refused at once
    with RESOURCE_EXHAUSTED (the gateway: 429) instead of queueing work that would time out anyway.

    Counted here rather than by gRPC's `maximum_concurrent_rpcs`, which counts every call on the
    server: health checks and reflection are never shed, so an overloaded instance stays in
    Consul and Kubernetes rather than failing its probe and moving its load onto the others.
    """

    WARN_EVERY = 10.0

    def __init__(self, limit: int, what: str = "calls", setting: str = "SHOPMESH_MAX_CONCURRENT_RPCS"):
        self.limit = limit
        self.what, self.setting = what, setting
        self.in_flight = 0
        self._warned = -self.WARN_EVERY
        self._gauge = metrics.in_flight_gauge(what, limit) if metrics.enabled() else None

    def enter(self) -> bool:
        if self.in_flight >= self.limit:
            now = time.monotonic()
            if now - self._warned >= self.WARN_EVERY:  # one line per burst, not one per refused call
                self._warned = now
                logger.warning("shedding load: %d %s in flight, the limit (%s)", self.in_flight, self.what,
                               self.setting)
            return False
        self.in_flight += 1
        if self._gauge is not None:
            self._gauge.inc()
        return True

    def leave(self) -> None:
        self.in_flight -= 1
        if self._gauge is not None:
            self._gauge.dec()

    def refusal(self) -> str:
        return f"server overloaded: {self.limit} {self.what} at once; retry shortly"


class Shedding(Hook):
    name = "shedding"

    def __init__(self, admission: Admission):
        self.admission = admission

    def enter(self, call: Call) -> None:
        if not self.admission.enter():  # (an open stream holds its place until it ends)
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, self.admission.refusal())

    def leave(self, call: Call, code: grpc.StatusCode) -> None:
        self.admission.leave()


class Deadline(Hook):
    name = "deadline"

    def enter(self, call: Call) -> None:
        set_deadline(call.context.time_remaining())


class Named(Hook):
    name = "request id"

    def enter(self, call: Call) -> None:
        logs.rpc_method.set(call.method)
        for key, value in call.context.invocation_metadata() or ():
            if key == "x-request-id":
                logs.request_id.set(value)
                call.request_id = str(value)
                return


class Traced(Hook):
    name = "tracing"

    def enter(self, call: Call) -> None:
        call.span = telemetry.server_span(call.method, call.context.invocation_metadata())

    def leave(self, call: Call, code: grpc.StatusCode) -> None:
        if call.span is not None:
            call.span.end(code)


class Logged(Hook):
    """A line per call: DEBUG when OK, INFO for the caller's faults, WARNING for the server's. The
    WARNINGs of one method and code come at most one per WARN_EVERY seconds, the next one saying
    how many it stood for (an outage fails every call; the log should say so once, not bury it)."""

    name = "logging"
    WARN_EVERY = 10.0

    def __init__(self) -> None:
        self._warned: dict[grpc.StatusCode, tuple[float, int]] = {}  # code -> (last line, calls since)

    def leave(self, call: Call, code: grpc.StatusCode) -> None:
        level = logging.DEBUG if code is grpc.StatusCode.OK else logging.INFO if code in CALLER_FAULT else logging.WARNING
        if not logger.isEnabledFor(level):
            return
        elapsed = (time.perf_counter() - call.started) * 1000
        more = ""
        if level == logging.WARNING:
            now = time.monotonic()
            last, since = self._warned.get(code, (-self.WARN_EVERY, 0))
            if now - last < self.WARN_EVERY:
                self._warned[code] = (last, since + 1)
                return
            self._warned[code] = (now, 0)
            more = f" (and {since} more like it since the last line)" if since else ""
        logger.log(level, "%s %s in %.1f ms%s", call.method, code.name, elapsed, more,
                   extra={"grpc_code": code.name, "duration_ms": round(elapsed, 3)})


def hooks_for(method: str, kind: str, admission: Admission) -> list[Hook]:
    """The hooks one method's calls pass, in order; what is switched off costs nothing."""
    found: list[Hook] = [Counted(method, kind)] if metrics.enabled() else []
    found += [Shedding(admission), Deadline(), Named()]
    if telemetry.enabled():
        found.append(Traced())
    found.append(Logged())
    return found


def _leave(hooks: list[Hook], call: Call, code: grpc.StatusCode) -> None:
    for hook in reversed(hooks):
        hook.leave(call, code)


def _code_of(error: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    if isinstance(error, Refused):
        return error.code
    if isinstance(error, errors.ShopError):
        return status_code(error)
    if isinstance(error, grpc.aio.AbortError):
        return code_of(context.code())
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):  # the caller went away
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


async def _abort(context: grpc.aio.ServicerContext, error: Exception, method: str, code: grpc.StatusCode) -> None:
    if isinstance(error, Refused):
        await context.abort(error.code, str(error))
    if isinstance(error, errors.ShopError):
        if code is grpc.StatusCode.INTERNAL:
            logger.warning("%s failed upstream: %s", method, error)
        await context.abort(code, str(error), trailing_metadata=(("grpc-status-details-bin", details(error, code)),))
    logger.exception("%s failed unexpectedly", method, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")


class Guarded:
    """A servicer whose every unary and server-streaming method passes the hooks and the answer."""

    def __init__(self, servicer: Any, service: ServiceDescriptor, admission: Admission | None = None,
                 streams: Admission | None = None, faults: FaultPoints | None = None):
        """`admission` counts unary calls; `streams` the server-streaming ones, which stay open for
        as long as a page follows them and so must not take the places short calls need."""
        admission = admission or Admission(1_000_000)
        streams = streams or Admission(1_000_000, "streams", "SHOPMESH_MAX_OPEN_STREAMS")
        for method in service.methods:
            inner = getattr(servicer, method.name, None)
            if inner is None:
                continue
            full_name = f"/{service.full_name}/{method.name}"
            if method.client_streaming:  # no contract has one; refuse at start rather than serve it unguarded
                raise TypeError(f"{full_name}: Guarded wraps unary and server-streaming methods only")
            fault = faults.get(f"rpc.{method.name}") if faults else None
            if fault is not None:  # test-only: the fault runs where the handler would
                if method.server_streaming:
                    raise TypeError(f"SHOPMESH_FAULTS: rpc.{method.name} is a stream; faults fit unary RPCs")
                inner = _faulty(inner, fault)
            kind = "server_stream" if method.server_streaming else "unary"
            hooks = hooks_for(full_name, kind, streams if method.server_streaming else admission)
            if method.server_streaming:
                sent = next((h.metrics.sent for h in hooks if isinstance(h, Counted)), None)
                setattr(self, method.name, _guard_stream(inner, full_name, hooks, sent))
            else:
                empty = message_factory.GetMessageClass(method.output_type)
                setattr(self, method.name, _guard_unary(inner, full_name, hooks, empty))


def _faulty(inner: Callable[..., Any], fault: Fault) -> Callable[..., Any]:
    async def with_fault(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await fault.trigger()
        return await inner(request, context)

    return with_fault


def _guard_unary(inner: Callable[..., Awaitable[Any]], method: str, hooks: list[Hook],
                 empty: type) -> Callable[..., Awaitable[Any]]:
    async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = Call(method, context)
        code = grpc.StatusCode.OK
        entered = 0
        try:
            for hook in hooks:
                hook.enter(call)
                entered += 1
            validate.contract(request)
            reply = await inner(request, context)
            if call.request_id is not None:
                # Echoed with the reply, not before: a call that fails before answering
                # has sent nothing yet, so the caller's gRPC may still retry it.
                await context.send_initial_metadata((("x-request-id", call.request_id),))
            return reply
        except BaseException as error:
            code = _code_of(error, context)
            if not isinstance(error, Exception) or isinstance(error, grpc.aio.AbortError):
                raise
            if isinstance(error, errors.ShopError) and code in softerrors.CODES \
                    and softerrors.asked(context.invocation_metadata()):
                trailers = softerrors.trailers(code, str(error), details(error, code))
                if call.request_id is not None:
                    trailers.append(("x-request-id", call.request_id))
                context.set_trailing_metadata(tuple(trailers))
                return empty()
            if call.request_id is not None:
                context.set_trailing_metadata((("x-request-id", call.request_id),))
            await _abort(context, error, method, code)
        finally:
            _leave(hooks[:entered], call, code)

    return unary_unary


def _guard_stream(inner: Callable[..., AsyncIterator[Any]], method: str, hooks: list[Hook],
                  sent: Any) -> Callable[..., AsyncIterator[Any]]:
    async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = Call(method, context)
        code = grpc.StatusCode.OK
        entered = 0
        try:  # (a stream's handler sends its own headers; its request id goes to the logs only)
            for hook in hooks:
                hook.enter(call)
                entered += 1
            validate.contract(request)
            async for response in inner(request, context):
                yield response
                if sent is not None:
                    sent.inc()
        except BaseException as error:
            code = _code_of(error, context)
            if not isinstance(error, Exception) or isinstance(error, grpc.aio.AbortError):
                raise
            await _abort(context, error, method, code)
        finally:
            _leave(hooks[:entered], call, code)

    return unary_stream
