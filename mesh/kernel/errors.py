"""Errors a caller can act on, as plain exceptions with no gRPC in them.

Services subclass these for their own rules (`OutOfStock(FailedPrecondition)`);
`mesh.rpc.status` is the one table that turns them into gRPC status codes.
"""

from __future__ import annotations

from collections.abc import Sequence


class ShopError(Exception):
    """Base of every expected error; `str(error)` is the message the caller sees."""


class InvalidArgument(ShopError):
    """A request field is missing, malformed or out of range; `more` names further ones."""

    def __init__(self, field: str, problem: str, *, more: Sequence[tuple[str, str]] = ()):
        self.violations = ((field, problem), *more)
        super().__init__("; ".join(f"{f}: {p}" for f, p in self.violations))
        self.field = field
        self.problem = problem


class NotFound(ShopError):
    """The named resource does not exist."""


class PermissionDenied(ShopError):
    """The caller may not do this, whoever they say they are."""


class AlreadyExists(ShopError):
    """The resource or idempotency key exists with other content."""


class FailedPrecondition(ShopError):
    """The request is well formed but the system's state does not allow it."""

    def __init__(self, message: str, *, subject: str = "", kind: str = ""):
        super().__init__(message)
        self.subject = subject
        self.kind = kind


class Aborted(ShopError):
    """A concurrent change got in the way; the same call again will see the new state."""


class ResourceExhausted(ShopError):
    """A limit was reached (too many calls at once); retry later."""


class Unavailable(ShopError):
    """A service this one depends on could not be reached; retrying may help."""


class DeadlineExceeded(ShopError):
    """The caller's deadline ran out while waiting on a service this one depends on."""


class UpstreamFailed(ShopError):
    """A service this one depends on failed in a way that is not the caller's fault."""


class Duplicate(Exception):
    """A write met a row already stored under the same key (a repeat, or a concurrent writer).

    Not a caller's error by itself: stores raise it in place of the driver's IntegrityError
    (mesh/data/db.py), and each use case decides what a duplicate means (a replay, a conflict).
    Uncaught, it is a bug, answered INTERNAL like any other.
    """
