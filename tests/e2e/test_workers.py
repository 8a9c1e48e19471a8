"""SHOPMESH_WORKERS (mesh/server/workers.py): several processes of one service on one port, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from tests.conftest import ROOT, free_port
from tests.support.mesh import Mesh, new_product, wait_http
from tests.support.metrics import scrape, total, value
from tests.support.waiting import eventually


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path / "mesh")
    yield mesh
    mesh.stop_all()


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return sorted(found)


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(port: int, method: str) -> float:
    return total(scrape(f"http://127.0.0.1:{port}/metrics"), "grpc_server_handled_total", grpc_method=method)


def reads_over_fresh_connections(mesh: Mesh, sku: str, connections: int, calls: int) -> None:
    for i in range(connections):
        # A channel of its own each (distinct options, so gRPC shares no subchannel): a new TCP
        # connection, which the kernel gives to one of the workers.
        with grpc.insecure_channel(mesh.address("inventory"), options=[("shopmesh.test.connection", i)]) as channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            for _ in range(calls):
                assert stub.GetProduct(inventory_pb2.GetProductRequest(sku=sku), timeout=5).sku == sku


def test_two_workers_share_the_port_and_the_calls_and_report_one_merged_count(mesh: Mesh) -> None:
    supervisor = mesh.start("inventory", SHOPMESH_WORKERS="2")
    eventually(lambda: len(children(supervisor.pid)) == 2, 15, "two workers")
    sku = new_product(mesh, 10)
    workers = children(supervisor.pid)
    before = {pid: cpu(pid) for pid in workers}
    metrics_port = mesh.metrics_ports["inventory"]
    eventually(lambda: served(metrics_port, "CreateProduct") == 1, 10, "the merged count of the product created")
    reads_over_fresh_connections(mesh, sku, 16, 60)
    used = {pid: cpu(pid) - before[pid] for pid in workers}
    print(f"CPU per worker over 16 connections x 60 calls: {used}")
    assert all(seconds > 0.05 for seconds in used.values()), f"a worker got no calls: {used}"
    # Whichever worker answers the scrape reports both workers' calls, exactly.
    for _ in range(6):
        assert served(metrics_port, "GetProduct") == 16 * 60
    gauge = [k for k in scrape(f"http://127.0.0.1:{metrics_port}/metrics") if k[0] == "shop_inventory_open_reservations"]
    assert len(gauge) == 1, gauge  # one series, not one per worker
    # The process_* series are there too, for the group: the supervisor and both workers.
    page = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    group_cpu = sum(cpu(pid) for pid in [supervisor.pid, *workers])
    assert value(page, "process_workers") == 2
    assert 0.9 * group_cpu <= value(page, "process_cpu_seconds_total") <= group_cpu + 1.0, (page, group_cpu)
    assert value(page, "process_resident_memory_bytes") > 2 * 20 * 2**20  # two Pythons with gRPC loaded
    assert value(page, "process_start_time_seconds") > 1.7e9 and value(page, "process_open_fds") > 10
    # On SQLite the workers share one write lock: said once, at start.
    assert mesh.logs["inventory"].read_text().count("SHOPMESH_WORKERS=2 on SQLite") == 1


def test_a_killed_worker_is_started_again_and_sigterm_stops_them_all_cleanly(mesh: Mesh) -> None:
    supervisor = mesh.start("inventory", SHOPMESH_WORKERS="2")
    eventually(lambda: len(children(supervisor.pid)) == 2, 15, "two workers")
    sku = new_product(mesh, 10)
    time.sleep(5.5)  # past STARTUP_SECONDS: a death now is a crash to recover from, not a bad start
    reads_over_fresh_connections(mesh, sku, 4, 10)
    first, second = children(supervisor.pid)
    os.kill(first, signal.SIGKILL)
    eventually(lambda: len(children(supervisor.pid)) == 2 and first not in children(supervisor.pid), 10,
               "the killed worker to be replaced")
    assert second in children(supervisor.pid)
    eventually(lambda: mesh.logs["inventory"].read_text().count("inventory serving on") == 3, 15,
               "the replacement to serve")
    reads_over_fresh_connections(mesh, sku, 8, 5)
    # The dead worker's counts stay in the merged total (counters never go back).
    assert served(mesh.metrics_ports["inventory"], "GetProduct") == 4 * 10 + 8 * 5
    workers = children(supervisor.pid)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    log = mesh.logs["inventory"].read_text()
    assert "starting it again" in log and "Traceback" not in log


def test_workers_die_with_a_supervisor_killed_by_sigkill(mesh: Mesh) -> None:
    supervisor = mesh.start("inventory", SHOPMESH_WORKERS="2")
    eventually(lambda: len(children(supervisor.pid)) == 2, 15, "two workers")
    workers = children(supervisor.pid)
    supervisor.kill()
    supervisor.wait(10)
    eventually(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 10, "the workers to die too")
    mesh.processes.pop("inventory")
    mesh.start("inventory")  # the port is free again


def test_gateway_workers_answer_on_one_port_with_merged_metrics(mesh: Mesh) -> None:
    import http.client

    mesh.start("inventory")
    mesh.start("notification")
    mesh.start("order")
    supervisor = mesh.start("gateway", SHOPMESH_WORKERS="2")
    eventually(lambda: len(children(supervisor.pid)) == 2, 15, "two gateway workers")
    host, port = mesh.address("gateway").split(":")
    for _ in range(20):  # a connection each: both workers answer some
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", "/v1/products?pageSize=1")
        assert connection.getresponse().status == 200
        connection.close()
    wait_http(f"http://{mesh.address('gateway')}/healthz")
    answered = [v for (name, labels), v in scrape(f"http://127.0.0.1:{port}/metrics").items()
                if name == "http_requests_total" and ("route", "/v1/products") in labels]
    assert sum(answered) == 20, answered


def test_workers_need_a_fixed_port() -> None:
    env = dict(os.environ, SHOPMESH_WORKERS="2", SHOPMESH_INVENTORY_PORT="0", SHOPMESH_DATA_DIR="/tmp")
    done = subprocess.run([sys.executable, "-m", "inventory"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "SHOPMESH_WORKERS=2 needs a fixed SHOPMESH_INVENTORY_PORT" in done.stderr
    assert "Traceback" not in done.stderr
    assert free_port()  # nothing left bound


def test_workers_that_cannot_bind_stop_the_group_with_their_error(mesh: Mesh) -> None:
    """A port held by a single process (no SO_REUSEPORT) is not silently shared by a group."""
    mesh.start("inventory")
    env = mesh.env(SHOPMESH_WORKERS="2", SHOPMESH_INVENTORY_METRICS_PORT=str(free_port()),
                   SHOPMESH_DATA_DIR=str(mesh.data_dir / "second"))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "inventory"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 30
    output = done.stdout + done.stderr
    assert "cannot listen on" in output and "stopping the others" in output and "Traceback" not in output


def test_a_group_migrates_its_new_database_once_before_any_worker_starts(tmp_path: Path) -> None:
    # Workers that each migrated a new SQLite file raced for its first write (CI saw one fail
    # with "database is locked"). The supervisor migrates; the workers find nothing to do.
    for attempt in range(2):
        mesh = Mesh(tmp_path / f"mesh{attempt}")
        try:
            supervisor = mesh.start("inventory", SHOPMESH_WORKERS="4")
            log_file = mesh.logs["inventory"]
            eventually(lambda: log_file.read_text().count("inventory serving on") == 4, 30,  # noqa: B023 - used at once
                       "all four workers to serve")
            log = mesh.logs["inventory"].read_text()
            assert "Running upgrade" not in log, log  # no worker migrated: the schema was ready
            assert len(children(supervisor.pid)) == 4
            assert new_product(mesh, 3)
        finally:
            mesh.stop_all()


def test_a_group_whose_database_cannot_be_migrated_starts_no_worker(mesh: Mesh, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    process = subprocess.Popen([sys.executable, "-m", "inventory"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT,
                               env=mesh.env(SHOPMESH_WORKERS="2",
                                            SHOPMESH_INVENTORY_DATABASE_URL=f"sqlite+aiosqlite:///{blocker}/inventory.db"))
    output, _ = process.communicate(timeout=60)
    text = output.decode()
    assert process.returncode != 0, text
    assert "could not be migrated" in text and "no worker started" in text, text
    assert "worker 1 of 2 started" not in text and "Traceback" not in text, text
    assert "the database cannot be used" in text, text
