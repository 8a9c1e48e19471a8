"""One request through the gateway is one trace across every process it touched."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mesh import Launcher
from tests.support.waiting import eventually, settled


def spans(folder: Path) -> list[dict]:
    found = []
    for file in folder.glob("traces-*.jsonl"):
        found += [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return found


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launcher, Path]]:
    """A mesh that writes its spans to files and logs JSON lines."""
    root = tmp_path_factory.mktemp("traced")
    traces = root / "traces"
    traces.mkdir()
    mesh = Launcher(root / "mesh", env={"SHOPMESH_TRACE_EXPORTER": "file", "SHOPMESH_LOG_FORMAT": "json",
                                        "SHOPMESH_TRACE_FILE": str(traces / "traces-{instance}.jsonl")})
    mesh.start()
    yield mesh, traces
    mesh.interrupt()


def log_lines(mesh: Launcher) -> list[dict]:
    """The JSON log lines of every service, as the launcher prints them (`service | {...}`)."""
    found = []
    for line in mesh.output().splitlines():
        _, bar, rest = line.partition("| ")
        if bar and rest.startswith("{"):
            found.append(json.loads(rest))
    return found


def test_an_order_through_the_gateway_is_one_trace_with_correct_parents(traced: tuple[Launcher, Path]) -> None:
    mesh, traces = traced
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
                "/shop.notification.v1.NotificationService/BatchSendNotifications"}
    def complete() -> bool:  # a span is written when it ends: the relay's delivery ends last
        found = ours()
        sends = [s for s in found if s["name"].endswith("/BatchSendNotifications")]
        return len(sends) >= 2 and expected <= {s["name"] for s in found}

    eventually(complete, 15, "every span of the order's trace")
    found = ours()
    services = {s["resource"]["attributes"]["service.name"] for s in found}
    assert services == {"shopmesh-gateway", "shopmesh-order", "shopmesh-inventory", "shopmesh-notification"}
    assert expected <= {s["name"] for s in found}
    assert any(s["attributes"].get("db.system") == "sqlite" for s in found), "no database spans"
    ids = {s["context"]["span_id"] for s in found}
    roots = [s for s in found if s["parent_id"] is None]
    assert [r["name"] for r in roots] == ["POST /v1/orders"]
    assert all(s["parent_id"] in ids for s in found if s["parent_id"] is not None)
    # Log lines written while serving it carry its trace id and their own span id.
    notified = [e for e in log_lines(mesh) if e["message"].startswith("notified user traced")]
    assert notified and notified[-1]["trace_id"] == trace_id and notified[-1]["span_id"] in {
        s["context"]["span_id"][2:] for s in found}
    assert notified[-1]["service"] == "notification" and notified[-1]["instance"]
    assert notified[-1]["rpc_method"] == "/shop.notification.v1.NotificationService/BatchSendNotifications"


def test_an_error_names_its_trace_in_body_header_and_log_line(traced: tuple[Launcher, Path]) -> None:
    mesh, _ = traced
    missing = str(uuid.uuid4())
    request = urllib.request.Request(f"http://{mesh.address('gateway')}/v1/orders/{missing}",
                                     headers={"x-request-id": "req-trace-1"})
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as error:
        assert error.code == 404
        trace_id = error.headers["x-trace-id"]
        body = json.load(error)
    assert len(trace_id) == 32
    assert body["code"] == 5 and missing in body["message"]
    # The request is named by the id the client gave it, its trace beside it.
    assert {"@type": "type.googleapis.com/google.rpc.RequestInfo", "requestId": "req-trace-1",
            "servingData": f"trace_id={trace_id}"} in body["details"]
    [line] = eventually(lambda: [e for e in log_lines(mesh) if e.get("trace_id") == trace_id
                                 and e["service"] == "order"], 10, "the order service's log line of the call")
    assert line["service"] == "order" and line["level"] == "INFO"
    assert line["rpc_method"] == "/shop.order.v1.OrderService/GetOrder" and line["grpc_code"] == "NOT_FOUND"
    assert len(line["span_id"]) == 16 and line["request_id"] == "req-trace-1" and line["duration_ms"] >= 0
    print("404 body, x-trace-id and the order's log line share trace", trace_id)


def test_a_notification_stream_is_one_trace_from_the_browser_to_the_notification_service(
        traced: tuple[Launcher, Path]) -> None:
    mesh, traces = traced
    host, port = mesh.address("gateway").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"GET /v1/users/streamer/notifications:stream HTTP/1.1\r\nhost: t\r\n\r\n")
    head = b""
    while b"stream open" not in head:  # the stream has begun, upstream too
        head += sock.recv(4096)
    trace_id = next(line.split(b": ")[1].decode() for line in head.split(b"\r\n") if line.startswith(b"x-trace-id"))
    sock.close()  # the browser goes away: the stream and its spans end
    names = {"GET /v1/users/{user_id}/notifications:stream", "/shop.notification.v1.NotificationService/StreamNotifications"}

    def both_ends() -> list[dict]:
        found = [s for s in spans(traces) if s["context"]["trace_id"] == f"0x{trace_id}"]
        ended = {(s["name"], s["kind"]) for s in found if s["name"].endswith("StreamNotifications")}
        return found if len(ended) == 2 else []

    found = eventually(both_ends, 10, "the stream's client and server spans")
    kinds = {(s["name"], s["kind"]) for s in found}
    assert names <= {name for name, _ in kinds}
    assert any(s["attributes"].get("db.system") == "sqlite" for s in found)  # the stream's reads
    assert ("/shop.notification.v1.NotificationService/StreamNotifications", "SpanKind.CLIENT") in kinds
    assert ("/shop.notification.v1.NotificationService/StreamNotifications", "SpanKind.SERVER") in kinds
    by_id = {s["context"]["span_id"]: s for s in found}
    server = next(s for s in found if s["kind"] == "SpanKind.SERVER" and s["name"].endswith("StreamNotifications"))
    client = by_id[server["parent_id"]]
    assert client["kind"] == "SpanKind.CLIENT" and by_id[client["parent_id"]]["name"].startswith("GET ")
    assert server["attributes"]["rpc.grpc.status_code"] == 1  # CANCELLED: the client hung up


def test_the_request_id_and_trace_follow_a_call_to_every_service_it_reaches(traced: tuple[Launcher, Path]) -> None:
    mesh, _ = traced
    body = json.dumps({"requestId": str(uuid.uuid4()), "userId": "greedy",
                       "lines": [{"sku": "coffee-mug", "quantity": 999999}]}).encode()
    request = urllib.request.Request(f"http://{mesh.address('gateway')}/v1/orders", data=body, method="POST",
                                     headers={"content-type": "application/json", "x-request-id": "req-chain-7"})
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("expected 400")
    except urllib.error.HTTPError as error:
        assert error.code == 400
        trace_id = error.headers["x-trace-id"]
    lines = settled(lambda: [e for e in log_lines(mesh) if e.get("request_id") == "req-chain-7"],
                    lambda lines: {line["service"] for line in lines} >= {"order", "inventory"}, 10,
                    "the log lines of order and inventory")
    by_service = {line["service"]: line for line in lines}
    assert by_service["inventory"]["rpc_method"] == "/shop.inventory.v1.InventoryService/ReserveStock"
    assert by_service["order"]["rpc_method"] == "/shop.order.v1.OrderService/CreateOrder"
    assert {line["grpc_code"] for line in by_service.values()} == {"FAILED_PRECONDITION"}
    assert {line["trace_id"] for line in by_service.values()} == {trace_id}


def test_spans_go_over_otlp_to_a_collector_with_service_version_and_instance(tmp_path: Path) -> None:
    """SHOPMESH_TRACE_EXPORTER=otlp: a real OTLP/gRPC receiver (the collector's place) gets the spans."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
    from tests.conftest import free_port
    from tests.support.mesh import Mesh

    received: list = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802 - the generated name
            received.extend(request.resource_spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    mesh = Mesh(tmp_path)
    try:
        mesh.start("inventory", SHOPMESH_TRACE_EXPORTER="otlp", SHOPMESH_OTLP_ENDPOINT=f"127.0.0.1:{port}",
                   SHOPMESH_INSTANCE_ID="inventory-otlp-1")
        with grpc.insecure_channel(mesh.address("inventory")) as channel:
            try:
                inventory_pb2_grpc.InventoryServiceStub(channel).GetProduct(inventory_pb2.GetProductRequest(sku="nope"))
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
        assert mesh.stop("inventory") == 0  # a clean stop flushes the batch exporter
    finally:
        mesh.stop_all()
        server.stop(0)
    spans = [(rs.resource, span) for rs in received for ss in rs.scope_spans for span in ss.spans]
    names = {span.name for _, span in spans}
    assert "/shop.inventory.v1.InventoryService/GetProduct" in names, names
    resource = {kv.key: kv.value.string_value for kv in spans[0][0].attributes}
    assert resource["service.name"] == "shopmesh-inventory" and resource["service.instance.id"] == "inventory-otlp-1"
    assert resource["service.version"]
    get = next(span for _, span in spans if span.name.endswith("/GetProduct"))
    assert any(kv.key == "rpc.grpc.status_code" and kv.value.int_value == 5 for kv in get.attributes)


def test_a_connect_call_continues_the_callers_trace_through_every_service(traced: tuple[Launcher, Path]) -> None:
    mesh, traces = traced
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    body = json.dumps({"requestId": str(uuid.uuid4()), "userId": "traced-connect",
                       "lines": [{"sku": "coffee-mug", "quantity": 1}]}).encode()
    request = urllib.request.Request(
        f"http://{mesh.address('gateway')}/shop.order.v1.OrderService/CreateOrder", data=body, method="POST",
        headers={"content-type": "application/json", "connect-protocol-version": "1",
                 "traceparent": f"00-{trace_id}-{caller_span}-01"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.headers["x-trace-id"] == trace_id
        assert json.load(reply)["status"] == "CONFIRMED"

    def ours() -> list[dict]:
        return [s for s in spans(traces) if s["context"]["trace_id"] == f"0x{trace_id}"]

    found = settled(ours, lambda found: any(s["name"] == "/shop.inventory.v1.InventoryService/ReserveStock"
                                            for s in found), 15, "inventory's span")
    (root,) = [s for s in found if s["name"] == "POST /shop.order.v1.OrderService/CreateOrder"]
    assert root["parent_id"] == f"0x{caller_span}"  # the gateway's span is the caller's child
    ids = {s["context"]["span_id"] for s in found}
    services = {s["resource"]["attributes"]["service.name"] for s in found}
    assert {"shopmesh-gateway", "shopmesh-order", "shopmesh-inventory"} <= services
    # Everything else hangs under the gateway's spans: the caller's traceparent was not passed on
    # beside the gateway's own (the order service would then have parented on the caller).
    assert all(s["parent_id"] in ids for s in found if s is not root), \
        [(s["name"], s["parent_id"]) for s in found if s is not root and s["parent_id"] not in ids]
