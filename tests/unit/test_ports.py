"""Ports for our own servers: never the kernel's ephemeral ones, never the same one twice."""

from __future__ import annotations

import socket
from pathlib import Path

from mesh.tools.ports import free_port


def test_ports_are_free_distinct_and_outside_the_ephemeral_range() -> None:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    held = free_port() + 1  # the next in the walk: someone else holds it meanwhile
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", held))
        ports = [free_port() for _ in range(200)]
    assert held not in ports
    assert len(set(ports)) == len(ports)
    assert not any(low <= port <= high for port in ports)
