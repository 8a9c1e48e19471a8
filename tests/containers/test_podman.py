"""The image and the compose topology, run for real with Podman (no Docker engine here).

scripts/build-image.sh builds the Dockerfile unchanged on base images made from Debian's
packages; the image then runs as Kubernetes runs it (non-root, read-only root filesystem) and
answers grpc-health-probe on a published loopback port. docker-compose.yml (with the
PostgreSQL variant) comes up with podman-compose: the shop, Consul from an image holding our
Go-built agent, PostgreSQL from Debian's package. Its observability images are on Docker Hub,
which this machine cannot reach: the test names them and runs the rest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, free_port, needed, tool
from tests.support.cluster import images_built
from tests.support.http import Http, answers
from tests.support.waiting import eventually, settled

# The images compose names that the extras stand in for, built here from Debian's packages.
LOCAL = {"hashicorp/consul:1.14.11": "localhost/consul:1.14.11", "postgres:16-bookworm": "localhost/postgres:15-bookworm",
         "shopmesh:local": "localhost/shopmesh:local"}
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


@pytest.fixture(scope="module")
def images() -> None:
    if shutil.which("podman") is None or shutil.which("mmdebstrap") is None:
        needed("podman and mmdebstrap", "apt-get install podman mmdebstrap (scripts/test.sh does)")
    if os.geteuid() != 0:
        needed("root (Podman here runs containers as root)", "run the suite as root, as CI does")
    images_built()


@pytest.fixture
def container() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run([*PODMAN, "rm", "-f", name], capture_output=True, timeout=60)


def test_the_image_runs_non_root_on_a_read_only_root_and_answers_health(images: None, container: list[str]) -> None:
    port = free_port()
    name = f"shopmesh-test-{uuid.uuid4().hex[:6]}"
    container.append(name)
    # /data is the image's VOLUME (an anonymous volume, the shop user's), the only place it writes.
    subprocess.run([*PODMAN, "run", "-d", "--name", name, *LIMITS, "--read-only", "--tmpfs", "/tmp",
                    "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                    "-p", f"127.0.0.1:{port}:50051", "localhost/shopmesh:local", "inventory"],
                   check=True, capture_output=True, timeout=60)
    result = settled(lambda: subprocess.run([tool("grpc-health-probe"), f"-addr=127.0.0.1:{port}",
                                             "-service=shop.inventory.v1.InventoryService"],
                                            capture_output=True, text=True),
                     lambda probe: probe.returncode == 0, timeout=60, every=0.5,
                     what="the container's gRPC health", detail=lambda: _logs(name))
    assert "status: SERVING" in result.stdout + result.stderr
    user = subprocess.run([*PODMAN, "exec", name, "id", "-u"], capture_output=True, text=True, check=True).stdout
    assert user.strip() == "10001"


def _logs(name: str) -> str:
    return subprocess.run([*PODMAN, "logs", name], capture_output=True, text=True).stdout[-3000:]


def _compose_for_here(merged: dict[str, Any], ports: dict[str, int]) -> tuple[dict[str, Any], dict[str, str]]:
    """The compose topology with the images this machine has; what it cannot run, and why."""
    skipped = {}
    services = merged["services"]
    for name, service in list(services.items()):
        image = service.get("image", "")
        if image in LOCAL:
            service["image"] = LOCAL[image]
            service.pop("build", None)
        else:
            skipped[name] = f"{image}: on Docker Hub, which this machine cannot reach"
            del services[name]
    for name, service in services.items():
        depends = service.get("depends_on")
        if isinstance(depends, dict):
            service["depends_on"] = {k: v for k, v in depends.items() if k in services}
        elif isinstance(depends, list):
            service["depends_on"] = [k for k in depends if k in services]
        # Bind mounts of the checkout's files (./deploy/...), wherever the merged file is written.
        service["volumes"] = [str(ROOT / v.split(":", 1)[0]) + ":" + v.split(":", 1)[1]
                              if isinstance(v, str) and v.startswith("./") else v for v in service.get("volumes", [])]
        if not service["volumes"]:
            del service["volumes"]
        env = service.get("environment")
        if isinstance(env, dict) and env.get("SHOPMESH_TRACE_EXPORTER") == "otlp":
            env["SHOPMESH_TRACE_EXPORTER"] = "none"  # its collector is one of the images left out
        # Published on loopback only, on free ports.
        service["ports"] = [f"127.0.0.1:{ports[name]}:{str(p).rsplit(':', 1)[-1]}" for p in service.get("ports", [])]
        if not service["ports"]:
            del service["ports"]
    return merged, skipped


def test_the_compose_topology_comes_up_and_takes_an_order(images: None, tmp_path: Path) -> None:
    compose = [sys.executable, "-m", "podman_compose"]
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "docker-compose.postgres.yml")]
    merged = yaml.safe_load(subprocess.run([*compose, *files, "config"], cwd=ROOT, capture_output=True, text=True,
                                           check=True).stdout)
    ports = {"gateway": free_port(), "consul": free_port()}
    here, skipped = _compose_for_here(merged, ports)
    assert set(skipped) == {"otel-collector", "jaeger", "prometheus", "grafana"}, skipped
    for name, why in skipped.items():
        print(f"compose: not run here: {name} ({why})")
    assert {"consul", "postgres", "inventory", "order", "notification", "gateway"} <= set(here["services"])
    project = f"shopmesh-test-{uuid.uuid4().hex[:6]}"
    here["name"] = project
    path = tmp_path / "compose.yml"
    path.write_text(yaml.safe_dump(here))
    conf = tmp_path / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
                    '[engine]\nruntime = "runc"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    try:
        up = subprocess.run([*compose, "-f", str(path), "up", "-d"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        gateway = Http(f"127.0.0.1:{ports['gateway']}")
        eventually(lambda: answers(gateway.address, "/readyz"), timeout=180, every=1, what="the composed gateway's /readyz",
                   detail=lambda: _compose_logs(compose, path, env))
        sku = f"compose-{uuid.uuid4().hex[:6]}"
        status, _, product = gateway.call("POST", "/v1/products", {
            "sku": sku, "name": "Compose mug", "available": 2, "price": {"currencyCode": "USD", "minorUnits": "400"}})
        assert status == 200, product
        status, _, order = gateway.call("POST", "/v1/orders", {"requestId": str(uuid.uuid4()), "userId": "compose",
                                                               "lines": [{"sku": sku, "quantity": 1}]})
        assert status == 200 and order["status"] == "CONFIRMED", order
        # Through Consul: the services found each other there (its catalog lists all three).
        catalog = Http(f"127.0.0.1:{ports['consul']}").call("GET", "/v1/catalog/services")[2]
        assert {"inventory", "order", "notification"} <= set(catalog), catalog
    finally:
        subprocess.run([*compose, "-f", str(path), "down", "-v", "-t", "5"], cwd=ROOT, env=env,
                       capture_output=True, timeout=300)


def _compose_logs(compose: list[str], path: Path, env: dict[str, str]) -> str:
    return subprocess.run([*compose, "-f", str(path), "logs", "--tail", "20"], cwd=ROOT, env=env,
                          capture_output=True, text=True).stdout[-5000:]
