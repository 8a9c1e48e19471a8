"""Per-client token buckets: `burst` requests at once, then `rate` a second.

A client is whatever `key` the gateway passes (the authenticated user when there
is one, else the peer address). Buckets of clients that went quiet are dropped,
so memory stays bounded however many clients come and go.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_CLIENTS = 100_000


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, when)

    def take(self, key: str) -> float:
        """0 if `key` may go now (one token taken), else the seconds until it may."""
        now = self._clock()
        tokens, then = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # most recently used last
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        """The Retry-After header value: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait)))
