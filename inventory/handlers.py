"""Inventory's use cases: plain async functions over what inventory/ports.py names, no gRPC, no SQL."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta

from inventory import domain
from inventory.domain import Change, Line, NotTaken, Product, ProductState, Reservation, ReservationState
from inventory.ports import Metrics, Store
from mesh.kernel import paging, retention
from mesh.kernel.caller import Caller
from mesh.kernel.clock import now
from mesh.kernel.errors import Duplicate, InvalidArgument, PermissionDenied, ShopError

logger = logging.getLogger(__name__)
DEFAULT_TTL = timedelta(seconds=60)
# How long a refused reservation id replays its refusal (Stripe keeps idempotency keys 24 hours).
REFUSALS_KEPT = timedelta(hours=24)

async def create_product(store: Store, product: Product) -> Product:
    try:
        async with store.write() as tx:
            if await tx.get_product(product.sku) is not None:
                raise domain.ProductExists(product.sku)
            return await tx.insert_product(product)
    except Duplicate:  # another instance inserted it between our check and insert
        raise domain.ProductExists(product.sku) from None


async def get_product(store: Store, sku: str) -> Product:
    domain.check_sku("sku", sku)
    async with store.read() as tx:
        product = await tx.get_product(sku)
    if product is None:
        raise domain.ProductNotFound(sku)
    return product


async def list_products(store: Store, page_size: int, page_token: str, *,
                        show_archived: bool = False) -> tuple[list[Product], str]:
    limit = paging.page_size(page_size)
    query = {"show_archived": show_archived}
    position = paging.decode_token(page_token, query=query, after=str)
    async with store.read() as tx:
        found = await tx.list_products(position["after"] if position else None, limit + 1, archived=show_archived)
    return paging.page(found, limit, lambda product: {"after": product.sku}, query)


def check_editor(caller: Caller | None, *, anonymous: bool) -> None:
    """Only an admin changes the catalogue. A call acting for nobody (`caller` None) is the local
    mesh's own or a tool's, trusted only where `anonymous` says so (plaintext on loopback; over
    mTLS every update must come from the gateway on an admin's behalf)."""
    if caller is None and not anonymous:
        raise PermissionDenied("updating a product needs an admin; this call acts for no signed-in user")
    if caller is not None and not caller.admin:
        raise PermissionDenied(f"only an admin may update a product; {caller.user_id!r} is not one")


async def update_product(store: Store, sku: str, change: Change, etag: str) -> Product:
    """Writes what `change` names in one statement, guarded by `etag` when one is given (AIP-154):
    of two writers holding the same etag exactly one succeeds, the other is told to reread."""
    domain.check_sku("product.sku", sku)
    if change == Change():
        raise InvalidArgument("update_mask", "nothing to update: name fields in update_mask, or set name, price "
                                             "or state in product")
    version = domain.version_of(etag) if etag else None
    updated = None
    if not etag or version is not None:  # an etag we never gave matches nothing: no write to try
        async with store.write_one() as tx:
            updated = await tx.update_product(sku, change, version)
    if updated is None:
        async with store.read() as tx:
            exists = await tx.get_product(sku) is not None
        raise domain.ProductChangedSinceRead(sku) if exists else domain.ProductNotFound(sku)
    return updated


async def adjust_stock(store: Store, sku: str, delta: int, reason: str) -> Product:
    sku, delta, reason = domain.check_adjustment(sku, delta, reason)
    async with store.write() as tx:
        if not await tx.add_available(sku, delta, domain.MAX_STOCK):
            product = await tx.get_product(sku)
            if product is None:
                raise domain.ProductNotFound(sku)
            if delta > 0:
                raise domain.StockWouldExceedMaximum(sku, delta, product.available)
            raise domain.StockWouldGoNegative(sku, delta, product.available)
        await tx.record_movement(sku, delta, reason)
        return await tx.get_product(sku)  # type: ignore[return-value]


async def reserve_stock(store: Store, metrics: Metrics, reservation_id: str, lines: Sequence[Line],
                        ttl: timedelta = DEFAULT_TTL, *, commit: bool = False) -> Reservation:
    """All lines or none; a repeated reservation_id with the same lines replays the original.

    Held for `ttl`: a reservation nobody commits by then is released by `expire_reservations`.
    With `commit`, sold at once in the same transaction (no hold, nothing to expire).

    A new id costs no lookup: its row goes in first, and only a taken id (a repeat) reads what
    was stored.
    """
    domain.check_reservation_id(reservation_id)
    lines = domain.check_lines(lines)
    # A one-line sale is one statement on PostgreSQL (InventoryTx.reserve); more need a transaction.
    try:
        async with store.write_one() if len(lines) == 1 else store.write() as tx:
            started = time.perf_counter()  # the connection is ours: from here on the locks are
            at, priced = await tx.reserve(reservation_id, lines, ttl, committed=commit)  # Duplicate: a repeat
        metrics.sale_written(time.perf_counter() - started)
    except NotTaken as short:  # nothing moved: say why, and keep the answer for a repeat
        async with store.read() as tx:
            product = await tx.get_product(short.sku)
        quantity = next(line.quantity for line in lines if line.sku == short.sku)
        error = (domain.ProductNotFound(short.sku) if product is None
                 else domain.ProductArchived(short.sku) if product.state is ProductState.ARCHIVED
                 else domain.OutOfStock(short.sku, quantity, product.available))
        if not await _remember_refusal(store, reservation_id, lines, error):
            # The id has an outcome already (a one-line sale on PostgreSQL tries the stock before
            # the id): a repeat, or a concurrent request that stored first. That outcome stands.
            return await _replay(store, metrics, reservation_id, lines, commit)
        raise error from None
    except Duplicate:
        return await _replay(store, metrics, reservation_id, lines, commit)
    reservation = (Reservation(reservation_id, priced, ReservationState.COMMITTED, at, at, None) if commit
                   else Reservation(reservation_id, priced, ReservationState.RESERVED, at, at, at + ttl))
    metrics.units("reserved", reservation.units)
    if commit:
        metrics.units("sold", reservation.units)
    return reservation


async def _replay(store: Store, metrics: Metrics, reservation_id: str, lines: Sequence[Line],
                  commit: bool) -> Reservation:
    """What a repeated reservation_id gets: the stored reservation, or its refusal word for word."""
    async with store.read() as tx:
        existing = await tx.get_reservation(reservation_id)
    if existing is None:  # purged between our insert and this read: long settled and forgotten
        raise domain.ReservationChanged(reservation_id)
    if not existing.same_request(lines):
        raise domain.ReservationConflict(reservation_id)
    if existing.failure is not None:
        raise existing.failure
    if commit and existing.state is ReservationState.RESERVED:
        return await commit_reservation(store, metrics, reservation_id)
    return existing


class _Refused(Exception):
    def __init__(self, error: ShopError):
        self.error = error


async def _remember_refusal(store: Store, reservation_id: str, lines: Sequence[Line], error: ShopError) -> bool:
    """Stores a refusal (after its transaction rolled back) so a repeat gets the same answer, as
    Stripe's keys do; False if the id has an outcome stored already."""
    try:
        async with store.write_one() as tx:
            await tx.insert_rejection(reservation_id, domain.fingerprint(lines), domain.failure_record(error))
    except Duplicate:
        return False
    return True


async def commit_reservation(store: Store, metrics: Metrics, reservation_id: str) -> Reservation:
    """Sells the held units; safe to repeat. An expired reservation cannot be committed."""
    domain.check_reservation_id(reservation_id)
    async with store.write() as tx:
        reservation = await tx.get_reservation(reservation_id)
        if reservation is None:
            raise domain.ReservationNotFound(reservation_id)
        if reservation.state is ReservationState.REJECTED:
            raise domain.ReservationRefused(reservation_id)
        if reservation.state is ReservationState.RELEASED:
            raise domain.ReservationReleased(reservation_id)
        if reservation.state is ReservationState.COMMITTED:
            return reservation
        if reservation.expire_time is not None and reservation.expire_time <= now():
            raise domain.ReservationExpired(reservation_id)  # the sweeper releases it; never both
        committed = await tx.set_state(reservation, ReservationState.COMMITTED)
        if committed is None:  # released (or committed) by someone else since we read it
            raise domain.ReservationChanged(reservation_id)
    metrics.units("sold", committed.units)
    return committed


async def release_reservation(store: Store, metrics: Metrics, reservation_id: str) -> Reservation:
    """Returns the units (also of a committed reservation: a cancelled order); safe to repeat."""
    domain.check_reservation_id(reservation_id)
    async with store.write() as tx:
        reservation = await tx.get_reservation(reservation_id)
        if reservation is None:
            raise domain.ReservationNotFound(reservation_id)
        if reservation.state is ReservationState.REJECTED:
            raise domain.ReservationRefused(reservation_id)
        if reservation.state is ReservationState.RELEASED:
            return reservation
        released = await tx.set_state(reservation, ReservationState.RELEASED)
        if released is None:
            raise domain.ReservationChanged(reservation_id)
    metrics.units("released", released.units)
    return released


async def purge_refusals(store: Store, kept: timedelta = REFUSALS_KEPT) -> int:
    """Forgets refusals older than `kept`: after that, the same request id may be tried afresh."""
    async with store.write() as tx:
        return await tx.purge_rejections(now() - kept)


async def purge_settled(store: Store, kept: timedelta) -> int:
    """Forgets reservations committed or released more than `kept` ago, a batch per transaction:
    a retried Commit or Release of one is answered from it only within that time."""
    return await retention.purge_older(store.write, lambda tx, before, limit: tx.purge_settled(before, limit), kept,
                                       "reservations settled", logger)


async def expire_reservations(store: Store, metrics: Metrics, limit: int = 100) -> int:
    """Releases reservations held past their expiry; returns how many. Safe on every instance at once."""
    async with store.read() as tx:
        due = await tx.expired(now(), limit)
    expired = 0
    for reservation_id in due:
        async with store.write() as tx:
            reservation = await tx.get_reservation(reservation_id)
            if reservation is None or reservation.state is not ReservationState.RESERVED:
                continue  # committed or released meanwhile
            released = await tx.set_state(reservation, ReservationState.RELEASED)
        if released is not None:
            expired += 1
            metrics.units("expired", released.units)
            logger.info("reservation %s expired: %d units back in stock", reservation_id, released.units)
    return expired
