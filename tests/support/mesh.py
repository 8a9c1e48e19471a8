"""The one way tests start a mesh, in three forms:

- `InProcess`: services served in this process on port 0 (the integration tier), each with its
  own real database (SQLite, or a database on the test's PostgreSQL server);
- `Mesh`: each service its own OS process, started and stopped one by one (fault tests);
- `Launcher`: the Quickstart's launcher, the way users run the whole mesh.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.client.discovery import create_discovery
from mesh.server.bootstrap import Running, create_server
from mesh.settings import Settings
from tests.conftest import ROOT, free_port

SERVICES = ("inventory", "notification", "order", "gateway")
GRPC_SERVICES = SERVICES[:3]


def wait_serving(address: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode} before serving on {address}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"nothing SERVING on {address} after {timeout}s")


def wait_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"no answer from {url} after {timeout}s")


@dataclass
class Mesh:
    """The three services, each its own process, on free loopback ports."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in SERVICES})
    metrics_ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in GRPC_SERVICES})
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(SHOPMESH_DATA_DIR=str(self.data_dir), PYTHONUNBUFFERED="1")
        for service, port in self.ports.items():
            env[f"SHOPMESH_{service.upper()}_PORT"] = str(port)
        for service, port in self.metrics_ports.items():
            env[f"SHOPMESH_{service.upper()}_METRICS_PORT"] = str(port)
        env.update(extra)
        return env

    def start(self, service: str, files: int | None = None, **extra: str) -> subprocess.Popen:
        """`service` as its own process with `extra` settings; `files`: its file limit (soft and hard),
        as a service manager would set it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / f"{service}.log"
        self.logs[service] = log

        def limited() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

        process = subprocess.Popen(
            [sys.executable, "-m", service],
            cwd=ROOT,
            env=self.env(**extra),
            stdout=open(log, "ab"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
            preexec_fn=limited if files is not None else None,  # noqa: PLW1509 - no threads in the child yet
        )
        self.processes[service] = process
        try:
            if service == "gateway":
                wait_http(f"http://{self.address(service)}/healthz", process=process)
            else:
                wait_serving(self.address(service), process=process)
        except (RuntimeError, TimeoutError) as error:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{service} did not come up: {error}\n--- {log} ---\n{tail}") from None
        return process

    def stop(self, service: str, timeout: float = 30.0) -> int:
        process = self.processes.pop(service)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return process.wait(timeout)

    def stop_all(self) -> None:
        for service in list(self.processes):
            process = self.processes[service]
            if process.poll() is None:
                process.kill()
            process.wait(10)
            del self.processes[service]


@dataclass
class Launcher:
    """`python -m mesh.tools.launcher`, exactly as the Quickstart runs it."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in SERVICES})
    metrics_ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in GRPC_SERVICES})
    process: subprocess.Popen | None = None
    log: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = self.data_dir / "launcher.log"
        args = [sys.executable, "-m", "mesh.tools.launcher", "--data-dir", str(self.data_dir)]
        for service, port in self.ports.items():
            args += [f"--{service}-port", str(port)]
        for service, port in self.metrics_ports.items():
            args += [f"--{service}-metrics-port", str(port)]
        args += self.extra_args
        self.process = subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, **self.env},
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        deadline = time.monotonic() + timeout
        while "shopmesh is up" not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"launcher did not come up:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def rss_mb(self, service: str) -> float:
        """Resident memory of the launcher's `service` process (its child running `-m service`)."""
        assert self.process is not None
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                command = (stat.parent / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if parent == self.process.pid and service.encode() in command:
                for line in (stat.parent / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        raise LookupError(f"no {service} process under the launcher")

    def interrupt(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout)


def new_product(mesh: Mesh | Launcher, stock: int, prefix: str = "e2e", cents: int = 1000) -> str:
    """A product of its own (a fresh SKU) with `stock` units, created through inventory's gRPC API."""
    import uuid

    from generated.shop.common.v1 import money_pb2
    from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

    sku = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(mesh.address("inventory")) as channel:
        product = inventory_pb2.Product(sku=sku, name=f"{prefix} mug", available=stock,
                                        price=money_pb2.Money(currency_code="USD", minor_units=cents))
        inventory_pb2_grpc.InventoryServiceStub(channel).CreateProduct(inventory_pb2.CreateProductRequest(product=product))
    return sku


def rpc_calls(metrics_port: int, method: str, *, ended: bool = False, code: str | None = None,
              host: str = "127.0.0.1") -> float:
    """A server's count of `method` calls from its /metrics: started, or ended (with `code`, with that status)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{host}:{metrics_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    name = "grpc_server_handled_total" if ended or code is not None else "grpc_server_started_total"
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and s.labels.get("grpc_method") == method
               and (code is None or s.labels.get("grpc_code") == code))


Start = Callable[..., Awaitable[Running]]


class InProcess:
    """Services in this process on port 0, each on its own database: `await mesh.start("order")`."""

    def __init__(self, data_dir: Path, database: object | None = None):
        self.data_dir = data_dir
        self.database = database  # None: SQLite files under data_dir; else tests/support/postgres.py's server
        self.running: list[Running] = []

    async def start(self, service: str, **env: str) -> Running:
        import inventory.app
        import notification.app
        import order.app

        builders = {"inventory": inventory.app.build, "notification": notification.app.build, "order": order.app.build}
        where = {} if self.database is None else {
            f"SHOPMESH_{service.upper()}_DATABASE_URL": self.database.create_database()}  # type: ignore[attr-defined]
        settings = Settings.from_env(
            service, {"SHOPMESH_DATA_DIR": str(self.data_dir), f"SHOPMESH_{service.upper()}_PORT": "0", **where, **env}
        )
        app = await builders[service](settings, create_discovery(settings))
        served = await create_server(settings, app)
        self.running.append(served)
        return served

    async def stop_all(self) -> None:
        for served in reversed(self.running):
            await served.server.stop(0)
            await served.app.close()
        self.running.clear()


def channel(served: Running) -> grpc.aio.Channel:
    """A channel to a service `InProcess` serves."""
    return grpc.aio.insecure_channel(f"127.0.0.1:{served.port}")
