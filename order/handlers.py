"""Order's use cases: place, read, list and cancel orders."""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

from prometheus_client import Counter, Gauge
from sqlalchemy.exc import IntegrityError

from mesh import aio, faults, paging
from mesh.errors import AlreadyExists, DeadlineExceeded, ShopError, Unavailable
from mesh.identity import Caller
from order import domain
from order.domain import Order, OrderRequest, OrderStatus
from order.store import OrderStore
from order.upstreams import Held, HeldState

logger = logging.getLogger(__name__)

# Business metrics (the RPC ones are in mesh/metrics.py). Replays of a request_id count nothing.
ORDERS = Counter("shop_orders_total", "Orders by outcome: confirmed when placed, cancelled when cancelled, "
                 "rejected when placing failed (out of stock, unknown product, upstream down).", ("status",))
OUTBOX_PENDING = Gauge("shop_order_outbox_pending", "Order events not yet delivered to notification "
                       "(read from the database at each scrape).")
for _status in ("confirmed", "cancelled", "rejected"):
    ORDERS.labels(_status)


async def refresh_gauges(store: OrderStore) -> None:
    async with store.read() as tx:
        OUTBOX_PENDING.set(await tx.count_pending())


class Inventory(Protocol):
    async def reserve(self, reservation_id: str, lines: tuple[tuple[str, int], ...]) -> Held: ...
    async def commit(self, reservation_id: str) -> None: ...
    async def release(self, reservation_id: str) -> None: ...


class Outbox(Protocol):
    def kick(self, event_id: str | None = None) -> None: ...


class Commits(Protocol):
    def committed(self, order_id: str) -> None: ...


async def _replay(store: OrderStore, request: OrderRequest) -> Order | None:
    async with store.read() as tx:
        found = await tx.by_request(request.request_id)
    if found is None:
        return None
    order, fingerprint = found
    if fingerprint != request.fingerprint:
        raise domain.RequestIdReused(request.request_id)
    return order


async def create_order(store: OrderStore, inventory: Inventory, outbox: Outbox, request: OrderRequest,
                       commits: Commits | None = None) -> Order:
    """Reserve, price, store with its event, commit; idempotent on request_id.

    A repeated request finds its reservation already held (inventory replays
    it) and its order already stored (the insert conflicts and the stored one
    is returned), so new orders pay for no lookup up front.

    An order is acknowledged only once inventory has committed its sale: if the
    commit fails, the caller gets UNAVAILABLE and its retry (same request_id)
    completes the commit, or order/recovery.py settles the stored order.
    """
    try:
        held = await inventory.reserve(request.reservation_id, request.lines)
    except AlreadyExists:  # inventory holds this key's reservation for other lines
        raise domain.RequestIdReused(request.request_id) from None
    except ShopError:
        ORDERS.labels("rejected").inc()
        raise
    if held.state is HeldState.RELEASED:
        # Either the order was stored and later cancelled, or its attempt failed.
        if (order := await _replay(store, request)) is not None:
            return order
        raise domain.RequestIdSpent(request.request_id)
    await faults.point("order.after_reserve")
    # Once stock is held, storing the order (or else releasing the stock) and
    # committing must run to the end even if the caller hangs up mid-way, each with a deadline of
    # its own (not the caller's remains) and its outcome read even if nobody waits for it.
    order = await aio.finish_anyway(_store_or_release(store, inventory, request, held),
                                    f"storing the order of request {request.request_id}")
    outbox.kick(domain.created_event(order).event_id)
    await faults.point("order.after_store")
    if held.state is HeldState.COMMITTED:  # a repeat of a completed order
        return order
    try:
        await aio.finish_anyway(inventory.commit(request.reservation_id), f"committing the sale of order {order.order_id}")
    except (Unavailable, DeadlineExceeded) as error:
        # Stored, stock held, sale not confirmed: not acknowledged. A retry commits it;
        # without one, order/recovery.py does (or cancels it if the reservation expired).
        logger.warning("order %s stored but its sale is not confirmed yet: %s", order.order_id, error)
        raise Unavailable(f"order {order.order_id} is stored but its sale is not confirmed yet; "
                          f"retry with the same request_id ({error})") from None
    if commits is not None:
        commits.committed(order.order_id)
    return order


async def _store_or_release(store: OrderStore, inventory: Inventory, request: OrderRequest, held: Held) -> Order:
    try:
        lines, total = domain.price(request, held.unit_prices)
        order = Order(
            order_id=str(uuid.uuid4()),
            user_id=request.user_id,
            lines=lines,
            total=total,
            status=OrderStatus.CONFIRMED,
            request_id=request.request_id,
            reservation_id=request.reservation_id,
        )
        async with store.write() as tx:
            order = await tx.insert(order, request.fingerprint)
            await tx.add_event(domain.created_event(order))
        ORDERS.labels("confirmed").inc()
        return order
    except IntegrityError:
        # A concurrent call with this request_id stored its order first; that
        # call owns the shared reservation, so there is nothing to release.
        if (order := await _replay(store, request)) is not None:
            return order
        await _release_quietly(inventory, request.reservation_id)
        raise
    except BaseException:
        await _release_quietly(inventory, request.reservation_id)
        raise


async def _release_quietly(inventory: Inventory, reservation_id: str) -> None:
    try:
        await inventory.release(reservation_id)
    except Exception as error:  # the original failure matters more to the caller
        logger.error("could not release reservation %s: %s", reservation_id, error)


async def get_order(store: OrderStore, order_id: str, viewer: Caller | None = None) -> Order:
    """The order; for a call acting for a user (`viewer`), only that user's: anyone else's is as
    good as missing, so its existence is not given away."""
    domain.check_order_id(order_id)
    async with store.read() as tx:
        order = await tx.get(order_id)
    if order is None or (viewer is not None and not viewer.may_see(order.user_id)):
        raise domain.OrderNotFound(order_id)
    return order


async def list_orders(store: OrderStore, user_id: str, page_size: int, page_token: str) -> tuple[list[Order], str]:
    domain.check_user_id(user_id)
    limit = paging.page_size(page_size)
    position = paging.decode_token(page_token, before=int)
    async with store.read() as tx:
        found = await tx.for_user(user_id, position["before"] if position else None, limit + 1)
    return paging.page(found, limit, lambda order: {"before": order.sequence})


async def cancel_order(store: OrderStore, inventory: Inventory, outbox: Outbox, order_id: str, reason: str,
                       viewer: Caller | None = None) -> Order:
    """Returns the stock first, then records the cancellation; safe to repeat."""
    reason = domain.check_reason(reason)
    order = await get_order(store, order_id, viewer)
    if order.status is OrderStatus.CANCELLED:
        return order
    await inventory.release(order.reservation_id)
    async with store.write() as tx:
        cancelled = await tx.cancel(order, reason)
        if cancelled is None:  # a concurrent cancel got there first
            current = await tx.get(order_id)
            assert current is not None
            return current
        await tx.add_event(domain.cancelled_event(cancelled, reason))
    ORDERS.labels("cancelled").inc()
    outbox.kick(domain.cancelled_event(cancelled, reason).event_id)
    return cancelled
