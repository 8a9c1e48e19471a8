"""Finishes orders that a crash or an outage left half-done, and records finished ones.

An order is stored (with its event) before inventory is asked to commit its
reservation. If this process dies in between, or inventory cannot be reached,
the order is CONFIRMED with no `commit_time`. Every interval (and at start),
each instance looks for such orders older than the grace period (so calls in
flight on any instance finish first) and settles each one way, never both:

- inventory commits the reservation (idempotent): the order is marked committed;
- the reservation expired or was released: the stock is gone, so the order is
  cancelled, with its "cancelled" event for notification;
- inventory cannot be reached: left for the next round.

Successful commits of new orders are marked in batches; if a mark is lost in a
crash, the next round commits again, which inventory answers as a replay.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Protocol

from mesh.clock import now
from mesh.errors import FailedPrecondition, NotFound, ShopError
from order import domain
from order.domain import Order
from order.handlers import ORDERS
from order.store import OrderStore

logger = logging.getLogger(__name__)

BATCH = 100
EXPIRED_REASON = "not completed in time: its stock reservation expired"


class Inventory(Protocol):
    async def commit(self, reservation_id: str) -> None: ...


class Outbox(Protocol):
    def kick(self, event_id: str | None = None) -> None: ...


class Recovery:
    def __init__(self, store: OrderStore, inventory: Inventory, outbox: Outbox, interval: float, grace: float):
        self._store = store
        self._inventory = inventory
        self._outbox = outbox
        self._interval = interval
        self._grace = timedelta(seconds=grace)
        self._committed: set[str] = set()
        self._flush = asyncio.Event()

    def committed(self, order_id: str) -> None:
        """Inventory committed this order's reservation; recorded with the next batch."""
        self._committed.add(order_id)
        self._flush.set()

    async def mark_committed(self) -> None:
        if not self._committed:
            return
        done, self._committed = list(self._committed), set()
        try:
            async with self._store.write() as tx:
                await tx.mark_committed(done)
        except BaseException:
            self._committed.update(done)
            raise

    async def run_marks(self) -> None:
        while True:
            await self._flush.wait()
            await asyncio.sleep(0.05)  # gather the commits of a burst into one write
            self._flush.clear()
            try:
                await self.mark_committed()
            except Exception:
                logger.exception("could not record committed orders; retrying")
                await asyncio.sleep(self._interval)

    async def run(self) -> None:
        while True:
            try:
                await self.mark_committed()
                while await self.resolve_pending() == BATCH:
                    pass
            except Exception:
                logger.exception("resolving half-done orders failed; retrying in %.1fs", self._interval)
            await asyncio.sleep(self._interval)

    async def resolve_pending(self) -> int:
        """Settles one batch of half-done orders; how many were settled."""
        async with self._store.read() as tx:
            pending = await tx.uncommitted(now() - self._grace, BATCH)
        settled = 0
        for order in pending:
            if await self._resolve(order):
                settled += 1
        return settled

    async def _resolve(self, order: Order) -> bool:
        try:
            await self._inventory.commit(order.reservation_id)
        except (FailedPrecondition, NotFound) as error:  # expired or released: no stock to sell
            await self._cancel(order, str(error))
            return True
        except ShopError as error:  # inventory unreachable: next round
            logger.warning("order %s still waits for inventory: %s", order.order_id, error)
            return False
        async with self._store.write() as tx:
            await tx.mark_committed([order.order_id])
        logger.info("order %s completed after an interruption", order.order_id)
        return True

    async def _cancel(self, order: Order, why: str) -> None:
        event = None
        async with self._store.write() as tx:
            cancelled = await tx.cancel(order, EXPIRED_REASON)
            if cancelled is not None:
                event = domain.cancelled_event(cancelled, EXPIRED_REASON)
                await tx.add_event(event)
            await tx.mark_committed([order.order_id])  # settled: nothing left to commit
        if event is not None:
            ORDERS.labels("cancelled").inc()
            logger.warning("order %s cancelled: %s (%s)", order.order_id, EXPIRED_REASON, why)
            self._outbox.kick(event.event_id)
