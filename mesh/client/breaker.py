"""A circuit breaker per upstream service: stop calling what keeps failing, then probe.

Closed: calls go through; `failures` in a row that say the upstream is not
answering open it: UNAVAILABLE, and DEADLINE_EXCEEDED of a call that gave the upstream at
least `min_deadline` seconds. A deadline the caller chose shorter than that is the caller's
haste, not the upstream's failure: it counts for nothing, so one client sending `grpc-timeout:
1m` cannot open the breaker for everyone else. Open: calls fail at once,
without a network round trip, for `cooldown` seconds. Then half-open: one probe
call goes through; its success closes the breaker, its failure opens it again.

Per-instance protection is gRPC's own outlier detection (mesh/client/channels.py),
which ejects the one bad instance of several; this breaker covers the case
where the whole upstream is down, so callers (and the gateway's clients, with a
503) hear it at once instead of each waiting out retries and deadlines.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import grpc

from mesh.rpc.status import NOT_ANSWERED


class State(enum.IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class Breaker:
    def __init__(self, failures: int = 5, cooldown: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 min_deadline: float = 1.0, changed: Callable[[State], None] = lambda state: None):
        """`changed(state)` is told every change of state (a metric, for the operator)."""
        self.threshold = failures
        self.cooldown = cooldown
        self.min_deadline = min_deadline
        self._clock = clock
        self._changed = changed
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        if state is not self._state:
            self._state = state
            self._changed(state)

    def allow(self) -> bool:
        """Whether a call may go out now (in half-open, only the one probe)."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN and self._clock() - self._opened_at >= self.cooldown:
            self.state = State.HALF_OPEN
            self._probing = False
        if self.state is State.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def retry_in(self) -> float:
        return max(self._opened_at + self.cooldown - self._clock(), 0.0)

    def record(self, code: grpc.StatusCode, timeout: float | None = None) -> None:
        """One call's outcome; `timeout`: the seconds the call was given."""
        hasty = code is grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None and timeout < self.min_deadline
        if code is grpc.StatusCode.CANCELLED or hasty:  # the caller gave up, or hurried: says nothing of the upstream
            if self.state is State.HALF_OPEN:
                self._probing = False
            return
        if code not in NOT_ANSWERED:  # a NOT_FOUND or INVALID_ARGUMENT is an answer
            self.state, self._failures, self._probing = State.CLOSED, 0, False
            return
        self._failures += 1
        if self.state is State.HALF_OPEN or self._failures >= self.threshold:
            self.state, self._opened_at, self._probing = State.OPEN, self._clock(), False
