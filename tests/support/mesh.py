"""The one way tests start a mesh, in three forms:

- `InProcess`: services served in this process on port 0 (the integration tier), each with its
  own real database (SQLite, or a database on the test's PostgreSQL server);
- `Mesh`: each service its own OS process, started and stopped one by one (fault tests);
- `Launcher`: the Quickstart's launcher, the way users run the whole mesh.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.client.discovery import create_discovery
from mesh.server.bootstrap import Running, create_server
from mesh.settings import Settings
from tests.conftest import ROOT, free_port
from tests.support.http import answers
from tests.support.metrics import scrape, total
from tests.support.waiting import alive, eventually, said

SERVICES = ("inventory", "notification", "order", "gateway")
GRPC_SERVICES = SERVICES[:3]


def wait_serving(address: str, timeout: float = 30.0, process: subprocess.Popen | None = None,
                 log: Path | None = None) -> None:
    """Until the gRPC server at `address` answers SERVING (the test fails if `process` exits first)."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            alive(process, f"serving on {address}", log)
            try:
                return stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                return False

        eventually(serving, timeout, f"SERVING on {address}", detail=lambda: _tail(log))


def wait_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Until `url` (http://host:port/path) answers 200 (the test fails if `process` exits first)."""
    address, _, path = url.removeprefix("http://").partition("/")

    def answering() -> bool:
        alive(process, f"answering {url}", log)
        return answers(address, "/" + path)

    eventually(answering, timeout, f"an answer from {url}", detail=lambda: _tail(log))


def _tail(log: Path | None) -> str:
    return f"--- {log} ---\n{log.read_text(errors='replace')[-3000:]}" if log is not None and log.exists() else ""


@dataclass
class Mesh:
    """Services, each its own process, on free loopback ports. An instance is named by its service
    (`start("order")`), or by a name of its own when a service runs several (`start("order",
    name="order-2")`: its own port, metrics port, log and SHOPMESH_INSTANCE_ID). `settings` go to
    every process (a discovery, a database, shorter timeouts)."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in SERVICES})
    metrics_ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in GRPC_SERVICES})
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)

    def address(self, name: str) -> str:
        return f"{self.hosts.get(name, '127.0.0.1')}:{self.port(name)}"

    def port(self, name: str) -> int:
        """The port of the instance `name` (a free one, kept, the first time it is asked)."""
        return self.ports.setdefault(name, free_port())

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(SHOPMESH_DATA_DIR=str(self.data_dir), PYTHONUNBUFFERED="1")
        for service in SERVICES:  # where each service is, for static discovery
            env[f"SHOPMESH_{service.upper()}_PORT"] = str(self.port(service))
        for service in GRPC_SERVICES:
            env[f"SHOPMESH_{service.upper()}_METRICS_PORT"] = str(self.metrics_ports[service])
        env.update(self.settings)
        env.update(extra)
        return env

    def start(self, service: str, files: int | None = None, name: str | None = None, host: str | None = None,
              **extra: str) -> subprocess.Popen:
        """`service` as its own process (the instance `name`, by default the service itself) with
        `extra` settings; `files`: its file limit (soft and hard), as a service manager would set it;
        `host`: the loopback address it binds (as a pod has its own IP)."""
        name = name or service
        if host is not None:
            self.hosts[name] = host
            extra = {"SHOPMESH_HOST": host, **extra}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / f"{name}.log"
        self.logs[name] = log
        own = {f"SHOPMESH_{service.upper()}_PORT": str(self.port(name))}
        if name != service:
            self.metrics_ports.setdefault(name, free_port())
            own["SHOPMESH_INSTANCE_ID"] = name
        if name in self.metrics_ports:
            own[f"SHOPMESH_{service.upper()}_METRICS_PORT"] = str(self.metrics_ports[name])

        # The file limit through util-linux's prlimit, which sets it and execs the service (same pid),
        # not a preexec_fn: that makes Python fork() instead of vfork(), and in this process, where
        # gRPC runs, gRPC's fork handler restarts its poller in the child, whose epoll descriptor
        # close_fds then closes: the child aborted before exec ("Epoll1Poller encountered
        # epoll_wait error: Bad file descriptor", grpc/grpc#43055), seen once in CI.
        limit = ["prlimit", f"--nofile={files}:{files}", "--"] if files is not None else []
        process = subprocess.Popen(
            [*limit, sys.executable, "-m", service],
            cwd=ROOT,
            env=self.env(**own, **extra),
            stdout=open(log, "ab"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = process
        if service == "gateway":
            wait_http(f"http://{self.address(name)}/healthz", process=process, log=log)
        else:
            wait_serving(self.address(name), process=process, log=log)
        return process

    def cpu(self, name: str) -> float:
        """CPU seconds (user + system) the instance `name` has used so far."""
        fields = Path(f"/proc/{self.processes[name].pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self, name: str) -> None:
        """kill -9 the instance `name`: no goodbye."""
        process = self.processes.pop(name)
        process.kill()
        process.wait(10)

    def stop(self, name: str, timeout: float = 30.0) -> int:
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return process.wait(timeout)

    def stop_all(self, graceful: bool = False) -> None:
        """Every instance still running: killed, or (`graceful`) sent SIGTERM and waited for."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM) if graceful else process.kill()
        for process in self.processes.values():
            try:
                process.wait(30 if graceful else 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes.clear()


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
        said(self.log, "shopmesh is up", self.process, timeout)

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
    name = "grpc_server_handled_total" if ended or code is not None else "grpc_server_started_total"
    return total(scrape(f"http://{host}:{metrics_port}/metrics"), name, grpc_method=method,
                 **({} if code is None else {"grpc_code": code}))


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
            f"SHOPMESH_{service.upper()}_DATABASE_URL": self.database.create_database(),  # type: ignore[attr-defined]
            **self.database.settings()}  # type: ignore[attr-defined]
        settings = Settings.from_env(
            service, {"SHOPMESH_DATA_DIR": str(self.data_dir), f"SHOPMESH_{service.upper()}_PORT": "0", **where, **env}
        )
        app = await builders[service](settings, create_discovery(settings))
        served = await create_server(settings, app)
        self.running.append(served)
        return served

    async def stop_all(self, bound: float = 30.0) -> None:
        """Stops every service, callers first. A step that takes longer than `bound` seconds is
        given up on (the rest still stop, so no server outlives the test's loop) and fails the
        test with every task's await chain at that moment: a hang named, not a suite timeout."""
        from mesh.server.lifecycle import task_stacks

        hung = []
        for served in reversed(self.running):
            for what, step in (("server.stop", served.server.stop(0)), ("app.close", served.app.close())):
                task = asyncio.ensure_future(step)
                done, _ = await asyncio.wait({task}, timeout=bound)
                if not done:
                    hung.append(f"{served.app.bindings[0].name} {what} hung for {bound:g}s; tasks:\n{task_stacks()}")
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        self.running.clear()
        assert not hung, "\n".join(hung)


def channel(served: Running) -> grpc.aio.Channel:
    """A channel to a service `InProcess` serves."""
    return grpc.aio.insecure_channel(f"127.0.0.1:{served.port}")
