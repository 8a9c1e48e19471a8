"""Page sizes and opaque page tokens, the same way in every List RPC (AIP-158)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mesh.kernel.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """0 means the default; above the maximum is lowered to it, as AIP-158 asks."""
    if requested < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


def decode_token(token: str, **fields: type) -> dict[str, Any] | None:
    """The position a token stands for, or None for the first page.

    `fields` names each key the token must hold and its type.
    """
    if not token:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        position = None
    if (
        not isinstance(position, dict)
        or set(position) != set(fields)
        or not all(type(position[k]) is t for k, t in fields.items())
    ):
        raise InvalidArgument("page_token", "is not a token from a previous response of this RPC")
    return position


def page(found: Sequence[T], limit: int, position: Callable[[T], dict[str, Any]]) -> tuple[list[T], str]:
    """A page from `limit + 1` rows read, and the token of the next page ("" for the last)."""
    items = list(found[:limit])
    return items, encode_token(position(items[-1])) if len(found) > limit else ""
