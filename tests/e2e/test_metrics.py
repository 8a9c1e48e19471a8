"""Prometheus /metrics on every process: counters move by exactly the calls made, with the right labels."""

from __future__ import annotations

import http.client
import json
import re
import socket
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest

from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tests.support.mesh import Launcher, Mesh, new_product
from tests.support.metrics import Sample, scrape, value
from tests.support.waiting import eventually


class Pages:
    def __init__(self, launcher: Launcher):
        self.urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in launcher.metrics_ports.items()}
        self.urls["gateway"] = f"http://{launcher.address('gateway')}/metrics"

    def all(self) -> dict[str, dict[Sample, float]]:
        return {name: scrape(url) for name, url in self.urls.items()}


@pytest.fixture(scope="module")
def pages(launcher: Launcher) -> Pages:
    return Pages(launcher)


def rpc(method: str, code: str | None = None, kind: str = "unary", service: str = "shop.inventory.v1.InventoryService"
        ) -> dict[str, str]:
    labels = {"grpc_type": kind, "grpc_service": service, "grpc_method": method}
    return labels if code is None else {**labels, "grpc_code": code}


def gateway_call(launcher: Launcher, method: str, path: str, body: dict | None = None) -> int:
    host, port = launcher.address("gateway").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                 headers={"content-type": "application/json"} if body is not None else {})
    status = conn.getresponse().status
    conn.close()
    return status


def test_server_counters_move_by_exactly_the_calls_made_with_their_status_codes(launcher: Launcher,
                                                                                 pages: Pages) -> None:
    sku = new_product(launcher, prefix="metrics", stock=5)
    before = scrape(pages.urls["inventory"])
    with grpc.insecure_channel(launcher.address("inventory")) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        for _ in range(3):
            stub.GetProduct(inventory_pb2.GetProductRequest(sku=sku))
        for bad, code in (("no-such-sku", grpc.StatusCode.NOT_FOUND), ("no-such-sku-2", grpc.StatusCode.NOT_FOUND),
                          ("NOT A SKU!", grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(grpc.RpcError) as failed:
                stub.GetProduct(inventory_pb2.GetProductRequest(sku=bad))
            assert failed.value.code() == code
    after = scrape(pages.urls["inventory"])

    def delta(name: str, labels: dict[str, str]) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("grpc_server_started_total", rpc("GetProduct")) == 6
    assert delta("grpc_server_handled_total", rpc("GetProduct", "OK")) == 3
    assert delta("grpc_server_handled_total", rpc("GetProduct", "NOT_FOUND")) == 2
    assert delta("grpc_server_handled_total", rpc("GetProduct", "INVALID_ARGUMENT")) == 1
    assert delta("grpc_server_handling_seconds_count", rpc("GetProduct")) == 6
    assert delta("grpc_server_handling_seconds_bucket", {**rpc("GetProduct"), "le": "+Inf"}) == 6
    # A method not called yet is already listed at 0, so rate() works from its first call.
    assert ("grpc_server_handled_total", tuple(sorted(rpc("AdjustStock", "OK").items()))) in after
    print("inventory: started +6, OK +3, NOT_FOUND +2, INVALID_ARGUMENT +1, histogram count +6")


def test_the_gateway_counts_http_by_route_template_and_its_grpc_calls_as_a_client(launcher: Launcher,
                                                                                   pages: Pages) -> None:
    sku = new_product(launcher, prefix="metrics", stock=5)
    before = pages.all()
    assert gateway_call(launcher, "GET", f"/v1/products/{sku}") == 200
    assert gateway_call(launcher, "GET", f"/v1/products/{sku}") == 200
    assert gateway_call(launcher, "GET", "/v1/products/missing-product") == 404
    assert gateway_call(launcher, "GET", "/v1/no/such/route") == 404
    after = pages.all()
    route = {"route": "/v1/products/{sku}", "method": "GET"}

    def delta(page: str, name: str, labels: dict[str, str]) -> float:
        return value(after[page], name, **labels) - value(before[page], name, **labels)

    assert delta("gateway", "http_requests_total", {**route, "code": "200"}) == 2
    assert delta("gateway", "http_requests_total", {**route, "code": "404"}) == 1
    assert delta("gateway", "http_requests_total", {"route": "unmatched", "method": "GET", "code": "404"}) == 1
    assert delta("gateway", "http_request_duration_seconds_count", route) == 3
    assert not any(name == "http_requests_total" and sku in str(labels) for name, labels in after["gateway"])
    assert delta("gateway", "grpc_client_handled_total", rpc("GetProduct", "OK")) == 2
    assert delta("gateway", "grpc_client_handled_total", rpc("GetProduct", "NOT_FOUND")) == 1
    assert delta("gateway", "grpc_client_handling_seconds_count", rpc("GetProduct")) == 3
    assert delta("inventory", "grpc_server_handled_total", rpc("GetProduct", "OK")) == 2
    assert delta("inventory", "grpc_server_handled_total", rpc("GetProduct", "NOT_FOUND")) == 1
    assert value(after["gateway"], "http_requests_in_flight") >= 0
    assert value(after["gateway"], "process_cpu_seconds_total") > 0
    print("gateway: route-template labels, 200 x2, 404 x1, unmatched x1; client and server sides agree")


def test_business_counters_follow_orders_reservations_and_notifications(launcher: Launcher, pages: Pages) -> None:
    sku = new_product(launcher, prefix="metrics", stock=3)
    before = pages.all()
    user = f"metered-{uuid.uuid4().hex[:6]}"
    placed = {"requestId": str(uuid.uuid4()), "userId": user, "lines": [{"sku": sku, "quantity": 2}]}
    assert gateway_call(launcher, "POST", "/v1/orders", placed) == 200
    assert gateway_call(launcher, "POST", "/v1/orders", placed) == 200  # a replay counts nothing
    too_many = {"requestId": str(uuid.uuid4()), "userId": user, "lines": [{"sku": sku, "quantity": 2}]}
    assert gateway_call(launcher, "POST", "/v1/orders", too_many) == 400  # 1 left: out of stock
    host, port = launcher.address("gateway").split(":")
    with urllib.request.urlopen(f"http://{host}:{port}/v1/users/{user}/orders", timeout=10) as reply:
        order_id = json.load(reply)["orders"][0]["orderId"]
    assert gateway_call(launcher, "POST", f"/v1/orders/{order_id}:cancel", {"reason": "metrics test"}) == 200

    now = pages.all()
    assert value(now["order"], "shop_orders_total", status="confirmed") - value(
        before["order"], "shop_orders_total", status="confirmed") == 1
    assert value(now["order"], "shop_orders_total", status="rejected") - value(
        before["order"], "shop_orders_total", status="rejected") == 1
    assert value(now["order"], "shop_orders_total", status="cancelled") - value(
        before["order"], "shop_orders_total", status="cancelled") == 1
    assert value(now["order"], "grpc_server_handled_total",
                 **rpc("CreateOrder", "FAILED_PRECONDITION", service="shop.order.v1.OrderService")) - value(
        before["order"], "grpc_server_handled_total",
        **rpc("CreateOrder", "FAILED_PRECONDITION", service="shop.order.v1.OrderService")) == 1
    for movement, units in (("reserved", 2), ("sold", 2), ("released", 2)):
        assert value(now["inventory"], "shop_inventory_units_total", movement=movement) - value(
            before["inventory"], "shop_inventory_units_total", movement=movement) == units, movement
    assert ("shop_inventory_open_reservations", ()) in now["inventory"]
    # One sale written: the replay and the refusal wrote none (what a hot product's lock time is read from).
    assert value(now["inventory"], "shop_inventory_sale_write_seconds_count") - value(
        before["inventory"], "shop_inventory_sale_write_seconds_count") == 1
    assert value(now["inventory"], "shop_inventory_sale_write_seconds_sum") > value(
        before["inventory"], "shop_inventory_sale_write_seconds_sum")
    # The order service called ReserveStock as a client: once, for the replay too (inventory replays it).
    assert value(now["order"], "grpc_client_handled_total", **rpc("ReserveStock", "OK")) - value(
        before["order"], "grpc_client_handled_total", **rpc("ReserveStock", "OK")) == 2
    # Created and cancelled: two events, two notifications, and the outbox drains to empty.
    eventually(lambda: value(scrape(pages.urls["notification"]), "shop_notifications_sent_total")
               - value(before["notification"], "shop_notifications_sent_total") == 2)
    eventually(lambda: value(scrape(pages.urls["order"]), "shop_order_outbox_pending") == 0)
    print("orders confirmed +1, rejected +1, cancelled +1; units reserved/sold/released +2; notifications +2")


def test_an_open_stream_is_counted_while_it_lasts(launcher: Launcher, pages: Pages) -> None:
    host, port = launcher.address("gateway").split(":")
    base = value(scrape(pages.urls["notification"]), "shop_notification_streams_open")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"GET /v1/users/stream-{uuid.uuid4().hex[:6]}/notifications:stream HTTP/1.1\r\nhost: t\r\n\r\n"
                 .encode())
    assert b"200 OK" in sock.recv(4096)
    eventually(lambda: value(scrape(pages.urls["notification"]), "shop_notification_streams_open") == base + 1)
    sock.close()
    eventually(lambda: value(scrape(pages.urls["notification"]), "shop_notification_streams_open") == base)
    server = scrape(pages.urls["notification"])
    labels = rpc("StreamNotifications", "CANCELLED", kind="server_stream",
                 service="shop.notification.v1.NotificationService")
    assert value(server, "grpc_server_handled_total", **labels) >= 1


def test_the_launcher_prints_every_metrics_page(launcher: Launcher) -> None:
    for port in launcher.metrics_ports.values():
        assert f"http://127.0.0.1:{port}/metrics" in launcher.output()
    assert f"http://{launcher.address('gateway')}/metrics" in launcher.output()


def test_metrics_off_serves_no_page_and_records_nothing(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path)
    try:
        mesh.start("inventory", SHOPMESH_METRICS="off")
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{mesh.metrics_ports['inventory']}/metrics", timeout=2)
    finally:
        mesh.stop_all()


PROMQL_WORDS = {"histogram_quantile", "label_values"}


def test_every_series_the_grafana_dashboard_queries_exists_on_the_live_pages(launcher: Launcher, pages: Pages) -> None:
    from tests.conftest import ROOT

    assert gateway_call(launcher, "GET", "/v1/products/coffee-mug") == 200  # client series appear with a first call
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "shopmesh.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    live = pages.all()
    names = {name for page in live.values() for name, _ in page}
    labels = {label for page in live.values() for _, pairs in page for label, _ in pairs}
    used = {word for expr in exprs for word in re.findall(r"[a-z][a-z0-9_]*_[a-z0-9_]+", expr)} - PROMQL_WORDS
    metrics_used = used - labels
    assert len(metrics_used) >= 12, metrics_used
    missing = sorted(metrics_used - names)
    assert not missing, f"the dashboard queries series no process exports: {missing}"
    print(f"{len(exprs)} dashboard queries over {len(metrics_used)} series, all exported")


def test_the_open_reservations_gauge_is_read_from_the_database(launcher: Launcher, pages: Pages) -> None:
    sku = new_product(launcher, prefix="metrics", stock=10)
    before = scrape(pages.urls["inventory"])
    reservation = f"gauge-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(launcher.address("inventory")) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        stub.ReserveStock(inventory_pb2.ReserveStockRequest(
            reservation_id=reservation, lines=[inventory_pb2.ReservationLine(sku=sku, quantity=3)]))
        held = scrape(pages.urls["inventory"])
        stub.ReleaseReservation(inventory_pb2.ReleaseReservationRequest(reservation_id=reservation))
    released = scrape(pages.urls["inventory"])
    for name, units in (("shop_inventory_open_reservations", 1), ("shop_inventory_reserved_units", 3)):
        assert value(held, name) - value(before, name) == units, name
        assert value(released, name) == value(before, name), name


def test_open_streams_and_their_limit_are_gauges_an_alert_can_compare(launcher: Launcher, pages: Pages) -> None:
    """What deploy/prometheus/rules.yml's stream-limit alert divides: streams open over the limit."""
    from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc

    def streams() -> float:
        return value(scrape(pages.urls["notification"]), "shop_server_in_flight", kind="streams")

    page = scrape(pages.urls["notification"])
    assert value(page, "shop_server_in_flight_limit", kind="streams") == 10_000  # SHOPMESH_MAX_OPEN_STREAMS
    assert value(page, "shop_server_in_flight_limit", kind="calls") > 0
    before = streams()
    with grpc.insecure_channel(launcher.address("notification")) as channel:
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        opened = [stub.StreamNotifications(notification_pb2.StreamNotificationsRequest(user_id=f"gauge-{i}"))
                  for i in range(3)]
        eventually(lambda: streams() == before + 3, 10, "three streams counted open")
        for stream in opened:
            stream.cancel()
        eventually(lambda: streams() == before, 10, "the streams counted closed")
