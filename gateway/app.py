"""The gateway's request handling and composition root.

HTTP request -> route (from the contracts) -> request message -> gRPC call on
the upstream's long-lived channel -> JSON, or an error through the one table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import errors, openapi
from gateway.auth import Authenticator, Need, Principal, Refused, session_cookie
from gateway.cors import Cors
from gateway.ratelimit import RateLimiter, client_address, within
from gateway.routes import Route, Router, routes_from, with_head
from gateway.transcode import BadRequest, build_request, dumps, to_dict, to_json
from generated.shop.inventory.v1 import inventory_pb2
from generated.shop.notification.v1 import notification_pb2
from generated.shop.order.v1 import order_pb2
from mesh import logs, metrics, telemetry
from mesh.channels import Upstreams
from mesh.errors import Unavailable
from mesh.http import Request, Response
from mesh.metrics import HTTP_IN_FLIGHT, HTTP_REQUESTS, HTTP_SECONDS
from mesh.settings import Settings

logger = logging.getLogger(__name__)

CONTRACTS: tuple[FileDescriptor, ...] = (inventory_pb2.DESCRIPTOR, order_pb2.DESCRIPTOR, notification_pb2.DESCRIPTOR)
# Request headers passed to the upstream as gRPC metadata.
# (x-request-id goes too: the gateway makes it the request's log context, and the channel
# sends that with every call, as it does in every service.)
FORWARDED_HEADERS = ("traceparent", "tracestate", "authorization")
_GRPC_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


# The metric label of requests that matched no route (their paths are unbounded), and of CORS preflights.
UNMATCHED = "unmatched"
PREFLIGHT = "cors_preflight"
# The gateway's own resources besides the pages: all GET.
FIXED = ("/healthz", "/readyz", "/me", "/session", "/metrics", "/openapi.json")
SESSION_METHODS = ("DELETE", "POST")
MIN_TIMEOUT = 0.001  # seconds: the shortest deadline gRPC can keep

STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# The pages load only their own files and call only this gateway: an injected script could not
# run, nor send what it read (the page keeps a sign-in key) anywhere else; no one may frame them.
PAGE_HEADERS = [
    ("cache-control", "no-cache"),
    ("content-security-policy", "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
]


def _pages() -> dict[str, Response]:
    """The shop page and the API docs, served from the package: no CDN, nothing fetched elsewhere."""
    pages = {}
    for file in sorted(STATIC.iterdir()):
        response = Response(200, file.read_bytes(), CONTENT_TYPES.get(file.suffix, "application/octet-stream"),
                            headers=list(PAGE_HEADERS))
        pages[f"/static/{file.name}"] = response
    pages["/"] = pages["/static/index.html"]
    pages["/docs"] = pages["/static/docs.html"]
    return pages


def _json(status: int, value: object) -> Response:
    return Response(status, dumps(value))


def _bad(message: str, status: int = 400) -> Response:
    code = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND}.get(status, grpc.StatusCode.UNKNOWN)
    return Response(status, errors.body(code, message))


def _resume_point(request: Request, message: object) -> None:
    """A reconnecting EventSource's `Last-Event-ID` fills a stream request's `resume_after`."""
    last = request.headers.get("last-event-id")
    if last and "resume_after" in message.DESCRIPTOR.fields_by_name and not message.resume_after:  # type: ignore[attr-defined]
        message.resume_after = last  # type: ignore[attr-defined]


async def _no_events() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that ends at once


def _allowed(need: Need, principal: Principal | None) -> None:
    if need is Need.ANYONE:
        return
    if principal is None:
        raise Refused(401, "sign in: send 'Authorization: Bearer <token>' or 'X-API-Key: <key>'")
    if need is Need.ADMIN and not principal.admin:
        raise Refused(403, f"{principal.user_id!r} may not do this: it needs the admin role")


def _own_user_id(message: object, principal: Principal) -> None:
    """The user comes from the token: an empty user_id is filled in, another user's is refused."""
    current = message.user_id  # type: ignore[attr-defined]
    if not current:
        message.user_id = principal.user_id  # type: ignore[attr-defined]
    elif current != principal.user_id and not principal.admin:
        raise Refused(403, f"signed in as {principal.user_id!r}, not {current!r}")


def _refused(refused: Refused) -> Response:
    if refused.status == 401:
        return Response(401, errors.body(grpc.StatusCode.UNAUTHENTICATED, str(refused)),
                        headers=[("www-authenticate", 'Bearer realm="shopmesh"')])
    return Response(403, errors.body(grpc.StatusCode.PERMISSION_DENIED, str(refused)))


def _idempotency_key(request: Request, message: object) -> None:
    """`Idempotency-Key: K` (Stripe's header) fills a request's `request_id` field; a different body value is a 400."""
    key = request.headers.get("idempotency-key")
    if key is None or "request_id" not in message.DESCRIPTOR.fields_by_name:  # type: ignore[attr-defined]
        return
    current = message.request_id  # type: ignore[attr-defined]
    if current and current != key:
        raise BadRequest(f"Idempotency-Key header {key!r} differs from requestId {current!r} in the body; send one")
    message.request_id = key  # type: ignore[attr-defined]


@dataclass
class Call:
    """One route's gRPC method, bound to its upstream's channel once."""

    route: Route
    unary: grpc.aio.UnaryUnaryMultiCallable | None
    stream: grpc.aio.UnaryStreamMultiCallable | None
    request_class: type


class Gateway:
    def __init__(self, settings: Settings, upstreams: Upstreams, files: Iterable[FileDescriptor] = CONTRACTS):
        self._settings = settings
        self._upstreams = upstreams
        self.router = Router(routes_from(files))
        self._auth = Authenticator(settings)
        self._cors = Cors(settings.cors_origins)
        self._order_lookup = next((r for r in self.router.routes if r.rpc == "/shop.order.v1.OrderService/GetOrder"),
                                  None)
        self._limiter = None
        if settings.rate_limit > 0:
            burst = settings.rate_burst or max(1, math.ceil(settings.rate_limit))
            self._limiter = RateLimiter(settings.rate_limit, burst)
        self._openapi = json.dumps(openapi.document(self.router.routes, auth=settings.auth)).encode()
        self._pages = _pages()
        self._request_classes = {
            id(route): message_factory.GetMessageClass(route.method.input_type) for route in self.router.routes
        }

    def _call(self, route: Route) -> Call:
        """The route's gRPC method on its upstream's current channel (rebuilt when instances change)."""
        return self._upstreams.bound(route.service, id(route), lambda channel: self._bind(route, channel))

    def _bind(self, route: Route, channel: grpc.aio.Channel) -> Call:
        request_class = self._request_classes[id(route)]
        response_class = message_factory.GetMessageClass(route.method.output_type)
        kwargs = {"request_serializer": request_class.SerializeToString, "response_deserializer": response_class.FromString}
        if route.streaming:
            return Call(route, None, channel.unary_stream(route.rpc, **kwargs), request_class)
        return Call(route, channel.unary_unary(route.rpc, **kwargs), None, request_class)

    async def _not_owner(self, order_id: str, principal: Principal, timeout: float) -> Response | None:
        """404 unless the order is the caller's (someone else's order is as good as missing)."""
        route = self._order_lookup
        if route is None:
            return Response(403, errors.body(grpc.StatusCode.PERMISSION_DENIED, "order ownership cannot be checked"))
        call = self._call(route)
        try:
            order = await call.unary(call.request_class(order_id=order_id), timeout=timeout)  # type: ignore[misc]
        except grpc.aio.AioRpcError as error:
            status, body = errors.from_rpc_error(error, route.service)
            return Response(status, body)
        if order.user_id != principal.user_id:
            return Response(404, errors.body(grpc.StatusCode.NOT_FOUND, f"order {order_id!r} not found"))
        return None

    def _limited(self, wait: float) -> Response:
        assert self._limiter is not None
        message = (f"rate limit: {self._limiter.rate:g} requests a second per client, bursts of {self._limiter.burst}; "
                   f"retry in {wait:.2f}s")
        return Response(429, errors.body(grpc.StatusCode.RESOURCE_EXHAUSTED, message),
                        headers=[("retry-after", RateLimiter.retry_after(wait))])

    def _client_key(self, request: Request, principal: Principal | None) -> str:
        """Whose bucket: the signed-in user, else the client's address (bad credentials count there
        too, so guessing keys is limited like anything else); behind a trusted proxy, the address
        its X-Forwarded-For names."""
        if principal is not None:
            return principal.user_id
        return client_address(request.client, request.headers.get("x-forwarded-for"), self._settings.trusted_proxies)

    def _timeout(self, request: Request) -> float:
        wanted = request.headers.get("grpc-timeout")
        if not wanted:
            return self._settings.http_timeout
        found = _GRPC_TIMEOUT.match(wanted)
        if found is None:
            raise BadRequest(f"grpc-timeout header {wanted!r} is not a gRPC timeout such as 500m or 2S")
        return min(int(found.group(1)) * _UNITS[found.group(2)], self._settings.http_max_timeout)

    async def handle(self, request: Request) -> Response:
        if not metrics.enabled():
            return (await self._answer(request))[1]
        started = time.perf_counter()
        HTTP_IN_FLIGHT.inc()
        try:
            label, response = await self._answer(request)
        finally:
            HTTP_IN_FLIGHT.dec()
        # By route template, never the raw path: one series per route, however many products.
        HTTP_SECONDS.labels(label, request.method).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(label, request.method, str(response.status)).inc()
        return response

    async def _answer(self, request: Request) -> tuple[str, Response]:
        label, response = await self._dispatch(request)
        if self._cors.enabled:
            response = self._cors.decorate(request, response)
        return label, response

    async def _dispatch(self, request: Request) -> tuple[str, Response]:
        """The request's metric label (its route template, or its fixed path) and its response."""
        if self._cors.enabled and Cors.is_preflight(request):
            return PREFLIGHT, self._preflight(request)
        if request.method not in ("GET", "HEAD") and (
                request.path in self._pages or (request.path in FIXED and request.path != "/session")):
            response = _bad(f"{request.method} is not allowed on {request.path}; use GET, HEAD", 405)
            response.headers.append(("allow", "GET, HEAD"))
            return request.path, response
        if request.path == "/healthz":
            return request.path, _json(200, {"status": "ok"})
        if request.path == "/readyz":
            return request.path, await self._ready()
        # HEAD is GET without the body (RFC 9110 9.3.2); the HTTP server leaves the body out.
        if request.path == "/me" and request.method in ("GET", "HEAD"):
            return request.path, self._me(request)
        if request.path == "/session":
            if request.method in SESSION_METHODS:
                return request.path, self._session(request)
            response = _bad(f"{request.method} is not allowed on /session; use {', '.join(SESSION_METHODS)}", 405)
            response.headers.append(("allow", ", ".join(SESSION_METHODS)))
            return request.path, response
        if request.method in ("GET", "HEAD"):
            if request.path == "/metrics" and metrics.enabled():
                return request.path, await metrics.exposition()
            if request.path == "/openapi.json":
                return request.path, Response(200, self._openapi)
            if request.path in self._pages:
                return request.path, self._pages[request.path]
        route, path_values, allowed = self.router.match(request.method, request.path)
        if route is None:
            if allowed:
                response = _bad(f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}", 405)
                response.headers.append(("allow", ", ".join(allowed)))
                return UNMATCHED, response
            return UNMATCHED, _bad(f"no route for {request.path}", 404)
        logs.rpc_method.set(route.rpc)
        if "x-request-id" in request.headers:
            logs.request_id.set(request.headers["x-request-id"])
        if not telemetry.enabled():
            return route.template.source, await self._serve(request, route, path_values)
        from opentelemetry import propagate, trace

        tracer = trace.get_tracer("shopmesh.gateway")
        with tracer.start_as_current_span(
            f"{request.method} {route.template.source}",
            context=propagate.extract(request.headers),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route.template.source,
                        "url.path": request.path},
        ) as span:
            response = await self._serve(request, route, path_values)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(trace.StatusCode.ERROR)
            # From an error (or any reply) to its trace, without reading logs.
            trace_id = format(span.get_span_context().trace_id, "032x")
            response.headers.append(("x-trace-id", trace_id))
            if response.status >= 400 and response.stream is None:
                response.body = errors.with_request_info(response.body, trace_id)
            return route.template.source, response

    def _admit(self, request: Request, need: Need) -> tuple[Principal | None, Response | None]:
        """The caller, and the refusal when their credentials, rights or rate say no."""
        principal, refused = None, None
        if self._auth.enabled:
            try:
                principal = self._auth.principal(request.headers, request.method)
                _allowed(need, principal)
            except Refused as refusal:
                refused = refusal
        if self._limiter is not None and (wait := self._limiter.take(self._client_key(request, principal))):
            return principal, self._limited(wait)
        return principal, _refused(refused) if refused is not None else None

    async def _serve(self, request: Request, route: Route, path_values: dict[str, str]) -> Response:
        need = self._auth.need(route.rpc) if self._auth.enabled else Need.ANYONE
        principal, refusal = self._admit(request, need)
        if refusal is not None:
            return refusal
        try:
            call = self._call(route)
        except Unavailable as error:
            return Response(503, errors.body(grpc.StatusCode.UNAVAILABLE, str(error)))
        if request.body and route.body:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                return _bad(f"content-type must be application/json, not {content_type or 'missing'!r}", 415)
        try:
            message = build_request(
                call.request_class,
                body_field=route.body,
                body=request.body,
                path=path_values,
                query=parse_qs(request.query, keep_blank_values=True) if request.query else {},
            )
            timeout = self._timeout(request)
            _idempotency_key(request, message)
            _resume_point(request, message)
            if need is Need.USER:
                _own_user_id(message, principal)  # type: ignore[arg-type]
        except BadRequest as error:
            return _bad(str(error))
        except Refused as refused:
            return _refused(refused)
        except (ValueError, TypeError, OverflowError) as error:  # json_format's less usual complaints
            return _bad(f"request: {error}")
        if timeout < MIN_TIMEOUT:  # gRPC keeps time in milliseconds: a shorter deadline could still "succeed"
            return Response(504, errors.body(grpc.StatusCode.DEADLINE_EXCEEDED, f"grpc-timeout "
                            f"{request.headers['grpc-timeout']} is over before any call could be made (1m is the least)"))
        if need is Need.ORDER_OWNER and principal is not None and not principal.admin:
            if (refusal := await self._not_owner(message.order_id, principal, timeout)) is not None:  # type: ignore[attr-defined]
                return refusal
        # With tracing on, the gRPC instrumentation writes traceparent from the gateway's own span.
        forwarded = FORWARDED_HEADERS if not telemetry.enabled() else ("authorization",)
        metadata = tuple((h, request.headers[h]) for h in forwarded if h in request.headers)
        if call.stream is not None:
            return await self._stream(call, message, metadata, head=request.method == "HEAD")
        rpc = call.unary(message, timeout=timeout, metadata=metadata)  # type: ignore[misc]
        try:
            reply = await rpc
        except grpc.aio.AioRpcError as error:
            status, body = errors.from_rpc_error(error, route.service)
            # An overloaded upstream shed the call: come back shortly.
            return Response(status, body, headers=[("retry-after", "1")] if status == 429 else [])
        headers = [(f"grpc-metadata-{k}", str(v)) for k, v in (await rpc.initial_metadata() or ()) if not k.endswith("-bin")]
        return Response(200, to_json(reply), headers=headers)

    async def _stream(self, call: Call, message: object, metadata: tuple, *, head: bool = False) -> Response:
        """Server streaming as Server-Sent Events: one `data:` line of JSON per message.

        A stream has no deadline: it lasts until the client or the server ends it. To a HEAD,
        the status a GET would get, and the stream is closed at once.
        """
        rpc = call.stream(message, metadata=metadata)  # type: ignore[misc]
        try:
            await rpc.initial_metadata()
            if rpc.done():
                # A trailers-only answer: the stream failed before it began (a bad user id), and
                # reading says how, as an HTTP status rather than an error event after a 200.
                await rpc.read()
                return Response(200, content_type="text/event-stream", stream=_no_events())
        except grpc.aio.AioRpcError as error:
            status, body = errors.from_rpc_error(error, call.route.service)
            return Response(status, body)
        if head:
            rpc.cancel()
            return Response(200, content_type="text/event-stream", stream=_no_events())

        # A stream that can resume: each event's SSE id is the item's first field (its id), which a
        # reconnecting EventSource sends back as Last-Event-ID.
        resumable = "resume_after" in call.request_class.DESCRIPTOR.fields_by_name

        async def events() -> AsyncIterator[bytes]:
            yield b": stream open\n\n"
            try:
                async for item in rpc:
                    head = b""
                    if resumable:
                        first = item.DESCRIPTOR.fields[0]
                        head = b"id: " + str(getattr(item, first.name)).replace("\n", "").encode() + b"\n"
                    yield head + b"data: " + dumps(to_dict(item)) + b"\n\n"
            except grpc.aio.AioRpcError as error:
                _, body = errors.from_rpc_error(error, call.route.service)
                yield b"event: error\ndata: " + body + b"\n\n"
            finally:
                rpc.cancel()  # the browser went away: stop the upstream stream too

        return Response(200, content_type="text/event-stream", stream=events())

    def _preflight(self, request: Request) -> Response:
        """A browser asking whether a page of another origin may make a call: the methods the path takes."""
        if request.path == "/session":
            methods = list(SESSION_METHODS)
        elif request.path in FIXED or request.path in self._pages:
            methods = with_head(["GET"])
        else:
            methods = self.router.match("OPTIONS", request.path)[2]
        if not methods:
            return _bad(f"no route for {request.path}", 404)
        return self._cors.preflight(request, methods)

    def _me(self, request: Request) -> Response:
        """Who the request's credentials name, so a page can show it (and learn whether sign-in is on).

        Limited like any route, so it is no cheaper place to guess keys."""
        if not self._auth.enabled:
            return _json(200, {"auth": False})
        principal, refusal = self._admit(request, Need.USER)
        if refusal is not None:
            return refusal
        assert principal is not None
        return _json(200, {"auth": True, "userId": principal.user_id, "admin": principal.admin})

    def _session(self, request: Request) -> Response:
        """The shop page's sign-in: POST with a key or token in its headers sets an HttpOnly session
        cookie holding it (scripts on the page never see it again); DELETE signs out."""
        if not self._auth.enabled:
            return _bad("sign-in is off on this gateway (SHOPMESH_AUTH)", 404)
        secure = self._forwarded_https(request)
        if request.method == "DELETE":
            response = _json(200, {"auth": True, "signedOut": True})
            response.headers.append(("set-cookie", session_cookie("", 0, secure=secure)))
            return response
        credential = request.headers.get("x-api-key") or request.headers.get("authorization", "").partition(" ")[2]
        if not credential.strip():
            return _bad("send the key in X-API-Key or the token in Authorization: Bearer", 401)
        principal, refusal = self._admit(request, Need.USER)
        if refusal is not None:
            return refusal
        assert principal is not None
        response = _json(200, {"auth": True, "userId": principal.user_id, "admin": principal.admin})
        lifetime = self._auth.session_lifetime(credential.strip())
        response.headers.append(("set-cookie", session_cookie(credential.strip(), lifetime, secure=secure)))
        return response

    def _forwarded_https(self, request: Request) -> bool:
        """Whether the browser spoke HTTPS to a trusted proxy in front of us (its cookie then says Secure)."""
        return (request.headers.get("x-forwarded-proto") == "https"
                and within(request.client, self._settings.trusted_proxies))

    async def _ready(self) -> Response:
        services = sorted({route.service for route in self.router.routes})

        async def check(service: str) -> tuple[str, str]:
            try:
                stub = self._upstreams.bound(service, "health", health_pb2_grpc.HealthStub)
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                return service, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as error:
                return service, error.code().name
            except Unavailable:
                return service, "UNAVAILABLE"

        results = dict(await asyncio.gather(*(check(s) for s in services)))
        ready = all(status == "SERVING" for status in results.values())
        return _json(200 if ready else 503, {"ready": ready, "upstreams": results})
