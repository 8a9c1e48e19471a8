"""The chart on a real Kubernetes (tests/support/cluster.py): `helm install --wait` succeeds
because the kubelet ran our gRPC probes against our containers; then, through the gateway's
Service, an order is placed and notified, a deleted pod is replaced with no failed request, a
rolling update of order under load fails no request, inventory scaled to 3 gets calls on
all three (headless DNS + the servers' maximum connection age), and the gateway's autoscaler,
reading metrics-server, adds a pod under load and removes it after."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import needed
from tests.support.chart import CHART
from tests.support.cluster import Cluster, images_built
from tests.support.http import Http
from tests.support.waiting import eventually

MAX_AGE = 5  # grpc.maxConnectionAgeSeconds here: how soon clients see a new pod
VALUES = [
    "image.repository=localhost/shopmesh", "image.tag=local", "image.pullPolicy=Never",
    "postgresql.image.repository=localhost/postgres", "postgresql.image.tag=15-bookworm",
    "postgresql.image.pullPolicy=Never", f"grpc.maxConnectionAgeSeconds={MAX_AGE}",
    "shutdown.drainSeconds=3", "shutdown.graceSeconds=5",
    # Two cores for nine pods: requests small enough that the scheduler places them all.
    *(f"{name}.resources.requests.cpu=50m" for name in ("gateway", "inventory", "order", "notification")),
    "postgresql.resources.requests.cpu=50m",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        needed("root (containerd, the pods' bridge)", "run the suite as root, as CI does")
    for command, package in (("containerd", "containerd"), ("runc", "runc"), ("podman", "podman"),
                             ("nft", "nftables"), ("mmdebstrap", "mmdebstrap")):
        if shutil.which(command) is None:  # skips here, fails in CI (tests/conftest.py)
            needed(command, f"apt-get install {package} (scripts/test.sh does)")
    images_built()
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        started = time.monotonic()
        cluster.start()
        print(f"cluster up in {time.monotonic() - started:.0f}s")
        args = ["install", "shopmesh", str(CHART), "--wait", "--timeout", "6m"]
        for item in VALUES:
            args += ["--set", item]
        started = time.monotonic()
        result = cluster.helm(*args, check=False)
        assert result.returncode == 0, result.stdout + result.stderr + _diagnose(cluster)
        print(f"helm install --wait took {time.monotonic() - started:.0f}s")
        # NOTES.txt, as Helm shows it to whoever installed: how to reach the shop and scale it.
        assert "kubectl port-forward -n default svc/shopmesh-gateway 8080:80" in result.stdout, result.stdout
        assert "kubectl scale -n default deploy/shopmesh-inventory" in result.stdout
        yield cluster
    finally:
        cluster.stop()


def _diagnose(cluster: Cluster) -> str:
    pods = cluster.kubectl("get", "pods", "-o", "wide", check=False).stdout
    events = cluster.kubectl("get", "events", "--sort-by=.lastTimestamp", check=False).stdout[-4000:]
    return f"\n--- pods ---\n{pods}\n--- events ---\n{events}"


class Shop(Http):
    """The gateway's Service: its virtual IP (kube-proxy), or `kubectl port-forward` on 127.0.0.1."""

    def product(self, stock: int) -> str:
        sku = f"k8s-{uuid.uuid4().hex[:8]}"
        status, _, body = self.call("POST", "/v1/products", {
            "sku": sku, "name": "Cluster mug", "price": {"currencyCode": "USD", "minorUnits": "900"},
            "available": stock})
        assert status == 200, body
        return sku

    def order(self, sku: str, user: str) -> tuple[int, dict[str, str], Any]:
        return self.call("POST", "/v1/orders", {"requestId": str(uuid.uuid4()), "userId": user,
                                                "lines": [{"sku": sku, "quantity": 1}]})


@pytest.fixture(scope="module")
def shop(cluster: Cluster) -> Shop:
    return Shop(f"{cluster.service_ip('shopmesh-gateway')}:80")


def test_the_shop_is_reachable_as_notes_txt_says_through_port_forward(cluster: Cluster) -> None:
    with cluster.port_forward("svc/shopmesh-gateway", 80) as port:
        status, _, ready = Shop(f"127.0.0.1:{port}").call("GET", "/readyz")
    assert status == 200 and ready["ready"] is True, ready


class Load:
    """Orders and reads at a steady pace from two threads; every answer that is not 2xx is kept."""

    def __init__(self, shop: Shop, sku: str):
        self.shop, self.sku = shop, sku
        self.done = threading.Event()
        self.sent = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(kind,), daemon=True) for kind in ("order", "read")]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def _run(self, kind: str) -> None:
        while not self.done.is_set():
            try:
                if kind == "order":
                    status, _, body = self.shop.order(self.sku, "load")
                else:
                    status, _, body = self.shop.call("GET", f"/v1/products/{self.sku}")
            except OSError as error:
                status, body = 0, str(error)
            self.sent += 1
            if not 200 <= status < 300:
                self.failures.append(f"{kind}: {status} {body}")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(30)


def test_helm_install_waited_for_the_kubelets_grpc_probes(cluster: Cluster) -> None:
    for name in ("inventory", "order", "notification", "gateway"):
        assert len(cluster.ready_pods(name)) == 2, name
        deployment = cluster.get("deployment", f"shopmesh-{name}")
        probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        assert ("grpc" in probe) == (name != "gateway"), name
    assert len(cluster.ready_pods("postgresql")) == 1
    # The kubelet's own count of the probes it ran, by kind and result.
    metrics = cluster.kubectl("get", "--raw", "/api/v1/nodes/shopmesh-node/proxy/metrics/probes").stdout
    for kind in ("Startup", "Readiness", "Liveness"):
        ran = [line for line in metrics.splitlines() if line.startswith("prober_probe_total")
               and f'probe_type="{kind}"' in line and 'container="inventory"' in line
               and 'result="successful"' in line]
        assert ran and float(ran[0].rsplit(" ", 1)[1]) > 0, kind
    policies = cluster.get("networkpolicies")["items"]  # the API server accepted all five
    assert len(policies) == 5


def test_an_order_is_placed_and_its_notification_arrives(shop: Shop) -> None:
    sku = shop.product(stock=5)
    user = f"k8s-{uuid.uuid4().hex[:6]}"
    status, _, order = shop.order(sku, user)
    assert status == 200, order
    assert order["status"] == "CONFIRMED", order

    def notified() -> bool:
        status, _, page = shop.call("GET", f"/v1/users/{user}/notifications")
        assert status == 200, page
        return any(order["orderId"] in json.dumps(n) for n in page.get("notifications", []))

    eventually(notified, timeout=30, every=0.5, what=f"a notification for {order['orderId']}")
    assert shop.call("GET", f"/v1/products/{sku}")[2]["available"] == "4"  # int64: a JSON string


# What a pod runs to learn which of "ip:port" it can open a TCP connection to (3 s each).
PROBE = """
import json, socket, sys
reached = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        reached[target] = True
    except OSError:
        reached[target] = False
print(json.dumps(reached))
"""


def _endpoint(cluster: Cluster, component: str) -> str:
    pod = cluster.ready_pods(component)[0]
    return f"{pod['status']['podIP']}:{pod['spec']['containers'][0]['ports'][0]['containerPort']}"


def _stranger_reaches(cluster: Cluster, *targets: str) -> dict[str, bool]:
    """Which targets a pod of no component of ours (its own labels, our image) can connect to."""
    name = f"stranger-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("run", name, "--image=localhost/shopmesh:local", "--image-pull-policy=Never", "--restart=Never",
                    "--labels=app=stranger", "--command", "--", "python", "-c", PROBE, *targets)
    try:
        eventually(lambda: cluster.get("pod", name)["status"].get("phase") in ("Succeeded", "Failed"), timeout=90,
                   every=1, what=f"pod {name} done", detail=lambda: _diagnose(cluster))
        return json.loads(cluster.kubectl("logs", name).stdout.strip().splitlines()[-1])
    finally:
        cluster.kubectl("delete", "pod", name, "--wait=false", check=False)


def test_network_policies_are_enforced_a_stranger_reaches_only_the_gateway(cluster: Cluster) -> None:
    """kube-router enforces the chart's NetworkPolicies: a pod the chart does not name reaches the
    gateway (open to all) but not order, inventory, notification or PostgreSQL; the gateway reaches
    order. Order's policy deleted, the stranger reaches order: the policy is what stopped it."""
    gateway, order, inventory, notification, database = (
        _endpoint(cluster, c) for c in ("gateway", "order", "inventory", "notification", "postgresql"))
    reached = _stranger_reaches(cluster, gateway, order, inventory, notification, database)
    assert reached == {gateway: True, order: False, inventory: False, notification: False, database: False}, reached
    pod = cluster.ready_pods("gateway")[0]["metadata"]["name"]
    from_gateway = cluster.kubectl("exec", pod, "--", "python", "-c", PROBE, order, notification).stdout
    assert json.loads(from_gateway) == {order: True, notification: True}, from_gateway
    saved = cluster.get("networkpolicy", "shopmesh-order")
    cluster.kubectl("delete", "networkpolicy", "shopmesh-order")
    try:
        eventually(lambda: _stranger_reaches(cluster, order) == {order: True}, timeout=60, every=1,
                   what="the stranger reaching order once order's policy is gone")
    finally:
        kept = {k: v for k, v in saved["metadata"].items() if k in ("name", "namespace", "labels", "annotations")}
        restored = {k: v for k, v in saved.items() if k != "status"}
        created = cluster.kubectl("create", "-f", "-", input=json.dumps({**restored, "metadata": kept}), check=False)
        assert created.returncode == 0, created.stderr
    eventually(lambda: _stranger_reaches(cluster, order) == {order: False}, timeout=60, every=1,
               what="the stranger shut out of order again with the policy back")


@pytest.mark.parametrize("component", ["inventory", "gateway"])
def test_a_deleted_pod_is_replaced_with_no_failed_request(cluster: Cluster, shop: Shop, component: str) -> None:
    """A gRPC service's pod (its clients re-resolve the headless name) and a gateway pod (the
    Service's virtual IP moves to the other) go under load, drain, and are replaced."""
    sku = shop.product(stock=100_000)
    victim = cluster.ready_pods(component)[0]["metadata"]["name"]
    with Load(shop, sku) as load:
        time.sleep(2)
        cluster.kubectl("delete", "pod", victim, "--wait=true", timeout=60)
        eventually(lambda: len(cluster.ready_pods(component)) == 2, timeout=120, every=1,
                   what=f"a second ready {component} pod in place of the deleted one")
        time.sleep(MAX_AGE * 1.1 + 2)  # and the new pod takes calls
    assert victim not in {p["metadata"]["name"] for p in cluster.ready_pods(component)}
    assert load.sent > 50
    assert not load.failures, load.failures[:5]


def test_a_rolling_update_of_order_under_load_fails_no_request(cluster: Cluster, shop: Shop) -> None:
    sku = shop.product(stock=100_000)
    before = {p["metadata"]["name"] for p in cluster.ready_pods("order")}
    with Load(shop, sku) as load:
        time.sleep(2)
        cluster.kubectl("rollout", "restart", "deployment/shopmesh-order")
        cluster.kubectl("rollout", "status", "deployment/shopmesh-order", "--timeout=180s", timeout=200)
        time.sleep(MAX_AGE * 1.1 + 2)
    after = {p["metadata"]["name"] for p in cluster.ready_pods("order")}
    assert not before & after, "every order pod was replaced"
    assert load.sent > 50
    assert not load.failures, load.failures[:5]


def _list_calls(cluster: Cluster, pod: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(cluster.pod_metrics(pod, 9101)) for s in f.samples
               if s.name == "grpc_server_started_total" and s.labels.get("grpc_method") == "ListProducts")


def test_inventory_scaled_to_three_gets_calls_on_all_three(cluster: Cluster, shop: Shop) -> None:
    cluster.kubectl("scale", "deployment/shopmesh-inventory", "--replicas=3")
    eventually(lambda: len(cluster.ready_pods("inventory")) == 3, timeout=120, every=1,
               what="3 ready inventory pods", detail=lambda: _diagnose(cluster))
    pods = [p["metadata"]["name"] for p in cluster.ready_pods("inventory")]
    before = {pod: _list_calls(cluster, pod) for pod in pods}
    scaled = time.monotonic()
    while True:
        for _ in range(30):
            assert shop.call("GET", "/v1/products?pageSize=1")[0] == 200
        grown = {pod: _list_calls(cluster, pod) - before[pod] for pod in pods}
        if all(n > 0 for n in grown.values()):
            break
        bound = MAX_AGE * 1.1 + 10
        assert time.monotonic() - scaled < bound, f"not every pod got calls within {bound:.0f}s: {grown}"
    print(f"all three inventory pods called {time.monotonic() - scaled:.1f}s after the third was ready: {grown}")


def test_helm_refuses_bad_values_against_the_cluster(cluster: Cluster) -> None:
    result = cluster.helm("install", "bad", str(CHART), "--set", "database.type=sqlite", check=False)
    assert result.returncode != 0
    assert "database.type is sqlite" in result.stderr and "inventory.replicas is 2" in result.stderr
    result = cluster.helm("install", "bad", str(CHART), "--set", "discovery.type=etcd", check=False)
    assert "at '/discovery/type'" in result.stderr
    assert "bad" not in cluster.helm("list", "-q").stdout.split()


def _autoscaler(cluster: Cluster) -> dict[str, Any]:
    return cluster.get("hpa", "shopmesh-gateway")


def test_the_gateways_autoscaler_adds_a_pod_under_load_and_removes_it_after(cluster: Cluster, shop: Shop) -> None:
    """The chart's HorizontalPodAutoscaler for real: the controller manager reads the gateway pods'
    CPU from metrics-server (metrics.k8s.io, through the API server's aggregation layer), wrk's
    load takes the gateway from one pod to two, and once wrk stops it goes back to one, while a
    polite client's requests, all along, all succeed."""
    eventually(lambda: cluster.pod_cpu("gateway"), timeout=120, every=2,
               what="the gateway pods' CPU from metrics-server", detail=cluster.metrics_server_state)
    upgrade = cluster.helm(
        "upgrade", "shopmesh", str(CHART), "--reuse-values", "--wait", "--timeout", "4m",
        "--set", "gateway.autoscaling.enabled=true", "--set", "gateway.autoscaling.minReplicas=1",
        "--set", "gateway.autoscaling.maxReplicas=2", "--set", "gateway.autoscaling.targetCPUUtilizationPercentage=50",
        "--set", "gateway.autoscaling.scaleDownStabilizationSeconds=15",
        # What the utilisation is a share of: enough that the polite client alone stays under it.
        "--set", "gateway.resources.requests.cpu=200m", check=False)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr + _diagnose(cluster)
    eventually(lambda: _autoscaler(cluster)["status"].get("currentMetrics") and len(cluster.ready_pods("gateway")) == 1,
               timeout=180, every=2, what="the autoscaler reading the CPU of one gateway pod",
               detail=lambda: json.dumps(_autoscaler(cluster)["status"]) + _diagnose(cluster))
    sku = shop.product(stock=100_000)
    with Load(shop, sku) as polite:
        wrk = subprocess.Popen(["wrk", "-t2", "-c16", "-d300s", f"http://{shop.address}/v1/products/{sku}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            started = time.monotonic()
            eventually(lambda: len(cluster.ready_pods("gateway")) == 2, timeout=240, every=2,
                       what="a second gateway pod, ready, under load",
                       detail=lambda: json.dumps(_autoscaler(cluster)["status"]) + str(cluster.pod_cpu("gateway")))
            print(f"scaled up {time.monotonic() - started:.0f}s into the load; CPU {cluster.pod_cpu('gateway')}")
        finally:
            wrk.send_signal(signal.SIGINT)  # wrk's own stop: it prints what it sent
            print(wrk.communicate(timeout=30)[0][-600:])
        stopped = time.monotonic()
        eventually(lambda: len(cluster.ready_pods("gateway")) == 1
                   and cluster.get("deployment", "shopmesh-gateway")["spec"]["replicas"] == 1,
                   timeout=240, every=2, what="the gateway back at one pod once the load stopped",
                   detail=lambda: json.dumps(_autoscaler(cluster)["status"]) + str(cluster.pod_cpu("gateway")))
        print(f"scaled down {time.monotonic() - stopped:.0f}s after the load stopped")
        time.sleep(MAX_AGE)  # and it keeps serving
    assert polite.sent > 100
    assert not polite.failures, polite.failures[:5]
    events = cluster.kubectl("get", "events", "--field-selector", "involvedObject.kind=HorizontalPodAutoscaler").stdout
    assert "New size: 2" in events and "New size: 1" in events, events


pytestmark = pytest.mark.timeout(1200)  # the cluster and the release come up in the first test's time
