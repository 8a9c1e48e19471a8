"""The outbox relay's retry spacing while notification is down."""

from __future__ import annotations

from order.background.outbox import BACKOFF_CAP, OutboxRelay


def test_retries_back_off_exponentially_with_jitter_up_to_a_cap() -> None:
    relay = OutboxRelay(store=None, notifier=None, interval=2.0)  # type: ignore[arg-type]
    assert relay.backoff(0) == 2.0
    for failures, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (50, 2.0 * BACKOFF_CAP)):
        waits = [relay.backoff(failures) for _ in range(200)]
        assert all(0.8 * ceiling <= w <= ceiling for w in waits), failures
        assert len(set(waits)) > 100  # jittered: instances that failed together do not retry together
