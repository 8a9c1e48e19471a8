"""Fakes of what use cases are handed (their ports), for tests that call the use cases directly."""

from __future__ import annotations

from collections import Counter


class Tally:
    """Any service's business metrics, kept in a Counter: `units` (inventory), `orders` (order),
    `sent` and `streams` (notification)."""

    def __init__(self) -> None:
        self.counted: Counter[str] = Counter()
        self.sale_writes: list[float] = []

    def units(self, movement: str, count: int) -> None:
        self.counted[f"units.{movement}"] += count

    def sale_written(self, seconds: float) -> None:
        self.sale_writes.append(seconds)

    def orders(self, status: str) -> None:
        self.counted[f"orders.{status}"] += 1

    def sent(self, count: int) -> None:
        self.counted["sent"] += count

    def streams(self, change: int) -> None:
        self.counted["streams"] += change


class NoFaults:
    """Fault points that never fire (the real ones are mesh/kernel/faults.py, configured by SHOPMESH_FAULTS)."""

    async def point(self, name: str) -> None:
        return None
