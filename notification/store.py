"""Notification's table: the event id is unique, so an event is stored once however often it arrives."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from mesh.data.db import Store
from mesh.kernel.clock import now
from notification.domain import Notification

metadata = MetaData()

notifications = Table(
    "notifications",
    metadata,
    # The sequence orders a user's notifications and lets streams resume after it.
    Column("sequence", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("notification_id", String(36), nullable=False, unique=True),
    Column("event_id", String(200), nullable=False, unique=True),
    Column("user_id", String(128), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("create_time", DateTime, nullable=False),
    Index("notifications_by_user", "user_id", "sequence"),
)


_BY_EVENT = select(notifications).where(notifications.c.event_id == bindparam("event_id"))
_BY_EVENTS = select(notifications).where(notifications.c.event_id.in_(bindparam("ids", expanding=True)))
_INSERT = insert(notifications).returning(notifications.c.sequence)
_INSERT_MANY = insert(notifications).returning(notifications.c.sequence, sort_by_parameter_order=True)


def _notification(row: object) -> Notification:
    r = row
    return Notification(
        event_id=r.event_id,  # type: ignore[attr-defined]
        user_id=r.user_id,  # type: ignore[attr-defined]
        kind=r.kind,  # type: ignore[attr-defined]
        subject=r.subject,  # type: ignore[attr-defined]
        body=r.body,  # type: ignore[attr-defined]
        notification_id=r.notification_id,  # type: ignore[attr-defined]
        create_time=r.create_time,  # type: ignore[attr-defined]
        sequence=r.sequence,  # type: ignore[attr-defined]
    )


class NotificationTx:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def by_event(self, event_id: str) -> Notification | None:
        row = (await self.conn.execute(_BY_EVENT, {"event_id": event_id})).first()
        return None if row is None else _notification(row)

    async def by_events(self, event_ids: Sequence[str]) -> dict[str, Notification]:
        """The notifications stored for any of `event_ids`, by event id: one query."""
        rows = await self.conn.execute(_BY_EVENTS, {"ids": list(event_ids)})
        return {row.event_id: _notification(row) for row in rows}

    async def insert_many(self, wanted: Sequence[Notification]) -> list[Notification]:
        """Stores them in one statement, in order; an event id already taken is `Duplicate` (Store.write)."""
        if not wanted:
            return []
        at = now()
        rows = [{"notification_id": str(uuid.uuid4()), "event_id": n.event_id, "user_id": n.user_id, "kind": n.kind,
                 "subject": n.subject, "body": n.body, "create_time": at} for n in wanted]
        result = await self.conn.execute(_INSERT_MANY, rows)
        sequences = [row.sequence for row in result]
        return [Notification(n.event_id, n.user_id, n.kind, n.subject, n.body, row["notification_id"], at, sequence)
                for n, row, sequence in zip(wanted, rows, sequences, strict=True)]

    async def insert(self, notification: Notification, notification_id: str) -> Notification:
        """An event id already taken is `Duplicate` (Store.write)."""
        at = now()
        result = await self.conn.execute(
            _INSERT,
            {
                "notification_id": notification_id,
                "event_id": notification.event_id,
                "user_id": notification.user_id,
                "kind": notification.kind,
                "subject": notification.subject,
                "body": notification.body,
                "create_time": at,
            },
        )
        sequence = result.scalar_one()
        return Notification(
            notification.event_id,
            notification.user_id,
            notification.kind,
            notification.subject,
            notification.body,
            notification_id,
            at,
            sequence,
        )

    async def for_user(
        self, user_id: str, *, before: int | None = None, after: int | None = None, limit: int = 50
    ) -> list[Notification]:
        """Newest first, or oldest first when reading forward from `after`."""
        query = select(notifications).where(notifications.c.user_id == user_id).limit(limit)
        if after is not None:
            query = query.where(notifications.c.sequence > after).order_by(notifications.c.sequence)
        else:
            query = query.order_by(notifications.c.sequence.desc())
            if before is not None:
                query = query.where(notifications.c.sequence < before)
        return [_notification(row) for row in await self.conn.execute(query)]

    async def sequence_of(self, notification_id: str, user_id: str) -> int | None:
        query = select(notifications.c.sequence).where(notifications.c.notification_id == notification_id,
                                                       notifications.c.user_id == user_id)
        return (await self.conn.execute(query)).scalar()

    async def announce(self, channel: str, user_id: str) -> None:
        """On PostgreSQL, tells every instance's watcher (LISTEN) at commit; on SQLite, nothing."""
        dialect = getattr(self.conn, "dialect", None)  # SQLite's inline connection has none
        if dialect is not None and dialect.name == "postgresql":
            await self.conn.execute(select(func.pg_notify(channel, user_id)))

    async def users_after(self, after: int, limit: int) -> list[tuple[int, str]]:
        """(sequence, user_id) of the notifications stored after `after`, oldest first: the
        process's one watcher reads this, whatever the number of streams it serves."""
        query = (select(notifications.c.sequence, notifications.c.user_id)
                 .where(notifications.c.sequence > after).order_by(notifications.c.sequence).limit(limit))
        return [(int(row[0]), str(row[1])) for row in await self.conn.execute(query)]

    async def purge_older(self, created_before: datetime, limit: int) -> int:
        """Deletes up to `limit` notifications stored before `created_before`, oldest first (along
        the primary key: sequences grow with time, so no index on the time is needed)."""
        sequences = [row[0] for row in await self.conn.execute(
            select(notifications.c.sequence).where(notifications.c.create_time < created_before)
            .order_by(notifications.c.sequence).limit(limit))]
        if sequences:
            await self.conn.execute(delete(notifications).where(notifications.c.sequence.in_(sequences)))
        return len(sequences)

    async def max_sequence(self) -> int:
        return int((await self.conn.execute(select(func.max(notifications.c.sequence)))).scalar() or 0)

    async def last_sequence(self, user_id: str) -> int:
        query = (
            select(notifications.c.sequence)
            .where(notifications.c.user_id == user_id)
            .order_by(notifications.c.sequence.desc())
            .limit(1)
        )
        return (await self.conn.execute(query)).scalar() or 0


class NotificationStore(Store[NotificationTx]):
    tx = NotificationTx

    def listening(self, channel: str, heard: Callable[[str], None]) -> AbstractAsyncContextManager[bool]:
        """Other instances' announcements on `channel` (PostgreSQL's LISTEN; True), or none (SQLite; False)."""
        return self.db.listening(channel, heard)
