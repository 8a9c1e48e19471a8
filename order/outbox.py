"""Delivers the outbox's events to notification, at least once, in the background.

`kick()` after a commit delivers at once; a timer retries what could not be
delivered (notification down), so the outbox drains by itself when it returns.
Several order instances may deliver one event twice; notification keeps one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from mesh.errors import ShopError
from order.domain import Event
from order.store import OrderStore

logger = logging.getLogger(__name__)

BATCH = 64


class Notifier(Protocol):
    async def send(self, event: Event) -> None: ...


class OutboxRelay:
    def __init__(self, store: OrderStore, notifier: Notifier, interval: float):
        self._store = store
        self._notifier = notifier
        self._interval = interval
        self._wake = asyncio.Event()
        self._failing = False

    def kick(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                while await self.deliver_pending() == BATCH:
                    pass
            except Exception:
                logger.exception("outbox relay failed; retrying in %.1fs", self._interval)

    async def deliver_pending(self) -> int:
        """Delivers one batch of pending events; how many were delivered."""
        async with self._store.read() as tx:
            events = await tx.pending_events(BATCH)
        if not events:
            return 0
        results = await asyncio.gather(*(self._notifier.send(e) for e in events), return_exceptions=True)
        delivered = [e.event_id for e, r in zip(events, results, strict=True) if r is None]
        failed = [(e.event_id, r) for e, r in zip(events, results, strict=True) if r is not None]
        async with self._store.write() as tx:
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
