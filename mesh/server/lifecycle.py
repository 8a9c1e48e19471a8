"""How every process of the mesh stops: one path for the gRPC services and the gateway.

On SIGTERM or SIGINT:

1. not ready: gRPC health NOT_SERVING (a service) or `/readyz` 503 (the gateway), so probes and
   balancers move traffic away, and long-lived streams are told to end;
2. `SHOPMESH_SHUTDOWN_DRAIN_SECONDS` pass so they can act on it (with Consul: until its check
   has seen it, then the instance deregisters);
3. it stops accepting; calls and requests in flight get `SHOPMESH_SHUTDOWN_GRACE_SECONDS` to
   finish, open streams end cleanly; what gRPC still holds at the grace's end is cancelled;
4. work that must finish after its caller left (`mesh.kernel.aio.finish_anyway`: an order's
   sale being stored) gets what is left of the budget, then it closes what it holds (database,
   channels, discovery) and the process exits 0.

From the end of the drain the process has `grace + EXIT_MARGIN` seconds, all told: each step
gets what is left of that budget, a step that overruns it is given up on with what it waited
for logged, and a watchdog ends a process that is still there at the budget's end (its threads'
stacks logged first). So `terminationGracePeriodSeconds` = drain + grace + a margin always holds.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable
from typing import Protocol

from mesh.client.discovery import Discovery
from mesh.kernel import aio
from mesh.settings import Settings

logger = logging.getLogger(__name__)


class Stoppable(Protocol):
    not_ready_means: str  # what "not ready" is for this process, for the log line

    async def not_ready(self) -> None: ...
    async def stop(self, grace: float) -> None: ...  # returns by grace + STOP_MARGIN, whatever it held
    async def close(self) -> None: ...


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


EXIT_MARGIN = 1.5  # seconds past drain + grace by which the process has exited, closing included
STOP_MARGIN = 0.5  # seconds past the grace that stopping the calls may take (cancelling what is left)
CLOSE_RESERVE = 0.5  # of the budget, kept for closing: work left behind waits at most until then
NOT_READY_SECONDS = 2.0  # what turning not ready (setting health, leaving Consul) may take
WATCHDOG_SLACK = 0.3  # the watchdog fires this long after the budget: the steps' own bounds come first


async def shut_down(target: Stoppable, settings: Settings, discovery: Discovery | None = None) -> None:
    """The steps above, within one budget. (An order process under load was seen to hang past its
    grace twice in ~165 SIGTERMs, and once in a few thousand past grace + 5 s: whichever step
    waited is what the log lines below name.)"""
    logger.info("shutting down: %s", target.not_ready_means)
    loop = asyncio.get_running_loop()
    await _bounded(target.not_ready(), NOT_READY_SECONDS, "turning not ready")
    if discovery is not None and settings.discovery == "consul":
        # Consul's gRPC check sees NOT_SERVING; then clients' blocking queries drop us (a moment
        # later), and only then do we leave the catalog and stop taking calls.
        started = loop.time()
        await discovery.wait_unhealthy(settings.consul_check_interval * 3 + 2)
        await asyncio.sleep(max(settings.shutdown_drain - (loop.time() - started), 0.5))
        await _bounded(discovery.deregister(), NOT_READY_SECONDS, "leaving Consul")
    elif settings.shutdown_drain:
        await asyncio.sleep(settings.shutdown_drain)
    budget_end = loop.time() + settings.shutdown_grace + EXIT_MARGIN
    if _watchdog_armed:
        watchdog(settings.shutdown_grace + EXIT_MARGIN + WATCHDOG_SLACK)

    def left(keep: float = 0.0) -> float:
        return max(budget_end - keep - loop.time(), 0.1)

    await _bounded(target.stop(settings.shutdown_grace), settings.shutdown_grace + STOP_MARGIN,
                   "stopping the calls in flight", tell_after=settings.shutdown_grace / 2)
    await _bounded(aio.unfinished(), left(keep=CLOSE_RESERVE), "finishing what callers left behind")
    await _bounded(target.close(), left(), "closing")
    if discovery is not None:
        await _bounded(discovery.close(), left(), "closing discovery")
    logger.info("stopped")


_watchdog_armed = False


def arm_watchdog() -> None:
    """Called by a process's entry point (`bootstrap.start_process`): its shutdown ends the process
    at the budget's end. (Never in a test's own process, where servers run in-process.)"""
    global _watchdog_armed
    _watchdog_armed = True


def watchdog(seconds: float) -> None:
    """A process still running `seconds` from now is ended (exit 0: it was asked to stop, and what
    it had not finished is rolled back by its database as after a crash), its threads' stacks
    logged first. A daemon thread: a process that exits in time takes it along."""

    def expire() -> None:
        logger.warning("shutdown: still running %g s after the drain, past its budget; exiting now. "
                       "Threads:", seconds)
        for handler in logging.getLogger().handlers:
            handler.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(0)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


async def _bounded(step: Awaitable[None], seconds: float, what: str, tell_after: float | None = None) -> None:
    """`step`, given up on after `seconds`; if it is still running after `tell_after`, what it waits
    for is logged then (calls in flight that hold a shutdown are named while they still run)."""
    task = asyncio.ensure_future(step)
    if tell_after is not None and tell_after < seconds:
        done, _ = await asyncio.wait({task}, timeout=tell_after)
        if task not in done:
            logger.warning("shutdown: %s still waiting after %g s. Tasks:\n%s", what, tell_after, task_stacks())
        seconds -= tell_after
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        task.result()  # its error, if any, is the caller's to hear
        return
    # The stacks while it still waits (after cancelling, they would show only the cancellation).
    logger.warning("shutdown: %s took more than %g s; going on without it. Tasks still waiting:\n%s",
                   what, seconds, task_stacks())
    task.cancel()
    await asyncio.wait({task}, timeout=0.1)  # its cleanup, if quick; the budget goes on regardless


def task_stacks() -> str:
    """Each task's await chain, outermost first, down to what it waits on (asyncio's own
    `print_stack` shows only the outermost frame of a suspended task)."""
    found = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        lines = [f"{task.get_name()}:"]
        awaited: object = task.get_coro()
        while awaited is not None:
            frame = next((getattr(awaited, a) for a in ("cr_frame", "gi_frame", "ag_frame")
                          if getattr(awaited, a, None) is not None), None)
            if frame is None:
                # The future itself (a FutureIter says nothing); asyncio keeps it on the task.
                lines.append(f"  waiting on {getattr(task, '_fut_waiter', None) or awaited!r}"[:300])
                break
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
            awaited = next((getattr(awaited, a) for a in ("cr_await", "gi_yieldfrom", "ag_await")
                            if getattr(awaited, a, None) is not None), None)
        found.append("\n".join(lines))
    return "\n".join(found)
