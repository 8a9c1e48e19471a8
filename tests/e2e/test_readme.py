"""The README's Quickstart command and grpcurl examples work as written."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from tests.conftest import ROOT, TOOLS_BIN, free_port, tool
from tests.support.mesh import Launcher
from tests.support.waiting import said

DEFAULT_PORTS = {"50051": "inventory", "50052": "order", "50053": "notification", "8080": "gateway"}


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"<!-- readme-test -->\n```sh\n(.*?)```", text, re.S)


def run_block(script: str, launcher: Launcher) -> str:
    for port, service in DEFAULT_PORTS.items():  # the launcher under test runs on free ports
        script = script.replace(f"localhost:{port}", launcher.address(service))
    env = dict(os.environ, PATH=f"{TOOLS_BIN}:{os.environ['PATH']}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_the_readme_grpcurl_examples_run_against_the_mesh(launcher: Launcher) -> None:
    tool("grpcurl")
    blocks = readme_blocks()
    assert len(blocks) == 4, "README lost a tested block"
    out = run_block(blocks[0], launcher)
    assert "shop.order.v1.OrderService" in out
    assert '"status": "CONFIRMED"' in out
    assert '"kind": "order.created"' in out
    assert '"status": "SERVING"' in out


def test_the_readme_curl_examples_run_against_the_gateway(launcher: Launcher) -> None:
    out = run_block(readme_blocks()[1], launcher)
    assert '"sku":"coffee-mug"' in out
    assert '"status":"CONFIRMED"' in out and '"requestId":"readme-http-1"' in out
    assert "HTTP/1.1 404 Not Found" in out and '"code":5' in out
    assert '"ready":true' in out


def test_the_readme_update_examples_run_against_the_gateway(launcher: Launcher) -> None:
    out = run_block(readme_blocks()[2], launcher)
    assert 'etag: "v1"' in out.lower()
    assert '"price":{"currencyCode":"EUR","minorUnits":"3500"}' in out and '"name":"Desk lamp"' in out
    assert "}412\n" in out  # the status curl printed after the price-only PATCH
    assert '"state":"ARCHIVED"' in out


def test_the_quickstart_command_sets_up_runs_and_stops_the_mesh(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("inventory", "order", "notification", "gateway")}
    args = [str(ROOT / "scripts" / "run-mesh.sh"), "--data-dir", str(tmp_path / "data")]
    for name, port in ports.items():
        args += [f"--{name}-port", str(port)]
    for name in ("inventory", "order", "notification"):
        args += [f"--{name}-metrics-port", str(free_port())]
    log = tmp_path / "run-mesh.log"
    process = subprocess.Popen(args, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        said(log, "shopmesh is up", process, timeout=300)  # the first run may install packages
        assert "demo products: 5 added" in log.read_text()
        assert (tmp_path / "data" / "order.db").exists()
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:  # stop it the way users do, so none of its children linger
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def test_the_readme_connect_examples_run_against_the_gateway(launcher: Launcher) -> None:
    out = run_block(readme_blocks()[3], launcher)
    assert out.count('"sku":"coffee-mug"') == 2  # POST and GET
    assert '"code":"invalid_argument"' in out and '"type":"google.rpc.BadRequest"' in out
