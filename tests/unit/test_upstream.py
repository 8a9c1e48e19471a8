"""The one upstream call's pure rules (gateway/upstream.py): deadlines, and which headers are metadata."""

from __future__ import annotations

import grpc
import pytest

from gateway.auth import Principal
from gateway.errors import Failure
from gateway.routes import routes_from
from gateway.upstream import DEADLINE_OFFSET, Deadline, Method, Upstream, connect_timeout, grpc_timeout, metadata_of
from generated.shop.inventory.v1 import inventory_pb2
from generated.shop.notification.v1 import notification_pb2
from mesh.rpc import identity
from mesh.server.http import Request
from mesh.settings import Settings

SETTINGS = Settings.from_env("gateway", {"SHOPMESH_HTTP_TIMEOUT_SECONDS": "7",
                              "SHOPMESH_HTTP_MAX_TIMEOUT_SECONDS": "60"})
UNARY = Method.of(inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].methods_by_name["GetProduct"], "inventory")
STREAM = Method.of(notification_pb2.DESCRIPTOR.services_by_name["NotificationService"].methods_by_name["StreamNotifications"],
                   "notification")


def request(**headers: str) -> Request:
    return Request("POST", "/x", "", headers)


def test_without_a_deadline_a_unary_call_gets_the_default_and_a_stream_none() -> None:
    upstream = Upstream(SETTINGS, upstreams=None)  # type: ignore[arg-type]
    assert upstream.timeout(UNARY, None) == 7.0
    assert upstream.timeout(STREAM, None) is None


def test_the_callers_deadline_is_passed_on_a_little_sooner_in_every_protocol() -> None:
    upstream = Upstream(SETTINGS, upstreams=None)  # type: ignore[arg-type]
    for asked in (grpc_timeout(request(**{"grpc-timeout": "2S"}), 60), connect_timeout(request(**{"connect-timeout-ms": "2000"}), 60)):
        assert asked is not None
        assert upstream.timeout(UNARY, asked) == pytest.approx(2.0 - DEADLINE_OFFSET)
        assert upstream.timeout(STREAM, asked) == pytest.approx(2.0 - DEADLINE_OFFSET)
    assert upstream.timeout(UNARY, Deadline(0.03, "x")) == 0.03  # too short to shorten


@pytest.mark.parametrize(("header", "value"), [("grpc-timeout", "0m"), ("grpc-timeout", "999u"), ("connect-timeout-ms", "0")])
def test_a_deadline_over_before_the_call_is_deadline_exceeded_naming_it(header: str, value: str) -> None:
    upstream = Upstream(SETTINGS, upstreams=None)  # type: ignore[arg-type]
    asked = (grpc_timeout if header == "grpc-timeout" else connect_timeout)(request(**{header: value}), 60)
    with pytest.raises(Failure) as caught:
        upstream.timeout(UNARY, asked)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED and caught.value.status == 504
    assert f"{header} {value}" in caught.value.message


def test_a_deadline_is_capped_and_a_malformed_one_refused_by_name() -> None:
    assert grpc_timeout(request(**{"grpc-timeout": "99999999H"}), 60) == Deadline(60, "grpc-timeout 99999999H")
    for header, value in (("grpc-timeout", "soon"), ("grpc-timeout", "123456789S"), ("connect-timeout-ms", "12345678901")):
        with pytest.raises(Failure) as caught:
            (grpc_timeout if header == "grpc-timeout" else connect_timeout)(request(**{header: value}), 60)
        assert caught.value.status == 400 and header in caught.value.message


def test_only_what_a_grpc_client_could_send_is_metadata_and_the_gateway_names_the_caller() -> None:
    found = metadata_of(request(**{
        "x-tenant": "acme", "authorization": "Bearer t", "trace-bin": "AAE=", "cookie": "s=1", "host": "h",
        identity.USER: "mallory", identity.ADMIN: "1", "x-shopmesh-soft-errors": "1", "connect-timeout-ms": "5",
        "sec-fetch-mode": "cors", "x-forwarded-for": "10.0.0.1", "Bad Key": "x", "x-odd": "caf\u00e9"}),
        Principal("carol", admin=False))
    assert dict(found) == {"x-tenant": "acme", "authorization": "Bearer t", "trace-bin": b"\x00\x01",
                           **dict(identity.metadata("carol", False))}


def test_a_binary_header_that_is_not_base64_is_the_callers_mistake() -> None:
    with pytest.raises(Failure) as caught:
        metadata_of(request(**{"trace-bin": "%%%"}), None)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT and "trace-bin" in caught.value.message


def test_rest_and_the_rpc_protocols_call_one_method_object_per_rpc() -> None:
    route = next(r for r in routes_from([inventory_pb2.DESCRIPTOR]) if r.rpc.endswith("/GetProduct"))
    assert Method.of(route.method, route.service).path == UNARY.path == route.rpc
