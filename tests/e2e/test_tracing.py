"""One request through the gateway is one trace across every process it touched."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path

from tests.e2e.harness import Launcher


def spans(folder: Path) -> list[dict]:
    found = []
    for file in folder.glob("traces-*.jsonl"):
        found += [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return found


def test_an_order_through_the_gateway_is_one_trace_with_correct_parents(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    mesh = Launcher(tmp_path / "mesh", env={"SHOPMESH_TRACE_EXPORTER": "file",
                                            "SHOPMESH_TRACE_FILE": str(traces / "traces-{instance}.jsonl")})
    mesh.start()
    try:
        body = json.dumps({"requestId": str(uuid.uuid4()), "userId": "traced",
                           "lines": [{"sku": "coffee-mug", "quantity": 1}]}).encode()
        request = urllib.request.Request(f"http://{mesh.address('gateway')}/v1/orders", data=body, method="POST",
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            trace_id = reply.headers["x-trace-id"]
            assert json.load(reply)["status"] == "CONFIRMED"
        assert trace_id and len(trace_id) == 32

        def ours() -> list[dict]:
            return [s for s in spans(traces) if s["context"]["trace_id"] == f"0x{trace_id}"]

        expected = {"POST /v1/orders", "/shop.order.v1.OrderService/CreateOrder",
                    "/shop.inventory.v1.InventoryService/ReserveStock",
                    "/shop.notification.v1.NotificationService/SendNotification"}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            # A span is written when it ends: the relay's delivery ends last.
            sends = [s for s in ours() if s["name"].endswith("/SendNotification")]
            if len(sends) >= 2 and expected <= {s["name"] for s in ours()}:
                break
            time.sleep(0.2)
        found = ours()
        services = {s["resource"]["attributes"]["service.name"] for s in found}
        assert services == {"shopmesh-gateway", "shopmesh-order", "shopmesh-inventory", "shopmesh-notification"}
        assert expected <= {s["name"] for s in found}
        assert any(s["attributes"].get("db.system") == "sqlite" for s in found), "no database spans"
        ids = {s["context"]["span_id"] for s in found}
        roots = [s for s in found if s["parent_id"] is None]
        assert [r["name"] for r in roots] == ["POST /v1/orders"]
        assert all(s["parent_id"] in ids for s in found if s["parent_id"] is not None)
    finally:
        mesh.interrupt()
