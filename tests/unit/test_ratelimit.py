"""The token bucket, on a clock the test moves."""

from __future__ import annotations

from gateway.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_refill_rate_governs() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    wait = limiter.take("a")
    assert 0.49 < wait <= 0.5 and RateLimiter.retry_after(wait) == "1"
    clock.now += 0.5
    assert limiter.take("a") == 0  # one token came back
    clock.now += 10
    assert [limiter.take("a") for _ in range(4)][:3] == [0, 0, 0]  # refilled to the burst, never beyond


def test_clients_have_their_own_buckets_and_quiet_ones_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock, max_clients=3)
    assert limiter.take("a") == 0 and limiter.take("b") == 0
    assert limiter.take("a") > 0 and limiter.take("b") > 0
    for key in ("c", "d", "e"):
        limiter.take(key)
    assert len(limiter._buckets) == 3 and "a" not in limiter._buckets
    assert limiter.take("a") == 0  # forgotten means a fresh bucket


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert RateLimiter.retry_after(0.01) == "1" and RateLimiter.retry_after(2.2) == "3"
