"""Notification's use cases: send once per event, list, and follow a user live."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta

from mesh.kernel import aio, paging, retention
from mesh.kernel.errors import Duplicate
from notification import domain
from notification.domain import Notification
from notification.ports import Metrics, Store

logger = logging.getLogger(__name__)

STREAM_BATCH = 100

class Wakeups:
    """Wakes this process's streams of a user when a notification for them is stored.

    At once for one this process stored; for one another instance stored, when the process's one
    watcher (`watch`) sees it. An idle stream costs nothing: it waits, it never polls.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}
        # Set once the watcher follows other instances (LISTENing on PostgreSQL, its first read done).
        self.following = asyncio.Event()

    def notify(self, user_id: str) -> None:
        for event in self._waiting.get(user_id, ()):
            event.set()

    @property
    def watched(self) -> bool:
        return bool(self._waiting)

    def subscribe(self, user_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiting.setdefault(user_id, set()).add(event)
        return event

    def unsubscribe(self, user_id: str, event: asyncio.Event) -> None:
        waiting = self._waiting.get(user_id)
        if waiting is not None:
            waiting.discard(event)
            if not waiting:
                del self._waiting[user_id]


CHANNEL = "shopmesh_notifications"  # where each instance announces a user's new notification


async def send_notification(store: Store, metrics: Metrics, wakeups: Wakeups, wanted: Notification) -> Notification:
    """Stores and delivers the notification; the same event again returns the first one."""
    try:
        async with store.write_one() as tx:
            [stored] = await tx.insert_many([wanted], CHANNEL)
    except Duplicate:  # this event was stored before, or concurrently
        async with store.read() as tx:
            existing = await tx.by_event(wanted.event_id)
        if existing is None or not existing.same_event(wanted):
            raise domain.EventConflict(wanted.event_id) from None
        return existing
    metrics.sent(1)
    logger.info("notified user %s: %s (%s)", stored.user_id, stored.subject, stored.event_id)
    wakeups.notify(stored.user_id)
    return stored


async def send_notifications(store: Store, metrics: Metrics, wakeups: Wakeups,
                             wanted: Sequence[Notification]) -> list[Notification]:
    """Stores and delivers them in one statement, all or none, in the order given; an event
    stored before, or earlier in the same batch, gives back its first notification (and
    delivers nothing new), as SendNotification does for a repeat."""
    unique: dict[str, Notification] = {}
    for w in wanted:
        first = unique.setdefault(w.event_id, w)
        if not first.same_event(w):
            raise domain.EventConflict(w.event_id)
    # A Duplicate means a concurrent call stored (and committed: the unique check waits for it)
    # an event of ours since our read, so the next read knows at least one more: one attempt
    # more than there are events always ends, however many calls race (relays retrying a batch
    # after the database came back, say).
    for attempt in range(len(unique) + 1):
        try:
            async with store.read() as tx:
                known = await tx.by_events(list(unique))
            for w in unique.values():
                if w.event_id in known and not known[w.event_id].same_event(w):
                    raise domain.EventConflict(w.event_id)
            async with store.write_one() as tx:  # stored between the read and this: Duplicate, read again
                new = await tx.insert_many([w for w in unique.values() if w.event_id not in known], CHANNEL)
            break
        except Duplicate:  # a concurrent call stored one of them first: read it this time
            if attempt == len(unique):
                raise
    metrics.sent(len(new))
    for stored in new:
        logger.info("notified user %s: %s (%s)", stored.user_id, stored.subject, stored.event_id)
        wakeups.notify(stored.user_id)
    by_event = {**known, **{n.event_id: n for n in new}}
    return [by_event[w.event_id] for w in wanted]


async def list_notifications(
    store: Store, user_id: str, page_size: int, page_token: str
) -> tuple[list[Notification], str]:
    domain.check_user_id(user_id)
    limit = paging.page_size(page_size)
    query = {"user_id": user_id}
    position = paging.decode_token(page_token, query=query, before=int)
    async with store.read() as tx:
        found = await tx.for_user(user_id, before=position["before"] if position else None, limit=limit + 1)
    return paging.page(found, limit, lambda notification: {"before": notification.sequence}, query)


async def resume_point(store: Store, user_id: str, resume_after: str) -> int | None:
    """Where a resumed stream starts: after the caller's last notification (None: only new ones)."""
    if not resume_after:
        return None
    async with store.read() as tx:
        start = await tx.sequence_of(resume_after, domain.check_user_id(user_id))
    if start is None:
        raise domain.UnknownResumePoint(resume_after, user_id)
    return start


async def stream_notifications(
    store: Store,
    metrics: Metrics,
    wakeups: Wakeups,
    user_id: str,
    stopping: asyncio.Event,
    start: int | None = None,
    opened: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[Notification]:
    """Every notification for `user_id` stored after the call starts (or after `start`, from
    `resume_point`), until `stopping`. It reads when woken (`Wakeups`), never on a timer.
    `opened` is awaited once the stream follows the user and knows where it starts: whatever is
    stored after it is delivered."""
    domain.check_user_id(user_id)
    wake = wakeups.subscribe(user_id)
    counted = False
    try:
        if start is None:
            async with store.read() as tx:
                start = await tx.last_sequence(user_id)
        if opened is not None:
            await opened()
        # Counted (and logged) as open once it follows the user: the gauge moving is a signal too.
        metrics.streams(+1)
        counted = True
        logger.info("stream opened for user %s", user_id)
        last = start
        while not stopping.is_set():
            wake.clear()
            async with store.read() as tx:
                fresh = await tx.for_user(user_id, after=last, limit=STREAM_BATCH)
            for notification in fresh:
                last = notification.sequence
                yield notification
            if len(fresh) == STREAM_BATCH:
                continue
            await aio.first_set(wake, stopping)
    finally:
        wakeups.unsubscribe(user_id, wake)
        if counted:
            metrics.streams(-1)
            logger.info("stream closed for user %s", user_id)


async def purge_old(store: Store, kept: timedelta) -> int:
    """Forgets notifications stored more than `kept` ago, a batch per transaction. After that an
    event sent again would be notified afresh: `kept` is far longer than any redelivery waits."""
    return await retention.purge_older(store.write, lambda tx, before, limit: tx.purge_older(before, limit), kept,
                                       "notifications stored", logger)
