"""The shop's processes as declared once in mesh/services.toml (or SHOPMESH_SERVICES_FILE).

Settings take their service names and default ports from here, the launcher its start and stop
order, and scripts/render_manifests.py the chart's, compose's and Prometheus' view of the mesh.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FILE = Path(__file__).resolve().parent / "services.toml"
_KEYS = {"port", "metrics_port", "grpc_service", "database", "calls", "http", "compose"}


class TopologyError(ValueError):
    """The declaration is malformed; the message names the file, the service and the key."""


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    metrics_port: int  # the gateway (http) serves /metrics on its own port
    grpc_service: str = ""  # its readiness health name; "" for the gateway
    database: bool = False
    calls: tuple[str, ...] = ()
    http: bool = False
    compose_replicas: int = 1  # docker-compose.yml only ([name.compose] replicas)
    compose_environment: tuple[tuple[str, str], ...] = ()  # docker-compose.yml only ([name.compose.environment])


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Service]:
    """The declared services, in the file's order; a clear error for a malformed declaration."""
    env = os.environ if environ is None else environ
    path = path or Path(env.get("SHOPMESH_SERVICES_FILE", "") or DEFAULT_FILE)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise TopologyError(f"{path}: {error}") from None
    found: dict[str, Service] = {}
    for name, spec in raw.items():
        where = f"{path}: [{name}]"
        if not isinstance(spec, dict) or not name.isidentifier() or not name.islower():
            raise TopologyError(f"{where}: a service is a table named by its lowercase module name")
        unknown = set(spec) - _KEYS
        if unknown:
            raise TopologyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_KEYS))}")
        port = spec.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise TopologyError(f"{where}: port must be a number from 1 to 65535")
        http = bool(spec.get("http", False))
        metrics_port = spec.get("metrics_port", port if http else None)
        if not isinstance(metrics_port, int) or not 0 < metrics_port < 65536:
            raise TopologyError(f"{where}: metrics_port must be a number from 1 to 65535")
        calls = spec.get("calls", [])
        if not isinstance(calls, list) or not all(isinstance(c, str) for c in calls):
            raise TopologyError(f"{where}: calls must be a list of service names")
        compose = spec.get("compose", {})
        replicas, environment = compose.get("replicas", 1), compose.get("environment", {})
        if not isinstance(compose, dict) or set(compose) - {"replicas", "environment"} \
                or not isinstance(replicas, int) or replicas < 1 or not isinstance(environment, dict) \
                or not all(isinstance(v, str) for v in environment.values()):
            raise TopologyError(f"{where}.compose: replicas (a number from 1) and environment (a table of strings) only")
        found[name] = Service(name, port, metrics_port, str(spec.get("grpc_service", "")),
                              bool(spec.get("database", False)), tuple(calls), http, replicas, tuple(environment.items()))
    for service in found.values():
        for callee in service.calls:
            if callee not in found or found[callee].http:
                raise TopologyError(f"{path}: [{service.name}] calls {callee!r}, which is no gRPC service declared here")
    start_order(found)  # refuses a cycle
    return found


def start_order(services: Mapping[str, Service]) -> list[str]:
    """Callees before their callers (each starts once what it calls serves); declared order otherwise."""
    done: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            raise TopologyError(f"services call each other in a circle through {name!r}")
        visiting.add(name)
        for callee in services[name].calls:
            visit(callee)
        visiting.discard(name)
        done.append(name)

    for name in services:
        visit(name)
    return done


def stop_tiers(services: Mapping[str, Service]) -> list[tuple[str, ...]]:
    """Callers before the services they call, each tier's processes at once."""
    depth: dict[str, int] = {}
    for name in start_order(services):  # a service's tier is one above the deepest it calls
        depth[name] = 1 + max((depth[callee] for callee in services[name].calls), default=-1)
    tiers = sorted(set(depth.values()), reverse=True)
    return [tuple(name for name in services if depth[name] == tier) for tier in tiers]
