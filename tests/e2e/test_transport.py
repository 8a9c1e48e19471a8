"""The transport edge (issue 20): clients that do not read, hold streams or connections, or come in
bursts, each beside a polite client that must notice nothing.

One mesh of real processes, its gateway under a file limit of 1024 (what many service managers
give) and small shares, so each limit is met with a few hundred sockets. Clients are plain sockets
(a misbehaving client is one below HTTP) from addresses of their own: 127.0.0.1 misbehaves, a
polite page calls from 127.0.0.2.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import grpc
import pytest

from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from tests.support.http import Http, call
from tests.support.mesh import Mesh, new_product
from tests.support.metrics import scrape, value
from tests.support.waiting import eventually

POLITE = "127.0.0.2"
FILES = 1024
SHARE = {"SHOPMESH_HTTP_MAX_CONNECTIONS_PER_CLIENT": "50", "SHOPMESH_HTTP_MAX_STREAMS_PER_CLIENT": "4",
         "SHOPMESH_STREAM_POLL_SECONDS": "0.2"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    mesh = Mesh(Path(tmp_path_factory.mktemp("transport")))
    for service in ("inventory", "notification", "order"):
        mesh.start(service, SHOPMESH_STREAM_POLL_SECONDS="0.2")
    mesh.start("gateway", files=FILES, **SHARE)
    yield mesh
    mesh.stop_all()


def polite(mesh: Mesh) -> Http:
    """The polite page: a fresh connection from its own address for every call."""
    return Http(mesh.address("gateway"))


def connect(mesh: Mesh, source: str = "127.0.0.1", receive_buffer: int | None = None) -> socket.socket:
    host, port = mesh.address("gateway").split(":")
    sock = socket.socket()
    if receive_buffer is not None:  # a small window: what we do not read stays in the gateway's kernel
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind((source, 0))
    sock.settimeout(20)
    sock.connect((host, int(port)))
    return sock


def read_reply(reader: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 reply with a Content-Length from a buffered reader."""
    status_line = reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, text = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = text.strip()
    body = reader.read(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def chunks(reader: BinaryIO) -> Iterator[bytes]:
    """The chunks of a chunked body, to its end."""
    while True:
        size = int(reader.readline().strip(), 16)
        data = reader.read(size + 2)[:-2]
        if size == 0:
            return
        yield data


def stream_of(sock: socket.socket) -> Iterator[bytes]:
    """The chunks of the streaming reply `sock` is getting, once its head says 200."""
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"HTTP/1.1 200 ")
    while reader.readline() != b"\r\n":
        pass
    return chunks(reader)


def gateway_rss_mb(mesh: Mesh) -> float:
    status = Path(f"/proc/{mesh.processes['gateway'].pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def refusals(mesh: Mesh, limit: str) -> float:
    return value(scrape(f"http://{mesh.address('gateway')}/metrics"), "http_limit_refusals_total", limit=limit)


def flood(mesh: Mesh, user: str, batches: int = 10) -> list[str]:
    """`batches` x 100 notifications of ~3 KB for `user`, sent the way the order service's relay sends
    them; their ids in order."""
    ids = []
    with grpc.insecure_channel(mesh.address("notification")) as channel:
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        for batch in range(batches):
            reply = stub.BatchSendNotifications(notification_pb2.BatchSendNotificationsRequest(requests=[
                notification_pb2.SendNotificationRequest(event_id=f"flood:{user}:{batch}:{i}", user_id=user,
                                                         kind="test.flood", subject="flood", body="x" * 3000)
                for i in range(100)]), timeout=30)
            ids += [n.notification_id for n in reply.notifications]
    return ids


def notified_politely(mesh: Mesh) -> None:
    """A polite page opens its stream, an order is placed through the gateway, and the page hears of it."""
    user = f"polite-{uuid.uuid4().hex[:8]}"
    sku = new_product(mesh, 5, "polite")
    with connect(mesh, POLITE) as sock:
        sock.sendall(f"GET /v1/users/{user}/notifications:stream HTTP/1.1\r\nhost: t\r\n\r\n".encode())
        stream = stream_of(sock)
        assert b"stream open" in next(stream)
        status, _, body = polite(mesh).call("POST", "/v1/orders", {
            "requestId": str(uuid.uuid4()), "userId": user, "lines": [{"sku": sku, "quantity": 1}]})
        assert status == 200 and body["status"] == "CONFIRMED", body
        event = next(stream)
        assert b"order.created" in event, event


def test_the_listen_backlog_is_the_systems_not_asyncios_100(mesh: Mesh) -> None:
    port = mesh.ports["gateway"]
    listing = __import__("subprocess").run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                                           check=True).stdout
    backlog = int(listing.split()[2])  # Send-Q of a listening socket: its backlog
    assert backlog >= 511, listing
    print("gateway listen backlog:", backlog)


def test_a_client_that_pipelines_and_never_reads_costs_a_bounded_amount_and_loses_nothing(mesh: Mesh) -> None:
    """4000 pipelined requests for ~30 KB pages, none read for 10 s: the gateway stops reading that
    connection instead of keeping every reply; read at last, every reply is there, in order."""
    for _ in range(100 - len(polite(mesh).call("GET", "/v1/products?pageSize=100")[2].get("products", []))):
        new_product(mesh, 1, "page")
    status, _, page = polite(mesh).call("GET", "/v1/products?pageSize=100")
    size = len(json.dumps(page))
    assert status == 200 and len(page["products"]) == 100 and size > 15_000
    before = gateway_rss_mb(mesh)
    sock = connect(mesh, receive_buffer=4096)
    request = b"GET /v1/products?pageSize=100 HTTP/1.1\r\nhost: t\r\n\r\n"
    sender = threading.Thread(target=sock.sendall, args=(request * 4000,), daemon=True)
    sender.start()
    peak, latencies = before, []
    started = time.monotonic()
    while time.monotonic() - started < 10:  # the hostile client reads nothing; a polite one goes on
        asked = time.perf_counter()
        assert polite(mesh).call("GET", "/v1/products?pageSize=5")[0] == 200
        latencies.append(time.perf_counter() - asked)
        peak = max(peak, gateway_rss_mb(mesh))
        time.sleep(0.05)  # a page's pace, not a wait for anything
    grown = peak - before
    print(f"gateway RSS {before:.1f} MB -> peak {peak:.1f} MB with 4000 unread {size / 1000:.0f} KB replies "
          f"pipelined; polite worst {max(latencies) * 1000:.0f} ms over {len(latencies)} calls")
    assert grown < 32, f"the gateway grew by {grown:.1f} MB for one client that reads nothing"
    assert max(latencies) < 2.0
    reader = sock.makefile("rb")
    sock.settimeout(60)
    for _ in range(4000):  # read at last: nothing was dropped
        status, _, body = read_reply(reader)
        assert status == 200 and len(json.loads(body)["products"]) == 100
    sender.join(10)
    sock.close()


@pytest.mark.parametrize("protocol", ["sse", "connect", "grpc-web"])
def test_a_stream_whose_reader_falls_behind_ends_in_its_protocols_way_and_resumes_without_loss(
        mesh: Mesh, protocol: str) -> None:
    user = f"slow-{protocol}-{uuid.uuid4().hex[:6]}"
    ended = refusals(mesh, "stream_buffer")
    sock = connect(mesh, receive_buffer=4096)
    message = json.dumps({"userId": user}).encode()
    if protocol == "sse":
        sock.sendall(f"GET /v1/users/{user}/notifications:stream HTTP/1.1\r\nhost: t\r\n\r\n".encode())
    else:
        content_type = "application/connect+json" if protocol == "connect" else "application/grpc-web+json"
        frame = struct.pack(">BI", 0, len(message)) + message
        sock.sendall(f"POST /shop.notification.v1.NotificationService/StreamNotifications HTTP/1.1\r\nhost: t\r\n"
                     f"content-type: {content_type}\r\ncontent-length: {len(frame)}\r\n\r\n".encode() + frame)
    stream = stream_of(sock)
    if protocol == "sse":
        assert b"stream open" in next(stream)
    # (Any protocol's 200 comes once the upstream stream has begun: the gateway waits for its headers.)
    sent = flood(mesh, user)  # ~3 MB for a reader that reads nothing
    notified_politely(mesh)  # meanwhile a polite page's stream works
    eventually(lambda: refusals(mesh, "stream_buffer") > ended, 30, "the slow stream to be ended")
    received, last = [], b""
    for chunk in stream:  # read at last: what was sent before the end, then the end
        last = chunk
        if protocol == "sse":
            received += [line[4:].decode() for line in chunk.split(b"\n") if line.startswith(b"id: ")]
        elif chunk[0] == 0:
            received += [json.loads(chunk[5:])["notificationId"]]
    sock.close()
    if protocol == "sse":
        assert last.startswith(b"retry: 1000\n: ") and b"SHOPMESH_HTTP_STREAM_BUFFER_BYTES" in last, last
    elif protocol == "connect":
        assert last[0] == 2 and json.loads(last[5:])["error"]["code"] == "resource_exhausted", last
    else:
        assert last[0] == 0x80 and b"grpc-status: 8\r\n" in last and b"SHOPMESH_HTTP_STREAM_BUFFER_BYTES" in last
    before_end = len(received)
    assert 0 < before_end < len(sent) and received == sent[:before_end]
    # The page resumes from the last event it read, and nothing is lost or repeated.
    with connect(mesh, POLITE) as again:
        again.sendall(f"GET /v1/users/{user}/notifications:stream HTTP/1.1\r\nhost: t\r\n"
                      f"last-event-id: {received[-1]}\r\n\r\n".encode())
        for chunk in stream_of(again):
            received += [line[4:].decode() for line in chunk.split(b"\n") if line.startswith(b"id: ")]
            if len(received) >= len(sent):
                break
    assert received == sent
    print(f"{protocol}: the unread stream ended after {before_end} of {len(sent)} events; resumed from the last "
          f"one read, all {len(sent)} received once")


def test_one_client_holds_only_its_share_of_streams(mesh: Mesh) -> None:
    user = f"greedy-{uuid.uuid4().hex[:6]}"
    held = []
    for _ in range(4):
        sock = connect(mesh)
        sock.sendall(f"GET /v1/users/{user}/notifications:stream HTTP/1.1\r\nhost: t\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        held.append(sock)
    refused = refusals(mesh, "client_streams")
    with connect(mesh) as sock:  # a fifth, over REST
        sock.sendall(f"GET /v1/users/{user}/notifications:stream HTTP/1.1\r\nhost: t\r\n\r\n".encode())
        status, headers, body = read_reply(sock.makefile("rb"))
    assert status == 429 and headers["retry-after"] == "1", body
    error = json.loads(body)
    assert error["code"] == 8 and "SHOPMESH_HTTP_MAX_STREAMS_PER_CLIENT" in error["message"]
    status, _, body = call(mesh.address("gateway"), "POST",
                           "/shop.notification.v1.NotificationService/StreamNotifications",
                           struct.pack(">BI", 0, 2) + b"{}", {"content-type": "application/connect+json"})
    assert status == 200 and json.loads(body[5:])["error"]["code"] == "resource_exhausted", body  # and Connect's
    assert refusals(mesh, "client_streams") == refused + 2
    notified_politely(mesh)  # another client is not refused
    held.pop().close()  # one closed: the greedy client may open one again
    def reopened() -> bool:
        with connect(mesh) as sock:
            sock.sendall(f"GET /v1/users/{user}/notifications:stream HTTP/1.1\r\nhost: t\r\n\r\n".encode())
            return sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    eventually(reopened, what="the closed stream's place to be free again")
    for sock in held:
        sock.close()


def test_one_client_holds_only_its_share_of_connections(mesh: Mesh) -> None:
    refused = refusals(mesh, "client_connections")
    held = [connect(mesh, "127.0.0.3") for _ in range(50)]  # its share, held silently
    over = [connect(mesh, "127.0.0.3") for _ in range(100)]
    for sock in over[:5]:
        sock.sendall(b"GET /v1/products HTTP/1.1\r\nhost: t\r\n\r\n")
        status, headers, body = read_reply(sock.makefile("rb"))
        assert status == 429 and headers["retry-after"] == "1"
        assert "SHOPMESH_HTTP_MAX_CONNECTIONS_PER_CLIENT" in json.loads(body)["message"]
    sock = over[5]  # and in Connect's form to a Connect request
    message = b"{}"
    sock.sendall(b"POST /shop.inventory.v1.InventoryService/ListProducts HTTP/1.1\r\nhost: t\r\n"
                 b"content-type: application/json\r\ncontent-length: 2\r\n\r\n" + message)
    status, _, body = read_reply(sock.makefile("rb"))
    assert status == 429 and json.loads(body)["code"] == "resource_exhausted"
    assert refusals(mesh, "client_connections") >= refused + 100
    assert polite(mesh).call("GET", "/v1/products?pageSize=1")[0] == 200
    notified_politely(mesh)
    for sock in held + over:
        sock.close()


def test_a_full_gateway_refuses_at_once_and_keeps_serving_the_connections_it_holds(mesh: Mesh) -> None:
    """Many clients at their share fill the process: each connection past its cap (kept below the file
    limit) is answered 503 at once, logged once; the connections it holds, and its own upstream
    channels, go on working."""
    kept = connect(mesh, POLITE)  # a polite page's keep-alive connection, opened before the flood
    reader = kept.makefile("rb")

    def refused_on_kept() -> float:  # the metrics, read on the connection the gateway still holds
        kept.sendall(b"GET /metrics HTTP/1.1\r\nhost: t\r\n\r\n")
        status, _, page = read_reply(reader)
        assert status == 200
        return sum(float(line.rsplit(" ", 1)[1]) for line in page.decode().splitlines()
                   if line.startswith('http_limit_refusals_total{limit="connections"}'))

    refused = refused_on_kept()
    crowd = []
    for n in range(24):  # 24 addresses x their share of 50 > the cap under a file limit of 1024
        crowd += [connect(mesh, f"127.0.3.{n + 1}") for _ in range(50)]
    eventually(lambda: refused_on_kept() > refused, what="connections refused for lack of room")
    with connect(mesh, "127.0.4.1") as late:
        late.sendall(b"GET /v1/products HTTP/1.1\r\nhost: t\r\n\r\n")
        status, headers, body = read_reply(late.makefile("rb"))
    assert status == 503 and "SHOPMESH_HTTP_MAX_CONNECTIONS" in json.loads(body)["message"]
    for _ in range(20):  # the kept connection still reaches inventory through the gateway's channels
        kept.sendall(b"GET /v1/products?pageSize=1 HTTP/1.1\r\nhost: t\r\n\r\n")
        assert read_reply(reader)[0] == 200
    for sock in crowd:
        sock.close()
    kept.close()
    eventually(lambda: polite(mesh).call("GET", "/v1/products?pageSize=1")[0] == 200, what="room again")
    log = mesh.logs["gateway"].read_text()
    assert log.count("refusing connections") == 1, log[-2000:]
    print(f"refused {refusals(mesh, 'connections') - refused:.0f} connections past the cap; one log line")
    assert "accepting connections again" in log


def http2_frames(sock: socket.socket, until: Callable[[int, bytes], bool], timeout: float) -> list[tuple[int, bytes]]:
    """HTTP/2 frames from `sock` (type, payload) until `until(type, payload)` holds or it closes."""
    sock.settimeout(timeout)
    found, buffer = [], b""
    while True:
        while len(buffer) >= 9:
            size = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + size:
                break
            kind, payload, buffer = buffer[3], buffer[9:9 + size], buffer[9 + size:]
            found.append((kind, payload))
            if until(kind, payload):
                return found
        try:
            data = sock.recv(65536)
        except ConnectionResetError:  # the server closed with our frames still unread
            return found
        if not data:
            return found
        buffer += data


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + an empty SETTINGS
SETTINGS, PING, GOAWAY = 0x4, 0x6, 0x7


def test_a_grpc_port_bounds_streams_per_connection_pings_and_idle_connections(tmp_path: Path) -> None:
    """The services' own edge, read from the wire: the SETTINGS a client is sent, a ping flood
    answered with GOAWAY (ENHANCE_YOUR_CALM, too_many_pings), an idle connection closed."""
    own = Mesh(tmp_path / "grpc-edge")
    try:
        own.start("inventory", SHOPMESH_MAX_CONNECTION_IDLE_SECONDS="1", SHOPMESH_MAX_CONNECTION_AGE_SECONDS="0",
                  SHOPMESH_MAX_CONCURRENT_RPCS="100", SHOPMESH_MAX_OPEN_STREAMS="50")
        host, port = own.address("inventory").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(PREFACE)
            frames = http2_frames(sock, lambda kind, payload: kind == SETTINGS and payload, 5)
            settings = dict(struct.unpack(">HI", frames[-1][1][i:i + 6]) for i in range(0, len(frames[-1][1]), 6))
            assert settings[0x3] == 150, settings  # MAX_CONCURRENT_STREAMS: every call and stream admitted
            started = time.monotonic()
            frames = http2_frames(sock, lambda kind, _: kind == GOAWAY, 10)
            idle = time.monotonic() - started
            assert frames[-1][0] == GOAWAY and 0.5 < idle < 5, (frames, idle)
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(PREFACE)
            for n in range(10):  # a ping every few milliseconds, no call open
                try:
                    sock.sendall(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + n.to_bytes(8, "big"))
                except OSError:  # the server has had enough and closed
                    break
                time.sleep(0.01)  # a flood, paced so each ping is its own
            frames = http2_frames(sock, lambda kind, _: kind == GOAWAY, 10)
            kind, payload = frames[-1]
            assert kind == GOAWAY and int.from_bytes(payload[4:8], "big") == 0xB, frames  # ENHANCE_YOUR_CALM
            assert b"too_many_pings" in payload[8:]
        print(f"gRPC port: MAX_CONCURRENT_STREAMS {settings[0x3]}, idle connection closed after {idle:.1f}s, "
              "ping flood answered GOAWAY too_many_pings")
    finally:
        own.stop_all()
