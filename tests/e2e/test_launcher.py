"""The launcher as a user runs it: it checks its ports before starting anything, and supervises,
restarting a process that dies (kill -9) while clients carry on."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from tests.conftest import ROOT, free_port, tool
from tests.support.mesh import Launcher
from tests.support.waiting import eventually


def child_pid(launcher: Launcher, service: str, port: int) -> int:
    """The pid of the launcher's `service` process listening on `port`."""
    assert launcher.process is not None
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes().split(b"\0")
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher.process.pid and service.encode() in command and \
                f"SHOPMESH_{service.upper()}_PORT={port}".encode() in environ:
            return int(stat.parent.name)
    raise LookupError(f"no {service} on port {port} under the launcher")


def order(launcher: Launcher, sku: str, timeout: float = 30) -> tuple[int, dict, float]:
    host, port = launcher.address("gateway").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    started = time.monotonic()
    body = {"requestId": str(uuid.uuid4()), "userId": "supervised", "lines": [{"sku": sku, "quantity": 1}]}
    conn.request("POST", "/v1/orders", body=json.dumps(body), headers={"content-type": "application/json"})
    reply = conn.getresponse()
    data = json.loads(reply.read())
    conn.close()
    return reply.status, data, time.monotonic() - started


def wait_output(launcher: Launcher, text: str, timeout: float) -> None:
    eventually(lambda: text in launcher.output(), timeout, f"the launcher to say {text!r}")


def test_a_second_launcher_names_the_taken_port_and_starts_nothing(launcher: Launcher, tmp_path: Path) -> None:
    """Issue 11.10: a second run-mesh.sh used to seed the first mesh's database and say it was up."""
    args = [sys.executable, "-m", "mesh.tools.launcher", "--data-dir", str(tmp_path / "second")]
    for service, port in launcher.ports.items():
        args += [f"--{service}-port", str(port)]
    for service, port in launcher.metrics_ports.items():
        args += [f"--{service}-metrics-port", str(port)]
    started = time.monotonic()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout
    lines = [line for line in done.stdout.splitlines() if "already in use" in line]
    assert len(lines) == 1 and str(launcher.ports["inventory"]) in lines[0] and "(inventory)" in lines[0], done.stdout
    assert "shopmesh is up" not in done.stdout and "demo products" not in done.stdout
    assert not any(line.startswith(("inventory", "order", "gateway")) for line in done.stdout.splitlines())
    assert not (tmp_path / "second").exists()  # not even its data folder
    assert time.monotonic() - started < 10
    # The first mesh noticed nothing: still ready, its catalogue as it was.
    import urllib.request

    with urllib.request.urlopen(f"http://{launcher.address('gateway')}/readyz", timeout=10) as reply:
        assert json.load(reply)["ready"] is True
    assert "demo products" in launcher.output() and launcher.output().count("demo products") == 1


def test_kill_9_of_one_of_two_inventories_under_load_the_other_takes_the_orders(tmp_path: Path) -> None:
    tool("consul")
    mesh = Launcher(tmp_path / "mesh", extra_args=["--consul", "dev", "--consul-port", str(free_port()),
                                                  "--instances", "inventory=2"])
    mesh.start(timeout=120)
    try:
        sku = _product(mesh, 10_000)
        outcomes: Counter = Counter()
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                status, body, _ = order(mesh, sku)
                outcomes[status if status == 200 else f"{status} {body.get('message')}"] += 1

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(2)
        before = sum(outcomes.values())
        os.kill(child_pid(mesh, "inventory", mesh.ports["inventory"]), signal.SIGKILL)
        wait_output(mesh, "inventory-1 exited with code -9; restarting it", 10)
        time.sleep(4)
        after_kill = sum(outcomes.values()) - before
        wait_output(mesh, "inventory-1 is serving again", 60)
        time.sleep(1)
        stop.set()
        for worker in workers:
            worker.join(60)
        failed = {k: v for k, v in outcomes.items() if k != 200}
        assert outcomes[200] > 0 and after_kill > 20, outcomes
        # The calls in flight at the instant of the kill may fail; every other order is placed.
        assert sum(failed.values()) <= 4, outcomes
        assert mesh.process is not None and mesh.process.poll() is None  # the mesh stayed up
        print(f"orders under load: {dict(outcomes)}; {after_kill} in the 4 s after the kill; inventory-1 restarted")
    finally:
        assert mesh.interrupt(120) == 0


def test_kill_9_of_the_only_inventory_is_a_503_naming_it_then_orders_flow_again(tmp_path: Path) -> None:
    mesh = Launcher(tmp_path / "mesh", env={"SHOPMESH_CALL_TIMEOUT_SECONDS": "3"})
    mesh.start()
    try:
        sku = _product(mesh, 100)
        assert order(mesh, sku)[0] == 200
        os.kill(child_pid(mesh, "inventory", mesh.ports["inventory"]), signal.SIGKILL)
        status, body, took = order(mesh, sku)
        assert status == 503 and "inventory" in body["message"], body
        assert took < 3 + 1, took  # within the call deadline, not a hang
        wait_output(mesh, "inventory exited with code -9; restarting it", 10)

        def flows_again() -> bool:
            status, body, _ = order(mesh, sku)
            assert status in (200, 503), (status, body)
            return status == 200

        eventually(flows_again, 60, "orders to flow again", every=0.5)
        assert "inventory is serving again" in mesh.output()
        print(f"the only inventory killed: 503 ({body['message']!r}) in {took:.2f} s; orders flow again after restart")
    finally:
        assert mesh.interrupt(120) == 0


def _product(mesh: Launcher, stock: int) -> str:
    from tests.support.mesh import new_product

    return new_product(mesh, stock, prefix="supervised")


def test_a_first_start_says_what_a_user_needs_and_nothing_else(launcher: Launcher) -> None:
    """What was set up, where each service listens, what to try; no library's narration (alembic
    printed ten lines a service at every start)."""
    said = launcher.output()
    start = said[:said.index("Ctrl-C stops every service.")]
    for service in ("inventory", "notification", "order"):
        assert f"{service} serving on 127.0.0.1:{launcher.ports[service]}" in start
        assert any(line.startswith(service) and "database schema created" in line for line in start.splitlines())
    assert "shopmesh is up" in start and "try:" in start and "curl http://" in start
    assert "alembic" not in start, start
    assert len(start.splitlines()) <= 30, start


def test_library_narration_is_one_setting_away() -> None:
    import logging

    from mesh.observe import logs

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        logs.configure("inventory", "i-1", level="INFO")
        assert not logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)
        logs.configure("inventory", "i-1", level="DEBUG")
        assert logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)
    finally:
        logging.getLogger("alembic").setLevel(logging.NOTSET)
        root.handlers[:] = handlers
        root.setLevel(level)
