"""Retention: how old rows are purged without holding the write lock long, the same in every service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

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
