"""Per-client token buckets: `burst` requests at once, then `rate` a second.

A client is whatever `key` the gateway passes (the authenticated user when there
is one, else the client's address: `client_address`). Buckets of clients that went quiet are dropped,
so memory stays bounded however many clients come and go.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

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


def within(address: str, networks: Sequence[Network]) -> bool:
    """Whether `address` (an IP as text) is in one of `networks`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """Who sent the request: the peer, unless the peer is a trusted proxy.

    Each proxy appends the address it got the request from to X-Forwarded-For, so only the
    entries our trusted proxies appended can be believed: walking from the right, the first
    address that is not a trusted proxy is the client (nginx's `real_ip_recursive`, Envoy's
    trusted hops). Anything a client wrote to the left of that is ignored; an entry that is not
    an address ends the walk at the last trusted hop.
    """
    if not trusted or not forwarded_for or not within(peer, trusted):
        return peer
    client = peer
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return client
        client = hop
        if not within(hop, trusted):
            return client
    return client
