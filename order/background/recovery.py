"""Settles what a crash or an outage left half-done, and records finished orders.

An order's attempt is recorded before inventory sells its stock, and ended in the
transaction that stores the order. An attempt older than the grace period (so calls in
flight on any instance finish first) lost its process or its caller between the two: it is
marked abandoned (from then on no call may store its order), its stock is returned if it was
sold and no order stands for it, and it is removed. A caller that retries with the same
request_id learns the outcome from inventory's replay.

With an inventory older than selling at once, an order is stored (with its event) before
inventory is asked to commit its reservation. If this process dies in between, or inventory
cannot be reached, the order is CONFIRMED with no `commit_time`. Every interval (and at
start), each instance looks for such orders older than the grace period and settles each one
way, never both:

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

from mesh.kernel.clock import now
from mesh.kernel.errors import FailedPrecondition, NotFound, ShopError, Unavailable
from order import domain
from order.domain import Attempt, Order
from order.ports import Inventory, Metrics, Outbox, Store

logger = logging.getLogger(__name__)

BATCH = 100
EXPIRED_REASON = "not completed in time: its stock reservation expired"


class Recovery:
    def __init__(self, store: Store, inventory: Inventory, outbox: Outbox, interval: float, grace: float,
                 metrics: Metrics):
        self._store = store
        self._inventory = inventory
        self._outbox = outbox
        self._metrics = metrics  # counts the orders recovery cancels
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
            except Unavailable as error:  # a database or a service out of reach (said where): next round
                logger.debug("could not record committed orders yet: %s", error)
                await asyncio.sleep(self._interval)
            except Exception:
                logger.exception("could not record committed orders; retrying")
                await asyncio.sleep(self._interval)

    async def run(self) -> None:
        while True:
            try:
                await self.mark_committed()
                while await self.settle_attempts() == BATCH:
                    pass
                while await self.resolve_pending() == BATCH:
                    pass
            except Unavailable as error:  # a database or a service out of reach (said where): next round
                logger.debug("resolving half-done orders waits: %s", error)
            except Exception:
                logger.exception("resolving half-done orders failed; retrying in %.1fs", self._interval)
            await asyncio.sleep(self._interval)

    async def settle_attempts(self) -> int:
        """Returns the stock of one batch of abandoned attempts; how many were settled."""
        async with self._store.read() as tx:
            stale = await tx.stale_attempts(now() - self._grace, BATCH)
        return sum([await self._settle(attempt) for attempt in stale])

    async def _settle(self, attempt: Attempt) -> bool:
        async with self._store.write() as tx:
            if not await tx.abandon_attempt(attempt.request_id):
                return True  # finished (or settled by another instance) since we read it
        async with self._store.read() as tx:
            stored = await tx.by_request(attempt.request_id)
        if stored is None:  # sold or not, no order stands for it: return what inventory took
            try:
                await self._inventory.release(attempt.reservation_id)
            except (FailedPrecondition, NotFound):
                pass  # refused, or the call never reached inventory: nothing was taken
            except ShopError as error:  # inventory unreachable: next round (the attempt stays abandoned)
                logger.warning("abandoned order attempt %s still waits for inventory: %s", attempt.request_id, error)
                return False
            logger.warning("order attempt %s abandoned by its caller or its process; its stock is back",
                           attempt.request_id)
        async with self._store.write() as tx:
            await tx.drop_attempt(attempt.request_id)
        return True

    async def resolve_pending(self) -> int:
        """Settles one batch of half-done orders; how many were settled."""
        async with self._store.read() as tx:
            pending = await tx.uncommitted(now() - self._grace, BATCH)
        return sum([await self._resolve(order) for order in pending])  # one at a time, in order

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
            self._metrics.orders("cancelled")
            logger.warning("order %s cancelled: %s (%s)", order.order_id, EXPIRED_REASON, why)
            self._outbox.kick(event.event_id)
