"""The gateway's transport edge, measured (issue 20): memory per connection and per stream, and what
hostile clients cost it while a polite one keeps calling.

    .venv/bin/python scripts/bench_transport.py [--connections 10000] [--streams 10000] [--seconds 15] [--baseline REF]

1. Memory per idle connection: N keep-alive connections opened (from many loopback addresses,
   each within its share) and left idle; the gateway's RSS growth / N.
2. Memory per open event stream: N SSE streams (`GET /v1/users/{id}/notifications:stream`), each
   also a gRPC stream to the notification service; the gateway's RSS growth / N (the notification
   service's too).
3. Hostile clients: one connection pipelining 4000 `GET /v1/products?pageSize=100` and reading
   nothing, and 1000 request heads trickled a byte a second, each driven from a process of its own.
   The gateway's peak RSS above its idle size, and a polite client's p50/p99 over sequential GETs during it, against the same client's
   with nobody hostile, in the same run. With `--baseline REF` part 3 is run against REF's gateway
   too (a git worktree, the same services), to show the difference. `--connections 0 --streams 0`
   runs part 3 alone.

CPU per request is `scripts/bench_gateway.py --baseline REF`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import shutil
import socket
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
from scripts.bench_gateway import wait_http  # noqa: E402
from scripts.bench_grpc import add_worktree, drop_worktree, free_port, start, stop_all, wait_port  # noqa: E402

# The first second of the hostile clients: the pipeliner's requests are served, each in its turn beside
# the polite client's, until the kernel's send buffer for it is full and backpressure stops reading it.
SETTLING = 1.0
PIPELINED = b"GET /v1/products?pageSize=100 HTTP/1.1\r\nhost: bench\r\n\r\n"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def address(n: int, per: int) -> str:
    """The n-th client's loopback address when each address holds `per` clients."""
    group = n // per
    return f"127.{1 + group // 62500}.{100 + group // 250 % 250}.{group % 250 + 1}"


async def open_many(host: str, port: int, count: int, per: int, first_line: bytes | None) -> list:
    """`count` connections, `per` to an address; each sends `first_line` (a stream's request) if given
    and reads its reply's head."""
    opened = []

    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(address(n, per), 0))
        if first_line is not None:
            writer.write(first_line.replace(b"{n}", str(n).encode()))
            status = await reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
        opened.append(writer)

    for start_at in range(0, count, 500):  # in bursts, as pages arrive
        await asyncio.gather(*(one(n) for n in range(start_at, min(count, start_at + 500))))
    return opened


def settled_rss(pid: int, seconds: float = 2.0) -> float:
    time.sleep(seconds)  # a benchmark's pause: the process finishes what the burst started
    return rss_mb(pid)


def per_item(pid: int, others: dict[str, int], host: str, port: int, count: int, per: int,
             first_line: bytes | None) -> dict[str, float]:
    """RSS growth per item (KB) of the gateway and of `others` with `count` items held open."""
    before = {name: rss_mb(p) for name, p in {"gateway": pid, **others}.items()}

    async def hold() -> dict[str, float]:
        writers = await open_many(host, port, count, per, first_line)
        after = {name: settled_rss(p, 0) for name, p in {"gateway": pid, **others}.items()}
        await asyncio.sleep(2)
        after = {name: max(after[name], rss_mb(p)) for name, p in {"gateway": pid, **others}.items()}
        for writer in writers:
            writer.close()
        return after

    after = asyncio.run(hold())
    settled_rss(pid)
    return {name: (after[name] - before[name]) * 1024 / count for name in before}


def polite_latencies(host: str, port: int, seconds: float, sample: list[float] | None = None,
                     pid: int | None = None) -> list[tuple[float, float]]:
    """Sequential `GET /v1/products/bench` on one keep-alive connection from 127.0.0.2 for `seconds`;
    each one's (seconds since the first began, seconds it took), and, with `pid`, the gateway's RSS
    sampled after each into `sample`."""
    import http.client

    connection = http.client.HTTPConnection(host, port, timeout=30, source_address=("127.0.0.2", 0))
    found = []
    begun = time.monotonic()
    while time.monotonic() < begun + seconds:
        started = time.perf_counter()
        connection.request("GET", "/v1/products/bench")
        reply = connection.getresponse()
        reply.read()
        assert reply.status == 200, reply.status
        found.append((time.monotonic() - begun, time.perf_counter() - started))
        if pid is not None and sample is not None:
            sample.append(rss_mb(pid))
    connection.close()
    return found


def pipeline(host: str, port: int, stop) -> None:
    """One connection sending 4000 pipelined product pages and reading none of them."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind(("127.0.0.3", 0))
    sock.connect((host, port))
    sock.settimeout(1)
    data, sent = PIPELINED * 4000, 0
    while not stop.is_set() and sent < len(data):
        try:
            sent += sock.send(data[sent:sent + 65536])
        except (TimeoutError, BlockingIOError):
            continue
        except OSError:
            break
    stop.wait()
    sock.close()


def slow_heads(host: str, port: int, stop) -> None:
    """1000 connections (200 from each of 5 addresses, within a client's share) each trickling a request head a byte a second."""
    socks = []
    for n in range(1000):
        sock = socket.socket()
        sock.bind((address(n, 200), 0))
        sock.connect((host, port))
        sock.setblocking(False)
        socks.append(sock)
    head = b"GET /v1/products HTTP/1.1\r\nhost: bench\r\nx-slow: " + b"a" * 10_000
    at = 0
    while not stop.is_set() and at < len(head):
        for sock in socks:
            try:
                sock.send(head[at:at + 1])
            except OSError:
                pass
        at += 1
        stop.wait(1.0)
    for sock in socks:
        sock.close()


def hostile(host: str, port: int, pid: int, seconds: float) -> dict[str, float]:
    """One pipelining non-reader and 1000 slow heads, each driven from a process of its own (so
    they share no interpreter lock with the polite client), while a polite client calls; its
    numbers against the same client's alone, same run."""
    alone = polite_latencies(host, port, seconds / 2)
    idle = rss_mb(pid)
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    drivers = [spawn.Process(target=drive, args=(host, port, stop)) for drive in (pipeline, slow_heads)]
    for driver in drivers:
        driver.start()
    samples: list[float] = []
    during = polite_latencies(host, port, seconds, samples, pid)
    stop.set()
    for driver in drivers:
        driver.join(30)

    def pct(calls: list[tuple[float, float]], q: float, after: float = 0.0) -> float:
        values = sorted(took for at, took in calls if at >= after)
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    return {"idle_mb": idle, "peak_mb": max(samples, default=idle), "alone_p50": pct(alone, 0.5),
            "alone_p99": pct(alone, 0.99), "during_p50": pct(during, 0.5), "during_p99": pct(during, 0.99),
            "settled_p99": pct(during, 0.99, after=SETTLING), "calls": len(during)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--baseline", metavar="REF", help="also run part 3 against the gateway at git REF")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = Path(tempfile.mkdtemp(prefix="bench-transport-"))
    processes: dict[str, subprocess.Popen] = {}
    baseline = None
    try:
        items = max(args.connections, args.streams)
        env = dict(os.environ, SHOPMESH_DATA_DIR=str(work), SHOPMESH_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
                   SHOPMESH_MAX_OPEN_STREAMS=str(items + 100), SHOPMESH_MAX_CONCURRENT_RPCS=str(items + 100),
                   SHOPMESH_STREAM_POLL_SECONDS="60", SHOPMESH_HTTP_IDLE_TIMEOUT_SECONDS="3600",
                   SHOPMESH_HTTP_READ_TIMEOUT_SECONDS="3600", SHOPMESH_MAX_CONNECTION_AGE_SECONDS="0")
        ports = {name: free_port() for name in ("inventory", "order", "notification", "gateway")}
        for name, port in ports.items():
            env[f"SHOPMESH_{name.upper()}_PORT"] = str(port)
        for name in ("inventory", "notification", "order"):
            env[f"SHOPMESH_{name.upper()}_METRICS_PORT"] = str(free_port())
            processes[name] = start([sys.executable, "-m", name], env, work / f"{name}.log")
            wait_port(f"127.0.0.1:{ports[name]}")
        processes["gateway"] = start([sys.executable, "-m", "gateway"], env, work / "gateway.log")
        wait_http(f"http://127.0.0.1:{ports['gateway']}/healthz")
        with grpc.insecure_channel(f"127.0.0.1:{ports['inventory']}") as channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            for n in range(100):
                stub.CreateProduct(inventory_pb2.CreateProductRequest(product=inventory_pb2.Product(
                    sku="bench" if n == 0 else f"bench-{n}", name=f"Bench product {n}", available=10**6,
                    price=money_pb2.Money(currency_code="USD", minor_units=100 + n))))
        host, port, pid = "127.0.0.1", ports["gateway"], processes["gateway"].pid
        polite_latencies(host, port, 2)  # warm
        print(f"gateway idle RSS {rss_mb(pid):.1f} MB")
        if args.connections:
            connection = per_item(pid, {}, host, port, args.connections, 200, None)
            print(f"1. {args.connections} idle keep-alive connections: {connection['gateway']:.1f} KB each (gateway RSS)")
        if args.streams:
            stream = per_item(pid, {"notification": processes["notification"].pid}, host, port, args.streams, 10,
                              b"GET /v1/users/page-{n}/notifications:stream HTTP/1.1\r\nhost: bench\r\n\r\n")
            print(f"2. {args.streams} open SSE streams: {stream['gateway']:.1f} KB each in the gateway, "
                  f"{stream['notification']:.1f} KB each in the notification service")
        rows = [("this tree", hostile(host, port, pid, args.seconds))]
        if args.baseline:
            baseline = work / "baseline-tree"
            add_worktree(args.baseline, baseline)
            base_port = free_port()
            processes["baseline"] = start([sys.executable, "-m", "gateway"],
                                          dict(env, PYTHONPATH=str(baseline), SHOPMESH_GATEWAY_PORT=str(base_port)),
                                          work / "baseline-gateway.log", cwd=baseline)
            wait_http(f"http://127.0.0.1:{base_port}/healthz")
            polite_latencies(host, base_port, 2)
            rows.append((f"gateway @ {args.baseline}", hostile(host, base_port, processes["baseline"].pid,
                                                               args.seconds)))
        print(f"\n3. one pipelining non-reader (4000 x ~24 KB replies) + 1000 slow heads, {args.seconds:g}s; "
              "a polite client's sequential GETs beside them")
        print(f"{'gateway':<22}{'idle MB':>9}{'peak MB':>9}{'+MB':>7}{'alone p50/p99 ms':>19}"
              f"{'during p50/p99 ms':>20}{'p99 ratio':>11}{'after 1st s':>13}")
        for label, row in rows:
            print(f"{label:<22}{row['idle_mb']:>9.1f}{row['peak_mb']:>9.1f}{row['peak_mb'] - row['idle_mb']:>7.1f}"
                  f"{row['alone_p50']:>10.2f}/{row['alone_p99']:<8.2f}{row['during_p50']:>11.2f}/{row['during_p99']:<8.2f}"
                  f"{row['during_p99'] / row['alone_p99']:>10.2f}x"
                  f"{row['settled_p99'] / row['alone_p99']:>12.2f}x")
    finally:
        stop_all(processes.values())
        drop_worktree(baseline)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
