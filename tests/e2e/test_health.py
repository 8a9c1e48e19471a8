"""grpc-health-probe, as Kubernetes and Consul would run it, against real processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc
from mesh.server.bootstrap import LIVENESS
from tests.conftest import ROOT
from tests.support.mesh import Launcher, Mesh
from tests.support.waiting import settled

NAMES = {
    "inventory": "shop.inventory.v1.InventoryService",
    "order": "shop.order.v1.OrderService",
    "notification": "shop.notification.v1.NotificationService",
}
NOT_SERVING_EXIT = 4  # grpc-health-probe's exit code for a NOT_SERVING answer


def probe(health_probe: str, address: str, service: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [health_probe, "-addr", address, "-service", service, "-connect-timeout", "2s", "-rpc-timeout", "2s"],
        capture_output=True, text=True, timeout=10,
    )


@pytest.mark.parametrize("service", sorted(NAMES))
def test_every_service_reports_serving_overall_and_by_name(health_probe: str, launcher: Launcher, service: str) -> None:
    for name in ("", NAMES[service], LIVENESS):
        result = probe(health_probe, launcher.address(service), name)
        assert result.returncode == 0, result.stderr
        assert "status: SERVING" in result.stdout + result.stderr


def test_an_unknown_service_name_is_not_found(health_probe: str, launcher: Launcher) -> None:
    result = probe(health_probe, launcher.address("order"), "shop.nope.v1.Nope")
    assert result.returncode != 0
    assert "NotFound" in result.stderr or "not found" in result.stderr.lower()


def test_sigterm_turns_readiness_not_serving_while_liveness_stays_serving_then_exits_zero(
        health_probe: str, tmp_path: Path) -> None:
    """A draining pod must leave the endpoints (readiness) without being killed (liveness)."""
    mesh = Mesh(tmp_path)
    try:
        process = mesh.start("inventory", SHOPMESH_SHUTDOWN_DRAIN_SECONDS="3")
        assert probe(health_probe, mesh.address("inventory"), NAMES["inventory"]).returncode == 0
        process.send_signal(signal.SIGTERM)
        for name in ("", NAMES["inventory"]):
            draining = settled(lambda name=name: probe(health_probe, mesh.address("inventory"), name),
                               lambda done: done.returncode == NOT_SERVING_EXIT, 5, f"{name or 'the server'} draining")
            assert draining.returncode == NOT_SERVING_EXIT, draining.stdout + draining.stderr
            assert "NOT_SERVING" in draining.stderr + draining.stdout
        alive = probe(health_probe, mesh.address("inventory"), LIVENESS)
        assert alive.returncode == 0, alive.stdout + alive.stderr
        assert process.wait(30) == 0
        assert "stopped" in mesh.logs["inventory"].read_text()
        refused = probe(health_probe, mesh.address("inventory"))
        assert refused.returncode not in (0, NOT_SERVING_EXIT)
    finally:
        mesh.stop_all()


@pytest.mark.parametrize("service", ["inventory", "gateway"])
def test_a_port_already_taken_is_a_one_line_error_and_exit_one(tmp_path: Path, service: str) -> None:
    mesh = Mesh(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", mesh.ports[service]))
        squatter.listen()
        process = subprocess.run([sys.executable, "-m", service], cwd=ROOT, env=mesh.env(), capture_output=True,
                                 text=True, timeout=30)
    output = process.stdout + process.stderr
    assert process.returncode == 1, output
    error = next(line for line in output.splitlines() if "cannot start" in line)
    assert str(mesh.ports[service]) in error and "in use" in error, output
    assert "Traceback" not in output, output


def test_sigterm_ends_an_open_stream_cleanly_and_exits_zero(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path)
    try:
        process = mesh.start("notification", SHOPMESH_SHUTDOWN_DRAIN_SECONDS="0.5")
        with grpc.insecure_channel(mesh.address("notification")) as channel:
            stub = notification_pb2_grpc.NotificationServiceStub(channel)
            stream = stub.StreamNotifications(notification_pb2.StreamNotificationsRequest(user_id="u"), timeout=30)
            stream.initial_metadata()  # the stream has begun on the server
            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            assert list(stream) == []
            assert stream.code() == grpc.StatusCode.OK
            assert time.monotonic() - started < 5, "the stream held shutdown for the whole grace period"
        assert process.wait(30) == 0
    finally:
        mesh.stop_all()


def test_ctrl_c_stops_the_launchers_every_service_with_exit_zero(tmp_path: Path) -> None:
    mesh = Launcher(tmp_path)
    mesh.start()
    assert mesh.interrupt() == 0
    out = mesh.output()
    for service in [*NAMES, "gateway"]:
        assert f"{service} exited with code 0" in out


def test_a_database_it_cannot_open_is_a_one_line_error_and_exit_one(tmp_path: Path) -> None:
    """A read-only root filesystem without the data volume, say: one line naming the database."""
    mesh = Mesh(tmp_path)
    url = "sqlite+aiosqlite:////proc/inventory.db"  # a folder nobody, not even root, may create files in
    process = subprocess.run([sys.executable, "-m", "inventory"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60, env=mesh.env(SHOPMESH_INVENTORY_DATABASE_URL=url))
    output = process.stdout + process.stderr
    assert process.returncode == 1, output
    error = next(line for line in output.splitlines() if "cannot start" in line)
    assert "/proc/inventory.db" in error and "unable to open database file" in error, output
    assert "Traceback" not in output, output
