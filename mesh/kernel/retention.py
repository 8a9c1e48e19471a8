"""Retention: how old rows are purged without holding the write lock long, the same in every service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import TypeVar

from mesh.kernel.clock import now

Tx = TypeVar("Tx")

# Retention: old rows go PURGE_BATCH at a time, each batch its own short write transaction, so
# a purge never holds the write lock long; a service purges at most every PURGE_EVERY seconds.
PURGE_BATCH = 500
PURGE_EVERY = 60.0


async def in_batches(purge_one: Callable[[], Awaitable[int]]) -> int:
    """Runs `purge_one` (one write deleting at most PURGE_BATCH rows) until a batch comes back
    short, yielding to the event loop between batches; how many rows went in all."""
    purged = 0
    while True:
        gone = await purge_one()
        purged += gone
        if gone < PURGE_BATCH:
            return purged
        await asyncio.sleep(0)  # other transactions get the write lock between batches


async def purge_older(write: Callable[[], AbstractAsyncContextManager[Tx]],
                      delete: Callable[[Tx, datetime, int], Awaitable[int]], kept: timedelta, what: str,
                      log: logging.Logger) -> int:
    """Deletes the rows older than `kept` (from now), a batch per write transaction: `delete(tx,
    before, limit)` deletes at most `limit` of them and says how many. Logs `purged N {what} more
    than {kept} ago` when it purged any; how many."""
    before = now() - kept

    async def one_batch() -> int:
        async with write() as tx:
            return await delete(tx, before, PURGE_BATCH)

    purged = await in_batches(one_batch)
    if purged:
        log.info("purged %d %s more than %s ago", purged, what, kept)
    return purged
