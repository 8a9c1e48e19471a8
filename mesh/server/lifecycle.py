"""How every process of the mesh stops: one path for the gRPC services and the gateway.

On SIGTERM or SIGINT:

1. not ready: gRPC health NOT_SERVING (a service) or `/readyz` 503 (the gateway), so probes and
   balancers move traffic away, and long-lived streams are told to end;
2. `SHOPMESH_SHUTDOWN_DRAIN_SECONDS` pass so they can act on it (with Consul: until its check
   has seen it, then the instance deregisters);
3. it stops accepting; calls and requests in flight get `SHOPMESH_SHUTDOWN_GRACE_SECONDS` to
   finish, open streams end cleanly;
4. it closes what it holds (database, channels, discovery) and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable
from typing import Protocol

from mesh.client.discovery import Discovery
from mesh.settings import Settings

logger = logging.getLogger(__name__)


class Stoppable(Protocol):
    not_ready_means: str  # what "not ready" is for this process, for the log line

    async def not_ready(self) -> None: ...
    async def stop(self, grace: float) -> None: ...
    async def close(self) -> None: ...


async def until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


CLOSE_SECONDS = 10.0  # what closing (database, channels) may take once calls have stopped
STEP_MARGIN = 5.0  # what a step may take past its own bound before it is given up on


async def shut_down(target: Stoppable, settings: Settings, discovery: Discovery | None = None) -> None:
    """The steps above, each bounded: a step that hangs is given up on, with the tasks still
    waiting logged, so a stopping process always exits within drain + grace + a few seconds.
    (An order process under load was seen to hang here twice in ~165 SIGTERMs, its event loop
    idle; which step waited is what that log line will tell.)"""
    logger.info("shutting down: %s", target.not_ready_means)
    await _bounded(target.not_ready(), STEP_MARGIN, "turning not ready")
    if discovery is not None and settings.discovery == "consul":
        # Consul's gRPC check sees NOT_SERVING; then clients' blocking queries drop us (a moment
        # later), and only then do we leave the catalog and stop taking calls.
        loop = asyncio.get_running_loop()
        started = loop.time()
        await discovery.wait_unhealthy(settings.consul_check_interval * 3 + 2)
        await asyncio.sleep(max(settings.shutdown_drain - (loop.time() - started), 0.5))
        await _bounded(discovery.deregister(), STEP_MARGIN, "leaving Consul")
    elif settings.shutdown_drain:
        await asyncio.sleep(settings.shutdown_drain)
    await _bounded(target.stop(settings.shutdown_grace), settings.shutdown_grace + STEP_MARGIN,
                   "stopping the calls in flight", tell_after=settings.shutdown_grace / 2)
    await _bounded(target.close(), CLOSE_SECONDS, "closing")
    if discovery is not None:
        await _bounded(discovery.close(), STEP_MARGIN, "closing discovery")
    logger.info("stopped")


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
    await asyncio.wait({task}, timeout=1)


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
