"""docker-compose.yml and the Dockerfile match what the code reads (no Docker engine here: parsed, not run)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

import inventory.app
import notification.app
import order.app
from mesh.settings import DEFAULT_PORTS, Settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
GRPC_NAMES = {
    "inventory": inventory.app.SERVICE_NAME,
    "order": order.app.SERVICE_NAME,
    "notification": notification.app.SERVICE_NAME,
}


def known_variables() -> set[str]:
    """Every SHOPMESH_* variable mesh/settings.py reads, the per-service ones expanded."""
    source = (ROOT / "mesh" / "settings.py").read_text()
    names = set(re.findall(r'"(SHOPMESH_[A-Z_]+)"', source))
    for service in DEFAULT_PORTS:
        for suffix in ("PORT", "ADDR", "DATABASE_URL"):
            names.add(f"SHOPMESH_{service.upper()}_{suffix}")
    return names


def test_the_file_is_valid_by_the_compose_specification() -> None:
    from compose_spec import PyCompose

    # PyYAML resolves the merge keys (<<: *service) exactly as docker compose does.
    compose = PyCompose.from_json(json.dumps(COMPOSE))
    assert len(compose) == 5 and compose.name == "shopmesh"
    broken = {**COMPOSE, "services": {**SERVICES, "gateway": {**SERVICES["gateway"], "ports": ["eighty:80"]}}}
    with pytest.raises(ValueError, match="port"):
        PyCompose.from_json(json.dumps(broken))


def test_the_topology_is_consul_three_services_and_the_gateway() -> None:
    assert set(SERVICES) == {"consul", "inventory", "order", "notification", "gateway"}
    assert SERVICES["inventory"]["deploy"]["replicas"] == 2
    assert SERVICES["consul"]["image"].startswith("hashicorp/consul:")
    assert "shop-data" in COMPOSE["volumes"]


@pytest.mark.parametrize("name", ["inventory", "order", "notification", "gateway"])
def test_each_service_runs_a_real_module_with_settings_the_code_accepts(name: str) -> None:
    spec = SERVICES[name]
    assert spec["command"] == [name] and importlib.util.find_spec(f"{name}.__main__") is not None
    env = {k: str(v) for k, v in spec["environment"].items()}
    assert set(env) <= known_variables(), set(env) - known_variables()
    settings = Settings.from_env(name, env)  # raises on any malformed value
    assert (settings.discovery, settings.host, settings.consul_addr) == ("consul", "0.0.0.0", "consul:8500")
    assert "shop-data:/data" in spec["volumes"] and str(settings.data_dir) == "/data"
    assert spec["depends_on"]["consul"]["condition"] == "service_healthy"
    probe = " ".join(spec["healthcheck"]["test"])
    assert f"localhost:{settings.port}" in probe
    if name in GRPC_NAMES:
        assert spec["healthcheck"]["test"][:2] == ["CMD", "grpc-health-probe"]
        assert f"-service={GRPC_NAMES[name]}" in probe
    else:
        assert "/readyz" in probe and spec["ports"] == [f"{settings.port}:{settings.port}"]


def test_the_dockerfile_ships_every_package_and_the_pinned_probe() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r'include = \[(.*?)\]', pyproject).group(1)
    for package in re.findall(r'"(\w+)\*"', packages):
        assert f"COPY {package} {package}" in dockerfile, package
    tools = (ROOT / "scripts" / "install-tools.sh").read_text()
    probe = re.search(r"github.com/grpc-ecosystem/grpc-health-probe@v[\d.]+", tools).group()
    assert probe in dockerfile
    assert 'ENTRYPOINT ["python", "-m"]' in dockerfile
    assert Path(ROOT / ".dockerignore").read_text().split()[:2] == [".venv", ".tools"]

