"""Delivers the outbox's events to notification, at least once, in the background.

`kick()` after a commit delivers at once, every event pending in one call (and one
transaction of notification's: BatchSendNotifications); a timer retries what could not be
delivered (notification down) with exponential backoff and jitter (up to
BACKOFF_CAP intervals apart), so the outbox drains by itself when it returns.
Several order instances may deliver one event twice; notification keeps one.

Delivered events are kept `retention` (SHOPMESH_OUTBOX_RETENTION_SECONDS, 7 days), then purged in
batches of PURGE_BATCH, each its own short write, at most every PURGE_EVERY seconds: at 100
orders a second the outbox would otherwise gain 8.6 million rows a day. An undelivered event is
never purged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from mesh.kernel.errors import DeadlineExceeded, ShopError, Unavailable
from mesh.kernel.retention import PURGE_EVERY, purge_older
from mesh.observe import telemetry
from order.domain import Event
from order.ports import Notifier, Store

logger = logging.getLogger(__name__)

BATCH = 64
# After a kick, how long the relay waits for more events to deliver in one call: a notification
# this much later, for a fraction of the calls and transactions per order (BENCHMARKS.md).
GATHER_SECONDS = 0.02
# Retries back off to at most this many intervals apart while deliveries keep failing.
BACKOFF_CAP = 15
MAX_REMEMBERED = 10_000


class OutboxRelay:
    def __init__(self, store: Store, notifier: Notifier, interval: float,
                 retention: timedelta = timedelta(days=7)):
        self._store = store
        self._notifier = notifier
        self._interval = interval
        self._retention = retention
        self._purged_at = time.monotonic()
        self._wake = asyncio.Event()
        self._failing = False
        # The trace each event was written in, so its delivery joins that trace.
        self._contexts: dict[str, Any] = {}

    def kick(self, event_id: str | None = None) -> None:
        """Deliver now; `event_id` was just written by the current request."""
        if event_id is not None and telemetry.enabled():
            from opentelemetry import context

            if len(self._contexts) > MAX_REMEMBERED:
                self._contexts.pop(next(iter(self._contexts)))
            self._contexts[event_id] = context.get_current()
        self._wake.set()

    async def _send(self, events: Sequence[Event]) -> None:
        # The call joins the trace of the first event written in one (a span has one parent).
        remembered = [c for c in (self._contexts.pop(e.event_id, None) for e in events) if c is not None]
        if not remembered:
            return await self._notifier.send(events)
        from opentelemetry import context

        token = context.attach(remembered[0])
        try:
            return await self._notifier.send(events)
        finally:
            context.detach(token)

    def backoff(self, failures: int) -> float:
        """Seconds before the next try after `failures` failed rounds in a row: doubling, capped, jittered."""
        if failures == 0:
            return self._interval
        ceiling = min(self._interval * 2 ** (failures - 1), self._interval * BACKOFF_CAP)
        return ceiling * random.uniform(0.8, 1.0)

    async def run(self) -> None:
        failures = 0
        while True:
            wait = self.backoff(failures)
            if failures:  # while notification is down, new orders' kicks do not hammer it
                await asyncio.sleep(wait)
            else:
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                    # Orders come in bursts: the events of the next few ms ride in the same call.
                    await asyncio.sleep(GATHER_SECONDS)
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                while await self.deliver_pending() == BATCH:
                    pass
                if time.monotonic() - self._purged_at >= PURGE_EVERY:
                    self._purged_at = time.monotonic()
                    await self.purge()
            except Unavailable as error:  # its database out of reach (said by mesh/data): next round
                logger.debug("outbox relay waits: %s", error)
            except Exception:
                logger.exception("outbox relay failed")
            failures = failures + 1 if self._failing else 0

    async def purge(self) -> int:
        """Deletes the events delivered more than `retention` ago, a batch per transaction."""
        return await purge_older(self._store.write, lambda tx, before, limit: tx.purge_delivered(before, limit),
                                 self._retention, "outbox events delivered", logger)

    async def deliver_pending(self) -> int:
        """Delivers one batch of pending events; how many were delivered."""
        async with self._store.read() as tx:
            events = await tx.pending_events(BATCH)
        if not events:
            return 0
        try:
            await self._send(events)
            results: list[BaseException | None] = [None] * len(events)
        except (Unavailable, DeadlineExceeded) as error:  # notification down or slow: all wait
            results = [error] * len(events)
        except ShopError:
            # The batch was refused for one of its events: one at a time, so the rest go through.
            results = await asyncio.gather(*(self._send([e]) for e in events), return_exceptions=True)
        delivered = [e.event_id for e, r in zip(events, results, strict=True) if r is None]
        failed = [(e.event_id, r) for e, r in zip(events, results, strict=True) if r is not None]
        async with self._store.write() if failed else self._store.write_one() as tx:
            if delivered:
                await tx.mark_delivered(delivered)
            if failed:
                await tx.record_failure([i for i, _ in failed], str(failed[0][1]))
        for _, error in failed:
            if not isinstance(error, ShopError):
                raise error
        if failed and not self._failing:
            logger.warning("cannot deliver %d event(s), will retry: %s", len(failed), failed[0][1])
        elif not failed and self._failing:
            logger.info("outbox delivering again")
        self._failing = bool(failed)
        return len(delivered)
