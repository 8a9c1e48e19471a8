"""Money in integer minor units with an ISO 4217 currency code: exact sums, no floats."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mesh.kernel.errors import InvalidArgument

_CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_MINOR_UNITS = 10**15  # a quadrillion cents: far beyond any order, far below int64


@dataclass(frozen=True, slots=True)
class Money:
    currency_code: str
    minor_units: int

    def __mul__(self, quantity: int) -> Money:
        return Money(self.currency_code, self.minor_units * quantity)

    def __add__(self, other: Money) -> Money:
        if other.currency_code != self.currency_code:
            raise ValueError(f"cannot add {other.currency_code} to {self.currency_code}")
        return Money(self.currency_code, self.minor_units + other.minor_units)

    def __str__(self) -> str:
        return f"{self.currency_code} {self.minor_units / 100:.2f}"


def parse_money(field: str, currency_code: str, minor_units: int) -> Money:
    return Money(currency(f"{field}.currency_code", currency_code), amount(f"{field}.minor_units", minor_units))


def currency(field: str, code: str) -> str:
    if not _CURRENCY.match(code):
        raise InvalidArgument(field, "must be a three-letter ISO 4217 code such as USD")
    return code


def amount(field: str, minor_units: int) -> int:
    if not 0 <= minor_units <= MAX_MINOR_UNITS:
        raise InvalidArgument(field, f"must be from 0 to {MAX_MINOR_UNITS}")
    return minor_units
