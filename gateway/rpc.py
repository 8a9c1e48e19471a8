"""Connect and gRPC-Web: every RPC of the contracts at `/<package.Service>/<Method>`, no code per RPC.

    Connect unary      POST application/proto | application/json, the message as the body; GET
                       ?connect=v1&encoding=proto|json&message=... for methods the contracts mark
                       `idempotency_level = NO_SIDE_EFFECTS`; an error is HTTP status + Connect JSON
    Connect streaming  POST application/connect+proto | +json: 5-byte envelopes, then an
                       end-of-stream envelope (flag 2) holding the error and the trailers
    gRPC-Web           POST application/grpc-web[+proto|+json] | application/grpc-web-text[+proto]
                       (base64): envelopes, then a trailers frame (flag 0x80); an error before any
                       message is trailers-only, its status in the headers

Both sit behind the same layers as REST (CORS, authentication, the rate limit, metrics, traces)
and call the same upstream channels. The request is decoded here (so a malformed one is the
caller's INVALID_ARGUMENT, and a signed-in user's `user_id` is enforced as over REST), the reply
is passed on as the upstream's bytes, and the upstream's status and details travel unchanged: a
`google.rpc.BadRequest` with the contracts' field violations reaches a Connect client as the same
detail a gRPC client gets. Request headers become metadata, as gRPC clients send them, except the
protocols' own, the browser's and the identity entries only the gateway may write.

Compression: gzip or identity, both ways (Content-Encoding / Accept-Encoding for Connect unary,
Connect-Content-Encoding / Connect-Accept-Encoding for its streams, grpc-encoding /
grpc-accept-encoding for gRPC-Web); a compressed body may not inflate past the body limit.
Deadlines: Connect-Timeout-Ms or grpc-timeout, capped like REST's; none on a stream unless asked.
The framing itself (envelopes, base64 text, gzip, a status in each form) is gateway/wire.py.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import grpc
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from gateway.auth import Need, Principal
from gateway.errors import HTTP_STATUS, Failure
from gateway.protojson import BadRequest, Reader, loads
from gateway.proxy import MIN_TIMEOUT, grpc_timeout, own_user_id
from gateway.transcode import dumps, to_json
from gateway.wire import (
    COMPRESS_MIN_BYTES,
    COMPRESSED,
    END_STREAM,
    MESH_OWN,
    TRAILERS,
    Status,
    Wire,
    accepts_gzip,
    deflate,
    encoding_of,
    envelope,
    grpc_web_text,
    header_pairs,
    inflate,
    refusal,
    unb64,
    unenvelope,
    wire_of,
)
from mesh import identity, telemetry
from mesh.channels import Upstreams
from mesh.errors import Unavailable
from mesh.http import Request, Response
from mesh.settings import Settings

_C = grpc.StatusCode
DEADLINE_OFFSET = 0.02  # seconds: see RpcProtocols._passed_on
_TIMEOUT_MS = re.compile(r"^\d{1,10}$")
# Request headers that are the protocols' own, the browser's or the hop's, never metadata; and the
# identity entries, which only the gateway writes (mesh/identity.py).
_NOT_METADATA = frozenset({
    "accept", "accept-encoding", "accept-language", "connection", "content-encoding", "content-length",
    "content-type", "cookie", "host", "keep-alive", "origin", "referer", "te", "transfer-encoding", "upgrade",
    "user-agent", "x-user-agent", "x-grpc-web", "x-api-key", "x-requested-with", "grpc-timeout", "grpc-encoding",
    "grpc-accept-encoding", "idempotency-key", "last-event-id", "priority", "dnt", "pragma", "cache-control",
    "x-request-id",  # the channel sends the request's id itself (mesh/channels.py), once
    identity.USER, identity.ADMIN,
})
_METADATA_KEY = re.compile(r"^[0-9a-z_.-]+$")
_TRACE_CONTEXT = ("traceparent", "tracestate")


@dataclass
class Method:
    """One RPC as these protocols serve it: its path, messages, upstream and the call bound to it."""

    descriptor: MethodDescriptor
    upstream: str
    request_class: type[Message]
    response_class: type[Message]

    @property
    def path(self) -> str:
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"

    @property
    def streaming(self) -> bool:
        return self.descriptor.server_streaming

    @property
    def connect_get(self) -> bool:
        """Served over a Connect GET too: a unary method the contracts mark NO_SIDE_EFFECTS."""
        level = self.descriptor.GetOptions().idempotency_level
        return not self.streaming and level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


def methods_of(services: Iterable[ServiceDescriptor], upstream_of: Callable[[ServiceDescriptor], str]) -> list[Method]:
    """Every unary and server-streaming RPC of the services (client and bidi streams need HTTP/2)."""
    found = []
    for service in services:
        for method in service.methods:
            if method.client_streaming:
                continue
            found.append(Method(method, upstream_of(service), message_factory.GetMessageClass(method.input_type),
                                message_factory.GetMessageClass(method.output_type)))
    return found


class RpcProtocols:
    """Serves Connect and gRPC-Web requests for the methods it is given."""

    def __init__(self, settings: Settings, upstreams: Upstreams):
        self._settings = settings
        self._upstreams = upstreams

    # --- errors: the layers' Failures in each protocol's own form ---

    def reply_failure(self, request: Request, failure: Failure) -> Response:
        """A Failure raised anywhere for this request (a layer, the decoder) as its protocol says errors go."""
        wire = wire_of(request)
        status = Status.of_failure(failure)
        headers = list(failure.headers)
        if wire is None:  # not a protocol request at all: say which ones are spoken, in plain JSON
            return Response(failure.status, dumps(status.connect_json()), headers=headers)
        return self._error_reply(wire, status, headers, [], compress=False)

    def refused_by_server(self, status: int, message: str, request: Request) -> Response | None:
        """The HTTP server's own refusal of a Connect or gRPC-Web request, in its form; None for anyone else."""
        if wire_of(request) is None:
            return None
        code = _C.RESOURCE_EXHAUSTED if status == 413 else None
        return self.reply_failure(request, Failure(status, message, code=code))

    def _error_reply(self, wire: Wire, status: Status, headers: list[tuple[str, str]],
                     trailers: Sequence[tuple[str, Any]], *, compress: bool) -> Response:
        if wire.protocol == "grpc-web":  # trailers-only: the status in the headers, no body
            return Response(200, b"", wire.content_type,
                            headers=[*headers, *header_pairs(trailers), *status.grpc_trailers()])
        if wire.enveloped:
            return Response(200, self._end_stream(status, trailers, compress), wire.content_type, headers=headers)
        return Response(HTTP_STATUS.get(status.code, 500), dumps(status.connect_json()),
                        headers=[*headers, *((f"trailer-{k}", v) for k, v in header_pairs(trailers))])

    @staticmethod
    def _end_stream(status: Status | None, trailers: Sequence[tuple[str, Any]], compress: bool) -> bytes:
        body: dict[str, Any] = {}
        if status is not None:
            body["error"] = status.connect_json()
        metadata: dict[str, list[str]] = {}
        for key, value in header_pairs(trailers):
            metadata.setdefault(key, []).append(value)
        if metadata:
            body["metadata"] = metadata
        data = dumps(body)
        return envelope(END_STREAM | COMPRESSED, deflate(data)) if compress else envelope(END_STREAM, data)

    # --- serving ---

    def serve(self, method: Method, need: Need) -> Callable[[Request], Any]:
        def bind(channel: grpc.aio.Channel) -> Any:  # bytes in, bytes out: the reply is passed on as it came
            if method.streaming:
                return channel.unary_stream(method.path)
            return channel.unary_unary(method.path)

        async def served(request: Request) -> Response:
            wire = wire_of(request)
            if wire is None or (wire.protocol == "connect" and wire.enveloped != method.streaming):
                return self._unsupported(request, method)
            if request.method in ("GET", "HEAD") and not method.connect_get:
                raise Failure(405, f"{method.path} has side effects: call it with POST",
                              headers=[("allow", "POST")])
            wire, message_bytes, timeout = self._read(request, wire, method)
            timeout = self._passed_on(timeout)
            message = self._decode(wire, method, message_bytes)
            principal: Principal | None = request.state.get("principal")
            if principal is not None and need is Need.USER and "user_id" in method.request_class.DESCRIPTOR.fields_by_name:
                own_user_id(message, principal)
            metadata = self._metadata(request, principal)
            try:
                call = self._upstreams.bound(method.upstream, ("rpc", method.path), bind)
            except Unavailable as error:
                raise Failure.of(_C.UNAVAILABLE, str(error)) from None
            if method.streaming:
                return await self._stream(call, wire, method, message.SerializeToString(), metadata, timeout, request)
            return await self._unary(call, wire, method, message.SerializeToString(), metadata, timeout, request)

        return served

    def _unsupported(self, request: Request, method: Method) -> Response:
        kinds = ("application/connect+proto, application/connect+json" if method.streaming
                 else "application/proto, application/json")
        given = request.headers.get("content-type", "") or "none"
        return refusal(415, f"content-type {given!r} is not one {method.path} takes: {kinds}, or "
                            "application/grpc-web[-text][+proto|+json]",
                       [("accept-post", f"{kinds}, application/grpc-web+proto, application/grpc-web+json, "
                                        "application/grpc-web-text+proto")])

    def reply_unrouted(self, request: Request, failure: Failure, rest: Callable[[], Response]) -> Response:
        """A 404 or 405 (no endpoint): to a Connect or gRPC-Web request, a plain HTTP refusal whose status
        its client reads as the code (404 unimplemented), as connect-go answers; to anyone else, `rest()`."""
        if wire_of(request) is None:
            return rest()
        return refusal(failure.status, failure.message, failure.headers)

    def _read(self, request: Request, wire: Wire, method: Method) -> tuple[Wire, bytes, float | None]:
        """The request's one message, as bytes in its codec, and its deadline; from the body or the GET query."""
        limit = self._settings.http_max_body
        if wire.protocol == "connect":
            version = request.headers.get("connect-protocol-version")
            if version is not None and version.strip() != "1":
                raise Failure.of(_C.INVALID_ARGUMENT, f"connect-protocol-version must be 1, not {version!r}")
        if request.method in ("GET", "HEAD"):
            # latin-1: each percent-escape is one byte again, so an unencoded proto message survives
            query = parse_qs(request.query, keep_blank_values=True, encoding="latin-1")
            one = {key: values[0] for key, values in query.items()}
            if one.get("connect", "v1") != "v1":
                raise Failure.of(_C.INVALID_ARGUMENT, f"connect={one['connect']!r}: this server speaks v1")
            codec = one.get("encoding", "")
            if codec not in ("proto", "json"):
                raise Failure.of(_C.INVALID_ARGUMENT, "a Connect GET names encoding=proto or encoding=json")
            wire = Wire("connect", codec, False, f"application/{codec}")
            raw = query.get("message", [""])[0]
            if one.get("base64") == "1":
                try:
                    data = unb64(raw, urlsafe=True)
                except (binascii.Error, ValueError):
                    raise Failure.of(_C.INVALID_ARGUMENT, "message= is not base64url") from None
            else:
                data = raw.encode("latin-1")  # the bytes the client escaped (JSON is read as UTF-8 from them)
            if encoding_of(one.get("compression"), "compression") == "gzip":
                data = inflate(data, limit)
            return wire, data, self._connect_timeout(request)
        body = grpc_web_text(request.body) if wire.text else request.body
        if wire.protocol == "connect" and not wire.enveloped:
            if encoding_of(request.headers.get("content-encoding"), "content-encoding") == "gzip":
                body = inflate(body, limit)
            return wire, body, self._connect_timeout(request)
        header = "connect-content-encoding" if wire.protocol == "connect" else "grpc-encoding"
        encoding = encoding_of(request.headers.get(header), header)
        frames = unenvelope(body)
        if len(frames) != 1:
            said = "no message" if not frames else f"{len(frames)} messages"
            # UNIMPLEMENTED, as gRPC's status codes say of a cardinality violation
            raise Failure.of(_C.UNIMPLEMENTED, f"{method.path} takes exactly one request message; the request carries {said}")
        flags, data = frames[0]
        if flags & COMPRESSED:
            if encoding == "identity":
                raise Failure.of(_C.INTERNAL, f"a compressed message came without a {header}")
            data = inflate(data, limit)
        timeout = self._connect_timeout(request) if wire.protocol == "connect" else self._grpc_timeout(request)
        return wire, data, timeout

    @staticmethod
    def _passed_on(timeout: float | None) -> float | None:
        """The caller's deadline as the upstream gets it: DEADLINE_OFFSET sooner, so that gRPC's rounding
        of a deadline on the wire (measured: up to 9 ms late at 2 s) never makes it later than the
        caller's (Envoy's grpc_timeout_header_offset does the same)."""
        if timeout is None or timeout <= 2 * DEADLINE_OFFSET:
            return timeout
        return timeout - DEADLINE_OFFSET

    def _connect_timeout(self, request: Request) -> float | None:
        wanted = request.headers.get("connect-timeout-ms")
        if wanted is None:
            return None
        if not _TIMEOUT_MS.match(wanted.strip()):
            raise Failure(400, f"connect-timeout-ms {wanted!r} is not 1 to 10 digits of milliseconds",
                          violations=[("connect-timeout-ms", "must be 1 to 10 digits")])
        return min(int(wanted) / 1000, self._settings.http_max_timeout)

    def _grpc_timeout(self, request: Request) -> float | None:
        wanted = request.headers.get("grpc-timeout")
        return None if not wanted else grpc_timeout(wanted, self._settings.http_max_timeout)

    @staticmethod
    def _decode(wire: Wire, method: Method, data: bytes) -> Message:
        name = method.request_class.DESCRIPTOR.full_name
        if wire.codec == "proto":
            try:
                return method.request_class.FromString(data)
            except DecodeError:
                raise Failure.of(_C.INVALID_ARGUMENT, f"the request is not a {name} in protobuf binary") from None
        message = method.request_class()
        try:
            reader = Reader()
            reader.message(message, loads(data or b"{}"), "")
            reader.done()
        except BadRequest as error:
            raise Failure(400, str(error), violations=error.violations) from None
        return message

    @staticmethod
    def _metadata(request: Request, principal: Principal | None) -> tuple[tuple[str, Any], ...]:
        """The request's headers as gRPC metadata, but the protocols' and the browser's own; the caller
        named by the gateway, never by the client."""
        found: list[tuple[str, Any]] = []
        # With tracing on, the channel writes traceparent from the gateway's own span (as for REST).
        skipped = _TRACE_CONTEXT if telemetry.enabled() else ()
        for key, value in request.headers.items():
            if key in _NOT_METADATA or key in skipped or key.startswith(("connect-", "sec-", "access-control-", "x-forwarded-", "grpc-",
                                                      MESH_OWN)) \
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

    async def _unary(self, call: Any, wire: Wire, method: Method, data: bytes, metadata: tuple,
                     timeout: float | None, request: Request) -> Response:
        if timeout is None:
            timeout = self._settings.http_timeout or None  # 0: no deadline unless the caller sends one
        if timeout is not None and timeout < MIN_TIMEOUT:
            return self._error_reply(wire, Status(_C.DEADLINE_EXCEEDED, "the deadline was over before the call"),
                                     [], [], compress=False)
        rpc = call(data, timeout=timeout, metadata=metadata)
        compress = self._compress_reply(request, wire)
        try:
            reply: bytes = await rpc
        except grpc.aio.AioRpcError as error:
            status, trailers = Status.of_rpc_error(error, method.upstream)
            headers = header_pairs(error.initial_metadata() or ())
            return self._error_reply(wire, status, headers, trailers, compress=False)
        headers = header_pairs(await rpc.initial_metadata() or ())
        trailers = list(await rpc.trailing_metadata() or ())
        payload = reply if wire.codec == "proto" else to_json(method.response_class.FromString(reply))
        if wire.protocol == "connect":
            headers += [(f"trailer-{k}", v) for k, v in header_pairs(trailers)]
            if compress and len(payload) >= COMPRESS_MIN_BYTES:
                payload, headers = deflate(payload), [*headers, ("content-encoding", "gzip")]
            return Response(200, payload, wire.content_type, headers=headers)
        body = self._frame(wire, payload, compress) + self._trailer_frame(wire, Status(_C.OK), trailers)
        if compress:
            headers.append(("grpc-encoding", "gzip"))
        return Response(200, body, wire.content_type, headers=headers)

    def _compress_reply(self, request: Request, wire: Wire) -> bool:
        if wire.protocol == "grpc-web":
            return accepts_gzip(request.headers.get("grpc-accept-encoding"))
        if wire.enveloped:
            return accepts_gzip(request.headers.get("connect-accept-encoding"))
        return accepts_gzip(request.headers.get("accept-encoding"))

    @staticmethod
    def _frame(wire: Wire, payload: bytes, compress: bool) -> bytes:
        framed = envelope(COMPRESSED, deflate(payload)) if compress and len(payload) >= COMPRESS_MIN_BYTES \
            else envelope(0, payload)
        return base64.b64encode(framed) if wire.text else framed

    @staticmethod
    def _trailer_frame(wire: Wire, status: Status, trailers: Sequence[tuple[str, Any]]) -> bytes:
        lines = "".join(f"{k}: {v}\r\n" for k, v in [*status.grpc_trailers(), *header_pairs(trailers)])
        framed = envelope(TRAILERS, lines.encode("latin-1"))
        return base64.b64encode(framed) if wire.text else framed

    async def _stream(self, call: Any, wire: Wire, method: Method, data: bytes, metadata: tuple,
                      timeout: float | None, request: Request) -> Response:
        if timeout is not None and timeout < MIN_TIMEOUT:
            return self._error_reply(wire, Status(_C.DEADLINE_EXCEEDED, "the deadline was over before the call"),
                                     [], [], compress=False)
        rpc = call(data, timeout=timeout, metadata=metadata)
        compress = self._compress_reply(request, wire)
        encoding = [("connect-content-encoding" if wire.protocol == "connect" else "grpc-encoding", "gzip")] \
            if compress else []
        try:
            headers = header_pairs(await rpc.initial_metadata() or ())
        except grpc.aio.AioRpcError as error:
            status, trailers = Status.of_rpc_error(error, method.upstream)
            return self._error_reply(wire, status, header_pairs(error.initial_metadata() or ()), trailers,
                                     compress=False)
        except asyncio.CancelledError:  # the client left before the stream began
            rpc.cancel()
            raise
        if rpc.done():  # trailers-only: it failed (or ended) before its first message
            try:
                await rpc.read()
            except grpc.aio.AioRpcError as error:
                status, trailers = Status.of_rpc_error(error, method.upstream)
                return self._error_reply(wire, status, headers, trailers, compress=False)
        json_codec = wire.codec == "json"

        async def messages() -> AsyncIterator[bytes]:
            status, trailers = None, []
            try:
                async for item in rpc:
                    payload = to_json(method.response_class.FromString(item)) if json_codec else item
                    yield self._frame(wire, payload, compress)
                trailers = list(await rpc.trailing_metadata() or ())
            except grpc.aio.AioRpcError as error:
                status, trailers = Status.of_rpc_error(error, method.upstream)
            finally:
                rpc.cancel()
            if wire.protocol == "connect":
                yield self._end_stream(status, trailers, compress)
            else:
                yield self._trailer_frame(wire, status or Status(_C.OK), trailers)

        return Response(200, content_type=wire.content_type, headers=[*headers, *encoding], stream=messages(),
                        on_close=rpc.cancel)

