"""Test-only fault injection, off unless SHOPMESH_FAULTS names some (never set it in production).

Plain logic with no adapter, so it sits in the kernel: settings validate the spec with `parse`,
each composition root builds a `FaultPoints` from it and hands it to what has points.

Tests use it to make rare moments reproducible: the order service dying between
reserve and commit, an upstream that is slow or briefly unavailable.

    SHOPMESH_FAULTS="order.after_store=kill:3,rpc.ReserveStock=fail:1,rpc.GetProduct=delay:2.5"

- `kill[:N]`   SIGKILL this process at the Nth time the point is reached (default the first)
- `fail:N`     the first N times, fail with UNAVAILABLE (an RPC point: as the server's answer)
- `delay:S`    wait S seconds each time

Points: `order.after_reserve` (sold, not stored), `order.storing` (in the shielded store, before
its transaction), `order.after_store` (in the order flow) and
`rpc.<Method>` (before a served RPC's handler runs).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass

from mesh.kernel.errors import Unavailable

logger = logging.getLogger(__name__)

ACTIONS = ("kill", "fail", "delay")


class FaultSpecError(ValueError):
    pass


@dataclass
class Fault:
    point: str
    action: str
    value: float
    hits: int = 0

    async def trigger(self) -> None:
        self.hits += 1
        if self.action == "kill" and self.hits == int(self.value):
            logger.warning("fault %s: killing this process (SIGKILL)", self.point)
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.action == "fail" and self.hits <= self.value:
            raise Unavailable(f"fault {self.point}: injected failure {self.hits} of {int(self.value)}")
        elif self.action == "delay":
            await asyncio.sleep(self.value)


def parse(spec: str) -> dict[str, Fault]:
    faults = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, sep, action = item.partition("=")
        name, _, raw = action.partition(":")
        if not sep or not point or name not in ACTIONS:
            raise FaultSpecError(f"{item!r}: expected POINT=ACTION[:VALUE] with ACTION one of {', '.join(ACTIONS)}")
        try:
            value = float(raw) if raw else 1.0
        except ValueError:
            raise FaultSpecError(f"{item!r}: {raw!r} is not a number") from None
        if value < 0:
            raise FaultSpecError(f"{item!r}: the value must not be negative")
        faults[point] = Fault(point, name, value)
    return faults


class FaultPoints:
    """The fault points of one process, parsed from its SHOPMESH_FAULTS; none fires when it is empty.

    Built by a composition root and passed to what has points (order's use cases, the gRPC guard),
    so nothing in the runtime reaches for a global.
    """

    def __init__(self, spec: str = ""):
        self.spec = spec
        self._faults = parse(spec)

    def __bool__(self) -> bool:
        return bool(self._faults)

    def get(self, point: str) -> Fault | None:
        return self._faults.get(point)

    async def point(self, name: str) -> None:
        """A place a test may make fail; free when no fault is configured."""
        if self._faults:
            fault = self._faults.get(name)
            if fault is not None:
                await fault.trigger()
