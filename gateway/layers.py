"""The gateway as a stack of small layers, each a handler that takes and returns a handler.

    route -> observe -> cors -> admission -> dispatch -> endpoint (REST, Connect/gRPC-Web, or an own endpoint)

- route: finds the request's endpoint in the table once (`request.state["match"]`).
- observe: names the request (its id in its reply and every error body; a client's own id also
  in every log line and every call it makes), counts it, traces it, and is the one place a
  `Failure` becomes a response.
- cors: answers preflights from the table's methods; marks answers to allowed pages.
- admission: who is calling (authentication) and whether they may, now (policy, rate limit).
- dispatch: the endpoint, or 405 with Allow, or 404.

Layers talk through `request.state`: `match`, `request_id`, `principal`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import re
import time
from collections.abc import Callable
from typing import Any

import grpc

from gateway import errors
from gateway.auth import Authenticator, Need, Principal, Refused
from gateway.cors import Cors
from gateway.endpoints import UNMATCHED, Match, Table
from gateway.errors import Failure
from gateway.ratelimit import RateLimiter, client_address
from mesh.observe import logs, metrics, telemetry
from mesh.observe.metrics import HTTP_IN_FLIGHT, HTTP_LIMIT_REFUSALS, HTTP_REQUESTS, HTTP_SECONDS
from mesh.server.http import Handler, Request, Response
from mesh.settings import Settings

Layer = Callable[[Handler], Handler]
PREFLIGHT = "cors_preflight"  # the metric label of CORS preflights
# A client's x-request-id is kept when it is a sane token; anything else gets one of ours.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def stack(handler: Handler, *layers: Layer) -> Handler:
    """`stack(h, a, b)` is `a(b(h))`: the first layer listed sees the request first."""
    for layer in reversed(layers):
        handler = layer(handler)
    return handler


def route(table: Table) -> Layer:
    def layer(inner: Handler) -> Handler:
        async def routed(request: Request) -> Response:
            request.state["match"] = table.match(request.method, request.path)
            return await inner(request)
        return routed
    return layer


def _request_id(request: Request, trace_id: str | None) -> tuple[str, bool]:
    """The request's id, and whether the client named it: its x-request-id, else its trace id when
    traced, else a new one."""
    given = request.headers.get("x-request-id", "")
    if _REQUEST_ID.fullmatch(given):
        return given, True
    return trace_id or f"{random.getrandbits(128):032x}", False  # a name, not a secret: no system call


def _label(request: Request, match: Match) -> str:
    if Cors.is_preflight(request):
        return PREFLIGHT
    return match.endpoint.label if match.endpoint is not None else UNMATCHED


def _span(request: Request, match: Match) -> Any:
    """A server span for a contract route when tracing is on (the pages and probes are not traced)."""
    if match.endpoint is None or not match.endpoint.method_name or not telemetry.enabled():
        return contextlib.nullcontext()
    from opentelemetry import propagate, trace

    route = match.endpoint.route
    template = route.template.source if route is not None else match.endpoint.rpc
    return trace.get_tracer("shopmesh.gateway").start_as_current_span(
        f"{request.method} {template}", context=propagate.extract(request.headers), kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": request.method, "http.route": template, "url.path": request.path})


Unrouted = Callable[[Request, Failure, Callable[[], Response]], Response]


def observe(unrouted: Unrouted | None = None) -> Layer:
    """`unrouted` answers a Failure for a request no endpoint took (404, 405), given REST's answer."""
    def layer(inner: Handler) -> Handler:
        async def observed(request: Request) -> Response:
            match: Match = request.state["match"]
            with _span(request, match) as span:
                trace_id = format(span.get_span_context().trace_id, "032x") if span is not None else None
                rid, named = _request_id(request, trace_id)
                request.state["request_id"] = rid
                # A client's id goes with every log line and every call of the request, so each process
                # logs it; one of ours stays in the gateway (its reply, its error body): sending it along
                # costs ~75 µs a request in grpc's metadata handling, measured (BENCHMARKS.md).
                token = logs.request_id.set(rid if named else None)
                if match.endpoint is not None and match.endpoint.method_name:
                    logs.rpc_method.set(match.endpoint.method_name)
                counted = metrics.enabled()
                started = time.perf_counter()
                if counted:
                    HTTP_IN_FLIGHT.inc()
                try:
                    try:
                        response = await inner(request)
                    except Failure as failure:  # the one place an error becomes an answer
                        endpoint = match.endpoint
                        if endpoint is not None and endpoint.failure_reply is not None:
                            response = endpoint.failure_reply(request, failure)  # in Connect's or gRPC-Web's form
                        elif endpoint is None and unrouted is not None:
                            response = unrouted(request, failure, functools.partial(errors.reply, failure, rid, trace_id))
                        else:
                            response = errors.reply(failure, rid, trace_id)
                finally:
                    logs.request_id.reset(token)
                    if counted:
                        HTTP_IN_FLIGHT.dec()
                if counted:  # by route template, never the raw path: one series per route
                    label = _label(request, match)
                    HTTP_SECONDS.labels(label, request.method).observe(time.perf_counter() - started)
                    HTTP_REQUESTS.labels(label, request.method, str(response.status)).inc()
                response.headers.append(("x-request-id", rid))
                if span is not None:
                    span.set_attribute("http.response.status_code", response.status)
                    if response.status >= 500:
                        from opentelemetry import trace

                        span.set_status(trace.StatusCode.ERROR)
                    response.headers.append(("x-trace-id", trace_id))  # from any reply to its trace
            return response
        return observed
    return layer


def cors(policy: Cors, table: Table) -> Layer:
    def layer(inner: Handler) -> Handler:
        async def crossed(request: Request) -> Response:
            if Cors.is_preflight(request):
                methods = table.methods(request.path)
                if not methods:
                    raise Failure(404, f"no route for {request.path}")
                return policy.preflight(request, methods)
            try:
                response = await inner(request)
            except Failure as failure:
                failure.headers.extend(policy.headers_for(request))
                raise
            return policy.decorate(request, response)
        return crossed if policy.enabled else inner
    return layer


class Admission:
    """Authentication, policy and the rate limit, for the endpoints the table marks `admitted`."""

    def __init__(self, settings: Settings, auth: Authenticator):
        self._auth = auth
        self._trusted_proxies = settings.trusted_proxies
        self._stream_share = settings.http_max_streams_per_client
        self._streams: dict[str, int] = {}  # client -> its streams open now
        self._limiter = None
        if settings.rate_limit > 0:
            burst = settings.rate_burst or max(1, math.ceil(settings.rate_limit))
            self._limiter = RateLimiter(settings.rate_limit, burst)

    def __call__(self, inner: Handler) -> Handler:
        async def admitted(request: Request) -> Response:
            endpoint = request.state["match"].endpoint
            if endpoint is not None and endpoint.admitted:
                principal = request.state["principal"] = self.admit(request, endpoint.need)
                if endpoint.streams and self._stream_share:
                    return await self._within_share(inner, request, self._client_key(request, principal))
            return await inner(request)
        return admitted

    async def _within_share(self, inner: Handler, request: Request, client: str) -> Response:
        """A stream, if the client holds fewer than its share: one client cannot take every stream the
        mesh will hold (the notification service's SHOPMESH_MAX_OPEN_STREAMS is everybody's)."""
        held = self._streams.get(client, 0)
        if held >= self._stream_share:
            HTTP_LIMIT_REFUSALS.labels("client_streams").inc()
            raise Failure.of(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"this client has {held} streams open, its share (SHOPMESH_HTTP_MAX_STREAMS_PER_CLIENT); "
                             "close one first", headers=[("retry-after", "1")])
        self._streams[client] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self._streams[client] - 1
                if left:
                    self._streams[client] = left
                else:
                    del self._streams[client]

        try:
            response = await inner(request)
        except BaseException:
            release()
            raise
        if response.stream is None:  # refused, or ended before it began
            release()
            return response
        ends = response.on_close

        def closed() -> object:
            release()
            return ends() if ends is not None else None
        response.on_close = closed
        return response

    def admit(self, request: Request, need: Need) -> Principal | None:
        """The caller; a Failure when their credentials, rights or rate say no."""
        principal, refused = None, None
        if self._auth.enabled:
            try:
                principal = self._auth.principal(request.headers, request.method)
                _allowed(need, principal)
            except Refused as refusal:
                refused = refusal
        if self._limiter is not None and (wait := self._limiter.take(self._client_key(request, principal))):
            message = (f"rate limit: {self._limiter.rate:g} requests a second per client, bursts of "
                       f"{self._limiter.burst}; retry in {wait:.2f}s")
            raise Failure(429, message, headers=[("retry-after", RateLimiter.retry_after(wait))])
        if refused is not None:
            raise refusal_of(refused)
        return principal

    def _client_key(self, request: Request, principal: Principal | None) -> str:
        """Whose bucket: the signed-in user, else the client's address (bad credentials count there
        too, so guessing keys is limited like anything else); behind a trusted proxy, the address
        its X-Forwarded-For names."""
        if principal is not None:
            return principal.user_id
        return client_address(request.client, request.headers.get("x-forwarded-for"), self._trusted_proxies)


def _allowed(need: Need, principal: Principal | None) -> None:
    if need is Need.ANYONE:
        return
    if principal is None:
        raise Refused(401, "sign in: send 'Authorization: Bearer <token>' or 'X-API-Key: <key>'")
    if need is Need.ADMIN and not principal.admin:
        raise Refused(403, f"{principal.user_id!r} may not do this: it needs the admin role")


def refusal_of(refused: Refused) -> Failure:
    if refused.status == 401:
        return Failure(401, str(refused), headers=[("www-authenticate", 'Bearer realm="shopmesh"')])
    return Failure(403, str(refused))


def dispatch() -> Handler:
    async def dispatched(request: Request) -> Response:
        match: Match = request.state["match"]
        if match.endpoint is not None:
            return await match.endpoint.serve(request)
        if match.allowed:
            raise Failure(405, f"{request.method} is not allowed on {request.path}; use {', '.join(match.allowed)}",
                          headers=[("allow", ", ".join(match.allowed))])
        raise Failure(404, f"no route for {request.path}")
    return dispatched
