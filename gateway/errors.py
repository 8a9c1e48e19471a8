"""The gateway's one error type, `Failure`, and its one table between gRPC codes and HTTP statuses.

Every error the gateway answers is a `Failure`, raised wherever it is found (a layer, a decoder,
the upstream call) and turned into a response in one place, the observe layer: as REST's JSON
`google.rpc.Status` (`reply`, below), or in Connect's or gRPC-Web's own form (gateway/rpc.py). It
carries what every form needs: the gRPC code, a message, the details as packed `Any`s (the
upstream's BadRequest, PreconditionFailure, ... or the gateway's own field violations), the HTTP
status, and, for an upstream's answer, its headers and trailers.

The table pairs gRPC codes with HTTP statuses. An upstream's code becomes its status as
grpc-gateway maps it; a status the gateway answers itself (405, 415, 413, ...) carries the code
its row names, so a client's mistake is never UNKNOWN.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2, json_format
from google.rpc import error_details_pb2, status_pb2  # noqa: F401  (registers the detail types)

from gateway.transcode import dumps
from mesh.rpc.status import status_of
from mesh.server.http import Request, Response

_C = grpc.StatusCode
# gRPC code -> HTTP status, grpc-gateway's mapping (runtime.HTTPStatusFromCode).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    _C.OK: 200, _C.CANCELLED: 499, _C.UNKNOWN: 500, _C.INVALID_ARGUMENT: 400, _C.DEADLINE_EXCEEDED: 504,
    _C.NOT_FOUND: 404, _C.ALREADY_EXISTS: 409, _C.PERMISSION_DENIED: 403, _C.UNAUTHENTICATED: 401,
    _C.RESOURCE_EXHAUSTED: 429, _C.FAILED_PRECONDITION: 400, _C.ABORTED: 409, _C.OUT_OF_RANGE: 400,
    _C.UNIMPLEMENTED: 501, _C.INTERNAL: 500, _C.UNAVAILABLE: 503, _C.DATA_LOSS: 500,
}
# HTTP status the gateway answers itself -> the gRPC code its body carries.
CODE_OF: dict[int, grpc.StatusCode] = {
    400: _C.INVALID_ARGUMENT, 401: _C.UNAUTHENTICATED, 403: _C.PERMISSION_DENIED, 404: _C.NOT_FOUND,
    405: _C.UNIMPLEMENTED,  # the method is not one this resource implements (grpc-gateway's choice)
    408: _C.DEADLINE_EXCEEDED, 409: _C.ALREADY_EXISTS, 412: _C.FAILED_PRECONDITION,
    413: _C.INVALID_ARGUMENT, 414: _C.INVALID_ARGUMENT, 415: _C.INVALID_ARGUMENT, 417: _C.INVALID_ARGUMENT,
    431: _C.INVALID_ARGUMENT,  # a request too large, of the wrong type or shape: fix it, do not retry it
    429: _C.RESOURCE_EXHAUSTED, 499: _C.CANCELLED, 500: _C.INTERNAL, 501: _C.UNIMPLEMENTED,
    503: _C.UNAVAILABLE, 504: _C.DEADLINE_EXCEEDED,
}
_REQUEST_INFO = "type.googleapis.com/google.rpc.RequestInfo"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
Metadata = list[tuple[str, Any]]


class Failure(Exception):
    """An error answer: HTTP status, gRPC code, message, details and extra headers; for an upstream's
    answer also its initial metadata and trailers, and its name (`upstream`)."""

    def __init__(self, status: int, message: str, *, code: grpc.StatusCode | None = None,
                 details: Iterable[any_pb2.Any] = (), headers: Iterable[tuple[str, str]] = (),
                 violations: Iterable[tuple[str, str]] = (), metadata: Metadata | None = None,
                 trailers: Metadata | None = None, upstream: str = ""):
        super().__init__(message)
        self.status = status
        self.code = code or CODE_OF.get(status, _C.UNKNOWN)
        self.message = message
        self.details = list(details)
        violations = list(violations)
        if violations:
            self.details.append(_packed(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=problem)
                for field, problem in violations])))
        self.headers = list(headers)
        self.metadata: Metadata = metadata or []  # the upstream's initial metadata
        self.trailers: Metadata = trailers or []  # the upstream's trailers, but its status
        self.upstream = upstream  # "" for the gateway's own refusals

    @classmethod
    def of(cls, code: grpc.StatusCode, message: str, **kwargs: Any) -> Failure:
        """A failure named by its gRPC code; the table gives the status."""
        return cls(HTTP_STATUS.get(code, 500), message, code=code, **kwargs)

    @classmethod
    def of_rpc_error(cls, error: grpc.aio.AioRpcError, upstream: str) -> Failure:
        """An upstream's status as the gateway's answer: its code, message and details kept, gRPC's
        transport text replaced by a sentence naming the upstream (`in_plain_words`)."""
        code = error.code()
        said = status_of(error.trailing_metadata())
        trailers = [(k, v) for k, v in error.trailing_metadata() or () if k != "grpc-status-details-bin"]
        # An overloaded upstream shed the call: come back shortly.
        headers = [("retry-after", "1")] if code is _C.RESOURCE_EXHAUSTED else []
        return cls.of(code, in_plain_words(code, error.details() or "", upstream),
                      details=said.details if said is not None else (), headers=headers,
                      metadata=list(error.initial_metadata() or ()), trailers=trailers, upstream=upstream)


def _packed(detail: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def reply(failure: Failure, request_id: str, trace_id: str | None = None) -> Response:
    """REST's answer: the error as a `google.rpc.Status` in proto3 JSON, naming the request (and, when
    traced, its trace); an upstream's field paths in the JSON names a client sent."""
    details = [json_format.MessageToDict(d) for d in failure.details]
    message = failure.message or failure.code.name
    if failure.upstream:
        details = [d for d in details if d.get("@type") != _REQUEST_INFO]  # the gateway names the request
        if failure.code is _C.INVALID_ARGUMENT:
            message = _json_field_names(message, details)
    info = {"@type": _REQUEST_INFO, "requestId": request_id, **({"servingData": f"trace_id={trace_id}"} if trace_id else {})}
    body = dumps({"code": failure.code.value[0], "message": message, "details": [*details, info]})
    return Response(failure.status, body, headers=list(failure.headers))


def own_error(status: int, message: str, request: Request | None = None) -> Response:
    """The HTTP server's own refusals (a malformed request, one too large or too slow) in our error form."""
    return reply(Failure(status, message), secrets.token_hex(16))


# How gRPC itself words an upstream it could not reach: for logs, not callers.
TRANSPORT_TEXT = ("failed to connect", "Socket closed", "Connection reset", "Broken pipe", "recvmsg",
                  "connections to all backends failing", "DNS resolution failed", "Endpoint read failed",
                  "GOAWAY", "keepalive watchdog", "Cancelling all calls", "Connection refused")


def in_plain_words(code: grpc.StatusCode, message: str, upstream: str) -> str:
    """What the caller reads for an upstream's status, in every protocol: gRPC's own transport text
    and our breaker's refusal become a sentence naming the upstream; what the upstream said is kept
    word for word (its own UNAVAILABLE while draining, a DEADLINE_EXCEEDED from further down)."""
    if code is _C.UNAVAILABLE and message.startswith("circuit open"):
        return f"the {upstream} service {message[message.index(':') + 2:]}"  # our breaker: say so
    if code is _C.UNAVAILABLE and (not message or message == code.name or message.startswith(TRANSPORT_TEXT)):
        return f"the {upstream} service is unavailable; try again"
    if code is _C.DEADLINE_EXCEEDED and message in ("", code.name, "Deadline Exceeded"):
        return f"the {upstream} service did not answer within the deadline"
    return message


def json_path(path: str) -> str:
    """`lines[0].unit_price` -> `lines[0].unitPrice`: a field path in the proto3 JSON names a JSON client sent."""
    return ".".join(_SNAKE.sub(lambda m: m.group(1).upper(), part) for part in path.split("."))


_SNAKE = re.compile(r"_([a-z0-9])")


def _json_field_names(message: str, details: list[dict[str, Any]]) -> str:
    """A BadRequest's field paths, and the message listing them, in JSON names (the services speak proto names)."""
    for detail in details:
        if detail.get("@type", "") == _BAD_REQUEST:
            violations = detail.get("fieldViolations", [])
            said = "; ".join(f"{v.get('field', '')}: {v.get('description', '')}" for v in violations)
            for violation in violations:
                violation["field"] = json_path(violation.get("field", ""))
            if message == said:  # the services' message is exactly this list: say it again in JSON names
                message = "; ".join(f"{v['field']}: {v.get('description', '')}" for v in violations)
    return message
