"""Waiting on a condition, the one way: `eventually` (and `eventually_async`), never a bare sleep."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def _late(timeout: float, what: str, detail: Callable[[], str] | None, last: str = "") -> str:
    """The failure's words: what was awaited, the last thing seen, and `detail()` (logs, say)."""
    return f"timed out after {timeout:g}s waiting for {what}{last}" + (f"\n{detail()}" if detail else "")


def eventually(check: Callable[[], T], timeout: float = 10.0, what: str = "the condition",
               every: float = 0.1, detail: Callable[[], str] | None = None) -> T:
    """`check()`'s first truthy answer within `timeout` seconds; else the test fails naming `what`
    (and `detail()`'s words, such as a server's log, computed only then)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, _late(timeout, what, detail)
        time.sleep(every)


async def eventually_async(check: Callable[[], Awaitable[T]], timeout: float = 10.0, what: str = "the condition",
                           every: float = 0.1, detail: Callable[[], str] | None = None) -> T:
    """As `eventually`, for a check that must be awaited; the loop keeps running meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert loop.time() < deadline, _late(timeout, what, detail)
        await asyncio.sleep(every)


def settled(fetch: Callable[[], T], until: Callable[[T], bool], timeout: float = 10.0,
            what: str = "the value to settle", every: float = 0.1, detail: Callable[[], str] | None = None) -> T:
    """`fetch()` again and again until `until(value)` holds; that value. The test fails naming `what`
    (and the last value seen) if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = fetch()
        if until(found):
            return found
        assert time.monotonic() < deadline, _late(timeout, what, detail, f"; last: {found!r}")
        time.sleep(every)


def alive(process: subprocess.Popen | None, what: str, log: Path | None = None) -> None:
    """Fails the test at once if `process` (waited on for `what`) has exited, with its log's tail."""
    if process is not None and process.poll() is not None:
        tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
        raise AssertionError(f"exited with {process.returncode} before {what}" + (f":\n{tail}" if tail else ""))


def said(log: Path, text: str, process: subprocess.Popen | None = None, timeout: float = 30.0, after: int = 0) -> int:
    """Where `text` first appears in the log file `log` past offset `after`, once it does; the test
    fails with the log's tail if it does not within `timeout` seconds or `process` exits first."""

    def found() -> tuple[int] | None:
        content = log.read_text(errors="replace") if log.exists() else ""
        at = content.find(text, after)
        if at >= 0:
            return (at,)
        alive(process, f"saying {text!r}", log)
        return None

    tail = lambda: log.read_text(errors="replace")[-3000:] if log.exists() else ""  # noqa: E731
    return eventually(found, timeout, f"{log.name} to say {text!r}", detail=tail)[0]


def ended(process: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if `process` has not exited within `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
