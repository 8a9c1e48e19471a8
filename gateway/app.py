"""The gateway's composition root: its endpoint table, and the layers every request passes.

    route -> observe -> cors -> admission -> dispatch -> REST or Connect/gRPC-Web (a contract RPC) or an own endpoint

The contracts' routes come from their `google.api.http` rules (`gateway/routes.py`), each served
as REST (`gateway/rest.py`); every unary and server-streaming RPC is also served at
`/<package.Service>/<Method>` over Connect and gRPC-Web (`gateway/rpc.py`); each protocol only
frames, and calls the upstream the one way (`gateway/upstream.py`); the gateway's own
endpoints are below. All go into one table (`gateway/endpoints.py`) that dispatch, 405/Allow,
CORS preflights and /openapi.json all read.

The contracts are the shop's unless `files` names others (`python -m gateway --descriptors`),
with `upstream_of` naming the upstream each service is called at.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import grpc
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import layers, openapi
from gateway.auth import Authenticator, Need, Principal, session_cookie
from gateway.cors import Cors
from gateway.endpoints import Doc, Endpoint, Serve, Table
from gateway.errors import Failure, own_error
from gateway.ratelimit import within
from gateway.rest import Rest
from gateway.routes import Route, routes_from, services_of, upstream_of
from gateway.rpc import RpcProtocols
from gateway.transcode import dumps
from gateway.upstream import Upstream, methods_of
from generated.shop.inventory.v1 import inventory_pb2
from generated.shop.notification.v1 import notification_pb2
from generated.shop.order.v1 import order_pb2
from mesh.client.channels import Upstreams
from mesh.kernel.errors import Unavailable
from mesh.observe import metrics
from mesh.server.http import Request, Response
from mesh.settings import Settings

CONTRACTS: tuple[FileDescriptor, ...] = (inventory_pb2.DESCRIPTOR, order_pb2.DESCRIPTOR, notification_pb2.DESCRIPTOR)

STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# The pages load only their own files and call only this gateway: an injected script could not
# run, nor send what it read anywhere else; no one may frame them.
PAGE_HEADERS = [
    ("cache-control", "no-cache"),
    ("content-security-policy", "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
]


def _json(status: int, value: object) -> Response:
    return Response(status, dumps(value))


def _pages() -> dict[str, Response]:
    """The shop page and the API docs, served from the package: no CDN, nothing fetched elsewhere."""
    pages = {}
    for file in sorted(STATIC.iterdir()):
        pages[f"/static/{file.name}"] = Response(200, file.read_bytes(), CONTENT_TYPES.get(file.suffix, "application/octet-stream"),
                                                 headers=list(PAGE_HEADERS))
    pages["/"] = pages["/static/index.html"]
    pages["/docs"] = pages["/static/docs.html"]
    return pages


class Gateway:
    def __init__(self, settings: Settings, upstreams: Upstreams, files: Iterable[FileDescriptor] = CONTRACTS,
                 services: Iterable[str] | None = None):
        self._settings = settings
        self._upstreams = upstreams
        self._auth = Authenticator(settings)
        self.draining = False  # shutting down: /readyz says 503 so balancers move traffic away
        upstream = Upstream(settings, upstreams)  # the one way any protocol calls an upstream
        rest = Rest(settings, upstream)
        files = list(files)
        routes = routes_from(files, services)
        rpc = self._rpc = RpcProtocols(settings, upstream)
        methods = methods_of(services_of(files, services), upstream_of)
        self._services = sorted({route.service for route in routes} | {m.upstream for m in methods})
        own = self._own()
        for method in methods:
            need = self._auth.need(method.path) if self._auth.enabled else Need.ANYONE
            serve = rpc.serve(method, need)
            for verb in ("POST", "GET") if method.connect_get else ("POST",):
                own.append((method.path, Endpoint(verb, serve, method.path, need=need, admitted=True,
                                                  rpc=method.path, failure_reply=rpc.reply_failure,
                                                  streams=method.streaming)))
        self.table = Table(own, [
            (route, Endpoint(route.http_method, rest.serve(route), route.template.source,
                             need=self._auth.need(route.rpc) if self._auth.enabled else Need.ANYONE,
                             admitted=True, route=route, streams=route.streaming))
            for route in routes])
        self._openapi = json.dumps(openapi.document(self.table, auth=settings.auth)).encode()
        self.handle = layers.stack(
            layers.dispatch(),
            layers.route(self.table),
            layers.observe(rpc.reply_unrouted),
            layers.cors(Cors(settings.cors_origins), self.table),
            layers.Admission(settings, self._auth),
        )

    def own_error(self, status: int, message: str, request: Request | None = None) -> Response:
        """The HTTP server's own refusals (413, 431, 408, ...): to a Connect or gRPC-Web request of an RPC's path in
        its protocol's form (a message too large is RESOURCE_EXHAUSTED there, as gRPC's own limit says), else REST's."""
        endpoints = self.table.own.get(request.path, {}) if request is not None else {}
        if request is not None and any(endpoint.rpc for endpoint in endpoints.values()):
            return self._rpc.refused_by_server(status, message, request) or own_error(status, message)
        return own_error(status, message)

    @property
    def routes(self) -> list[Route]:
        return self.table.routes

    def _own(self) -> list[tuple[str, Endpoint]]:
        """The gateway's own endpoints; the pages and /metrics, /openapi.json are plain GETs."""
        user = Need.USER if self._auth.enabled else Need.ANYONE
        own = [
            ("/healthz", Endpoint("GET", self._healthz, "/healthz",
                                  doc=Doc("Gateway_Healthz", "The gateway process is up.", "gateway.Health"))),
            ("/readyz", Endpoint("GET", self._ready, "/readyz",
                                 doc=Doc("Gateway_Readyz", "Every upstream answers gRPC health SERVING (else 503; "
                                         "also while the gateway drains).", "gateway.Readiness", ("200", "503")))),
            ("/me", Endpoint("GET", self._me, "/me", need=user, admitted=self._auth.enabled,
                             doc=Doc("Gateway_Me", "Who the request's credentials name.", "gateway.Caller",
                                     signed_in=self._auth.enabled))),
            ("/openapi.json", Endpoint("GET", self._document, "/openapi.json")),
        ]
        if metrics.enabled():
            own.append(("/metrics", Endpoint("GET", _metrics_page, "/metrics")))
        if self._auth.enabled:
            own += [
                ("/session", Endpoint("POST", self._sign_in, "/session", need=Need.USER, admitted=True,
                                      doc=Doc("Gateway_SignIn", "Sign a browser in: the credential in its header "
                                              "becomes an HttpOnly session cookie.", "gateway.Caller",
                                              signed_in=True, sets_cookie=True))),
                ("/session", Endpoint("DELETE", self._sign_out, "/session",
                                      doc=Doc("Gateway_SignOut", "Sign the browser out: the session cookie is cleared.",
                                              "gateway.Caller", sets_cookie=True))),
            ]
        for path, page in _pages().items():
            own.append((path, Endpoint("GET", _constant(page), path)))
        return own

    async def _healthz(self, request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def _document(self, request: Request) -> Response:
        return Response(200, self._openapi)

    async def _me(self, request: Request) -> Response:
        """Who the request's credentials name, so a page can show it (and learn whether sign-in is on)."""
        principal: Principal | None = request.state.get("principal")
        if principal is None:
            return _json(200, {"auth": False})
        return _json(200, {"auth": True, "userId": principal.user_id, "admin": principal.admin})

    async def _sign_in(self, request: Request) -> Response:
        """The shop page's sign-in: a key or token in the request's headers becomes an HttpOnly session
        cookie holding it (scripts on the page never see it again)."""
        credential = (request.headers.get("x-api-key") or request.headers.get("authorization", "").partition(" ")[2]).strip()
        if not credential:
            raise Failure(401, "send the key in X-API-Key or the token in Authorization: Bearer")
        principal: Principal = request.state["principal"]
        response = _json(200, {"auth": True, "userId": principal.user_id, "admin": principal.admin})
        lifetime = self._auth.session_lifetime(credential)
        response.headers.append(("set-cookie", session_cookie(credential, lifetime, secure=self._forwarded_https(request))))
        return response

    async def _sign_out(self, request: Request) -> Response:
        response = _json(200, {"auth": True, "signedOut": True})
        response.headers.append(("set-cookie", session_cookie("", 0, secure=self._forwarded_https(request))))
        return response

    def _forwarded_https(self, request: Request) -> bool:
        """Whether the browser spoke HTTPS to a trusted proxy in front of us (its cookie then says Secure)."""
        return (request.headers.get("x-forwarded-proto") == "https"
                and within(request.client, self._settings.trusted_proxies))

    async def _ready(self, request: Request) -> Response:
        async def check(service: str) -> tuple[str, str]:
            # An upstream is ready when one of its instances says SERVING. A health check goes to
            # whichever instance the channel picks, and one that is draining says NOT_SERVING: on
            # that answer alone, every gateway pod would leave its endpoints during an upstream's
            # rolling update (a real cluster test saw connection refused). Round robin sends the
            # next check to another instance; all within the kubelet's probe timeout.
            deadline = asyncio.get_running_loop().time() + READY_CHECK_SECONDS
            status = "UNAVAILABLE"
            for _ in range(READY_CHECK_TRIES):
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    stub = self._upstreams.bound(service, "health", health_pb2_grpc.HealthStub)
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=left)
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                except grpc.aio.AioRpcError as error:
                    status = error.code().name
                    if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                        # A service without grpc.health (one served by --descriptors) answered: it is up.
                        return service, SERVING_WITHOUT_HEALTH
                except Unavailable:
                    return service, "UNAVAILABLE"  # no instance is known at all
                if status == "SERVING":
                    break
            return service, status

        results = dict(await asyncio.gather(*(check(s) for s in self._services)))
        ready = not self.draining and all(status in ("SERVING", SERVING_WITHOUT_HEALTH) for status in results.values())
        return _json(200 if ready else 503, {"ready": ready, "upstreams": results,
                                             **({"draining": True} if self.draining else {})})


READY_CHECK_TRIES = 3
SERVING_WITHOUT_HEALTH = "UP (no grpc.health service)"
READY_CHECK_SECONDS = 1.5  # under the chart's readiness timeoutSeconds (2)


GZIP_MIN_BYTES = 1024  # a page smaller than this is sent as it is


async def _metrics_page(request: Request) -> Response:
    return Response(200, await metrics.exposition(), metrics.CONTENT_TYPE)


def _constant(response: Response) -> Serve:
    """A fixed page; gzipped once, here, for browsers that take gzip (the shop's script bundle is
    ~216 KB, ~55 KB gzipped), with Vary so caches keep both."""
    packed = None
    if len(response.body) >= GZIP_MIN_BYTES:
        packed = replace(response, body=gzip.compress(response.body, mtime=0),
                         headers=[*response.headers, ("content-encoding", "gzip"), ("vary", "accept-encoding")])
        response = replace(response, headers=[*response.headers, ("vary", "accept-encoding")])

    async def serve(request: Request) -> Response:
        chosen = packed if packed is not None and _takes_gzip(request) else response
        return replace(chosen, headers=list(chosen.headers))  # its own headers: layers add to them
    return serve


def _takes_gzip(request: Request) -> bool:
    return any(part.split(";")[0].strip() == "gzip" and not part.replace(" ", "").endswith(";q=0")
               for part in request.headers.get("accept-encoding", "").lower().split(","))
