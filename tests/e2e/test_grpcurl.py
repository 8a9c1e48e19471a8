"""grpcurl against the launcher's mesh: by reflection, and with the protoset from generated/."""

from __future__ import annotations

import json
import subprocess
import uuid

from tests.conftest import ROOT
from tests.support.mesh import Launcher
from tests.support.metrics import scrape, value
from tests.support.waiting import eventually


def run(grpcurl: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([grpcurl, "-plaintext", *args], capture_output=True, text=True, timeout=timeout)


def test_each_service_lists_itself_health_and_reflection(grpcurl: str, launcher: Launcher) -> None:
    for service, name in [
        ("inventory", "shop.inventory.v1.InventoryService"),
        ("order", "shop.order.v1.OrderService"),
        ("notification", "shop.notification.v1.NotificationService"),
    ]:
        listed = run(grpcurl, launcher.address(service), "list")
        assert listed.returncode == 0, listed.stderr
        assert set(listed.stdout.split()) >= {name, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                                              "grpc.reflection.v1alpha.ServerReflection"}


def test_describe_shows_the_order_contract(grpcurl: str, launcher: Launcher) -> None:
    described = run(grpcurl, launcher.address("order"), "describe", "shop.order.v1.OrderService")
    assert described.returncode == 0, described.stderr
    for rpc in ("CreateOrder", "GetOrder", "ListOrders", "CancelOrder"):
        assert f"rpc {rpc}" in described.stdout
    message = run(grpcurl, launcher.address("order"), "describe", "shop.order.v1.CreateOrderRequest")
    assert "request_id" in message.stdout and "repeated .shop.order.v1.OrderLine lines" in message.stdout


def test_an_order_placed_with_grpcurl_reads_back_and_is_announced_on_the_stream(
    grpcurl: str, launcher: Launcher
) -> None:
    user = f"grpcurl-{uuid.uuid4().hex[:8]}"
    page = f"http://127.0.0.1:{launcher.metrics_ports['notification']}/metrics"
    before = value(scrape(page), "shop_notification_streams_open")
    watcher = subprocess.Popen(
        [grpcurl, "-plaintext", "-max-time", "6", "-d", json.dumps({"user_id": user}),
         launcher.address("notification"), "shop.notification.v1.NotificationService/StreamNotifications"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # The stream follows the user before the order exists: the gauge counts a stream once it does.
    eventually(lambda: value(scrape(page), "shop_notification_streams_open") > before, 10, "the stream to open")
    body = {"user_id": user, "request_id": str(uuid.uuid4()), "lines": [{"sku": "coffee-mug", "quantity": 2}]}
    created = run(grpcurl, "-d", json.dumps(body), launcher.address("order"), "shop.order.v1.OrderService/CreateOrder")
    assert created.returncode == 0, created.stderr
    order = json.loads(created.stdout)
    assert order["status"] == "CONFIRMED"
    assert order["total"] == {"currency_code": "USD", "minor_units": "2598"}

    got = run(grpcurl, "-d", json.dumps({"order_id": order["order_id"]}), launcher.address("order"),
              "shop.order.v1.OrderService/GetOrder")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == order

    out, _ = watcher.communicate(timeout=30)
    streamed = [json.loads(chunk) for chunk in out.replace("}\n{", "}\x00{").split("\x00") if chunk.strip()]
    assert [n["event_id"] for n in streamed] == [f"order.created:{order['order_id']}"]


def test_grpcurl_sees_a_named_field_error_not_an_internal_one(grpcurl: str, launcher: Launcher) -> None:
    body = {"user_id": "u", "request_id": "r", "lines": [{"sku": "coffee-mug", "quantity": 0}]}
    result = run(grpcurl, "-d", json.dumps(body), launcher.address("order"), "shop.order.v1.OrderService/CreateOrder")
    assert result.returncode != 0
    assert "Code: InvalidArgument" in result.stderr
    assert "lines[0].quantity" in result.stderr


def test_grpcurl_with_the_protoset_instead_of_reflection_sees_the_rules_too(grpcurl: str, launcher: Launcher) -> None:
    protoset = str(ROOT / "generated" / "shopmesh.protoset")
    described = run(grpcurl, "-protoset", protoset, "describe", "shop.order.v1.CreateOrderRequest")
    assert described.returncode == 0, described.stderr
    assert "repeated: { min_items: 1, max_items: 100 }" in described.stdout, described.stdout
    sku = f"protoset-{uuid.uuid4().hex[:6]}"
    created = run(grpcurl, "-protoset", protoset, "-d", json.dumps(
        {"product": {"sku": sku, "name": "Protoset mug", "price": {"currency_code": "USD", "minor_units": 500},
                     "available": 3}}), launcher.address("inventory"), "shop.inventory.v1.InventoryService/CreateProduct")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["sku"] == sku


def test_describe_resolves_methods_fields_enums_and_their_values(grpcurl: str, launcher: Launcher) -> None:
    """Issue 11.9: `describe` of a method said "Symbol not found"; every kind of symbol resolves now."""
    for symbol, shows in [
        ("shop.order.v1.OrderService.CreateOrder", "rpc CreateOrder ( .shop.order.v1.CreateOrderRequest )"),
        ("shop.order.v1.CreateOrderRequest.request_id", "string request_id = 1"),
        ("shop.order.v1.Order.Status", "enum Status {"),
        ("shop.order.v1.Order.CONFIRMED", "CONFIRMED = "),
        ("grpc.reflection.v1.ServerReflection", "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest )"),
    ]:
        described = run(grpcurl, launcher.address("order"), "describe", symbol)
        assert described.returncode == 0, f"{symbol}: {described.stderr}"
        assert shows in described.stdout, described.stdout
    missing = run(grpcurl, launcher.address("order"), "describe", "shop.order.v1.OrderService.NoSuchRpc")
    assert missing.returncode != 0 and "not found" in missing.stderr.lower()


def buf_curl(launcher: Launcher, protocol: str, method: str, body: dict) -> subprocess.CompletedProcess[str]:
    from tests.conftest import tool

    buf = tool("buf")
    return subprocess.run([buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", protocol,
                           "--data", json.dumps(body), f"http://{launcher.address('inventory')}/{method}"],
                          capture_output=True, text=True, timeout=60)


def test_buf_curl_calls_by_reflection_over_v1_and_over_v1alpha(launcher: Launcher) -> None:
    for protocol in ("grpc-v1", "grpc-v1alpha"):
        got = buf_curl(launcher, protocol, "shop.inventory.v1.InventoryService/GetProduct", {"sku": "coffee-mug"})
        assert got.returncode == 0, f"{protocol}: {got.stderr}"
        assert json.loads(got.stdout)["sku"] == "coffee-mug"
    refused = buf_curl(launcher, "grpc-v1", "shop.inventory.v1.InventoryService/GetProduct", {"sku": "bad sku!"})
    assert refused.returncode != 0 and "invalid_argument" in refused.stderr.lower()
