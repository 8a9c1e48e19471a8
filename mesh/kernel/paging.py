"""Page sizes and opaque page tokens, the same way in every List RPC (AIP-158).

A token holds where the next page starts and, when the list was asked with parameters other than
their defaults, a short digest of them: a token is good only for the list it came from, so a
client that changes a filter halfway (`show_archived`, another user) is told so instead of being
handed a page of one list continued from a position in another. A list on default parameters
makes the same token as before tokens were bound, so instances of both versions read each
other's during a rolling upgrade.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
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


def encode_token(position: dict[str, Any], query: Mapping[str, Any] | None = None) -> str:
    bound = _digest(query or {})
    return base64.urlsafe_b64encode(
        json.dumps({**position, "q": bound} if bound else position, separators=(",", ":")).encode()).decode()


def decode_token(token: str, *, query: Mapping[str, Any] | None = None, **fields: type) -> dict[str, Any] | None:
    """The position a token stands for, or None for the first page.

    `fields` names each key the token must hold and its type; `query` is this request's list
    parameters (other than the page's size and token), which must be those the token was made for.
    """
    if not token:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        position = None
    bound = position.pop("q", "") if isinstance(position, dict) else ""
    if (
        not isinstance(position, dict)
        or set(position) != set(fields)
        or not all(type(position[k]) is t for k, t in fields.items())
        or not isinstance(bound, str)
    ):
        raise InvalidArgument("page_token", "is not a token from a previous response of this RPC")
    if bound != _digest(query or {}):
        names = ", ".join(sorted(query or {})) or "its parameters"
        raise InvalidArgument("page_token", f"belongs to a list asked with other {names}; ask with the same "
                                            "values as the page it came from, or with no page_token to start again")
    return position


def page(found: Sequence[T], limit: int, position: Callable[[T], dict[str, Any]],
         query: Mapping[str, Any] | None = None) -> tuple[list[T], str]:
    """A page from `limit + 1` rows read, and the token of the next page ("" for the last)."""
    items = list(found[:limit])
    return items, encode_token(position(items[-1]), query) if len(found) > limit else ""


def _digest(query: Mapping[str, Any]) -> str:
    """12 characters standing for the parameters that are not at their default ("" if none is)."""
    asked = {name: value for name, value in query.items() if value}
    if not asked:
        return ""
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()[:12]
