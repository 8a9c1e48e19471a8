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
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from generated.shop.order.v1 import order_pb2, order_pb2_grpc
from tests.conftest import ROOT, free_port
from tests.e2e.harness import wait_http, wait_serving

INSTANCES = {"inventory": 2, "notification": 1, "order": 2}
STOCK, ORDERS, USERS = 60, 200, 8


class Replicas:
    def __init__(self, postgres: object, folder: Path):
        self.folder = folder
        self.ports = {(s, i): free_port() for s, n in INSTANCES.items() for i in range(n)}
        self.metrics = {key: free_port() for key in self.ports}
        self.gateway = free_port()
        self.env = {
            "SHOPMESH_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1", "SHOPMESH_OUTBOX_INTERVAL_SECONDS": "0.3",
            **{f"SHOPMESH_{s.upper()}_DATABASE_URL": postgres.create_database() for s in INSTANCES},  # type: ignore[attr-defined]
            **{f"SHOPMESH_{s.upper()}_ADDR": ",".join(f"127.0.0.1:{self.ports[(s, i)]}" for i in range(n))
               for s, n in INSTANCES.items()},
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

    def served(self, service: str, i: int, method: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics[(service, i)]}/metrics", timeout=10) as page:
            text = page.read().decode()
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "grpc_server_handled_total" and s.labels.get("grpc_method") == method)

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


def test_replicas_on_postgresql_sell_exactly_the_stock_and_notify_each_sale_once(replicas: Replicas) -> None:
    sku = f"pg-{uuid.uuid4().hex[:8]}"
    first_inventory = f"127.0.0.1:{replicas.ports[('inventory', 0)]}"
    with grpc.insecure_channel(first_inventory) as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).CreateProduct(inventory_pb2.CreateProductRequest(
            product=inventory_pb2.Product(sku=sku, name="scarce", available=STOCK,
                                          price=money_pb2.Money(currency_code="USD", minor_units=250))))

    async def burst() -> Counter:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{replicas.ports[('order', i)]}") for i in range(2)]
        stubs = [order_pb2_grpc.OrderServiceStub(c) for c in channels]

        async def one(n: int) -> str:
            request = order_pb2.CreateOrderRequest(request_id=str(uuid.uuid4()), user_id=f"pg-user-{n % USERS}",
                                                   lines=[order_pb2.OrderLine(sku=sku, quantity=1)])
            try:
                await stubs[n % 2].CreateOrder(request, timeout=60)
                return "OK"
            except grpc.aio.AioRpcError as error:
                return error.code().name

        try:
            return Counter(await asyncio.gather(*(one(n) for n in range(ORDERS))))
        finally:
            for channel in channels:
                await channel.close()

    codes = asyncio.run(burst())
    assert codes == {"OK": STOCK, "FAILED_PRECONDITION": ORDERS - STOCK}, codes
    with grpc.insecure_channel(f"127.0.0.1:{replicas.ports[('inventory', 1)]}") as channel:  # the other instance
        product = inventory_pb2_grpc.InventoryServiceStub(channel).GetProduct(inventory_pb2.GetProductRequest(sku=sku))
    assert (product.available, product.reserved, product.sold) == (0, 0, STOCK)
    # Both order instances took orders, and both inventories took reservations (called in turn).
    assert all(replicas.served("order", i, "CreateOrder") > 0 for i in range(2))
    assert all(replicas.served("inventory", i, "ReserveStock") > 0 for i in range(2))

    notification = f"127.0.0.1:{replicas.ports[('notification', 0)]}"
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(notification) as channel:
        stub = notification_pb2_grpc.NotificationServiceStub(channel)
        while True:
            events = [n.event_id for u in range(USERS) for n in stub.ListNotifications(
                notification_pb2.ListNotificationsRequest(user_id=f"pg-user-{u}", page_size=100)).notifications
                if n.kind == "order.created"]  # (a fresh database: all of them are this test's)
            if len(events) >= STOCK or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert len(events) == STOCK and len(set(events)) == STOCK, Counter(events).most_common(3)
