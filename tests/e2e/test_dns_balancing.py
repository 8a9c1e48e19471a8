"""Client-side balancing over DNS, as on Kubernetes with a headless Service.

A small DNS server of the test's own (dnslib) answers `inventory.shop.test` with the instances
the test chooses, on 127.0.0.2, 127.0.0.3; the gateway runs with `SHOPMESH_DISCOVERY=dns` and asks
that server (`dns://127.0.0.1:PORT/inventory.shop.test:P`, gRPC's own DNS resolver). The answer
changes under the running gateway: a second instance added gets calls within the documented bound
(the servers' maximum connection age, +10% jitter, + a moment), and one removed stops getting them
within the same bound, with not one failed request throughout.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.conftest import free_port
from tests.support.dns import Answers
from tests.support.http import call
from tests.support.mesh import Mesh, rpc_calls
from tests.support.waiting import eventually

MAX_AGE = 2.0  # SHOPMESH_MAX_CONNECTION_AGE_SECONDS of the inventories here
BOUND = MAX_AGE * 1.1 + 3.0  # the age with gRPC's jitter, plus re-resolving and connecting
NAME = "inventory.shop.test."


def _list_products(gateway: str) -> int:
    return call(gateway, "GET", "/v1/products?pageSize=1", timeout=10)[0]


def test_a_new_instance_behind_the_name_gets_calls_and_a_removed_one_stops(dns_server: tuple[Answers, int],
                                                                          tmp_path: Path) -> None:
    answers, dns_port = dns_server
    port = free_port()
    ips = ["127.0.0.2", "127.0.0.3"]
    metrics = {ip: free_port() for ip in ips}
    answers.set(NAME, ips[0])
    mesh = Mesh(tmp_path)
    try:
        for ip in ips[:1]:
            _inventory(mesh, ip, port, metrics[ip])
        mesh.start("gateway", SHOPMESH_DISCOVERY="dns", SHOPMESH_DNS_SERVER=f"127.0.0.1:{dns_port}",
                   SHOPMESH_INVENTORY_ADDR=f"inventory.shop.test:{port}",
                   SHOPMESH_ORDER_ADDR=f"order.shop.test:{mesh.ports['order']}",
                   SHOPMESH_NOTIFICATION_ADDR=f"notification.shop.test:{mesh.ports['notification']}")
        gateway = mesh.address("gateway")

        def calls(ip: str) -> float:
            return rpc_calls(metrics[ip], "ListProducts", host=ip)

        for _ in range(20):
            assert _list_products(gateway) == 200
        assert calls(ips[0]) >= 20

        # A second instance comes up and DNS lists it: it is called within the bound.
        _inventory(mesh, ips[1], port, metrics[ips[1]])
        answers.set(NAME, *ips)
        added = time.monotonic()

        def new_one_called() -> bool:
            assert _list_products(gateway) == 200
            return calls(ips[1]) > 0

        eventually(new_one_called, BOUND, f"a call to {ips[1]} once DNS listed it", every=0.05)
        took_to_add = time.monotonic() - added
        for _ in range(40):  # both share the calls now
            assert _list_products(gateway) == 200
        before = {ip: calls(ip) for ip in ips}
        for _ in range(40):
            assert _list_products(gateway) == 200
        assert all(calls(ip) > before[ip] for ip in ips), "round_robin should use both instances"

        # DNS drops the first (it keeps running, as a pod leaving a Service's endpoints does):
        # once its connection ages out, the gateway re-resolves and calls only the second.
        answers.set(NAME, ips[1])

        def dropped_one_left() -> bool:
            last = calls(ips[0])
            for _ in range(20):
                assert _list_products(gateway) == 200
            return calls(ips[0]) == last

        eventually(dropped_one_left, BOUND, f"no more calls to {ips[0]} once DNS dropped it", every=0.05)
        still = calls(ips[0])
        for _ in range(40):
            assert _list_products(gateway) == 200
        assert calls(ips[0]) == still, "an instance DNS no longer lists must get no calls"
        print(f"new instance called after {took_to_add:.2f}s; bound {BOUND:.1f}s")
    finally:
        mesh.stop_all()


def _inventory(mesh: Mesh, ip: str, port: int, metrics_port: int) -> subprocess.Popen:
    """One inventory instance on its own loopback address, as a pod on its own IP (same port)."""
    name = f"inventory@{ip}"
    mesh.ports[name], mesh.metrics_ports[name] = port, metrics_port
    return mesh.start("inventory", name=name, host=ip, SHOPMESH_MAX_CONNECTION_AGE_SECONDS=str(MAX_AGE))
