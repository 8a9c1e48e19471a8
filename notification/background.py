"""Notification's background work, in one place: the process's one watcher of what other
instances stored, which wakes this process's streams."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from mesh.kernel import aio
from mesh.kernel.errors import Unavailable
from mesh.kernel.retention import PURGE_EVERY
from notification import handlers
from notification.handlers import CHANNEL, Wakeups
from notification.ports import Store

logger = logging.getLogger(__name__)

WATCH_BATCH = 1000
# Sequences are taken at insert and become visible at commit, so on PostgreSQL a row may appear
# behind one already seen: each round looks this far back too (waking a stream for nothing costs
# one read; missing one would leave a notification waiting for the next).
LOOKBACK = 256


async def watch(store: Store, wakeups: Wakeups, interval: float, stopping: asyncio.Event) -> None:
    """The process's one reader of notifications other instances stored. On PostgreSQL it
    LISTENs: every instance's commit NOTIFYs the user's id, and their streams wake at once. It
    also reads (everywhere; the only way on SQLite, and a net should a NOTIFY be missed) every
    `interval` while any stream is open: one query, and the streams of the users it names wake."""
    async with store.listening(CHANNEL, wakeups.notify) as listening:
        if listening:
            logger.info("streams follow other instances through LISTEN %s", CHANNEL)
        await _poll(store, wakeups, interval, stopping)


async def _poll(store: Store, wakeups: Wakeups, interval: float, stopping: asyncio.Event) -> None:
    async with store.read() as tx:
        mark = await tx.max_sequence()
        # The sequences within LOOKBACK of `mark` already stored (streams read those themselves).
        seen = {sequence for sequence, _ in await tx.users_after(max(mark - LOOKBACK, 0), WATCH_BATCH)}
    wakeups.following.set()
    while not await aio.first_set(stopping, timeout=interval):
        if not wakeups.watched:
            continue
        try:
            async with store.read() as tx:
                fresh = await tx.users_after(max(mark - LOOKBACK, 0), WATCH_BATCH)
        except Unavailable as error:  # the database out of reach (said by mesh/data): next round
            logger.debug("watching for notifications waits: %s", error)
            continue
        except Exception:  # a locked database: next round
            logger.exception("watching for notifications failed")
            continue
        for sequence, user_id in fresh:
            if sequence not in seen:
                wakeups.notify(user_id)
            seen.add(sequence)
            mark = max(mark, sequence)
        seen = {s for s in seen if s > mark - LOOKBACK}


async def purge(store: Store, kept: timedelta, stopping: asyncio.Event) -> None:
    """Notifications past their retention go, at most every PURGE_EVERY seconds, a batch at a time."""
    while True:
        try:
            await handlers.purge_old(store, kept)
        except Unavailable as error:  # the database out of reach (said by mesh/data): next round
            logger.debug("purging notifications waits: %s", error)
        except Exception:  # a locked database: next round
            logger.exception("purging notifications failed")
        if await aio.first_set(stopping, timeout=PURGE_EVERY):
            return
