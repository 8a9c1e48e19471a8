"""The one way a request of any protocol becomes a gRPC call to an upstream.

REST (gateway/rest.py), Connect and gRPC-Web (gateway/rpc.py) each read a request message and its
deadline in their own framing, then hand both here. This module alone decides, for all of them:

- the channel: one bound multicallable per method (bytes in, bytes out), on the upstream's
  current channel;
- identity: a signed-in user's `user_id` is filled in, another user's refused, and the caller is
  named to the service by the gateway alone (mesh/rpc/identity.py);
- metadata: one rule for which request headers travel as gRPC metadata (`metadata_of`);
- the deadline: the caller's, capped, passed on DEADLINE_OFFSET sooner; a unary call without one
  gets the default, a stream none; one already spent is DEADLINE_EXCEEDED at once;
- the start of a stream, a trailers-only answer, and the stream's cancellation when the client
  leaves (`Stream.cancel`, which every protocol hands the HTTP server as the response's on_close);
- an upstream's failure, as the gateway's one error type (`Failure.of_rpc_error`).
"""

from __future__ import annotations

import asyncio
import binascii
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from gateway.auth import Need, Principal
from gateway.errors import Failure
from gateway.wire import MESH_OWN, unb64
from mesh.client.channels import Upstreams
from mesh.kernel.errors import Unavailable
from mesh.observe import telemetry
from mesh.rpc import identity
from mesh.server.http import Request
from mesh.settings import Settings

_C = grpc.StatusCode
MIN_TIMEOUT = 0.001  # seconds: the shortest deadline gRPC can keep (it keeps time in milliseconds)
DEADLINE_OFFSET = 0.02  # seconds: see `Upstream.timeout`
_GRPC_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_TIMEOUT_MS = re.compile(r"^\d{1,10}$")
# Request headers that are HTTP's, a protocol's, the browser's or the hop's, or that the gateway
# itself consumes: never metadata. (x-request-id: the channel sends the request's id itself, once.)
_NOT_METADATA = frozenset({
    "accept", "accept-encoding", "accept-language", "connection", "content-encoding", "content-length",
    "content-type", "cookie", "host", "keep-alive", "origin", "referer", "te", "transfer-encoding", "upgrade",
    "user-agent", "x-user-agent", "x-grpc-web", "x-api-key", "x-requested-with", "grpc-timeout", "grpc-encoding",
    "grpc-accept-encoding", "idempotency-key", "last-event-id", "priority", "dnt", "pragma", "cache-control",
    "x-request-id", identity.USER, identity.ADMIN,
})
_NOT_METADATA_PREFIXES = ("connect-", "sec-", "access-control-", "x-forwarded-", "grpc-", MESH_OWN)
_METADATA_KEY = re.compile(r"^[0-9a-z_.-]+$")
_TRACE_CONTEXT = frozenset({"traceparent", "tracestate"})


@dataclass(frozen=True)
class Method:
    """One RPC as the gateway calls it: its path, messages and the upstream that serves it."""

    descriptor: MethodDescriptor
    upstream: str
    request_class: type[Message]
    response_class: type[Message]
    path: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}")

    @classmethod
    def of(cls, descriptor: MethodDescriptor, upstream: str) -> Method:
        return cls(descriptor, upstream, message_factory.GetMessageClass(descriptor.input_type),
                   message_factory.GetMessageClass(descriptor.output_type))

    @property
    def streaming(self) -> bool:
        return self.descriptor.server_streaming

    def bind(self, channel: grpc.aio.Channel) -> Any:
        """The method on `channel`, bytes in and bytes out: each protocol reads and writes the messages
        in its own codec (built once per channel: Upstreams.bound)."""
        if self.streaming:
            return channel.unary_stream(self.path)
        return channel.unary_unary(self.path)

    @property
    def etag_out(self) -> bool:
        """Its reply is a resource with an AIP-154 etag (gateway/conditional.py)."""
        return "etag" in self.response_class.DESCRIPTOR.fields_by_name

    @property
    def connect_get(self) -> bool:
        """Served over a Connect GET too: a unary method the contracts mark NO_SIDE_EFFECTS."""
        level = self.descriptor.GetOptions().idempotency_level
        return not self.streaming and level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


def methods_of(services: Iterable[ServiceDescriptor], upstream_of: Callable[[ServiceDescriptor], str]) -> list[Method]:
    """Every unary and server-streaming RPC of the services (client and bidi streams need HTTP/2)."""
    return [Method.of(method, upstream_of(service)) for service in services for method in service.methods
            if not method.client_streaming]


@dataclass(frozen=True)
class Deadline:
    """The deadline a caller asked for, in seconds, and how they said it (for an error naming it)."""

    seconds: float
    said: str


def grpc_timeout(request: Request, longest: float) -> Deadline | None:
    """A `grpc-timeout` header (`500m`, `2S`), at most `longest` seconds; a 400 if it is not one."""
    wanted = request.headers.get("grpc-timeout")
    if not wanted:
        return None
    found = _GRPC_TIMEOUT.match(wanted)
    if found is None:
        raise Failure(400, f"grpc-timeout header {wanted!r} is not a gRPC timeout such as 500m or 2S",
                      violations=[("grpc-timeout", "must be 1 to 8 digits and a unit: H, M, S, m, u or n")])
    return Deadline(min(int(found.group(1)) * _UNITS[found.group(2)], longest), f"grpc-timeout {wanted}")


def connect_timeout(request: Request, longest: float) -> Deadline | None:
    """A `connect-timeout-ms` header, at most `longest` seconds; a 400 if it is not 1 to 10 digits."""
    wanted = request.headers.get("connect-timeout-ms")
    if wanted is None:
        return None
    if not _TIMEOUT_MS.match(wanted.strip()):
        raise Failure(400, f"connect-timeout-ms {wanted!r} is not 1 to 10 digits of milliseconds",
                      violations=[("connect-timeout-ms", "must be 1 to 10 digits")])
    return Deadline(min(int(wanted) / 1000, longest), f"connect-timeout-ms {wanted.strip()}")


def metadata_of(request: Request, principal: Principal | None) -> tuple[tuple[str, Any], ...]:
    """The request's headers as gRPC metadata, as a gRPC client would have sent them, but HTTP's, the
    protocols' and the browser's own; the caller named by the gateway, never by the client."""
    found: list[tuple[str, Any]] = []
    # With tracing on, the channel writes traceparent from the gateway's own span.
    skipped = _TRACE_CONTEXT if telemetry.enabled() else ()
    for key, value in request.headers.items():
        if key in _NOT_METADATA or key in skipped or key.startswith(_NOT_METADATA_PREFIXES) \
                or not _METADATA_KEY.match(key):
            continue
        if key.endswith("-bin"):
            try:
                found += [(key, unb64(part.strip())) for part in value.split(",")]
            except (binascii.Error, ValueError):
                raise Failure.of(_C.INVALID_ARGUMENT, f"header {key} is not base64") from None
        elif value.isascii() and value.isprintable():
            found.append((key, value))
    if principal is not None:
        found += identity.metadata(principal.user_id, principal.admin)
    return tuple(found)


def own_user_id(message: Message, principal: Principal) -> None:
    """The user comes from the credentials: an empty user_id is filled in, another user's is refused."""
    current = message.user_id  # type: ignore[attr-defined]
    if not current:
        message.user_id = principal.user_id  # type: ignore[attr-defined]
    elif current != principal.user_id and not principal.admin:
        raise Failure(403, f"signed in as {principal.user_id!r}, not {current!r}")


@dataclass
class Answer:
    """A unary call's reply as the upstream sent it: the message's bytes and its headers; its
    trailers on request (REST has no use for them, and asking costs a little on every call)."""

    data: bytes
    headers: list[tuple[str, Any]]
    rpc: Any

    async def trailers(self) -> list[tuple[str, Any]]:
        return list(await self.rpc.trailing_metadata() or ())


class Stream:
    """A server stream that has begun: its headers, then its messages' bytes; when they end,
    `failure` (None if it ended OK) and `trailers`. Cancelled when the client leaves."""

    def __init__(self, rpc: Any, upstream: str, headers: list[tuple[str, Any]], ended: bool):
        self._rpc = rpc
        self._upstream = upstream
        self.headers = headers
        self.ended = ended  # trailers-only: it ended before its first message
        self.failure: Failure | None = None
        self.trailers: list[tuple[str, Any]] = []

    async def messages(self) -> AsyncIterator[bytes]:
        try:
            if not self.ended:  # (once read() said it ended, the call must not be iterated too)
                async for item in self._rpc:
                    yield item
            self.trailers = list(await self._rpc.trailing_metadata() or ())
        except grpc.aio.AioRpcError as error:
            self.failure = Failure.of_rpc_error(error, self._upstream)
            self.trailers = self.failure.trailers
        finally:
            self._rpc.cancel()

    def cancel(self) -> None:
        self._rpc.cancel()


class Upstream:
    """Calls the upstreams for every protocol the gateway speaks."""

    def __init__(self, settings: Settings, upstreams: Upstreams):
        self._settings = settings
        self._upstreams = upstreams

    def timeout(self, method: Method, asked: Deadline | None) -> float | None:
        """The call's timeout. The caller's deadline is passed on DEADLINE_OFFSET sooner, so that gRPC's
        rounding of a deadline on the wire (measured: up to 9 ms late at 2 s) never makes it later than
        the caller's (Envoy's grpc_timeout_header_offset does the same). Without one, a unary call gets
        the default (0: none), a stream none: it lasts until the client or the server ends it."""
        if asked is None:
            return None if method.streaming else (self._settings.http_timeout or None)
        if asked.seconds < MIN_TIMEOUT:  # shorter than gRPC can keep: a call could still "succeed"
            raise Failure.of(_C.DEADLINE_EXCEEDED,
                             f"{asked.said} is over before any call could be made (1 ms is the least)")
        return asked.seconds - DEADLINE_OFFSET if asked.seconds > 2 * DEADLINE_OFFSET else asked.seconds

    def _start(self, request: Request, method: Method, message: Message, need: Need,
               asked: Deadline | None) -> Any:
        principal: Principal | None = request.state.get("principal")
        if principal is not None and need is Need.USER and "user_id" in method.request_class.DESCRIPTOR.fields_by_name:
            own_user_id(message, principal)
        timeout = self.timeout(method, asked)
        metadata = metadata_of(request, principal)
        try:
            bound = self._upstreams.bound(method.upstream, method.path, method.bind)
        except Unavailable as error:
            raise Failure.of(_C.UNAVAILABLE, str(error)) from None
        return bound(message.SerializeToString(), timeout=timeout, metadata=metadata)

    async def unary(self, request: Request, method: Method, message: Message, need: Need,
                    asked: Deadline | None) -> Answer:
        rpc = self._start(request, method, message, need, asked)
        try:
            data: bytes = await rpc
        except grpc.aio.AioRpcError as error:
            raise Failure.of_rpc_error(error, method.upstream) from None
        return Answer(data, list(await rpc.initial_metadata() or ()), rpc)

    async def stream(self, request: Request, method: Method, message: Message, need: Need,
                     asked: Deadline | None) -> Stream:
        """The stream once its headers came; a Failure if it failed before its first message."""
        rpc = self._start(request, method, message, need, asked)
        try:
            headers = list(await rpc.initial_metadata() or ())
            ended = rpc.done()
            if ended:  # trailers-only: it failed (or ended) before its first message; reading says how
                await rpc.read()
        except grpc.aio.AioRpcError as error:
            raise Failure.of_rpc_error(error, method.upstream) from None
        except asyncio.CancelledError:  # the client left before the stream began
            rpc.cancel()
            raise
        return Stream(rpc, method.upstream, headers, ended)
