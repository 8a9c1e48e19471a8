"""The mesh on PostgreSQL, with two inventories and two order services side by side.

What comes next for the SQL: the same SQLAlchemy statements on a real PostgreSQL server, each
service in its own database, several instances of one service sharing it (static discovery
with `ip:port,ip:port`). A burst of concurrent orders for scarce stock sells exactly what there
is, spread over every instance, and each sale is notified exactly once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from generated.shop.order.v1 import order_pb2, order_pb2_grpc
from tests.conftest import ROOT, free_port
from tests.support.mesh import rpc_calls, wait_http, wait_serving
from tests.support.waiting import settled

INSTANCES = {"inventory": 2, "notification": 1, "order": 2}
STOCK, ORDERS, USERS = 60, 200, 8


class Replicas:
    def __init__(self, postgres: object, folder: Path, **settings: str):
        self.folder = folder
        self.ports = {(s, i): free_port() for s, n in INSTANCES.items() for i in range(n)}
        self.metrics = {key: free_port() for key in self.ports}
        self.gateway = free_port()
        self.env = {
            "SHOPMESH_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1", "SHOPMESH_OUTBOX_INTERVAL_SECONDS": "0.3",
            **{f"SHOPMESH_{s.upper()}_DATABASE_URL": postgres.create_database() for s in INSTANCES},  # type: ignore[attr-defined]
            **{f"SHOPMESH_{s.upper()}_ADDR": ",".join(f"127.0.0.1:{self.ports[(s, i)]}" for i in range(n))
               for s, n in INSTANCES.items()},
            **settings,
        }
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        import os

        for (service, i), port in self.ports.items():
            env = {**os.environ, **self.env, f"SHOPMESH_{service.upper()}_PORT": str(port),
                   f"SHOPMESH_{service.upper()}_METRICS_PORT": str(self.metrics[(service, i)]),
                   "SHOPMESH_INSTANCE_ID": f"{service}-{i + 1}"}
            self._spawn(service, env, f"{service}-{i + 1}")
            wait_serving(f"127.0.0.1:{port}", process=self.processes[-1])
        self._spawn("gateway", {**os.environ, **self.env, "SHOPMESH_GATEWAY_PORT": str(self.gateway)}, "gateway")
        wait_http(f"http://127.0.0.1:{self.gateway}/healthz", process=self.processes[-1])

    def _spawn(self, service: str, env: dict[str, str], name: str) -> None:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        self.processes.append(subprocess.Popen([sys.executable, "-m", service], cwd=ROOT, env=env, stdout=log,
                                               stderr=subprocess.STDOUT))

    def kill(self, name: str) -> None:
        """kill -9 the instance named `inventory-1`, `order-2`, ...: no goodbye."""
        service, _, number = name.rpartition("-")
        index = list(self.ports).index((service, int(number) - 1))
        self.processes[index].kill()
        self.processes[index].wait(10)

    def product(self, sku: str, instance: int = 1) -> inventory_pb2.Product:
        with grpc.insecure_channel(f"127.0.0.1:{self.ports[('inventory', instance)]}") as channel:
            return inventory_pb2_grpc.InventoryServiceStub(channel).GetProduct(
                inventory_pb2.GetProductRequest(sku=sku), timeout=10)

    def create_product(self, sku: str, stock: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.ports[('inventory', 0)]}") as channel:
            inventory_pb2_grpc.InventoryServiceStub(channel).CreateProduct(inventory_pb2.CreateProductRequest(
                product=inventory_pb2.Product(sku=sku, name="scarce", available=stock,
                                              price=money_pb2.Money(currency_code="USD", minor_units=250))))

    def created_events(self, users: int, prefix: str) -> list[str]:
        with grpc.insecure_channel(f"127.0.0.1:{self.ports[('notification', 0)]}") as channel:
            stub = notification_pb2_grpc.NotificationServiceStub(channel)
            return [n.event_id for u in range(users) for n in stub.ListNotifications(
                notification_pb2.ListNotificationsRequest(user_id=f"{prefix}{u}", page_size=100)).notifications
                if n.kind == "order.created"]

    def served(self, service: str, i: int, method: str) -> float:
        return rpc_calls(self.metrics[(service, i)], method, ended=True)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def replicas(postgres: object, tmp_path: Path) -> Iterator[Replicas]:
    mesh = Replicas(postgres, tmp_path)
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture
def fast_replicas(postgres: object, tmp_path: Path) -> Iterator[Replicas]:
    mesh = Replicas(postgres, tmp_path, SHOPMESH_RESERVATION_TTL_SECONDS="3", SHOPMESH_CALL_TIMEOUT_SECONDS="1")
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.stop()


RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


async def order_burst(replicas: Replicas, sku: str, users: str,
                      meanwhile: Callable[[], Awaitable[None]] | None = None) -> tuple[Counter, int]:
    """ORDERS concurrent orders of one unit, alternating over the order instances, each retried with its
    request_id on the other instance while the answer says to retry (as a client should): the final
    answer of each (its order's status, or the error code) and how many needed a retry."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{replicas.ports[('order', i)]}") for i in range(2)]
    stubs = [order_pb2_grpc.OrderServiceStub(c) for c in channels]
    retried = 0

    async def one(n: int) -> str:
        nonlocal retried
        request = order_pb2.CreateOrderRequest(request_id=str(uuid.uuid4()), user_id=f"{users}{n % USERS}",
                                               lines=[order_pb2.OrderLine(sku=sku, quantity=1)])
        give_up, attempt = time.monotonic() + 60, n
        while True:
            try:
                order = await stubs[attempt % 2].CreateOrder(request, timeout=10)
                return order_pb2.Order.Status.Name(order.status)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() > give_up:
                    return error.code().name
            retried += attempt == n
            attempt += 1
            await asyncio.sleep(0.2)

    try:
        outcomes = asyncio.gather(*(one(n) for n in range(ORDERS)))
        if meanwhile is not None:
            await meanwhile()
        return Counter(await outcomes), retried
    finally:
        for channel in channels:
            await channel.close()


def test_replicas_on_postgresql_sell_exactly_the_stock_and_notify_each_sale_once(replicas: Replicas) -> None:
    sku = f"pg-{uuid.uuid4().hex[:8]}"
    replicas.create_product(sku, STOCK)
    final, retried = asyncio.run(order_burst(replicas, sku, "pg-user-"))
    assert final == {"CONFIRMED": STOCK, "FAILED_PRECONDITION": ORDERS - STOCK}, (final, retried)
    product = replicas.product(sku)  # read on the other instance than the one that created it
    assert (product.available, product.reserved, product.sold) == (0, 0, STOCK), product
    # Both order instances took orders, and both inventories took reservations (called in turn).
    assert all(replicas.served("order", i, "CreateOrder") > 0 for i in range(2))
    assert all(replicas.served("inventory", i, "ReserveStock") > 0 for i in range(2))
    # (a fresh database: every event is this test's)
    events = settled(lambda: replicas.created_events(USERS, "pg-user-"), lambda found: len(found) >= STOCK,
                     30, f"{STOCK} order events notified")
    assert len(events) == STOCK and len(set(events)) == STOCK, Counter(events).most_common(3)
    print(f"{dict(final)} over two order and two inventory instances ({retried} retried)")


def test_kill_9_of_an_order_replica_mid_burst_loses_nothing(fast_replicas: Replicas) -> None:
    replicas, sku = fast_replicas, f"pg-crash-{uuid.uuid4().hex[:8]}"
    replicas.create_product(sku, STOCK)

    async def kill_mid_burst() -> None:
        while await asyncio.to_thread(replicas.served, "order", 0, "CreateOrder") < 10:  # order-1 answered a few
            await asyncio.sleep(0.05)
        await asyncio.to_thread(replicas.kill, "order-1")

    final, retried = asyncio.run(order_burst(replicas, sku, "crash-user-", kill_mid_burst))
    assert retried > 0, "the kill came after the burst: nothing was in flight"
    assert set(final) <= {"CONFIRMED", "CANCELLED", "FAILED_PRECONDITION"}, final  # every request got an answer
    confirmed = final["CONFIRMED"]
    assert 0 < confirmed <= STOCK, final
    # Held stock of orders that died half-way is released by expiry or settled by recovery.
    product = settled(lambda: replicas.product(sku), lambda found: not found.reserved, 30, "no stock left held")
    assert (product.reserved, product.sold, product.available) == (0, confirmed, STOCK - confirmed), (product, final)
    events = settled(lambda: replicas.created_events(USERS, "crash-user-"), lambda found: len(found) >= confirmed,
                     30, f"{confirmed} order events notified")
    assert len(events) == len(set(events)) == confirmed, (len(events), len(set(events)), final)
    print(f"{dict(final)} after kill -9 of order-1 mid-burst ({retried} requests retried on order-2); "
          f"stock {product.available}+{product.sold} of {STOCK}")
