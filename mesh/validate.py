"""Field checks every service uses, each raising InvalidArgument that names the field."""

from __future__ import annotations

import re

from mesh.errors import InvalidArgument

SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def text(field: str, value: str, limit: int, *, required: bool = True) -> str:
    if required and not value.strip():
        raise InvalidArgument(field, "is required")
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters")
    return value


def sku(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if not SKU.match(value):
        raise InvalidArgument(field, "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def quantity(field: str, value: int, maximum: int) -> int:
    if not 1 <= value <= maximum:
        raise InvalidArgument(field, f"must be from 1 to {maximum}")
    return value
