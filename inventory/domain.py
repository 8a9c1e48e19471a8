"""Inventory's rules: what a valid product, stock movement and reservation are."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mesh.kernel import money, validate
from mesh.kernel.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ShopError
from mesh.kernel.money import Money, parse_money

MAX_NAME = 200
MAX_REASON = 200
MAX_RESERVATION_ID = 128
MAX_STOCK = 10**12


class ReservationState(enum.IntEnum):
    RESERVED = 1
    COMMITTED = 2
    RELEASED = 3
    # Refused (out of stock, unknown product): kept so the same request gets the same answer.
    REJECTED = 4


class ProductState(enum.IntEnum):
    ACTIVE = 1
    ARCHIVED = 2  # not for sale, not listed by default


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price: Money
    available: int
    reserved: int = 0
    sold: int = 0
    create_time: datetime | None = None
    update_time: datetime | None = None
    state: ProductState = ProductState.ACTIVE
    # Counts every change of the row (details and stock): the etag, and the guard of UpdateProduct.
    version: int = 1

    @property
    def etag(self) -> str:
        return etag_of(self.version)


def etag_of(version: int) -> str:
    """An etag as callers see it: opaque to them, the row's version to us."""
    return f"v{version}"


def version_of(etag: str) -> int | None:
    """The version an etag names; None for one this service never gave (it matches no product)."""
    if etag[:1] == "v" and etag[1:].isdigit() and len(etag) < 20:
        return int(etag[1:])
    return None


@dataclass(frozen=True)
class Change:
    """What UpdateProduct changes: each field None when left as it is (the mask does not name it)."""

    name: str | None = None
    currency_code: str | None = None
    minor_units: int | None = None
    state: ProductState | None = None


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price: Money | None = None


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    lines: tuple[Line, ...]
    state: ReservationState
    create_time: datetime | None = None
    update_time: datetime | None = None
    expire_time: datetime | None = None
    # A REJECTED reservation keeps what was asked (its fingerprint) and why it was refused.
    fingerprint: str = ""
    failure: ShopError | None = None

    @property
    def units(self) -> int:
        return sum(line.quantity for line in self.lines)

    def same_request(self, lines: Sequence[Line]) -> bool:
        """Whether `lines` asks for what this reservation holds or was refused (order of lines aside)."""
        if self.state is ReservationState.REJECTED:
            return self.fingerprint == fingerprint(lines)
        return sorted((l.sku, l.quantity) for l in self.lines) == sorted((l.sku, l.quantity) for l in lines)


def fingerprint(lines: Sequence[Line]) -> str:
    return hashlib.sha256(";".join(f"{l.sku}:{l.quantity}" for l in sorted(lines, key=lambda l: l.sku)).encode()).hexdigest()


def failure_record(error: ShopError) -> str:
    """A refusal as stored, to be raised again word for word."""
    kind = "not_found" if isinstance(error, NotFound) else "failed_precondition"
    subject = getattr(error, "subject", "")
    return json.dumps({"type": kind, "message": str(error), "subject": subject, "kind": getattr(error, "kind", "")})


def failure_from_record(record: str) -> ShopError:
    data = json.loads(record)
    if data["type"] == "not_found":
        return NotFound(data["message"])
    return FailedPrecondition(data["message"], subject=data["subject"], kind=data["kind"])


class NotTaken(Exception):
    """A store's word that a sale took nothing: `sku` is unknown or has too few units available
    (its transaction is rolled back; the use case reads which, and refuses)."""

    def __init__(self, sku: str):
        super().__init__(sku)
        self.sku = sku


class ProductNotFound(NotFound):
    def __init__(self, sku: str):
        super().__init__(f"product {sku!r} not found")
        self.sku = sku


class ProductArchived(FailedPrecondition):
    def __init__(self, sku: str):
        super().__init__(f"product {sku!r} is archived and cannot be ordered", subject=f"sku/{sku}",
                         kind="PRODUCT_ARCHIVED")
        self.sku = sku


class ProductChangedSinceRead(Aborted):
    """AIP-154: the etag sent is not the product's; reread it, and decide again."""

    def __init__(self, sku: str):
        super().__init__(f"product {sku!r} changed since it was read (its etag is not the one sent); "
                         "read it again and repeat the update from what it is now")


class ProductExists(AlreadyExists):
    def __init__(self, sku: str):
        super().__init__(f"product {sku!r} already exists")


class OutOfStock(FailedPrecondition):
    def __init__(self, sku: str, wanted: int, available: int):
        super().__init__(
            f"not enough stock for SKU {sku!r}: {wanted} wanted, {available} available",
            subject=f"sku/{sku}",
            kind="STOCK",
        )
        self.sku = sku


class StockWouldExceedMaximum(FailedPrecondition):
    """The contract bounds available stock (0..MAX_STOCK); a restock may not carry it past that."""

    def __init__(self, sku: str, delta: int, available: int):
        super().__init__(
            f"cannot add {delta} units to SKU {sku!r}: {available} available, and at most {MAX_STOCK} may be",
            subject=f"sku/{sku}",
            kind="STOCK",
        )


class StockWouldGoNegative(FailedPrecondition):
    def __init__(self, sku: str, delta: int, available: int):
        super().__init__(
            f"cannot remove {-delta} units of SKU {sku!r}: only {available} available",
            subject=f"sku/{sku}",
            kind="STOCK",
        )


class ReservationNotFound(NotFound):
    def __init__(self, reservation_id: str):
        super().__init__(f"reservation {reservation_id!r} not found")


class ReservationConflict(AlreadyExists):
    def __init__(self, reservation_id: str):
        super().__init__(f"reservation {reservation_id!r} already exists with other lines")


class ReservationReleased(FailedPrecondition):
    def __init__(self, reservation_id: str):
        super().__init__(
            f"reservation {reservation_id!r} was released and cannot be committed",
            subject=f"reservation/{reservation_id}",
            kind="RESERVATION_STATE",
        )


class ReservationRefused(FailedPrecondition):
    """Commit or release of a reservation whose ReserveStock was refused: it never held a unit."""

    def __init__(self, reservation_id: str):
        super().__init__(
            f"reservation {reservation_id!r} was refused when asked for and holds nothing to commit or release",
            subject=f"reservation/{reservation_id}",
            kind="RESERVATION_REFUSED",
        )


class ReservationExpired(FailedPrecondition):
    def __init__(self, reservation_id: str):
        super().__init__(
            f"reservation {reservation_id!r} expired before it was committed; its stock is released",
            subject=f"reservation/{reservation_id}",
            kind="RESERVATION_EXPIRED",
        )


class ReservationChanged(Aborted):
    def __init__(self, reservation_id: str):
        super().__init__(f"reservation {reservation_id!r} changed while this call ran; retry it")


check_sku = validate.sku


def new_product(sku: str, name: str, currency_code: str, minor_units: int, available: int, *, has_price: bool,
                state: int = 0) -> Product:
    check_sku("product.sku", sku)
    name = validate.text("product.name", name, MAX_NAME).strip()
    if not has_price:
        raise InvalidArgument("product.price", "value is required")
    price = parse_money("product.price", currency_code, minor_units)
    if not 0 <= available <= MAX_STOCK:
        raise InvalidArgument("product.available", f"must be from 0 to {MAX_STOCK}")
    if state not in (0, *ProductState):
        raise InvalidArgument("product.state", "must be ACTIVE or ARCHIVED")
    return Product(sku=sku, name=name, price=price, available=available, state=ProductState(state or 1))


# UpdateProduct's mask (AIP-161): what may be named, and what each refused path is told.
UPDATABLE = ("name", "price", "price.currency_code", "price.minor_units", "state")
_OUTPUT_ONLY = ("reserved", "sold", "create_time", "update_time", "etag")


def check_mask(paths: Sequence[str]) -> frozenset[str]:
    """The mask's paths, `*` spelled out; INVALID_ARGUMENT naming the first path that cannot be updated."""
    found: set[str] = set()
    for path in paths:
        root = path.split(".")[0]
        if path == "*":
            found.update(("name", "price", "state"))
        elif path in UPDATABLE:
            found.add(path)
        elif root in _OUTPUT_ONLY:
            raise InvalidArgument("update_mask", f"{path!r} is output only: the service sets it")
        elif root == "sku":
            raise InvalidArgument("update_mask", f"{path!r} cannot change: the SKU names the product")
        elif root == "available":
            raise InvalidArgument("update_mask", f"{path!r} changes only through AdjustStock (and orders), "
                                                 "which keep a record of every movement")
        else:
            raise InvalidArgument("update_mask", f"{path!r} is not a field of Product that can be updated; "
                                                 f"these are: {', '.join(UPDATABLE)}")
    if "price" in found:
        found -= {"price.currency_code", "price.minor_units"}
    return frozenset(found)


def change(paths: frozenset[str], name: str, currency_code: str, minor_units: int, state: int, *,
           has_price: bool) -> Change:
    """The values the mask names, each checked as CreateProduct checks it."""
    whole_price = "price" in paths
    if whole_price and not has_price:
        raise InvalidArgument("product.price", "value is required: the mask names price")
    if state not in (0, *ProductState) and "state" in paths:
        raise InvalidArgument("product.state", "must be ACTIVE or ARCHIVED")
    if "state" in paths and state == 0:
        raise InvalidArgument("product.state", "must be ACTIVE or ARCHIVED: the mask names state")
    return Change(
        name=validate.text("product.name", name, MAX_NAME).strip() if "name" in paths else None,
        currency_code=(money.currency("product.price.currency_code", currency_code)
                       if whole_price or "price.currency_code" in paths else None),
        minor_units=(money.amount("product.price.minor_units", minor_units)
                     if whole_price or "price.minor_units" in paths else None),
        state=ProductState(state) if "state" in paths else None,
    )


def check_adjustment(sku: str, delta: int, reason: str) -> tuple[str, int, str]:
    check_sku("sku", sku)
    if delta == 0:
        raise InvalidArgument("delta", "must not be zero")
    if abs(delta) > MAX_STOCK:
        raise InvalidArgument("delta", f"must be between -{MAX_STOCK} and {MAX_STOCK}")
    return sku, delta, validate.text("reason", reason, MAX_REASON).strip()


def check_reservation_id(reservation_id: str) -> str:
    return validate.text("reservation_id", reservation_id, MAX_RESERVATION_ID)


def check_lines(lines: Sequence[Line]) -> tuple[Line, ...]:
    """The lines sorted by SKU (locking rows in one order everywhere avoids deadlocks), each SKU
    once: what the contract's rules cannot say. They (the count, the SKU pattern, quantities)
    are checked once, at the edge (mesh.kernel.validate.contract)."""
    seen: set[str] = set()
    for i, line in enumerate(lines):
        if line.sku in seen:
            raise InvalidArgument(f"lines[{i}].sku", f"SKU {line.sku!r} appears in more than one line")
        seen.add(line.sku)
    return tuple(sorted(lines, key=lambda l: l.sku))
