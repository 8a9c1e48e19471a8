"""The Connect conformance suite (connectrpc.com/conformance, from the Go module proxy) against the
gateway in server mode: its reference client speaks Connect and gRPC-Web (HTTP/1.1, unary and
server streaming, proto and JSON, gzip) to `python -m gateway --descriptors ... --upstream ...`
in front of a Python ConformanceService (tests/conformance). No test here reads our own code's
idea of the protocols: the suite's client and its expectations are Connect's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, tool

CONFORMANCE = ROOT / "tests" / "conformance"


def test_the_gateway_passes_the_connect_conformance_suite_for_what_it_claims(tmp_path: Path) -> None:
    suite = tool("connectconformance")
    assert (ROOT / ".tools" / "conformance" / "proto").is_dir(), "run scripts/install-tools.sh"
    log = tmp_path / "gateway.log"
    env = dict(os.environ, SHOPMESH_CONFORMANCE_STUBS=str(tmp_path), SHOPMESH_CONFORMANCE_LOG=str(log))
    done = subprocess.run(
        [suite, "--mode", "server", "--conf", str(CONFORMANCE / "config.yaml"),
         "--known-failing", f"@{CONFORMANCE / 'known-failing.txt'}",
         "--known-flaky", f"@{CONFORMANCE / 'known-flaky.txt'}",
         "--", sys.executable, str(CONFORMANCE / "server.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    print(done.stdout[-4000:], done.stderr[-4000:])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    totals = re.search(r"Total cases: (\d+)\n(\d+) passed, (\d+) failed", done.stdout)
    assert totals is not None, done.stdout[-2000:]
    total, passed, failed = map(int, totals.groups())
    assert total >= 480 and failed == 0, totals.group(0)  # the suite ran in full, for both protocols
    assert "PROTOCOL_CONNECT" in done.stdout + done.stderr and "PROTOCOL_GRPC_WEB" in done.stdout + done.stderr
    text = log.read_text() if log.exists() else ""
    assert "Traceback" not in text and "ERROR" not in text, text[-3000:]
