"""PostgreSQL's own faults while orders are placed (issue 21.4): the server stopped and started
again, restarted (`pg_ctl restart -m fast`), and every backend killed (`pg_terminate_backend`).

Two order and two inventory instances and a notification service on a PostgreSQL server of this
test's own. Buyers keep ordering, each retrying its request with the same request_id while the
answer says to retry. The services stay up; their gRPC health is NOT_SERVING while the server is
down and SERVING once it is back, with no restart; every acknowledged order is stored, stock adds
up, and every stored order is notified exactly once."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from generated.shop.order.v1 import order_pb2, order_pb2_grpc
from tests.support.metrics import scrape, value
from tests.support.postgres import PostgresServer
from tests.support.replicas import Replicas
from tests.support.waiting import eventually, settled

STOCK, USERS, BUYERS = 1_000_000, 8, 8
RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
         grpc.StatusCode.ABORTED}


@pytest.fixture
def server(own_postgres: PostgresServer) -> PostgresServer:
    """A PostgreSQL server of this test's own: the test stops and restarts it."""
    return own_postgres


def _health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2).status
        except grpc.RpcError:
            return -1


class Buyers:
    """BUYERS threads ordering one unit at a time until stopped; each request retried with its
    request_id on the other order instance while the answer says to retry."""

    def __init__(self, replicas: Replicas, sku: str):
        self.replicas, self.sku = replicas, sku
        self.stop = threading.Event()
        self.confirmed: list[str] = []
        self.final: Counter[str] = Counter()
        self.retried = 0
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(BUYERS)]

    def _run(self, n: int) -> None:
        channels = [grpc.insecure_channel(self.replicas.address(f"order-{i + 1}")) for i in range(2)]
        stubs = [order_pb2_grpc.OrderServiceStub(c) for c in channels]
        try:
            while not self.stop.is_set():
                request = order_pb2.CreateOrderRequest(request_id=str(uuid.uuid4()), user_id=f"fault-{n % USERS}",
                                                       lines=[order_pb2.OrderLine(sku=self.sku, quantity=1)])
                give_up, attempt = time.monotonic() + 60, n
                while True:
                    try:
                        order = stubs[attempt % 2].CreateOrder(request, timeout=5)
                        self.confirmed.append(order.order_id)
                        self.final["CONFIRMED"] += 1
                        break
                    except grpc.RpcError as error:
                        if error.code() not in RETRY or time.monotonic() > give_up:  # type: ignore[attr-defined]
                            self.final[error.code().name] += 1  # type: ignore[attr-defined]
                            break
                    self.retried += 1
                    attempt += 1
                    time.sleep(0.2)
        finally:
            for channel in channels:
                channel.close()

    def __enter__(self) -> Buyers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)

    def placed(self, at_least: int) -> bool:
        return len(self.confirmed) >= at_least


@pytest.mark.allow_log("the database cannot be reached")
def test_the_mesh_rides_out_a_stopped_a_restarted_and_a_killed_postgresql(server: PostgresServer,
                                                                          tmp_path: Path) -> None:
    replicas = Replicas(server, tmp_path, SHOPMESH_CALL_TIMEOUT_SECONDS="2")
    try:
        replicas.start_all()
        sku = f"fault-{uuid.uuid4().hex[:8]}"
        replicas.create_product(sku, STOCK)
        watched = [(replicas.address("order-1"), "shop.order.v1.OrderService"),
                   (replicas.address("inventory-2"), "shop.inventory.v1.InventoryService"),
                   (replicas.address("notification-1"), "shop.notification.v1.NotificationService")]
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        with Buyers(replicas, sku) as buyers:
            eventually(lambda: buyers.placed(50), 30, "50 orders before the first fault")
            # 1. Down: every service says NOT_SERVING (readiness takes it out), and stays up.
            server.halt()
            for address, name in watched:
                settled(lambda a=address, n=name: _health(a, n), lambda s: s == not_serving, 15,
                        f"{name} NOT_SERVING while its database is down")
                assert _health(address, "liveness") == serving  # a restart would not help
            # 2. Back: SERVING again without a restart, and orders flow.
            server.resume()
            for address, name in watched:
                settled(lambda a=address, n=name: _health(a, n), lambda s: s == serving, 15,
                        f"{name} SERVING once its database is back")
            before = len(buyers.confirmed)
            eventually(lambda: buyers.placed(before + 50), 30, "orders flowing after the database came back")
            # 3. An operator's restart under load, then 4. every backend killed under load.
            server.restart()
            before = len(buyers.confirmed)
            eventually(lambda: buyers.placed(before + 50), 30, "orders flowing after the restart")
            server.terminate_backends()
            before = len(buyers.confirmed)
            eventually(lambda: buyers.placed(before + 50), 30, "orders flowing after the backends were killed")
        assert all(p.poll() is None for p in replicas.processes.values()), "a service exited"
        assert set(buyers.final) <= {"CONFIRMED"}, (buyers.final, buyers.retried)  # every request got its order
        # Nothing lost, nothing twice: every acknowledged order is stored, each sold one unit.
        stored: dict[str, int] = {}
        with grpc.insecure_channel(replicas.address("order-2")) as channel:
            stub = order_pb2_grpc.OrderServiceStub(channel)
            for u in range(USERS):
                page = ""
                while True:
                    listed = stub.ListOrders(order_pb2.ListOrdersRequest(user_id=f"fault-{u}", page_size=100,
                                                                        page_token=page), timeout=10)
                    for o in listed.orders:
                        stored[o.order_id] = o.status
                    page = listed.next_page_token
                    if not page:
                        break
        confirmed = {i for i, status in stored.items() if status == order_pb2.Order.Status.CONFIRMED}
        assert set(buyers.confirmed) <= confirmed, set(buyers.confirmed) - confirmed
        product = settled(lambda: replicas.product(sku), lambda p: not p.reserved, 30, "no stock left held")
        assert (product.available + product.sold, product.sold) == (STOCK, len(confirmed)), (product, len(confirmed))
        def backlog() -> str:
            return "; outbox pending: " + ", ".join(
                f"{name} {value(scrape(f'http://127.0.0.1:{replicas.metrics_ports[name]}/metrics'), 'shop_order_outbox_pending')}"
                for name in ("order-1", "order-2"))

        events = settled(lambda: replicas.created_events(USERS, "fault-"), lambda e: len(e) >= len(confirmed), 60,
                         f"{len(confirmed)} order events notified", detail=backlog)
        assert Counter(events) == Counter(f"order.created:{i}" for i in confirmed), Counter(events).most_common(3)
        print(f"{len(confirmed)} orders through a stop, a restart and killed backends "
              f"({buyers.retried} retries); stock {product.available}+{product.sold}; each notified once")
    finally:
        replicas.stop_all(graceful=True)


pytestmark = pytest.mark.timeout(600)


def test_a_call_waiting_on_a_lock_held_outside_fails_within_its_deadline_and_the_pool_recovers(
        server: PostgresServer, tmp_path: Path) -> None:
    """An outside session (an operator's transaction, a migration) holds a product's row lock: a
    sale waiting on it ends within the caller's deadline, not when the lock is let go, and once
    it is, the same instance sells again on the same pool."""
    import asyncpg

    from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

    replicas = Replicas(server, tmp_path, {"inventory": 1, "notification": 1, "order": 1})
    try:
        replicas.start_all()
        sku = f"locked-{uuid.uuid4().hex[:8]}"
        replicas.create_product(sku, 10)
        database = replicas.settings["SHOPMESH_INVENTORY_DATABASE_URL"].rsplit("/", 1)[1]

        async def hold_then_call() -> tuple[grpc.StatusCode, float]:
            outside = await asyncpg.connect(host="127.0.0.1", port=server.port, user="shopmesh", database=database)
            try:
                async with outside.transaction():
                    await outside.execute("SELECT 1 FROM products WHERE sku = $1 FOR UPDATE", sku)
                    async with grpc.aio.insecure_channel(replicas.address("inventory-1")) as channel:
                        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
                        started = time.monotonic()
                        try:
                            await stub.AdjustStock(inventory_pb2.AdjustStockRequest(sku=sku, delta=1, reason="lock"),
                                                   timeout=1.5)
                            return grpc.StatusCode.OK, time.monotonic() - started
                        except grpc.aio.AioRpcError as error:
                            return error.code(), time.monotonic() - started
            finally:
                await outside.close()

        code, took = asyncio.run(hold_then_call())
        assert code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE), code
        assert took < 1.5 + 1.0, f"the call waited {took:.1f}s on a lock past its 1.5 s deadline"
        # The lock is gone: the same instance, the same pool, sells again (many times, so every
        # pooled connection is used: none was left waiting on the old lock).
        with grpc.insecure_channel(replicas.address("inventory-1")) as channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            for _ in range(30):
                stub.AdjustStock(inventory_pb2.AdjustStockRequest(sku=sku, delta=1, reason="after"), timeout=5)
        assert replicas.product(sku, instance=1).available == 10 + 30
        print(f"a call behind an outside lock ended {code.name} after {took:.2f}s (deadline 1.5 s)")
    finally:
        replicas.stop_all(graceful=True)
