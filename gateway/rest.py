"""REST: one contract route served as JSON, or as Server-Sent Events for a server stream.

HTTP request -> request message (the route's path variables, query and body: gateway/transcode.py)
-> the gateway's one upstream call (gateway/upstream.py) -> proto3 JSON. This module is REST's
framing only: how a route's message is read, and how the answer, a stream's events and an error
are written. The caller's identity, when sign-in is on, travels to the service as metadata
(`mesh/rpc/identity.py`), so the service that owns the data decides what the caller may see: the
order service answers NOT_FOUND for another user's order, with no extra lookup here.

Resources with an AIP-154 `etag` get HTTP's conditional requests from it, for every RPC alike: a
reply carrying one has it as its `ETag` header; `If-Match` fills the request's etag (the
resource's, in a body of one field), and the service's ABORTED for it is 412 Precondition
Failed, as RFC 9110 says; `If-None-Match` on a GET that still matches is 304 Not Modified
(the rules: gateway/conditional.py, which Connect's GET shares).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs

from google.protobuf.message import Message

from gateway import conditional, errors
from gateway.auth import Need
from gateway.endpoints import Match, Serve
from gateway.errors import Failure
from gateway.routes import Route
from gateway.transcode import BadRequest, build_request, dumps, etag_holder, to_dict, to_json
from gateway.upstream import Deadline, Method, Upstream, grpc_timeout
from mesh.server.http import Request, Response
from mesh.settings import Settings

_IDEMPOTENCY_KEY_MAX = 128  # as request_id's rule in the contracts


class Rest:
    def __init__(self, settings: Settings, upstream: Upstream):
        self._settings = settings
        self._upstream = upstream

    def serve(self, route: Route) -> Serve:
        method = Method.of(route.method, route.service)
        fields = method.request_class.DESCRIPTOR.fields_by_name
        resumable, keyed = "resume_after" in fields, "request_id" in fields
        etag_in = etag_holder(method.request_class.DESCRIPTOR, route.body, route.http_method)

        async def served(request: Request) -> Response:
            match: Match = request.state["match"]
            if request.body and route.body:
                content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
                if content_type != "application/json":
                    raise Failure(415, f"content-type must be application/json, not {content_type or 'missing'!r}")
            try:
                message = build_request(method.request_class, body_field=route.body, body=request.body,
                                        path=match.values,
                                        query=parse_qs(request.query, keep_blank_values=True) if request.query else {},
                                        patch=route.http_method == "PATCH")
            except BadRequest as error:
                raise Failure(400, str(error), violations=error.violations) from None
            if_match = request.headers.get("if-match") if etag_in is not None else None
            if if_match is not None:
                conditional.precondition(if_match, message if not etag_in else getattr(message, etag_in))
            if keyed:
                _idempotency_key(request, message)
            if resumable:
                _resume_point(request, message)
            need = match.endpoint.need  # type: ignore[union-attr]
            asked = grpc_timeout(request, self._settings.http_max_timeout)
            if method.streaming:
                return await self._events(request, method, message, need, asked, resumable)
            try:
                answer = await self._upstream.unary(request, method, message, need, asked)
            except Failure as failure:
                if if_match is not None and conditional.failed_precondition(failure, if_match):
                    failure.status = 412  # the precondition the client stated is false
                raise
            headers = [(f"grpc-metadata-{k}", str(v)) for k, v in answer.headers if not k.endswith("-bin")]
            reply = method.response_class.FromString(answer.data)
            tag = conditional.entity_tag(reply) if method.etag_out else None
            if tag is not None:
                headers.append(("etag", tag))
                if request.method in ("GET", "HEAD") and conditional.none_match(request, tag):
                    return Response(304, b"", headers=headers)
            return Response(200, to_json(reply), headers=headers)

        return served

    async def _events(self, request: Request, method: Method, message: Message, need: Need,
                      asked: Deadline | None, resumable: bool) -> Response:
        """Server streaming as Server-Sent Events: one `data:` line of JSON per message.

        A stream has no deadline unless the caller asks for one: it lasts until the client or the
        server ends it. To a HEAD, the status a GET would get, and the stream is closed at once.
        """
        stream = await self._upstream.stream(request, method, message, need, asked)
        if stream.ended or request.method == "HEAD":
            # A trailers-only answer that ended OK, or a HEAD: the status, and no events.
            stream.cancel()
            return Response(200, content_type="text/event-stream", stream=_no_events())
        request_id = request.state.get("request_id", "")
        first = method.response_class.DESCRIPTOR.fields[0].name

        async def events() -> AsyncIterator[bytes]:
            yield b": stream open\n\n"
            async for data in stream.messages():
                item = method.response_class.FromString(data)
                # A stream that can resume: each event's SSE id is the item's first field (its id),
                # which a reconnecting EventSource sends back as Last-Event-ID.
                event_id = b""
                if resumable:
                    event_id = b"id: " + str(getattr(item, first)).replace("\n", "").encode() + b"\n"
                yield event_id + b"data: " + dumps(to_dict(item)) + b"\n\n"
            if stream.failure is not None:
                yield b"event: error\ndata: " + errors.reply(stream.failure, request_id).body + b"\n\n"

        # on_close: the browser went away (or the gateway stops), even before the stream began: stop the
        # upstream stream too.
        return Response(200, content_type="text/event-stream", stream=events(), on_close=stream.cancel,
                        overflow=_resume_later)


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


def _resume_later(message: str) -> bytes:
    """A reader that fell behind: the stream ends, and EventSource reconnects a second later with the
    Last-Event-ID it did receive, so it resumes where it stopped reading and nothing is lost."""
    return b"retry: 1000\n: " + message.replace("\n", " ").encode() + b"\n\n"


async def _no_events() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that ends at once
