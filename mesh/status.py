"""The one table between shop errors and gRPC status codes, both ways.

Servers: `Guarded` wraps a servicer so that it turns a `ShopError` raised anywhere below a servicer
into its status code with the error's message and a `google.rpc.Status` in the
`grpc-status-details-bin` trailer (BadRequest / PreconditionFailure details),
and any other exception into INTERNAL without leaking its text.
Clients: `error_from_rpc` turns an upstream's status back into a `ShopError`,
so a service can let its own callers see why an upstream said no.
It also records each call's deadline so downstream calls can inherit it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import error_details_pb2, status_pb2

from mesh import errors, faults, logs, metrics, telemetry, validate
from mesh.metrics import MethodMetrics

logger = logging.getLogger(__name__)

STATUS_CODES: dict[type[errors.ShopError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.UpstreamFailed: grpc.StatusCode.INTERNAL,
}

# An upstream's status as seen by the service that called it. UNAVAILABLE and
# DEADLINE_EXCEEDED keep their meaning; codes that are the caller's mistake pass
# through; anything else is the upstream's failure, not our caller's.
_FROM_CODES: dict[grpc.StatusCode, type[errors.ShopError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.ABORTED: errors.Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
}

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("shopmesh_deadline", default=None)


def status_code(error: errors.ShopError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]  # type: ignore[index]
    return grpc.StatusCode.INTERNAL


def _details(error: errors.ShopError, code: grpc.StatusCode) -> bytes:
    status = status_pb2.Status(code=code.value[0], message=str(error))
    detail: Any = None
    if isinstance(error, errors.InvalidArgument):
        detail = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=problem)
            for field, problem in error.violations
        ])
    elif isinstance(error, errors.FailedPrecondition) and error.subject:
        detail = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=error.kind, subject=error.subject, description=str(error)
                )
            ]
        )
    if detail is not None:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status.SerializeToString()


def error_from_rpc(upstream: str, error: grpc.RpcError) -> errors.ShopError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or str(code)
    cls = _FROM_CODES.get(code)
    if cls is errors.InvalidArgument:
        field, _, problem = message.partition(": ")
        return errors.InvalidArgument(field, problem) if problem else errors.InvalidArgument("request", message)
    if cls in (errors.Unavailable, errors.DeadlineExceeded):
        if not _ours(error) and not message.startswith("circuit open"):
            # gRPC's own transport text ("connections to all backends failing; ... Connection
            # refused") is for our log, not for the caller.
            logger.info("%s: %s", upstream, message)
            message = "unavailable; try again" if cls is errors.Unavailable else "no answer within the deadline"
        return cls(f"{upstream} did not answer: {message}")  # type: ignore[misc]
    if cls is errors.FailedPrecondition:
        kind, subject = _precondition_violation(error)
        return errors.FailedPrecondition(message, subject=subject, kind=kind)
    if cls is not None:
        return cls(message)
    return errors.UpstreamFailed(f"{upstream} failed: {code.name}")


def _ours(error: grpc.RpcError) -> bool:
    """Whether a service of ours said this (its guard sends a google.rpc.Status), not gRPC's transport."""
    metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return any(key == "grpc-status-details-bin" for key, _ in metadata or ())


def _precondition_violation(error: grpc.RpcError) -> tuple[str, str]:
    for key, value in (error.trailing_metadata() or ()) if hasattr(error, "trailing_metadata") else ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for packed in status.details:
                failure = error_details_pb2.PreconditionFailure()
                if packed.Unpack(failure) and failure.violations:
                    return failure.violations[0].type, failure.violations[0].subject
    return "", ""


def forget_deadline() -> None:
    """From here on (in this context), downstream calls get their default timeout (mesh.aio.finish_anyway)."""
    _deadline.set(None)


def remaining(default: float) -> float:
    """Seconds a downstream call may take: the caller's remaining time, else `default`."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(deadline - time.monotonic(), 0.001)


async def _abort(context: grpc.aio.ServicerContext, error: Exception, method: str) -> None:
    if isinstance(error, errors.ShopError):
        code = status_code(error)
        if code is grpc.StatusCode.INTERNAL:
            logger.warning("%s failed upstream: %s", method, error)
        await context.abort(code, str(error), trailing_metadata=(("grpc-status-details-bin", _details(error, code)),))
    logger.exception("%s failed unexpectedly", method, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")


def _code_of(error: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    if isinstance(error, errors.ShopError):
        return status_code(error)
    if isinstance(error, grpc.aio.AbortError):
        code = context.code()
        return code if isinstance(code, grpc.StatusCode) else _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):  # the caller went away
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# The caller's doing: worth a line, not a warning.
_CALLER_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _enter(context: grpc.aio.ServicerContext, method: str,
           counted: MethodMetrics | None) -> tuple[float, telemetry.ServerSpan | None, str | None]:
    """What every RPC does first: count it, remember its deadline, open its span, read its request id."""
    started = time.perf_counter()
    if counted is not None:
        counted.started.inc()
    left = context.time_remaining()
    _deadline.set(None if left is None else time.monotonic() + left)
    logs.rpc_method.set(method)
    return started, telemetry.server_span(method, context.invocation_metadata()), _request_id(context)


def _request_id(context: grpc.aio.ServicerContext) -> str | None:
    """The caller's x-request-id, made the request id of every log line (and downstream call) of this RPC."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            logs.request_id.set(value)
            return str(value)
    return None


def _finished(method: str, code: grpc.StatusCode, started: float, metrics: MethodMetrics | None,
              span: telemetry.ServerSpan | None) -> None:
    """One log line per RPC (OK ones at DEBUG), its metrics and the end of its span."""
    if metrics is not None:
        metrics.done(code, started)
    level = logging.DEBUG if code is grpc.StatusCode.OK else logging.INFO if code in _CALLER_CODES else logging.WARNING
    if logger.isEnabledFor(level):
        elapsed = (time.perf_counter() - started) * 1000
        logger.log(level, "%s %s in %.1f ms", method, code.name, elapsed,
                   extra={"grpc_code": code.name, "duration_ms": round(elapsed, 3)})
    if span is not None:
        span.end(code)


class Admission:
    """Load shedding: past `limit` of the service's own calls at once, a call is refused at once
    with RESOURCE_EXHAUSTED (the gateway: 429) instead of queueing work that would time out anyway.

    Counted here rather than by gRPC's `maximum_concurrent_rpcs`, which counts every call on the
    server: health checks and reflection are never shed, so an overloaded instance stays in
    Consul and Kubernetes rather than failing its probe and moving its load onto the others.
    """

    WARN_EVERY = 10.0

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self._warned = -self.WARN_EVERY

    def enter(self) -> bool:
        if self.in_flight >= self.limit:
            now = time.monotonic()
            if now - self._warned >= self.WARN_EVERY:  # one line per burst, not one per refused call
                self._warned = now
                logger.warning("shedding load: %d calls in flight, the limit (SHOPMESH_MAX_CONCURRENT_RPCS)",
                               self.in_flight)
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def refusal(self) -> str:
        return f"server overloaded: {self.limit} calls in flight; retry shortly"


class Guarded:
    """A servicer whose every RPC method sheds load, sets the deadline, maps errors, logs and counts.

    Applied once when the server is built, so a call pays for one wrapper
    function, not for gRPC's per-call interceptor chain (measured: about 10%
    of a GetProduct; see BENCHMARKS.md). Metrics are recorded when
    `mesh.metrics` is enabled.
    """

    def __init__(self, servicer: Any, service: ServiceDescriptor, admission: Admission | None = None):
        admission = admission or Admission(1_000_000)
        for method in service.methods:
            inner = getattr(servicer, method.name, None)
            if inner is None:
                continue
            full_name = f"/{service.full_name}/{method.name}"
            if method.client_streaming:  # no contract has one; refuse at start rather than serve it unguarded
                raise TypeError(f"{full_name}: Guarded wraps unary and server-streaming methods only")
            kind = "server_stream" if method.server_streaming else "unary"
            counted = MethodMetrics(full_name, kind, server=True) if metrics.enabled() else None
            fault = faults.get(f"rpc.{method.name}")
            if fault is not None:  # test-only: the fault runs where the handler would
                if method.server_streaming:
                    raise TypeError(f"SHOPMESH_FAULTS: rpc.{method.name} is a stream; faults fit unary RPCs")
                inner = _faulty(inner, fault)
            wrap = _guard_stream if method.server_streaming else _guard_unary
            setattr(self, method.name, wrap(inner, full_name, counted, admission))


def _faulty(inner: Callable[..., Any], fault: faults.Fault) -> Callable[..., Any]:
    async def with_fault(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await fault.trigger()
        return await inner(request, context)

    return with_fault


async def _shed(context: grpc.aio.ServicerContext, admission: Admission, counted: MethodMetrics | None) -> None:
    if counted is not None:
        counted.started.inc()
        counted.done(grpc.StatusCode.RESOURCE_EXHAUSTED, time.perf_counter())
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, admission.refusal())


def _guard_unary(
    inner: Callable[..., Awaitable[Any]], method: str, counted: MethodMetrics | None, admission: Admission
) -> Callable[..., Awaitable[Any]]:
    async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not admission.enter():
            await _shed(context, admission, counted)
        started, span, request_id = _enter(context, method, counted)
        code = grpc.StatusCode.OK
        try:
            validate.contract(request)
            reply = await inner(request, context)
            if request_id is not None:
                # Echoed with the reply, not before: a call that fails before answering
                # has sent nothing yet, so the caller's gRPC may still retry it.
                await context.send_initial_metadata((("x-request-id", request_id),))
            return reply
        except BaseException as error:
            code = _code_of(error, context)
            if not isinstance(error, Exception) or isinstance(error, grpc.aio.AbortError):
                raise
            if request_id is not None:
                context.set_trailing_metadata((("x-request-id", request_id),))
            await _abort(context, error, method)
        finally:
            admission.leave()
            _finished(method, code, started, counted, span)

    return unary_unary


def _guard_stream(
    inner: Callable[..., AsyncIterator[Any]], method: str, counted: MethodMetrics | None, admission: Admission
) -> Callable[..., AsyncIterator[Any]]:
    async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if not admission.enter():  # an open stream holds its place until it ends
            await _shed(context, admission, counted)
        started, span, _ = _enter(context, method, counted)
        code = grpc.StatusCode.OK
        try:  # (a stream's handler sends its own headers; its request id goes to the logs only)
            validate.contract(request)
            async for response in inner(request, context):
                yield response
                if counted is not None and counted.sent is not None:
                    counted.sent.inc()
        except BaseException as error:
            code = _code_of(error, context)
            if not isinstance(error, Exception) or isinstance(error, grpc.aio.AbortError):
                raise
            await _abort(context, error, method)
        finally:
            admission.leave()
            _finished(method, code, started, counted, span)

    return unary_stream
