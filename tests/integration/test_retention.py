"""Storage that does not grow without bound: delivered outbox events are purged after their
retention, in batches; an event still owed, or delivered recently, stays. On SQLite and on a real
PostgreSQL server."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from mesh.kernel.clock import now
from mesh.kernel.retention import PURGE_BATCH
from order.background import outbox as relay_module
from order.background.outbox import OutboxRelay
from order.domain import Event
from order.store import OrderStore, metadata, outbox
from tests.support.fakes import Tally

MIGRATIONS = Path(relay_module.__file__).resolve().parents[1] / "migrations"  # order/migrations


class Unused:
    async def send(self, event: Event) -> None:
        raise AssertionError("purging delivers nothing")


async def test_delivered_events_past_retention_go_and_owed_or_recent_ones_stay(
        tmp_path: Path, database: object | None, connect) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite+aiosqlite:///{tmp_path}/order.db" if database is None else database.create_database()  # type: ignore[attr-defined]
    db = connect(url)
    await db.migrate(MIGRATIONS, metadata)
    store = OrderStore(db)
    try:
        old_delivered = [f"old-delivered-{n}" for n in range(PURGE_BATCH * 2 + 7)]
        async with store.write() as tx:
            for event_id in [*old_delivered, "old-owed", "recent-delivered", "new-owed"]:
                await tx.add_event(Event(event_id, "u", "order.confirmed", "s", "b"))
            await tx.mark_delivered([*old_delivered, "recent-delivered"])
            eight_days = now() - timedelta(days=8)
            await tx.conn.execute(update(outbox).where(outbox.c.event_id.in_(old_delivered))
                                  .values(delivered_time=eight_days))
            await tx.conn.execute(update(outbox).where(outbox.c.event_id == "old-owed")
                                  .values(create_time=eight_days))
        relay = OutboxRelay(store, Unused(), 1.0, retention=timedelta(days=7))
        assert await relay.purge() == len(old_delivered)  # three batches
        async with store.read() as tx:
            left = {row[0] for row in await tx.conn.execute(select(outbox.c.event_id))}
            pending = await tx.count_pending()
        assert left == {"old-owed", "recent-delivered", "new-owed"}
        assert pending == 2, "an event still owed is never purged, however old"
        assert await relay.purge() == 0
        async with store.read() as tx:
            assert (await tx.conn.execute(select(func.count()).select_from(outbox))).scalar_one() == 3
    finally:
        await db.close()


async def test_settled_reservations_past_retention_go_and_held_or_recent_ones_stay(
        tmp_path: Path, database: object | None, connect) -> None:  # type: ignore[no-untyped-def]
    from inventory import handlers
    from inventory.domain import Line, Product
    from inventory.store import InventoryStore, reservation_lines, reservations
    from inventory.store import metadata as inventory_metadata
    from mesh.kernel.money import Money

    url = f"sqlite+aiosqlite:///{tmp_path}/inventory.db" if database is None else database.create_database()  # type: ignore[attr-defined]
    db = connect(url)
    await db.migrate(Path(handlers.__file__).resolve().parent / "migrations", inventory_metadata)
    store = InventoryStore(db)
    try:
        await handlers.create_product(store, Product("ret-mug", "Mug", Money("USD", 100), available=100))
        ids = {name: f"{name}-0001" for name in ("old-committed", "old-released", "old-held", "new-committed")}
        for rid in ids.values():
            await handlers.reserve_stock(store, Tally(), rid, [Line("ret-mug", 1)], ttl=timedelta(days=30))
        await handlers.commit_reservation(store, Tally(), ids["old-committed"])
        await handlers.release_reservation(store, Tally(), ids["old-released"])
        await handlers.commit_reservation(store, Tally(), ids["new-committed"])
        async with store.write() as tx:
            old = [ids["old-committed"], ids["old-released"], ids["old-held"]]
            await tx.conn.execute(update(reservations).where(reservations.c.reservation_id.in_(old))
                                  .values(update_time=now() - timedelta(days=8)))
        assert await handlers.purge_settled(store, timedelta(days=7)) == 2
        async with store.read() as tx:
            left = {row[0] for row in await tx.conn.execute(select(reservations.c.reservation_id))}
            lines = {row[0] for row in await tx.conn.execute(select(reservation_lines.c.reservation_id))}
        assert left == lines == {ids["old-held"], ids["new-committed"]}, "a held reservation is never purged"
        product = await handlers.get_product(store, "ret-mug")
        assert (product.available, product.reserved, product.sold) == (97, 1, 2), "stock is untouched"
    finally:
        await db.close()


async def test_notifications_past_retention_go_in_batches_and_recent_ones_stay_deduplicated(
        tmp_path: Path, database: object | None, connect) -> None:  # type: ignore[no-untyped-def]
    from notification import handlers
    from notification.domain import Notification
    from notification.store import NotificationStore, notifications
    from notification.store import metadata as notification_metadata

    url = f"sqlite+aiosqlite:///{tmp_path}/notification.db" if database is None else database.create_database()  # type: ignore[attr-defined]
    db = connect(url)
    await db.migrate(Path(handlers.__file__).resolve().parent / "migrations", notification_metadata)
    store = NotificationStore(db)

    def wanted(event_id: str) -> Notification:
        return Notification(event_id, "u", "order.created", "Order confirmed", "1 item")

    try:
        old = [f"old-{n}" for n in range(PURGE_BATCH * 2 + 7)]
        async with store.write() as tx:
            await tx.insert_many([wanted(e) for e in [*old, "recent"]], handlers.CHANNEL)
            await tx.conn.execute(update(notifications).where(notifications.c.event_id.in_(old))
                                  .values(create_time=now() - timedelta(days=91)))
        assert await handlers.purge_old(store, timedelta(days=90)) == len(old)  # three batches
        async with store.read() as tx:
            assert [row[0] for row in await tx.conn.execute(select(notifications.c.event_id))] == ["recent"]
        assert await handlers.purge_old(store, timedelta(days=90)) == 0
        # The recent one still answers a repeat of its event: sent once, not twice.
        again = await handlers.send_notification(store, Tally(), handlers.Wakeups(), wanted("recent"))
        async with store.read() as tx:
            assert (await tx.conn.execute(select(func.count()).select_from(notifications))).scalar_one() == 1
            assert (await tx.by_event("recent")).notification_id == again.notification_id  # type: ignore[union-attr]
    finally:
        await db.close()
