"""The guard's log line per call: an outage that fails every call is said once per 10 s, with a
count, not once per call (pure logic; the whole guard runs under every server in the suite)."""

from __future__ import annotations

import logging

import grpc
import pytest

from mesh.server import guard


def calls(hook: guard.Logged, code: grpc.StatusCode, n: int) -> None:
    for _ in range(n):
        hook.leave(guard.Call("/shop.order.v1.OrderService/CreateOrder", None), code)  # type: ignore[arg-type]


def test_server_faults_are_one_warning_per_window_counting_the_rest(caplog: pytest.LogCaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(guard.time, "monotonic", lambda: clock[0])
    hook = guard.Logged()
    with caplog.at_level(logging.INFO, logger=guard.logger.name):
        calls(hook, grpc.StatusCode.UNAVAILABLE, 500)
        calls(hook, grpc.StatusCode.INTERNAL, 3)  # another code has its own window
        calls(hook, grpc.StatusCode.INVALID_ARGUMENT, 3)  # the caller's faults: INFO, every one
        clock[0] += guard.Logged.WARN_EVERY
        calls(hook, grpc.StatusCode.UNAVAILABLE, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "UNAVAILABLE" in warnings[0] and "more like it" not in warnings[0]
    assert "INTERNAL" in warnings[1]
    assert warnings[2].endswith("(and 499 more like it since the last line)")
    assert sum(r.levelno == logging.INFO for r in caplog.records) == 3
