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
        for suffix in ("PORT", "ADDR", "DATABASE_URL", "METRICS_PORT"):
            names.add(f"SHOPMESH_{service.upper()}_{suffix}")
    return names


def test_the_file_is_valid_by_the_compose_specification() -> None:
    from compose_spec import PyCompose

    # PyYAML resolves the merge keys (<<: *service) exactly as docker compose does.
    compose = PyCompose.from_json(json.dumps(COMPOSE))
    assert len(compose) == 9 and compose.name == "shopmesh"
    broken = {**COMPOSE, "services": {**SERVICES, "gateway": {**SERVICES["gateway"], "ports": ["eighty:80"]}}}
    with pytest.raises(ValueError, match="port"):
        PyCompose.from_json(json.dumps(broken))


def test_the_topology_is_consul_three_services_the_gateway_and_the_observability_stack() -> None:
    assert set(SERVICES) == {"consul", "inventory", "order", "notification", "gateway",
                             "otel-collector", "jaeger", "prometheus", "grafana"}
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



DEPLOY = ROOT / "deploy"


def mounted(service: str, target: str, services: dict = SERVICES) -> Path:
    """The repository file or folder a compose service mounts at `target` (read-only)."""
    for volume in services[service]["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            assert rest.endswith(":ro") and source.startswith("./")
            path = ROOT / source[2:]
            assert path.exists(), path
            return path
    raise AssertionError(f"{service} mounts nothing at {target}")


@pytest.mark.parametrize("name", ["inventory", "order", "notification", "gateway"])
def test_every_service_sends_spans_to_the_collector_and_serves_metrics(name: str) -> None:
    settings = Settings.from_env(name, {k: str(v) for k, v in SERVICES[name]["environment"].items()})
    assert settings.trace_exporter == "otlp" and settings.metrics
    collector = yaml.safe_load(mounted("otel-collector", "/etc/otelcol/config.yaml").read_text())
    host, port = settings.otlp_endpoint.split(":")
    assert host == "otel-collector" and collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == f"0.0.0.0:{port}"
    assert SERVICES["otel-collector"]["command"] == ["--config=/etc/otelcol/config.yaml"]


def test_the_collector_forwards_traces_to_jaeger_over_otlp() -> None:
    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    pipeline = collector["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"] and set(pipeline["processors"]) <= set(collector["processors"])
    [exporter] = pipeline["exporters"]
    assert collector["exporters"][exporter]["endpoint"] == "jaeger:4317"
    # Jaeger runs the configuration tests/e2e/test_jaeger.py runs, its OTLP receiver on :4317 by default.
    assert SERVICES["jaeger"]["command"] == ["--config=/etc/jaeger/config.yaml"]
    jaeger = yaml.safe_load((mounted("jaeger", "/etc/jaeger") / "config.yaml").read_text())
    assert jaeger["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":-0.0.0.0:4317}")
    assert jaeger["extensions"]["jaeger_query"]["http"]["endpoint"].endswith(":-0.0.0.0:16686}")


def test_prometheus_scrapes_every_instance_through_consul_on_its_registered_metrics_port() -> None:
    from mesh.client.discovery import METRICS_PORT_META

    config = yaml.safe_load((mounted("prometheus", "/etc/prometheus") / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    services = jobs["shopmesh-services"]
    [consul_sd] = services["consul_sd_configs"]
    assert consul_sd["server"] == "consul:8500" and sorted(consul_sd["services"]) == sorted(GRPC_NAMES)
    meta_label = f"__meta_consul_service_metadata_{METRICS_PORT_META}"
    rewrite = next(r for r in services["relabel_configs"] if r.get("target_label") == "__address__")
    assert rewrite["source_labels"] == ["__meta_consul_service_address", meta_label]
    assert re.fullmatch(rewrite["regex"], "10.0.0.7;9101") and rewrite["replacement"] == "$1:$2"
    for name in GRPC_NAMES:  # each service registers the metrics port it listens on
        env = {k: str(v) for k, v in SERVICES[name]["environment"].items()}
        assert Settings.from_env(name, env).metrics_port == int(env[f"SHOPMESH_{name.upper()}_METRICS_PORT"])
    gateway_port = Settings.from_env("gateway", {k: str(v) for k, v in SERVICES["gateway"]["environment"].items()}).port
    assert jobs["shopmesh-gateway"]["static_configs"][0]["targets"] == [f"gateway:{gateway_port}"]


def test_grafana_is_provisioned_with_both_data_sources_and_the_dashboard() -> None:
    provisioning = mounted("grafana", "/etc/grafana/provisioning")
    dashboards_dir = mounted("grafana", "/var/lib/grafana/dashboards")
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())["datasources"]
    by_type = {source["type"]: source for source in sources}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090" and by_type["jaeger"]["url"] == "http://jaeger:16686"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "dashboards.yaml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((dashboards_dir / "shopmesh.json").read_text())
    uids = {source["uid"] for source in sources}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] in uids for p in panels)
    titles = " ".join(p["title"] for p in panels).lower()
    for wanted in ("requests per second", "errors", "latency", "orders", "stock units", "notifications",
                   "open reservations", "outbox"):
        assert wanted in titles, wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/var/lib/grafana/dashboards/shopmesh.json"


# docker-compose.postgres.yml, merged over docker-compose.yml as `docker compose -f a -f b` does.
ON_POSTGRES = yaml.safe_load((ROOT / "docker-compose.postgres.yml").read_text())


def _merge(base: object, override: object) -> object:
    """Compose's rule for -f files: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{k: _merge(base.get(k), v) if k in base else v for k, v in override.items()}}
    return override


MERGED = _merge({k: v for k, v in COMPOSE.items()}, {k: v for k, v in ON_POSTGRES.items() if not k.startswith("x-")})


def test_the_postgresql_override_is_valid_and_keeps_everything_else() -> None:
    from compose_spec import PyCompose

    compose = PyCompose.from_json(json.dumps(MERGED))
    assert len(compose) == 10
    services = MERGED["services"]
    for name in ("inventory", "order", "notification"):
        assert set(services[name]["depends_on"]) == {"consul", "otel-collector", "postgres"}
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["environment"]["SHOPMESH_DISCOVERY"] == "consul"  # the base's settings stay
    assert 'pip install --no-cache-dir ".[postgres]"' in (ROOT / "Dockerfile").read_text()  # the driver is in the image


def test_each_service_database_the_override_names_is_made_by_its_init_script_and_migrates(postgres) -> None:
    """The init script run on a real PostgreSQL server, then each service migrated into its database."""
    import asyncio

    from sqlalchemy.engine import make_url

    from mesh.data.db import Database

    services = MERGED["services"]
    init = mounted("postgres", "/docker-entrypoint-initdb.d/init.sql", services)
    postgres.run_sql_file(init)
    for name, app in (("inventory", inventory.app), ("order", order.app), ("notification", notification.app)):
        environment = {k: str(v) for k, v in services[name]["environment"].items()}
        url = make_url(Settings.from_env(name, environment).database_url)
        assert (url.get_backend_name(), url.host, url.port) == ("postgresql", "postgres", 5432)
        db = Database.connect(postgres.url(url.database))  # the same database, on the test server

        store = importlib.import_module(f"{name}.store")

        async def migrate(db: Database = db, versions: Path = Path(app.__file__).parent / "migrations",
                          metadata: object = store.metadata) -> None:
            try:
                await db.migrate(versions, metadata)  # type: ignore[arg-type]
            finally:
                await db.close()

        asyncio.run(migrate())

