"""A real Jaeger (its single binary, built by scripts/install-tools.sh) for a test, run with the
configuration we ship (deploy/jaeger/config.yaml) on loopback ports of its own, read through its
query API."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import ROOT, free_port
from tests.support.http import call
from tests.support.waiting import ended, eventually

CONFIG = ROOT / "deploy" / "jaeger" / "config.yaml"


class Jaeger:
    def __init__(self, binary: str, folder: Path):
        self.binary, self.log = binary, folder / "jaeger.log"
        self.otlp = f"127.0.0.1:{free_port()}"  # where the mesh sends its spans (OTLP/gRPC)
        self.query = f"127.0.0.1:{free_port()}"  # the query API and UI
        self.env = dict(os.environ, JAEGER_OTLP_GRPC_ENDPOINT=self.otlp, JAEGER_QUERY_HTTP_ENDPOINT=self.query,
                        JAEGER_QUERY_GRPC_ENDPOINT=f"127.0.0.1:{free_port()}",
                        JAEGER_HEALTH_ENDPOINT=f"127.0.0.1:{free_port()}")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, f"--config={CONFIG}"], env=self.env,  # noqa: S603
                                        stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        eventually(self._answers, 60, "Jaeger's query API", detail=lambda: self.log.read_text()[-3000:])

    def _answers(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            return call(self.query, "GET", "/api/services", timeout=2)[0] == 200
        except OSError:
            return False

    def trace(self, trace_id: str) -> dict | None:
        """The trace as Jaeger's query API gives it (spans, processes), or None while it has none."""
        status, _, body = call(self.query, "GET", f"/api/traces/{trace_id}", timeout=10)
        if status == 404:
            return None
        assert status == 200, (status, body[:500])
        [found] = json.loads(body)["data"]
        return found

    def stop(self) -> None:
        ended(self.process)
