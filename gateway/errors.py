"""The one table from gRPC status to HTTP status (grpc-gateway's), and the error body.

Bodies are shaped like google.rpc.Status: `{"code", "message", "details"}`,
with the upstream's details (BadRequest, PreconditionFailure, ...) passed on.
"""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2  # noqa: F401  (registers the detail types)

from gateway.transcode import dumps

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

def body(code: grpc.StatusCode, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    return dumps({"code": code.value[0], "message": message, "details": details or []})


def from_rpc_error(error: grpc.aio.AioRpcError, upstream: str) -> tuple[int, bytes]:
    code = error.code()
    details: list[dict[str, Any]] = []
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            details = [json_format.MessageToDict(d) for d in status.details]
    message = error.details() or code.name
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        message = _json_field_names(message, details)
    if code is grpc.StatusCode.UNAVAILABLE and message.startswith("circuit open"):
        message = f"the {upstream} service {message[message.index(':') + 2:]}"  # our breaker: say so
    elif code is grpc.StatusCode.UNAVAILABLE and not details and "did not answer" not in message:
        # gRPC's own transport text ("failed to connect to all addresses; ...") is for logs.
        message = f"the {upstream} service is unavailable; try again"
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED and "did not answer" not in message:
        message = f"the {upstream} service did not answer within the deadline"
    return HTTP_STATUS.get(code, 500), body(code, message, details)


def json_path(path: str) -> str:
    """`lines[0].unit_price` -> `lines[0].unitPrice`: a field path in the proto3 JSON names a JSON client sent."""
    return ".".join(_SNAKE.sub(lambda m: m.group(1).upper(), part) for part in path.split("."))


_SNAKE = re.compile(r"_([a-z0-9])")


def _json_field_names(message: str, details: list[dict[str, Any]]) -> str:
    """A BadRequest's field paths, and the message listing them, in JSON names (the services speak proto names)."""
    for detail in details:
        if detail.get("@type", "").endswith("/google.rpc.BadRequest"):
            violations = detail.get("fieldViolations", [])
            said = "; ".join(f"{v.get('field', '')}: {v.get('description', '')}" for v in violations)
            for violation in violations:
                violation["field"] = json_path(violation.get("field", ""))
            if message == said:  # the services' message is exactly this list: say it again in JSON names
                message = "; ".join(f"{v['field']}: {v.get('description', '')}" for v in violations)
    return message


def with_request_info(body: bytes, trace_id: str) -> bytes:
    """The error body with a `google.rpc.RequestInfo` detail naming the request's trace.

    A user holding an error can look its trace up; the body stays a valid
    `google.rpc.Status` in proto3 JSON.
    """
    try:
        status = json.loads(body)
    except ValueError:
        return body
    if not isinstance(status, dict) or not isinstance(status.get("details"), list):
        return body
    status["details"].append({"@type": "type.googleapis.com/google.rpc.RequestInfo", "requestId": trace_id})
    return dumps(status)
