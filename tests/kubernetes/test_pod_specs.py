"""The chart's pod specs are real, even without a node: each container of a rendered release runs
as a local process from the checkout with exactly its command, environment and ports, and is
probed exactly as the kubelet would from its probe stanzas. So every env name, port and probe
in the chart is one the code reads and answers.

What the kubelet would provide, the test stands in for: each pod gets its own loopback address
(its pod IP) in place of 0.0.0.0, a DNS server of the test's (dnslib) answers the Services'
names with those addresses, volumes are folders (their mount paths mapped in the environment),
Secrets come from a dict, and `$(VAR)` references are expanded by the kubelet's rule.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, tool
from tests.support.chart import CHART, component, of_kind, render
from tests.support.consul import Agent
from tests.support.dns import Answers
from tests.support.http import Http, call
from tests.support.waiting import settled

NOT_SERVING_EXIT = 4
POD_IPS = {"inventory": "127.0.0.11", "order": "127.0.0.12", "notification": "127.0.0.13", "gateway": "127.0.0.14"}


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: earlier variables only; $$ escapes; unknown ones stay."""
    return re.sub(r"\$\$|\$\((\w+)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def local_paths(value: str, mounts: dict[str, Path]) -> str:
    """`value` with each volume's mount path (where it starts a path) replaced by its folder, in one pass."""
    if not mounts:
        return value
    pattern = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
    return re.sub(rf"(?<![\w.])({pattern})(?=/|$)", lambda m: str(mounts[m.group(1)]), value)


@dataclass
class Pod:
    name: str
    ip: str
    container: dict[str, Any]
    process: subprocess.Popen
    mounts: dict[str, Path]

    def local(self, value: str) -> str:
        return local_paths(value, self.mounts)

    def probe(self, kind: str) -> int:
        """Runs the container's `kind` probe once, as the kubelet does; 0 is success."""
        stanza = self.container[kind]
        timeout = str(stanza.get("timeoutSeconds", 1))
        if "grpc" in stanza:
            return subprocess.run(
                [tool("grpc-health-probe"), f"-addr={self.ip}:{stanza['grpc']['port']}",
                 f"-service={stanza['grpc'].get('service', '')}", f"-connect-timeout={timeout}s",
                 f"-rpc-timeout={timeout}s"], capture_output=True, timeout=30).returncode
        if "httpGet" in stanza:
            ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
            port = stanza["httpGet"]["port"]
            try:
                status = call(f"{self.ip}:{ports.get(port, port)}", "GET", stanza["httpGet"]["path"],
                              timeout=float(timeout))[0]
            except OSError:
                return -1
            return 0 if 200 <= status < 400 else status
        command = [self.local(part) for part in stanza["exec"]["command"]]
        command = [part.replace("127.0.0.1:", f"{self.ip}:") for part in command]
        if command[0] == "grpc-health-probe":
            command[0] = tool("grpc-health-probe")
        return subprocess.run(command, capture_output=True, timeout=30).returncode

    def until(self, kind: str, want: int = 0) -> None:
        stanza = self.container[kind]
        budget = stanza.get("periodSeconds", 10) * stanza.get("failureThreshold", 3) + 5

        def result() -> int:
            assert self.process.poll() is None, f"{self.name} exited with {self.process.returncode}"
            return self.probe(kind)

        settled(result, lambda got: got == want, timeout=budget, every=0.3, what=f"{self.name}'s {kind} to give {want}")


def _env(container: dict[str, Any], pod: str, ip: str, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[item["name"]] = {"metadata.name": pod, "status.podIP": ip}[source["fieldRef"]["fieldPath"]]
        else:
            ref = source["secretKeyRef"]
            value = secrets.get(ref["name"], {}).get(ref["key"])
            if value is None:
                assert ref.get("optional"), f"{pod}: Secret {ref['name']} has no key {ref['key']}"
                continue
            env[item["name"]] = value
    return env


def _start(docs: list[dict[str, Any]], home: Path, dns_port: int, secrets: dict[str, dict[str, str]],
           files: dict[str, dict[str, Path]]) -> dict[str, Pod]:
    pods = {}
    for deployment in of_kind(docs, "Deployment").values():
        name = component(deployment)
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        pod_name = f"{deployment['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        ip = POD_IPS[name]
        mounts = {}
        for mount in container["volumeMounts"]:
            volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            folder = home / name / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:  # the Secret's items, as files
                for item in volume["secret"]["items"]:
                    (folder / item["path"]).write_bytes(files[volume["secret"]["secretName"]][item["key"]].read_bytes())
            mounts[mount["mountPath"]] = folder
        env = {key: "" for key in os.environ if key.startswith("SHOPMESH_")}  # nothing of ours leaks in
        declared = _env(container, pod_name, ip, secrets)
        for key, value in declared.items():
            env[key] = local_paths(value, mounts)
        assert declared["SHOPMESH_HOST"] == "0.0.0.0"
        env.update(SHOPMESH_HOST=ip, SHOPMESH_DNS_SERVER=f"127.0.0.1:{dns_port}")  # pod IP; cluster DNS
        command = container["command"]
        assert command[0] == "python", command
        log = home / f"{name}.log"
        process = subprocess.Popen([sys.executable, *command[1:]], cwd=ROOT, env={**os.environ, **env},
                                   stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        pods[name] = Pod(pod_name, ip, container, process, mounts)
    return pods


@pytest.fixture
def stopper() -> Iterator[list[Pod]]:
    started: list[Pod] = []
    yield started
    for pod in started:
        if pod.process.poll() is None:
            pod.process.kill()
        pod.process.wait(10)


SQLITE = ("database.type=sqlite", "inventory.replicas=1", "order.replicas=1", "notification.replicas=1")
CASES = {
    "sqlite-single": ((CHART.parent / "examples" / "sqlite-single.yaml",), ()),
    "mtls-auth": ((CHART.parent / "examples" / "mtls-auth.yaml",), SQLITE),
    "consul": ((CHART.parent / "examples" / "consul.yaml",), SQLITE),  # + the agent's address, below
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_container_runs_answers_its_probes_and_drains_as_the_kubelet_expects(
        case: str, dns_server: tuple[Answers, int], tmp_path: Path, stopper: list[Pod]) -> None:
    answers, dns_port = dns_server
    values, sets = CASES[case]
    with contextlib.ExitStack() as stack:
        if case == "consul":  # a real agent: the pods register with it and find each other there
            (tmp_path / "consul").mkdir()
            agent = Agent(tmp_path / "consul")
            agent.start()
            stack.callback(agent.stop)
            sets = (*sets, f"discovery.consul.address={agent.address}")
        else:
            agent = None
        _run_release(case, render(*values, sets=sets), answers, dns_port, tmp_path, stopper, agent)


def _run_release(case: str, docs: list[dict[str, Any]], answers: Answers, dns_port: int, tmp_path: Path,
                 stopper: list[Pod], agent: Agent | None) -> None:
    for name, ip in POD_IPS.items():
        answers.set(f"shopmesh-{name}.default.svc.cluster.local.", ip)
    secrets: dict[str, dict[str, str]] = {}
    files: dict[str, dict[str, Path]] = {}
    if case == "mtls-auth":
        certs = tmp_path / "certs"
        subprocess.run([sys.executable, "scripts/make_certs.py", "--out", str(certs)], cwd=ROOT, check=True,
                       capture_output=True)
        files["shopmesh-tls"] = {p.name: p for p in certs.iterdir()}
        secrets["shopmesh-auth"] = {"api-keys": "pod-spec-key=ops:admin", "jwt-secret": "x" * 40}
    pods = _start(docs, tmp_path, dns_port, secrets, files)
    stopper.extend(pods.values())
    for pod in pods.values():
        pod.until("startupProbe")
    for pod in pods.values():
        pod.until("readinessProbe")
        assert pod.probe("livenessProbe") == 0, pod.name

    # The wiring the env describes works: an order through the gateway reaches inventory and
    # order, and its notification is listed.
    gateway = Http(f"{POD_IPS['gateway']}:8080")
    headers = {"x-api-key": "pod-spec-key"} if case == "mtls-auth" else {}
    sku = f"pod-{uuid.uuid4().hex[:6]}"
    status, _, product = gateway.call("POST", "/v1/products", {
        "sku": sku, "name": "Pod mug", "available": 3, "price": {"currencyCode": "USD", "minorUnits": "500"}},
        headers)
    assert status == 200, product
    status, _, order = gateway.call("POST", "/v1/orders", {"requestId": str(uuid.uuid4()), "userId": "ops",
                                                           "lines": [{"sku": sku, "quantity": 1}]}, headers)
    assert status == 200 and order["status"] == "CONFIRMED", order
    if agent is not None:  # the order went through instances found in Consul's catalog
        registered = agent.get("/v1/catalog/services")
        assert {"inventory", "order", "notification"} <= set(registered), registered

    # SIGTERM, as the kubelet sends it: readiness fails at once, liveness holds through the drain.
    for name in ("inventory", "gateway"):
        pod = pods[name]
        pod.process.send_signal(signal.SIGTERM)
        pod.until("readinessProbe", want=NOT_SERVING_EXIT if name != "gateway" else 503)
        assert pod.probe("livenessProbe") == 0, f"{name}: liveness must hold while draining"
    grace = of_kind(docs, "Deployment")["shopmesh-inventory"]["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"]
    for name in ("inventory", "gateway"):
        assert pods[name].process.wait(grace) == 0, f"{name} did not exit 0 within {grace}s"
