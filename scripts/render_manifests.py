"""Renders what a user deploys from its two sources: the services declared once in
mesh/services.toml (or SHOPMESH_SERVICES_FILE), and the Helm chart.

From the declaration:
    deploy/helm/shopmesh/files/services.json   the chart's copy (every template loops over it)
    deploy/helm/shopmesh/files/postgres-init.sql   one database per service that owns one
    docker-compose.yml                         the block of the mesh's services (the rest is hand-written)
    deploy/prometheus/prometheus.yml           compose's scrape configuration (rules.yml beside it)
From the chart with its default values (needs Helm):
    deploy/kubernetes/shopmesh.yaml            for `kubectl apply -f` users. The one value that differs
                                               from the chart's defaults is the bundled PostgreSQL's
                                               password: the file names a Secret you create first.

    python scripts/render_manifests.py           # rewrite them
    python scripts/render_manifests.py --check   # exit 1 if any is stale
    python scripts/render_manifests.py --services FILE --out DIR   # all of them for FILE's services, into DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mesh import topology  # noqa: E402
from mesh.topology import Service  # noqa: E402

CHART = ROOT / "deploy" / "helm" / "shopmesh"
HELM = Path(os.environ.get("SHOPMESH_TOOLS", ROOT / ".tools")) / "cluster" / "bin" / "helm"
COMPOSE_BEGIN = "  # --- rendered from mesh/services.toml by scripts/render_manifests.py: edit there, not here ---\n"
COMPOSE_END = "  # --- end of what mesh/services.toml renders ---\n"
KUBERNETES_HEADER = """\
# Rendered by scripts/render_manifests.py from deploy/helm/shopmesh with its default values.
# Do not edit; change the chart. In namespace default, release name shopmesh:
#
#   kubectl create secret generic shopmesh-postgresql --from-literal=password="$(openssl rand -hex 24)"
#   kubectl apply -f deploy/kubernetes/shopmesh.yaml
#   kubectl port-forward svc/shopmesh-gateway 8080:80    # then http://127.0.0.1:8080/
#
# The image is shopmesh:0.1.0 (scripts/build-image.sh); for anything else, use the chart.
"""


def chart_services(services: dict[str, Service]) -> str:
    """The chart's copy of the declaration (files/services.json), in its own key style."""
    return json.dumps({s.name: {"port": s.port, "metricsPort": s.metrics_port, "grpcService": s.grpc_service,
                                "database": s.database, "http": s.http, "calls": list(s.calls)}
                       for s in services.values()}, indent=2) + "\n"


def postgres_init(services: dict[str, Service]) -> str:
    lines = ["-- Rendered from mesh/services.toml by scripts/render_manifests.py. Run once by the postgres",
             "-- image on its first start (docker-compose.postgres.yml, and the Helm chart's bundled",
             "-- PostgreSQL): one database per service, as each service owns its data. Tables come from",
             "-- each service's migrations when it starts."]
    lines += [f'CREATE DATABASE "{s.name}";' for s in services.values() if s.database]
    return "\n".join(lines) + "\n"


def _compose_service(s: Service) -> str:
    out = [f"  {s.name}:", "    <<: *service", f'    command: ["{s.name}"]']
    if s.compose_replicas > 1:
        out += ["    deploy:", f"      replicas: {s.compose_replicas}"]
    if s.http:
        out += ["    ports:", f'      - "{s.port}:{s.port}"']
    out += ["    environment:", "      <<: *telemetry", f'      SHOPMESH_{s.name.upper()}_PORT: "{s.port}"']
    if not s.http:
        out.append(f'      SHOPMESH_{s.name.upper()}_METRICS_PORT: "{s.metrics_port}"')
    out += [f"      {key}: {json.dumps(value)}" for key, value in s.compose_environment]
    if s.http:
        probe = ('["CMD", "python", "-c", "import urllib.request; '
                 f"urllib.request.urlopen('http://localhost:{s.port}/readyz', timeout=3)\"]")
    else:
        probe = f'["CMD", "grpc-health-probe", "-addr=localhost:{s.port}", "-service={s.grpc_service}"]'
    out += ["    healthcheck:", f"      test: {probe}", "      interval: 5s", "      retries: 10"]
    return "\n".join(out) + "\n"


def compose(services: dict[str, Service], current: str) -> str:
    """docker-compose.yml with its block of the mesh's services rendered, in start order."""
    if COMPOSE_BEGIN not in current or COMPOSE_END not in current:
        raise SystemExit("docker-compose.yml lost its rendered block's markers")
    head, rest = current.split(COMPOSE_BEGIN, 1)
    tail = rest.split(COMPOSE_END, 1)[1]
    block = "\n".join(_compose_service(services[name]) for name in topology.start_order(services))
    return head + COMPOSE_BEGIN + "\n" + block + "\n" + COMPOSE_END + tail


def prometheus(services: dict[str, Service], consul: str = "consul:8500", hosts: dict[str, str] | None = None,
               rules: str = "/etc/prometheus/rules.yml") -> str:
    """Prometheus' configuration: compose's by default; a test renders it for its own Consul
    agent, the HTTP services' `host:port` (`hosts`) and where the rules file is."""
    grpc = [s.name for s in services.values() if not s.http]
    http = [s for s in services.values() if s.http]
    hosts = hosts or {}
    out = f"""\
# Rendered from mesh/services.toml by scripts/render_manifests.py: Prometheus for docker-compose.
# Every gRPC instance is found through Consul (replicas come and go), and scraped on the port it
# registered as service meta `metrics_port` (SHOPMESH_<SERVICE>_METRICS_PORT); the gateway
# serves /metrics on its own port. The recording and alerting rules are rules.yml, beside this.
global:
  scrape_interval: 5s
  evaluation_interval: 5s

rule_files:
  - {rules}

scrape_configs:
  - job_name: shopmesh-services
    consul_sd_configs:
      - server: {consul}
        services: [{", ".join(grpc)}]
    relabel_configs:
      - source_labels: [__meta_consul_service_metadata_metrics_port]
        regex: ""
        action: drop
      - source_labels: [__meta_consul_service_address, __meta_consul_service_metadata_metrics_port]
        regex: "(.+);(\\\\d+)"
        replacement: "$1:$2"
        target_label: __address__
      - source_labels: [__meta_consul_service]
        target_label: service
      - source_labels: [__meta_consul_service_id]
        target_label: instance
"""
    for s in http:
        out += f"""
  - job_name: shopmesh-{s.name}
    static_configs:
      - targets: ["{hosts.get(s.name, f"{s.name}:{s.metrics_port}")}"]
        labels:
          service: {s.name}
"""
    return out


def kubernetes(chart: Path = CHART, helm: Path = HELM) -> str:
    out = subprocess.run(
        [str(helm), "template", "shopmesh", str(chart), "--namespace", "default",
         "--set", "postgresql.auth.existingSecret=shopmesh-postgresql"],
        check=True, capture_output=True, text=True,
    ).stdout
    return KUBERNETES_HEADER + out


def rendered(services: dict[str, Service], root: Path = ROOT, chart: Path = CHART,
             helm: Path | None = HELM) -> dict[Path, str]:
    """Every rendered file, by where it goes. Kubernetes' from the chart as it will be (its services.json
    and init SQL rendered first); none when there is no Helm."""
    files = {
        chart / "files" / "services.json": chart_services(services),
        chart / "files" / "postgres-init.sql": postgres_init(services),
        root / "docker-compose.yml": compose(services, (ROOT / "docker-compose.yml").read_text()),
        root / "deploy" / "prometheus" / "prometheus.yml": prometheus(services),
    }
    if helm is not None and helm.exists():
        staged = Path(os.environ.get("TMPDIR", "/tmp")) / f"shopmesh-chart-{os.getpid()}"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(chart, staged)
        try:
            for path, text in files.items():
                if path.parent.parent == chart:
                    (staged / "files" / path.name).write_text(text)
            files[root / "deploy" / "kubernetes" / "shopmesh.yaml"] = kubernetes(staged, helm)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if any rendered file is stale")
    parser.add_argument("--services", type=Path, default=None, help="a declaration other than mesh/services.toml")
    parser.add_argument("--out", type=Path, default=None, help="render into this folder (a copy of the chart too)")
    args = parser.parse_args()
    try:
        services = topology.load(args.services)
    except topology.TopologyError as error:
        sys.exit(f"render_manifests: {error}")
    root, chart = ROOT, CHART
    if args.out is not None:
        root, chart = args.out, args.out / "deploy" / "helm" / "shopmesh"
        shutil.copytree(CHART, chart, dirs_exist_ok=True)
    if not HELM.exists():
        print(f"render_manifests: {HELM} not found (scripts/install-cluster.sh): deploy/kubernetes/shopmesh.yaml "
              "is left as it is", file=sys.stderr)
    files = rendered(services, root, chart)
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    if args.check:
        if stale:
            sys.exit("stale: " + ", ".join(str(p.relative_to(root)) for p in stale)
                     + ": run python scripts/render_manifests.py")
        return
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print(path.relative_to(root))


if __name__ == "__main__":
    main()
