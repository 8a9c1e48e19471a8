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

import base64
import binascii
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

import grpc
from google.protobuf.message import DecodeError, Message

from gateway import conditional
from gateway.auth import Need
from gateway.errors import HTTP_STATUS, Failure
from gateway.protojson import BadRequest, Reader, loads
from gateway.transcode import dumps, to_json
from gateway.upstream import Deadline, Method, Upstream, connect_timeout, grpc_timeout
from gateway.wire import (
    COMPRESS_MIN_BYTES,
    COMPRESSED,
    END_STREAM,
    TRAILERS,
    Wire,
    accepts_gzip,
    connect_error,
    deflate,
    encoding_of,
    envelope,
    grpc_status,
    grpc_web_text,
    header_pairs,
    inflate,
    refusal,
    unb64,
    unenvelope,
    wire_of,
)
from mesh.server.http import Request, Response
from mesh.settings import Settings

_C = grpc.StatusCode


class RpcProtocols:
    """Serves Connect and gRPC-Web requests for the methods it is given: their framing only; the call
    itself is the gateway's one upstream call (gateway/upstream.py)."""

    def __init__(self, settings: Settings, upstream: Upstream):
        self._settings = settings
        self._upstream = upstream

    # --- errors: the gateway's Failures in each protocol's own form ---

    def reply_failure(self, request: Request, failure: Failure) -> Response:
        """A Failure raised anywhere for this request (a layer, the decoder, the upstream) as its protocol
        says errors go."""
        wire = wire_of(request)
        if wire is None:  # not a protocol request at all: say which ones are spoken, in plain JSON
            return Response(failure.status, dumps(connect_error(failure)), headers=list(failure.headers))
        return self._error_reply(wire, failure)

    def refused_by_server(self, status: int, message: str, request: Request) -> Response | None:
        """The HTTP server's own refusal of a Connect or gRPC-Web request, in its form; None for anyone else."""
        if wire_of(request) is None:
            return None
        code = _C.RESOURCE_EXHAUSTED if status == 413 else None
        return self.reply_failure(request, Failure(status, message, code=code))

    def _error_reply(self, wire: Wire, failure: Failure) -> Response:
        headers = [*failure.headers, *header_pairs(failure.metadata)]
        if wire.protocol == "grpc-web":  # trailers-only: the status in the headers, no body
            return Response(200, b"", wire.content_type,
                            headers=[*headers, *header_pairs(failure.trailers),
                                     *grpc_status(failure.code, failure.message, failure.details)])
        if wire.enveloped:
            return Response(200, self._end_stream(failure, failure.trailers, False), wire.content_type,
                            headers=headers)
        return Response(HTTP_STATUS.get(failure.code, 500), dumps(connect_error(failure)),
                        headers=[*headers, *((f"trailer-{k}", v) for k, v in header_pairs(failure.trailers))])

    @staticmethod
    def _end_stream(failure: Failure | None, trailers: Sequence[tuple[str, Any]], compress: bool) -> bytes:
        body: dict[str, Any] = {}
        if failure is not None:
            body["error"] = connect_error(failure)
        metadata: dict[str, list[str]] = {}
        for key, value in header_pairs(trailers):
            metadata.setdefault(key, []).append(value)
        if metadata:
            body["metadata"] = metadata
        data = dumps(body)
        return envelope(END_STREAM | COMPRESSED, deflate(data)) if compress else envelope(END_STREAM, data)

    # --- serving ---

    def serve(self, method: Method, need: Need) -> Callable[[Request], Any]:
        async def served(request: Request) -> Response:
            wire = wire_of(request)
            if wire is None or (wire.protocol == "connect" and wire.enveloped != method.streaming):
                return self._unsupported(request, method)
            if request.method in ("GET", "HEAD") and not method.connect_get:
                raise Failure(405, f"{method.path} has side effects: call it with POST",
                              headers=[("allow", "POST")])
            wire, message_bytes, asked = self._read(request, wire, method)
            message = self._decode(wire, method, message_bytes)
            if method.streaming:
                return await self._stream(wire, method, message, need, asked, request)
            return await self._unary(wire, method, message, need, asked, request)

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

    def _read(self, request: Request, wire: Wire, method: Method) -> tuple[Wire, bytes, Deadline | None]:
        """The request's one message, as bytes in its codec, and its deadline; from the body or the GET query."""
        limit, longest = self._settings.http_max_body, self._settings.http_max_timeout
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
            return wire, data, connect_timeout(request, longest)
        body = grpc_web_text(request.body) if wire.text else request.body
        if wire.protocol == "connect" and not wire.enveloped:
            if encoding_of(request.headers.get("content-encoding"), "content-encoding") == "gzip":
                body = inflate(body, limit)
            return wire, body, connect_timeout(request, longest)
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
        asked = connect_timeout(request, longest) if wire.protocol == "connect" else grpc_timeout(request, longest)
        return wire, data, asked

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

    async def _unary(self, wire: Wire, method: Method, message: Message, need: Need, asked: Deadline | None,
                     request: Request) -> Response:
        answer = await self._upstream.unary(request, method, message, need, asked)
        compress = self._compress_reply(request, wire)
        headers = header_pairs(answer.headers)
        cacheable = request.method in ("GET", "HEAD") and method.etag_out
        reply = method.response_class.FromString(answer.data) if wire.codec == "json" or cacheable else None
        payload = answer.data if reply is None or wire.codec == "proto" else to_json(reply)
        trailers = await answer.trailers()
        if wire.protocol == "connect":
            headers += [(f"trailer-{k}", v) for k, v in header_pairs(trailers)]
            gzipped = compress and len(payload) >= COMPRESS_MIN_BYTES
            if gzipped:
                payload, headers = deflate(payload), [*headers, ("content-encoding", "gzip")]
            # A Connect GET is a cacheable HTTP GET: its resource's etag is the ETag (weak when
            # gzipped, for the bytes differ from the identity's), and a revalidation is a 304.
            tag = conditional.entity_tag(reply) if cacheable and reply is not None else None
            if tag is not None:
                headers.append(("etag", f"W/{tag}" if gzipped else tag))
                if conditional.none_match(request, tag):
                    return Response(304, b"", headers=[(k, v) for k, v in headers if k != "content-encoding"])
            return Response(200, payload, wire.content_type, headers=headers)
        body = self._frame(wire, payload, compress) + self._trailer_frame(wire, grpc_status(_C.OK), trailers)
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
    def _trailer_frame(wire: Wire, status: list[tuple[str, str]], trailers: Sequence[tuple[str, Any]]) -> bytes:
        lines = "".join(f"{k}: {v}\r\n" for k, v in [*status, *header_pairs(trailers)])
        framed = envelope(TRAILERS, lines.encode("latin-1"))
        return base64.b64encode(framed) if wire.text else framed

    async def _stream(self, wire: Wire, method: Method, message: Message, need: Need, asked: Deadline | None,
                      request: Request) -> Response:
        stream = await self._upstream.stream(request, method, message, need, asked)
        compress = self._compress_reply(request, wire)
        encoding = [("connect-content-encoding" if wire.protocol == "connect" else "grpc-encoding", "gzip")] \
            if compress else []
        json_codec = wire.codec == "json"

        async def messages() -> AsyncIterator[bytes]:
            async for item in stream.messages():
                payload = to_json(method.response_class.FromString(item)) if json_codec else item
                yield self._frame(wire, payload, compress)
            failure = stream.failure
            if wire.protocol == "connect":
                yield self._end_stream(failure, stream.trailers, compress)
            elif failure is None:
                yield self._trailer_frame(wire, grpc_status(_C.OK), stream.trailers)
            else:
                yield self._trailer_frame(wire, grpc_status(failure.code, failure.message, failure.details),
                                          stream.trailers)

        def overflow(message: str) -> bytes:
            """The reader fell behind past its buffer: the stream ends RESOURCE_EXHAUSTED, as a gRPC
            server ends a stream it will not buffer for."""
            if wire.protocol == "connect":
                return self._end_stream(Failure.of(_C.RESOURCE_EXHAUSTED, message), (), compress)
            return self._trailer_frame(wire, grpc_status(_C.RESOURCE_EXHAUSTED, message), ())

        return Response(200, content_type=wire.content_type, headers=[*header_pairs(stream.headers), *encoding],
                        stream=messages(), on_close=stream.cancel, overflow=overflow)
