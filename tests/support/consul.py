"""A real Consul agent for tests: `consul agent -dev` (built by scripts/install-tools.sh) on free loopback ports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import free_port, tool
from tests.support.http import call
from tests.support.waiting import alive, eventually, settled


class Agent:
    """`consul agent -dev` on free loopback ports."""

    def __init__(self, workdir: Path):
        self.binary = tool("consul")
        self.workdir = workdir
        self.http_port = free_port()
        self.ports = [free_port() for _ in range(3)]
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self) -> None:
        serf_lan, serf_wan, server = self.ports
        self.process = subprocess.Popen(
            [self.binary, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
             "-http-port", str(self.http_port), "-grpc-port", "-1", "-grpc-tls-port", "-1", "-dns-port", "-1",
             "-serf-lan-port", str(serf_lan), "-serf-wan-port", str(serf_wan), "-server-port", str(server),
             "-log-level", "warn"],
            stdout=open(self.workdir / "consul.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        log = self.workdir / "consul.log"

        def leader() -> bool:
            alive(self.process, "electing itself", log)
            try:
                return bool(self.get("/v1/status/leader").strip('"'))
            except OSError:
                return False

        eventually(leader, 30, "the consul agent to elect itself", every=0.2,
                   detail=lambda: log.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def get(self, path: str):
        status, _, body = call(self.address, "GET", path, timeout=5)
        assert status == 200, (path, status, body)
        return json.loads(body) if body.startswith((b"[", b"{")) else body.decode()

    def passing(self, service: str) -> list[dict]:
        return self.get(f"/v1/health/service/{service}?passing=true")

    def wait_passing(self, service: str, count: int, timeout: float = 30) -> list[dict]:
        return settled(lambda: self.passing(service), lambda found: len(found) == count, timeout,
                       f"{count} passing {service} instances", every=0.2)
