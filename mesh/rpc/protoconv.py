"""Conversions between shared domain values and their proto messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from generated.shop.common.v1 import money_pb2
from mesh.kernel.money import Money


def money_pb(money: Money) -> money_pb2.Money:
    return money_pb2.Money(currency_code=money.currency_code, minor_units=money.minor_units)


def timestamp(at: datetime | None) -> Timestamp | None:
    """A naive UTC datetime (see mesh.kernel.clock) as a Timestamp."""
    if at is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp
