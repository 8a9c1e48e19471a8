"""Field checks, each raising InvalidArgument that names the field.

`contract` enforces the rules the contracts state (protovalidate's `buf.validate`
annotations in protos/) on every request, before a handler sees it; the checks
below are the domain's own, for what a contract cannot say (a name of spaces,
a SKU twice in one order) and for domain code called without a request.
"""

from __future__ import annotations

import re
from typing import Any

import protovalidate
from google.protobuf.message import Message

from mesh.kernel.errors import InvalidArgument


def contract(message: Message) -> None:
    """Every violation of the contract's field rules on `message`, reported at once."""
    violations = protovalidate.collect_violations(message)
    if violations:
        found = [(_path(v.proto.field.elements), v.proto.message) for v in violations]
        raise InvalidArgument(*found[0], more=found[1:])


def _path(elements: Any) -> str:
    """`lines[0].sku`: the field path as a caller wrote it (proto names, as in our other messages)."""
    path = ""
    for element in elements:
        path += f".{element.field_name}" if path else element.field_name
        if element.subscript is not None:
            path += f"[{element.subscript.value!r}]" if element.subscript.field == "string_key" \
                else f"[{element.subscript.value}]"
    return path or "request"


SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def not_blank(field: str, value: str) -> str:
    """What no length or pattern rule of ours says: a value of only white space."""
    if value and not value.strip():
        raise InvalidArgument(field, "must not be blank: it has only spaces or other white space")
    return value


def text(field: str, value: str, limit: int, *, required: bool = True) -> str:
    if required and not value:
        raise InvalidArgument(field, "value is required")  # protovalidate's words, for one voice
    if required and not value.strip():
        raise InvalidArgument(field, "must not be blank: it has only spaces or other white space")
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters")
    return value


def sku(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "value is required")
    if not SKU.match(value):
        raise InvalidArgument(field, "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def quantity(field: str, value: int, maximum: int) -> int:
    if not 1 <= value <= maximum:
        raise InvalidArgument(field, f"must be from 1 to {maximum}")
    return value
