"""What operators are given, read by the program it is written for: a real Prometheus (built from
its Go module by scripts/install-tools.sh) scrapes the mesh through a real Consul agent with the
scrape configuration we ship (deploy/prometheus/prometheus.yml, rendered for this test's ports),
evaluates the rules we ship (deploy/prometheus/rules.yml, also unit-tested with promtool), answers
every query of the Grafana dashboard after real traffic, and fires the alerts when real parts
fail."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from mesh import topology
from scripts.render_manifests import prometheus as scrape_configuration
from tests.conftest import ROOT, tool
from tests.support.consul import Agent
from tests.support.http import Http
from tests.support.mesh import Mesh
from tests.support.prometheus import Prometheus
from tests.support.waiting import eventually

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))


def promtool(*args: str) -> str:
    done = subprocess.run([tool("promtool"), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_rules_are_valid_and_pass_their_unit_tests() -> None:
    assert "SUCCESS: 23 rules found" in promtool("check", "rules", str(RULES))
    assert "SUCCESS" in promtool("test", "rules", str(RULES.with_name("rules_test.yml")))


def test_the_shipped_scrape_configuration_is_what_prometheus_accepts(tmp_path: Path) -> None:
    shipped = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert shipped == scrape_configuration(topology.load()), "run scripts/render_manifests.py"
    config = tmp_path / "prometheus.yml"
    config.write_text(scrape_configuration(topology.load(), rules=str(RULES)))
    assert "SUCCESS" in promtool("check", "config", str(config))


class Observed:
    """The mesh on a real Consul agent, a second inventory with SHOPMESH_WORKERS=2, a gateway, and
    Prometheus scraping them all with the shipped configuration."""

    def __init__(self, folder: Path):
        self.agent = Agent(folder)
        self.mesh = Mesh(folder, settings={"SHOPMESH_DISCOVERY": "consul", "SHOPMESH_CONSUL_ADDR": self.agent.address,
                                           "SHOPMESH_CONSUL_CHECK_INTERVAL_SECONDS": "1",
                                           "SHOPMESH_OUTBOX_INTERVAL_SECONDS": "0.5"})
        self.prometheus: Prometheus | None = None

    def start(self) -> None:
        self.agent.start()
        for name, service, extra in (("inventory-1", "inventory", {}), ("inventory-2", "inventory",
                                                                        {"SHOPMESH_WORKERS": "2"}),
                                     ("notification-1", "notification", {}), ("order-1", "order", {})):
            self.mesh.start(service, name=name, **extra)
        self.mesh.start("gateway")
        config = scrape_configuration(topology.load(), consul=self.agent.address,
                                      hosts={"gateway": self.mesh.address("gateway")}, rules=str(RULES))
        self.prometheus = Prometheus(tool("prometheus"), self.mesh.data_dir / "prometheus", config)
        self.prometheus.start()

    def stop(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()
        self.mesh.stop_all()
        self.agent.stop()


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    found = Observed(tmp_path_factory.mktemp("observed"))
    try:
        found.start()
        yield found
    finally:
        found.stop()


def up_targets(prometheus: Prometheus) -> dict[str, str]:
    return {t["labels"].get("instance", ""): t["health"] for t in prometheus.targets()}


def test_prometheus_scrapes_every_instance_through_consul_and_each_reports_its_process(observed: Observed) -> None:
    prometheus = observed.prometheus
    assert prometheus is not None
    eventually(lambda: len(up_targets(prometheus)) == 5 and set(up_targets(prometheus).values()) == {"up"}, 60,
               "five targets up (two inventories, notification, order, the gateway)",
               detail=lambda: json.dumps(prometheus.targets(), indent=1)[-3000:])
    services = {t["labels"]["service"] for t in prometheus.targets()}
    assert services == {"inventory", "order", "notification", "gateway"}
    # Every target, the two-worker inventory too, reports the process_* series.
    with_cpu = eventually(lambda: {s["metric"]["instance"] for s in prometheus.query("process_cpu_seconds_total > 0")}
                          if len(prometheus.query("process_cpu_seconds_total > 0")) == 5 else None, 30,
                          "process_cpu_seconds_total from all five targets")
    assert with_cpu == set(up_targets(prometheus))
    [workers] = prometheus.query('process_workers{service="inventory"}')
    assert workers["value"][1] == "2"


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, query) of every panel, the dashboard's $service as any service."""
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((path.name, panel["title"], re.sub(r"\$service\b", ".*", target["expr"])))
    return found


def new_product(observed: Observed, name: str, stock: int) -> str:
    sku = f"prom-{uuid.uuid4().hex[:6]}"
    with grpc.insecure_channel(f"127.0.0.1:{observed.mesh.port('inventory-1')}") as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).CreateProduct(inventory_pb2.CreateProductRequest(
            product=inventory_pb2.Product(sku=sku, name=name, available=stock,
                                          price=money_pb2.Money(currency_code="USD", minor_units=500))))
    return sku


def traffic(observed: Observed) -> None:
    """Orders through the gateway (one refused), a product not found, a cancel: every kind of
    series the dashboard reads moves."""
    sku = new_product(observed, "Observed", 50)
    gateway = Http(observed.mesh.address("gateway"))
    for i in range(10):
        status, _, body = gateway.call("POST", "/v1/orders", {"requestId": str(uuid.uuid4()), "userId": f"prom-{i}",
                                                              "lines": [{"sku": sku, "quantity": 1}]})
        assert status == 200, body
    assert gateway.call("POST", "/v1/orders", {"requestId": str(uuid.uuid4()), "userId": "prom-x",
                                               "lines": [{"sku": sku, "quantity": 1000}]})[0] == 400
    assert gateway.call("GET", "/v1/products/no-such-sku")[0] == 404
    assert gateway.call("POST", f"/v1/orders/{body['orderId']}:cancel", {"reason": "observed"})[0] == 200


def test_every_dashboard_panel_answers_after_real_traffic(observed: Observed) -> None:
    prometheus = observed.prometheus
    assert prometheus is not None and DASHBOARDS
    traffic(observed)
    queries = panel_queries()
    assert len(queries) >= 15, queries

    def empty() -> list[str]:
        return [f"{name}: {title}: {expr}" for name, title, expr in queries if not prometheus.query(expr)]

    # rate() needs two scrapes after the series moved; the scrape interval is 5 s.
    deadline = time.monotonic() + 60
    while (left := empty()) and time.monotonic() < deadline:
        time.sleep(2)
    assert not left, "panels whose query returns nothing (a metric nobody exports?):\n" + "\n".join(left)


def test_real_failures_fire_the_alerts(observed: Observed) -> None:
    """Notification stopped, so the outbox grows past 20; then every inventory stopped: the
    outbox and service-down alerts fire in the running Prometheus (their `for` and windows are
    minutes: this test waits them out)."""
    prometheus = observed.prometheus
    assert prometheus is not None
    assert "ShopmeshServiceDown" not in prometheus.firing()
    observed.mesh.stop("notification-1")
    traffic_without_notices = 30
    sku = new_product(observed, "Backlog", 100)
    gateway = Http(observed.mesh.address("gateway"))
    for i in range(traffic_without_notices):
        status, _, body = gateway.call("POST", "/v1/orders", {"requestId": str(uuid.uuid4()), "userId": f"late-{i}",
                                                              "lines": [{"sku": sku, "quantity": 1}]})
        assert status == 200, body  # an order stands while notification is down
    for name in ("inventory-1", "inventory-2"):
        observed.mesh.stop(name)

    def fired() -> dict[str, list[dict]] | None:
        now = prometheus.firing()
        down = {labels["service"] for labels in now.get("ShopmeshServiceDown", [])}
        return now if {"inventory", "notification"} <= down and "ShopmeshOutboxBehind" in now else None

    now = eventually(fired, 240, "ShopmeshServiceDown (inventory, notification) and ShopmeshOutboxBehind firing",
                     every=5, detail=lambda: json.dumps(prometheus.api("alerts"), indent=1)[-3000:])
    assert {labels["service"] for labels in now["ShopmeshOutboxBehind"]} == {"order"}
    assert "order" not in {labels["service"] for labels in now["ShopmeshServiceDown"]}
