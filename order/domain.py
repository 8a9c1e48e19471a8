"""Order's rules: what a valid order request is, how it is priced, what its events say."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from mesh.kernel import validate
from mesh.kernel.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from mesh.kernel.money import Money

MAX_USER_ID = 128
MAX_REASON = 200


class OrderStatus(enum.IntEnum):
    CONFIRMED = 1
    CANCELLED = 2


@dataclass(frozen=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price: Money

    @property
    def total(self) -> Money:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class OrderRequest:
    """A validated CreateOrder: who wants how many of what, under which idempotency key."""

    request_id: str
    user_id: str
    lines: tuple[tuple[str, int], ...]  # (sku, quantity), in the client's order

    @property
    def fingerprint(self) -> str:
        """Same for two requests that ask for the same order, whatever the order of lines."""
        body = json.dumps({"user_id": self.user_id, "lines": sorted(self.lines)}, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()

    @property
    def reservation_id(self) -> str:
        # Derived from the idempotency key, so concurrent retries share one reservation.
        return f"order:{self.request_id}"


class HeldState(enum.IntEnum):
    """Where inventory has an order's stock: held, sold, or back in stock."""

    RESERVED = 1
    COMMITTED = 2
    RELEASED = 3


@dataclass(frozen=True)
class Held:
    """What inventory holds for an order: the state and each SKU's unit price."""

    state: HeldState
    unit_prices: dict[str, Money]


@dataclass(frozen=True)
class Attempt:
    """An order being placed, recorded before any stock moves: what recovery returns the stock
    of, should the process placing it die between the sale and the order."""

    request_id: str
    reservation_id: str


class RequestIdTaken(Exception):
    """The store holds a row under this request id already (a repeat, or a concurrent call)."""


class AttemptTaken(Exception):
    """Recovery began returning this attempt's stock: the order may no longer be stored."""


@dataclass(frozen=True)
class Order:
    order_id: str
    user_id: str
    lines: tuple[OrderLine, ...]
    total: Money
    status: OrderStatus
    request_id: str
    reservation_id: str
    create_time: datetime | None = None
    update_time: datetime | None = None
    sequence: int = 0


@dataclass(frozen=True)
class Event:
    """Something the user is told about; its id makes delivery idempotent."""

    event_id: str
    user_id: str
    kind: str
    subject: str
    body: str


class OrderNotFound(NotFound):
    def __init__(self, order_id: str):
        super().__init__(f"order {order_id!r} not found")


class RequestIdReused(AlreadyExists):
    def __init__(self, request_id: str):
        super().__init__(f"request_id {request_id!r} was already used for a different order")


class RequestIdSpent(FailedPrecondition):
    def __init__(self, request_id: str):
        super().__init__(
            f"request_id {request_id!r} belongs to an attempt that failed and was rolled back; "
            "send the order again with a new request_id",
            subject=f"request_id/{request_id}",
            kind="IDEMPOTENCY_KEY",
        )


class MixedCurrencies(FailedPrecondition):
    def __init__(self, currencies: Sequence[str]):
        super().__init__(
            f"an order must be in one currency; its products are priced in {', '.join(sorted(currencies))}",
            subject="lines",
            kind="CURRENCY",
        )


def check_user_id(user_id: str) -> str:
    return validate.text("user_id", user_id, MAX_USER_ID)


def check_order_id(order_id: str) -> str:
    return validate.text("order_id", order_id, 64)


def check_request(request_id: str, user_id: str, lines: Sequence[tuple[str, int]]) -> OrderRequest:
    """What the contract's rules cannot say about a CreateOrder; they (lengths, counts, the SKU
    pattern, quantities) are checked once, at the edge (mesh.kernel.validate.contract)."""
    validate.not_blank("request_id", request_id)
    validate.not_blank("user_id", user_id)
    seen: set[str] = set()
    for i, (sku, _) in enumerate(lines):
        if sku in seen:
            raise InvalidArgument(f"lines[{i}].sku", f"SKU {sku!r} appears in more than one line")
        seen.add(sku)
    return OrderRequest(request_id, user_id, tuple(lines))


def price(request: OrderRequest, unit_prices: Mapping[str, Money]) -> tuple[tuple[OrderLine, ...], Money]:
    """The order's lines and total from inventory's prices; never from the client."""
    currencies = {unit_prices[sku].currency_code for sku, _ in request.lines}
    if len(currencies) != 1:
        raise MixedCurrencies(sorted(currencies))
    lines = tuple(OrderLine(sku, quantity, unit_prices[sku]) for sku, quantity in request.lines)
    total = Money(currencies.pop(), 0)
    for line in lines:
        total = total + line.total
    return lines, total


def check_reason(reason: str) -> str:
    return validate.text("reason", reason, MAX_REASON, required=False).strip()


def _items(order: Order) -> str:
    count = sum(line.quantity for line in order.lines)
    return f"{count} item{'s' if count != 1 else ''}"


def created_event(order: Order) -> Event:
    return Event(
        event_id=f"order.created:{order.order_id}",
        user_id=order.user_id,
        kind="order.created",
        subject=f"Order {order.order_id} confirmed",
        body=f"{_items(order)}, total {order.total}.",
    )


def cancelled_event(order: Order, reason: str) -> Event:
    because = f" Reason: {reason}." if reason else ""
    return Event(
        event_id=f"order.cancelled:{order.order_id}",
        user_id=order.user_id,
        kind="order.cancelled",
        subject=f"Order {order.order_id} cancelled",
        body=f"{_items(order)}, {order.total} will be refunded.{because}",
    )
