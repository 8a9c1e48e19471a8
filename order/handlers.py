"""Order's use cases: place, read, list and cancel orders, over what order/ports.py names."""

from __future__ import annotations

import logging
import uuid

from mesh.kernel import aio, paging
from mesh.kernel.caller import Caller
from mesh.kernel.errors import AlreadyExists, DeadlineExceeded, ShopError, Unavailable
from mesh.kernel.money import Money
from order import domain
from order.domain import AttemptTaken, Held, HeldState, Order, OrderLine, OrderRequest, OrderStatus, RequestIdTaken
from order.ports import Commits, Faults, Inventory, Metrics, Outbox, Store

logger = logging.getLogger(__name__)


async def _replay(store: Store, request: OrderRequest) -> Order | None:
    async with store.read() as tx:
        found = await tx.by_request(request.request_id)
    if found is None:
        return None
    order, fingerprint = found
    if fingerprint != request.fingerprint:
        raise domain.RequestIdReused(request.request_id)
    return order


async def create_order(store: Store, inventory: Inventory, outbox: Outbox, request: OrderRequest,
                       commits: Commits | None = None, *, metrics: Metrics, faults: Faults) -> Order:
    """Records the attempt, sells, stores the order with its event; idempotent on request_id.

    1. The attempt is written before any stock moves, so a sale whose order this process's death
       left unstored is found (order/background/recovery.py) and its stock returned.
    2. Inventory sells every line in one call and one transaction, or refuses.
    3. The order, its event and the end of the attempt are one transaction; then it is
       acknowledged. Sold before stored: an acknowledged order is always a committed sale.

    A repeated request finds the attempt or the order already there and inventory replays the
    sale, so a new order pays for no lookup up front.
    """
    fresh = await _begin(store, request)
    try:
        held = await inventory.sell(request.reservation_id, request.lines)
    except AlreadyExists:  # inventory holds this key's reservation for other lines
        await _forget(store, request, fresh)
        raise domain.RequestIdReused(request.request_id) from None
    except (Unavailable, DeadlineExceeded):
        # Sold or not, we cannot tell: the attempt stays for a retry to finish, else for recovery.
        metrics.orders("rejected")
        raise
    except ShopError:  # refused (unknown product, out of stock...): nothing moved
        metrics.orders("rejected")
        await _forget(store, request, fresh)
        raise
    if held.state is HeldState.RELEASED:
        # Either the order was stored and later cancelled, or its attempt failed and was returned.
        await _forget(store, request, fresh)
        if (order := await _replay(store, request)) is not None:
            return order
        raise domain.RequestIdSpent(request.request_id)
    try:
        priced = domain.price(request, held.unit_prices)
    except ShopError:  # not an order we take (mixed currencies): its stock goes back at once
        metrics.orders("rejected")
        await aio.finish_anyway(_return(store, inventory, request), f"returning the stock of request {request.request_id}")
        raise
    await faults.point("order.after_reserve")
    # Once sold, storing the order must run to the end even if the caller hangs up, with a
    # deadline of its own and its outcome read even if nobody waits for it.
    order = await aio.finish_anyway(_store(store, request, held, priced, metrics, faults), f"storing the order of request {request.request_id}")
    outbox.kick(domain.created_event(order).event_id)
    await faults.point("order.after_store")
    if held.state is HeldState.RESERVED:  # an inventory older than selling at once: commit as before
        await _commit(inventory, order, request, commits)
    return order


async def _begin(store: Store, request: OrderRequest) -> bool:
    """Records the attempt; False when one is open under this id already (a concurrent or earlier call)."""
    try:
        async with store.write_one() as tx:
            await tx.begin_attempt(request)
    except RequestIdTaken:
        return False
    return True


async def _forget(store: Store, request: OrderRequest, fresh: bool) -> None:
    """Ends the attempt this call began: nothing was sold for it."""
    if fresh:
        async with store.write_one() as tx:
            await tx.end_attempt(request.request_id)


async def _return(store: Store, inventory: Inventory, request: OrderRequest) -> None:
    """Gives back what inventory took for a request refused after the sale; if inventory cannot
    be reached, the attempt stays and recovery does it."""
    try:
        await inventory.release(request.reservation_id)
    except ShopError as error:
        logger.warning("request %s refused after its sale; recovery returns its stock: %s", request.request_id, error)
        return
    async with store.write_one() as tx:
        await tx.end_attempt(request.request_id)


async def _store(store: Store, request: OrderRequest, held: Held, priced: tuple[tuple[OrderLine, ...], Money],
                 metrics: Metrics, faults: Faults) -> Order:
    lines, total = priced
    order = Order(
        order_id=str(uuid.uuid4()),
        user_id=request.user_id,
        lines=lines,
        total=total,
        status=OrderStatus.CONFIRMED,
        request_id=request.request_id,
        reservation_id=request.reservation_id,
    )
    await faults.point("order.storing")
    try:
        async with store.write_one() as tx:  # nothing stored if the attempt is gone: recovery returns its stock
            order = await tx.store(order, request.fingerprint, domain.created_event(order),
                                   committed=held.state is HeldState.COMMITTED)
    except RequestIdTaken:  # stored before (a repeat) or by a concurrent call with this request_id
        found = await _replay(store, request)
        if found is None:  # pragma: no cover - the unique request_id was taken by an order
            raise
        async with store.write_one() as tx:
            await tx.end_attempt(request.request_id)  # a repeat's own attempt, now finished
        return found
    except AttemptTaken:
        raise Unavailable(f"the attempt of request {request.request_id} took too long and is being rolled "
                          "back; send it again with the same request_id to learn its outcome") from None
    metrics.orders("confirmed")
    return order


async def _commit(inventory: Inventory, order: Order, request: OrderRequest, commits: Commits | None) -> None:
    try:
        await aio.finish_anyway(inventory.commit(request.reservation_id), f"committing the sale of order {order.order_id}")
    except (Unavailable, DeadlineExceeded) as error:
        # Stored, stock held, sale not confirmed: not acknowledged. A retry commits it;
        # without one, order/background/recovery.py does (or cancels it if the reservation expired).
        logger.warning("order %s stored but its sale is not confirmed yet: %s", order.order_id, error)
        raise Unavailable(f"order {order.order_id} is stored but its sale is not confirmed yet; "
                          f"retry with the same request_id ({error})") from None
    if commits is not None:
        commits.committed(order.order_id)


async def get_order(store: Store, order_id: str, viewer: Caller | None = None) -> Order:
    """The order; for a call acting for a user (`viewer`), only that user's: anyone else's is as
    good as missing, so its existence is not given away."""
    domain.check_order_id(order_id)
    async with store.read() as tx:
        order = await tx.get(order_id)
    if order is None or (viewer is not None and not viewer.may_see(order.user_id)):
        raise domain.OrderNotFound(order_id)
    return order


async def list_orders(store: Store, user_id: str, page_size: int, page_token: str) -> tuple[list[Order], str]:
    domain.check_user_id(user_id)
    limit = paging.page_size(page_size)
    query = {"user_id": user_id}
    position = paging.decode_token(page_token, query=query, before=int)
    async with store.read() as tx:
        found = await tx.for_user(user_id, position["before"] if position else None, limit + 1)
    return paging.page(found, limit, lambda order: {"before": order.sequence}, query)


async def cancel_order(store: Store, inventory: Inventory, outbox: Outbox, order_id: str, reason: str,
                       viewer: Caller | None = None, *, metrics: Metrics) -> Order:
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
    metrics.orders("cancelled")
    outbox.kick(domain.cancelled_event(cancelled, reason).event_id)
    return cancelled
