"""Waiting on a condition, the one way: `eventually` (and `eventually_async`), never a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 10.0, what: str = "the condition",
               every: float = 0.1) -> T:
    """`check()`'s first truthy answer within `timeout` seconds; else the test fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(every)


async def eventually_async(check: Callable[[], Awaitable[T]], timeout: float = 10.0, what: str = "the condition",
                           every: float = 0.1) -> T:
    """As `eventually`, for a check that must be awaited; the loop keeps running meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert loop.time() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        await asyncio.sleep(every)


def settled(fetch: Callable[[], T], until: Callable[[T], bool], timeout: float = 10.0,
            what: str = "the value to settle", every: float = 0.1) -> T:
    """`fetch()` again and again until `until(value)` holds; that value. The test fails naming `what`
    (and the last value seen) if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = fetch()
        if until(found):
            return found
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}; last: {found!r}"
        time.sleep(every)
