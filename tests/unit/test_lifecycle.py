"""The one shutdown path: its steps in order, within one budget; a step that hangs is given up on,
not waited for, and a process still there at the budget's end is ended by the watchdog."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time

import pytest

from mesh.kernel import aio
from mesh.server import lifecycle
from mesh.settings import Settings
from tests.conftest import ROOT


class Target:
    not_ready_means = "test not ready"

    def __init__(self, stop_hangs: bool = False, close_hangs: bool = False):
        self.steps: list[str] = []
        self.stop_hangs, self.close_hangs = stop_hangs, close_hangs

    async def not_ready(self) -> None:
        self.steps.append("not ready")

    async def stop(self, grace: float) -> None:
        self.steps.append(f"stop {grace:g}")
        if self.stop_hangs:
            await asyncio.Event().wait()  # never set

    async def close(self) -> None:
        self.steps.append("close")
        if self.close_hangs:
            await asyncio.Event().wait()


async def test_the_steps_run_in_order_with_the_drain_between() -> None:
    target = Target()
    started = time.monotonic()
    await lifecycle.shut_down(target, Settings(service="order", shutdown_drain=0.2, shutdown_grace=3))
    assert target.steps == ["not ready", "stop 3", "close"]
    assert time.monotonic() - started >= 0.2


async def test_a_step_that_hangs_is_given_up_on_and_what_waited_is_logged(monkeypatch: pytest.MonkeyPatch,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(lifecycle, "STOP_MARGIN", 0.2)
    target = Target(stop_hangs=True)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "mesh.server.lifecycle"):
        await lifecycle.shut_down(target, Settings(service="order", shutdown_grace=0.1))
    assert time.monotonic() - started < 1.5
    assert target.steps == ["not ready", "stop 0.1", "close"]  # and it still closed
    waiting, given_up = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Half-way through the grace, what the step waits for is named while it still runs: the whole
    # await chain, down to the future it is parked on (asyncio's print_stack shows only the top).
    assert "stopping the calls in flight still waiting after 0.05 s" in waiting
    assert "in stop\n" in waiting and "in wait\n" in waiting and "waiting on <Future pending" in waiting, waiting
    assert "stopping the calls in flight took more than 0.25 s" in given_up


async def test_closing_that_hangs_ends_with_the_budget_grace_plus_exit_margin(caplog: pytest.LogCaptureFixture) -> None:
    target = Target(close_hangs=True)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "mesh.server.lifecycle"):
        await lifecycle.shut_down(target, Settings(service="order", shutdown_grace=0.2))
    took = time.monotonic() - started
    assert 0.2 + lifecycle.EXIT_MARGIN - 0.2 < took < 0.2 + lifecycle.EXIT_MARGIN + 0.3, took
    assert any("closing took more than" in r.getMessage() for r in caplog.records)


async def test_work_its_caller_left_finishes_before_the_database_closes() -> None:
    target = Target()

    async def store_the_order() -> None:
        await asyncio.sleep(0.3)
        target.steps.append("order stored")

    async def handler() -> None:
        await aio.finish_anyway(store_the_order(), "storing an order")

    call = asyncio.create_task(handler())
    await asyncio.sleep(0.01)
    call.cancel()  # the caller hung up (or gRPC cancelled the call at the grace's end)
    await lifecycle.shut_down(target, Settings(service="order", shutdown_grace=1))
    assert target.steps == ["not ready", "stop 1", "order stored", "close"]


def test_the_watchdog_ends_a_process_still_running_past_its_budget_and_says_where_it_was() -> None:
    script = ("import time\nfrom mesh.server import lifecycle\nlifecycle.watchdog(0.3)\n"
              "def stuck_here():\n    time.sleep(30)\nstuck_here()\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 10
    assert "shutdown: still running 0.3 s after the drain, past its budget; exiting now" in done.stderr
    assert "in stuck_here" in done.stderr, done.stderr  # every thread's stack, the stuck one's too
