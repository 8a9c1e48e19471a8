"""gRPC benchmark: a bare grpc.aio ceiling, GetProduct, and CreateOrder end to end, in one run.

    .venv/bin/python scripts/bench_grpc.py [--duration 10] [--concurrency 32] [--baseline REF]
        [--open-loop 25,50,75] [--database sqlite|postgresql|pgbouncer|both|all] [--json FILE]

With `--database postgresql` the services keep their data on a throwaway PostgreSQL server
(Debian's binaries, started as the tests start it, on loopback); with `--database both` the same
services run twice, once on SQLite files and once on PostgreSQL, measured in the same interleaved
rounds, and the server's own CPU per request is shown beside the services'; `all` adds the same
services on that server through PgBouncer in transaction mode. On PostgreSQL the write-ahead log
written per request is measured too. `--json FILE` writes every measured figure, for
scripts/capacity.py.

With `--baseline REF` the three services as they were at git REF (a worktree of it, the same
venv) run beside today's, each with its own data, and every target is measured for both in
the same interleaved rounds, so the ratio is measured, not remembered. With `--open-loop`, each
target is then driven at those percentages of the rate it reached (ghz --rps, with enough
workers that the rate, not the answers, sets the pace): latency as users feel it.

Drives each target with ghz (from scripts/install-tools.sh) at a fixed
concurrency and prints requests/s, p50/p99 latency, errors and the server
processes' CPU per request (from /proc, user+system), next to the ceiling:
a bare grpc.aio server answering GetProduct with a constant Product (no
interceptor, no database) measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # so `python scripts/bench_grpc.py` works without an install

import grpc  # noqa: E402

from generated.shop.common.v1 import money_pb2  # noqa: E402
from generated.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and of its live children (a service's SHOPMESH_WORKERS)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / TICKS
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return own + sum(cpu_seconds(child) for child in children)


def add_worktree(ref: str, path: Path) -> None:
    """The checkout at git `ref`, detached, at `path`: a benchmark's baseline beside today's tree."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref], check=True,
                   capture_output=True)


def drop_worktree(path: Path | None) -> None:
    """Removes a baseline's worktree (nothing if there was none)."""
    if path is not None:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)


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


def run_ghz(address: str, method: str, data: dict, pids: list[int], args: argparse.Namespace,
            rps: int = 0, concurrency: int = 0, database_cpu: Callable[[], float] | None = None,
            wal: Callable[[], float] | None = None) -> dict:
    command = [
        ghz_path(), "--insecure", "--protoset", str(ROOT / "generated" / "shopmesh.protoset"),
        "--call", method, "-d", json.dumps(data),
        "-c", str(concurrency or args.concurrency), "--connections", str(args.connections), "-O", "json",
        *(["--rps", str(rps)] if rps else []),
    ]
    # A short warm-up so caches and connections are steady before measuring.
    subprocess.run([*command, "-n", str(max(rps, 50) if rps else 1000), address], capture_output=True, check=True)
    before = [cpu_seconds(p) for p in pids]
    database_before = database_cpu() if database_cpu else 0.0
    wal_before = wal() if wal else 0.0
    ghz_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # --duration-stop=wait: calls still in flight at the end finish and count, not show up as errors.
    timed = [*command, "-z", f"{args.duration}s", "--duration-stop", "wait", address]
    out = subprocess.run(timed, capture_output=True, text=True, check=True).stdout
    ghz_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ghz_cpu = (ghz_after.ru_utime + ghz_after.ru_stime) - (ghz_before.ru_utime + ghz_before.ru_stime)
    settle(pids)  # work the calls left behind (the outbox's deliveries) counts too, and cannot spill into the next run
    per_process = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
    cpu = sum(per_process)
    database = database_cpu() - database_before if database_cpu else None
    wal_written = wal() - wal_before if wal else None
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
        "database_cpu_ms": None if database is None else 1000 * database / max(ok, 1),
        "wal_bytes": None if wal_written is None else wal_written / max(ok, 1),
        "ghz_cpu_ms": 1000 * ghz_cpu / max(ok, 1),
        "ghz_cores": ghz_cpu / args.duration,
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


def start(args: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115


def start_services(tree: Path, work: Path, processes: dict[str, subprocess.Popen], tag: str,
                   workers: int = 1, databases: dict[str, str] | None = None,
                   settings: dict[str, str] | None = None) -> dict[str, int]:
    """inventory, notification and order from the checkout at `tree`, on their own ports and data
    (SQLite files, or `databases`: each service's database URL)."""
    data = work / (tag or "current")
    data.mkdir()
    env = dict(os.environ, SHOPMESH_DATA_DIR=str(data), SHOPMESH_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(tree), SHOPMESH_WORKERS=str(workers), **(settings or {}))
    ports = {name: free_port() for name in ("inventory", "order", "notification")}
    for name in ports:
        env[f"SHOPMESH_{name.upper()}_PORT"] = str(ports[name])
        env[f"SHOPMESH_{name.upper()}_METRICS_PORT"] = str(free_port())
        if databases:
            env[f"SHOPMESH_{name.upper()}_DATABASE_URL"] = databases[name]
    for name in ("inventory", "notification", "order"):
        processes[f"{name}{tag}"] = start([sys.executable, "-m", name], env, data / f"{name}.log", cwd=tree)
    for port in ports.values():
        wait_port(f"127.0.0.1:{port}")
    with grpc.insecure_channel(f"127.0.0.1:{ports['inventory']}") as channel:
        product = inventory_pb2.Product(
            sku="bench", name="Bench", price=money_pb2.Money(currency_code="USD", minor_units=100), available=10**9
        )
        inventory_pb2_grpc.InventoryServiceStub(channel).CreateProduct(inventory_pb2.CreateProductRequest(product=product))
    return ports


@dataclass(frozen=True)
class Target:
    """One thing ghz drives: a method at an address, the server processes whose CPU it costs, and
    (on PostgreSQL) the database server's CPU."""

    label: str
    address: str
    method: str
    data: dict
    pids: list[int]
    database_cpu: Callable[[], float] | None = None
    wal: Callable[[], float] | None = None


def targets_for(ports: dict[str, int], processes: dict[str, subprocess.Popen], tag: str, label: str,
                database: str = "SQLite", database_cpu: Callable[[], float] | None = None,
                wal: Callable[[], float] | None = None) -> list[Target]:
    pid = {name: processes[f"{name}{tag}"].pid for name in ports}
    suffix = f" @ {label}" if label else ""
    order = {"request_id": "{{newUUID}}", "user_id": "bench-{{.RequestNumber}}", "lines": [{"sku": "bench", "quantity": 1}]}
    return [
        Target(f"GetProduct (inventory + {database}){suffix}", f"127.0.0.1:{ports['inventory']}",
               "shop.inventory.v1.InventoryService.GetProduct", {"sku": "bench"}, [pid["inventory"]], database_cpu, wal),
        Target(f"CreateOrder end to end (3 services, {database}){suffix}", f"127.0.0.1:{ports['order']}",
               "shop.order.v1.OrderService.CreateOrder", order, [pid["order"], pid["inventory"], pid["notification"]],
               database_cpu, wal),
    ]


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
    parser.add_argument("--baseline", metavar="REF", help="also measure the services of this git ref, e.g. 8e834ca")
    parser.add_argument("--open-loop", metavar="PCTS", help="then drive each target at these %% of its rate")
    parser.add_argument("--open-loop-workers", type=int, default=200, help="ghz workers in open loop")
    parser.add_argument("--workers", type=int, default=1,
                        help="also measure today's services with SHOPMESH_WORKERS=N (use --connections > 1)")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "pgbouncer", "both", "all"), default="sqlite",
                        help="where the services keep their data (pgbouncer: PostgreSQL through PgBouncer in "
                             "transaction mode); both: SQLite and PostgreSQL, all: the three, in the same rounds")
    parser.add_argument("--json", metavar="FILE", help="also write every measured figure to FILE (scripts/capacity.py reads it)")
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        asyncio.run(serve_echo(args.serve_echo))
        return

    work = Path(tempfile.mkdtemp(prefix="shopmesh-bench-"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    echo_port = free_port()
    processes: dict[str, subprocess.Popen] = {}
    baseline = None
    with contextlib.ExitStack() as servers:
        try:
            processes["echo"] = start([sys.executable, __file__, "--serve-echo", str(echo_port)], env, work / "echo.log")
            wait_port(f"127.0.0.1:{echo_port}")
            rows = [Target("ceiling: bare grpc.aio GetProduct", f"127.0.0.1:{echo_port}",
                           "shop.inventory.v1.InventoryService.GetProduct", {"sku": "bench"}, [processes["echo"].pid])]
            # Today's services on each database asked for; the baseline and the workers on the first.
            databases = {"both": ("sqlite", "postgresql"), "all": ("sqlite", "postgresql", "pgbouncer")}.get(
                args.database) or (args.database,)
            first = databases[0]
            postgres = bouncer = None
            if set(databases) & {"postgresql", "pgbouncer"}:
                from tests.support.postgres import PgBouncer, throwaway_server

                postgres = servers.enter_context(throwaway_server(free_port()))
                if "pgbouncer" in databases:
                    bouncer = PgBouncer(postgres, free_port())
                    bouncer.start()
                    servers.callback(bouncer.stop)

            def on(database: str, tree: Path, tag: str, label: str, workers: int = 1) -> list[Target]:
                if database == "sqlite":
                    return targets_for(start_services(tree, work, processes, tag, workers), processes, tag, label)
                where = bouncer if database == "pgbouncer" else postgres
                urls = {name: where.create_database() for name in ("inventory", "order", "notification")}
                ports = start_services(tree, work, processes, tag, workers, databases=urls, settings=where.settings())
                name = "PostgreSQL via PgBouncer" if database == "pgbouncer" else "PostgreSQL"
                return targets_for(ports, processes, tag, label, name, where.cpu_seconds, postgres.wal_bytes)

            today = {database: on(database, ROOT, "" if database == first else f"-{database}", "")
                     for database in databases}
            for found in today.values():
                rows += found
            if args.baseline:
                baseline = work / "baseline-tree"
                add_worktree(args.baseline, baseline)
                then = on(first, baseline, "-baseline", args.baseline)
                rows += then
            if args.workers > 1:
                many = on(first, ROOT, f"-w{args.workers}", f"{args.workers} workers", args.workers)
                rows += many
            rounds: dict[str, list[dict]] = {row.label: [] for row in rows}
            for round_ in range(args.repeat):  # interleaved, so a noisy moment hits every target alike
                for row in rows:
                    print(f"round {round_ + 1}: {row.label} for {args.duration}s ...", file=sys.stderr, flush=True)
                    rounds[row.label].append(run_ghz(row.address, row.method, row.data, row.pids, args,
                                                     database_cpu=row.database_cpu, wal=row.wal))
            results = {label: sorted(runs, key=lambda r: r["rps"])[len(runs) // 2] for label, runs in rounds.items()}
            report(rows, results, args)
            if args.json:
                Path(args.json).write_text(json.dumps({
                    "command": " ".join(["scripts/bench_grpc.py", *sys.argv[1:]]), "cores": os.cpu_count(),
                    "duration": args.duration, "concurrency": args.concurrency,
                    "pool_size": int(os.environ.get("SHOPMESH_DATABASE_POOL_SIZE", "10")),
                    "targets": {row.label: results[row.label] for row in rows}}, indent=2) + "\n")
            by = results
            if args.baseline:
                for now, was in zip(today[first], then, strict=True):
                    a, b = by[now.label], by[was.label]
                    print(f"\n{now.label}: {a['rps'] / b['rps']:.2f}x the requests/s of {args.baseline}, "
                          f"{a['cpu_ms'] / b['cpu_ms']:.2f}x its CPU per request")
            if args.workers > 1:
                for one, several in zip(today[first], many, strict=True):
                    a, b = by[several.label], by[one.label]
                    print(f"\n{several.label}: {a['rps'] / b['rps']:.2f}x the requests/s of 1 worker, "
                          f"{a['cpu_ms'] / b['cpu_ms']:.2f}x its CPU per request")
            for database in ("postgresql", "pgbouncer"):
                if "sqlite" not in today or database not in today:
                    continue
                for lite, pg in zip(today["sqlite"], today[database], strict=True):
                    a, b = by[pg.label], by[lite.label]
                    print(f"\n{pg.label}: {a['cpu_ms'] / b['cpu_ms']:.2f}x SQLite's services' CPU per request "
                          f"({a['cpu_ms']:.3f} vs {b['cpu_ms']:.3f} ms), {a['rps'] / b['rps']:.2f}x its requests/s; "
                          f"PostgreSQL's own CPU {a['database_cpu_ms']:.3f} ms per request")
            if args.open_loop:
                open_loop(rows[1:], results, args)
        finally:
            stop_all(processes.values())
            drop_worktree(baseline)
            shutil.rmtree(work, ignore_errors=True)


def report(rows: list[Target], results: dict[str, dict], args: argparse.Namespace) -> None:
    ceiling = results[rows[0].label]["rps"]
    print(f"\nghz -c {args.concurrency} -z {args.duration}s --connections {args.connections} "
          f"on {os.cpu_count()} cores (ghz shares them); median of {args.repeat} interleaved rounds\n")
    print("| target | requests/s | % of ceiling | p50 ms | p99 ms | errors | server CPU ms/request "
          "| database server CPU ms/request | ghz CPU ms/request (cores) |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for row in rows:
        r = results[row.label]
        each = " + ".join(f"{c:.2f}" for c in r["cpu_ms_each"]) if len(r["cpu_ms_each"]) > 1 else ""
        database = "" if r["database_cpu_ms"] is None else f"{r['database_cpu_ms']:.3f}"
        if r["wal_bytes"] is not None:
            database += f" ({r['wal_bytes']:.0f} B WAL)"
        print(f"| {row.label} | {r['rps']:.0f} | {100 * r['rps'] / ceiling:.0f}% | {r['p50']:.2f} | {r['p99']:.2f} "
              f"| {r['errors'] or 'none'} | {r['cpu_ms']:.3f}{f' ({each})' if each else ''} | {database} "
              f"| {r['ghz_cpu_ms']:.3f} ({r['ghz_cores']:.2f}) |")
    print("\nCreateOrder's CPU is order + inventory + notification. CPU is user+system time of the server")
    print("processes from /proc over the measured run, divided by the successful calls; the database")
    print("server's (PostgreSQL: the postmaster and its backends; and PgBouncer where it is between) is its")
    print("own column, with the write-ahead log written per request.")


def open_loop(rows: list[Target], closed: dict[str, dict], args: argparse.Namespace) -> None:
    """Each target at fixed shares of the rate it reached closed-loop: latency at a given load."""
    shares = [int(x) for x in args.open_loop.split(",")]
    print(f"\nOpen loop: ghz --rps at {', '.join(f'{x}%' for x in shares)} of each target's closed-loop rate, "
          f"-c {args.open_loop_workers} workers, {args.duration}s each\n")
    print("| target | load | requests/s sent | p50 ms | p99 ms | errors | server CPU ms/request |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for row in rows:
        for share in shares:
            rate = max(int(closed[row.label]["rps"] * share / 100), 1)
            r = run_ghz(row.address, row.method, row.data, row.pids, args, rps=rate, concurrency=args.open_loop_workers)
            print(f"| {row.label} | {share}% | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                  f"{r['errors'] or 'none'} | {r['cpu_ms']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
