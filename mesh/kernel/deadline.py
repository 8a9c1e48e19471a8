"""The deadline of the call being served, inherited by every call it makes.

The server's guard records each call's deadline (`set_deadline`); a downstream call takes what is
left of it (`remaining`), so no call outlives the call that caused it. Work that must finish after
its caller has gone (`mesh.kernel.aio.finish_anyway`) forgets it and gets the default timeout.
"""

from __future__ import annotations

import contextvars
import time

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("shopmesh_deadline", default=None)


def set_deadline(left: float | None) -> None:
    """This call (and what it calls) has `left` seconds, or no deadline."""
    _deadline.set(None if left is None else time.monotonic() + left)


def forget_deadline() -> None:
    """From here on (in this context), downstream calls get their default timeout (mesh.kernel.aio.finish_anyway)."""
    _deadline.set(None)


def remaining(default: float) -> float:
    """Seconds a downstream call may take: the caller's remaining time, else `default`."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(deadline - time.monotonic(), 0.001)
