"""The Helm chart, rendered by real Helm: lint, every documented example, the schema's and the
chart's refusals, the security and operations every pod must have, and the NetworkPolicies'
graph. (That the pods' commands, env and probes work is tests/kubernetes/test_pod_specs.py;
that a real control plane runs them is test_cluster.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool

import generated.shop.inventory.v1.inventory_pb2_grpc  # noqa: F401  (the contracts' descriptors)
import generated.shop.notification.v1.notification_pb2_grpc  # noqa: F401
import generated.shop.order.v1.order_pb2_grpc  # noqa: F401
from mesh.settings import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, Settings
from tests.conftest import ROOT
from tests.support.chart import CHART, EXAMPLES, component, helm, of_kind, pod_templates, render

EXAMPLES_BY_NAME = {p.stem: p for p in EXAMPLES}
VALUE_SETS = [pytest.param((), id="defaults"), *(pytest.param((p,), id=p.stem) for p in EXAMPLES)]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_helm_lint_strict_passes(values: tuple[Path, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for path in values:
        args += ["-f", str(path)]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_documented_example_is_there() -> None:
    assert {p.stem for p in EXAMPLES} == {"postgresql-external", "postgresql-bundled", "sqlite-single", "consul",
                                          "mtls-auth", "autoscaling"}


@pytest.mark.parametrize("values", VALUE_SETS)
def test_every_pod_is_non_root_read_only_without_capabilities_or_token(values: tuple[Path, ...]) -> None:
    docs = render(*values)
    templates = dict(pod_templates(docs))
    assert len(templates) >= 4
    for name, template in templates.items():
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], name
            # Whatever a process writes goes to a volume, not the read-only image.
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, name


@pytest.mark.parametrize("values", VALUE_SETS)
def test_secrets_come_only_from_secrets(values: tuple[Path, ...]) -> None:
    """A password, key or database URL is never a plain value: a secretKeyRef, or built from one."""
    for name, template in pod_templates(render(*values)):
        for container in template["spec"]["containers"]:
            from_secret = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
            for env in container["env"]:
                if re.search(r"PASSWORD|SECRET|API_KEYS|DATABASE_URL", env["name"]) and "value" in env:
                    if env["value"].startswith("sqlite"):
                        continue  # a file path, nothing secret
                    refs = set(re.findall(r"\$\((\w+)\)", env["value"]))
                    assert refs and refs <= from_secret, f"{name}: {env['name']} carries a plain value"


def test_the_rendered_manifest_is_fresh() -> None:
    result = subprocess.run([sys.executable, "scripts/render_manifests.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ports_and_health_names_are_the_codes() -> None:
    docs = render()
    for name, deployment in of_kind(docs, "Deployment").items():
        service = component(deployment)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports.get("grpc", ports.get("http")) == DEFAULT_PORTS[service], name
        if service != "gateway":
            assert ports["metrics"] == DEFAULT_METRICS_PORTS[service], name
            full_name = container["readinessProbe"]["grpc"]["service"]
            descriptor_pool.Default().FindServiceByName(full_name)  # raises if no contract has it
            assert full_name.split(".")[1] == service
            assert container["livenessProbe"]["grpc"]["service"] == "liveness"
            assert container["startupProbe"]["grpc"]["service"] == "liveness"
        assert container["command"] == ["python", "-m", service]


class _Recording(dict):  # type: ignore[type-arg]
    """An environment that remembers which names were asked for."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def test_every_setting_the_chart_sets_is_one_the_code_reads() -> None:
    """Settings.from_env reads the pod's environment: each SHOPMESH_* name the chart sets must be
    one it asks for (a misspelt name would be silently ignored), and the values must parse."""
    for values in [(), *((p,) for p in EXAMPLES)]:
        for name, template in pod_templates(render(*values)):
            container = template["spec"]["containers"][0]
            if container["name"] == "postgresql":
                continue
            stand_ins = {"SHOPMESH_API_KEYS": "key=user:admin", "SHOPMESH_ADVERTISE_HOST": "10.244.0.9"}
            url = "postgresql+asyncpg://shop:secret@db.example.com:5432/shop"
            env = _Recording({e["name"]: e.get("value", stand_ins.get(e["name"], url if e["name"].endswith("_URL")
                                                                   else "x" * 40)) for e in container["env"]})
            env["SHOPMESH_TLS_CA_FILE"] = env["SHOPMESH_TLS_CERT_FILE"] = env["SHOPMESH_TLS_KEY_FILE"] = ""
            env["SHOPMESH_DATABASE_PASSWORD"] = "secret"
            Settings.from_env(container["name"], env)
            ours = {key for key in env if key.startswith("SHOPMESH_")}
            # SHOPMESH_DATABASE_PASSWORD only feeds the URL (Kubernetes' $(VAR)); TLS paths are checked
            # by reading the files, which test_pod_specs does.
            unread = ours - env.asked - {"SHOPMESH_DATABASE_PASSWORD"}
            assert not unread, f"{name}: the code never reads {sorted(unread)}"


def test_grace_covers_drain_grace_and_closing() -> None:
    """The kubelet waits at least as long as a process may take by its own bounds, never less."""
    from mesh.server import lifecycle

    docs = render(sets=("shutdown.drainSeconds=20", "shutdown.graceSeconds=30"))
    most = lifecycle.NOT_READY_SECONDS + 20 + 30 + lifecycle.EXIT_MARGIN + lifecycle.WATCHDOG_SLACK
    for name, template in pod_templates(docs):
        if name.endswith("postgresql"):
            continue
        assert most <= template["spec"]["terminationGracePeriodSeconds"] <= most + 10, name


def test_headless_services_for_grpc_and_a_cluster_ip_for_the_gateway() -> None:
    services = of_kind(render(), "Service")
    for name in ("inventory", "order", "notification", "postgresql"):
        assert services[f"shopmesh-{name}"]["spec"]["clusterIP"] == "None", name
    assert services["shopmesh-gateway"]["spec"]["type"] == "ClusterIP"
    assert "clusterIP" not in services["shopmesh-gateway"]["spec"]
    addresses = {e["name"]: e["value"] for d in of_kind(render(), "Deployment").values()
                 for e in d["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"].endswith("_ADDR")}
    assert addresses["SHOPMESH_INVENTORY_ADDR"] == "shopmesh-inventory.default.svc.cluster.local:50051"


def test_one_disruption_budget_per_service_and_autoscalers_only_when_asked() -> None:
    defaults = render()
    assert set(of_kind(defaults, "PodDisruptionBudget")) == {f"shopmesh-{n}" for n in
                                                             ("inventory", "order", "notification", "gateway")}
    assert not of_kind(defaults, "HorizontalPodAutoscaler")
    scaled = render(CHART.parent / "examples" / "autoscaling.yaml")
    autoscalers = of_kind(scaled, "HorizontalPodAutoscaler")
    assert len(autoscalers) == 4
    for name, hpa in autoscalers.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert "replicas" not in of_kind(scaled, "Deployment")[name]["spec"], "the autoscaler owns replicas"


def test_sqlite_is_one_replica_with_a_volume_and_recreated() -> None:
    docs = render(CHART.parent / "examples" / "sqlite-single.yaml")
    claims = of_kind(docs, "PersistentVolumeClaim")
    for name in ("inventory", "order", "notification"):
        deployment = of_kind(docs, "Deployment")[f"shopmesh-{name}"]
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "two pods must never share the file"
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] in claims
    assert not of_kind(docs, "StatefulSet"), "no PostgreSQL on SQLite"


REFUSALS = [
    (("database.type=sqlite",), "inventory.replicas is 2 (autoscaling false) but database.type is sqlite"),
    (("database.type=sqlite", "inventory.replicas=1", "order.replicas=1", "notification.replicas=1",
      "order.autoscaling.enabled=true"), "order.replicas is 1 (autoscaling true) but database.type is sqlite"),
    (("database.type=mysql",), "at '/database/type': value must be one of 'postgresql', 'sqlite'"),
    (("inventory.replicas=-1",), "at '/inventory/replicas': minimum: got -1, want 0"),
    (("order.workers=0",), "at '/order/workers': minimum: got 0, want 1"),
    (("gateway.colour=red",), "at '/gateway': additional properties 'colour' not allowed"),
    (("discovery.type=consul",), "discovery.type is consul: set discovery.consul.address"),
    (("auth.enabled=true",), "auth.enabled needs auth.existingSecret"),
    (("postgresql.enabled=false",), "there is no server: set externalDatabase.existingSecret"),
    (("telemetry.otlpEndpoint=collector",), "at '/telemetry/otlpEndpoint'"),
    (("gateway.corsOrigins[0]=shop.example.com",), "at '/gateway/corsOrigins/0'"),
    (("tls.existingSecret=Not_A_Name",), "at '/tls/existingSecret'"),
]


@pytest.mark.parametrize(("sets", "message"), REFUSALS, ids=[r[1][:40] for r in REFUSALS])
def test_bad_values_are_refused_with_a_message_naming_them(sets: tuple[str, ...], message: str) -> None:
    args = ["template", "shopmesh", str(CHART)]
    for item in sets:
        args += ["--set", item]
    result = helm(*args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def _peers(rule: dict[str, Any]) -> set[str] | None:
    """The components a rule admits (None: anyone)."""
    peers = rule.get("from", rule.get("to"))
    if peers is None:
        return None
    found = set()
    for peer in peers:
        labels = peer.get("podSelector", {}).get("matchLabels", {})
        found.add(labels.get("app.kubernetes.io/name") or f"namespace:{peer}")
    return found


def test_network_policies_let_only_the_gateway_in_from_outside() -> None:
    docs = render(sets=("networkPolicy.metricsNamespace=monitoring",))
    policies = {p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: p
                for p in of_kind(docs, "NetworkPolicy").values()}
    assert set(policies) == {"inventory", "order", "notification", "gateway", "postgresql"}
    port_of = {**DEFAULT_PORTS, "postgresql": 5432}
    expected_callers = {"gateway": None, "order": {"gateway"}, "inventory": {"gateway", "order"},
                        "notification": {"gateway", "order"},
                        "postgresql": {"inventory", "order", "notification"}}
    for name, policy in policies.items():
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"], name
        main = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == port_of[name]]
        assert len(main) == 1 and _peers(main[0]) == expected_callers[name], name
        metrics = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] != port_of[name]]
        for rule in metrics:  # only from the namespace named
            assert rule["from"] == [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "monitoring"}}}], name
    egress = {name: {(r["ports"][0]["port"], frozenset(_peers(r) or ())) for r in p["spec"]["egress"]}
              for name, p in policies.items()}
    assert (53, frozenset()) in egress["order"]
    assert (50051, frozenset({"inventory"})) in egress["order"] and (50053, frozenset({"notification"})) in egress["order"]
    assert (5432, frozenset({"postgresql"})) in egress["inventory"]
    assert not any(port == 50052 for port, _ in egress["inventory"]), "inventory calls nobody"
    assert policies["postgresql"]["spec"]["egress"] == []


def test_mtls_probes_present_the_pods_own_certificate() -> None:
    docs = render(CHART.parent / "examples" / "mtls-auth.yaml")
    for name, deployment in of_kind(docs, "Deployment").items():
        service = component(deployment)
        spec = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert [i["key"] for i in volumes["tls"]["secret"]["items"]] == ["ca.pem", f"{service}.pem",
                                                                         f"{service}-key.pem"], name
        if service == "gateway":
            continue
        command = spec["containers"][0]["readinessProbe"]["exec"]["command"]
        assert command[0] == "grpc-health-probe" and f"-tls-client-cert=/etc/shopmesh/tls/{service}.pem" in command


def test_operations_pieces_are_there_when_asked() -> None:
    """Scrape annotations and spread over nodes and zones by default; the Ingress, the
    ServiceMonitors and the OTLP endpoint when an example asks for them."""
    for name, template in pod_templates(render()):
        if name.endswith("postgresql"):
            continue
        annotations = template["metadata"]["annotations"]
        container = template["spec"]["containers"][0]
        ports = {p["containerPort"] for p in container["ports"]}
        assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) in ports
        keys = [c["topologyKey"] for c in template["spec"]["topologySpreadConstraints"]]
        assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"], name
        assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in template["spec"]["topologySpreadConstraints"])
    secured = render(CHART.parent / "examples" / "mtls-auth.yaml")
    ingress = of_kind(secured, "Ingress")["shopmesh-gateway"]["spec"]
    assert ingress["rules"][0]["host"] == "shop.example.com" and ingress["tls"][0]["secretName"] == "shop-example-com-tls"
    monitors = of_kind(secured, "ServiceMonitor")
    assert len(monitors) == 4 and all(m["metadata"]["labels"]["release"] == "prometheus" for m in monitors.values())
    assert not of_kind(render(), "Ingress") and not of_kind(render(), "ServiceMonitor")
    traced = render(CHART.parent / "examples" / "autoscaling.yaml")
    for name, template in pod_templates(traced):
        if name.endswith("postgresql"):
            continue
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert env["SHOPMESH_TRACE_EXPORTER"] == "otlp"
        assert env["SHOPMESH_OTLP_ENDPOINT"] == "otel-collector.observability.svc:4317"


def test_workers_per_pod_come_from_values_and_reach_every_container() -> None:
    seen = set()
    for _, template in pod_templates(render(sets=("inventory.workers=4",))):
        name = template["metadata"]["labels"]["app.kubernetes.io/name"]
        for container in template["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if "SHOPMESH_WORKERS" in env:
                seen.add(name)
                assert env["SHOPMESH_WORKERS"] == ("4" if name == "inventory" else "1"), (name, env)
    assert seen == {"gateway", "inventory", "order", "notification"}


def test_a_pooler_in_transaction_mode_is_said_to_every_service_with_a_database() -> None:
    def env(sets: tuple[str, ...]) -> dict[str, dict[str, str]]:
        docs = render(EXAMPLES_BY_NAME["postgresql-external"], sets=sets)
        return {name: {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
                for name, pod in pod_templates(docs)}

    direct, pooled = env(()), env(("externalDatabase.pooler=transaction", "database.poolSize=4"))
    for name in ("shopmesh-inventory", "shopmesh-order", "shopmesh-notification"):
        assert "SHOPMESH_DATABASE_POOLER" not in direct[name] and direct[name]["SHOPMESH_DATABASE_POOL_SIZE"] == "10"
        assert pooled[name]["SHOPMESH_DATABASE_POOLER"] == "transaction", pooled[name]
        assert pooled[name]["SHOPMESH_DATABASE_POOL_SIZE"] == "4"
        Settings.from_env(name.removeprefix("shopmesh-"), {k: v for k, v in pooled[name].items() if v is not None})
    assert "SHOPMESH_DATABASE_POOLER" not in pooled["shopmesh-gateway"]
