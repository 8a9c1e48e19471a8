"""One long-lived channel per upstream, reused by every call until the instance set changes."""

from __future__ import annotations

import pytest

from generated.shop.inventory.v1 import inventory_pb2_grpc
from mesh.client.channels import Upstreams
from mesh.client.discovery import StaticDiscovery
from mesh.kernel.errors import Unavailable


class ChangingDiscovery(StaticDiscovery):
    """Static addresses plus the change notifications a Consul watch would send."""

    def __init__(self, addresses):
        super().__init__(addresses)
        self.listeners = []

    def subscribe(self, listener):
        self.listeners.append(listener)

    def change(self, service, addresses):
        self._addresses[service] = list(addresses)
        for listener in self.listeners:
            listener(service, addresses)


async def test_calls_share_one_channel_and_one_stub_per_upstream() -> None:
    upstreams = Upstreams(StaticDiscovery({"inventory": "127.0.0.1:1", "order": "127.0.0.1:2"}))
    first = upstreams.channel("inventory")
    assert upstreams.channel("inventory") is first
    assert upstreams.channel("order") is not first
    stub = upstreams.bound("inventory", "stub", inventory_pb2_grpc.InventoryServiceStub)
    assert upstreams.bound("inventory", "stub", inventory_pb2_grpc.InventoryServiceStub) is stub
    await upstreams.close()


async def test_a_new_instance_set_gets_a_new_channel_and_nothing_means_unavailable() -> None:
    discovery = ChangingDiscovery({"inventory": "127.0.0.1:1"})
    upstreams = Upstreams(discovery)
    old = upstreams.channel("inventory")
    discovery.change("inventory", ["127.0.0.1:1", "127.0.0.1:3"])
    assert upstreams.channel("inventory") is not old
    discovery.change("inventory", [])
    with pytest.raises(Unavailable, match="inventory"):
        upstreams.channel("inventory")
    await upstreams.close()
