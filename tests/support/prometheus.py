"""A real Prometheus server (built by scripts/install-tools.sh) for a test: started on a loopback
port with the configuration the test renders, read through its HTTP API, stopped after."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from pathlib import Path

from tests.conftest import free_port
from tests.support.http import call
from tests.support.waiting import ended, eventually


class Prometheus:
    def __init__(self, binary: str, folder: Path, config: str):
        self.binary, self.folder = binary, folder
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "prometheus.yml").write_text(config)
        self.address = f"127.0.0.1:{free_port()}"
        self.log = self.folder / "prometheus.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own tool
            [self.binary, f"--config.file={self.folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.folder / 'data'}", f"--web.listen-address={self.address}",
             "--web.enable-lifecycle"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        eventually(lambda: self._ready(), 30, "Prometheus ready", detail=lambda: self.log.read_text()[-2000:])

    def _ready(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[-2000:]
        try:
            return call(self.address, "GET", "/-/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> object:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, _, body = call(self.address, "GET", f"/api/v1/{path}{query}", timeout=10)
        reply = json.loads(body)
        assert status == 200 and reply["status"] == "success", (status, reply)
        return reply["data"]

    def targets(self) -> list[dict]:
        return self.api("targets", state="active")["activeTargets"]  # type: ignore[index]

    def query(self, expr: str) -> list[dict]:
        """An instant query's result (a vector's samples)."""
        return self.api("query", query=expr)["result"]  # type: ignore[index]

    def firing(self) -> dict[str, list[dict]]:
        """The alerts firing now, by name: each one's labels."""
        found: dict[str, list[dict]] = {}
        for alert in self.api("alerts")["alerts"]:  # type: ignore[index]
            if alert["state"] == "firing":
                found.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return found

    def stop(self) -> None:
        ended(self.process)
