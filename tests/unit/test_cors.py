"""CORS decisions: which origins, methods and headers a preflight allows, and what an answer carries."""

from __future__ import annotations

import pytest

from gateway.cors import ALLOWED_HEADERS, Cors
from gateway.errors import Failure
from mesh.server.http import Request, Response
from mesh.settings import Settings, SettingsError

PAGE = "https://shop.example.com"


def preflight(origin: str, method: str, headers: str = "") -> Request:
    wanted = {"origin": origin, "access-control-request-method": method}
    if headers:
        wanted["access-control-request-headers"] = headers
    return Request("OPTIONS", "/v1/orders", "", wanted)


def test_a_preflight_from_an_allowed_origin_names_methods_headers_and_how_long_to_keep_it() -> None:
    answer = Cors((PAGE,)).preflight(preflight(PAGE, "POST", "Content-Type, Idempotency-Key"), ["GET", "POST"])
    headers = dict(answer.headers)
    assert answer.status == 204 and headers["access-control-allow-origin"] == PAGE
    assert headers["access-control-allow-methods"] == "GET, POST"
    assert headers["access-control-allow-headers"] == "content-type, idempotency-key"
    assert headers["access-control-max-age"] == "600" and headers["vary"] == "origin"


@pytest.mark.parametrize(("origin", "method", "asked", "says"), [
    ("https://evil.example", "POST", "", "origin 'https://evil.example' may not call"),
    (PAGE, "DELETE", "", "DELETE is not allowed on /v1/orders; use GET, POST"),
    (PAGE, "POST", "content-type, x-secret", "request header(s) x-secret are not read here"),
])
def test_a_preflight_that_asks_too_much_is_refused_naming_what(origin: str, method: str, asked: str, says: str) -> None:
    with pytest.raises(Failure) as refused:
        Cors((PAGE,)).preflight(preflight(origin, method, asked), ["GET", "POST"])
    assert refused.value.status == 403 and refused.value.code.name == "PERMISSION_DENIED"
    assert says in refused.value.message
    assert not any(name == "access-control-allow-origin" for name, _ in refused.value.headers)


def test_answers_to_allowed_origins_carry_the_headers_on_a_copy() -> None:
    shared = Response(200, b"{}")
    cors = Cors((PAGE,))
    answer = cors.decorate(Request("GET", "/", "", {"origin": PAGE}), shared)
    assert dict(answer.headers)["access-control-allow-origin"] == PAGE
    assert dict(answer.headers)["access-control-expose-headers"] == "*"
    assert shared.headers == []  # the pages are shared responses: never changed in place
    assert cors.decorate(Request("GET", "/", "", {"origin": "https://evil.example"}), shared) is shared
    assert cors.decorate(Request("GET", "/", "", {}), shared) is shared  # not a cross-origin call


def test_any_origin_with_a_star_and_every_gateway_header_by_default() -> None:
    answer = Cors(("*",)).preflight(preflight("http://localhost:3000", "GET"), ["GET"])
    headers = dict(answer.headers)
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-headers"] == ", ".join(ALLOWED_HEADERS)


def test_origins_are_checked_when_the_gateway_starts() -> None:
    settings = Settings.from_env("gateway", {"SHOPMESH_CORS_ORIGINS": "https://Shop.example.com, http://127.0.0.1:3000"})
    assert settings.cors_origins == ("https://shop.example.com", "http://127.0.0.1:3000")
    with pytest.raises(SettingsError, match="SHOPMESH_CORS_ORIGINS: 'https://shop.example.com/app'"):
        Settings.from_env("gateway", {"SHOPMESH_CORS_ORIGINS": "https://shop.example.com/app"})
