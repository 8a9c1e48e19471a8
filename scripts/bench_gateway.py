"""Gateway benchmark: GET /v1/products/{sku} through our gateway vs FastAPI + uvicorn, and gRPC alone.

    .venv/bin/python scripts/bench_gateway.py [--duration 10] [--connections 32] [--repeat 3]

In one run, against one inventory process with SQLite:
- our gateway (`python -m gateway`), driven by wrk; the same process also over Connect (the same
  GetProduct as a Connect unary POST in JSON and in proto, and as a Connect GET), so REST and
  Connect are measured side by side on one gateway;
- a FastAPI + uvicorn app doing the same JSON -> gRPC call (the seed article's
  stack; installed into the venv for the benchmark only, with uvicorn's
  `standard` extra so it runs on uvloop + httptools, its fastest setup);
- the floor: our HTTP server making the one grpc.aio call and printing JSON, with
  nothing else a gateway does (the least CPU any front over grpc.aio can spend);
  and the same with grpclib, the other Python gRPC client (installed for the benchmark only);
- the gRPC call alone, driven by ghz, for scale;
- with `--baseline REF`, the gateway as it was at git REF (a worktree of it, same venv), so a
  change's cost is measured beside it in the same run, not remembered.
It prints requests/s, p50/p99 and each front process's CPU microseconds per
request (user+system from /proc), median of interleaved rounds.
Needs wrk (Debian: apt-get install wrk) and ghz (scripts/install-tools.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from generated.shop.common.v1 import money_pb2  # noqa: E402
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc  # noqa: E402
from scripts.bench_grpc import add_worktree, cpu_seconds, drop_worktree, free_port, ghz_path, stop_all, wait_port  # noqa: E402

FASTAPI_APP = '''
"""The seed article's stack doing what the gateway does for one route: JSON -> gRPC -> JSON."""
import os

import grpc
from fastapi import FastAPI, HTTPException
from google.protobuf import json_format

from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

app = FastAPI()
channel = None
stub = None


@app.on_event("startup")
async def connect():
    global channel, stub
    channel = grpc.aio.insecure_channel(os.environ["INVENTORY_ADDR"])
    stub = inventory_pb2_grpc.InventoryServiceStub(channel)


@app.get("/v1/products/{sku}")
async def get_product(sku: str):
    try:
        product = await stub.GetProduct(inventory_pb2.GetProductRequest(sku=sku), timeout=10)
    except grpc.aio.AioRpcError as error:
        raise HTTPException(status_code=404 if error.code() == grpc.StatusCode.NOT_FOUND else 500,
                            detail=error.details())
    return json_format.MessageToDict(product, always_print_fields_with_no_presence=True)
'''


FLOOR_APP = '''
"""The least any front over grpc.aio can do: our HTTP server, one GetProduct call, JSON out; nothing else
(no routing, no deadline parsing, no metrics, no logging context, no error handling).
FLOOR_CLIENT=grpclib makes the same call with grpclib (pure-Python asyncio gRPC on h2) instead."""
import asyncio, os, sys

import grpc

from gateway.transcode import to_json
from generated.shop.inventory.v1 import inventory_pb2
from mesh.server.http import Response, serve_http


async def main():
    method = "/shop.inventory.v1.InventoryService/GetProduct"
    if os.environ.get("FLOOR_CLIENT") == "grpclib":
        from grpclib.client import Channel, UnaryUnaryMethod

        host, port = os.environ["INVENTORY_ADDR"].rsplit(":", 1)
        call = UnaryUnaryMethod(Channel(host, int(port)), method, inventory_pb2.GetProductRequest, inventory_pb2.Product)
    else:
        call = grpc.aio.insecure_channel(os.environ["INVENTORY_ADDR"]).unary_unary(
            method, request_serializer=inventory_pb2.GetProductRequest.SerializeToString,
            response_deserializer=inventory_pb2.Product.FromString)

    async def handler(request):
        reply = await call(inventory_pb2.GetProductRequest(sku=request.path.rsplit("/", 1)[1]), timeout=10)
        return Response(200, to_json(reply))

    await serve_http(handler, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()


asyncio.run(main())
'''


def ensure_benchmark_packages() -> None:
    try:
        import fastapi  # noqa: F401
        import grpclib  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        print("installing fastapi, uvicorn[standard] and grpclib for the benchmark only ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "fastapi", "uvicorn[standard]", "grpclib"],
                       check=True)


def wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def _ms(text: str) -> float:
    value = float(re.match(r"[\d.]+", text).group())
    return value / 1000 if text.endswith("us") else value * 1000 if text.endswith("s") and not text.endswith("ms") else value


# wrk scripts for the Connect rows: a POST with its body and headers (\10\5 are the bytes of field 1, length 5).
CONNECT_POST = {
    "json": 'wrk.method = "POST"\nwrk.body = \'{"sku":"bench"}\'\nwrk.headers["Content-Type"] = "application/json"\n'
            'wrk.headers["Connect-Protocol-Version"] = "1"\n',
    "proto": 'wrk.method = "POST"\nwrk.body = "\\10\\5bench"\nwrk.headers["Content-Type"] = "application/proto"\n'
             'wrk.headers["Connect-Protocol-Version"] = "1"\n',
}
CONNECT_PATH = "/shop.inventory.v1.InventoryService/GetProduct"


def run_wrk(url: str, pid: int, args: argparse.Namespace, script: Path | None = None) -> dict:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found (Debian: apt-get install wrk)")
    scripted = ["-s", str(script)] if script is not None else []
    subprocess.run([wrk, "-t1", f"-c{args.connections}", "-d2s", *scripted, url], capture_output=True, check=True)  # warm-up
    before = cpu_seconds(pid)
    out = subprocess.run([wrk, "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", *scripted, url],
                         capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": _ms(re.search(r"^\s+50%\s+([\d.]+\w+)", out, re.M).group(1)),
        "p99": _ms(re.search(r"^\s+99%\s+([\d.]+\w+)", out, re.M).group(1)),
        "errors": (int(errors.group(1)) if errors else 0, socket_errors.group(1) if socket_errors else ""),
        "cpu_us": 1e6 * cpu / max(requests, 1),
    }


def run_ghz_direct(address: str, args: argparse.Namespace) -> dict:
    out = subprocess.run(
        [ghz_path(), "--insecure", "--protoset", str(ROOT / "generated" / "shopmesh.protoset"),
         "--call", "shop.inventory.v1.InventoryService.GetProduct", "-d", '{"sku":"bench"}',
         "-c", str(args.connections), "-z", f"{args.duration}s", "--duration-stop", "wait", "-O", "json", address],
        capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    latencies = {d["percentage"]: d["latency"] / 1e6 for d in report["latencyDistribution"]}
    return {"rps": report["rps"], "p50": latencies[50], "p99": latencies[99],
            "errors": {k: v for k, v in report["statusCodeDistribution"].items() if k != "OK"}, "cpu_us": float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", metavar="REF", help="also run the gateway of this git ref, e.g. 8e834ca")
    args = parser.parse_args()
    ensure_benchmark_packages()
    work = Path(tempfile.mkdtemp(prefix="shopmesh-gwbench-"))
    ports = {name: free_port() for name in ("inventory", "gateway", "baseline", "fastapi", "floor", "floor_grpclib")}
    baseline = None
    if args.baseline:
        baseline = work / "baseline"
        add_worktree(args.baseline, baseline)
    env = dict(os.environ, SHOPMESH_DATA_DIR=str(work), SHOPMESH_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
               SHOPMESH_INVENTORY_PORT=str(ports["inventory"]), SHOPMESH_GATEWAY_PORT=str(ports["gateway"]),
               SHOPMESH_INVENTORY_METRICS_PORT=str(free_port()),
               INVENTORY_ADDR=f"127.0.0.1:{ports['inventory']}", PYTHONPATH=str(ROOT))
    (work / "fastapi_app.py").write_text(FASTAPI_APP)
    (work / "floor_app.py").write_text(FLOOR_APP)
    processes: dict[str, subprocess.Popen] = {}
    logs = {}
    try:
        def start(name: str, command: list[str], cwd: Path = ROOT, **extra: str) -> None:
            logs[name] = open(work / f"{name}.log", "wb")  # noqa: SIM115
            processes[name] = subprocess.Popen(command, cwd=cwd, env={**env, **extra}, stdout=logs[name],
                                               stderr=subprocess.STDOUT)

        start("inventory", [sys.executable, "-m", "inventory"])
        wait_port(f"127.0.0.1:{ports['inventory']}")
        with grpc.insecure_channel(f"127.0.0.1:{ports['inventory']}") as channel:
            product = inventory_pb2.Product(sku="bench", name="Bench",
                                            price=money_pb2.Money(currency_code="USD", minor_units=100), available=10)
            inventory_pb2_grpc.InventoryServiceStub(channel).CreateProduct(
                inventory_pb2.CreateProductRequest(product=product))
        start("gateway", [sys.executable, "-m", "gateway"])
        start("fastapi", [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1",
                          "--port", str(ports["fastapi"]), "--log-level", "warning", "--no-access-log"], cwd=work)
        start("floor", [sys.executable, str(work / "floor_app.py"), str(ports["floor"])])
        start("floor_grpclib", [sys.executable, str(work / "floor_app.py"), str(ports["floor_grpclib"])],
              FLOOR_CLIENT="grpclib")
        fronts: tuple[str, ...] = ("gateway", "fastapi", "floor", "floor_grpclib")
        if baseline is not None:
            start("baseline", [sys.executable, "-m", "gateway"], cwd=baseline, PYTHONPATH=str(baseline),
                  SHOPMESH_GATEWAY_PORT=str(ports["baseline"]))
            fronts = ("gateway", "baseline", *fronts[1:])
        urls = {name: f"http://127.0.0.1:{ports[name]}/v1/products/bench" for name in fronts}
        for url in urls.values():
            wait_http(url)
        gateway_url = f"http://127.0.0.1:{ports['gateway']}"
        scripts = {}
        for codec, lua in CONNECT_POST.items():
            scripts[f"connect_{codec}"] = work / f"connect_{codec}.lua"
            scripts[f"connect_{codec}"].write_text(lua)
        # The Connect rows: the same gateway process, the same call.
        connect = {"connect_json": (f"{gateway_url}{CONNECT_PATH}", scripts["connect_json"]),
                   "connect_proto": (f"{gateway_url}{CONNECT_PATH}", scripts["connect_proto"]),
                   "connect_get": (f"{gateway_url}{CONNECT_PATH}?connect=v1&encoding=json&message=%7B%22sku%22%3A%22bench%22%7D",
                                   None)}
        rounds: dict[str, list[dict]] = {name: [] for name in (*fronts, *connect, "grpc")}
        for round_ in range(args.repeat):
            for name in fronts:
                print(f"round {round_ + 1}: {name} ...", file=sys.stderr, flush=True)
                rounds[name].append(run_wrk(urls[name], processes[name].pid, args))
                if name == "gateway":
                    for variant, (url, script) in connect.items():
                        print(f"round {round_ + 1}: gateway, {variant} ...", file=sys.stderr, flush=True)
                        rounds[variant].append(run_wrk(url, processes["gateway"].pid, args, script))
            print(f"round {round_ + 1}: gRPC alone ...", file=sys.stderr, flush=True)
            rounds["grpc"].append(run_ghz_direct(f"127.0.0.1:{ports['inventory']}", args))
        median = {name: sorted(runs, key=lambda r: r["rps"])[len(runs) // 2] for name, runs in rounds.items()}
        g, f = median["gateway"], median["fastapi"]
        print(f"\nGET /v1/products/{{sku}}: wrk -t1 -c{args.connections} -d{args.duration}s (ghz -c{args.connections} "
              f"for gRPC alone) on {os.cpu_count()} cores; median of {args.repeat} interleaved rounds\n")
        print("| front | requests/s | p50 ms | p99 ms | errors | front process CPU µs/request |")
        print("|---|---:|---:|---:|---|---:|")
        labels = {"gateway": "shopmesh gateway (asyncio + httptools)",
                  "connect_json": "the same gateway, Connect unary POST, JSON",
                  "connect_proto": "the same gateway, Connect unary POST, proto",
                  "connect_get": "the same gateway, Connect GET, JSON",
                  **({"baseline": f"the gateway at {args.baseline}"} if baseline is not None else {}),
                  "fastapi": "FastAPI + uvicorn[standard]",
                  "grpc": "gRPC GetProduct alone (ghz, no HTTP)",
                  "floor": "floor: our HTTP server + one grpc.aio call + JSON, nothing else",
                  "floor_grpclib": "the same floor with grpclib instead of grpc.aio"}
        for name, label in labels.items():
            r = median[name]
            cpu = "n/a" if r["cpu_us"] != r["cpu_us"] else f"{r['cpu_us']:.0f}"
            errors = r["errors"] if r["errors"] not in ((0, ""), {}) else "none"
            print(f"| {label} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {errors} | {cpu} |")
        print(f"\ngateway vs FastAPI: {g['rps'] / f['rps']:.2f}x requests/s (target >= 1.5x), "
              f"{100 * g['cpu_us'] / f['cpu_us']:.0f}% of its CPU per request (target <= 50%)")
        for variant, said in (("connect_json", "Connect JSON"), ("connect_proto", "Connect proto"),
                              ("connect_get", "Connect GET")):
            c = median[variant]
            print(f"{said} vs REST on the same gateway: {c['cpu_us']:.0f} vs {g['cpu_us']:.0f} µs a request "
                  f"({100 * c['cpu_us'] / g['cpu_us']:.0f}%), {c['rps'] / g['rps']:.2f}x requests/s")
        floor = median["floor"]
        print(f"floor (HTTP + one grpc.aio call + JSON, nothing else): {100 * floor['cpu_us'] / f['cpu_us']:.0f}% of "
              f"FastAPI's CPU per request; the gateway's own work above it: {g['cpu_us'] - floor['cpu_us']:.0f} µs")
        if baseline is not None:
            b = median["baseline"]
            print(f"the gateway at {args.baseline}: {b['cpu_us']:.0f} µs a request, its own work above the floor "
                  f"{b['cpu_us'] - floor['cpu_us']:.0f} µs; now {g['cpu_us'] - b['cpu_us']:+.0f} µs a request")
    finally:
        stop_all(processes.values())
        drop_worktree(baseline)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
