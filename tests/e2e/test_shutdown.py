"""SIGTERM, again and again, under order load (issue 20, defect 4): every exit is 0 and within the
grace period, and no acknowledged order is lost.

An order process under load once in ~80 SIGTERMs did not exit for 30 s. So one process after
another is started, loaded with orders from 16 buyers, and stopped with SIGTERM mid-load, 200
times (SHOPMESH_SIGTERM_ROUNDS) against the same database; then every order a buyer heard "OK"
for is read back, and the stock adds up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import grpc
import pytest

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from generated.shop.order.v1 import order_pb2, order_pb2_grpc
from mesh.server import lifecycle
from tests.support.mesh import Mesh

ROUNDS = int(os.environ.get("SHOPMESH_SIGTERM_ROUNDS", "200"))
GRACE = 5.0  # SHOPMESH_SHUTDOWN_GRACE_SECONDS for the order processes
BUYERS = 16


async def buy(orders: order_pb2_grpc.OrderServiceStub, sku: str, placed: asyncio.Event,
              acknowledged: list[order_pb2.Order], unanswered: list[str]) -> None:
    """One buyer: orders until the service stops answering; what it heard OK for, and the one it did not."""
    while True:
        request_id = str(uuid.uuid4())
        try:
            acknowledged.append(await orders.CreateOrder(order_pb2.CreateOrderRequest(
                request_id=request_id, user_id="sigterm", lines=[order_pb2.OrderLine(sku=sku, quantity=1)]),
                timeout=30))
            placed.set()
        except grpc.aio.AioRpcError as error:
            # Calls the stopping server never ran are refused, never failed half-way.
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), error
            unanswered.append(request_id)
            return


# 200 rounds take ~290 s on this 2-core machine when it is otherwise idle (a process start each,
# ~1.4 s): the suite's default 300 s left no room for a busy one, where it timed out once.
@pytest.mark.timeout(ROUNDS * 4 + 120)
async def test_sigterm_under_order_load_exits_zero_within_the_grace_every_time(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path)
    try:
        mesh.start("inventory")
        mesh.start("notification")
        async with grpc.aio.insecure_channel(mesh.address("inventory")) as channel:
            inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
            sku = f"sigterm-{uuid.uuid4().hex[:8]}"
            await inventory.CreateProduct(inventory_pb2.CreateProductRequest(product=inventory_pb2.Product(
                sku=sku, name="Sigterm mug", available=1_000_000,
                price=money_pb2.Money(currency_code="USD", minor_units=100))), timeout=10)
        acknowledged: list[order_pb2.Order] = []
        unanswered: list[str] = []
        exits: list[float] = []
        for _ in range(ROUNDS):
            log_start = mesh.logs["order"].stat().st_size if "order" in mesh.logs else 0
            process = await asyncio.to_thread(mesh.start, "order", SHOPMESH_SHUTDOWN_GRACE_SECONDS=str(GRACE))
            async with grpc.aio.insecure_channel(mesh.address("order")) as channel:
                orders = order_pb2_grpc.OrderServiceStub(channel)
                placed = asyncio.Event()
                buyers = [asyncio.create_task(buy(orders, sku, placed, acknowledged, unanswered))
                          for _ in range(BUYERS)]
                await asyncio.wait_for(placed.wait(), 30)  # under load: orders are being placed
                process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                code = await asyncio.to_thread(process.wait, GRACE + 25)
                exits.append(time.monotonic() - signalled)
                # This round's log, in the failure message: CI shows the message, not the file.
                logged = mesh.logs["order"].read_bytes()[log_start:].decode(errors="replace")
                assert code == 0, f"exit {code} after SIGTERM; log:\n{logged[-6000:]}"
                assert exits[-1] < GRACE + 2, (f"round {len(exits)}: exited {exits[-1]:.1f}s after SIGTERM, "
                                               f"past the {GRACE:g}s grace; log:\n{logged[-6000:]}")
                assert "shutdown: " not in logged, f"round {len(exits)}: a shutdown step was given up on:\n{logged[-6000:]}"
                await asyncio.wait_for(asyncio.gather(*buyers), 30)
            mesh.processes.pop("order")

        mesh.start("order")
        async with grpc.aio.insecure_channel(mesh.address("order")) as channel, \
                grpc.aio.insecure_channel(mesh.address("inventory")) as stock_channel:
            orders = order_pb2_grpc.OrderServiceStub(channel)
            for order in acknowledged:  # every order a buyer heard OK for is stored, as it was told
                stored = await orders.GetOrder(order_pb2.GetOrderRequest(order_id=order.order_id), timeout=10)
                assert stored.order_id == order.order_id and stored.lines == order.lines
            retried = [await orders.CreateOrder(order_pb2.CreateOrderRequest(  # a client retries what it never heard
                request_id=r, user_id="sigterm", lines=[order_pb2.OrderLine(sku=sku, quantity=1)]), timeout=30)
                for r in unanswered]
            placed_ids = {o.order_id for o in acknowledged} | {o.order_id for o in retried}
            assert len(placed_ids) == len(acknowledged) + len(unanswered)
            product = await inventory_pb2_grpc.InventoryServiceStub(stock_channel).GetProduct(
                inventory_pb2.GetProductRequest(sku=sku), timeout=10)
            assert product.available + product.reserved + product.sold == 1_000_000
            assert product.sold + product.reserved == len(placed_ids)
        exits.sort()
        print(f"{ROUNDS} SIGTERMs under load: all exit 0; exit after SIGTERM p50 {exits[len(exits) // 2]:.2f}s, "
              f"max {exits[-1]:.2f}s; {len(acknowledged)} orders acknowledged, all stored")
    finally:
        mesh.stop_all()


@pytest.mark.allow_log("finishing what callers left behind took more than")
async def test_a_store_that_outlives_the_grace_does_not_hold_the_process_and_its_stock_comes_back(
        tmp_path: Path) -> None:
    """The budget, from the process's side: a sale whose order cannot be stored before the grace
    ends (its store hangs) does not keep the process past grace + the exit margin, and the stock it
    sold is not lost: the next order process's recovery returns it (no order stands for it)."""
    grace = 1.0
    mesh = Mesh(tmp_path)
    try:
        mesh.start("inventory")
        mesh.start("notification")
        process = mesh.start("order", SHOPMESH_FAULTS="order.storing=delay:60",
                             SHOPMESH_SHUTDOWN_GRACE_SECONDS=str(grace))
        async with grpc.aio.insecure_channel(mesh.address("inventory")) as channel:
            inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
            sku = f"stuck-{uuid.uuid4().hex[:8]}"
            await inventory.CreateProduct(inventory_pb2.CreateProductRequest(product=inventory_pb2.Product(
                sku=sku, name="Stuck mug", available=5,
                price=money_pb2.Money(currency_code="USD", minor_units=100))), timeout=10)
            async with grpc.aio.insecure_channel(mesh.address("order")) as order_channel:
                stuck = asyncio.ensure_future(order_pb2_grpc.OrderServiceStub(order_channel).CreateOrder(
                    order_pb2.CreateOrderRequest(request_id=str(uuid.uuid4()), user_id="stuck",
                                                 lines=[order_pb2.OrderLine(sku=sku, quantity=2)]), timeout=120))
                for _ in range(100):  # until the sale is made and its store hangs
                    sold = await inventory.GetProduct(inventory_pb2.GetProductRequest(sku=sku), timeout=5)
                    if sold.sold == 2:
                        break
                    await asyncio.sleep(0.05)
                assert sold.sold == 2, sold
                process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                code = await asyncio.to_thread(process.wait, 30)
                took = time.monotonic() - signalled
                logged = mesh.logs["order"].read_text()
                assert code == 0, logged[-6000:]
                # Within the budget (closing included), with 0.3 s for the signal and the exit itself.
                assert took < grace + lifecycle.EXIT_MARGIN + 0.3, \
                    f"exited {took:.2f}s after SIGTERM with a {grace:g}s grace:\n{logged[-6000:]}"
                assert "finishing what callers left behind took more than" in logged  # given up on, said
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stuck
                assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            mesh.processes.pop("order")
            # The next instance (no fault; recovery looks at attempts older than 2 x its 1 s call timeout).
            mesh.start("order", SHOPMESH_CALL_TIMEOUT_SECONDS="1", SHOPMESH_OUTBOX_INTERVAL_SECONDS="0.5")
            for _ in range(200):
                product = await inventory.GetProduct(inventory_pb2.GetProductRequest(sku=sku), timeout=5)
                if product.available == 5:
                    break
                await asyncio.sleep(0.1)
            assert (product.available, product.reserved, product.sold) == (5, 0, 0), product
        print(f"a store hanging past the {grace:g}s grace: exit 0 after {took:.2f}s; its 2 units returned")
    finally:
        mesh.stop_all()
