"""One contract route served: HTTP request -> request message -> gRPC call -> JSON (or SSE).

The caller's identity, when sign-in is on, travels to the service as metadata
(`mesh/identity.py`), so the service that owns the data decides what the caller may see:
the order service answers NOT_FOUND for another user's order, with no extra lookup here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message

from gateway import errors
from gateway.auth import Need, Principal
from gateway.endpoints import Match, Serve
from gateway.errors import Failure
from gateway.routes import Route
from gateway.transcode import BadRequest, build_request, dumps, to_dict, to_json
from mesh import identity, telemetry
from mesh.channels import Upstreams
from mesh.errors import Unavailable
from mesh.http import Request, Response
from mesh.settings import Settings

# Request headers passed to the upstream as gRPC metadata. (x-request-id goes too: the gateway
# makes it the request's log context, and the channel sends that with every call.)
FORWARDED_HEADERS = ("traceparent", "tracestate", "authorization")
MIN_TIMEOUT = 0.001  # seconds: the shortest deadline gRPC can keep
_GRPC_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_IDEMPOTENCY_KEY_MAX = 128  # as request_id's rule in the contracts


@dataclass
class Call:
    """One route's gRPC method, bound to its upstream's channel once."""

    unary: grpc.aio.UnaryUnaryMultiCallable | None
    stream: grpc.aio.UnaryStreamMultiCallable | None


class Proxy:
    def __init__(self, settings: Settings, upstreams: Upstreams):
        self._settings = settings
        self._upstreams = upstreams

    def serve(self, route: Route) -> Serve:
        request_class = message_factory.GetMessageClass(route.method.input_type)
        response_class = message_factory.GetMessageClass(route.method.output_type)
        resumable = "resume_after" in request_class.DESCRIPTOR.fields_by_name
        keyed = "request_id" in request_class.DESCRIPTOR.fields_by_name

        def bind(channel: grpc.aio.Channel) -> Call:
            kwargs = {"request_serializer": request_class.SerializeToString,
                      "response_deserializer": response_class.FromString}
            if route.streaming:
                return Call(None, channel.unary_stream(route.rpc, **kwargs))
            return Call(channel.unary_unary(route.rpc, **kwargs), None)

        async def proxied(request: Request) -> Response:
            match: Match = request.state["match"]
            principal: Principal | None = request.state.get("principal")
            if request.body and route.body:
                content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
                if content_type != "application/json":
                    raise Failure(415, f"content-type must be application/json, not {content_type or 'missing'!r}")
            try:
                message = build_request(request_class, body_field=route.body, body=request.body, path=match.values,
                                        query=parse_qs(request.query, keep_blank_values=True) if request.query else {})
            except BadRequest as error:
                raise Failure(400, str(error), violations=error.violations) from None
            if keyed:
                _idempotency_key(request, message)
            if resumable:
                _resume_point(request, message)
            if principal is not None and match.endpoint is not None and match.endpoint.need is Need.USER:
                own_user_id(message, principal)
            timeout = self._timeout(request)
            try:
                call = self._upstreams.bound(route.service, id(route), bind)
            except Unavailable as error:
                raise Failure.of(grpc.StatusCode.UNAVAILABLE, str(error)) from None
            # With tracing on, the gRPC instrumentation writes traceparent from the gateway's own span.
            forwarded = FORWARDED_HEADERS if not telemetry.enabled() else ("authorization",)
            metadata = tuple((h, request.headers[h]) for h in forwarded if h in request.headers)
            if principal is not None:
                metadata += identity.metadata(principal.user_id, principal.admin)
            if call.stream is not None:
                return await _stream(call.stream, route, message, metadata, head=request.method == "HEAD",
                                     resumable=resumable, request_id=request.state.get("request_id", ""))
            rpc = call.unary(message, timeout=timeout, metadata=metadata)  # type: ignore[misc]
            try:
                reply = await rpc
            except grpc.aio.AioRpcError as error:
                raise errors.from_rpc_error(error, route.service) from None
            headers = [(f"grpc-metadata-{k}", str(v)) for k, v in (await rpc.initial_metadata() or ())
                       if not k.endswith("-bin")]
            return Response(200, to_json(reply), headers=headers)

        return proxied

    def _timeout(self, request: Request) -> float | None:
        wanted = request.headers.get("grpc-timeout")
        if not wanted:
            return self._settings.http_timeout or None  # 0: no deadline unless the caller sends one
        timeout = grpc_timeout(wanted, self._settings.http_max_timeout)
        if timeout < MIN_TIMEOUT:  # gRPC keeps time in milliseconds: a shorter deadline could still "succeed"
            raise Failure(504, f"grpc-timeout {wanted} is over before any call could be made (1m is the least)")
        return timeout


def grpc_timeout(wanted: str, longest: float) -> float:
    """A `grpc-timeout` header's seconds (`500m`, `2S`), at most `longest`; a 400 if it is not one."""
    found = _GRPC_TIMEOUT.match(wanted)
    if found is None:
        raise Failure(400, f"grpc-timeout header {wanted!r} is not a gRPC timeout such as 500m or 2S",
                      violations=[("grpc-timeout", "must be 1 to 8 digits and a unit: H, M, S, m, u or n")])
    return min(int(found.group(1)) * _UNITS[found.group(2)], longest)


def _idempotency_key(request: Request, message: Message) -> None:
    """`Idempotency-Key: K` (Stripe's header) fills a request's `request_id` field; a different body value is a 400."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return
    problem = None
    if not key.strip():
        problem = "must not be empty; send a unique key such as a UUID, or leave the header out"
    elif len(key) > _IDEMPOTENCY_KEY_MAX:
        problem = f"must be at most {_IDEMPOTENCY_KEY_MAX} characters"
    elif message.request_id and message.request_id != key:  # type: ignore[attr-defined]
        problem = f"is {key!r} but requestId in the body is {message.request_id!r}; send one of them"  # type: ignore[attr-defined]
    if problem is not None:
        raise Failure(400, f"Idempotency-Key header {problem}", violations=[("Idempotency-Key", problem)])
    message.request_id = key  # type: ignore[attr-defined]


def _resume_point(request: Request, message: Message) -> None:
    """A reconnecting EventSource's `Last-Event-ID` fills a stream request's `resume_after`."""
    last = request.headers.get("last-event-id")
    if last and not message.resume_after:  # type: ignore[attr-defined]
        message.resume_after = last  # type: ignore[attr-defined]


def own_user_id(message: Message, principal: Principal) -> None:
    """The user comes from the token: an empty user_id is filled in, another user's is refused."""
    current = message.user_id  # type: ignore[attr-defined]
    if not current:
        message.user_id = principal.user_id  # type: ignore[attr-defined]
    elif current != principal.user_id and not principal.admin:
        raise Failure(403, f"signed in as {principal.user_id!r}, not {current!r}")


async def _no_events() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that ends at once


async def _stream(method: grpc.aio.UnaryStreamMultiCallable, route: Route, message: Message, metadata: tuple,
                  *, head: bool, resumable: bool, request_id: str) -> Response:
    """Server streaming as Server-Sent Events: one `data:` line of JSON per message.

    A stream has no deadline: it lasts until the client or the server ends it. To a HEAD,
    the status a GET would get, and the stream is closed at once.
    """
    rpc = method(message, metadata=metadata)
    try:
        await rpc.initial_metadata()
        if rpc.done():
            # A trailers-only answer: the stream failed before it began (a bad user id), and
            # reading says how, as an HTTP status rather than an error event after a 200.
            await rpc.read()
            return Response(200, content_type="text/event-stream", stream=_no_events())
    except grpc.aio.AioRpcError as error:
        raise errors.from_rpc_error(error, route.service) from None
    except asyncio.CancelledError:  # the client left before the stream began
        rpc.cancel()
        raise
    if head:
        rpc.cancel()
        return Response(200, content_type="text/event-stream", stream=_no_events())

    async def events() -> AsyncIterator[bytes]:
        yield b": stream open\n\n"
        try:
            async for item in rpc:
                # A stream that can resume: each event's SSE id is the item's first field (its id),
                # which a reconnecting EventSource sends back as Last-Event-ID.
                event_id = b""
                if resumable:
                    first = item.DESCRIPTOR.fields[0]
                    event_id = b"id: " + str(getattr(item, first.name)).replace("\n", "").encode() + b"\n"
                yield event_id + b"data: " + dumps(to_dict(item)) + b"\n\n"
        except grpc.aio.AioRpcError as error:
            failure = errors.from_rpc_error(error, route.service)
            yield b"event: error\ndata: " + errors.reply(failure, request_id).body + b"\n\n"
        finally:
            rpc.cancel()

    # on_close: the browser went away (or the gateway stops), even before the stream began: stop the
    # upstream stream too.
    return Response(200, content_type="text/event-stream", stream=events(), on_close=rpc.cancel)
