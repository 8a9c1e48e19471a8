"""send_notifications against a store whose other callers keep winning the race (a fake of the
store's port, for the handler's retry logic alone; the real stores race in the e2e fault tests)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest

from mesh.kernel.errors import Duplicate
from notification.domain import Notification
from notification.handlers import Wakeups, send_notifications
from tests.support.fakes import Tally


class RacedStore:
    """Before each of our inserts, a concurrent caller stores one more of `racers` (committed)."""

    def __init__(self, racers: Sequence[Notification]):
        self.stored: dict[str, Notification] = {}
        self.racers = list(racers)
        self.inserts = 0

    async def by_events(self, event_ids: Sequence[str]) -> dict[str, Notification]:
        return {e: self.stored[e] for e in event_ids if e in self.stored}

    async def insert_many(self, wanted: Sequence[Notification], channel: str) -> list[Notification]:
        self.inserts += 1
        if self.racers:
            racer = self.racers.pop(0)
            self.stored[racer.event_id] = racer
        if any(w.event_id in self.stored for w in wanted):
            raise Duplicate("taken")
        for w in wanted:
            self.stored[w.event_id] = w
        return list(wanted)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[RacedStore]:
        yield self

    write_one = read


def note(event: str) -> Notification:
    return Notification(event, "ann", "order.created", "s", "b")


async def test_a_batch_that_loses_the_race_to_every_event_but_one_still_stores_once() -> None:
    wanted = [note(f"e{i}") for i in range(4)]
    store = RacedStore(wanted[:3])  # three other callers, one after another, each stored one first
    got = await send_notifications(store, Tally(), Wakeups(), wanted)  # type: ignore[arg-type]
    assert [n.event_id for n in got] == ["e0", "e1", "e2", "e3"]
    assert store.inserts == 4 and set(store.stored) == {"e0", "e1", "e2", "e3"}


async def test_a_store_that_says_duplicate_with_nothing_new_known_is_not_retried_forever() -> None:
    class Liar(RacedStore):
        async def insert_many(self, wanted: Sequence[Notification], channel: str) -> list[Notification]:
            self.inserts += 1
            raise Duplicate("taken")

    store = Liar([])
    with pytest.raises(Duplicate):
        await send_notifications(store, Tally(), Wakeups(), [note("a"), note("b")])  # type: ignore[arg-type]
    assert store.inserts == 3
