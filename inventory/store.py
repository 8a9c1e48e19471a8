"""Inventory's tables and the transaction object the use cases work through.

Stock moves only by single conditional UPDATEs (`... WHERE available >= :qty`),
so two buyers can never both take the last unit, on SQLite or PostgreSQL alike;
CHECK constraints back that up in the schema itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
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
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from inventory.domain import (
    Change,
    Line,
    NotTaken,
    Product,
    ProductState,
    Reservation,
    ReservationState,
    failure_from_record,
)
from mesh.data.db import Store, on_postgresql
from mesh.kernel.clock import now
from mesh.kernel.money import Money

metadata = MetaData()

products = Table(
    "products",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("price_minor", BigInteger, nullable=False),
    Column("available", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False, default=0),
    Column("sold", BigInteger, nullable=False, default=0),
    Column("create_time", DateTime, nullable=False),
    Column("update_time", DateTime, nullable=False),
    # ProductState: only ACTIVE products sell.
    Column("state", SmallInteger, nullable=False, server_default="1"),
    # +1 with every change of the row, stock included: the product's etag, and UpdateProduct's guard.
    Column("version", BigInteger, nullable=False, server_default="1"),
    CheckConstraint("available >= 0", name="available_not_negative"),
    CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    CheckConstraint("sold >= 0", name="sold_not_negative"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("reservation_id", String(128), primary_key=True),
    Column("state", SmallInteger, nullable=False),
    Column("create_time", DateTime, nullable=False),
    Column("update_time", DateTime, nullable=False),
    # A reservation still RESERVED after this is released by the sweeper (null: never).
    Column("expire_time", DateTime, nullable=True),
    # REJECTED only: what was asked and why it was refused (replayed to a repeated request).
    Column("fingerprint", String(64), nullable=True),
    Column("failure", Text, nullable=True),
    Index("reservations_by_state_expiry", "state", "expire_time"),
)

reservation_lines = Table(
    "reservation_lines",
    metadata,
    Column("reservation_id", String(128), ForeignKey("reservations.reservation_id"), primary_key=True),
    Column("sku", String(64), ForeignKey("products.sku"), primary_key=True),
    Column("quantity", BigInteger, nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
)

stock_movements = Table(
    "stock_movements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sku", String(64), ForeignKey("products.sku"), nullable=False, index=True),
    Column("delta", BigInteger, nullable=False),
    Column("reason", String(200), nullable=False),
    Column("create_time", DateTime, nullable=False),
)

# Hot statements built once, so each call skips building and cache-keying them.
_PRODUCT_BY_SKU = select(products).where(products.c.sku == bindparam("sku"))
_RESERVATION_BY_ID = select(reservations).where(reservations.c.reservation_id == bindparam("rid"))
_LINES_BY_RESERVATION = (
    select(reservation_lines)
    .where(reservation_lines.c.reservation_id == bindparam("rid"))
    .order_by(reservation_lines.c.sku)
)

# Constants in the SQL text: the prebuilt statements (and the CTEs made of them) bind only what they name.
_ACTIVE, _ONE = literal_column(str(int(ProductState.ACTIVE))), literal_column("1")


def _take_into(column: str):  # noqa: ANN202 - an UPDATE statement
    """available -= qty, `column` += qty, only if that much is available and the product is for
    sale; the price comes back, read in the statement that takes the stock (the row locked), so a
    sale is priced as the product was when it sold, never from a read before or after."""
    return (
        update(products)
        .where(products.c.sku == bindparam("b_sku"), products.c.available >= bindparam("qty"),
               products.c.state == _ACTIVE)
        .values({"available": products.c.available - bindparam("qty"),
                 column: products.c[column] + bindparam("qty"), "update_time": bindparam("at"),
                 "version": products.c.version + _ONE})
        .returning(products.c.currency_code, products.c.price_minor)
    )


_HOLD = _take_into("reserved")
_SELL = _take_into("sold")
_INSERT_RESERVATION = insert(reservations)
_INSERT_LINES = insert(reservation_lines)


def _sell_one(column: str):  # noqa: ANN202 - a PostgreSQL SELECT ... WITH (UPDATE, INSERT, INSERT)
    """PostgreSQL only, a sale of one line as one statement: the stock `UPDATE`, the reservation's
    row and its line (data-modifying CTEs, each insert fed by the one before, so nothing is
    written if the stock is not there). The product's row lock is taken and released within that
    one statement; a sale is one round trip, not four. A reservation id already taken fails the
    whole statement (`Duplicate`), the stock it moved with it."""
    b = bindparam
    taken = _take_into(column).cte("taken")
    head = (insert(reservations).from_select(
        ["reservation_id", "state", "create_time", "update_time", "expire_time"],
        select(b("rid", type_=String), b("r_state", type_=SmallInteger), b("at", type_=DateTime),
               b("at", type_=DateTime), b("expire", type_=DateTime)).select_from(taken))
        .returning(reservations.c.reservation_id).cte("head"))
    line = (insert(reservation_lines).from_select(
        ["reservation_id", "sku", "quantity", "currency_code", "unit_price_minor"],
        select(head.c.reservation_id, b("b_sku", type_=String), b("qty", type_=BigInteger), taken.c.currency_code,
               taken.c.price_minor).select_from(head).join(taken, true()))
        .returning(reservation_lines.c.currency_code, reservation_lines.c.unit_price_minor).cte("line"))
    return select(line.c.currency_code, line.c.unit_price_minor)


def _take_and_record(column: str):  # noqa: ANN202 - a PostgreSQL INSERT ... WITH (UPDATE ...)
    """PostgreSQL only, a line of a sale of several: the stock `UPDATE` and the line it prices in
    one statement, so the row lock is held from it to COMMIT, and a line is one round trip."""
    taken = _take_into(column).cte("taken")
    line = select(bindparam("rid", type_=String), bindparam("b_sku", type_=String),
                  bindparam("qty", type_=BigInteger), taken.c.currency_code, taken.c.price_minor)
    return (insert(reservation_lines)
            .from_select(["reservation_id", "sku", "quantity", "currency_code", "unit_price_minor"], line)
            .returning(reservation_lines.c.currency_code, reservation_lines.c.unit_price_minor.label("price_minor")))


_HOLD_AND_RECORD = _take_and_record("reserved")
_SELL_AND_RECORD = _take_and_record("sold")
_HOLD_ONE = _sell_one("reserved")
_SELL_ONE = _sell_one("sold")
_SET_STATE = (
    update(reservations)
    .where(reservations.c.reservation_id == bindparam("rid"), reservations.c.state == bindparam("from_state"))
    .values(state=bindparam("to_state"), update_time=bindparam("at"))
)

# Where reserved units go when a reservation leaves RESERVED or COMMITTED.
_FROM_COLUMN = {ReservationState.RESERVED: "reserved", ReservationState.COMMITTED: "sold"}


def _product(row: object) -> Product:
    return Product(
        sku=row.sku,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        price=Money(row.currency_code, row.price_minor),  # type: ignore[attr-defined]
        available=row.available,  # type: ignore[attr-defined]
        reserved=row.reserved,  # type: ignore[attr-defined]
        sold=row.sold,  # type: ignore[attr-defined]
        create_time=row.create_time,  # type: ignore[attr-defined]
        update_time=row.update_time,  # type: ignore[attr-defined]
        state=ProductState(row.state),  # type: ignore[attr-defined]
        version=row.version,  # type: ignore[attr-defined]
    )


class InventoryTx:
    """One open transaction; every method is one statement or two."""

    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def get_product(self, sku: str) -> Product | None:
        row = (await self.conn.execute(_PRODUCT_BY_SKU, {"sku": sku})).first()
        return None if row is None else _product(row)

    async def insert_product(self, product: Product) -> Product:
        """A SKU already taken is `Duplicate` (Store.write)."""
        at = now()
        await self.conn.execute(
            insert(products).values(
                sku=product.sku,
                name=product.name,
                currency_code=product.price.currency_code,
                price_minor=product.price.minor_units,
                available=product.available,
                reserved=0,
                sold=0,
                create_time=at,
                update_time=at,
                state=product.state,
                version=1,
            )
        )
        return Product(product.sku, product.name, product.price, product.available, 0, 0, at, at, product.state, 1)

    async def update_product(self, sku: str, change: Change, version: int | None) -> Product | None:
        """The fields `change` gives, in one statement, only if the row is still at `version` (when
        given): the etag check and the write cannot be split by another writer. None if no row was
        changed (no such product, or another version)."""
        values: dict[str, object] = {"version": products.c.version + 1, "update_time": now()}
        for column, value in (("name", change.name), ("currency_code", change.currency_code),
                              ("price_minor", change.minor_units), ("state", change.state)):
            if value is not None:
                values[column] = value
        query = update(products).where(products.c.sku == sku).values(values).returning(*products.c)
        if version is not None:
            query = query.where(products.c.version == version)
        row = (await self.conn.execute(query)).first()
        return None if row is None else _product(row)

    async def list_products(self, after_sku: str | None, limit: int, *, archived: bool = False) -> list[Product]:
        query = select(products).order_by(products.c.sku).limit(limit)
        if after_sku is not None:
            query = query.where(products.c.sku > after_sku)
        if not archived:
            query = query.where(products.c.state == _ACTIVE)
        return [_product(row) for row in await self.conn.execute(query)]

    async def add_available(self, sku: str, delta: int, ceiling: int) -> bool:
        """available += delta unless that would make it negative or more than `ceiling`."""
        result = await self.conn.execute(
            update(products)
            .where(products.c.sku == sku, products.c.available + delta >= 0, products.c.available + delta <= ceiling)
            .values(available=products.c.available + delta, update_time=now(), version=products.c.version + 1)
        )
        return result.rowcount == 1

    async def record_movement(self, sku: str, delta: int, reason: str) -> None:
        await self.conn.execute(insert(stock_movements).values(sku=sku, delta=delta, reason=reason, create_time=now()))

    async def reserve(self, reservation_id: str, lines: Sequence[Line], ttl: timedelta, *,
                      committed: bool = False) -> tuple[datetime, tuple[Line, ...]]:
        """Holds (with `committed`, sells) every line and records it under `reservation_id` at its
        product's price in that moment; the reservation's time and its priced lines. NotTaken(sku)
        for the first line there is not enough of (raised in the transaction: nothing moves);
        `Duplicate` when the id is taken. Lines in SKU order, so every writer takes rows in one
        order. On PostgreSQL a one-line sale is one statement (`Store.write_one` suffices) and
        each line of a longer one is one; SQLite needs two a line, after the reservation's row."""
        at = now()
        state = ReservationState.COMMITTED if committed else ReservationState.RESERVED
        expire = None if committed else at + ttl
        postgresql = on_postgresql(self.conn)
        if postgresql and len(lines) == 1:
            [line] = lines
            row = (await self.conn.execute(_SELL_ONE if committed else _HOLD_ONE, {
                "rid": reservation_id, "r_state": state, "at": at, "expire": expire, "b_sku": line.sku,
                "qty": line.quantity})).first()
            if row is None:
                raise NotTaken(line.sku)
            return at, (Line(line.sku, line.quantity, Money(row.currency_code, row.unit_price_minor)),)
        await self.conn.execute(_INSERT_RESERVATION, {"reservation_id": reservation_id, "state": state,
                                                      "create_time": at, "update_time": at, "expire_time": expire})
        priced = []
        for line in lines:
            values = {"rid": reservation_id, "b_sku": line.sku, "qty": line.quantity, "at": at}
            if postgresql:
                row = (await self.conn.execute(_SELL_AND_RECORD if committed else _HOLD_AND_RECORD, values)).first()
            else:
                row = (await self.conn.execute(_SELL if committed else _HOLD, values)).first()
                if row is not None:
                    await self.conn.execute(_INSERT_LINES, {
                        "reservation_id": reservation_id, "sku": line.sku, "quantity": line.quantity,
                        "currency_code": row.currency_code, "unit_price_minor": row.price_minor})
            if row is None:
                raise NotTaken(line.sku)
            priced.append(Line(line.sku, line.quantity, Money(row.currency_code, row.price_minor)))
        return at, tuple(priced)

    async def move_units(self, sku: str, quantity: int, source: str, target: str) -> None:
        columns = products.c
        await self.conn.execute(
            update(products)
            .where(columns.sku == sku)
            .values({source: columns[source] - quantity, target: columns[target] + quantity, "update_time": now(),
                     "version": columns.version + 1})
        )

    async def get_reservation(self, reservation_id: str) -> Reservation | None:
        head = (await self.conn.execute(_RESERVATION_BY_ID, {"rid": reservation_id})).first()
        if head is None:
            return None
        rows = await self.conn.execute(_LINES_BY_RESERVATION, {"rid": reservation_id})
        lines = tuple(Line(r.sku, r.quantity, Money(r.currency_code, r.unit_price_minor)) for r in rows)
        failure = failure_from_record(head.failure) if head.failure else None
        return Reservation(reservation_id, lines, ReservationState(head.state), head.create_time, head.update_time,
                           head.expire_time, head.fingerprint or "", failure)

    async def open_reservations(self) -> tuple[int, int]:
        """Reservations held now (neither committed nor released) and the units they hold."""
        row = (await self.conn.execute(
            select(func.count(func.distinct(reservations.c.reservation_id)), func.coalesce(func.sum(reservation_lines.c.quantity), 0))
            .select_from(reservations.join(reservation_lines))
            .where(reservations.c.state == ReservationState.RESERVED)
        )).one()
        return int(row[0]), int(row[1])

    async def insert_rejection(self, reservation_id: str, fingerprint: str, failure: str) -> None:
        """An id already taken (a concurrent request recorded its outcome first) is `Duplicate`."""
        at = now()
        await self.conn.execute(
            _INSERT_RESERVATION,
            {"reservation_id": reservation_id, "state": ReservationState.REJECTED, "create_time": at,
             "update_time": at, "expire_time": None, "fingerprint": fingerprint, "failure": failure},
        )

    async def purge_rejections(self, created_before: datetime) -> int:
        result = await self.conn.execute(
            delete(reservations).where(reservations.c.state == ReservationState.REJECTED,
                                       reservations.c.create_time < created_before)
        )
        return int(result.rowcount or 0)

    async def purge_settled(self, settled_before: datetime, limit: int) -> int:
        """Deletes up to `limit` reservations committed or released before `settled_before`, with
        their lines. A held (RESERVED) one is never purged; refusals have their own, shorter keep."""
        ids = [row[0] for row in await self.conn.execute(
            select(reservations.c.reservation_id)
            .where(reservations.c.state.in_([ReservationState.COMMITTED, ReservationState.RELEASED]),
                   reservations.c.update_time < settled_before)
            .limit(limit))]
        if not ids:
            return 0
        await self.conn.execute(delete(reservation_lines).where(reservation_lines.c.reservation_id.in_(ids)))
        await self.conn.execute(delete(reservations).where(reservations.c.reservation_id.in_(ids)))
        return len(ids)

    async def expired(self, at: datetime, limit: int) -> list[str]:
        """Reservations still RESERVED whose expiry has passed, oldest first."""
        query = (
            select(reservations.c.reservation_id)
            .where(reservations.c.state == ReservationState.RESERVED, reservations.c.expire_time <= at)
            .order_by(reservations.c.expire_time)
            .limit(limit)
        )
        return [row[0] for row in await self.conn.execute(query)]

    async def set_state(self, reservation: Reservation, state: ReservationState) -> Reservation | None:
        """Moves the reservation's units to match `state` and records the new state.

        Guarded: only if the reservation is still in the state read, so that a
        commit and an expiry (or two instances) can never both win; None if it was not.
        """
        at = now()
        result = await self.conn.execute(
            _SET_STATE,
            {"rid": reservation.reservation_id, "from_state": reservation.state, "to_state": state, "at": at},
        )
        if result.rowcount != 1:
            return None
        source = _FROM_COLUMN[reservation.state]
        target = "sold" if state is ReservationState.COMMITTED else "available"
        for line in reservation.lines:
            await self.move_units(line.sku, line.quantity, source, target)
        return Reservation(reservation.reservation_id, reservation.lines, state, reservation.create_time, at,
                           reservation.expire_time)


class InventoryStore(Store[InventoryTx]):
    tx = InventoryTx
