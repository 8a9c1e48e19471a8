"""A service declared once: a throwaway fourth service, from a proto written here, added to a
copy of mesh/services.toml and nowhere else, is started and supervised by the launcher,
registered in Consul and health-checked there, and present in the rendered chart, compose file
and Prometheus scrape configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from mesh.topology import DEFAULT_FILE
from tests.conftest import ROOT, free_port, tool
from tests.support.http import Http
from tests.support.waiting import said

PROTO = """
syntax = "proto3";
package greeter.v1;
service GreeterService { rpc Greet(GreetRequest) returns (GreetReply); }
message GreetRequest { string name = 1; }
message GreetReply { string said = 1; }
"""
APP = '''
from greeter.v1 import greeter_pb2, greeter_pb2_grpc
from mesh.server.bootstrap import App, Binding

class Greeter(greeter_pb2_grpc.GreeterServiceServicer):
    async def Greet(self, request, context):
        return greeter_pb2.GreetReply(said=f"hello, {request.name}")

async def build(settings, discovery):
    return App(bindings=[Binding("greeter.v1.GreeterService", greeter_pb2_grpc.add_GreeterServiceServicer_to_server,
                                 Greeter())])
'''
MAIN = '''
from greeter.app import build
from mesh.server.bootstrap import main

if __name__ == "__main__":
    main("greeter", build)
'''


def _greeter(root: Path) -> None:
    """The fourth service's package: its stubs (protoc), its app, its `python -m greeter`."""
    import grpc_tools

    package = root / "greeter"
    (package / "v1").mkdir(parents=True)
    (package / "v1" / "greeter.proto").write_text(PROTO)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{root}", f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
                    f"--python_out={root}", f"--grpc_python_out={root}", "greeter/v1/greeter.proto"], check=True)
    for name, text in (("__init__.py", ""), ("v1/__init__.py", ""), ("app.py", APP), ("__main__.py", MAIN)):
        (package / name).write_text(text)


def _declaration(root: Path, port: int, metrics_port: int) -> Path:
    """mesh/services.toml as it is, and the fourth service: the one place it is written."""
    declared = root / "services.toml"
    declared.write_text(DEFAULT_FILE.read_text() + f"""
[greeter]
port = {port}
metrics_port = {metrics_port}
grpc_service = "greeter.v1.GreeterService"
calls = []
""")
    return declared


def _consul_passing(consul: int, service: str) -> list[dict]:
    status, _, found = Http(f"127.0.0.1:{consul}").call("GET", f"/v1/health/service/{service}?passing=true")
    assert status == 200, found
    return found


def _greeter_pid(launcher_pid: int, port: int) -> int:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher_pid and b"greeter" in command:
            return int(stat.parent.name)
    raise LookupError(f"no greeter under the launcher on port {port}")


def test_a_fourth_service_declared_once_is_run_registered_checked_and_supervised(tmp_path: Path) -> None:
    consul = tool("consul")
    probe = tool("grpc-health-probe")
    _greeter(tmp_path)
    ports = {name: free_port() for name in ("inventory", "order", "notification", "gateway", "greeter", "consul")}
    declared = _declaration(tmp_path, ports["greeter"], free_port())
    args = [sys.executable, "-m", "mesh.tools.launcher", "--data-dir", str(tmp_path / "data"), "--consul", "dev",
            "--consul-port", str(ports["consul"]), "--no-seed"]
    for name in ("inventory", "order", "notification", "gateway", "greeter"):
        args += [f"--{name}-port", str(ports[name])]
    for name in ("inventory", "order", "notification"):
        args += [f"--{name}-metrics-port", str(free_port())]
    env = dict(os.environ, SHOPMESH_SERVICES_FILE=str(declared), PYTHONPATH=f"{tmp_path}:{ROOT}",
               PATH=f"{Path(consul).parent}:{os.environ['PATH']}")
    log = tmp_path / "launcher.log"
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        said(log, "shopmesh is up", process, 90)
        output = log.read_text()
        assert f"greeter serving on 127.0.0.1:{ports['greeter']}" in output
        assert f"greeter       127.0.0.1:{ports['greeter']}" in output
        # Registered in Consul with a gRPC health check on its own service name, and passing it.
        [entry] = _consul_passing(ports["consul"], "greeter")
        assert entry["Service"]["Port"] == ports["greeter"]
        assert [c["Status"] for c in entry["Checks"] if c["CheckID"] != "serfHealth"] == ["passing"]
        done = subprocess.run([probe, f"-addr=127.0.0.1:{ports['greeter']}", "-service=greeter.v1.GreeterService"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and "status: SERVING" in done.stdout + done.stderr, done.stdout + done.stderr
        # Supervised: killed with -9, it is started again and serves again.
        mark = len(log.read_text())
        os.kill(_greeter_pid(process.pid, ports["greeter"]), signal.SIGKILL)
        said(log, "greeter exited with code -9; restarting it", process, 30, after=mark)
        said(log, "greeter is serving again", process, 60, after=mark)
        assert _consul_passing(ports["consul"], "greeter")
        # Stopped with the rest, before nothing it calls (it calls nothing), with exit code 0.
        process.send_signal(signal.SIGINT)
        assert process.wait(90) == 0
        assert "greeter exited with code 0" in log.read_text()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                process.kill()
    assert "Traceback" not in log.read_text()


def test_a_fourth_service_declared_once_is_in_the_chart_compose_and_scrape_configuration(tmp_path: Path) -> None:
    helm = tool("helm", "run scripts/install-cluster.sh")
    declared = _declaration(tmp_path, 50060, 9110)
    out = tmp_path / "out"
    env = dict(os.environ, SHOPMESH_TOOLS=str(Path(helm).parents[2]))
    done = subprocess.run([sys.executable, "scripts/render_manifests.py", "--services", str(declared), "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    compose = yaml.safe_load((out / "docker-compose.yml").read_text())["services"]
    assert compose["greeter"]["command"] == ["greeter"]
    assert compose["greeter"]["environment"]["SHOPMESH_GREETER_PORT"] == "50060"
    assert "-service=greeter.v1.GreeterService" in compose["greeter"]["healthcheck"]["test"]
    scrape = yaml.safe_load((out / "deploy" / "prometheus" / "prometheus.yml").read_text())
    services = scrape["scrape_configs"][0]["consul_sd_configs"][0]["services"]
    assert services == ["inventory", "order", "notification", "greeter"]
    manifests = [d for d in yaml.safe_load_all((out / "deploy" / "kubernetes" / "shopmesh.yaml").read_text()) if d]
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in manifests}
    deployment = by_kind[("Deployment", "shopmesh-greeter")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "greeter"], container
    assert container["readinessProbe"]["grpc"] == {"port": 50060, "service": "greeter.v1.GreeterService"}
    assert deployment["spec"]["replicas"] == 2  # the chart's serviceDefaults: no values block was written for it
    service = by_kind[("Service", "shopmesh-greeter")]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["ports"][0]["port"] == 50060
    assert ("NetworkPolicy", "shopmesh-greeter") in by_kind and ("PodDisruptionBudget", "shopmesh-greeter") in by_kind
    assert "greeter" not in (out / "deploy" / "helm" / "shopmesh" / "files" / "postgres-init.sql").read_text()
    # The repository's own files are untouched, and still fresh.
    check = subprocess.run([sys.executable, "scripts/render_manifests.py", "--check"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
