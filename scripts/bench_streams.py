"""Open pages: N SSE streams through the gateway, idle, then events from another instance.

    .venv/bin/python scripts/bench_streams.py --streams 10000 [--baseline 8e834ca]

Two notification instances share one PostgreSQL (Debian's binaries, a throwaway cluster); the
gateway sends every stream to the first, and the events are written through the second, so
each one crosses instances (LISTEN/NOTIFY, or the poll of a code that has none). The script
opens N `GET /v1/users/{id}/notifications:stream` connections (one user each), waits until all
are open, measures the CPU each process uses over `--idle` seconds with nothing happening,
then sends `--events` notifications, one to a random open stream every 20 ms, and times each
from the call to the `data:` line on its stream. `--baseline REF` runs the same against the
services of a git worktree at REF (SHOPMESH_MAX_OPEN_STREAMS is set where REF reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from generated.shop.notification.v1 import notification_pb2, notification_pb2_grpc  # noqa: E402
from scripts.bench_grpc import add_worktree, cpu_seconds, drop_worktree, free_port, wait_port  # noqa: E402
from tests.support.postgres import PostgresServer, throwaway_server  # noqa: E402


class Stream:
    def __init__(self, user: str):
        self.user = user
        self.arrived: asyncio.Queue[float] = asyncio.Queue()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.status = 0

    async def open(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        self.writer.write(f"GET /v1/users/{self.user}/notifications:stream HTTP/1.1\r\nHost: {host}\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
        status_line = await self.reader.readline()
        self.status = int(status_line.split()[1]) if status_line else 0
        while (await self.reader.readline()) not in (b"\r\n", b""):
            pass

    async def follow(self) -> None:
        assert self.reader is not None
        while line := await self.reader.readline():
            if b"data: " in line:
                self.arrived.put_nowait(time.perf_counter())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def start(tree: Path, service: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", service], cwd=tree, env={**env, "PYTHONPATH": str(tree)},
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115


async def run(tree: Path, label: str, postgres: PostgresServer, args: argparse.Namespace, work: Path) -> dict:
    data = work / label.replace(" ", "_")
    data.mkdir()
    ports = {"first": free_port(), "second": free_port(), "gateway": free_port()}
    base = dict(os.environ, SHOPMESH_DATA_DIR=str(data), SHOPMESH_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
                SHOPMESH_NOTIFICATION_DATABASE_URL=postgres.create_database(),
                SHOPMESH_MAX_OPEN_STREAMS=str(args.streams + 100), SHOPMESH_MAX_CONCURRENT_RPCS=str(args.streams + 100),
                SHOPMESH_HTTP_IDLE_TIMEOUT_SECONDS="3600",
                # One benchmark client stands for N pages: no per-client share (REF ignores these).
                SHOPMESH_HTTP_MAX_STREAMS_PER_CLIENT="0", SHOPMESH_HTTP_MAX_CONNECTIONS_PER_CLIENT="0")
    processes: dict[str, subprocess.Popen] = {}
    streams: list[Stream] = []
    try:
        for name in ("first", "second"):
            processes[name] = start(tree, "notification", {
                **base, "SHOPMESH_NOTIFICATION_PORT": str(ports[name]),
                "SHOPMESH_NOTIFICATION_METRICS_PORT": str(free_port())}, data / f"notification-{name}.log")
            wait_port(f"127.0.0.1:{ports[name]}")
        processes["gateway"] = start(tree, "gateway", {
            **base, "SHOPMESH_GATEWAY_PORT": str(ports["gateway"]),
            "SHOPMESH_NOTIFICATION_ADDR": f"127.0.0.1:{ports['first']}"}, data / "gateway.log")
        deadline = time.monotonic() + 30
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", ports["gateway"])
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        started = time.monotonic()
        streams = [Stream(f"page-{n}") for n in range(args.streams)]
        opened = 0
        for i in range(0, len(streams), 200):  # a few hundred connections at a time
            batch = streams[i:i + 200]
            results = await asyncio.gather(*(s.open("127.0.0.1", ports["gateway"]) for s in batch),
                                           return_exceptions=True)
            opened += sum(1 for s, r in zip(batch, results, strict=True) if r is None and s.status == 200)
        open_seconds = time.monotonic() - started
        followers = [asyncio.create_task(s.follow()) for s in streams if s.status == 200]
        await asyncio.sleep(3)  # the last streams settle
        pids = {name: process.pid for name, process in processes.items()}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        await asyncio.sleep(args.idle)
        idle = {name: (cpu_seconds(pid) - before[name]) / args.idle for name, pid in pids.items()}
        latencies = []
        live = [s for s in streams if s.status == 200]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['second']}") as channel:
            stub = notification_pb2_grpc.NotificationServiceStub(channel)
            for n in range(args.events if live else 0):
                target = random.choice(live)
                sent = time.perf_counter()
                await stub.SendNotification(notification_pb2.SendNotificationRequest(
                    event_id=f"{label}-{n}", user_id=target.user, kind="bench.ping", subject="ping"), timeout=10)
                try:
                    arrived = await asyncio.wait_for(target.arrived.get(), 10)
                    latencies.append(1000 * (arrived - sent))
                except TimeoutError:
                    latencies.append(float("inf"))
                await asyncio.sleep(0.02)
        for follower in followers:
            follower.cancel()
        latencies.sort()
        return {"label": label, "opened": opened, "open_seconds": open_seconds, "idle": idle,
                "p50": statistics.median(latencies) if latencies else float("nan"),
                "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan"),
                "lost": sum(1 for x in latencies if x == float("inf"))}
    finally:
        for s in streams:
            s.close()
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="shopmesh-streams-"))
    baseline = None
    try:
        with throwaway_server(free_port()) as postgres:
            results = [await run(ROOT, "today", postgres, args, work)]
            if args.baseline:
                baseline = work / "baseline-tree"
                add_worktree(args.baseline, baseline)
                results.append(await run(baseline, args.baseline, postgres, args, work))
    finally:
        drop_worktree(baseline)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.streams} SSE streams through the gateway to notification instance 1 (PostgreSQL); idle "
          f"{args.idle}s, then {args.events} notifications written through instance 2, 20 ms apart\n")
    print("| code | streams open | opened in s | notification 1 idle CPU | notification 2 idle CPU "
          "| gateway idle CPU | event to page p50 ms | p99 ms | not arrived |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        idle = r["idle"]
        print(f"| {r['label']} | {r['opened']} | {r['open_seconds']:.1f} | {100 * idle['first']:.1f}% "
              f"| {100 * idle['second']:.1f}% | {100 * idle['gateway']:.1f}% | {r['p50']:.1f} | {r['p99']:.1f} "
              f"| {r['lost']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=10000)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of measured idleness")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--baseline", metavar="REF", help="also run the services of this git ref, e.g. 8e834ca")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, args.streams + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # for us and for the servers we start
    if wanted < args.streams + 100:
        sys.exit(f"{args.streams} streams need that many open files; the limit here is {hard}")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
