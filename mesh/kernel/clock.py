"""The one clock: naive UTC datetimes, which every supported database stores as is."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
