"""Where the other services are. One small interface; static addresses are the default.

A later backend (Consul) implements the same four calls, so nothing that
resolves an upstream changes when discovery does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from mesh.settings import Settings


class Discovery(Protocol):
    def addresses(self, service: str) -> Sequence[str]:
        """`host:port` of every instance of `service` that may take calls now."""

    async def register(self, service: str, address: str) -> None:
        """Announce this process as an instance of `service` at `address`."""

    async def deregister(self) -> None:
        """Withdraw what `register` announced."""

    async def close(self) -> None: ...


class StaticDiscovery:
    """Fixed addresses from settings: the zero-setup local mesh."""

    def __init__(self, addresses: Mapping[str, str]):
        self._addresses = {name: [addr] for name, addr in addresses.items()}

    def addresses(self, service: str) -> Sequence[str]:
        try:
            return self._addresses[service]
        except KeyError:
            raise LookupError(f"no address configured for service {service!r}") from None

    async def register(self, service: str, address: str) -> None:
        return None

    async def deregister(self) -> None:
        return None

    async def close(self) -> None:
        return None


def create_discovery(settings: Settings) -> Discovery:
    if settings.discovery == "static":
        return StaticDiscovery(settings.addresses)
    raise ValueError(f"unsupported discovery {settings.discovery!r}")
