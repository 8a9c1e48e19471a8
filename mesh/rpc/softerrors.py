"""Soft errors: a caller's mistake carried as OK at the transport, between our own processes.

gRPC's outlier detection (gRFC A50, which mesh/client/channels.py configures) counts every non-OK status
against the instance that answered, and gRPC offers no setting to say otherwise; so a client
asking for unknown SKUs (NOT_FOUND, through the gateway) would eject healthy inventory instances.
Our channels therefore send `x-shopmesh-soft-errors` on unary calls, and for a failure the caller
caused (CODES) the server's guard answers OK with an empty message and the real status in the
trailers; the channel raises the very `AioRpcError` plain gRPC would have (code, message,
`grpc-status-details-bin`) before any caller, retry, breaker or metric sees the call. Failures an
instance causes (UNAVAILABLE, INTERNAL, ...) stay real statuses, and the outlier detection acts
on them alone. Every other client (grpcurl, other teams' stubs) gets plain gRPC.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from mesh.rpc.status import ABOUT_THE_REQUEST, DETAILS_KEY, code_of

ASK = ("x-shopmesh-soft-errors", "1")
STATUS, MESSAGE, DETAILS = "x-shopmesh-status", "x-shopmesh-message-bin", "x-shopmesh-status-details-bin"
# What a caller caused: an answer about the request, not about the instance's health.
CODES = ABOUT_THE_REQUEST


def asked(metadata: Iterable[tuple[str, Any]] | None) -> bool:
    return any(key == ASK[0] for key, _ in metadata or ())


def trailers(code: grpc.StatusCode, message: str, details: bytes) -> list[tuple[str, str | bytes]]:
    return [(STATUS, str(code.value[0])), (MESSAGE, message.encode()), (DETAILS, details)]


def error_in(trailing: Iterable[tuple[str, Any]] | None) -> grpc.aio.AioRpcError | None:
    """The error a soft answer carries, as plain gRPC would have raised it; None for a real OK."""
    found = dict(trailing or ())
    status = found.get(STATUS)
    if status is None:
        return None
    code = code_of(int(status))
    rest = [(k, v) for k, v in found.items() if k not in (STATUS, MESSAGE, DETAILS)]
    metadata = grpc.aio.Metadata((DETAILS_KEY, found.get(DETAILS, b"")), *rest)
    message = found.get(MESSAGE, b"")
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), metadata,
                                details=message.decode() if isinstance(message, bytes) else str(message))
