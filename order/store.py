"""Order's tables: orders, their lines, and the outbox of events for the user.

An order and the event that announces it are written in one transaction, so an
accepted order is always announced (at least once; notification dedupes).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from mesh.data.db import Store, on_postgresql
from mesh.kernel.clock import now
from mesh.kernel.money import Money
from order.domain import Attempt, AttemptTaken, Event, Order, OrderLine, OrderRequest, OrderStatus, RequestIdTaken

metadata = MetaData()
_SEQUENCE = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

orders = Table(
    "orders",
    metadata,
    Column("sequence", _SEQUENCE, primary_key=True, autoincrement=True),
    Column("order_id", String(36), nullable=False, unique=True),
    Column("request_id", String(128), nullable=False, unique=True),
    Column("fingerprint", String(64), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("reservation_id", String(160), nullable=False),
    Column("cancel_reason", String(200), nullable=False, default=""),
    Column("create_time", DateTime, nullable=False),
    Column("update_time", DateTime, nullable=False),
    # When inventory confirmed the sale (null: not known yet; order/background/recovery.py finishes it).
    Column("commit_time", DateTime, nullable=True),
    Index("orders_by_user", "user_id", "sequence"),
    Index("orders_by_commit", "commit_time", "sequence"),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(36), ForeignKey("orders.order_id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("sku", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
)

# Orders being placed: written before inventory sells, gone in the transaction that stores the
# order (or once recovery has returned the stock of one whose process died in between).
order_attempts = Table(
    "order_attempts",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("reservation_id", String(160), nullable=False),
    Column("user_id", String(128), nullable=False),
    # 1 once recovery began returning its stock: from then on the order may not be stored.
    Column("abandoned", SmallInteger, nullable=False, default=0),
    Column("create_time", DateTime, nullable=False),
    Index("order_attempts_by_age", "create_time"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("sequence", _SEQUENCE, primary_key=True, autoincrement=True),
    Column("event_id", String(200), nullable=False, unique=True),
    Column("user_id", String(128), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("create_time", DateTime, nullable=False),
    Column("delivered_time", DateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", String(500), nullable=False, default=""),
    Index("outbox_pending", "delivered_time", "sequence"),
)


_LINES_OF = (
    select(order_lines)
    .where(order_lines.c.order_id.in_(bindparam("ids", expanding=True)))
    .order_by(order_lines.c.position)
)
_BY_ID = select(orders).where(orders.c.order_id == bindparam("order_id"))
_BY_REQUEST = select(orders).where(orders.c.request_id == bindparam("request_id"))
_INSERT_ORDER = insert(orders).returning(orders.c.sequence)
_INSERT_LINES = insert(order_lines)
_INSERT_EVENT = insert(outbox)
_INSERT_ATTEMPT = insert(order_attempts)
_END_ATTEMPT = delete(order_attempts).where(order_attempts.c.request_id == bindparam("rid"),
                                            order_attempts.c.abandoned == 0)



def _store_in_one():  # noqa: ANN202 - a PostgreSQL SELECT ... WITH (DELETE, INSERT, INSERT, INSERT)
    """PostgreSQL only: the end of the attempt, the order, its lines and its event in one
    statement (data-modifying CTEs, each insert fed by the one before, so nothing is written
    unless the attempt was still open and not abandoned): one round trip, not six. SQLite has
    no DML in a CTE and runs the same writes as a transaction of four statements."""
    b = bindparam
    attempt = (delete(order_attempts)
               .where(order_attempts.c.request_id == b("request_id", type_=String), order_attempts.c.abandoned == 0)
               .returning(order_attempts.c.request_id).cte("attempt"))
    order_columns = ["order_id", "request_id", "fingerprint", "user_id", "status", "currency_code", "total_minor",
                     "reservation_id", "cancel_reason", "create_time", "update_time", "commit_time"]
    stored = (insert(orders).from_select(order_columns, select(
        b("order_id", type_=String), attempt.c.request_id, b("fingerprint", type_=String),
        b("user_id", type_=String), b("status", type_=SmallInteger), b("currency_code", type_=String),
        b("total_minor", type_=BigInteger), b("reservation_id", type_=String), literal(""),
        b("at", type_=DateTime), b("at", type_=DateTime), b("commit_time", type_=DateTime)))
        .returning(orders.c.sequence, orders.c.order_id).cte("stored"))
    given = func.unnest(b("positions", type_=ARRAY(Integer)), b("skus", type_=ARRAY(String)),
                        b("quantities", type_=ARRAY(BigInteger)), b("currencies", type_=ARRAY(String)),
                        b("prices", type_=ARRAY(BigInteger))).table_valued(
        "position", "sku", "quantity", "currency_code", "unit_price_minor").render_derived()
    lines = (insert(order_lines).from_select(
        ["order_id", "position", "sku", "quantity", "currency_code", "unit_price_minor"],
        select(stored.c.order_id, given.c.position, given.c.sku, given.c.quantity, given.c.currency_code,
               given.c.unit_price_minor).select_from(stored).join(given, literal(True)))
        .cte("lines"))
    event = (insert(outbox).from_select(
        ["event_id", "user_id", "kind", "subject", "body", "create_time", "attempts", "last_error"],
        select(b("event_id", type_=String), b("event_user", type_=String), b("kind", type_=String),
               b("subject", type_=String), b("body", type_=Text), b("at", type_=DateTime), literal(0), literal(""))
        .select_from(stored)).cte("event"))
    return select(stored.c.sequence).add_cte(lines, event)


_STORE_IN_ONE = _store_in_one()


class OrderTx:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def _load(self, rows: Sequence[object]) -> list[Order]:
        if not rows:
            return []
        ids = [r.order_id for r in rows]  # type: ignore[attr-defined]
        lines: dict[str, list[OrderLine]] = {i: [] for i in ids}
        for line in await self.conn.execute(_LINES_OF, {"ids": ids}):
            lines[line.order_id].append(
                OrderLine(line.sku, line.quantity, Money(line.currency_code, line.unit_price_minor))
            )
        return [
            Order(
                order_id=r.order_id,  # type: ignore[attr-defined]
                user_id=r.user_id,  # type: ignore[attr-defined]
                lines=tuple(lines[r.order_id]),  # type: ignore[attr-defined]
                total=Money(r.currency_code, r.total_minor),  # type: ignore[attr-defined]
                status=OrderStatus(r.status),  # type: ignore[attr-defined]
                request_id=r.request_id,  # type: ignore[attr-defined]
                reservation_id=r.reservation_id,  # type: ignore[attr-defined]
                create_time=r.create_time,  # type: ignore[attr-defined]
                update_time=r.update_time,  # type: ignore[attr-defined]
                sequence=r.sequence,  # type: ignore[attr-defined]
            )
            for r in rows
        ]

    async def get(self, order_id: str) -> Order | None:
        rows = (await self.conn.execute(_BY_ID, {"order_id": order_id})).all()
        found = await self._load(rows)
        return found[0] if found else None

    async def by_request(self, request_id: str) -> tuple[Order, str] | None:
        """The order made under `request_id` and the fingerprint of the request that made it."""
        rows = (await self.conn.execute(_BY_REQUEST, {"request_id": request_id})).all()
        found = await self._load(rows)
        return (found[0], rows[0].fingerprint) if found else None

    async def for_user(self, user_id: str, before: int | None, limit: int) -> list[Order]:
        query = select(orders).where(orders.c.user_id == user_id).order_by(orders.c.sequence.desc()).limit(limit)
        if before is not None:
            query = query.where(orders.c.sequence < before)
        return await self._load((await self.conn.execute(query)).all())

    async def begin_attempt(self, request: OrderRequest) -> None:
        """Records that `request` is being placed; RequestIdTaken when an attempt under its id is open."""
        try:
            await self.conn.execute(_INSERT_ATTEMPT, {
                "request_id": request.request_id, "reservation_id": request.reservation_id,
                "user_id": request.user_id, "abandoned": 0, "create_time": now()})
        except IntegrityError:
            raise RequestIdTaken(request.request_id) from None

    async def end_attempt(self, request_id: str) -> bool:
        """Removes the open attempt under `request_id`; False if there is none (recovery took it)."""
        return (await self.conn.execute(_END_ATTEMPT, {"rid": request_id})).rowcount == 1

    async def stale_attempts(self, started_before: datetime, limit: int) -> list[Attempt]:
        """Attempts begun before `started_before` and never finished, oldest first."""
        query = (select(order_attempts.c.request_id, order_attempts.c.reservation_id)
                 .where(order_attempts.c.create_time < started_before)
                 .order_by(order_attempts.c.create_time).limit(limit))
        return [Attempt(*row) for row in await self.conn.execute(query)]

    async def abandon_attempt(self, request_id: str) -> bool:
        """Marks the attempt as recovery's to settle (no order may be stored for it after this);
        False if it is gone."""
        result = await self.conn.execute(
            update(order_attempts).where(order_attempts.c.request_id == request_id).values(abandoned=1))
        return result.rowcount == 1

    async def count_attempts(self) -> int:
        return int((await self.conn.execute(select(func.count()).select_from(order_attempts))).scalar_one())

    async def drop_attempt(self, request_id: str) -> None:
        await self.conn.execute(delete(order_attempts).where(order_attempts.c.request_id == request_id))

    async def _insert(self, order: Order, fingerprint: str, *, committed: bool = False) -> Order:
        """Stores the order (sold already, with `committed`); RequestIdTaken when its request id is."""
        at = now()
        try:
            result = await self.conn.execute(_INSERT_ORDER, {
                "order_id": order.order_id,
                "request_id": order.request_id,
                "fingerprint": fingerprint,
                "user_id": order.user_id,
                "status": order.status,
                "currency_code": order.total.currency_code,
                "total_minor": order.total.minor_units,
                "reservation_id": order.reservation_id,
                "cancel_reason": "",
                "create_time": at,
                "update_time": at,
                "commit_time": at if committed else None,
            })
        except IntegrityError:
            raise RequestIdTaken(order.request_id) from None
        sequence = result.scalar_one()
        await self.conn.execute(
            _INSERT_LINES,
            [
                {
                    "order_id": order.order_id,
                    "position": i,
                    "sku": line.sku,
                    "quantity": line.quantity,
                    "currency_code": line.unit_price.currency_code,
                    "unit_price_minor": line.unit_price.minor_units,
                }
                for i, line in enumerate(order.lines)
            ],
        )
        return Order(**{**order.__dict__, "create_time": at, "update_time": at, "sequence": sequence})

    async def store(self, order: Order, fingerprint: str, event: Event, *, committed: bool = False) -> Order:
        """Stores the order with its event and ends its attempt, all or nothing: AttemptTaken
        (nothing written) when the attempt is gone or abandoned; RequestIdTaken when its request
        id is taken."""
        if not on_postgresql(self.conn):
            stored = await self._insert(order, fingerprint, committed=committed)
            await self.add_event(event)
            if not await self.end_attempt(order.request_id):
                raise AttemptTaken(order.request_id)  # raised in the transaction: rolls the order back
            return stored
        at = now()
        lines = order.lines
        try:
            sequence = (await self.conn.execute(_STORE_IN_ONE, {
                "request_id": order.request_id, "order_id": order.order_id, "fingerprint": fingerprint,
                "user_id": order.user_id, "status": order.status, "currency_code": order.total.currency_code,
                "total_minor": order.total.minor_units, "reservation_id": order.reservation_id, "at": at,
                "commit_time": at if committed else None,
                "positions": list(range(len(lines))), "skus": [line.sku for line in lines],
                "quantities": [line.quantity for line in lines],
                "currencies": [line.unit_price.currency_code for line in lines],
                "prices": [line.unit_price.minor_units for line in lines],
                "event_id": event.event_id, "event_user": event.user_id, "kind": event.kind,
                "subject": event.subject, "body": event.body,
            })).scalar()
        except IntegrityError:
            raise RequestIdTaken(order.request_id) from None
        if sequence is None:
            raise AttemptTaken(order.request_id)
        return Order(**{**order.__dict__, "create_time": at, "update_time": at, "sequence": sequence})

    async def cancel(self, order: Order, reason: str) -> Order | None:
        """The cancelled order, or None if it was no longer CONFIRMED."""
        at = now()
        result = await self.conn.execute(
            update(orders)
            .where(orders.c.order_id == order.order_id, orders.c.status == OrderStatus.CONFIRMED)
            .values(status=OrderStatus.CANCELLED, cancel_reason=reason, update_time=at)
        )
        if result.rowcount != 1:
            return None
        return Order(**{**order.__dict__, "status": OrderStatus.CANCELLED, "update_time": at})

    async def mark_committed(self, order_ids: Sequence[str]) -> None:
        await self.conn.execute(
            update(orders)
            .where(orders.c.order_id.in_(order_ids), orders.c.commit_time.is_(None))
            .values(commit_time=now())
        )

    async def uncommitted(self, created_before: datetime, limit: int) -> list[Order]:
        """CONFIRMED orders whose sale inventory has not confirmed, oldest first."""
        query = (
            select(orders)
            .where(orders.c.commit_time.is_(None), orders.c.status == OrderStatus.CONFIRMED,
                   orders.c.create_time < created_before)
            .order_by(orders.c.sequence)
            .limit(limit)
        )
        return await self._load((await self.conn.execute(query)).all())

    async def add_event(self, event: Event) -> None:
        await self.conn.execute(
            _INSERT_EVENT,
            {
                "event_id": event.event_id,
                "user_id": event.user_id,
                "kind": event.kind,
                "subject": event.subject,
                "body": event.body,
                "create_time": now(),
                "attempts": 0,
                "last_error": "",
            },
        )

    async def pending_events(self, limit: int) -> list[Event]:
        query = (
            select(outbox.c.event_id, outbox.c.user_id, outbox.c.kind, outbox.c.subject, outbox.c.body)
            .where(outbox.c.delivered_time.is_(None))
            .order_by(outbox.c.sequence)
            .limit(limit)
        )
        return [Event(*row) for row in await self.conn.execute(query)]

    async def count_pending(self) -> int:
        """Events written but not yet delivered to notification."""
        query = select(func.count()).select_from(outbox).where(outbox.c.delivered_time.is_(None))
        return int((await self.conn.execute(query)).scalar_one())

    async def mark_delivered(self, event_ids: Sequence[str]) -> None:
        await self.conn.execute(
            update(outbox).where(outbox.c.event_id.in_(event_ids)).values(delivered_time=now())
        )

    async def purge_delivered(self, delivered_before: datetime, limit: int) -> int:
        """Deletes up to `limit` events delivered before `delivered_before`, oldest first.

        Only delivered ones: an undelivered event is a notification still owed, whatever its age.
        A delivered one is never read again (notification keeps the event id it deduplicates on)."""
        oldest = (select(outbox.c.sequence).where(outbox.c.delivered_time < delivered_before)
                  .order_by(outbox.c.sequence).limit(limit))
        result = await self.conn.execute(delete(outbox).where(outbox.c.sequence.in_(oldest.scalar_subquery())))
        return int(result.rowcount or 0)

    async def record_failure(self, event_ids: Sequence[str], error: str) -> None:
        await self.conn.execute(
            update(outbox)
            .where(outbox.c.event_id.in_(event_ids))
            .values(attempts=outbox.c.attempts + 1, last_error=error[:500])
        )


class OrderStore(Store[OrderTx]):
    tx = OrderTx
