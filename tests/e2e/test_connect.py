"""The shop over Connect and gRPC-Web through the gateway (gateway/rpc.py), real processes.

The conformance suite (test_connect_conformance.py) proves the protocols against Connect's own
client; these prove the shop's promises hold on them: the contracts' field violations arrive as
google.rpc.BadRequest details, the same layers (sign-in, rate limit) answer in each protocol's
form, identity cannot be claimed by a header, a gzip bomb is refused, streams deliver.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from google.rpc import error_details_pb2, status_pb2

from generated.shop.inventory.v1 import inventory_pb2
from generated.shop.order.v1 import order_pb2
from tests.support.http import call, connect_json, frames
from tests.support.mesh import Launcher, Mesh, new_product
from tests.support.waiting import eventually

INVENTORY = "/shop.inventory.v1.InventoryService"
PAGE = "http://page.example"  # an origin the signed gateway lets call it
ORDER = "/shop.order.v1.OrderService"
NOTIFICATION = "/shop.notification.v1.NotificationService"


def grpc_web(address: str, path: str, message: bytes, **headers: str) -> tuple[dict[str, str], list[tuple[int, bytes]]]:
    status, got, data = call(address, "POST", path, struct.pack(">BI", 0, len(message)) + message,
                             {"content-type": "application/grpc-web+proto", "x-grpc-web": "1", **headers})
    assert status == 200, (status, data)
    return got, frames(data)


def trailers(block: bytes) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in block.decode().strip().split("\r\n"))


def violations(details_b64: str) -> list[tuple[str, str]]:
    status = status_pb2.Status.FromString(base64.b64decode(details_b64 + "=" * (-len(details_b64) % 4)))
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [(v.field, v.description) for v in bad.field_violations]
    return found


@pytest.fixture(scope="module")
def gateway(launcher: Launcher) -> str:
    return launcher.address("gateway")


def test_a_unary_call_in_json_and_in_proto_answers_what_rest_answers(launcher: Launcher, gateway: str) -> None:
    sku = new_product(launcher, 5, "connect")
    status, headers, product = connect_json(gateway, f"{INVENTORY}/GetProduct", {"sku": sku})
    assert status == 200 and headers["content-type"] == "application/json"
    rest = json.loads(call(gateway, "GET", f"/v1/products/{sku}")[2])
    assert product == rest
    status, headers, data = call(gateway, "POST", f"{INVENTORY}/GetProduct",
                                 inventory_pb2.GetProductRequest(sku=sku).SerializeToString(),
                                 {"content-type": "application/proto", "connect-protocol-version": "1"})
    assert status == 200 and headers["content-type"] == "application/proto"
    assert inventory_pb2.Product.FromString(data).available == 5


def test_reads_marked_side_effect_free_answer_a_connect_get_and_writes_do_not(launcher: Launcher, gateway: str) -> None:
    sku = new_product(launcher, 3, "connect-get")
    message = base64.urlsafe_b64encode(inventory_pb2.GetProductRequest(sku=sku).SerializeToString()).decode().rstrip("=")
    status, _, data = call(gateway, "GET", f"{INVENTORY}/GetProduct?connect=v1&encoding=proto&base64=1&message={message}")
    assert status == 200 and inventory_pb2.Product.FromString(data).sku == sku
    status, headers, data = call(gateway, "HEAD", f"{INVENTORY}/GetProduct?connect=v1&encoding=proto&base64=1&message={message}")
    assert status == 200 and data == b"" and int(headers["content-length"]) > len(sku)  # the GET's length, no body
    raw = quote(inventory_pb2.GetProductRequest(sku=sku).SerializeToString())  # binary, percent-escaped byte by byte
    status, _, data = call(gateway, "GET", f"{INVENTORY}/GetProduct?connect=v1&encoding=proto&message={raw}")
    assert status == 200 and inventory_pb2.Product.FromString(data).sku == sku
    text = quote(json.dumps({"sku": sku}))
    status, _, data = call(gateway, "GET", f"{INVENTORY}/GetProduct?connect=v1&encoding=json&message={text}")
    assert status == 200 and json.loads(data)["sku"] == sku
    status, headers, _ = call(gateway, "GET", f"{ORDER}/CreateOrder?connect=v1&encoding=json&message=%7B%7D")
    assert status == 405 and headers["allow"] == "POST"


def test_broken_field_rules_come_back_as_bad_request_details_in_both_protocols(gateway: str) -> None:
    bad = {"userId": "", "requestId": "r", "lines": [{"sku": "bad sku!", "quantity": 0}]}
    status, _, error = connect_json(gateway, f"{ORDER}/CreateOrder", bad)
    assert status == 400 and error["code"] == "invalid_argument", error
    (detail,) = error["details"]
    assert detail["type"] == "google.rpc.BadRequest"
    named = {v.field for v in error_details_pb2.BadRequest.FromString(
        base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))).field_violations}
    assert {"user_id", "lines[0].sku", "lines[0].quantity"} <= named, named  # proto names, as gRPC clients get
    request = order_pb2.CreateOrderRequest(request_id="r", lines=[order_pb2.OrderLine(sku="x", quantity=0)])
    headers, body = grpc_web(gateway, f"{ORDER}/CreateOrder", request.SerializeToString())
    assert body == [] and headers["grpc-status"] == "3"  # trailers-only: the status in the headers
    assert "lines[0].quantity" in {field for field, _ in violations(headers["grpc-status-details-bin"])}


def test_an_order_over_grpc_web_is_placed_and_its_trailers_say_ok(launcher: Launcher, gateway: str) -> None:
    sku = new_product(launcher, 4, "grpc-web")
    request = order_pb2.CreateOrderRequest(request_id=str(uuid.uuid4()), user_id="web-user",
                                           lines=[order_pb2.OrderLine(sku=sku, quantity=2)])
    _, body = grpc_web(gateway, f"{ORDER}/CreateOrder", request.SerializeToString())
    (flags, message), (end, block) = body
    assert flags == 0 and order_pb2.Order.FromString(message).status == order_pb2.Order.CONFIRMED
    assert end == 0x80 and trailers(block)["grpc-status"] == "0"
    # The same call again (same request id) is the same order, not a second one.
    _, again = grpc_web(gateway, f"{ORDER}/CreateOrder", request.SerializeToString())
    assert order_pb2.Order.FromString(again[0][1]).order_id == order_pb2.Order.FromString(message).order_id
    product = json.loads(call(gateway, "GET", f"/v1/products/{sku}")[2])
    assert product["available"] == "2" and product["sold"] == "2"


def test_grpc_web_text_is_base64_both_ways(launcher: Launcher, gateway: str) -> None:
    sku = new_product(launcher, 1, "web-text")
    message = inventory_pb2.GetProductRequest(sku=sku).SerializeToString()
    status, headers, data = call(gateway, "POST", f"{INVENTORY}/GetProduct",
                                 base64.b64encode(struct.pack(">BI", 0, len(message)) + message),
                                 {"content-type": "application/grpc-web-text"})
    assert status == 200 and headers["content-type"] == "application/grpc-web-text+proto"
    decoded = b"".join(base64.b64decode(chunk + b"=" * (-len(chunk) % 4)) for chunk in data.split(b"=") if chunk)
    assert inventory_pb2.Product.FromString(frames(decoded)[0][1]).sku == sku


def test_gzip_bodies_are_read_and_a_gzip_bomb_is_refused_without_hurting_anyone(launcher: Launcher, gateway: str) -> None:
    sku = new_product(launcher, 2, "gzip")
    packed = gzip.compress(json.dumps({"sku": sku}).encode())
    status, _, data = call(gateway, "POST", f"{INVENTORY}/GetProduct", packed,
                           {"content-type": "application/json", "content-encoding": "gzip"})
    assert status == 200 and json.loads(data)["sku"] == sku
    bomb = gzip.compress(b'{"sku":"' + b"a" * (64 * 1024 * 1024) + b'"}')  # 64 MiB of JSON in ~64 KiB
    assert len(bomb) < 1024 * 1024
    status, _, data = call(gateway, "POST", f"{INVENTORY}/GetProduct", bomb,
                           {"content-type": "application/json", "content-encoding": "gzip"})
    assert status == 429 and json.loads(data)["code"] == "resource_exhausted", data
    status, _, data = call(gateway, "POST", f"{INVENTORY}/GetProduct", b"{}",
                           {"content-type": "application/json", "content-encoding": "br"})
    assert status == 501 and "content-encoding 'br' is not supported" in json.loads(data)["message"]
    status, _, _ = connect_json(gateway, f"{INVENTORY}/GetProduct", {"sku": sku})  # and the next caller is fine
    assert status == 200


def test_protocol_mistakes_are_named(gateway: str) -> None:
    status, _, error = connect_json(gateway, f"{INVENTORY}/GetProduct", {"sku": "x"}, **{"connect-timeout-ms": "soon"})
    assert status == 400 and "connect-timeout-ms" in error["message"]
    status, _, error = connect_json(gateway, f"{INVENTORY}/GetProduct", {"sku": "x"}, **{"connect-timeout-ms": "0"})
    assert status == 504 and error["code"] == "deadline_exceeded"  # over before any call: answered at once
    status, _, error = connect_json(gateway, f"{INVENTORY}/GetProduct", {"sku": "x"},
                                    **{"connect-timeout-ms": "12345678901"})  # 11 digits: not a Connect timeout
    assert status == 400 and "connect-timeout-ms" in error["message"]
    status, _, _ = connect_json(gateway, f"{INVENTORY}/GetProduct", {"sku": "no-such"},
                                **{"connect-timeout-ms": "9999999999"})  # 115 days: capped, and answered
    assert status == 404
    status, _, error = connect_json(gateway, f"{INVENTORY}/GetProduct", {"skew": "x"})
    assert status == 400 and "skew: unknown field" in error["message"]
    status, headers, data = call(gateway, "POST", f"{INVENTORY}/GetProduct", b"x", {"content-type": "text/plain"})
    assert status == 415 and "application/proto" in headers["accept-post"] and b"text/plain" in data
    status, _, _ = call(gateway, "POST", "/shop.inventory.v1.InventoryService/NoSuchMethod", b"",
                        {"content-type": "application/proto"})
    assert status == 404
    # Two messages where a server stream takes one: UNIMPLEMENTED, as a cardinality violation is.
    one = struct.pack(">BI", 0, 0)
    status, _, data = call(gateway, "POST", f"{NOTIFICATION}/StreamNotifications", one + one,
                           {"content-type": "application/connect+proto"})
    (flags, end), = frames(data)
    assert status == 200 and flags == 0x02 and json.loads(end)["error"]["code"] == "unimplemented"


def test_notifications_stream_over_connect_as_orders_are_placed(launcher: Launcher, gateway: str) -> None:
    sku = new_product(launcher, 3, "connect-stream")
    user = f"stream-{uuid.uuid4().hex[:8]}"
    host, port = gateway.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    request = json.dumps({"userId": user}).encode()
    connection.request("POST", f"{NOTIFICATION}/StreamNotifications", body=struct.pack(">BI", 0, len(request)) + request,
                       headers={"content-type": "application/connect+json", "connect-protocol-version": "1"})
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("content-type") == "application/connect+json"
    status, _, order = connect_json(gateway, f"{ORDER}/CreateOrder", {
        "userId": user, "requestId": str(uuid.uuid4()), "lines": [{"sku": sku, "quantity": 1}]})
    assert status == 200, order
    flags, size = struct.unpack(">BI", response.read(5))
    note = json.loads(response.read(size))
    assert flags == 0 and note["userId"] == user and order["orderId"] in json.dumps(note)
    connection.close()


@pytest.fixture
def signed(tmp_path: Path) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path / "mesh")
    for service in ("inventory", "notification", "order"):
        mesh.start(service)
    mesh.start("gateway", SHOPMESH_AUTH="on", SHOPMESH_API_KEYS="carol-key-0123=carol,dave-key-0123=dave",
               SHOPMESH_JWT_SECRET="connect-secret-connect-secret-0123", SHOPMESH_RATE_LIMIT_PER_SECOND="2",
               SHOPMESH_RATE_LIMIT_BURST="20", SHOPMESH_CORS_ORIGINS=PAGE)
    yield mesh
    mesh.stop_all()


def test_sign_in_rate_limits_and_identity_hold_over_connect_and_grpc_web(signed: Mesh) -> None:
    gateway = signed.address("gateway")
    sku = new_product(signed, 5, "signed")
    status, headers, error = connect_json(gateway, f"{ORDER}/ListOrders", {"userId": "carol"})
    assert status == 401 and error["code"] == "unauthenticated" and "www-authenticate" in headers
    headers, body = grpc_web(gateway, f"{ORDER}/ListOrders", order_pb2.ListOrdersRequest(user_id="carol").SerializeToString())
    assert body == [] and headers["grpc-status"] == "16"
    status, _, order = connect_json(gateway, f"{ORDER}/CreateOrder", {
        "requestId": str(uuid.uuid4()), "lines": [{"sku": sku, "quantity": 1}]}, **{"x-api-key": "carol-key-0123"})
    assert status == 200 and order["userId"] == "carol"  # filled in from the key, as over REST
    # Dave claims to be carol, then an admin, by the mesh's own identity headers: neither reaches
    # the order service, which answers as for anyone else's order.
    status, _, error = connect_json(gateway, f"{ORDER}/GetOrder", {"orderId": order["orderId"]},
                                    **{"x-api-key": "dave-key-0123", "x-shopmesh-user": "carol", "x-shopmesh-admin": "true"})
    assert status == 404 and error["code"] == "not_found", error
    status, _, error = connect_json(gateway, f"{ORDER}/CreateOrder", {
        "userId": "carol", "requestId": str(uuid.uuid4()), "lines": [{"sku": sku, "quantity": 1}]},
        **{"x-api-key": "dave-key-0123"})
    assert status == 403 and error["code"] == "permission_denied"
    limited = None
    for _ in range(40):
        status, headers, error = connect_json(gateway, f"{INVENTORY}/GetProduct", {"sku": sku},
                                              **{"x-api-key": "dave-key-0123"})
        if status == 429:
            limited = (headers, error)
            break
    assert limited is not None, "the rate limit never answered"
    assert limited[1]["code"] == "resource_exhausted" and "retry-after" in limited[0]
    status, _, _ = connect_json(gateway, f"{INVENTORY}/GetProduct", {"sku": sku}, **{"x-api-key": "carol-key-0123"})
    assert status == 200  # carol has her own bucket


def test_a_body_over_the_limit_is_refused_in_each_protocols_form(gateway: str) -> None:
    import socket

    host, port = gateway.split(":")
    for content_type, expect in [("application/json", b'"code":"resource_exhausted"'),
                                 ("application/grpc-web+proto", b"grpc-status: 8")]:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"POST {INVENTORY}/GetProduct HTTP/1.1\r\nhost: t\r\ncontent-type: {content_type}\r\n"
                         "content-length: 50000000\r\n\r\n".encode())
            answer = sock.recv(4096)  # refused from the headers alone: no body was sent
        assert b"exceeds the limit" in answer and expect in answer, answer
    # REST keeps its own form (tests/e2e/test_gateway.py): a 413 with the numeric code.


def test_a_page_of_another_origin_may_speak_connect_and_grpc_web_through_cors(signed: Mesh) -> None:
    gateway = signed.address("gateway")
    asked = "content-type,connect-protocol-version,connect-timeout-ms,x-api-key,x-grpc-web,x-user-agent,grpc-timeout"
    status, headers, _ = call(gateway, "OPTIONS", f"{INVENTORY}/GetProduct", headers={
        "origin": PAGE, "access-control-request-method": "POST", "access-control-request-headers": asked})
    assert status == 204 and headers["access-control-allow-origin"] == PAGE, headers
    assert set(headers["access-control-allow-methods"].split(", ")) >= {"GET", "POST"}  # a read: Connect GETs too
    assert set(headers["access-control-allow-headers"].split(", ")) == set(asked.split(","))
    status, _, _ = call(gateway, "OPTIONS", f"{ORDER}/CreateOrder", headers={
        "origin": "http://evil.example", "access-control-request-method": "POST"})
    assert status == 403
    # An error to the page (no sign-in) is readable by it: its grpc-status header is exposed.
    status, headers, data = call(gateway, "POST", f"{ORDER}/ListOrders", grpc_web_frame(
        order_pb2.ListOrdersRequest(user_id="carol")), {"content-type": "application/grpc-web+proto", "origin": PAGE})
    assert status == 200 and headers["grpc-status"] == "16" and headers["access-control-allow-origin"] == PAGE
    assert headers["access-control-expose-headers"] == "*"


def grpc_web_frame(message: Any) -> bytes:
    data = message.SerializeToString()
    return struct.pack(">BI", 0, len(data)) + data


def test_connect_calls_are_counted_by_their_method_path(launcher: Launcher, gateway: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    sku = new_product(launcher, 1, "metrics")

    def answered() -> dict[str, float]:
        page = call(gateway, "GET", "/metrics")[2].decode()
        return {s.labels["code"]: s.value for family in text_string_to_metric_families(page) for s in family.samples
                if s.name == "http_requests_total" and s.labels.get("route") == f"{INVENTORY}/GetProduct"
                and s.labels.get("method") == "POST"}

    before = answered()
    for _ in range(3):
        assert connect_json(gateway, f"{INVENTORY}/GetProduct", {"sku": sku})[0] == 200
    assert connect_json(gateway, f"{INVENTORY}/GetProduct", {"sku": "no-such-sku"})[0] == 404
    after = answered()
    assert after.get("200", 0) - before.get("200", 0) == 3 and after.get("404", 0) - before.get("404", 0) == 1


def test_hundreds_of_connect_streams_dropped_mid_flight_leave_nothing_behind_and_a_polite_page_is_notified(
        launcher: Launcher, gateway: str) -> None:
    import socket

    host, port = gateway.split(":")
    churner = f"churn-{uuid.uuid4().hex[:8]}"
    request = json.dumps({"userId": churner}).encode()
    frame = struct.pack(">BI", 0, len(request)) + request
    for _ in range(4):
        # Fifty pages, each from an address of its own (one client may hold only its share of streams).
        socks = [socket.create_connection((host, int(port)), timeout=15, source_address=(f"127.0.2.{i + 1}", 0))
                 for i in range(50)]
        for sock in socks:
            sock.sendall(f"POST {NOTIFICATION}/StreamNotifications HTTP/1.1\r\nhost: t\r\n"
                         f"content-type: application/connect+json\r\ncontent-length: {len(frame)}\r\n\r\n".encode()
                         + frame)
        for sock in socks:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        for sock in socks:
            sock.close()  # gone without a word, mid-stream
    eventually(lambda: launcher.output().count(f"stream closed for user {churner}") >= 200, 15,
               "every upstream stream to end with its client")
    # Meanwhile a polite page's stream still gets its notification at once.
    test_notifications_stream_over_connect_as_orders_are_placed(launcher, gateway)
