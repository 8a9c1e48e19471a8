"""The circuit breaker's states, on a clock the test moves."""

from __future__ import annotations

import grpc

from mesh.breaker import Breaker, State

UNAVAILABLE, OK = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_failures_open_it_and_it_fails_fast_until_the_cooldown() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cooldown=5, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record(UNAVAILABLE)
    breaker.record(OK)  # an answer in between: the count starts over
    for _ in range(3):
        assert breaker.allow()
        breaker.record(grpc.StatusCode.DEADLINE_EXCEEDED)
    assert breaker.state is State.OPEN and not breaker.allow() and breaker.retry_in() == 5
    clock.now = 4.9
    assert not breaker.allow()


def test_after_the_cooldown_one_probe_decides() -> None:
    clock = Clock()
    breaker = Breaker(failures=1, cooldown=5, clock=clock)
    breaker.record(UNAVAILABLE)
    clock.now = 5
    assert breaker.allow() and breaker.state is State.HALF_OPEN
    assert not breaker.allow()  # only one probe at a time
    breaker.record(UNAVAILABLE)
    assert breaker.state is State.OPEN and not breaker.allow()
    clock.now = 10
    assert breaker.allow()
    breaker.record(OK)
    assert breaker.state is State.CLOSED and all(breaker.allow() for _ in range(10))


def test_answers_that_are_errors_do_not_count_and_a_cancelled_probe_frees_the_slot() -> None:
    clock = Clock()
    breaker = Breaker(failures=2, cooldown=1, clock=clock)
    for _ in range(10):
        breaker.record(grpc.StatusCode.NOT_FOUND)
    assert breaker.state is State.CLOSED
    breaker.record(UNAVAILABLE)
    breaker.record(UNAVAILABLE)
    clock.now = 1
    assert breaker.allow()
    breaker.record(grpc.StatusCode.CANCELLED)
    assert breaker.allow()  # the probe's caller gave up; another may probe
