"""Free loopback ports for servers we start ourselves (the launcher's Consul agent, the tests)."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["free_port"]


def _unleased_ports() -> Iterator[int]:
    """Ports outside the kernel's ephemeral range, each handed out once per process.

    Asking the kernel for port 0 returns an ephemeral port, which the kernel is just as free to
    give the next outgoing connection (any client's) before our server binds it: a server
    then dies with "address in use" once in a few hundred starts. Ports below the ephemeral
    range are never taken that way, and walking them in order never hands one out twice.
    """
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    block = range(max(1024, low - 12000), low) if low > 13024 else range(high + 1, 65536)
    start = random.randrange(len(block))  # two processes side by side start apart
    for i in range(len(block)):
        yield block[(start + i) % len(block)]


_PORTS = _unleased_ports()


def free_port() -> int:
    """A loopback port nothing listens on, not ephemeral, not handed out before by this process."""
    for port in _PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port left outside the ephemeral range")
