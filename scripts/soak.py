"""Soak: orders flow for minutes while random services are kill -9ed and restarted.

    .venv/bin/python scripts/soak.py [--minutes 5] [--seed 1] [--database sqlite|postgresql]

Not part of the test suite (it takes minutes). It starts inventory, notification
and order as separate processes (reservation TTL 3 s, recovery every 0.5 s),
places orders from 8 concurrent clients the whole time, and every few seconds
kill -9s a random service and restarts it. Throughout, it reads the stock and
checks available + reserved + sold == initial at every read. At the end, with
everything back up, it waits for the mesh to settle and checks: no reservation
left held, every order in exactly one final state, CONFIRMED quantities equal
the units sold, every acknowledged order CONFIRMED and present, and exactly one
notification per order event. Prints what it checked; exits 1 on any violation.

With `--database postgresql` the services keep their data on a throwaway PostgreSQL server
(Debian's binaries, on loopback), and the server itself is restarted (`pg_ctl restart -m fast`)
at a third and at two thirds of the run, besides the kills.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from generated.shop.common.v1 import money_pb2  # noqa: E402
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc  # noqa: E402
from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc  # noqa: E402
from generated.shop.order.v1 import order_pb2, order_pb2_grpc  # noqa: E402
from scripts.bench_grpc import free_port, stop_all, wait_port  # noqa: E402

SERVICES = ("inventory", "notification", "order")
INITIAL = 1_000_000
USER = "soak"


class Mesh:
    def __init__(self, work: Path, databases: dict[str, str] | None = None):
        self.work = work
        self.ports = {name: free_port() for name in SERVICES}
        self.env = dict(os.environ, SHOPMESH_DATA_DIR=str(work), SHOPMESH_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
                        SHOPMESH_RESERVATION_TTL_SECONDS="3", SHOPMESH_OUTBOX_INTERVAL_SECONDS="0.5",
                        SHOPMESH_CALL_TIMEOUT_SECONDS="2", SHOPMESH_METRICS="off")
        for name, port in self.ports.items():
            self.env[f"SHOPMESH_{name.upper()}_PORT"] = str(port)
        for name, url in (databases or {}).items():
            self.env[f"SHOPMESH_{name.upper()}_DATABASE_URL"] = url
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.processes[name] = subprocess.Popen([sys.executable, "-m", name], cwd=ROOT, env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT)
        wait_port(self.address(name))

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"


async def client(mesh: Mesh, stop: asyncio.Event, acknowledged: dict[str, str], outcomes: Counter) -> None:
    while not stop.is_set():
        request_id = str(uuid.uuid4())
        request = order_pb2.CreateOrderRequest(request_id=request_id, user_id=USER,
                                               lines=[order_pb2.OrderLine(sku="soak", quantity=random.randint(1, 3))])
        try:
            async with grpc.aio.insecure_channel(mesh.address("order")) as channel:
                order = await order_pb2_grpc.OrderServiceStub(channel).CreateOrder(request, timeout=3)
            acknowledged[request_id] = order.order_id
            outcomes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            outcomes[error.code().name] += 1
            await asyncio.sleep(0.1)


async def watch_stock(mesh: Mesh, stop: asyncio.Event, reads: Counter) -> None:
    while not stop.is_set():
        try:
            async with grpc.aio.insecure_channel(mesh.address("inventory")) as channel:
                p = await inventory_pb2_grpc.InventoryServiceStub(channel).GetProduct(
                    inventory_pb2.GetProductRequest(sku="soak"), timeout=2)
            reads["reads"] += 1
            if p.available + p.reserved + p.sold != INITIAL or min(p.available, p.reserved, p.sold) < 0:
                reads["violations"] += 1
                print(f"INVARIANT BROKEN: available {p.available} reserved {p.reserved} sold {p.sold}", flush=True)
        except grpc.aio.AioRpcError:
            reads["unreachable"] += 1
        await asyncio.sleep(0.2)


async def chaos(mesh: Mesh, stop: asyncio.Event, kills: Counter, rng: random.Random) -> None:
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(2, 6))
        victim = rng.choice(SERVICES)
        mesh.kill(victim)
        kills[victim] += 1
        await asyncio.sleep(rng.uniform(0.2, 2))
        await asyncio.to_thread(mesh.start, victim)


def pages(fetch) -> list:
    found, token = [], ""
    while True:
        page = fetch(token)
        found += list(page[0])
        token = page[1]
        if not token:
            return found


def settle_and_check(mesh: Mesh, acknowledged: dict[str, str]) -> list[str]:
    problems: list[str] = []
    with grpc.insecure_channel(mesh.address("inventory")) as ic, grpc.insecure_channel(mesh.address("order")) as oc, \
            grpc.insecure_channel(mesh.address("notification")) as nc:
        inventory = inventory_pb2_grpc.InventoryServiceStub(ic)
        orders_stub = order_pb2_grpc.OrderServiceStub(oc)
        notes = notification_pb2_grpc.NotificationServiceStub(nc)

        def orders() -> list:
            return pages(lambda t: (lambda r: (r.orders, r.next_page_token))(
                orders_stub.ListOrders(order_pb2.ListOrdersRequest(user_id=USER, page_size=1000, page_token=t))))

        deadline = time.monotonic() + 60
        while True:
            product = inventory.GetProduct(inventory_pb2.GetProductRequest(sku="soak"))
            all_orders = orders()
            confirmed = [o for o in all_orders if o.status == order_pb2.Order.CONFIRMED]
            sold_by_orders = sum(line.quantity for o in confirmed for line in o.lines)
            if product.reserved == 0 and sold_by_orders == product.sold:
                break
            if time.monotonic() > deadline:
                problems.append(f"not settled after 60 s: reserved {product.reserved}, sold {product.sold}, "
                                f"confirmed orders hold {sold_by_orders}")
                break
            time.sleep(0.5)
        if product.available + product.reserved + product.sold != INITIAL:
            problems.append("available + reserved + sold != initial")
        by_id = {o.order_id: o for o in all_orders}
        lost = [oid for oid in acknowledged.values() if oid not in by_id]
        unconfirmed = [oid for oid in acknowledged.values() if oid in by_id
                       and by_id[oid].status != order_pb2.Order.CONFIRMED]
        if lost:
            problems.append(f"{len(lost)} acknowledged orders missing")
        if unconfirmed:
            problems.append(f"{len(unconfirmed)} acknowledged orders not CONFIRMED")
        expected = Counter(f"order.created:{o.order_id}" for o in all_orders)
        expected.update(f"order.cancelled:{o.order_id}" for o in all_orders if o.status == order_pb2.Order.CANCELLED)
        deadline = time.monotonic() + 60
        while True:
            got = Counter(n.event_id for n in pages(lambda t: (lambda r: (r.notifications, r.next_page_token))(
                notes.ListNotifications(notification_pb2.ListNotificationsRequest(
                    user_id=USER, page_size=1000, page_token=t)))))
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if got != expected:
            problems.append(f"notifications differ from order events: {len(got)} vs {len(expected)}")
        statuses = Counter(order_pb2.Order.Status.Name(o.status) for o in all_orders)
        print(f"settled: available {product.available} + reserved {product.reserved} + sold {product.sold} "
              f"== {INITIAL}; orders {dict(statuses)}; acknowledged {len(acknowledged)}, missing {len(lost)}, "
              f"acknowledged but cancelled later {len(unconfirmed)}; notifications {sum(got.values())} for "
              f"{len(expected)} events, duplicates {sum(v - 1 for v in got.values() if v > 1)}")
    return problems


async def restarts(server, minutes: float, kills: Counter) -> None:  # type: ignore[no-untyped-def]
    """The database server restarted at a third and at two thirds of the run."""
    for _ in range(2):
        await asyncio.sleep(minutes * 60 / 3)
        await asyncio.to_thread(server.restart)
        kills["postgresql restarts"] += 1


async def soak(mesh: Mesh, minutes: float, seed: int, server=None) -> tuple[dict[str, str], Counter, Counter, Counter]:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    acknowledged: dict[str, str] = {}
    outcomes, reads, kills = Counter(), Counter(), Counter()
    tasks = [asyncio.create_task(client(mesh, stop, acknowledged, outcomes)) for _ in range(8)]
    tasks.append(asyncio.create_task(watch_stock(mesh, stop, reads)))
    tasks.append(asyncio.create_task(chaos(mesh, stop, kills, random.Random(seed))))
    if server is not None:
        tasks.append(asyncio.create_task(restarts(server, minutes, kills)))
    await asyncio.sleep(minutes * 60)
    stop.set()
    await asyncio.gather(*tasks)
    return acknowledged, outcomes, reads, kills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shopmesh-soak-"))
    with contextlib.ExitStack() as servers:
        server = None
        if args.database == "postgresql":
            from tests.support.postgres import throwaway_server

            server = servers.enter_context(throwaway_server(free_port()))
        run(work, args, server)


def run(work: Path, args: argparse.Namespace, server) -> None:  # type: ignore[no-untyped-def]
    mesh = Mesh(work, None if server is None else {name: server.create_database() for name in SERVICES})
    try:
        for name in SERVICES:
            mesh.start(name)
        with grpc.insecure_channel(mesh.address("inventory")) as channel:
            inventory_pb2_grpc.InventoryServiceStub(channel).CreateProduct(inventory_pb2.CreateProductRequest(
                product=inventory_pb2.Product(sku="soak", name="Soak", available=INITIAL,
                                              price=money_pb2.Money(currency_code="USD", minor_units=100))))
        started = time.monotonic()
        acknowledged, outcomes, reads, kills = asyncio.run(soak(mesh, args.minutes, args.seed, server))
        for name in SERVICES:  # everything up for the final reckoning
            if mesh.processes[name].poll() is not None:
                mesh.start(name)
        print(f"{time.monotonic() - started:.0f} s of orders from 8 clients on {args.database}, seed {args.seed}: "
              f"calls {dict(outcomes)}; "
              f"kill -9: {dict(kills)}; stock reads {reads['reads']}, invariant violations {reads['violations']}")
        problems = settle_and_check(mesh, acknowledged)
        if reads["violations"]:
            problems.append(f"{reads['violations']} reads broke available + reserved + sold == initial")
        print("RESULT:", "PASS" if not problems else "FAIL: " + "; ".join(problems))
        sys.exit(1 if problems else 0)
    finally:
        stop_all(mesh.processes.values())
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
