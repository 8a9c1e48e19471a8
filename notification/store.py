"""Notification's table: the event id is unique, so an event is stored once however often it arrives."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime

from sqlalchemy import (
    ARRAY,
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

from mesh.data.db import Store, on_postgresql
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
_INSERT_MANY = insert(notifications).returning(notifications.c.sequence, sort_by_parameter_order=True)


def _insert_and_announce():  # noqa: ANN202 - a PostgreSQL SELECT ... WITH (INSERT, SELECT pg_notify)
    """PostgreSQL only: the notifications inserted in the order given (so their sequences grow in
    that order) and every user among them announced, in one statement: one round trip, where a
    transaction with a NOTIFY per user took three and one per user."""
    b = bindparam
    given = func.unnest(
        b("notification_ids", type_=ARRAY(String)), b("event_ids", type_=ARRAY(String)),
        b("user_ids", type_=ARRAY(String)), b("kinds", type_=ARRAY(String)), b("subjects", type_=ARRAY(String)),
        b("bodies", type_=ARRAY(Text)),
    ).table_valued("notification_id", "event_id", "user_id", "kind", "subject", "body",
                   with_ordinality="position").render_derived()
    new = (insert(notifications).from_select(
        ["notification_id", "event_id", "user_id", "kind", "subject", "body", "create_time"],
        select(given.c.notification_id, given.c.event_id, given.c.user_id, given.c.kind, given.c.subject,
               given.c.body, b("at", type_=DateTime)).order_by(given.c.position))
        .returning(notifications.c.event_id, notifications.c.sequence, notifications.c.user_id).cte("new"))
    users = select(new.c.user_id).distinct().subquery("users")
    told = select(func.pg_notify(b("channel", type_=String), users.c.user_id).label("told")).cte("told")
    return select(new.c.event_id, new.c.sequence,
                  select(func.count()).select_from(told).scalar_subquery().label("announced"))


_INSERT_AND_ANNOUNCE = _insert_and_announce()


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

    async def insert_many(self, wanted: Sequence[Notification], channel: str) -> list[Notification]:
        """Stores them in one statement, in order, and announces each user on `channel` (PostgreSQL's
        NOTIFY, delivered at commit; SQLite has none); an event id already taken is `Duplicate`."""
        if not wanted:
            return []
        at = now()
        ids = [str(uuid.uuid4()) for _ in wanted]
        if on_postgresql(self.conn):
            rows = (await self.conn.execute(_INSERT_AND_ANNOUNCE, {
                "notification_ids": ids, "event_ids": [n.event_id for n in wanted],
                "user_ids": [n.user_id for n in wanted], "kinds": [n.kind for n in wanted],
                "subjects": [n.subject for n in wanted], "bodies": [n.body for n in wanted],
                "at": at, "channel": channel})).all()
            sequence_of = {row.event_id: row.sequence for row in rows}
            sequences = [sequence_of[n.event_id] for n in wanted]
        else:
            result = await self.conn.execute(_INSERT_MANY, [
                {"notification_id": i, "event_id": n.event_id, "user_id": n.user_id, "kind": n.kind,
                 "subject": n.subject, "body": n.body, "create_time": at} for i, n in zip(ids, wanted, strict=True)])
            sequences = [row.sequence for row in result]
        return [Notification(n.event_id, n.user_id, n.kind, n.subject, n.body, i, at, sequence)
                for n, i, sequence in zip(wanted, ids, sequences, strict=True)]

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
