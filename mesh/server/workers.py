"""`SHOPMESH_WORKERS=N`: N processes of one service (or of the gateway) on its one port.

Python runs one core per process, so a service on a bigger machine needs more processes. As
gRPC Python's multiprocessing example does, each worker is a process of its own that binds the
same port with SO_REUSEPORT, and the kernel spreads new connections over them. This process
only supervises; it imports no gRPC and opens no socket:

- a service's database is migrated once, by `python -m mesh.data.migrate` run from here, before any
  worker starts: N workers migrating a new SQLite file at once raced for its first write
  (one saw "database is locked" before its busy timeout applied, in CI), and workers that find
  the schema at its newest revision only read it;
- every worker gets the supervisor's instance id (one Consul registration, whichever worker
  renews it) and `SHOPMESH_WORKER_OF`, which makes its sockets share the port;
- metrics are merged across workers by prometheus_client's multiprocess mode: each worker
  writes its series to files in a directory this process owns (`PROMETHEUS_MULTIPROC_DIR`),
  and whichever worker answers a scrape reports the sum (counters, histograms, gauges of
  things in flight) or the latest value (gauges read from the database);
- SIGTERM or SIGINT goes to every worker, each drains as a single process does, and this one
  exits when all have (0 if all exited 0);
- a worker that dies (kill -9, a crash) is started again after a second; one that dies within
  STARTUP_SECONDS of its start (bad settings, a port it cannot bind) stops the group instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from mesh.settings import DATABASE_SERVICES, Settings

logger = logging.getLogger(__name__)

STARTUP_SECONDS = 5.0
RESTART_AFTER = 1.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """A worker gets SIGKILL if its supervisor dies, even by kill -9: no orphan keeps the port."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Group:
    def __init__(self, command: Sequence[str], count: int, env: dict[str, str]):
        self._command = list(command)
        self._count = count
        self._env = env
        self._workers: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.stopping = False

    def start(self, index: int) -> None:
        # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which passes it on once.
        process = subprocess.Popen(self._command, env=self._env, preexec_fn=_die_with_parent, process_group=0)  # noqa: PLW1509
        self._workers[index] = (process, time.monotonic())
        logger.info("worker %d of %d started (pid %d)", index + 1, self._count, process.pid)

    def signal_all(self, signum: int) -> None:
        for process, _ in self._workers.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    def run(self) -> int:
        for index in range(self._count):
            self.start(index)
        codes: dict[int, int] = {}
        while len(codes) < self._count:
            time.sleep(0.1)
            for index, (process, started) in list(self._workers.items()):
                code = process.poll()
                if code is None or index in codes:
                    continue
                _forget_pid(process.pid)
                if self.stopping:
                    # Ended by the signal we passed on before it could take it (still starting):
                    # it had nothing to drain, so that is a clean stop too.
                    codes[index] = 0 if code in (-signal.SIGTERM, -signal.SIGINT) else code
                elif time.monotonic() - started < STARTUP_SECONDS:
                    logger.error("worker %d exited with %d within %gs of its start: stopping the others",
                                 index + 1, code, STARTUP_SECONDS)
                    self.stopping = True
                    codes[index] = code
                    self.signal_all(signal.SIGTERM)
                else:
                    logger.warning("worker %d (pid %d) exited with %d; starting it again", index + 1, process.pid, code)
                    time.sleep(RESTART_AFTER)
                    self.start(index)
        return next((code for code in codes.values() if code != 0), 0)


def _forget_pid(pid: int) -> None:
    """A dead worker's gauges of things in flight stop counting (its counters stay: they only grow)."""
    with contextlib.suppress(Exception):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def _migrate(service: str, settings: Settings, env: dict[str, str]) -> int:
    """The group's one migration, before its workers start; its exit code."""
    if service not in DATABASE_SERVICES:
        return 0
    done = subprocess.run([sys.executable, "-m", "mesh.data.migrate", service, "upgrade", "--database-url", settings.database_url],
                          env=env, stdout=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        logger.error("%s: the database could not be migrated (exit %d): no worker started", service, done.returncode)
    return done.returncode


def supervise(service: str, settings: Settings) -> int:
    """Runs `settings.workers` processes of `python -m <service>` until signalled; the exit code."""
    metrics_dir = tempfile.mkdtemp(prefix=f"shopmesh-{service}-metrics-")
    env = dict(os.environ, SHOPMESH_WORKERS="1", SHOPMESH_WORKER_OF=str(settings.workers),
               SHOPMESH_INSTANCE_ID=settings.instance_id, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # for mark_process_dead here
    group = Group([sys.executable, "-m", service, *sys.argv[1:]], settings.workers, env)  # its arguments too

    def stop(signum: int, _frame: object) -> None:
        if not group.stopping:
            logger.info("%s: stopping %d workers (%s)", service, settings.workers, signal.Signals(signum).name)
        group.stopping = True
        group.signal_all(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("%s: %d workers on port %d (SO_REUSEPORT)", service, settings.workers, settings.port)
    for concern in settings.concerns():
        if "SHOPMESH_WORKERS" in concern:  # the workers themselves see SHOPMESH_WORKERS=1
            logger.warning("%s", concern)
    try:
        migrated = _migrate(service, settings, env)
        return migrated if migrated != 0 else group.run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
