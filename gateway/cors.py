"""Cross-origin calls from browsers (CORS, the Fetch standard): which web pages may call the gateway.

Off unless SHOPMESH_CORS_ORIGINS names origins: then a page from one of them gets its
preflight answered (the methods its path allows, the headers the gateway reads) and its
answers carry `Access-Control-Allow-Origin`, with every response header exposed (trace id,
Retry-After, gRPC metadata). Credentials travel as headers, never cookies, so no request is
credentialed in the CORS sense and `*` is safe to offer.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.errors import Failure
from mesh.server.http import Request, Response

# Request headers a page may send: the ones the gateway reads.
# Connect's and gRPC-Web's clients send their protocol headers (connect-*, grpc-*, x-grpc-web,
# x-user-agent) and, for a gzip body, content-encoding.
ALLOWED_HEADERS = ("content-type", "authorization", "x-api-key", "idempotency-key", "if-match", "if-none-match",
                   "x-request-id",
                   "grpc-timeout", "traceparent", "tracestate", "last-event-id", "x-requested-with",
                   "connect-protocol-version", "connect-timeout-ms", "connect-content-encoding",
                   "connect-accept-encoding", "content-encoding", "grpc-encoding", "grpc-accept-encoding",
                   "x-grpc-web", "x-user-agent")
MAX_AGE = "600"  # seconds a browser may reuse a preflight's answer


class Cors:
    def __init__(self, origins: tuple[str, ...]):
        self.enabled = bool(origins)
        self._any = "*" in origins
        self._origins = frozenset(origins)

    def allows(self, origin: str) -> bool:
        return self._any or origin.lower() in self._origins

    @staticmethod
    def is_preflight(request: Request) -> bool:
        return request.method == "OPTIONS" and "origin" in request.headers \
            and "access-control-request-method" in request.headers

    def preflight(self, request: Request, methods: list[str]) -> Response:
        """The answer to a preflight for a path that takes `methods`: 204, or 403 naming what is not allowed."""
        origin = request.headers["origin"]
        wanted = request.headers["access-control-request-method"].upper()
        asked = [h.strip().lower() for h in request.headers.get("access-control-request-headers", "").split(",")
                 if h.strip()]
        problem = None
        if not self.allows(origin):
            problem = f"origin {origin!r} may not call this gateway (SHOPMESH_CORS_ORIGINS)"
        elif wanted not in methods:
            problem = f"{wanted} is not allowed on {request.path}; use {', '.join(methods)}"
        elif refused := [h for h in asked if h not in ALLOWED_HEADERS]:
            problem = f"request header(s) {', '.join(refused)} are not read here; allowed: {', '.join(ALLOWED_HEADERS)}"
        if problem is not None:
            raise Failure(403, problem, headers=[("vary", "origin")])
        return Response(204, b"", headers=[
            ("access-control-allow-origin", self._allow_origin(origin)),
            ("access-control-allow-methods", ", ".join(methods)),
            ("access-control-allow-headers", ", ".join(asked) if asked else ", ".join(ALLOWED_HEADERS)),
            ("access-control-max-age", MAX_AGE),
            ("vary", "origin"),
        ])

    def decorate(self, request: Request, response: Response) -> Response:
        """An answer to a page from an allowed origin says so, and lets the page read its headers.

        A copy: the pages are shared responses."""
        headers = self.headers_for(request)
        return replace(response, headers=[*response.headers, *headers]) if headers else response

    def headers_for(self, request: Request) -> list[tuple[str, str]]:
        origin = request.headers.get("origin")
        if origin is None or not self.allows(origin) or request.method == "OPTIONS":
            return []
        return [("access-control-allow-origin", self._allow_origin(origin)), ("access-control-expose-headers", "*"),
                ("vary", "origin")]

    def _allow_origin(self, origin: str) -> str:
        return "*" if self._any else origin
