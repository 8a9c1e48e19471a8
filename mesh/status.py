"""The one table between shop errors and gRPC status codes, both ways, and deadline inheritance.

Servers (`mesh/guard.py`): a `ShopError` raised anywhere below a servicer becomes its status code
with the error's message and a `google.rpc.Status` in the `grpc-status-details-bin` trailer
(BadRequest / PreconditionFailure details, `details`); anything else INTERNAL without its text.
Clients: `error_from_rpc` turns an upstream's status back into a `ShopError`, so a service can
let its own callers see why an upstream said no. Each call's deadline is recorded
(`set_deadline`) so downstream calls inherit what is left of it (`remaining`).
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from mesh import errors

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


def details(error: errors.ShopError, code: grpc.StatusCode) -> bytes:
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


def set_deadline(left: float | None) -> None:
    """This call (and what it calls) has `left` seconds, or no deadline."""
    _deadline.set(None if left is None else time.monotonic() + left)


def forget_deadline() -> None:
    """From here on (in this context), downstream calls get their default timeout (mesh.aio.finish_anyway)."""
    _deadline.set(None)


def remaining(default: float) -> float:
    """Seconds a downstream call may take: the caller's remaining time, else `default`."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(deadline - time.monotonic(), 0.001)


BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
# The caller's doing: worth a line, not a warning.
CALLER_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})
