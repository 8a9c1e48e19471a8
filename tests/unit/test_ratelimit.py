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


def test_the_client_behind_trusted_proxies_is_the_rightmost_untrusted_hop() -> None:
    import ipaddress

    from gateway.ratelimit import client_address

    trusted = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert client_address("10.0.0.2", "203.0.113.7", trusted) == "203.0.113.7"
    assert client_address("10.0.0.2", "6.6.6.6, 203.0.113.7, 10.1.1.1", trusted) == "203.0.113.7"
    assert client_address("::1", "2001:db8::5", trusted) == "2001:db8::5"
    assert client_address("192.0.2.1", "203.0.113.7", trusted) == "192.0.2.1"  # not a proxy of ours
    assert client_address("10.0.0.2", None, trusted) == "10.0.0.2"
    assert client_address("10.0.0.2", "nonsense, 10.1.1.1", trusted) == "10.1.1.1"  # stops at the last trusted hop
    assert client_address("10.0.0.2", "10.1.1.1", trusted) == "10.1.1.1"  # all trusted: the farthest
    assert client_address("10.0.0.2", "203.0.113.7", ()) == "10.0.0.2"  # no proxies trusted


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    import pytest

    from mesh.settings import Settings, SettingsError

    assert [str(n) for n in Settings.from_env("gateway", {"SHOPMESH_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"})
            .trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32"]
    with pytest.raises(SettingsError, match="SHOPMESH_TRUSTED_PROXIES: 'proxy.local'"):
        Settings.from_env("gateway", {"SHOPMESH_TRUSTED_PROXIES": "proxy.local"})
