"""`python -m gateway [--descriptors ...] --upstream ...` in front of a service defined only here.

A small annotated service (its .proto written by this test, compiled with protoc, served by
grpc.aio) gets REST from its google.api.http rules, SSE, Connect, gRPC-Web and /openapi.json
from the gateway with no code: the gateway knows nothing of it but its descriptor set, or
what the service's own gRPC reflection says.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.support.http import call, connect_json, frames
from tests.support.mesh import wait_http

PROTO = """
syntax = "proto3";
package echo.v1;
import "google/api/annotations.proto";

service EchoService {
  rpc Echo(EchoRequest) returns (EchoReply) {
    option (google.api.http) = {post: "/v1/echo/{name}" body: "*"};
  }
  rpc Count(CountRequest) returns (stream CountReply) {
    option idempotency_level = NO_SIDE_EFFECTS;
    option (google.api.http) = {get: "/v1/count/{upto}"};
  }
}
message EchoRequest { string name = 1; int64 times = 2; }
message EchoReply { string said = 1; }
message CountRequest { int32 upto = 1; }
message CountReply { int32 n = 1; }
"""


def _compile(out: Path) -> Path:
    import grpc_tools
    from google.api import annotations_pb2

    (out / "echo" / "v1").mkdir(parents=True)
    (out / "echo" / "v1" / "echo.proto").write_text(PROTO)
    protoset = out / "echo.protoset"
    googleapis = Path(annotations_pb2.__file__).parents[2]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{out}", f"-I{googleapis}",
                    f"-I{Path(grpc_tools.__file__).parent / '_proto'}", f"--python_out={out}",
                    f"--grpc_python_out={out}", "--include_imports", f"--descriptor_set_out={protoset}",
                    "echo/v1/echo.proto"], check=True)
    return protoset


@pytest.fixture(scope="module", params=["descriptors", "reflection"])
def echo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    out = tmp_path_factory.mktemp("echo")
    protoset = _compile(out)
    # The service runs in its own process: the gateway's pool must not see these modules.
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(out), str(port)], cwd=ROOT)
    gateway_port = free_port()
    env = {"SHOPMESH_GATEWAY_PORT": str(gateway_port), "SHOPMESH_METRICS": "off", "PATH": "/usr/bin:/bin"}
    source = ["--descriptors", str(protoset)] if request.param == "descriptors" else []  # else: its reflection
    gateway = subprocess.Popen([sys.executable, "-m", "gateway", *source,
                                "--upstream", f"echo.v1.EchoService=127.0.0.1:{port}"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{gateway_port}/healthz", process=gateway)
        yield f"127.0.0.1:{gateway_port}"
    finally:
        for process in (gateway, server):
            process.terminate()
            process.wait(15)
        log = gateway.stdout.read().decode() if gateway.stdout else ""
        assert "Traceback" not in log, log


SERVER = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
import grpc
from grpc_reflection.v1alpha import reflection
from echo.v1 import echo_pb2, echo_pb2_grpc

class Echo(echo_pb2_grpc.EchoServiceServicer):
    async def Echo(self, request, context):
        if not request.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name: must not be empty")
        if request.name == "metadata":  # what arrived as metadata, but gRPC's and the channel's own
            return echo_pb2.EchoReply(said=" ".join(sorted(
                f"{k}={v}" for k, v in context.invocation_metadata() if not k.startswith("grpc-") and k not in ("user-agent", "x-shopmesh-soft-errors"))))
        return echo_pb2.EchoReply(said=" ".join([request.name] * max(request.times, 1)))
    async def Count(self, request, context):
        for n in range(1, request.upto + 1):
            yield echo_pb2.CountReply(n=n)

async def main():
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServiceServicer_to_server(Echo(), server)
    reflection.enable_server_reflection([echo_pb2.DESCRIPTOR.services_by_name["EchoService"].full_name,
                                         reflection.SERVICE_NAME], server)
    server.add_insecure_port(f"127.0.0.1:{sys.argv[2]}")
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
"""


def test_an_upstream_without_a_health_service_counts_as_ready_once_it_answers(echo: str) -> None:
    status, _, data = call(echo, "GET", "/readyz")
    assert status == 200 and json.loads(data)["upstreams"] == {"echo.v1.EchoService": "UP (no grpc.health service)"}


def test_rest_from_its_http_rules_and_its_openapi(echo: str) -> None:
    status, _, data = call(echo, "POST", "/v1/echo/hi", json.dumps({"times": "2"}).encode(),
                           {"content-type": "application/json"})
    assert status == 200 and json.loads(data) == {"said": "hi hi"}
    status, _, data = call(echo, "POST", "/v1/echo/hi", b'{"tims": 2}', {"content-type": "application/json"})
    assert status == 400 and "tims" in json.loads(data)["message"]
    document = json.loads(call(echo, "GET", "/openapi.json")[2])
    assert "/v1/echo/{name}" in document["paths"] and "/v1/count/{upto}" in document["paths"]
    status, headers, data = call(echo, "GET", "/v1/count/3", headers={"accept": "text/event-stream"})
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert [json.loads(line[6:]) for line in data.decode().splitlines() if line.startswith("data: ")] == \
        [{"n": 1}, {"n": 2}, {"n": 3}]


def test_connect_and_grpc_web_with_no_code_for_it(echo: str) -> None:
    status, _, reply = connect_json(echo, "/echo.v1.EchoService/Echo", {"name": "yo", "times": "3"})
    assert status == 200 and reply == {"said": "yo yo yo"}
    status, _, error = connect_json(echo, "/echo.v1.EchoService/Echo", {})
    assert status == 400 and error == {"code": "invalid_argument", "message": "name: must not be empty"}
    body = json.dumps({"upto": 2}).encode()
    status, _, data = call(echo, "POST", "/echo.v1.EchoService/Count", struct.pack(">BI", 0, len(body)) + body,
                           {"content-type": "application/connect+json"})
    assert status == 200
    assert [(f, json.loads(m)) for f, m in frames(data)] == [(0, {"n": 1}), (0, {"n": 2}), (2, {})]
    status, _, data = call(echo, "GET", "/echo.v1.EchoService/Count?connect=v1&encoding=json&message=%7B%7D")
    assert status == 405  # a stream is not a Connect GET, even when it reads only


def test_every_protocol_passes_the_same_headers_on_as_metadata(echo: str) -> None:
    """One rule for all of REST, Connect and gRPC-Web: a header a gRPC client could have sent travels;
    HTTP's, the browser's, the protocols' own and the mesh's identity entries never do."""
    sent = {"x-tenant": "acme", "authorization": "Bearer t0ken", "cookie": "session=secret",
            "x-shopmesh-user": "mallory", "x-shopmesh-admin": "1", "accept-language": "en",
            "x-forwarded-for": "10.1.2.3", "idempotency-key": "k-1", "x-api-key": "key"}
    expected = "authorization=Bearer t0ken x-tenant=acme"
    status, _, data = call(echo, "POST", "/v1/echo/metadata", b"{}", {"content-type": "application/json", **sent})
    assert status == 200 and json.loads(data) == {"said": expected}, data
    status, _, reply = connect_json(echo, "/echo.v1.EchoService/Echo", {"name": "metadata"}, **sent)
    assert status == 200 and reply == {"said": expected}, reply
    body = json.dumps({"name": "metadata"}).encode()
    status, _, data = call(echo, "POST", "/echo.v1.EchoService/Echo", struct.pack(">BI", 0, len(body)) + body,
                           {"content-type": "application/grpc-web+json", **sent})
    assert status == 200 and json.loads(frames(data)[0][1]) == {"said": expected}, data


def test_a_bad_descriptor_set_or_upstream_is_refused_by_name(tmp_path: Path) -> None:
    junk = tmp_path / "junk.protoset"
    junk.write_bytes(b"\xff\xff not a descriptor set")
    for args, says in [
        (["--descriptors", str(junk), "--upstream", "a.B=1:2"], "not a FileDescriptorSet"),
        (["--descriptors", str(tmp_path / "missing"), "--upstream", "a.B=1:2"], "No such file"),
        (["--descriptors", str(ROOT / "generated" / "shopmesh.protoset"), "--upstream", "no.Such=127.0.0.1:1"],
         "no service no.Such"),
        (["--descriptors", str(ROOT / "generated" / "shopmesh.protoset"), "--upstream", "shop.order.v1.OrderService"],
         "expected package.Service=host:port"),
        (["--upstream", f"a.B=127.0.0.1:{free_port()}"], "no answer within"),  # reflection, from no one
    ]:
        done = subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr

