"""Traces in a real backend: Jaeger 2 (built from its Go module by scripts/install-tools.sh, run
with deploy/jaeger/config.yaml, as compose's observability profile runs it) receives the mesh's
OTLP, and an order placed through the gateway is found through Jaeger's query API as one trace:
spans from all four processes, one root, no orphans, the order's id on its spans."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import tool
from tests.support.http import Http
from tests.support.jaeger import Jaeger
from tests.support.mesh import Launcher
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launcher, Jaeger]]:
    root = tmp_path_factory.mktemp("jaeger")
    jaeger = Jaeger(tool("jaeger"), root)
    jaeger.start()
    mesh = Launcher(root / "mesh", env={"SHOPMESH_TRACE_EXPORTER": "otlp", "SHOPMESH_OTLP_ENDPOINT": jaeger.otlp,
                                        "OTEL_BSP_SCHEDULE_DELAY": "200"})  # spans leave each process within 0.2 s
    try:
        mesh.start()
        yield mesh, jaeger
    finally:
        mesh.interrupt()
        jaeger.stop()


def test_an_order_through_the_gateway_is_one_trace_in_jaeger_across_all_four_processes(
        traced: tuple[Launcher, Jaeger]) -> None:
    mesh, jaeger = traced
    status, headers, body = Http(mesh.address("gateway")).call(
        "POST", "/v1/orders", {"requestId": str(uuid.uuid4()), "userId": "jaeger",
                               "lines": [{"sku": "coffee-mug", "quantity": 1}]})
    assert status == 200, body
    trace_id, order_id = headers["x-trace-id"], body["orderId"]

    def complete() -> dict | None:  # the relay's delivery to notification ends last
        found = jaeger.trace(trace_id)
        names = {span["operationName"] for span in found["spans"]} if found else set()
        return found if "/shop.notification.v1.NotificationService/BatchSendNotifications" in names else None

    trace = eventually(complete, 30, "the order's trace, notification's span included, in Jaeger",
                       every=0.5, detail=lambda: json.dumps(jaeger.trace(trace_id))[-3000:])
    processes = {key: p["serviceName"] for key, p in trace["processes"].items()}
    spans = trace["spans"]
    assert {processes[s["processID"]] for s in spans} == {
        "shopmesh-gateway", "shopmesh-order", "shopmesh-inventory", "shopmesh-notification"}
    ids = {s["spanID"] for s in spans}
    parents = {s["spanID"]: [r["spanID"] for r in s["references"] if r["refType"] == "CHILD_OF"] for s in spans}
    roots = [s for s in spans if not parents[s["spanID"]]]
    assert [processes[r["processID"]] + " " + r["operationName"] for r in roots] == [
        "shopmesh-gateway POST /v1/orders"], roots
    orphans = [s["operationName"] for s in spans if any(p not in ids for p in parents[s["spanID"]])]
    assert orphans == [], orphans
    tagged = [s for s in spans if {"key": "shop.order.id", "type": "string", "value": order_id} in s["tags"]]
    assert [s["operationName"] for s in tagged] == ["/shop.order.v1.OrderService/CreateOrder"]
