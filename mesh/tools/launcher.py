"""The local mesh in one command: every service as its own process, logs in one terminal.

    python -m mesh.tools.launcher [--data-dir data] [--inventory-port 50051] ...

Starts every process mesh/services.toml declares, each after those it calls (inventory and
notification, order, then the REST gateway), with static discovery and SQLite files under the
data folder, waits until each reports SERVING on gRPC health (the gateway: /healthz), adds a
few demo products, prints how to call the mesh, and on Ctrl-C (or SIGTERM) stops everything
gracefully, callers first: the gateway, then order, then inventory and notification together.

Before starting anything it checks that every port it will use is free, so a second launcher
next to a running mesh says which port is taken instead of talking to the first mesh. While it
runs it supervises: a process that dies is restarted with exponential backoff (and the
launcher says so), as a supervisor would; clients see the instance gone, then back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from mesh import topology
from mesh.settings import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, TOPOLOGY
from mesh.tools.ports import free_port

# The processes as declared once (mesh/services.toml): started callees first, each once what it
# calls serves; stopped a tier at a time, callers before the services they call, Consul last.
START_ORDER = tuple(topology.start_order(TOPOLOGY))
STOP_TIERS = (*topology.stop_tiers(TOPOLOGY), ("consul",))
GRPC_SERVICES = tuple(name for name in START_ORDER if not TOPOLOGY[name].http)
_PALETTE = ("\033[36m", "\033[33m", "\033[35m", "\033[34m", "\033[31m", "\033[96m", "\033[93m", "\033[95m")
COLORS = {"mesh": "\033[32m", **{name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(TOPOLOGY)}}
DEMO_PRODUCTS = (
    ("coffee-mug", "Coffee mug, 350 ml", 1299, 100),
    ("tea-kettle", "Stovetop tea kettle", 3450, 25),
    ("espresso-beans", "Espresso beans, 1 kg", 2400, 200),
    ("french-press", "French press, 8 cup", 2999, 40),
    ("last-one", "Collector's edition grinder (only one)", 15000, 1),
)


RESTART_BACKOFF = (0.5, 30.0)  # seconds before the first restart; the most it grows to
STABLE_AFTER = 30.0  # a process up this long has its backoff start over


@dataclass
class Child:
    service: str
    port: int
    process: asyncio.subprocess.Process
    name: str = ""
    argv: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    restarts: int = 0


class Launcher:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.children: list[Child] = []
        self.stopping = False
        self._supervisors: list[asyncio.Task[None]] = []
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.ports = {name: getattr(args, f"{name}_port") for name in START_ORDER}
        self.metrics_ports = {name: getattr(args, f"{name}_metrics_port") for name in DEFAULT_METRICS_PORTS}

    def say(self, who: str, line: str) -> None:
        tag = f"{who:<12}|"
        if self.color:
            tag = f"{COLORS.get(who, '')}{tag}\033[0m"
        print(f"{tag} {line}", flush=True)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SHOPMESH_DATA_DIR=str(self.args.data_dir),
            SHOPMESH_HOST=self.args.host,
            SHOPMESH_DISCOVERY="consul" if self.args.consul else "static",
            PYTHONUNBUFFERED="1",
        )
        if self.args.consul:
            env["SHOPMESH_CONSUL_ADDR"] = self.consul_addr
        if self.args.tls:
            env["SHOPMESH_TLS_CA_FILE"] = str(self.args.tls / "ca.pem")
        for name, port in self.ports.items():
            env[f"SHOPMESH_{name.upper()}_PORT"] = str(port)
        for name, port in self.metrics_ports.items():
            env[f"SHOPMESH_{name.upper()}_METRICS_PORT"] = str(port)
        return env

    @property
    def consul_addr(self) -> str:
        return f"127.0.0.1:{self.args.consul_port}" if self.args.consul == "dev" else self.args.consul

    async def _pipe(self, child: Child) -> None:
        assert child.process.stdout is not None
        async for raw in child.process.stdout:
            self.say(child.name or child.service, raw.decode(errors="replace").rstrip())

    def instances(self) -> list[tuple[str, str, int]]:
        """(service, instance name, port) for every process to start, in start order.

        Extra instances (--instances inventory=2, Consul only) listen 100 ports above the first
        (their /metrics too).
        """
        counts = dict(self.args.instances)
        found = []
        for service in START_ORDER:
            count = counts.get(service, 1)
            for i in range(count):
                name = service if count == 1 else f"{service}-{i + 1}"
                found.append((service, name, self.ports[service] + 100 * i))
        return found

    def ports_in_use(self) -> list[tuple[int, str]]:
        """Every port the mesh will listen on that something else already holds: (port, whose)."""
        wanted = [(port, name) for _, name, port in self.instances()]
        wanted += [(port - self.ports[service] + self.metrics_ports[service], f"{name} /metrics")
                   for service, name, port in self.instances() if service in self.metrics_ports]
        if self.args.consul == "dev":
            wanted.append((self.args.consul_port, "consul agent -dev"))
        host = self.address(0).rsplit(":", 1)[0]
        taken = []
        for port, whose in wanted:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
                try:
                    sock.bind((host, port))
                except OSError:
                    taken.append((port, whose))
        return taken

    async def start(self) -> None:
        taken = self.ports_in_use()
        if taken:
            names = ", ".join(f"{port} ({whose})" for port, whose in taken)
            raise RuntimeError(f"port{'s' if len(taken) > 1 else ''} {names} already in use (another mesh?); "
                               "nothing was started. Choose others with --<service>-port, or stop that one first")
        Path(self.args.data_dir).mkdir(parents=True, exist_ok=True)
        if self.args.consul == "dev":
            await self.start_consul()
        env = self.env()
        for service, name, port in self.instances():
            child_env = {**env, f"SHOPMESH_{service.upper()}_PORT": str(port)}
            if service in self.metrics_ports:
                extra = port - self.ports[service]
                child_env[f"SHOPMESH_{service.upper()}_METRICS_PORT"] = str(self.metrics_ports[service] + extra)
            if name != service:
                child_env["SHOPMESH_INSTANCE_ID"] = name
            if self.args.tls:  # each process proves who it is with its own certificate
                child_env["SHOPMESH_TLS_CERT_FILE"] = str(self.args.tls / f"{service}.pem")
                child_env["SHOPMESH_TLS_KEY_FILE"] = str(self.args.tls / f"{service}-key.pem")
            child = await self.spawn(service, port, name, (sys.executable, "-m", service), child_env)
            self.children.append(child)
            await self.wait_serving(child)  # serving (and in Consul) before its clients start

    async def spawn(self, service: str, port: int, name: str, argv: tuple[str, ...],
                    env: dict[str, str] | None = None) -> Child:
        child = Child(service, port, await self._exec(argv, env), name, argv, env)
        asyncio.create_task(self._pipe(child))
        return child

    async def respawn(self, child: Child) -> None:
        child.process = await self._exec(child.argv, child.env)
        asyncio.create_task(self._pipe(child))

    @staticmethod
    async def _exec(argv: tuple[str, ...], env: dict[str, str] | None) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops them in order
        )

    def supervise(self) -> None:
        """From now on, a process that dies is started again (until the mesh stops)."""
        self._supervisors = [asyncio.create_task(self._keep(child)) for child in self.children]

    async def _keep(self, child: Child) -> None:
        loop = asyncio.get_running_loop()
        low, high = RESTART_BACKOFF
        delay = low
        while True:
            started = loop.time()
            code = await child.process.wait()
            if self.stopping:
                return
            if loop.time() - started >= STABLE_AFTER:
                delay = low
            child.restarts += 1
            self.say("mesh", f"{child.name or child.service} exited with code {code}; restarting it in {delay:g} s "
                             f"(restart {child.restarts})")
            await asyncio.sleep(delay)
            if self.stopping:
                return
            delay = min(delay * 2, high)
            await self.respawn(child)
            try:
                await self.wait_serving(child)
                self.say("mesh", f"{child.name or child.service} is serving again")
            except RuntimeError as error:
                self.say("mesh", f"{child.name or child.service} restarted but is not serving: {error}")

    async def start_consul(self) -> None:
        """`consul agent -dev` from PATH or .tools/bin, on loopback, for --consul dev."""
        tools = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "consul"
        binary = shutil.which("consul") or (str(tools) if tools.exists() else None)
        if binary is None:
            raise RuntimeError("--consul dev needs a consul binary: run scripts/install-tools.sh")
        # Its internal ports are free ones, so this agent never collides with another.
        server, serf_lan, serf_wan = (free_port() for _ in range(3))
        extra = []
        if self.args.tls:  # the agent's gRPC checks present a certificate from the mesh's CA
            config = Path(self.args.data_dir) / "consul-tls.json"
            folder = self.args.tls.resolve()
            config.write_text(json.dumps({"enable_agent_tls_for_checks": True, "tls": {"defaults": {
                "ca_file": str(folder / "ca.pem"), "cert_file": str(folder / "client.pem"),
                "key_file": str(folder / "client-key.pem")}}}))
            extra = ["-config-file", str(config)]
        argv = (binary, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", *extra,
                "-http-port", str(self.args.consul_port), "-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
                "-server-port", str(server), "-serf-lan-port", str(serf_lan), "-serf-wan-port", str(serf_wan),
                "-log-level", "warn")
        child = await self.spawn("consul", self.args.consul_port, "consul", argv)
        self.children.insert(0, child)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.args.consul_port)
                writer.write(b"GET /v1/status/leader HTTP/1.1\r\nhost: l\r\nconnection: close\r\n\r\n")
                answer = await asyncio.wait_for(reader.read(), 2)
                writer.close()
                if b'"127.0.0.1:' in answer:
                    self.say("mesh", f"consul agent -dev at http://{self.consul_addr}/ui")
                    return
            except (OSError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError("consul agent -dev did not start")

    async def wait_serving(self, child: Child, timeout: float = 30.0) -> None:
        if child.service == "consul":
            return None
        if TOPOLOGY[child.service].http:
            return await self.wait_http(child, timeout)
        await self.wait_grpc(child, timeout)
        if self.args.consul:
            await self.wait_passing(child, timeout)

    async def wait_passing(self, child: Child, timeout: float) -> None:
        """Up means discoverable: the instance passes its check in Consul."""
        host, port = self.consul_addr.rsplit(":", 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wanted = f'"Port":{child.port},'.encode()
        while loop.time() < deadline:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(f"GET /v1/health/service/{child.service}?passing=true HTTP/1.1\r\n"
                             f"host: launcher\r\nconnection: close\r\n\r\n".encode())
                answer = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                if wanted in answer.replace(b" ", b""):
                    return
            except (OSError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{child.name} did not pass its Consul check within {timeout:.0f}s")

    async def wait_grpc(self, child: Child, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self.channel(child.port) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if child.process.returncode is not None:
                    raise RuntimeError(f"{child.service} exited with code {child.process.returncode} while starting")
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if loop.time() > deadline:
                    raise RuntimeError(f"{child.service} did not become SERVING within {timeout:.0f}s")
                await asyncio.sleep(0.1)

    async def wait_http(self, child: Child, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        host, port = self.address(child.port).rsplit(":", 1)
        while True:
            if child.process.returncode is not None:
                raise RuntimeError(f"{child.service} exited with code {child.process.returncode} while starting")
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(b"GET /healthz HTTP/1.1\r\nhost: launcher\r\nconnection: close\r\n\r\n")
                status = await asyncio.wait_for(reader.readline(), 2)
                writer.close()
                if b" 200 " in status:
                    return
            except (OSError, TimeoutError):
                pass
            if loop.time() > deadline:
                raise RuntimeError(f"{child.service} did not answer /healthz within {timeout:.0f}s")
            await asyncio.sleep(0.1)

    def channel(self, port: int) -> grpc.aio.Channel:
        """A channel for the launcher's own calls (health, demo products): with `client.pem` under --tls."""
        if not self.args.tls:
            return grpc.aio.insecure_channel(self.address(port))
        folder = self.args.tls
        credentials = grpc.ssl_channel_credentials((folder / "ca.pem").read_bytes(),
                                                   (folder / "client-key.pem").read_bytes(),
                                                   (folder / "client.pem").read_bytes())
        return grpc.aio.secure_channel(self.address(port), credentials,
                                       options=[("grpc.ssl_target_name_override", "shopmesh.internal")])

    def address(self, port: int) -> str:
        host = "127.0.0.1" if self.args.host in ("0.0.0.0", "::") else self.args.host
        return f"{host}:{port}"

    async def seed(self) -> None:
        if "inventory" not in self.ports:
            return
        async with self.channel(self.ports["inventory"]) as channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            added = 0
            for sku, name, cents, stock in DEMO_PRODUCTS:
                product = inventory_pb2.Product(
                    sku=sku, name=name, price=money_pb2.Money(currency_code="USD", minor_units=cents), available=stock
                )
                try:
                    await stub.CreateProduct(inventory_pb2.CreateProductRequest(product=product), timeout=5)
                    added += 1
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                        raise
        self.say("mesh", f"demo products: {added} added, {len(DEMO_PRODUCTS) - added} already there")

    def banner(self) -> None:
        at = {name: self.address(port) for name, port in self.ports.items()}
        lines = ["shopmesh is up:"]
        lines += [f"  {name:<13} http://{at[name]}/" for name in START_ORDER if TOPOLOGY[name].http]
        lines += [f"  {name:<13} {at[name]}" for name in GRPC_SERVICES]
        lines += [f"  {'metrics':<13} {'  '.join(self.metrics_urls())}",
                  f"  {'data':<13} {Path(self.args.data_dir).resolve()}", "try:"]
        if "order" in at:
            lines += [f"  grpcurl {self.grpcurl_flags()} {at['order']} list",
                      f"  grpcurl {self.grpcurl_flags()} -d '{{\"user_id\":\"alice\",\"request_id\":\"r-1\","
                      f"\"lines\":[{{\"sku\":\"coffee-mug\",\"quantity\":2}}]}}' {at['order']} "
                      "shop.order.v1.OrderService/CreateOrder"]
        if "gateway" in at:
            lines.append(f"  curl http://{at['gateway']}/v1/products/coffee-mug")
        lines.append("Ctrl-C stops every service.")
        for line in lines:
            self.say("mesh", line)

    def grpcurl_flags(self) -> str:
        if not self.args.tls:
            return "-plaintext"
        folder = self.args.tls
        return (f"-cacert {folder / 'ca.pem'} -cert {folder / 'client.pem'} -key {folder / 'client-key.pem'} "
                "-servername shopmesh.internal")

    def metrics_urls(self) -> list[str]:
        """Every process's Prometheus page: the gateway's own, and each gRPC instance's metrics port."""
        host = self.address(0).rsplit(":", 1)[0]
        urls = [f"http://{host}:{port - self.ports[service] + self.metrics_ports[service]}/metrics"
                for service, _, port in self.instances() if service in self.metrics_ports]
        return [*urls, *(f"http://{self.address(self.ports[name])}/metrics" for name in START_ORDER if TOPOLOGY[name].http)]

    async def stop(self) -> int:
        """Stop the mesh callers first, a tier at a time, each tier's processes at once; the worst exit code.

        The gateway goes before order, order before the services it calls, Consul last, so no
        process loses an upstream while it still drains calls; within a tier nothing waits on
        anything else, so one slow leaver does not hold up its neighbours.
        """
        self.stopping = True
        for supervisor in self._supervisors:
            supervisor.cancel()
        worst = 0
        for tier in STOP_TIERS:
            children = [c for c in self.children if c.service in tier]
            codes = await asyncio.gather(*(self._stop_one(child) for child in children))
            for child, code in zip(children, codes, strict=True):
                self.say("mesh", f"{child.name or child.service} exited with code {code}")
                if child.service != "consul":  # a -dev agent exits 1 whenever it stops; not ours to judge
                    worst = max(worst, abs(code))
        return worst

    async def _stop_one(self, child: Child) -> int:
        if child.process.returncode is None:
            # Consul leaves gracefully (exit 0) on SIGINT; our services stop on SIGTERM.
            child.process.send_signal(signal.SIGINT if child.service == "consul" else signal.SIGTERM)
            try:
                await asyncio.wait_for(child.process.wait(), self.args.stop_timeout)
            except TimeoutError:
                self.say("mesh", f"{child.service} did not stop in {self.args.stop_timeout:.0f}s; killing it")
                child.process.kill()
                await child.process.wait()
        return child.process.returncode or 0

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            if not self.args.no_seed:
                await self.seed()
        except (RuntimeError, grpc.aio.AioRpcError, OSError) as error:
            self.say("mesh", f"could not start the mesh: {error}")
            await self.stop()
            return 1
        self.banner()
        self.supervise()
        await stop.wait()
        self.say("mesh", "stopping")
        return await self.stop()


def _instances(value: str) -> tuple[str, int]:
    service, _, count = value.partition("=")
    if service not in GRPC_SERVICES or not count.isdigit() or not 1 <= int(count) <= 9:
        raise argparse.ArgumentTypeError(f"{value!r}: expected SERVICE=N with SERVICE one of "
                                         f"{', '.join(GRPC_SERVICES)} and N from 1 to 9")
    return service, int(count)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mesh.tools.launcher", description="Run the shopmesh services locally.")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SHOPMESH_DATA_DIR", "data")))
    parser.add_argument("--host", default=os.environ.get("SHOPMESH_HOST", "127.0.0.1"))
    for name in START_ORDER:
        default = int(os.environ.get(f"SHOPMESH_{name.upper()}_PORT", DEFAULT_PORTS[name]))
        parser.add_argument(f"--{name}-port", type=int, default=default)
    for name, metrics_port in DEFAULT_METRICS_PORTS.items():
        default = int(os.environ.get(f"SHOPMESH_{name.upper()}_METRICS_PORT", metrics_port))
        parser.add_argument(f"--{name}-metrics-port", type=int, default=default, help=f"{name}'s /metrics port")
    parser.add_argument("--no-seed", action="store_true", help="do not add the demo products")
    parser.add_argument(
        "--consul", metavar="ADDR|dev", default="",
        help="discover through Consul at ADDR (host:port), or 'dev' to start consul agent -dev from .tools/bin",
    )
    parser.add_argument("--consul-port", type=int, default=8500, help="HTTP port of the agent --consul dev starts")
    parser.add_argument(
        "--instances", metavar="SERVICE=N", action="append", default=[], type=_instances,
        help="run N instances of a gRPC service (needs --consul), e.g. --instances inventory=2",
    )
    parser.add_argument(
        "--tls", metavar="DIR", type=Path, default=None,
        help="mTLS between the services with the CA and certificates scripts/make_certs.py wrote to DIR",
    )
    parser.add_argument("--stop-timeout", type=float, default=30.0, help="seconds a service gets to stop")
    args = parser.parse_args(argv)
    if any(count > 1 for _, count in args.instances) and not args.consul:
        parser.error("--instances needs --consul: static discovery knows one address per service")
    return args


def main(argv: list[str] | None = None) -> None:
    sys.exit(asyncio.run(Launcher(parse_args(argv)).run()))


if __name__ == "__main__":
    main()
