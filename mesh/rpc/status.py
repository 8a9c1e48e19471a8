"""The one status model of the mesh: what each gRPC code means, and shop errors <-> status, both ways.

The code sets are defined here once and everything else is derived from them: the guard's log
level and OpenTelemetry's span status (whose fault), soft errors (an answer about the request),
the circuit breaker (the upstream did not answer), and retries (safe to send again).

Servers (`mesh/server/guard.py`): a `ShopError` raised anywhere below a servicer becomes its status code
with the error's message and a `google.rpc.Status` in the `grpc-status-details-bin` trailer
(BadRequest / PreconditionFailure details, `details`); anything else INTERNAL without its text.
Clients: `error_from_rpc` turns an upstream's status back into a `ShopError`, so a service can
let its own callers see why an upstream said no. `status_of` is the one reader of
`grpc-status-details-bin`, for the services and the gateway alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from mesh.kernel import errors

logger = logging.getLogger(__name__)

_C = grpc.StatusCode
BY_NUMBER = {code.value[0]: code for code in _C}
DETAILS_KEY = "grpc-status-details-bin"

# --- the code sets, once ---
# The caller's doing: a mistake in the request, a rule of the shop, or the caller's own haste or load.
CALLER_FAULT = frozenset({
    _C.INVALID_ARGUMENT, _C.NOT_FOUND, _C.ALREADY_EXISTS, _C.FAILED_PRECONDITION, _C.OUT_OF_RANGE,
    _C.CANCELLED, _C.UNAUTHENTICATED, _C.PERMISSION_DENIED, _C.ABORTED, _C.RESOURCE_EXHAUSTED,
})
# The server's doing: every other failure (OpenTelemetry's gRPC conventions mark exactly these as errors).
SERVER_FAULT = frozenset(_C) - CALLER_FAULT - {_C.OK}
# An answer about the request itself, not about the instance or the caller's patience: these say
# nothing of an instance's health (soft errors carry them as OK between our processes).
ABOUT_THE_REQUEST = CALLER_FAULT - {_C.CANCELLED, _C.RESOURCE_EXHAUSTED}
# The upstream did not answer: what opens a circuit breaker (an answer of any other code is one).
NOT_ANSWERED = frozenset({_C.UNAVAILABLE, _C.DEADLINE_EXCEEDED})
# Safe to send again as it was (gRPC retries these for the methods that may be retried).
RETRYABLE = frozenset({_C.UNAVAILABLE})

STATUS_CODES: dict[type[errors.ShopError], grpc.StatusCode] = {
    errors.InvalidArgument: _C.INVALID_ARGUMENT,
    errors.NotFound: _C.NOT_FOUND,
    errors.PermissionDenied: _C.PERMISSION_DENIED,
    errors.AlreadyExists: _C.ALREADY_EXISTS,
    errors.FailedPrecondition: _C.FAILED_PRECONDITION,
    errors.Aborted: _C.ABORTED,
    errors.ResourceExhausted: _C.RESOURCE_EXHAUSTED,
    errors.Unavailable: _C.UNAVAILABLE,
    errors.DeadlineExceeded: _C.DEADLINE_EXCEEDED,
    errors.UpstreamFailed: _C.INTERNAL,
}
# An upstream's status as seen by the service that called it: the same table read backwards.
# UNAVAILABLE and DEADLINE_EXCEEDED keep their meaning; codes that are the caller's mistake pass
# through; anything else (INTERNAL included) is the upstream's failure, not our caller's.
_FROM_CODES: dict[grpc.StatusCode, type[errors.ShopError]] = {
    code: cls for cls, code in STATUS_CODES.items() if cls is not errors.UpstreamFailed
}


def code_of(value: Any) -> grpc.StatusCode:
    """A status code from gRPC's enum or its number (servicer contexts hold either)."""
    return value if isinstance(value, grpc.StatusCode) else BY_NUMBER.get(value, _C.UNKNOWN)


def status_of(metadata: Iterable[tuple[str, Any]] | None) -> status_pb2.Status | None:
    """The `google.rpc.Status` an answer's trailers carry, if any: the one reader of grpc-status-details-bin."""
    for key, value in metadata or ():
        if key == DETAILS_KEY:
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:  # a peer's garbage is no status, and not our crash
                return None
    return None


def status_code(error: errors.ShopError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]  # type: ignore[index]
    return _C.INTERNAL


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
    code = error.code() if hasattr(error, "code") else _C.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or str(code)
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    said = status_of(trailers)
    cls = _FROM_CODES.get(code)
    if cls is errors.InvalidArgument:
        field, _, problem = message.partition(": ")
        return errors.InvalidArgument(field, problem) if problem else errors.InvalidArgument("request", message)
    if cls in (errors.Unavailable, errors.DeadlineExceeded):
        # Whether a service of ours said this (its guard sends a google.rpc.Status), not gRPC's transport.
        if said is None and not message.startswith("circuit open"):
            # gRPC's own transport text ("connections to all backends failing; ... Connection
            # refused") is for our log, not for the caller.
            logger.info("%s: %s", upstream, message)
            message = "unavailable; try again" if cls is errors.Unavailable else "no answer within the deadline"
        return cls(f"{upstream} did not answer: {message}")  # type: ignore[misc]
    if cls is errors.FailedPrecondition:
        kind, subject = _precondition_violation(said)
        return errors.FailedPrecondition(message, subject=subject, kind=kind)
    if cls is not None:
        return cls(message)
    return errors.UpstreamFailed(f"{upstream} failed: {code.name}")


def _precondition_violation(said: status_pb2.Status | None) -> tuple[str, str]:
    for packed in said.details if said is not None else ():
        failure = error_details_pb2.PreconditionFailure()
        if packed.Unpack(failure) and failure.violations:
            return failure.violations[0].type, failure.violations[0].subject
    return "", ""
