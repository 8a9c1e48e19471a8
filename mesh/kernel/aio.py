"""asyncio done so that nothing leaks: no task left pending, no error left unread.

- `finish_anyway`: work that must run to its end even if the caller hangs up (an order's sale
  once its stock is held). It runs as its own task with its own deadline (downstream calls get
  the default call timeout, not what is left of an almost spent caller's), and its outcome is
  always read: the caller gets it if still there, else it is logged.
  `unfinished` waits for all of them (shutdown, before the database closes).
- `uncut`: one step (a database statement) run to its end even if the task awaiting it is
  cancelled meanwhile; the cancellation then goes on from there, at the step's boundary.
- `first_set`: wait for any of several events, or a timeout, leaving no waiter task behind
  however the wait ends (also when the waiting stream is cancelled).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from mesh.kernel import deadline

logger = logging.getLogger(__name__)

T = TypeVar("T")
_running: set[asyncio.Task[Any]] = set()  # strong references: the loop keeps only weak ones


async def finish_anyway(work: Coroutine[Any, Any, T], what: str) -> T:
    async def own_deadline() -> T:
        deadline.forget_deadline()  # this task's context only: the caller's deadline no longer binds it
        return await work

    task = asyncio.get_running_loop().create_task(own_deadline())
    _running.add(task)
    abandoned = False

    def done(finished: asyncio.Task[T]) -> None:
        _running.discard(finished)
        if finished.cancelled():
            logger.warning("%s was cancelled", what)
            return
        error = finished.exception()  # read here, always: never "Task exception was never retrieved"
        if abandoned and error is not None:
            logger.warning("%s failed after its caller left: %s", what, error)
        elif abandoned:
            logger.info("%s finished after its caller left", what)

    task.add_done_callback(done)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        abandoned = True
        raise


async def unfinished() -> None:
    """Returns once every `finish_anyway` task has ended (a stopping process waits for them, bounded,
    before it closes the database they write to)."""
    while _running:
        await asyncio.wait(set(_running))


async def uncut(step: Awaitable[T]) -> T:
    """`step` to its end even if this task is cancelled while it runs; then the cancellation goes
    on (CancelledError, as it would have been raised mid-step). Only for steps with a bound of
    their own (a statement under the server's statement and lock timeouts)."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:  # cancelled again: one CancelledError still follows
                pass
        if not task.cancelled():
            task.exception()  # read, whatever it is: the cancellation is the caller's answer
        raise


async def first_set(*events: asyncio.Event, timeout: float | None = None) -> bool:
    """Returns when any event is set (True) or `timeout` seconds pass (False)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return any(event.is_set() for event in events)
