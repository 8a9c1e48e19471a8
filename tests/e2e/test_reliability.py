"""Nothing lost when processes die, calls fail or stall: issue 6's tests, through real processes.

Each test prints what it checked. Faults are injected with SHOPMESH_FAULTS (mesh/kernel/faults.py),
which is off unless a test sets it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from generated.shop.order.v1 import order_pb2, order_pb2_grpc
from tests.support.http import Http
from tests.support.mesh import Launcher, Mesh, new_product, rpc_calls
from tests.support.metrics import scrape, value
from tests.support.waiting import eventually, eventually_async, settled

FAST = {
    "SHOPMESH_RESERVATION_TTL_SECONDS": "2",
    "SHOPMESH_OUTBOX_INTERVAL_SECONDS": "0.3",
    "SHOPMESH_CALL_TIMEOUT_SECONDS": "1",
}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path / "mesh")
    yield mesh
    mesh.stop_all()


def stock(mesh: Mesh, sku: str) -> inventory_pb2.Product:
    with grpc.insecure_channel(mesh.address("inventory")) as channel:
        return inventory_pb2_grpc.InventoryServiceStub(channel).GetProduct(inventory_pb2.GetProductRequest(sku=sku),
                                                                          timeout=5)


def all_orders(mesh: Mesh, user: str) -> list[order_pb2.Order]:
    found, token = [], ""
    with grpc.insecure_channel(mesh.address("order")) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        while True:
            page = stub.ListOrders(order_pb2.ListOrdersRequest(user_id=user, page_size=100, page_token=token), timeout=5)
            found += page.orders
            token = page.next_page_token
            if not token:
                return found


def all_notifications(mesh: Mesh, user: str) -> list[notification_pb2.Notification]:
    found, token = [], ""
    with grpc.insecure_channel(mesh.address("notification")) as channel:
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        while True:
            page = stub.ListNotifications(
                notification_pb2.ListNotificationsRequest(user_id=user, page_size=100, page_token=token), timeout=5)
            found += page.notifications
            token = page.next_page_token
            if not token:
                return found


async def place(address: str, user: str, sku: str, quantities: list[int]) -> dict[str, object]:
    """Places one order per quantity at once; request_id -> the Order, or the status code it failed with."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)

        async def one(quantity: int) -> tuple[str, object]:
            request_id = str(uuid.uuid4())
            request = order_pb2.CreateOrderRequest(request_id=request_id, user_id=user,
                                                   lines=[order_pb2.OrderLine(sku=sku, quantity=quantity)])
            try:
                return request_id, await stub.CreateOrder(request, timeout=5)
            except grpc.aio.AioRpcError as error:
                return request_id, error.code()

        return dict(await asyncio.gather(*(one(q) for q in quantities)))


def assert_settled(mesh: Mesh, sku: str, initial: int, user: str, acknowledged: dict[str, object]) -> Counter:
    """The stock invariant, one final state per order, and exactly one notification per event."""
    def settled() -> bool:
        product = stock(mesh, sku)
        confirmed = [o for o in all_orders(mesh, user) if o.status == order_pb2.Order.CONFIRMED]
        return product.reserved == 0 and sum(line.quantity for o in confirmed for line in o.lines) == product.sold

    # Expiry and recovery run on their own clocks; within 30 s everything must have converged.
    eventually(settled, 30, "every reservation committed or released and every order settled")
    product = stock(mesh, sku)
    assert product.available + product.reserved + product.sold == initial
    orders = all_orders(mesh, user)
    statuses = Counter(order_pb2.Order.Status.Name(o.status) for o in orders)
    assert set(statuses) <= {"CONFIRMED", "CANCELLED"}
    confirmed = [o for o in orders if o.status == order_pb2.Order.CONFIRMED]
    assert sum(line.quantity for o in confirmed for line in o.lines) == product.sold
    by_request = {o.request_id: o for o in orders}
    for request_id, outcome in acknowledged.items():
        if isinstance(outcome, order_pb2.Order):  # acknowledged to its caller: stored, and sold
            assert by_request[request_id].status == order_pb2.Order.CONFIRMED
    expected = {f"order.created:{o.order_id}" for o in orders}
    expected |= {f"order.cancelled:{o.order_id}" for o in orders if o.status == order_pb2.Order.CANCELLED}

    def notified() -> Counter:
        return Counter(n.event_id for n in all_notifications(mesh, user))

    eventually(lambda: set(notified()) == expected, 30, "one notification per order event")
    assert all(count == 1 for count in notified().values())
    if "order" in mesh.processes:  # and no attempt is left unsettled (order/background/recovery.py)
        eventually(lambda: scrape_pending(mesh, "shop_order_attempts_open") == 0, 30, "every order attempt settled")
    return statuses


def test_kill_9_between_reserve_and_commit_loses_no_stock_and_settles_every_order(mesh: Mesh) -> None:
    mesh.start("inventory", **FAST)
    mesh.start("notification", **FAST)
    sku, initial, user = new_product(mesh, 200), 200, "chaos-kill"
    outcomes: dict[str, object] = {}
    for point in ("order.after_reserve", "order.after_store"):
        # The 4th order to reach the point kills the process, with others in flight around it.
        process = mesh.start("order", SHOPMESH_FAULTS=f"{point}=kill:4", **FAST)
        placed = asyncio.run(place(mesh.address("order"), user, sku, [1, 2, 3] * 4))
        assert process.wait(10) == -9, "the fault hook did not kill the order service"
        codes = Counter(v if isinstance(v, grpc.StatusCode) else "OK" for v in placed.values())
        print(f"{point}: killed with 12 orders in flight: {dict(codes)}")
        assert grpc.StatusCode.UNAVAILABLE in codes  # the calls in flight died with it
        outcomes.update(placed)
        held = stock(mesh, sku)
        print(f"  right after the kill: available {held.available}, reserved {held.reserved}, sold {held.sold}")
    mesh.start("order", **FAST)  # restarted clean: it settles what the kills left half-done
    outcomes.update(asyncio.run(place(mesh.address("order"), user, sku, [1, 1, 1])))
    statuses = assert_settled(mesh, sku, initial, user, outcomes)
    final = stock(mesh, sku)
    print(f"settled: available {final.available} + reserved {final.reserved} + sold {final.sold} == {initial}; "
          f"orders {dict(statuses)}; every acknowledged order CONFIRMED; one notification per event")


def call(mesh_or_launcher, method: str, path: str, body: dict | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict]:
    status, got, parsed = Http(mesh_or_launcher.address("gateway")).call(method, path, body, headers)
    return status, got, parsed or {}


def test_fifty_concurrent_requests_with_one_key_make_one_order_and_identical_answers(launcher) -> None:
    from concurrent.futures import ThreadPoolExecutor

    sku = new_product(launcher, 10)
    key = str(uuid.uuid4())
    body = {"userId": "idem", "lines": [{"sku": sku, "quantity": 3}]}
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: call(launcher, "POST", "/v1/orders", body, {"Idempotency-Key": key}),
                                range(50)))
    assert {status for status, _, _ in answers} == {200}
    assert len({str(sorted(reply.items())) for _, _, reply in answers}) == 1  # byte-for-byte the same order
    assert answers[0][2]["requestId"] == key
    after = stock(launcher, sku)
    assert (after.available, after.sold) == (7, 3)
    # Same key, other body: refused, and nothing changes.
    status, _, error = call(launcher, "POST", "/v1/orders", {**body, "lines": [{"sku": sku, "quantity": 1}]},
                            {"Idempotency-Key": key})
    assert status == 409 and key in error["message"]  # ALREADY_EXISTS: the key is taken by another body
    status, _, error = call(launcher, "POST", "/v1/orders", {**body, "requestId": "other"}, {"Idempotency-Key": key})
    assert status == 400 and "but requestId in the body is" in error["message"]
    assert stock(launcher, sku).available == 7 and len(all_orders(launcher, "idem")) >= 1
    # A refusal is an outcome too: the same key replays it even after stock arrives.
    refused_key = str(uuid.uuid4())
    big = {"userId": "idem", "lines": [{"sku": sku, "quantity": 9}]}
    first = call(launcher, "POST", "/v1/orders", big, {"Idempotency-Key": refused_key})
    assert first[0] == 400 and "not enough stock" in first[2]["message"]
    with grpc.insecure_channel(launcher.address("inventory")) as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).AdjustStock(
            inventory_pb2.AdjustStockRequest(sku=sku, delta=10, reason="restock"))
    again = call(launcher, "POST", "/v1/orders", big, {"Idempotency-Key": refused_key})
    assert (again[0], again[2]["message"]) == (first[0], first[2]["message"])
    print("50 concurrent same-key POSTs: 1 order, 1 distinct answer; other body 409, no effect; refusal replayed")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_overload_past_the_concurrency_limit_is_refused_fast_with_bounded_memory(mesh: Mesh) -> None:
    from concurrent.futures import ThreadPoolExecutor

    inventory = mesh.start("inventory", SHOPMESH_MAX_CONCURRENT_RPCS="4", SHOPMESH_FAULTS="rpc.GetProduct=delay:0.5")
    mesh.start("gateway")
    sku = new_product(mesh, 5)

    async def wave(n: int) -> list[tuple[object, float]]:
        async with grpc.aio.insecure_channel(mesh.address("inventory")) as channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            full = asyncio.Event()  # set at the first refusal: the limit is full

            async def one() -> tuple[object, float]:
                started = time.monotonic()
                try:
                    await stub.GetProduct(inventory_pb2.GetProductRequest(sku=sku), timeout=5)
                    return grpc.StatusCode.OK, time.monotonic() - started
                except grpc.aio.AioRpcError as error:
                    assert error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or "overloaded" in error.details()
                    full.set()
                    return error.code(), time.monotonic() - started

            async def probe() -> None:
                # Health is never shed: an overloaded instance must not fail its probe.
                await asyncio.wait_for(full.wait(), 5)
                for service in ("", "shop.inventory.v1.InventoryService"):
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING

            results, _ = await asyncio.gather(asyncio.gather(*(one() for _ in range(n))), probe())
            return results

    results = asyncio.run(wave(40))
    codes = Counter(code for code, _ in results)
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert 4 <= codes[grpc.StatusCode.OK] <= 8
    shed = sorted(seconds for code, seconds in results if code == grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert shed[len(shed) // 2] < 0.2, f"refusals were not fast: median {shed[len(shed) // 2]:.3f}s"
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda _: call(mesh, "GET", f"/v1/products/{sku}"), range(30)))
    statuses = Counter(status for status, _, _ in answers)
    assert set(statuses) <= {200, 429} and statuses[429] > 0, statuses
    assert all(headers.get("retry-after") == "1" and body["code"] == 8
               for status, headers, body in answers if status == 429)
    first = rss_mb(inventory.pid)
    for _ in range(5):
        asyncio.run(wave(300))
    grown = rss_mb(inventory.pid) - first
    assert grown < 40, f"inventory grew {grown:.0f} MB over 1500 refused calls"
    print(f"40 calls at a limit of 4: {dict((c.name, n) for c, n in codes.items())}, refusals in a median "
          f"{1000 * shed[len(shed) // 2]:.1f} ms, none timed out; gateway: {dict(statuses)} with Retry-After; "
          f"RSS +{grown:.1f} MB over 1500 more")


def test_a_burst_above_the_bucket_gets_429_and_the_sustained_rate_matches_the_refill(mesh: Mesh) -> None:
    import http.client

    mesh.start("inventory")
    mesh.start("gateway", SHOPMESH_RATE_LIMIT_PER_SECOND="20", SHOPMESH_RATE_LIMIT_BURST="10")
    sku = new_product(mesh, 5)
    host, port = mesh.address("gateway").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    passed, limited, retry_after = 0, 0, set()
    started = time.monotonic()
    while time.monotonic() - started < 4.0:
        conn.request("GET", f"/v1/products/{sku}")
        reply = conn.getresponse()
        reply.read()
        if reply.status == 200:
            passed += 1
        else:
            assert reply.status == 429
            limited += 1
            retry_after.add(reply.getheader("retry-after"))
    elapsed = time.monotonic() - started
    sustained = (passed - 10) / elapsed
    assert limited > passed and retry_after == {"1"}
    assert abs(sustained - 20) <= 2, f"sustained {sustained:.1f}/s against a refill of 20/s"
    assert call(mesh, "GET", "/healthz")[0] == 200  # probes are never limited
    print(f"{passed} passed (burst 10 + {sustained:.1f}/s for {elapsed:.1f}s), {limited} got 429 with Retry-After: 1")


async def post_order(host: str, port: int, body: dict, source: str | None = None) -> int:
    """One POST /v1/orders on its own connection (from address `source`); the HTTP status."""
    import json

    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0) if source else None)
    data = json.dumps(body).encode()
    writer.write(b"POST /v1/orders HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\nconnection: close\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(data), data))
    status_line = await reader.readline()
    await reader.read()
    writer.close()
    return int(status_line.split()[1])


@pytest.fixture(params=["sqlite", "pgbouncer"])
def crowded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Launcher]:
    """The Quickstart's mesh on SQLite, or the same launcher with every service on PostgreSQL
    through PgBouncer in transaction mode, as production runs it."""
    if request.param == "sqlite":
        yield request.getfixturevalue("launcher")
        return
    bouncer = request.getfixturevalue("pgbouncer")
    mesh = Launcher(tmp_path / "pooled", env={
        **{f"SHOPMESH_{s.upper()}_DATABASE_URL": bouncer.create_database() for s in ("inventory", "order", "notification")},
        **bouncer.settings()})
    mesh.start()
    try:
        yield mesh
    finally:
        assert mesh.interrupt(120) == 0


def test_a_thousand_concurrent_orders_for_a_hundred_units_sell_exactly_a_hundred(crowded: Launcher) -> None:
    launcher = crowded
    sku, user = new_product(launcher, 100), f"crowd-{uuid.uuid4().hex[:6]}"
    host, port = launcher.address("gateway").split(":")
    lowest = {"available": 100, "reserved": 0}

    async def run() -> Counter:
        stop = asyncio.Event()

        async def watch() -> None:  # every read along the way: never negative
            async with grpc.aio.insecure_channel(launcher.address("inventory")) as channel:
                stub = inventory_pb2_grpc.InventoryServiceStub(channel)
                while not stop.is_set():
                    p = await stub.GetProduct(inventory_pb2.GetProductRequest(sku=sku))
                    assert p.available >= 0 and p.reserved >= 0 and p.available + p.reserved + p.sold == 100
                    lowest["available"] = min(lowest["available"], p.available)
                    await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        statuses = await asyncio.gather(*(  # a thousand buyers, each from an address of its own
            post_order(host, int(port), {"requestId": str(uuid.uuid4()), "userId": user,
                                         "lines": [{"sku": sku, "quantity": 1}]}, f"127.0.{10 + n // 250}.{n % 250 + 1}")
            for n in range(1000)))
        stop.set()
        await watcher
        return Counter(statuses)

    statuses = asyncio.run(run())
    assert statuses[200] == 100 and all(code < 500 for code in statuses), statuses
    assert set(statuses) <= {200, 400}  # 400: out of stock (FAILED_PRECONDITION)
    final = stock(launcher, sku)
    assert (final.available, final.reserved, final.sold) == (0, 0, 100)
    orders = all_orders(launcher, user)
    assert len(orders) == 100
    expected = {f"order.created:{o.order_id}" for o in orders}
    eventually(lambda: Counter(n.event_id for n in all_notifications(launcher, user)) == Counter(expected), 30,
             "one notification per order")
    print(f"1000 concurrent POSTs for 100 units: {dict(statuses)}; stock never negative (lowest available "
          f"{lowest['available']}); 100 orders, 100 notifications, no 5xx")


def test_orders_keep_flowing_while_notification_is_down_and_every_one_is_notified_once(mesh: Mesh) -> None:
    mesh.start("inventory")
    mesh.start("notification")
    mesh.start("order", SHOPMESH_OUTBOX_INTERVAL_SECONDS="0.5")
    sku, user = new_product(mesh, 10_000), f"patient-{uuid.uuid4().hex[:6]}"
    mesh.processes["notification"].kill()  # kill -9: no goodbye
    mesh.processes["notification"].wait(10)
    placed: dict[str, object] = {}
    started = time.monotonic()
    while time.monotonic() - started < 30:
        placed.update(asyncio.run(place(mesh.address("order"), user, sku, [1, 1])))
        time.sleep(0.25)
    failed = {k: v for k, v in placed.items() if not isinstance(v, order_pb2.Order)}
    assert not failed, f"{len(failed)} orders failed while notification was down"
    pending = scrape_pending(mesh)
    assert pending >= len(placed)  # their events wait in the outbox
    del mesh.processes["notification"]
    mesh.start("notification")
    eventually(lambda: scrape_pending(mesh) == 0, 60, "the outbox to drain")
    orders = all_orders(mesh, user)
    notified = Counter(n.event_id for n in all_notifications(mesh, user))
    assert notified == Counter({f"order.created:{o.order_id}": 1 for o in orders})
    print(f"{len(placed)} orders in 30 s with notification dead, all acknowledged; {pending} events waited; "
          f"after it came back: outbox empty, {len(notified)} notifications, one each")


def scrape_pending(mesh: Mesh, name: str = "shop_order_outbox_pending") -> float:
    samples = scrape(f"http://127.0.0.1:{mesh.metrics_ports['order']}/metrics")
    assert (name, ()) in samples, f"no {name} on the order service's /metrics"
    return value(samples, name)


def test_an_inventory_slower_than_the_deadline_gives_deadline_exceeded_on_time_and_loses_no_stock(mesh: Mesh) -> None:
    mesh.start("inventory", SHOPMESH_FAULTS="rpc.ReserveStock=delay:3", SHOPMESH_RESERVATION_TTL_SECONDS="2")
    # This test means it, but a TTL this short next to the 5 s call timeout gets a warning at start.
    assert "SHOPMESH_RESERVATION_TTL_SECONDS=2 is under twice" in mesh.logs["inventory"].read_text()
    mesh.start("notification")
    mesh.start("order", **FAST)
    mesh.start("gateway")
    sku, user = new_product(mesh, 50), f"slow-{uuid.uuid4().hex[:6]}"
    with grpc.insecure_channel(mesh.address("order")) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateOrder(order_pb2.CreateOrderRequest(request_id=str(uuid.uuid4()), user_id=user,
                                                          lines=[order_pb2.OrderLine(sku=sku, quantity=2)]), timeout=1.0)
        took = time.monotonic() - started
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and took <= 1.2, took
    started = time.monotonic()
    status, _, body = call(mesh, "POST", "/v1/orders", {"requestId": str(uuid.uuid4()), "userId": user,
                                                       "lines": [{"sku": sku, "quantity": 3}]},
                           {"grpc-timeout": "1S"})
    took_http = time.monotonic() - started
    assert status == 504 and body["code"] == 4 and took_http <= 1.2, (status, took_http)
    # Downstream, inventory's ReserveStock was cancelled when its caller's deadline ran out,
    # not left to finish (and hold stock) 3 s later.
    ended = settled(lambda: {code: served_calls(mesh, "ReserveStock", code)
                             for code in ("OK", "CANCELLED", "DEADLINE_EXCEEDED")},
                    lambda ended: sum(ended.values()) >= 2, 10, "both ReserveStock calls to end")
    assert ended["OK"] == 0 and ended["CANCELLED"] + ended["DEADLINE_EXCEEDED"] == 2, ended
    assert stock(mesh, sku).reserved == 0
    assert_settled(mesh, sku, 50, user, {})
    print(f"gRPC DEADLINE_EXCEEDED after {took:.2f}s and HTTP 504 after {took_http:.2f}s for a 1s deadline; "
          "stock whole afterwards")


def test_a_reserve_that_first_fails_unavailable_is_retried_and_sells_once(mesh: Mesh) -> None:
    import urllib.request

    mesh.start("inventory", SHOPMESH_FAULTS="rpc.ReserveStock=fail:1")
    mesh.start("notification")
    mesh.start("order")
    sku, user = new_product(mesh, 10), f"retry-{uuid.uuid4().hex[:6]}"
    placed = asyncio.run(place(mesh.address("order"), user, sku, [4]))
    assert all(isinstance(v, order_pb2.Order) for v in placed.values()), placed
    final = stock(mesh, sku)
    assert (final.available, final.reserved, final.sold) == (6, 0, 4)
    with urllib.request.urlopen(f"http://127.0.0.1:{mesh.metrics_ports['inventory']}/metrics", timeout=10) as page:
        text = page.read().decode()
    attempts = {code: f'grpc_code="{code}",grpc_method="ReserveStock"' in text for code in ("UNAVAILABLE", "OK")}
    assert attempts == {"UNAVAILABLE": True, "OK": True}  # two attempts reached inventory, one sold
    print("first ReserveStock answered UNAVAILABLE, gRPC retried it, the order succeeded, stock 10 -> 6 once")


JWT_SECRET = "e2e-secret-e2e-secret-e2e-secret-42"


def token(user: str, *, expires_in: float = 300, roles: list[str] | None = None, algorithm: str = "HS256") -> str:
    import jwt

    claims = {"sub": user, "exp": time.time() + expires_in, **({"roles": roles} if roles else {})}
    return jwt.encode(claims, JWT_SECRET if algorithm != "none" else None, algorithm=algorithm)


def test_the_pages_session_cookie_is_httponly_strict_and_guarded_against_other_sites(mesh: Mesh) -> None:
    mesh.start("inventory")
    mesh.start("notification")
    mesh.start("order")
    mesh.start("gateway", SHOPMESH_AUTH="on", SHOPMESH_JWT_SECRET=JWT_SECRET, SHOPMESH_API_KEYS="k;ey 1=kim",
               SHOPMESH_TRUSTED_PROXIES="127.0.0.1")
    sku = new_product(mesh, 5)
    # A bad key sets nothing; a good one (even with ';' and a space in it) sets the cookie.
    status, headers, _ = call(mesh, "POST", "/session", headers={"x-api-key": "nope"})
    assert status == 401 and "set-cookie" not in headers
    status, headers, body = call(mesh, "POST", "/session", headers={"x-api-key": "k;ey 1"})
    assert status == 200 and body == {"auth": True, "userId": "kim", "admin": False}
    set_cookie = headers["set-cookie"]
    assert set_cookie.startswith("shopmesh_session=k%3Bey%201; ")
    assert {"HttpOnly", "SameSite=Strict", "Path=/", f"Max-Age={8 * 3600}"} <= set(set_cookie.split("; "))
    assert "Secure" not in set_cookie  # plain HTTP here; behind a trusted HTTPS proxy it says Secure:
    behind = call(mesh, "POST", "/session", headers={"x-api-key": "k;ey 1", "x-forwarded-proto": "https"})[1]
    assert behind["set-cookie"].endswith("; Secure")
    session = {"cookie": set_cookie.split(";")[0]}
    assert call(mesh, "GET", "/me", headers=session)[2]["userId"] == "kim"
    order = {"requestId": str(uuid.uuid4()), "lines": [{"sku": sku, "quantity": 1}]}
    # A state change carried by the cookie alone is what another site's form could send: refused.
    status, _, body = call(mesh, "POST", "/v1/orders", order, session)
    assert status == 403 and "x-requested-with" in body["message"]
    status, _, placed = call(mesh, "POST", "/v1/orders", order, {**session, "x-requested-with": "shopmesh-page"})
    assert status == 200 and placed["userId"] == "kim"
    # A token's session lives as long as the token; signing out clears the cookie.
    short = token("lee", expires_in=120)
    max_age = int(call(mesh, "POST", "/session", headers={"authorization": f"Bearer {short}"})[1]["set-cookie"]
                  .split("Max-Age=")[1].split(";")[0])
    assert 100 < max_age <= 120
    status, headers, _ = call(mesh, "DELETE", "/session", headers=session)
    assert status == 200 and headers["set-cookie"].startswith("shopmesh_session=; ") and "Max-Age=0" in headers["set-cookie"]
    assert call(mesh, "GET", "/session")[0] == 405


def test_only_those_who_should_can_call_what_they_call(mesh: Mesh) -> None:
    mesh.start("inventory")
    mesh.start("notification")
    mesh.start("order")
    mesh.start("gateway", SHOPMESH_AUTH="on", SHOPMESH_JWT_SECRET=JWT_SECRET, SHOPMESH_API_KEYS="ops-key-1=ops:admin")
    alice, bob = {"authorization": f"Bearer {token('alice')}"}, {"authorization": f"Bearer {token('bob')}"}
    product = {"sku": "locked-mug", "name": "Mug", "price": {"currencyCode": "USD", "minorUnits": "500"}, "available": 5}
    # Stock and product writes need an admin.
    assert call(mesh, "POST", "/v1/products", product)[0] == 401
    assert call(mesh, "POST", "/v1/products", product, alice)[0] == 403
    assert call(mesh, "POST", "/v1/products", product, {"x-api-key": "wrong"})[0] == 401
    assert call(mesh, "POST", "/v1/products", product, {"x-api-key": "ops-key-1"})[0] == 200
    assert call(mesh, "POST", "/v1/products/locked-mug:adjustStock", {"delta": "1", "reason": "x"}, bob)[0] == 403
    assert call(mesh, "GET", "/v1/products/locked-mug")[0] == 200  # the catalogue is public
    # /me names the caller (what the shop page shows), and refuses like any route.
    assert call(mesh, "GET", "/me", headers=alice)[2] == {"auth": True, "userId": "alice", "admin": False}
    assert call(mesh, "GET", "/me", headers={"x-api-key": "ops-key-1"})[2] == {"auth": True, "userId": "ops", "admin": True}
    assert [call(mesh, "GET", "/me", headers=h)[0] for h in ({}, {"x-api-key": "wrong"})] == [401, 401]
    # Missing, expired, alg=none: 401 with a challenge.
    order = {"requestId": str(uuid.uuid4()), "lines": [{"sku": "locked-mug", "quantity": 1}]}
    for headers, says in (({}, "sign in"), ({"authorization": f"Bearer {token('alice', expires_in=-10)}"}, "expired"),
                          ({"authorization": f"Bearer {token('alice', algorithm='none')}"}, "invalid token")):
        status, reply_headers, body = call(mesh, "POST", "/v1/orders", order, headers)
        assert status == 401 and says in body["message"] and body["code"] == 16
        assert reply_headers["www-authenticate"].startswith("Bearer")
    # The user comes from the token, never the body.
    status, _, placed = call(mesh, "POST", "/v1/orders", order, alice)
    assert status == 200 and placed["userId"] == "alice"
    status, _, body = call(mesh, "POST", "/v1/orders", {**order, "requestId": "x-2", "userId": "bob"}, alice)
    assert status == 403 and "signed in as 'alice'" in body["message"]
    # Only the owner reads or cancels an order; to anyone else it does not exist.
    order_id = placed["orderId"]
    served = rpc_calls(mesh.metrics_ports["order"], "GetOrder")
    assert call(mesh, "GET", f"/v1/orders/{order_id}", headers=alice)[0] == 200
    assert call(mesh, "GET", f"/v1/orders/{order_id}", headers=bob)[0] == 404
    # The order service checks ownership itself (the caller travels as metadata): one call each.
    assert rpc_calls(mesh.metrics_ports["order"], "GetOrder") == served + 2
    assert call(mesh, "POST", f"/v1/orders/{order_id}:cancel", {"reason": "mine now"}, bob)[0] == 404
    assert call(mesh, "GET", "/v1/users/alice/orders", headers=bob)[0] == 403
    assert call(mesh, "GET", "/v1/users/alice/notifications", headers=bob)[0] == 403
    assert call(mesh, "GET", f"/v1/orders/{order_id}", headers={"x-api-key": "ops-key-1"})[0] == 200  # admin
    status, _, cancelled = call(mesh, "POST", f"/v1/orders/{order_id}:cancel", {"reason": "changed my mind"}, alice)
    assert status == 200 and cancelled["status"] == "CANCELLED"
    print("admin-only writes 401/403/200; missing, expired, alg=none 401; user from the token; "
          "other user's order 404, their lists 403")


def served_calls(mesh: Mesh, method: str, code: str | None = None) -> float:
    """Inventory's count of `method` calls started, or (with `code`) ended with that status."""
    return rpc_calls(mesh.metrics_ports["inventory"], method, code=code)


def test_the_gateway_answers_503_fast_while_the_breaker_is_open_then_probes(mesh: Mesh) -> None:
    mesh.start("inventory", SHOPMESH_FAULTS="rpc.GetProduct=fail:1000000")
    mesh.start("gateway", SHOPMESH_BREAKER_FAILURES="3", SHOPMESH_BREAKER_COOLDOWN_SECONDS="2")
    answers = []
    for _ in range(10):
        started = time.monotonic()
        status, _, body = call(mesh, "GET", "/v1/products/any-sku")
        answers.append((status, body["message"], time.monotonic() - started))
    assert all(status == 503 for status, _, _ in answers)
    fast = [seconds for _, message, seconds in answers if "calls are not sent" in message]
    assert len(fast) >= 6 and max(fast) < 0.05, answers
    reached = served_calls(mesh, "GetProduct")
    for _ in range(20):  # while open, nothing reaches inventory
        assert call(mesh, "GET", "/v1/products/any-sku")[0] == 503
    assert served_calls(mesh, "GetProduct") == reached
    breaker = value(scrape(f"http://{mesh.address('gateway')}/metrics"), "shop_upstream_breaker_state", upstream="inventory")
    assert breaker == 1, "an operator sees the breaker open (deploy/prometheus/rules.yml alerts on it)"
    time.sleep(2.1)
    status, _, body = call(mesh, "GET", "/v1/products/any-sku")  # half-open: one probe goes through
    assert status == 503 and "calls are not sent" not in body["message"]
    assert served_calls(mesh, "GetProduct") > reached
    print(f"{10 - len(fast)} calls reached the failing upstream, then 503 in at most {1000 * max(fast):.1f} ms "
          "with none sent; after the cooldown one probe went through")


def test_a_client_with_absurd_deadlines_cannot_open_the_breaker_for_everyone(mesh: Mesh) -> None:
    """Issue 11.6: a deadline the caller chose is the caller's failure, not the upstream's."""
    for service in ("inventory", "notification", "order"):
        mesh.start(service)
    mesh.start("gateway", SHOPMESH_BREAKER_FAILURES="3", SHOPMESH_BREAKER_COOLDOWN_SECONDS="5")
    sku = new_product(mesh, 100)
    hasty = []
    for i in range(30):  # far more than the three failures in a row that open the breaker
        order = {"requestId": str(uuid.uuid4()), "userId": "hasty", "lines": [{"sku": sku, "quantity": 1}]}
        hasty.append(call(mesh, "POST", "/v1/orders", order, {"grpc-timeout": ("1m", "2m", "5m")[i % 3]})[0])
    assert set(hasty) <= {504, 200}, hasty  # (an order may be quick enough for 5 ms; none is refused for others)
    polite = []
    for _ in range(10):
        order = {"requestId": str(uuid.uuid4()), "userId": "polite", "lines": [{"sku": sku, "quantity": 1}]}
        status, _, body = call(mesh, "POST", "/v1/orders", order)
        polite.append(status)
        assert status == 200, body
        assert call(mesh, "GET", f"/v1/orders/{body['orderId']}")[0] == 200
    print(f"hasty client: {Counter(hasty)}; the polite one right after: {Counter(polite)}")


def test_a_sale_whose_caller_gave_up_mid_store_is_stored_at_once_and_logged(mesh: Mesh) -> None:
    """Issue 11.8: the shielded step after the sale inherited the caller's almost spent deadline,
    failed, and its exception went unread ("Task exception was never retrieved", which the log
    watch fails on). Since issue 13 that step is storing the sold order (the commit is part of the
    sale): it runs with its own deadline, stores without waiting for the recovery loop, says so."""
    mesh.start("inventory")
    mesh.start("notification")
    mesh.start("order", SHOPMESH_FAULTS="order.storing=delay:0.6")
    sku = new_product(mesh, 5)
    request = order_pb2.CreateOrderRequest(request_id=str(uuid.uuid4()), user_id="hasty-store",
                                           lines=[order_pb2.OrderLine(sku=sku, quantity=1)])
    with grpc.insecure_channel(mesh.address("order")) as channel, pytest.raises(grpc.RpcError) as gave_up:
        order_pb2_grpc.OrderServiceStub(channel).CreateOrder(request, timeout=0.4)  # over mid-store
    assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Recovery would return the stock only after 2 x the call timeout: the order must not wait for it.
    eventually(lambda: len(all_orders(mesh, "hasty-store")) == 1, 3, "the detached store to finish")
    eventually(lambda: "finished after its caller left" in mesh.logs["order"].read_text(), 3, "the order log")
    [placed] = all_orders(mesh, "hasty-store")
    assert placed.status == order_pb2.Order.CONFIRMED and stock(mesh, sku).sold == 1
    with grpc.insecure_channel(mesh.address("order")) as channel:  # the caller's retry learns the outcome
        assert order_pb2_grpc.OrderServiceStub(channel).CreateOrder(request, timeout=5).order_id == placed.order_id
    final = stock(mesh, sku)
    assert (final.available, final.reserved, final.sold) == (4, 0, 1)
    print("caller gone at 0.4 s, store (0.6 s) finished on its own deadline: sold 1, logged, retry replays it")


def test_the_gateway_drains_on_sigterm_requests_in_flight_finish_and_streams_end_cleanly(mesh: Mesh) -> None:
    """Issue 11.7: a GET waiting on a slow upstream was cut at once on SIGTERM."""
    import http.client
    import signal
    import socket
    import threading

    mesh.start("inventory", SHOPMESH_FAULTS="rpc.GetProduct=delay:2")
    mesh.start("notification")
    mesh.start("order")
    gateway = mesh.start("gateway", SHOPMESH_SHUTDOWN_DRAIN_SECONDS="1", SHOPMESH_SHUTDOWN_GRACE_SECONDS="5")
    host, port = mesh.address("gateway").split(":")
    sku = new_product(mesh, 3)
    stream = socket.create_connection((host, int(port)), timeout=15)
    stream.sendall(b"GET /v1/users/drain-user/notifications:stream HTTP/1.1\r\nhost: t\r\n\r\n")
    assert stream.recv(4096).startswith(b"HTTP/1.1 200 ")
    slow: dict[str, object] = {}

    def slow_get() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", f"/v1/products/{sku}")
        reply = conn.getresponse()
        slow.update(status=reply.status, body=reply.read())

    asked = served_calls(mesh, "GetProduct")
    reader = threading.Thread(target=slow_get)
    reader.start()
    eventually(lambda: served_calls(mesh, "GetProduct") > asked, what="the GET to wait on inventory's 2 s")
    started = time.monotonic()
    gateway.send_signal(signal.SIGTERM)
    status, _, ready = settled(lambda: call(mesh, "GET", "/readyz"), lambda answer: answer[0] == 503, 5,
                               "/readyz to say draining")  # draining: still answering, but not ready
    assert status == 503 and ready["draining"] is True, ready
    reader.join(30)
    assert slow.get("status") == 200, slow  # the request in flight finished
    rest = b""
    while not rest.endswith(b"0\r\n\r\n"):  # the stream ended as a finished chunked response, not a reset
        chunk = stream.recv(4096)
        assert chunk, f"the stream was cut, not ended: {rest!r}"
        rest += chunk
    stream.close()
    assert gateway.wait(15) == 0
    took = time.monotonic() - started
    assert took < 1 + 5 + 2, took
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2)
    mesh.processes.pop("gateway")
    print(f"SIGTERM: /readyz 503 while draining, the 2 s GET answered 200, the stream ended cleanly, exit 0 "
          f"after {took:.1f} s")


def test_signed_in_users_have_their_own_rate_limit_and_bad_credentials_count_against_the_address(
        mesh: Mesh) -> None:
    mesh.start("inventory")
    mesh.start("gateway", SHOPMESH_AUTH="on", SHOPMESH_JWT_SECRET=JWT_SECRET,
               SHOPMESH_RATE_LIMIT_PER_SECOND="0.2", SHOPMESH_RATE_LIMIT_BURST="2")
    sku = new_product(mesh, 5)
    alice, bob = {"authorization": f"Bearer {token('alice')}"}, {"authorization": f"Bearer {token('bob')}"}
    assert [call(mesh, "GET", f"/v1/products/{sku}", headers=alice)[0] for _ in range(3)] == [200, 200, 429]
    assert call(mesh, "GET", f"/v1/products/{sku}", headers=bob)[0] == 200  # same address, own bucket
    guesses = [call(mesh, "GET", f"/v1/products/{sku}", headers={"x-api-key": f"guess-{i}"})[0] for i in range(3)]
    assert guesses == [401, 401, 429]  # wrong keys spend the address's bucket
    assert call(mesh, "GET", "/me", headers={"x-api-key": "guess-4"})[0] == 429  # /me is no way around it


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(mesh: Mesh) -> None:
    mesh.start("inventory")
    mesh.start("gateway", SHOPMESH_TRUSTED_PROXIES="127.0.0.1", SHOPMESH_RATE_LIMIT_PER_SECOND="0.2",
               SHOPMESH_RATE_LIMIT_BURST="2")
    sku = new_product(mesh, 5)

    def via_proxy(forwarded_for: str) -> int:
        return call(mesh, "GET", f"/v1/products/{sku}", headers={"x-forwarded-for": forwarded_for})[0]

    assert [via_proxy("203.0.113.7") for _ in range(3)] == [200, 200, 429]
    assert via_proxy("198.51.100.9") == 200  # another client behind the same proxy
    # What a client writes to the left of the address our proxy appended buys it no new bucket.
    assert [via_proxy(f"10.9.9.{i}, 203.0.113.7") for i in range(2)] == [429, 429]
    assert call(mesh, "GET", f"/v1/products/{sku}")[0] == 200  # the proxy's own calls: its own bucket


def test_forwarded_for_from_an_untrusted_peer_is_ignored(mesh: Mesh) -> None:
    mesh.start("inventory")
    mesh.start("gateway", SHOPMESH_TRUSTED_PROXIES="10.0.0.0/8", SHOPMESH_RATE_LIMIT_PER_SECOND="0.2",
               SHOPMESH_RATE_LIMIT_BURST="2")
    sku = new_product(mesh, 5)
    statuses = [call(mesh, "GET", f"/v1/products/{sku}", headers={"x-forwarded-for": f"203.0.113.{i}"})[0]
                for i in range(3)]
    assert statuses == [200, 200, 429]  # one bucket: the peer's, whatever the header claims


def test_silent_and_slow_clients_do_not_hold_the_gateway_but_streams_and_keep_alive_last(mesh: Mesh) -> None:
    import json
    import socket

    mesh.start("inventory")
    mesh.start("notification")
    mesh.start("gateway", SHOPMESH_HTTP_READ_TIMEOUT_SECONDS="1", SHOPMESH_HTTP_IDLE_TIMEOUT_SECONDS="1")
    host, port = mesh.address("gateway").split(":")

    def connect() -> socket.socket:
        return socket.create_connection((host, int(port)), timeout=10)

    def read_all(sock: socket.socket) -> tuple[bytes, float]:
        started, received = time.monotonic(), b""
        while chunk := sock.recv(65536):
            received += chunk
        return received, time.monotonic() - started

    with connect() as silent:  # connects, says nothing: closed after the idle timeout
        answer, took = read_all(silent)
        assert answer == b"" and 0.8 < took < 3, (answer, took)
    for partial in (b"GET /healthz HTTP/1.1\r\nhost: t\r\n",  # a head that stops half-way
                    b"POST /v1/notifications HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
                    b"content-length: 100\r\n\r\n{\"eventId\":"):  # a body that stops half-way
        with connect() as slow:
            slow.sendall(partial)
            answer, took = read_all(slow)
            assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive whole within 1s" in answer, answer
            assert 0.8 < took < 3, took
    with connect() as kept:  # a pause shorter than the idle timeout keeps the connection
        for _ in range(3):
            kept.sendall(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
            assert kept.recv(65536).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.5)
    user = f"patient-{uuid.uuid4().hex[:6]}"
    with connect() as stream:  # a stream is not a slow request: it outlives both timeouts
        stream.sendall(f"GET /v1/users/{user}/notifications:stream HTTP/1.1\r\nhost: t\r\n\r\n".encode())
        time.sleep(2.5)
        with grpc.insecure_channel(mesh.address("notification")) as channel:
            notification_pb2_grpc.NotificationServiceStub(channel).SendNotification(
                notification_pb2.SendNotificationRequest(event_id=f"late:{user}", user_id=user, kind="test.ping",
                                                         subject="still here"), timeout=10)
        received, deadline = b"", time.monotonic() + 10
        while b"data: " not in received and time.monotonic() < deadline:
            received += stream.recv(65536)
        event = json.loads(received.split(b"data: ", 1)[1].split(b"\n", 1)[0])
        assert event["subject"] == "still here", received


def test_open_streams_have_their_own_limit_and_never_take_the_places_of_calls(mesh: Mesh) -> None:
    """Pages following their notifications hold streams for as long as they are open: with the
    stream limit full, and more streams than the call limit, notifications are still sent at once,
    and one stream more is refused naming its own limit."""
    mesh.start("notification", SHOPMESH_MAX_CONCURRENT_RPCS="3", SHOPMESH_MAX_OPEN_STREAMS="20")

    async def scenario() -> tuple[list[float], grpc.StatusCode, str]:
        async with grpc.aio.insecure_channel(mesh.address("notification")) as channel:
            stub = notification_pb2_grpc.NotificationServiceStub(channel)
            streams = [stub.StreamNotifications(notification_pb2.StreamNotificationsRequest(user_id=f"page-{n}"))
                       for n in range(20)]
            for stream in streams:
                await stream.initial_metadata()  # open, held, as a page would
            await asyncio.sleep(0.3)
            took = []
            for n in range(10):  # the order relay's calls go through at once
                started = time.monotonic()
                await stub.SendNotification(notification_pb2.SendNotificationRequest(
                    event_id=f"limit:{uuid.uuid4()}", user_id=f"page-{n}", kind="test.ping", subject="hi"), timeout=5)
                took.append(time.monotonic() - started)
            extra = stub.StreamNotifications(notification_pb2.StreamNotificationsRequest(user_id="one-too-many"))
            try:
                await extra.read()
                code, details = grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as error:
                code, details = error.code(), error.details() or ""
            delivered = [await streams[n].read() for n in range(10)]  # the streams still work
            assert [d.user_id for d in delivered] == [f"page-{n}" for n in range(10)]
            for stream in streams:
                stream.cancel()
            return took, code, details

    took, code, details = asyncio.run(scenario())
    assert max(took) < 1.0, took
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "20 streams at once" in details, (code, details)


def test_idle_streams_cost_the_notification_service_nothing(mesh: Mesh) -> None:
    """500 pages following their notifications with nothing happening: one watcher per process
    reads the database, not one poll per stream, so the process is all but idle; a notification
    for one of them still arrives at once."""
    notification = mesh.start("notification")

    def cpu_seconds() -> float:
        fields = Path(f"/proc/{notification.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def scenario() -> tuple[float, float]:
        async with grpc.aio.insecure_channel(mesh.address("notification")) as channel:
            stub = notification_pb2_grpc.NotificationServiceStub(channel)
            streams = [stub.StreamNotifications(notification_pb2.StreamNotificationsRequest(user_id=f"idle-{n}"))
                       for n in range(500)]
            for stream in streams:
                await stream.initial_metadata()
            await asyncio.sleep(2)  # settled
            before, started = cpu_seconds(), time.monotonic()
            await asyncio.sleep(5)
            share = (cpu_seconds() - before) / (time.monotonic() - started)
            sent = time.monotonic()
            await stub.SendNotification(notification_pb2.SendNotificationRequest(
                event_id=f"idle:{uuid.uuid4()}", user_id="idle-7", kind="test.ping", subject="hi"), timeout=5)
            got = await asyncio.wait_for(streams[7].read(), 5)
            assert got.user_id == "idle-7"
            took = time.monotonic() - sent
            for stream in streams:
                stream.cancel()
            return share, took

    share, took = asyncio.run(scenario())
    print(f"500 idle streams: notification used {100 * share:.1f}% of a core; a notification arrived in {took * 1000:.0f} ms")
    assert share < 0.03, f"{100 * share:.1f}% of a core for idle streams"
    assert took < 0.5


async def test_an_instance_back_on_its_address_after_a_long_outage_is_called_again_within_seconds(
        mesh: Mesh) -> None:
    """gRPC's reconnect backoff grows to 120 s by default: after 30 s down, a restarted inventory
    sat unused for 10 to 20 s. Ours is capped (mesh.client.channels.MAX_RECONNECT_BACKOFF_MS)."""
    from mesh.client.channels import MAX_RECONNECT_BACKOFF_MS, Upstreams
    from mesh.client.discovery import StaticDiscovery

    mesh.start("inventory")
    upstreams = Upstreams(StaticDiscovery({"inventory": mesh.address("inventory")}))

    def call():
        stub = upstreams.bound("inventory", "stub", inventory_pb2_grpc.InventoryServiceStub)
        return stub.ListProducts(inventory_pb2.ListProductsRequest(page_size=1), timeout=1)

    try:
        await call()
        mesh.processes["inventory"].kill()
        mesh.processes["inventory"].wait()
        end = time.monotonic() + 30  # long enough for the default backoff to pass 15 s
        failed = 0
        while time.monotonic() < end:
            try:
                await call()
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                failed += 1
            await asyncio.sleep(0.2)
        assert failed > 50
        mesh.start("inventory")
        back = time.monotonic()

        async def answers_again() -> bool:
            try:
                await call()
            except grpc.aio.AioRpcError:
                return False
            return True

        await eventually_async(answers_again, 20, "a call to the restarted inventory", every=0.05)
        took = time.monotonic() - back
        print(f"called again {took:.2f} s after it was serving")
        assert took < MAX_RECONNECT_BACKOFF_MS / 1000 * 1.2 + 0.5  # the cap, its jitter, a moment
    finally:
        await upstreams.close()


def test_the_gateway_stays_ready_while_one_instance_of_an_upstream_drains(mesh: Mesh, tmp_path: Path) -> None:
    """A draining instance says NOT_SERVING; the gateway's readiness asked whichever instance the
    channel picked, so during a rolling update of order a real cluster saw both gateway pods
    leave their endpoints (connection refused). Ready while any instance of each upstream serves."""
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port
    from tests.support.mesh import wait_serving

    second = free_port()
    env = mesh.env(SHOPMESH_INVENTORY_PORT=str(second), SHOPMESH_INVENTORY_METRICS_PORT=str(free_port()),
                   SHOPMESH_SHUTDOWN_DRAIN_SECONDS="6")
    draining = subprocess.Popen([sys.executable, "-m", "inventory"], cwd=ROOT, env=env,
                                stdout=open(tmp_path / "inventory-2.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        wait_serving(f"127.0.0.1:{second}", process=draining)
        both = f"{mesh.address('inventory')},127.0.0.1:{second}"
        mesh.start("inventory")
        mesh.start("notification")
        mesh.start("order")
        mesh.start("gateway", SHOPMESH_INVENTORY_ADDR=both)
        assert call(mesh, "GET", "/readyz")[0] == 200
        draining.send_signal(signal.SIGTERM)  # NOT_SERVING for 6 s, still answering
        time.sleep(0.5)
        answers = [call(mesh, "GET", "/readyz") for _ in range(12)]
        statuses = [status for status, _, _ in answers]
        print(f"/readyz while one of two inventories drains: {statuses}")
        assert statuses == [200] * 12, answers
        assert draining.wait(30) == 0
    finally:
        if draining.poll() is None:
            draining.kill()
