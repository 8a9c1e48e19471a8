"""The server under test of the Connect conformance suite: the gateway, in front of a Python service.

    connectconformance --mode server --conf tests/conformance/config.yaml -- python tests/conformance/server.py

As the suite asks (docs/testing_servers.md): a size-delimited ServerCompatRequest comes on stdin;
this starts the ConformanceService (`service.py`, grpc.aio) and, as a process of its own,
`python -m gateway --descriptors conformance.protoset --upstream ...=127.0.0.1:PORT`, the very
command a user runs, then answers a size-delimited ServerCompatResponse naming the gateway's
port, and serves until the suite signals (SIGTERM; if it kills, the gateway dies with us). The gateway runs with no default
deadline (SHOPMESH_HTTP_TIMEOUT_SECONDS=0) since the suite checks that a call without a timeout
reaches the service without one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mesh.server.workers import _die_with_parent  # noqa: E402
from mesh.tools.ports import free_port  # noqa: E402
from tests.conformance import service  # noqa: E402


def _read_delimited(stream: object) -> bytes:
    size = struct.unpack(">I", stream.read(4))[0]  # type: ignore[attr-defined]
    return stream.read(size)  # type: ignore[attr-defined, no-any-return]


def _wait_healthy(port: int, gateway: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise SystemExit(f"the gateway exited with {gateway.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the gateway did not answer /healthz")


async def main() -> None:
    out = Path(os.environ.get("SHOPMESH_CONFORMANCE_STUBS") or tempfile.mkdtemp(prefix="conformance-stubs-"))
    pb, pb_grpc, compat, protoset = service.stubs(out)
    request = compat.ServerCompatRequest.FromString(_read_delimited(sys.stdin.buffer))
    if request.use_tls:
        raise SystemExit("this server under test speaks plaintext only (supportsTls: false)")
    upstream_port, gateway_port = free_port(), free_port()
    env = dict(os.environ, SHOPMESH_GATEWAY_PORT=str(gateway_port), SHOPMESH_HTTP_TIMEOUT_SECONDS="0",
               SHOPMESH_DISCOVERY="static", SHOPMESH_METRICS="off", SHOPMESH_LOG_LEVEL="WARNING")
    log = open(os.environ.get("SHOPMESH_CONFORMANCE_LOG", os.devnull), "ab")  # noqa: SIM115 - the child owns it
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--descriptors", str(protoset),
         "--upstream", f"connectrpc.conformance.v1.ConformanceService=127.0.0.1:{upstream_port}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)  # noqa: PLW1509
    # Started after the fork: a process must not fork while gRPC's threads run.
    grpc_server = await service.serve(pb, pb_grpc, upstream_port)
    try:
        await asyncio.to_thread(_wait_healthy, gateway_port, gateway)
        reply = compat.ServerCompatResponse(host="127.0.0.1", port=gateway_port).SerializeToString()
        sys.stdout.buffer.write(struct.pack(">I", len(reply)) + reply)
        sys.stdout.buffer.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()  # the suite closes stdin at once; it ends us with a signal
    finally:
        gateway.terminate()
        try:
            gateway.wait(15)
        except subprocess.TimeoutExpired:
            gateway.kill()
        await grpc_server.stop(1)


if __name__ == "__main__":
    asyncio.run(main())
