"""Inventory's background work, in one place: what every instance does while it serves."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from inventory import handlers
from inventory.ports import Metrics, Store
from mesh.kernel.errors import Unavailable
from mesh.kernel.retention import PURGE_EVERY

logger = logging.getLogger(__name__)


async def sweep_expired(store: Store, metrics: Metrics, interval: float, stopping: asyncio.Event,
                        settled_kept: timedelta = timedelta(days=7)) -> None:
    """The expiry loop every inventory instance runs (the guarded release lets exactly one win per
    reservation); it also purges what is kept too long."""
    purged_at = -PURGE_EVERY  # first round purges
    while not stopping.is_set():
        try:
            while await handlers.expire_reservations(store, metrics) == 100:
                pass
            if asyncio.get_running_loop().time() - purged_at >= PURGE_EVERY:
                purged_at = asyncio.get_running_loop().time()
                await handlers.purge_refusals(store)
                await handlers.purge_settled(store, settled_kept)
        except Unavailable as error:  # the database out of reach (said by mesh/data): next round
            logger.debug("expiring reservations waits: %s", error)
        except Exception:  # a locked database: try again next round
            logger.exception("expiring reservations failed")
        try:
            await asyncio.wait_for(stopping.wait(), interval)
        except TimeoutError:
            pass
