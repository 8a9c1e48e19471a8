"""HTTP routes read from the `google.api.http` annotations of every RPC, nothing hand-written.

A path template (`/v1/orders/{order_id}:cancel`, `/v1/{name=shelves/*/books/*}`) is
compiled to a regular expression whose groups are the template's variables,
following the grammar in google/api/http.proto.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor, ServiceDescriptor

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_VARIABLE = re.compile(rf"\{{({_IDENT}(?:\.{_IDENT})*)(?:=([^}}]+))?\}}")


class TemplateError(ValueError):
    """A google.api.http path template this gateway cannot parse."""


@dataclass(frozen=True)
class Template:
    source: str
    regex: re.Pattern[str]
    variables: tuple[tuple[str, bool], ...]  # (field path, spans several segments)
    literal_segments: int
    verb: str = ""

    @property
    def specificity(self) -> tuple[int, int]:
        """A custom verb, then more literal segments, make a template more specific."""
        return (1 if self.verb else 0, self.literal_segments)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path)
        if found is None:
            return None
        values = {}
        for i, (name, multi) in enumerate(self.variables):
            raw = found.group(f"v{i}")
            # One segment: decode everything. Several: keep %2F as is (http.proto's rule).
            if multi:
                raw = re.sub("%2[Ff]", "%252F", raw)
            values[name] = unquote(raw)
        return values


def _segments(pattern: str) -> tuple[str, bool]:
    """Regex for a `Segments` production and whether it can span several segments."""
    parts = []
    multi = False
    for segment in pattern.split("/"):
        if segment == "**":
            parts.append(r".+")
            multi = True
        elif segment == "*":
            parts.append(r"[^/]+")
        elif segment and re.fullmatch(r"[^/{}*:]+", segment):
            parts.append(re.escape(segment))
        else:
            raise TemplateError(f"bad segment {segment!r}")
    return "/".join(parts), multi or len(parts) > 1


def _split_top(text: str) -> list[str]:
    """Splits at '/' outside braces."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            raise TemplateError("unbalanced braces")
        if ch == "/" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if depth:
        raise TemplateError("unbalanced braces")
    return [*parts, current]


def compile_template(template: str) -> Template:
    if not template.startswith("/"):
        raise TemplateError(f"{template!r}: a template starts with '/'")
    try:
        segments = _split_top(template[1:])
    except TemplateError as error:
        raise TemplateError(f"{template!r}: {error}") from None
    verb = ""
    last = segments[-1]
    colon = last.rfind(":")
    if colon > last.rfind("}"):
        segments[-1], verb = last[:colon], last[colon + 1 :]
    parts, variables, literals = [], [], 0
    for segment in segments:
        variable = _VARIABLE.fullmatch(segment)
        if variable is not None:
            sub, multi = _segments(variable.group(2) or "*")
            parts.append(f"(?P<v{len(variables)}>{sub})")
            variables.append((variable.group(1), multi))
            continue
        try:
            sub, _ = _segments(segment)
        except TemplateError as error:
            raise TemplateError(f"{template!r}: {error}") from None
        parts.append(sub)
        literals += segment not in ("*", "**")
    regex = "/" + "/".join(parts) + (":" + re.escape(verb) if verb else "")
    return Template(template, re.compile(f"^{regex}$"), tuple(variables), literals, verb)


@dataclass(frozen=True)
class Route:
    http_method: str
    template: Template
    body: str  # "" no body, "*" the whole request, else one field of it
    response_body: str
    method: MethodDescriptor
    service: str  # upstream service name: inventory, order, notification
    path_fields: frozenset[str] = field(default_factory=frozenset)

    @property
    def rpc(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        return self.method.server_streaming


def _bindings(rule: http_pb2.HttpRule) -> Iterator[http_pb2.HttpRule]:
    yield rule
    for extra in rule.additional_bindings:
        yield from _bindings(extra)


def _verb(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    if kind is None:
        raise TemplateError("an HttpRule without a pattern")
    return kind.upper(), getattr(rule, kind)


def upstream_of(service: ServiceDescriptor) -> str:
    """`shop.order.v1.OrderService` is served by the `order` service."""
    parts = service.full_name.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "shop" else service.full_name


def services_of(files: Iterable[FileDescriptor], only: Iterable[str] | None = None) -> list[ServiceDescriptor]:
    """The files' services; with `only`, just those full names."""
    wanted = None if only is None else set(only)
    return [service for file in files for service in file.services_by_name.values()
            if wanted is None or service.full_name in wanted]


def routes_from(files: Iterable[FileDescriptor], only: Iterable[str] | None = None) -> list[Route]:
    found = []
    for service in services_of(files, only):
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            if method.client_streaming:
                raise TemplateError(f"{method.full_name}: client streaming cannot be served over HTTP/1.1 JSON")
            for rule in _bindings(options.Extensions[annotations_pb2.http]):
                verb, path = _verb(rule)
                template = compile_template(path)
                found.append(
                    Route(
                        http_method=verb,
                        template=template,
                        body=rule.body,
                        response_body=rule.response_body,
                        method=method,
                        service=upstream_of(service),
                        path_fields=frozenset(name for name, _ in template.variables),
                    )
                )
    # Most specific first, so /v1/orders/{id}:cancel is tried before /v1/orders/{id}.
    return sorted(found, key=lambda r: (r.template.specificity, len(r.template.source)), reverse=True)


@dataclass
class Router:
    routes: list[Route]

    def match(self, http_method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """The route and its path variables; else None and the methods that path allows.

        A path ending in a custom verb that some route declares names that
        custom method: GET /v1/orders/1:cancel is a 405 (Allow: POST), not
        GetOrder of an order "1:cancel". Routes come most specific first, so
        the verb's routes are seen before any template that would take
        "1:cancel" as a variable. `Allow` names the methods of the most
        specific template the path fits. A GET route takes HEAD too
        (RFC 9110 9.3.2: GET without the body).
        """
        wanted = "GET" if http_method == "HEAD" else http_method
        allowed: list[str] = []
        best: tuple[int, int] | None = None
        for route in self.routes:
            values = route.template.match(path)
            if values is None or (best is not None and best[0] and not route.template.verb):
                continue
            if route.http_method == wanted:
                return route, values, []
            if best is None or route.template.specificity == best:
                best = route.template.specificity
                allowed.append(route.http_method)
        return None, {}, with_head(sorted(set(allowed)))


def with_head(methods: list[str]) -> list[str]:
    """The methods a resource allows, HEAD included wherever GET is."""
    return [*methods, "HEAD"] if "GET" in methods and "HEAD" not in methods else methods
