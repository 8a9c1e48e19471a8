"""Inventory's use cases: plain async functions over the store, no gRPC."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge
from sqlalchemy.exc import IntegrityError

from inventory import domain
from inventory.domain import Line, Product, Reservation, ReservationState
from inventory.store import InventoryStore
from mesh import paging

# Business metrics (see mesh/metrics.py for the RPC ones). Replays count nothing.
UNITS = Counter("shop_inventory_units_total", "Units moved by reservations: reserved, then sold or released.",
                ("movement",))
OPEN_RESERVATIONS = Gauge("shop_inventory_open_reservations", "Reservations held now, neither committed nor released "
                          "(read from the database at each scrape: the same for every instance).")
RESERVED_UNITS = Gauge("shop_inventory_reserved_units", "Units held by open reservations (from the database).")
for _movement in ("reserved", "sold", "released"):
    UNITS.labels(_movement)


async def refresh_gauges(store: InventoryStore) -> None:
    async with store.read() as tx:
        count, units = await tx.open_reservations()
    OPEN_RESERVATIONS.set(count)
    RESERVED_UNITS.set(units)


async def create_product(store: InventoryStore, product: Product) -> Product:
    try:
        async with store.write() as tx:
            if await tx.get_product(product.sku) is not None:
                raise domain.ProductExists(product.sku)
            return await tx.insert_product(product)
    except IntegrityError:  # another instance inserted it between our check and insert
        raise domain.ProductExists(product.sku) from None


async def get_product(store: InventoryStore, sku: str) -> Product:
    domain.check_sku("sku", sku)
    async with store.read() as tx:
        product = await tx.get_product(sku)
    if product is None:
        raise domain.ProductNotFound(sku)
    return product


async def list_products(store: InventoryStore, page_size: int, page_token: str) -> tuple[list[Product], str]:
    limit = paging.page_size(page_size)
    position = paging.decode_token(page_token, after=str)
    async with store.read() as tx:
        found = await tx.list_products(position["after"] if position else None, limit + 1)
    return paging.page(found, limit, lambda product: {"after": product.sku})


async def adjust_stock(store: InventoryStore, sku: str, delta: int, reason: str) -> Product:
    sku, delta, reason = domain.check_adjustment(sku, delta, reason)
    async with store.write() as tx:
        if not await tx.add_available(sku, delta):
            product = await tx.get_product(sku)
            if product is None:
                raise domain.ProductNotFound(sku)
            raise domain.StockWouldGoNegative(sku, delta, product.available)
        await tx.record_movement(sku, delta, reason)
        return await tx.get_product(sku)  # type: ignore[return-value]


async def reserve_stock(store: InventoryStore, reservation_id: str, lines: Sequence[Line]) -> Reservation:
    """All lines or none; a repeated reservation_id with the same lines replays the original."""
    domain.check_reservation_id(reservation_id)
    lines = domain.check_lines(lines)
    async with store.write() as tx:
        existing = await tx.get_reservation(reservation_id)
        if existing is not None:
            if not existing.same_request(lines):
                raise domain.ReservationConflict(reservation_id)
            return existing
        priced = []
        for line in lines:  # sorted by SKU: every writer takes rows in one order
            price = await tx.hold(line.sku, line.quantity)
            if price is None:  # raising rolls back every line held so far
                product = await tx.get_product(line.sku)
                if product is None:
                    raise domain.ProductNotFound(line.sku)
                raise domain.OutOfStock(line.sku, line.quantity, product.available)
            priced.append(Line(line.sku, line.quantity, price))
        reservation = await tx.insert_reservation(reservation_id, priced)
    UNITS.labels("reserved").inc(reservation.units)
    return reservation


async def commit_reservation(store: InventoryStore, reservation_id: str) -> Reservation:
    domain.check_reservation_id(reservation_id)
    async with store.write() as tx:
        reservation = await tx.get_reservation(reservation_id)
        if reservation is None:
            raise domain.ReservationNotFound(reservation_id)
        if reservation.state is ReservationState.RELEASED:
            raise domain.ReservationReleased(reservation_id)
        if reservation.state is ReservationState.COMMITTED:
            return reservation
        committed = await tx.set_state(reservation, ReservationState.COMMITTED)
    UNITS.labels("sold").inc(committed.units)
    return committed


async def release_reservation(store: InventoryStore, reservation_id: str) -> Reservation:
    domain.check_reservation_id(reservation_id)
    async with store.write() as tx:
        reservation = await tx.get_reservation(reservation_id)
        if reservation is None:
            raise domain.ReservationNotFound(reservation_id)
        if reservation.state is ReservationState.RELEASED:
            return reservation
        released = await tx.set_state(reservation, ReservationState.RELEASED)
    UNITS.labels("released").inc(released.units)
    return released
