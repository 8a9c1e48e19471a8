"""Discovery through a real Consul agent (built by scripts/install-tools.sh) and real service processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from generated.shop.order.v1 import order_pb2, order_pb2_grpc
from tests.conftest import ROOT, free_port, tool
from tests.support.consul import Agent
from tests.support.http import Http
from tests.support.mesh import Mesh, rpc_calls
from tests.support.metrics import scrape
from tests.support.waiting import said


@pytest.fixture
def consul(tmp_path: Path) -> Iterator[tuple[Agent, Mesh]]:
    """A real Consul agent and a place to start instances in; everything stops at the end."""
    agent = Agent(tmp_path)
    agent.start()
    services = Mesh(tmp_path, settings={"SHOPMESH_DISCOVERY": "consul", "SHOPMESH_CONSUL_ADDR": agent.address,
                                        "SHOPMESH_CONSUL_CHECK_INTERVAL_SECONDS": "1"})
    try:
        yield agent, services
    finally:
        services.stop_all()
        agent.stop()


@pytest.fixture
def mesh(consul: tuple[Agent, Mesh]) -> tuple[Agent, Mesh]:
    """Two inventories, a notification and an order instance on the real Consul."""
    _, services = consul
    for name, service in (("inventory-a", "inventory"), ("inventory-b", "inventory"),
                          ("notification-1", "notification"), ("order-1", "order")):
        services.start(service, name=name)
    return consul


def new_product(services: Mesh, stock: int, instance: str = "") -> str:
    sku = f"c-{uuid.uuid4().hex[:8]}"
    port = services.port(instance or next(n for n in services.processes if n.startswith("inventory")))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        product = inventory_pb2.Product(sku=sku, name="Consul mug", available=stock,
                                        price=money_pb2.Money(currency_code="USD", minor_units=100))
        inventory_pb2_grpc.InventoryServiceStub(channel).CreateProduct(inventory_pb2.CreateProductRequest(product=product))
    return sku


def stock(services: Mesh, sku: str, name: str = "inventory-a") -> inventory_pb2.Product:
    with grpc.insecure_channel(f"127.0.0.1:{services.port(name)}") as channel:
        return inventory_pb2_grpc.InventoryServiceStub(channel).GetProduct(inventory_pb2.GetProductRequest(sku=sku))


async def place_orders(services: Mesh, sku: str, seconds: float, event=None, concurrency: int = 8):
    """Orders for `seconds`; (acknowledged orders, failures by code). `event(t)` runs once midway."""
    acknowledged: list[order_pb2.Order] = []
    failures: Counter[grpc.StatusCode] = Counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{services.port('order-1')}") as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        end = time.monotonic() + seconds

        async def buyer() -> None:
            while time.monotonic() < end:
                request = order_pb2.CreateOrderRequest(request_id=str(uuid.uuid4()), user_id="consul",
                                                       lines=[order_pb2.OrderLine(sku=sku, quantity=1)])
                try:
                    acknowledged.append(await stub.CreateOrder(request, timeout=20))
                except grpc.aio.AioRpcError as error:
                    failures[error.code()] += 1

        tasks = [asyncio.create_task(buyer()) for _ in range(concurrency)]
        if event is not None:
            await asyncio.sleep(seconds / 3)
            await asyncio.to_thread(event)
        await asyncio.gather(*tasks)
    return acknowledged, failures


def test_every_service_shows_up_passing_with_a_grpc_check(mesh) -> None:
    agent, services = mesh
    for service, count in (("inventory", 2), ("notification", 1), ("order", 1)):
        entries = agent.wait_passing(service, count)
        for entry in entries:
            checks = [c for c in entry["Checks"] if c["ServiceID"]]
            assert [c["Type"] for c in checks] == ["grpc"]
            assert (checks[0]["Interval"], checks[0]["Timeout"]) == ("1s", "1s")
            port = entry["Service"]["Port"]
            assert f":{port}/shop.{service}.v1." in checks[0]["Output"]  # checked on its own gRPC service name
            assert entry["Service"]["Meta"]["protocol"] == "grpc" and entry["Service"]["Meta"]["version"]
            assert "grpc" in entry["Service"]["Tags"] and entry["Service"]["ID"] in services.processes
            # What Prometheus' Consul discovery scrapes (deploy/prometheus/prometheus.yml): the instance's /metrics port.
            metrics_port = entry["Service"]["Meta"]["metrics_port"]
            assert metrics_port == str(services.metrics_ports[entry["Service"]["ID"]])
            page = scrape(f"http://{entry['Service']['Address']}:{metrics_port}/metrics")
            assert any(name == "grpc_server_handled_total" for name, _ in page), sorted(page)[:5]
    assert {e["Service"]["ID"] for e in agent.passing("inventory")} == {"inventory-a", "inventory-b"}


async def test_two_inventory_instances_both_take_calls_under_load(mesh) -> None:
    agent, services = mesh
    sku = new_product(services, 100_000)
    before = {name: services.cpu(name) for name in ("inventory-a", "inventory-b")}
    acknowledged, failures = await place_orders(services, sku, 6)
    used = {name: services.cpu(name) - before[name] for name in before}
    print(f"orders {len(acknowledged)}, failures {dict(failures)}, inventory CPU seconds {used}")
    assert acknowledged and not failures
    assert min(used.values()) > 0.25 * max(used.values()), used  # both share the work


async def test_sigterm_of_one_inventory_under_load_fails_no_call_and_it_leaves(mesh) -> None:
    agent, services = mesh
    sku = new_product(services, 100_000)
    acknowledged, failures = await place_orders(
        services, sku, 9, event=lambda: services.processes["inventory-b"].send_signal(signal.SIGTERM))
    print(f"orders {len(acknowledged)}, failures {dict(failures)}")
    assert acknowledged and not failures
    assert services.processes["inventory-b"].wait(30) == 0
    assert {e["Service"]["ID"] for e in agent.get("/v1/health/service/inventory")} == {"inventory-a"}
    log = services.logs["inventory-b"].read_text()
    seen, gone = log.index("Consul sees inventory-b as critical"), log.index("deregistered inventory-b")
    assert log.index("health NOT_SERVING") < seen < gone  # NOT_SERVING, Consul sees it, then it leaves
    product = stock(services, sku)
    assert product.sold + product.reserved == len(acknowledged)


async def test_kill_9_of_one_inventory_loses_no_order_and_a_restart_rejoins(mesh) -> None:
    agent, services = mesh
    sku = new_product(services, 100_000)
    acknowledged, failures = await place_orders(
        services, sku, 12, event=lambda: services.processes["inventory-b"].kill())
    print(f"orders {len(acknowledged)}, failures {dict(failures)}")
    assert len(acknowledged) > 20
    # Only calls caught inside the dying instance may fail, and only as retryable errors.
    assert set(failures) <= {grpc.StatusCode.UNAVAILABLE} and sum(failures.values()) <= 8
    agent.wait_passing("inventory", 1)
    # The order service dropped the dead instance from its set (it was told within the run).
    survivor = f"inventory instances: 127.0.0.1:{services.port('inventory-a')}\n"
    assert survivor in services.logs["order-1"].read_text()
    product = stock(services, sku)
    assert product.available + product.reserved + product.sold == 100_000
    assert product.sold + product.reserved >= len(acknowledged)  # every acknowledged order holds its unit
    assert product.sold + product.reserved <= len(acknowledged) + sum(failures.values())  # nothing twice

    services.start("inventory", name="inventory-b")
    agent.wait_passing("inventory", 2)
    both = "inventory instances: " + ", ".join(
        sorted(f"127.0.0.1:{services.port(name)}" for name in ("inventory-a", "inventory-b"))) + "\n"
    said(services.logs["order-1"], both, services.processes["order-1"], 15)  # its blocking query saw the new set
    acknowledged, failures = await place_orders(services, sku, 5)
    assert acknowledged and not failures
    # Round robin over two: the restarted one takes its share at once (not after a reconnect
    # backoff left from while it was dead, which a shared subchannel would still be waiting out).
    reserved_b = started_calls(services, "inventory-b", "ReserveStock")
    print(f"orders {len(acknowledged)}, ReserveStock on the restarted instance {reserved_b:.0f}")
    assert reserved_b > len(acknowledged) / 4, "the restarted instance receives too few calls"


async def test_calls_continue_while_consul_is_down_and_services_register_again(mesh) -> None:
    agent, services = mesh
    sku = new_product(services, 100_000)
    agent.stop()
    acknowledged, failures = await place_orders(services, sku, 5)
    assert acknowledged and not failures
    agent.start()  # a -dev agent starts empty: every service must put itself back
    for service, count in (("inventory", 2), ("notification", 1), ("order", 1)):
        agent.wait_passing(service, count, timeout=30)
    acknowledged, failures = await place_orders(services, sku, 3)
    assert acknowledged and not failures
    logs = services.logs["order-1"].read_text()
    assert logs.count("Consul unreachable (watching inventory)") == 1  # once per outage, not per call


def test_the_launcher_runs_the_mesh_on_consul_with_two_inventories_in_one_flag(tmp_path: Path) -> None:
    tool("consul")
    ports = {name: free_port() for name in ("inventory", "order", "notification", "gateway", "consul")}
    args = [sys.executable, "-m", "mesh.tools.launcher", "--data-dir", str(tmp_path / "data"), "--consul", "dev",
            "--consul-port", str(ports["consul"]), "--instances", "inventory=2"]
    for name in ("inventory", "order", "notification", "gateway"):
        args += [f"--{name}-port", str(ports[name])]
    for name in ("inventory", "order", "notification"):  # the second inventory's is 100 above
        args += [f"--{name}-metrics-port", str(free_port())]
    log = tmp_path / "launcher.log"
    env = dict(os.environ, PATH=f"{ROOT / '.tools' / 'bin'}:{os.environ['PATH']}")
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        said(log, "shopmesh is up", process, 90)
        passing = Http(f"127.0.0.1:{ports['consul']}").call("GET", "/v1/health/service/inventory?passing=true")[2]
        assert sorted(e["Service"]["ID"] for e in passing) == ["inventory-1", "inventory-2"]
        status, _, order = Http(f"127.0.0.1:{ports['gateway']}").call("POST", "/v1/orders", {
            "requestId": str(uuid.uuid4()), "userId": "c", "lines": [{"sku": "coffee-mug", "quantity": 1}]})
        assert status == 200 and order["status"] == "CONFIRMED", order
        process.send_signal(signal.SIGINT)
        asked = time.monotonic()
        assert process.wait(90) == 0
        took = time.monotonic() - asked
        out = log.read_text()
        for name in ("inventory-1", "inventory-2", "order", "notification", "gateway"):
            assert f"{name} exited with code 0" in out
        # Callers stop before what they call: gateway, then order, then inventory and notification.
        at = {name: out.index(f"{name} exited with code") for name in ("gateway", "order", "inventory-1", "notification")}
        assert at["gateway"] < at["order"] < min(at["inventory-1"], at["notification"]), out[-2000:]
        print(f"Ctrl-C to a stopped mesh on Consul: {took:.1f} s")
    finally:
        if process.poll() is None:  # a failed assertion: stop it the way users do, so no child lingers
            process.send_signal(signal.SIGINT)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                process.kill()


def started_calls(services: Mesh, name: str, method: str) -> float:
    return rpc_calls(services.metrics_ports[name], method)


@contextlib.asynccontextmanager
async def consul_upstreams(agent: Agent):  # type: ignore[no-untyped-def]
    """Our channels to inventory, their instance set followed in the real Consul (as the gateway's)."""
    from mesh.client.channels import Upstreams
    from mesh.client.discovery import ConsulDiscovery
    from mesh.settings import Settings

    settings = Settings.from_env("gateway", {"SHOPMESH_DISCOVERY": "consul", "SHOPMESH_CONSUL_ADDR": agent.address})
    discovery = ConsulDiscovery(settings)
    upstreams = Upstreams(discovery, settings)
    await upstreams.watch("inventory")
    try:
        yield upstreams
    finally:
        await upstreams.close()
        await discovery.close()


async def get_products(upstreams, seconds: float, sku=lambda: "mug", pause: float = 0.0) -> Counter:  # type: ignore[no-untyped-def]
    """GetProduct for `seconds`, each call on the current channel; the codes the caller saw."""
    codes: Counter = Counter()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stub = upstreams.bound("inventory", "stub", inventory_pb2_grpc.InventoryServiceStub)
        try:
            await stub.GetProduct(inventory_pb2.GetProductRequest(sku=sku()), timeout=2)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] += 1
        await asyncio.sleep(pause)
    return codes


async def test_an_instance_failing_its_calls_is_ejected_and_the_healthy_one_takes_them(consul) -> None:
    """gRPC's outlier detection in our channels, with the instance set from a real Consul."""
    agent, services = consul
    services.start("inventory", name="inventory-good")
    services.start("inventory", name="inventory-bad", SHOPMESH_FAULTS="rpc.GetProduct=fail:1000000000")
    agent.wait_passing("inventory", 2)  # both pass health: only their calls tell them apart
    sku = new_product(services, 5)
    async with consul_upstreams(agent) as upstreams:
        first = await get_products(upstreams, 5, lambda: sku, 0.01)  # the bad one answers UNAVAILABLE
        bad_before = started_calls(services, "inventory-bad", "GetProduct")
        good_before = started_calls(services, "inventory-good", "GetProduct")
        later = await get_products(upstreams, 3, lambda: sku, 0.01)
        bad_later = started_calls(services, "inventory-bad", "GetProduct") - bad_before
        good_later = started_calls(services, "inventory-good", "GetProduct") - good_before
    assert bad_before >= 20  # it was tried, and failed, at first
    assert bad_later == 0 and good_later >= 50, (bad_later, good_later)
    assert set(later) == {"OK"}  # every answer now comes from the healthy instance
    print(f"first 5 s: {dict(first)}, bad instance tried {bad_before:.0f} times; next 3 s: {dict(later)}, "
          f"bad instance {bad_later:.0f}, good {good_later:.0f}")


async def test_a_client_asking_for_unknown_skus_ejects_no_healthy_instance(consul) -> None:
    """Issue 11.6: gRPC's outlier detection counts any non-OK status, so NOT_FOUND by the thousand
    ejected a healthy instance (at most half of them). Our channels take the caller's mistakes soft
    (mesh/rpc/softerrors.py): both instances keep serving, and the polite client never notices."""
    agent, services = consul
    services.start("inventory", name="inventory-a")
    services.start("inventory", name="inventory-b")
    agent.wait_passing("inventory", 2)
    sku = new_product(services, 5)
    async with consul_upstreams(agent) as upstreams:
        abuse, kind = await asyncio.gather(  # two ejection intervals and more
            get_products(upstreams, 5, lambda: f"no-such-{uuid.uuid4().hex[:6]}"),
            get_products(upstreams, 5, lambda: sku, 0.05))
        a_before = started_calls(services, "inventory-a", "GetProduct")
        b_before = started_calls(services, "inventory-b", "GetProduct")
        later = await get_products(upstreams, 3, lambda: sku, 0.05)
        a_later = started_calls(services, "inventory-a", "GetProduct") - a_before
        b_later = started_calls(services, "inventory-b", "GetProduct") - b_before
        # What the client sees is plain gRPC: the code, its message, its details.
        stub = upstreams.bound("inventory", "stub", inventory_pb2_grpc.InventoryServiceStub)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetProduct(inventory_pb2.GetProductRequest(sku="no-such-mug"), timeout=2)
    assert set(abuse) == {"NOT_FOUND"} and abuse["NOT_FOUND"] >= 200, abuse
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND and "no-such-mug" in missing.value.details()
    assert set(kind) == {"OK"} and set(later) == {"OK"}, (kind, later)
    assert a_later >= 10 and b_later >= 10, (a_later, b_later)  # neither instance was ejected
    print(f"abusive client: {dict(abuse)}; polite one {dict(kind)} then {dict(later)}; "
          f"afterwards inventory-a took {a_later:.0f} calls, inventory-b {b_later:.0f}")
