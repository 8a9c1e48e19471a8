"""create_order's failure paths, with fakes for the store and inventory."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy.exc import IntegrityError

from mesh.errors import AlreadyExists, Unavailable
from mesh.money import Money
from order import domain, handlers
from order.upstreams import Held, HeldState


class FakeInventory:
    def __init__(self, state: HeldState = HeldState.RESERVED, fail_commit: bool = False, conflict: bool = False):
        self.state, self.fail_commit, self.conflict = state, fail_commit, conflict
        self.calls: list[tuple[str, str]] = []

    async def reserve(self, reservation_id, lines):
        self.calls.append(("reserve", reservation_id))
        if self.conflict:
            raise AlreadyExists("reservation exists with other lines")
        return Held(self.state, {sku: Money("USD", 100) for sku, _ in lines})

    async def commit(self, reservation_id):
        self.calls.append(("commit", reservation_id))
        if self.fail_commit:
            raise Unavailable("inventory did not answer")

    async def release(self, reservation_id):
        self.calls.append(("release", reservation_id))


class FakeTx:
    def __init__(self, store: FakeStore):
        self.store = store

    async def by_request(self, request_id):
        return self.store.orders.get(request_id)

    async def insert(self, order, fingerprint):
        if self.store.broken:
            raise OSError("disk full")
        if order.request_id in self.store.orders:  # the unique constraint on request_id
            raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed: orders.request_id"))
        self.store.orders[order.request_id] = (order, fingerprint)
        return order

    async def add_event(self, event):
        self.store.events.append(event)


class FakeStore:
    def __init__(self, broken: bool = False):
        self.broken = broken
        self.orders: dict = {}
        self.events: list = []

    @contextlib.asynccontextmanager
    async def read(self):
        yield FakeTx(self)

    write = read


class FakeOutbox:
    kicks = 0

    def kick(self, event_id: str | None = None) -> None:
        self.kicks += 1


REQUEST = domain.check_request("r1", "alice", [("mug", 2)])


async def test_a_stored_order_is_committed_and_its_event_queued() -> None:
    store, inventory, outbox = FakeStore(), FakeInventory(), FakeOutbox()
    order = await handlers.create_order(store, inventory, outbox, REQUEST)
    assert inventory.calls == [("reserve", "order:r1"), ("commit", "order:r1")]
    assert [e.event_id for e in store.events] == [f"order.created:{order.order_id}"]
    assert outbox.kicks == 1 and order.total == Money("USD", 200)


async def test_when_storing_fails_the_reservation_is_released() -> None:
    inventory = FakeInventory()
    with pytest.raises(OSError):
        await handlers.create_order(FakeStore(broken=True), inventory, FakeOutbox(), REQUEST)
    assert inventory.calls == [("reserve", "order:r1"), ("release", "order:r1")]


async def test_when_commit_fails_the_order_stands_unacknowledged_and_a_retry_completes_it() -> None:
    store, inventory = FakeStore(), FakeInventory(fail_commit=True)
    with pytest.raises(Unavailable, match="retry with the same request_id"):
        await handlers.create_order(store, inventory, FakeOutbox(), REQUEST)
    stored = store.orders["r1"][0]
    assert ("release", "order:r1") not in inventory.calls  # its stock stays held for the retry
    inventory.fail_commit = False
    assert await handlers.create_order(store, inventory, FakeOutbox(), REQUEST) == stored
    assert inventory.calls.count(("commit", "order:r1")) == 2 and len(store.events) == 1


async def test_a_repeat_of_a_completed_order_does_not_commit_again() -> None:
    store = FakeStore()
    first = await handlers.create_order(store, FakeInventory(), FakeOutbox(), REQUEST)
    inventory = FakeInventory(HeldState.COMMITTED)
    assert await handlers.create_order(store, inventory, FakeOutbox(), REQUEST) == first
    assert ("commit", "order:r1") not in inventory.calls


async def test_a_request_id_whose_attempt_was_rolled_back_is_refused() -> None:
    with pytest.raises(domain.RequestIdSpent):
        await handlers.create_order(FakeStore(), FakeInventory(HeldState.RELEASED), FakeOutbox(), REQUEST)


async def test_a_repeated_request_returns_the_stored_order_and_stores_nothing_new() -> None:
    store = FakeStore()
    first = await handlers.create_order(store, FakeInventory(), FakeOutbox(), REQUEST)
    again = await handlers.create_order(store, FakeInventory(), FakeOutbox(), REQUEST)
    assert again == first
    assert len(store.orders) == 1 and len(store.events) == 1
    with pytest.raises(domain.RequestIdReused):
        await handlers.create_order(store, FakeInventory(), FakeOutbox(), domain.check_request("r1", "alice", [("mug", 3)]))


async def test_a_request_whose_order_was_cancelled_returns_that_order() -> None:
    store = FakeStore()
    first = await handlers.create_order(store, FakeInventory(), FakeOutbox(), REQUEST)
    assert await handlers.create_order(store, FakeInventory(HeldState.RELEASED), FakeOutbox(), REQUEST) == first


async def test_a_reservation_conflict_is_reported_as_a_reused_request_id() -> None:
    with pytest.raises(domain.RequestIdReused):
        await handlers.create_order(FakeStore(), FakeInventory(conflict=True), FakeOutbox(), REQUEST)
