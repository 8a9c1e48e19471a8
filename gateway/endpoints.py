"""Every resource the gateway serves, in one table: dispatch, 405/Allow, CORS preflights and the
OpenAPI document all read it, so a resource cannot be served and undocumented, or documented and
refused.

Two kinds of entry: the gateway's own fixed paths (`/healthz`, `/me`, the pages, ...), each
method its own `Endpoint`, and the contracts' routes (`gateway/routes.py`), each one served by
REST (gateway/rest.py). A GET endpoint takes HEAD too (RFC 9110 9.3.2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from gateway.auth import Need
from gateway.errors import Failure
from gateway.routes import Route, Router, with_head
from mesh.server.http import Request, Response

Serve = Callable[[Request], Awaitable[Response]]
UNMATCHED = "unmatched"  # the metric label of requests no endpoint takes (their paths are unbounded)


@dataclass(frozen=True)
class Doc:
    """What the OpenAPI document says of one of the gateway's own endpoints."""

    operation_id: str
    summary: str
    schema: str  # a components/schemas name
    codes: tuple[str, ...] = ("200",)
    signed_in: bool = False  # the operation takes credentials
    sets_cookie: bool = False


@dataclass(frozen=True)
class Endpoint:
    method: str
    serve: Serve
    label: str  # its metric label: the path, or the route's template
    need: Need = Need.ANYONE
    admitted: bool = False  # goes through authentication and the rate limit
    route: Route | None = None
    doc: Doc | None = None
    rpc: str = ""  # a Connect / gRPC-Web endpoint: the method's /package.Service/Method
    streams: bool = False  # answers with a stream that stays open (counted in a client's share)
    # How a Failure raised for this endpoint is answered, when not as REST's JSON (gateway/rpc.py).
    failure_reply: Callable[[Request, Failure], Response] | None = None

    @property
    def method_name(self) -> str:
        """The gRPC method this endpoint calls, for spans and logs; "" for the gateway's own."""
        return self.route.rpc if self.route is not None else self.rpc


@dataclass(frozen=True)
class Match:
    endpoint: Endpoint | None
    values: dict[str, str] = field(default_factory=dict)  # the route's path variables
    allowed: tuple[str, ...] = ()  # when no endpoint: the methods the path takes (405), or none (404)


class Table:
    def __init__(self, own: Iterable[tuple[str, Endpoint]], routes: Iterable[tuple[Route, Endpoint]]):
        self.own: dict[str, dict[str, Endpoint]] = {}
        for path, endpoint in own:
            self.own.setdefault(path, {})[endpoint.method] = endpoint
        routes = list(routes)  # most specific first, as routes_from sorts them
        self._by_route = {id(route): endpoint for route, endpoint in routes}
        self.router = Router([route for route, _ in routes])

    def match(self, method: str, path: str) -> Match:
        fixed = self.own.get(path)
        if fixed is not None:
            endpoint = fixed.get("GET" if method == "HEAD" else method)
            return Match(endpoint) if endpoint is not None else Match(None, allowed=self._allowed(fixed))
        route, values, allowed = self.router.match(method, path)
        if route is None:
            return Match(None, allowed=tuple(allowed))
        return Match(self._by_route[id(route)], values)

    def methods(self, path: str) -> list[str]:
        """The methods `path` takes (HEAD wherever GET), for Allow and for CORS preflights."""
        fixed = self.own.get(path)
        if fixed is not None:
            return list(self._allowed(fixed))
        return self.router.match("OPTIONS", path)[2]

    @staticmethod
    def _allowed(fixed: dict[str, Endpoint]) -> tuple[str, ...]:
        return tuple(with_head(sorted(fixed)))

    def documented(self) -> list[tuple[str, Endpoint]]:
        """The own endpoints the OpenAPI document describes, in path order."""
        return [(path, endpoint) for path, methods in sorted(self.own.items())
                for endpoint in methods.values() if endpoint.doc is not None]

    @property
    def routes(self) -> list[Route]:
        return self.router.routes

