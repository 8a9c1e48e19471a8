"""gRPC benchmark: a bare grpc.aio ceiling, GetProduct, and CreateOrder end to end, in one run.

    .venv/bin/python scripts/bench_grpc.py [--duration 10] [--concurrency 32]

Drives each target with ghz (from scripts/install-tools.sh) at a fixed
concurrency and prints requests/s, p50/p99 latency, errors and the server
processes' CPU per request (from /proc, user+system), next to the ceiling:
a bare grpc.aio server answering GetProduct with a constant Product (no
interceptor, no database) measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # so `python scripts/bench_grpc.py` works without an install

import grpc  # noqa: E402

from generated.shop.common.v1 import money_pb2  # noqa: E402
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the ceiling: the same RPC with nothing of ours behind it ---------------------------------

class ConstantInventory(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self) -> None:
        self.reply = inventory_pb2.Product(
            sku="bench", name="Bench", price=money_pb2.Money(currency_code="USD", minor_units=100), available=10
        )

    async def GetProduct(self, request, context):
        return self.reply


async def serve_echo(port: int) -> None:
    server = grpc.aio.server()
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(ConstantInventory(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


# --- driving ghz ------------------------------------------------------------------------------

def ghz_path() -> str:
    found = shutil.which("ghz") or str(ROOT / ".tools" / "bin" / "ghz")
    if not Path(found).exists():
        raise SystemExit("ghz not found: run scripts/install-tools.sh")
    return found


def run_ghz(address: str, method: str, data: dict, pids: list[int], args: argparse.Namespace) -> dict:
    command = [
        ghz_path(), "--insecure", "--protoset", str(ROOT / "generated" / "shopmesh.protoset"),
        "--call", method, "-d", json.dumps(data),
        "-c", str(args.concurrency), "--connections", str(args.connections), "-O", "json",
    ]
    # A short warm-up so caches and connections are steady before measuring.
    subprocess.run([*command, "-n", "1000", address], capture_output=True, check=True)
    before = [cpu_seconds(p) for p in pids]
    # --duration-stop=wait: calls still in flight at the end finish and count, not show up as errors.
    timed = [*command, "-z", f"{args.duration}s", "--duration-stop", "wait", address]
    out = subprocess.run(timed, capture_output=True, text=True, check=True).stdout
    settle(pids)  # work the calls left behind (the outbox's deliveries) counts too, and cannot spill into the next run
    per_process = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
    cpu = sum(per_process)
    report = json.loads(out)
    latencies = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    ok = report["statusCodeDistribution"].get("OK", 0)
    return {
        "rps": report["rps"],
        "p50": latencies.get(50, float("nan")),
        "p99": latencies.get(99, float("nan")),
        "ok": ok,
        "errors": {k: v for k, v in report["statusCodeDistribution"].items() if k != "OK"},
        "cpu_ms": 1000 * cpu / max(ok, 1),
        "cpu_ms_each": [1000 * c / max(ok, 1) for c in per_process],
    }


def settle(pids: list[int], quiet: float = 0.02, step: float = 0.5, timeout: float = 60.0) -> None:
    """Waits until the processes are idle: less than `quiet` CPU seconds in `step` seconds, all together."""
    deadline = time.monotonic() + timeout
    last = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() < deadline:
        time.sleep(step)
        now = sum(cpu_seconds(p) for p in pids)
        if now - last < quiet:
            return
        last = now


def stop_all(processes) -> None:
    """SIGTERM every process, then wait for each (killing what will not stop)."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115


def wait_port(address: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with grpc.insecure_channel(address) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                return
            except grpc.FutureTimeoutError:
                pass
    raise TimeoutError(address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per target")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all targets; the median round is shown")
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        asyncio.run(serve_echo(args.serve_echo))
        return

    work = Path(tempfile.mkdtemp(prefix="shopmesh-bench-"))
    env = dict(os.environ, SHOPMESH_DATA_DIR=str(work), SHOPMESH_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    ports = {name: free_port() for name in ("echo", "inventory", "order", "notification")}
    for name in ("inventory", "order", "notification"):
        env[f"SHOPMESH_{name.upper()}_PORT"] = str(ports[name])
        env[f"SHOPMESH_{name.upper()}_METRICS_PORT"] = str(free_port())
    processes: dict[str, subprocess.Popen] = {}
    try:
        processes["echo"] = start([sys.executable, __file__, "--serve-echo", str(ports["echo"])], env, work / "echo.log")
        for name in ("inventory", "notification", "order"):
            processes[name] = start([sys.executable, "-m", name], env, work / f"{name}.log")
        for port in ports.values():
            wait_port(f"127.0.0.1:{port}")
        with grpc.insecure_channel(f"127.0.0.1:{ports['inventory']}") as channel:
            product = inventory_pb2.Product(
                sku="bench", name="Bench", price=money_pb2.Money(currency_code="USD", minor_units=100), available=10**9
            )
            inventory_pb2_grpc.InventoryServiceStub(channel).CreateProduct(
                inventory_pb2.CreateProductRequest(product=product)
            )
        pid = {name: p.pid for name, p in processes.items()}
        rows = [
            ("ceiling: bare grpc.aio GetProduct", f"127.0.0.1:{ports['echo']}",
             "shop.inventory.v1.InventoryService.GetProduct", {"sku": "bench"}, [pid["echo"]]),
            ("GetProduct (inventory + SQLite)", f"127.0.0.1:{ports['inventory']}",
             "shop.inventory.v1.InventoryService.GetProduct", {"sku": "bench"}, [pid["inventory"]]),
            ("CreateOrder end to end (3 services)", f"127.0.0.1:{ports['order']}",
             "shop.order.v1.OrderService.CreateOrder",
             {"request_id": "{{newUUID}}", "user_id": "bench-{{.RequestNumber}}",
              "lines": [{"sku": "bench", "quantity": 1}]},
             [pid["order"], pid["inventory"], pid["notification"]]),
        ]
        rounds: dict[str, list[dict]] = {label: [] for label, *_ in rows}
        for round_ in range(args.repeat):  # interleaved, so a noisy moment hits every target alike
            for label, address, method, data, pids in rows:
                print(f"round {round_ + 1}: {label} for {args.duration}s ...", file=sys.stderr, flush=True)
                rounds[label].append(run_ghz(address, method, data, pids, args))
        results = [(label, sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]) for label, runs in rounds.items()]
        ceiling = results[0][1]["rps"]
        print(f"\nghz -c {args.concurrency} -z {args.duration}s --connections {args.connections} "
              f"on {os.cpu_count()} cores (ghz shares them); median of {args.repeat} interleaved rounds\n")
        print("| target | requests/s | % of ceiling | p50 ms | p99 ms | errors | server CPU ms/request |")
        print("|---|---:|---:|---:|---:|---|---:|")
        for label, r in results:
            each = " + ".join(f"{c:.2f}" for c in r["cpu_ms_each"]) if len(r["cpu_ms_each"]) > 1 else ""
            print(f"| {label} | {r['rps']:.0f} | {100 * r['rps'] / ceiling:.0f}% | {r['p50']:.2f} | {r['p99']:.2f} "
                  f"| {r['errors'] or 'none'} | {r['cpu_ms']:.3f}{f' ({each})' if each else ''} |")
        print("\nCreateOrder's CPU is order + inventory + notification. CPU is user+system time of the server")
        print("processes from /proc over the measured run, divided by the successful calls.")
    finally:
        stop_all(processes.values())
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
