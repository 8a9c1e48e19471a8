"""Notification's use cases: send once per event, list, and follow a user live."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence

from prometheus_client import Counter, Gauge
from sqlalchemy.exc import IntegrityError

from mesh.kernel import aio, paging
from notification import domain
from notification.domain import Notification
from notification.store import NotificationStore

logger = logging.getLogger(__name__)

STREAM_BATCH = 100

# Business metrics (the RPC ones are in mesh/observe/metrics.py). A repeated event counts nothing.
# No label by kind: callers choose kinds freely, and a label must not grow without bound.
SENT = Counter("shop_notifications_sent_total", "Notifications stored and delivered, one per event.")
STREAMS = Gauge("shop_notification_streams_open", "Live notification streams this instance serves now.", multiprocess_mode="livesum")


class Wakeups:
    """Wakes this process's streams of a user when a notification for them is stored.

    At once for one this process stored; for one another instance stored, when the process's one
    watcher (`watch`) sees it. An idle stream costs nothing: it waits, it never polls.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

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


WATCH_BATCH = 1000
# Sequences are taken at insert and become visible at commit, so on PostgreSQL a row may appear
# behind one already seen: each round looks this far back too (waking a stream for nothing costs
# one read; missing one would leave a notification waiting for the next).
LOOKBACK = 256


CHANNEL = "shopmesh_notifications"


async def watch(store: NotificationStore, wakeups: Wakeups, interval: float, stopping: asyncio.Event) -> None:
    """The process's one reader of notifications other instances stored. On PostgreSQL it
    LISTENs: every instance's commit NOTIFYs the user's id, and their streams wake at once. It
    also reads (everywhere; the only way on SQLite, and a net should a NOTIFY be missed) every
    `interval` while any stream is open: one query, and the streams of the users it names wake."""
    async with store.db.listening(CHANNEL, wakeups.notify) as listening:
        if listening:
            logger.info("streams follow other instances through LISTEN %s", CHANNEL)
        await _poll(store, wakeups, interval, stopping)


async def _poll(store: NotificationStore, wakeups: Wakeups, interval: float, stopping: asyncio.Event) -> None:
    async with store.read() as tx:
        mark = await tx.max_sequence()
        # The sequences within LOOKBACK of `mark` already stored (streams read those themselves).
        seen = {sequence for sequence, _ in await tx.users_after(max(mark - LOOKBACK, 0), WATCH_BATCH)}
    while not await aio.first_set(stopping, timeout=interval):
        if not wakeups.watched:
            continue
        try:
            async with store.read() as tx:
                fresh = await tx.users_after(max(mark - LOOKBACK, 0), WATCH_BATCH)
        except Exception:  # a locked or unreachable database: next round
            logger.exception("watching for notifications failed")
            continue
        for sequence, user_id in fresh:
            if sequence not in seen:
                wakeups.notify(user_id)
            seen.add(sequence)
            mark = max(mark, sequence)
        seen = {s for s in seen if s > mark - LOOKBACK}


async def send_notification(store: NotificationStore, wakeups: Wakeups, wanted: Notification) -> Notification:
    """Stores and delivers the notification; the same event again returns the first one."""
    try:
        async with store.write() as tx:
            stored = await tx.insert(wanted, str(uuid.uuid4()))
            await tx.announce(CHANNEL, stored.user_id)
    except IntegrityError:  # this event was stored before, or concurrently
        async with store.read() as tx:
            existing = await tx.by_event(wanted.event_id)
        if existing is None or not existing.same_event(wanted):
            raise domain.EventConflict(wanted.event_id) from None
        return existing
    SENT.inc()
    logger.info("notified user %s: %s (%s)", stored.user_id, stored.subject, stored.event_id)
    wakeups.notify(stored.user_id)
    return stored


async def send_notifications(store: NotificationStore, wakeups: Wakeups,
                             wanted: Sequence[Notification]) -> list[Notification]:
    """Stores and delivers them in one transaction, all or none, in the order given; an event
    stored before, or earlier in the same batch, gives back its first notification (and
    delivers nothing new), as SendNotification does for a repeat."""
    unique: dict[str, Notification] = {}
    for w in wanted:
        first = unique.setdefault(w.event_id, w)
        if not first.same_event(w):
            raise domain.EventConflict(w.event_id)
    for attempt in (1, 2):
        try:
            async with store.write() as tx:
                known = await tx.by_events(list(unique))
                for w in unique.values():
                    if w.event_id in known and not known[w.event_id].same_event(w):
                        raise domain.EventConflict(w.event_id)
                new = await tx.insert_many([w for w in unique.values() if w.event_id not in known])
                for user_id in dict.fromkeys(n.user_id for n in new):
                    await tx.announce(CHANNEL, user_id)
            break
        except IntegrityError:  # a concurrent call stored one of them first: read it this time
            if attempt == 2:
                raise
    SENT.inc(len(new))
    for stored in new:
        logger.info("notified user %s: %s (%s)", stored.user_id, stored.subject, stored.event_id)
        wakeups.notify(stored.user_id)
    by_event = {**known, **{n.event_id: n for n in new}}
    return [by_event[w.event_id] for w in wanted]


async def list_notifications(
    store: NotificationStore, user_id: str, page_size: int, page_token: str
) -> tuple[list[Notification], str]:
    domain.check_user_id(user_id)
    limit = paging.page_size(page_size)
    position = paging.decode_token(page_token, before=int)
    async with store.read() as tx:
        found = await tx.for_user(user_id, before=position["before"] if position else None, limit=limit + 1)
    return paging.page(found, limit, lambda notification: {"before": notification.sequence})


async def resume_point(store: NotificationStore, user_id: str, resume_after: str) -> int | None:
    """Where a resumed stream starts: after the caller's last notification (None: only new ones)."""
    if not resume_after:
        return None
    async with store.read() as tx:
        start = await tx.sequence_of(resume_after, domain.check_user_id(user_id))
    if start is None:
        raise domain.UnknownResumePoint(resume_after, user_id)
    return start


async def stream_notifications(
    store: NotificationStore,
    wakeups: Wakeups,
    user_id: str,
    stopping: asyncio.Event,
    start: int | None = None,
) -> AsyncIterator[Notification]:
    """Every notification for `user_id` stored after the call starts (or after `start`, from
    `resume_point`), until `stopping`. It reads when woken (`Wakeups`), never on a timer."""
    domain.check_user_id(user_id)
    wake = wakeups.subscribe(user_id)
    logger.info("stream opened for user %s", user_id)
    STREAMS.inc()
    try:
        if start is None:
            async with store.read() as tx:
                start = await tx.last_sequence(user_id)
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
        STREAMS.dec()
        logger.info("stream closed for user %s", user_id)
