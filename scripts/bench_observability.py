"""What tracing and metrics cost: CreateOrder end to end with them off, metrics only, and both on.

    .venv/bin/python scripts/bench_observability.py [--duration 10] [--concurrency 32] [--repeat 3]

Starts the three services three times side by side (same code, same machine,
own SQLite files), differing only in settings:

  off       SHOPMESH_METRICS=off, SHOPMESH_TRACE_EXPORTER=none (the baseline)
  metrics   SHOPMESH_METRICS=on,  SHOPMESH_TRACE_EXPORTER=none
  sampled   SHOPMESH_METRICS=on,  SHOPMESH_TRACE_EXPORTER=otlp, SHOPMESH_TRACE_SAMPLE_RATIO=0.1
  both      SHOPMESH_METRICS=on,  SHOPMESH_TRACE_EXPORTER=otlp, every trace recorded

Spans go to an OTLP receiver (a separate process standing in for the collector,
which counts what it receives).

and drives CreateOrder on each with ghz in interleaved rounds, so a noisy moment
hits every variant alike. Prints requests/s, p50/p99 and the three servers' CPU
per order, with the overhead against the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from generated.shop.common.v1 import money_pb2  # noqa: E402
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc  # noqa: E402
from scripts.bench_grpc import free_port, run_ghz, start, stop_all, wait_port  # noqa: E402

VARIANTS = {
    "off": {"SHOPMESH_METRICS": "off", "SHOPMESH_TRACE_EXPORTER": "none"},
    "metrics": {"SHOPMESH_METRICS": "on", "SHOPMESH_TRACE_EXPORTER": "none"},
    "sampled": {"SHOPMESH_METRICS": "on", "SHOPMESH_TRACE_EXPORTER": "otlp", "SHOPMESH_TRACE_SAMPLE_RATIO": "0.1"},
    "both": {"SHOPMESH_METRICS": "on", "SHOPMESH_TRACE_EXPORTER": "otlp", "SHOPMESH_TRACE_SAMPLE_RATIO": "1"},
}
LABELS = {
    "off": "tracing off, metrics off (baseline)",
    "metrics": "metrics on, tracing off",
    "sampled": "metrics on, tracing on (OTLP, 10% of traces recorded)",
    "both": "metrics on, tracing on (OTLP, every trace recorded)",
}


async def serve_otlp(port: int, count_file: Path) -> None:
    """An OTLP/gRPC trace receiver that counts spans: the collector's place, not its work."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received = 0

    class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
        async def Export(self, request, context):  # noqa: N802 - the generated name
            nonlocal received
            received += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)
    count_file.write_text(str(received))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per variant and round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the median is shown")
    parser.add_argument("--serve-otlp", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_otlp:
        asyncio.run(serve_otlp(args.serve_otlp, args.count_file))
        return

    work = Path(tempfile.mkdtemp(prefix="shopmesh-obsbench-"))
    otlp_port = free_port()
    processes = {}
    pids: dict[str, list[int]] = {}
    order_ports: dict[str, int] = {}
    try:
        processes["otlp"] = start([sys.executable, __file__, "--serve-otlp", str(otlp_port),
                                   "--count-file", str(work / "spans")], dict(os.environ), work / "otlp.log")
        wait_port(f"127.0.0.1:{otlp_port}")
        for variant, settings in VARIANTS.items():
            folder = work / variant
            folder.mkdir()
            env = dict(os.environ, SHOPMESH_DATA_DIR=str(folder), SHOPMESH_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
                       SHOPMESH_OTLP_ENDPOINT=f"127.0.0.1:{otlp_port}", **settings)
            ports = {name: free_port() for name in ("inventory", "order", "notification")}
            for name, port in ports.items():
                env[f"SHOPMESH_{name.upper()}_PORT"] = str(port)
                env[f"SHOPMESH_{name.upper()}_METRICS_PORT"] = str(free_port())
            for name in ("inventory", "notification", "order"):
                processes[f"{variant}-{name}"] = start([sys.executable, "-m", name], env, folder / f"{name}.log")
                wait_port(f"127.0.0.1:{ports[name]}")
            with grpc.insecure_channel(f"127.0.0.1:{ports['inventory']}") as channel:
                product = inventory_pb2.Product(sku="bench", name="Bench", available=10**9,
                                                price=money_pb2.Money(currency_code="USD", minor_units=100))
                inventory_pb2_grpc.InventoryServiceStub(channel).CreateProduct(
                    inventory_pb2.CreateProductRequest(product=product))
            pids[variant] = [processes[f"{variant}-{n}"].pid for n in ("order", "inventory", "notification")]
            order_ports[variant] = ports["order"]
        data = {"request_id": "{{newUUID}}", "user_id": "bench-{{.RequestNumber}}",
                "lines": [{"sku": "bench", "quantity": 1}]}
        rounds: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
        names = list(VARIANTS)
        for round_ in range(args.repeat):
            # Rotated each round, so no variant always runs first or last.
            for variant in names[round_ % len(names):] + names[:round_ % len(names)]:
                print(f"round {round_ + 1}: {variant} for {args.duration}s ...", file=sys.stderr, flush=True)
                rounds[variant].append(run_ghz(f"127.0.0.1:{order_ports[variant]}",
                                               "shop.order.v1.OrderService.CreateOrder", data, pids[variant], args))
        stop_all([processes.pop("otlp")])
        spans = int((work / "spans").read_text())
        results = {v: sorted(runs, key=lambda r: r["rps"])[len(runs) // 2] for v, runs in rounds.items()}
        base = results["off"]
        print(f"\nCreateOrder end to end (order -> inventory, outbox -> notification), ghz -c {args.concurrency} "
              f"-z {args.duration}s on {os.cpu_count()} cores; median of {args.repeat} interleaved rounds\n")
        print("| variant | orders/s | vs. baseline | p50 ms | p99 ms | errors | CPU ms/order (3 servers) | CPU vs. baseline |")
        print("|---|---:|---:|---:|---:|---|---:|---:|")
        for variant, r in results.items():
            print(f"| {LABELS[variant]} | {r['rps']:.0f} | {100 * (r['rps'] / base['rps'] - 1):+.1f}% "
                  f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['errors'] or 'none'} | {r['cpu_ms']:.3f} "
                  f"| {100 * (r['cpu_ms'] / base['cpu_ms'] - 1):+.1f}% |")
        traced_orders = sum(r["ok"] for r in rounds["both"]) + sum(r["ok"] for r in rounds["sampled"]) // 10
        print(f"\nspans received by the OTLP receiver: {spans} ({spans / max(traced_orders, 1):.1f} per traced order, "
              "warm-ups included)")
    finally:
        stop_all(processes.values())
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
