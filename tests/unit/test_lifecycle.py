"""The one shutdown path: its steps in order, and a step that hangs is given up on, not waited for."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from mesh.server import lifecycle
from mesh.settings import Settings


class Target:
    not_ready_means = "test not ready"

    def __init__(self, stop_hangs: bool = False):
        self.steps: list[str] = []
        self.stop_hangs = stop_hangs

    async def not_ready(self) -> None:
        self.steps.append("not ready")

    async def stop(self, grace: float) -> None:
        self.steps.append(f"stop {grace:g}")
        if self.stop_hangs:
            await asyncio.Event().wait()  # never set

    async def close(self) -> None:
        self.steps.append("close")


async def test_the_steps_run_in_order_with_the_drain_between() -> None:
    target = Target()
    started = time.monotonic()
    await lifecycle.shut_down(target, Settings(service="order", shutdown_drain=0.2, shutdown_grace=3))
    assert target.steps == ["not ready", "stop 3", "close"]
    assert time.monotonic() - started >= 0.2


async def test_a_step_that_hangs_is_given_up_on_and_what_waited_is_logged(monkeypatch: pytest.MonkeyPatch,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(lifecycle, "STEP_MARGIN", 0.2)
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
