"""create_order's paths, with fakes for the store and inventory (pure logic; the real ones are
exercised in tests/integration and tests/e2e)."""

from __future__ import annotations

import contextlib

import pytest

from mesh.kernel.errors import AlreadyExists, Unavailable
from mesh.kernel.money import Money
from order import domain, handlers
from order.domain import AttemptTaken, Held, HeldState, RequestIdTaken
from tests.support.fakes import NoFaults, Tally


class FakeInventory:
    def __init__(self, state: HeldState = HeldState.COMMITTED, *, fail_sell: bool = False, fail_commit: bool = False,
                 conflict: bool = False, currencies: dict[str, str] | None = None):
        self.state, self.fail_sell, self.fail_commit, self.conflict = state, fail_sell, fail_commit, conflict
        self.currencies = currencies or {}
        self.calls: list[tuple[str, str]] = []

    async def sell(self, reservation_id, lines):
        self.calls.append(("sell", reservation_id))
        if self.conflict:
            raise AlreadyExists("reservation exists with other lines")
        if self.fail_sell:
            raise Unavailable("inventory did not answer")
        return Held(self.state, {sku: Money(self.currencies.get(sku, "USD"), 100) for sku, _ in lines})

    async def commit(self, reservation_id):
        self.calls.append(("commit", reservation_id))
        if self.fail_commit:
            raise Unavailable("inventory did not answer")

    async def release(self, reservation_id):
        self.calls.append(("release", reservation_id))


class FakeTx:
    """A transaction over FakeStore's dicts; changes apply only if the block ends without error."""

    def __init__(self, store: FakeStore):
        self.owner = store
        self.orders, self.events = dict(store.orders), list(store.events)
        self.attempts = dict(store.attempts)

    async def by_request(self, request_id):
        return self.orders.get(request_id)

    async def begin_attempt(self, request):
        if request.request_id in self.attempts:
            raise RequestIdTaken(request.request_id)
        self.attempts[request.request_id] = False

    async def end_attempt(self, request_id):
        if self.attempts.get(request_id) is False:
            del self.attempts[request_id]
            return True
        return False

    async def store(self, order, fingerprint, event, *, committed=False):
        if self.owner.broken:
            raise OSError("disk full")
        if order.request_id in self.orders:  # the unique constraint on request_id
            raise RequestIdTaken(order.request_id)
        if not await self.end_attempt(order.request_id):
            raise AttemptTaken(order.request_id)
        self.orders[order.request_id] = (order, fingerprint)
        self.events.append(event)
        self.owner.committed[order.request_id] = committed
        return order


class FakeStore:
    def __init__(self, broken: bool = False):
        self.broken = broken
        self.orders: dict = {}
        self.events: list = []
        self.attempts: dict[str, bool] = {}  # request id -> abandoned
        self.committed: dict[str, bool] = {}

    @contextlib.asynccontextmanager
    async def read(self):
        tx = FakeTx(self)
        yield tx
        self.orders, self.events, self.attempts = tx.orders, tx.events, tx.attempts

    write = write_one = read


class FakeOutbox:
    kicks = 0

    def kick(self, event_id: str | None = None) -> None:
        self.kicks += 1


REQUEST = domain.check_request("r1", "alice", [("mug", 2)])


async def test_an_order_is_one_sale_and_stored_sold_with_its_event_and_no_attempt_left() -> None:
    store, inventory, outbox, tally = FakeStore(), FakeInventory(), FakeOutbox(), Tally()
    order = await handlers.create_order(store, inventory, outbox, REQUEST, metrics=tally, faults=NoFaults())
    assert inventory.calls == [("sell", "order:r1")]
    assert [e.event_id for e in store.events] == [f"order.created:{order.order_id}"]
    assert outbox.kicks == 1 and order.total == Money("USD", 200)
    assert store.attempts == {} and store.committed == {"r1": True}
    assert tally.counted == {"orders.confirmed": 1}
    assert await handlers.create_order(store, inventory, outbox, REQUEST, metrics=tally, faults=NoFaults()) == order
    assert tally.counted == {"orders.confirmed": 1}  # a replay counts nothing


async def test_when_storing_fails_the_attempt_stays_for_recovery_to_return_the_stock() -> None:
    store, inventory = FakeStore(broken=True), FakeInventory()
    with pytest.raises(OSError):
        await handlers.create_order(store, inventory, FakeOutbox(), REQUEST, metrics=Tally(), faults=NoFaults())
    assert inventory.calls == [("sell", "order:r1")]  # nothing released here: recovery does it
    assert store.attempts == {"r1": False} and store.orders == {}


async def test_when_the_sale_is_unanswered_the_attempt_stays_and_a_retry_completes_it() -> None:
    store, tally = FakeStore(), Tally()
    with pytest.raises(Unavailable):
        await handlers.create_order(store, FakeInventory(fail_sell=True), FakeOutbox(), REQUEST, metrics=tally, faults=NoFaults())
    assert store.attempts == {"r1": False} and tally.counted == {"orders.rejected": 1}
    order = await handlers.create_order(store, FakeInventory(), FakeOutbox(), REQUEST, metrics=Tally(), faults=NoFaults())
    assert store.orders["r1"][0] == order and store.attempts == {} and len(store.events) == 1


async def test_an_abandoned_attempt_is_not_stored_and_the_caller_told_to_retry() -> None:
    store = FakeStore()
    store.attempts["r1"] = True  # recovery began returning its stock
    with pytest.raises(Unavailable, match="send it again with the same request_id"):
        await handlers.create_order(store, FakeInventory(), FakeOutbox(), REQUEST, metrics=Tally(), faults=NoFaults())
    assert store.orders == {} and store.events == []


async def test_an_inventory_that_only_holds_is_committed_as_before_and_a_failed_commit_is_retried() -> None:
    store, inventory = FakeStore(), FakeInventory(HeldState.RESERVED, fail_commit=True)
    with pytest.raises(Unavailable, match="retry with the same request_id"):
        await handlers.create_order(store, inventory, FakeOutbox(), REQUEST, metrics=Tally(), faults=NoFaults())
    stored = store.orders["r1"][0]
    assert store.committed == {"r1": False}  # recovery commits it if nobody retries
    inventory.fail_commit = False
    assert await handlers.create_order(store, inventory, FakeOutbox(), REQUEST, metrics=Tally(), faults=NoFaults()) == stored
    assert inventory.calls.count(("commit", "order:r1")) == 2 and len(store.events) == 1 and store.attempts == {}


async def test_a_request_id_whose_attempt_was_rolled_back_is_refused() -> None:
    store = FakeStore()
    with pytest.raises(domain.RequestIdSpent):
        await handlers.create_order(store, FakeInventory(HeldState.RELEASED), FakeOutbox(), REQUEST, metrics=Tally(), faults=NoFaults())
    assert store.attempts == {}


async def test_a_repeated_request_returns_the_stored_order_and_stores_nothing_new() -> None:
    store = FakeStore()
    first = await handlers.create_order(store, FakeInventory(), FakeOutbox(), REQUEST, metrics=Tally(), faults=NoFaults())
    again = await handlers.create_order(store, FakeInventory(), FakeOutbox(), REQUEST, metrics=Tally(), faults=NoFaults())
    assert again == first
    assert len(store.orders) == 1 and len(store.events) == 1 and store.attempts == {}
    with pytest.raises(domain.RequestIdReused):
        await handlers.create_order(store, FakeInventory(), FakeOutbox(), domain.check_request("r1", "alice", [("mug", 3)]), metrics=Tally(), faults=NoFaults())


async def test_a_request_whose_order_was_cancelled_returns_that_order() -> None:
    store = FakeStore()
    first = await handlers.create_order(store, FakeInventory(), FakeOutbox(), REQUEST, metrics=Tally(), faults=NoFaults())
    assert await handlers.create_order(store, FakeInventory(HeldState.RELEASED), FakeOutbox(), REQUEST, metrics=Tally(), faults=NoFaults()) == first


async def test_a_reservation_conflict_is_reported_as_a_reused_request_id() -> None:
    store = FakeStore()
    with pytest.raises(domain.RequestIdReused):
        await handlers.create_order(store, FakeInventory(conflict=True), FakeOutbox(), REQUEST, metrics=Tally(), faults=NoFaults())
    assert store.attempts == {}


async def test_a_sale_in_mixed_currencies_is_given_back_at_once() -> None:
    store = FakeStore()
    inventory = FakeInventory(currencies={"tee": "EUR"})
    with pytest.raises(domain.MixedCurrencies):
        await handlers.create_order(store, inventory, FakeOutbox(), domain.check_request("r2", "alice", [("mug", 1), ("tee", 1)]), metrics=Tally(), faults=NoFaults())
    assert inventory.calls == [("sell", "order:r2"), ("release", "order:r2")] and store.attempts == {} and store.orders == {}
