"""The circuit breaker's states, on a clock the test moves."""

from __future__ import annotations

import grpc

from mesh.client.breaker import Breaker, State

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


def test_a_deadline_the_caller_cut_short_is_not_the_upstreams_failure() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cooldown=5, clock=clock, min_deadline=1.0)
    for _ in range(50):  # one hasty client: grpc-timeout 1m, 500m ...
        assert breaker.allow()
        breaker.record(grpc.StatusCode.DEADLINE_EXCEEDED, 0.001)
        breaker.record(grpc.StatusCode.DEADLINE_EXCEEDED, 0.5)
    assert breaker.state is State.CLOSED
    for _ in range(3):  # an upstream that does not answer within a fair deadline still opens it
        breaker.record(grpc.StatusCode.DEADLINE_EXCEEDED, 5.0)
    assert breaker.state is State.OPEN
    clock.now = 5
    assert breaker.allow()  # half-open: the probe is a hasty call, which tells nothing...
    breaker.record(grpc.StatusCode.DEADLINE_EXCEEDED, 0.01)
    assert breaker.state is State.HALF_OPEN and breaker.allow()  # ...so the next call may probe


def test_every_change_of_state_is_told_once_and_nothing_else() -> None:
    clock, told = Clock(), []
    breaker = Breaker(failures=2, cooldown=5, clock=clock, changed=told.append)
    breaker.record(UNAVAILABLE)
    breaker.record(OK)
    assert told == []  # one failure, then an answer: still closed
    breaker.record(UNAVAILABLE)
    breaker.record(UNAVAILABLE)
    assert not breaker.allow() and not breaker.allow()
    clock.now = 5
    assert breaker.allow()
    breaker.record(OK)
    assert told == [State.OPEN, State.HALF_OPEN, State.CLOSED]
