"""Inventory over real gRPC and real SQLite: validation, paging, reservations, stock arithmetic."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2 as pb
from generated.shop.inventory.v1 import inventory_pb2_grpc
from tests.support.fakes import Tally
from tests.support.mesh import Start, channel


@pytest.fixture
async def stub(start: Start):
    served = await start("inventory")
    async with channel(served) as ch:
        yield inventory_pb2_grpc.InventoryServiceStub(ch)


def product(sku: str = "mug", available: int = 10, cents: int = 1299, currency: str = "USD") -> pb.Product:
    return pb.Product(sku=sku, name="Mug", price=money_pb2.Money(currency_code=currency, minor_units=cents), available=available)


async def create(stub, **kwargs) -> pb.Product:
    return await stub.CreateProduct(pb.CreateProductRequest(product=product(**kwargs)))


def details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no google.rpc.Status in the trailers")


async def test_a_created_product_reads_back_with_its_stock(stub) -> None:
    created = await create(stub, available=7)
    got = await stub.GetProduct(pb.GetProductRequest(sku="mug"))
    assert got == created
    assert (got.available, got.reserved, got.sold, got.price.minor_units) == (7, 0, 0, 1299)
    assert got.create_time.seconds > 0


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.ClearField("sku"), "product.sku"),
        (lambda p: setattr(p, "sku", "has space"), "product.sku"),
        (lambda p: setattr(p, "name", "  "), "product.name"),
        (lambda p: p.ClearField("price"), "product.price"),
        (lambda p: setattr(p.price, "currency_code", "usd"), "product.price.currency_code"),
        (lambda p: setattr(p.price, "minor_units", -1), "product.price.minor_units"),
        (lambda p: setattr(p, "available", -5), "product.available"),
    ],
)
async def test_a_bad_product_is_invalid_argument_naming_the_field(stub, mutate, field: str) -> None:
    bad = product()
    mutate(bad)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateProduct(pb.CreateProductRequest(product=bad))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}:")
    violation = error_details_pb2.BadRequest()
    assert details(caught.value).details[0].Unpack(violation)
    assert violation.field_violations[0].field == field


async def test_a_duplicate_sku_is_already_exists(stub) -> None:
    await create(stub)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(stub)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_an_unknown_sku_is_not_found(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetProduct(pb.GetProductRequest(sku="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'nope'" in caught.value.details()


async def test_products_page_through_in_sku_order_without_gaps(stub) -> None:
    skus = [f"p{i:02d}" for i in range(7)]
    for sku in reversed(skus):
        await create(stub, sku=sku)
    seen, token = [], ""
    while True:
        page = await stub.ListProducts(pb.ListProductsRequest(page_size=3, page_token=token))
        seen += [p.sku for p in page.products]
        assert len(page.products) <= 3
        token = page.next_page_token
        if not token:
            break
    assert seen == skus


@pytest.mark.parametrize(("size", "token", "field"), [(-1, "", "page_size"), (0, "garbage!", "page_token"), (0, "eyJ4IjoxfQ==", "page_token")])
async def test_bad_paging_is_invalid_argument(stub, size: int, token: str, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListProducts(pb.ListProductsRequest(page_size=size, page_token=token))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field)


async def test_a_reservation_takes_every_line_or_none(stub) -> None:
    await create(stub, sku="a", available=5)
    await create(stub, sku="b", available=1)
    lines = [pb.ReservationLine(sku="a", quantity=2), pb.ReservationLine(sku="b", quantity=2)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="r1", lines=lines))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'b'" in caught.value.details() and "1 available" in caught.value.details()
    failure = error_details_pb2.PreconditionFailure()
    assert details(caught.value).details[0].Unpack(failure) and failure.violations[0].subject == "sku/b"
    a = await stub.GetProduct(pb.GetProductRequest(sku="a"))
    assert (a.available, a.reserved) == (5, 0)


async def test_reserving_an_unknown_sku_is_not_found(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="r", lines=[pb.ReservationLine(sku="ghost", quantity=1)]))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_repeated_reservation_id_replays_and_a_different_one_conflicts(stub) -> None:
    await create(stub, available=5)
    request = pb.ReserveStockRequest(reservation_id="r1", lines=[pb.ReservationLine(sku="mug", quantity=2)])
    first = await stub.ReserveStock(request)
    again = await stub.ReserveStock(request)
    assert again == first
    assert first.lines[0].unit_price.minor_units == 1299
    assert (await stub.GetProduct(pb.GetProductRequest(sku="mug"))).available == 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="r1", lines=[pb.ReservationLine(sku="mug", quantity=1)]))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_commit_sells_and_release_returns_units(stub) -> None:
    await create(stub, available=10)
    for rid, quantity in (("keep", 3), ("drop", 2), ("refund", 1)):
        await stub.ReserveStock(pb.ReserveStockRequest(reservation_id=rid, lines=[pb.ReservationLine(sku="mug", quantity=quantity)]))
    committed = await stub.CommitReservation(pb.CommitReservationRequest(reservation_id="keep"))
    assert committed.state == pb.Reservation.COMMITTED
    assert (await stub.CommitReservation(pb.CommitReservationRequest(reservation_id="keep"))).state == pb.Reservation.COMMITTED
    released = await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id="drop"))
    assert released.state == pb.Reservation.RELEASED
    await stub.CommitReservation(pb.CommitReservationRequest(reservation_id="refund"))
    await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id="refund"))
    await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id="refund"))  # idempotent
    mug = await stub.GetProduct(pb.GetProductRequest(sku="mug"))
    assert (mug.available, mug.reserved, mug.sold) == (7, 0, 3)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CommitReservation(pb.CommitReservationRequest(reservation_id="drop"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CommitReservation(pb.CommitReservationRequest(reservation_id="never"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_adjust_stock_restocks_and_refuses_to_go_negative(stub) -> None:
    await create(stub, available=2)
    restocked = await stub.AdjustStock(pb.AdjustStockRequest(sku="mug", delta=5, reason="restock"))
    assert restocked.available == 7
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AdjustStock(pb.AdjustStockRequest(sku="mug", delta=-8, reason="damaged"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for bad, field in ((pb.AdjustStockRequest(sku="mug", delta=0, reason="x"), "delta"),
                       (pb.AdjustStockRequest(sku="mug", delta=1), "reason")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.AdjustStock(bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and caught.value.details().startswith(field)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AdjustStock(pb.AdjustStockRequest(sku="ghost", delta=1, reason="x"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_fifty_buyers_for_the_last_unit_one_wins(stub) -> None:
    await create(stub, available=1)

    async def buy(i: int) -> bool:
        try:
            await stub.ReserveStock(pb.ReserveStockRequest(reservation_id=f"r{i}", lines=[pb.ReservationLine(sku="mug", quantity=1)]))
            return True
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            return False

    assert sum(await asyncio.gather(*(buy(i) for i in range(50)))) == 1
    mug = await stub.GetProduct(pb.GetProductRequest(sku="mug"))
    assert (mug.available, mug.reserved) == (0, 1)


async def test_a_reservation_nobody_commits_is_released_after_its_ttl(start: Start) -> None:
    served = await start("inventory", SHOPMESH_RESERVATION_TTL_SECONDS="0.5")
    async with channel(served) as ch:
        stub = inventory_pb2_grpc.InventoryServiceStub(ch)
        await create(stub, sku="ttl", available=5)
        await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="r-ttl", lines=[pb.ReservationLine(sku="ttl", quantity=3)]))
        held = await stub.GetProduct(pb.GetProductRequest(sku="ttl"))
        assert (held.available, held.reserved) == (2, 3)
        for _ in range(50):  # the sweeper runs every ttl/4
            await asyncio.sleep(0.1)
            now = await stub.GetProduct(pb.GetProductRequest(sku="ttl"))
            if now.reserved == 0:
                break
        assert (now.available, now.reserved, now.sold) == (5, 0, 0)
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await stub.CommitReservation(pb.CommitReservationRequest(reservation_id="r-ttl"))
        assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "released" in late.value.details()


async def test_a_commit_after_the_ttl_is_refused_even_before_the_sweeper_runs(start: Start) -> None:
    from inventory import handlers
    from inventory.domain import Line, ReservationExpired

    served = await start("inventory", SHOPMESH_RESERVATION_TTL_SECONDS="3600")
    store = served.app.bindings[0].servicer._store
    async with channel(served) as ch:
        await create(inventory_pb2_grpc.InventoryServiceStub(ch), sku="late", available=4)
    from datetime import timedelta

    tally = Tally()
    await handlers.reserve_stock(store, tally, "r-late", [Line("late", 2)], timedelta(seconds=-1))  # already expired
    with pytest.raises(ReservationExpired):
        await handlers.commit_reservation(store, tally, "r-late")
    assert await handlers.expire_reservations(store, tally) == 1
    assert await handlers.expire_reservations(store, tally) == 0  # released once, never twice
    assert tally.counted == {"units.reserved": 2, "units.expired": 2}  # counted once too, never sold


async def test_a_state_change_from_a_stale_read_loses_to_the_one_that_got_there_first(start: Start) -> None:
    """The guard that lets a commit and an expiry (on any instance) never both win."""
    from datetime import timedelta

    from inventory import handlers
    from inventory.domain import Line, ReservationState

    served = await start("inventory")
    store = served.app.bindings[0].servicer._store
    async with channel(served) as ch:
        stub = inventory_pb2_grpc.InventoryServiceStub(ch)
        await create(stub, sku="guard", available=10)
        await handlers.reserve_stock(store, Tally(), "r-guard", [Line("guard", 4)], timedelta(minutes=5))
        async with store.read() as tx:
            stale = await tx.get_reservation("r-guard")  # what the sweeper read, before ...
        await handlers.commit_reservation(store, Tally(), "r-guard")  # ... the commit got there first
        async with store.write() as tx:
            assert await tx.set_state(stale, ReservationState.RELEASED) is None
        final = await stub.GetProduct(pb.GetProductRequest(sku="guard"))
        assert (final.available, final.reserved, final.sold) == (6, 0, 4)


async def test_a_refused_reservation_replays_its_refusal_word_for_word(stub) -> None:
    await create(stub, sku="scarce", available=1)
    ask = pb.ReserveStockRequest(reservation_id="r-refused", lines=[pb.ReservationLine(sku="scarce", quantity=2)])
    with pytest.raises(grpc.aio.AioRpcError) as first:
        await stub.ReserveStock(ask)
    assert first.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await stub.AdjustStock(pb.AdjustStockRequest(sku="scarce", delta=5, reason="restock"))
    with pytest.raises(grpc.aio.AioRpcError) as again:  # stock is there now, but this request's answer stands
        await stub.ReserveStock(ask)
    assert (again.value.code(), again.value.details()) == (first.value.code(), first.value.details())
    assert details(again.value).details[0].type_url.endswith("PreconditionFailure")
    other = pb.ReserveStockRequest(reservation_id="r-refused", lines=[pb.ReservationLine(sku="scarce", quantity=1)])
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await stub.ReserveStock(other)
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    fresh = pb.ReserveStockRequest(reservation_id="r-fresh", lines=[pb.ReservationLine(sku="scarce", quantity=2)])
    assert (await stub.ReserveStock(fresh)).state == pb.Reservation.RESERVED
    assert (await stub.GetProduct(pb.GetProductRequest(sku="scarce"))).reserved == 2


async def test_a_refused_reservation_can_be_neither_committed_nor_released(stub) -> None:
    await create(stub, sku="rare", available=1)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="r-no", lines=[
            pb.ReservationLine(sku="rare", quantity=2)]))
    for call in (stub.CommitReservation(pb.CommitReservationRequest(reservation_id="r-no")),
                 stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id="r-no"))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
        assert "was refused" in caught.value.details()
    rare = await stub.GetProduct(pb.GetProductRequest(sku="rare"))
    assert (rare.available, rare.reserved, rare.sold) == (1, 0, 0)


async def test_refusals_are_forgotten_after_their_keeping_period(start: Start) -> None:
    from datetime import timedelta

    from inventory import handlers
    from inventory.domain import Line
    from mesh.kernel.errors import NotFound

    served = await start("inventory")
    store = served.app.bindings[0].servicer._store
    with pytest.raises(NotFound):
        await handlers.reserve_stock(store, Tally(), "r-ghost", [Line("ghost", 1)])
    assert await handlers.purge_refusals(store, kept=timedelta(hours=24)) == 0
    assert await handlers.purge_refusals(store, kept=timedelta(seconds=-1)) == 1


async def test_a_restock_past_the_contracts_maximum_is_refused_and_changes_nothing(stub) -> None:
    """available is 0..10^12 in the contract (and the OpenAPI document): repeated restocks must not
    carry it past that, or a later read answers what the schema says cannot be (found by
    schemathesis' random seed)."""
    await create(stub, sku="big", available=10**12 - 5)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.AdjustStock(pb.AdjustStockRequest(sku="big", delta=6, reason="restock"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "at most 1000000000000" in refused.value.details()
    assert (await stub.GetProduct(pb.GetProductRequest(sku="big"))).available == 10**12 - 5
    assert (await stub.AdjustStock(pb.AdjustStockRequest(sku="big", delta=5, reason="restock"))).available == 10**12


async def test_a_sale_at_once_moves_stock_straight_to_sold_and_replays(stub) -> None:
    await create(stub, available=5)
    request = pb.ReserveStockRequest(reservation_id="s1", lines=[pb.ReservationLine(sku="mug", quantity=2)], commit=True)
    first = await stub.ReserveStock(request)
    assert first.state == pb.Reservation.COMMITTED and first.lines[0].unit_price.minor_units == 1299
    assert await stub.ReserveStock(request) == first  # a repeat sells nothing more
    assert await stub.CommitReservation(pb.CommitReservationRequest(reservation_id="s1")) == first
    mug = await stub.GetProduct(pb.GetProductRequest(sku="mug"))
    assert (mug.available, mug.reserved, mug.sold) == (3, 0, 2)
    released = await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id="s1"))  # a cancelled order
    assert released.state == pb.Reservation.RELEASED
    mug = await stub.GetProduct(pb.GetProductRequest(sku="mug"))
    assert (mug.available, mug.reserved, mug.sold) == (5, 0, 0)
    assert (await stub.ReserveStock(request)).state == pb.Reservation.RELEASED  # spent: never sold twice


async def test_a_held_reservation_repeated_with_commit_is_sold_and_a_refused_sale_replays_its_refusal(stub) -> None:
    await create(stub, available=1)
    lines = [pb.ReservationLine(sku="mug", quantity=1)]
    held = await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="h1", lines=lines))
    assert held.state == pb.Reservation.RESERVED
    sold = await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="h1", lines=lines, commit=True))
    assert sold.state == pb.Reservation.COMMITTED
    mug = await stub.GetProduct(pb.GetProductRequest(sku="mug"))
    assert (mug.available, mug.reserved, mug.sold) == (0, 0, 1)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="h2", lines=lines, commit=True))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "0 available" in caught.value.details()


async def test_concurrent_sales_of_the_last_units_sell_each_once(stub) -> None:
    await create(stub, available=10)

    async def buy(i: int) -> bool:
        try:
            await stub.ReserveStock(pb.ReserveStockRequest(
                reservation_id=f"c{i % 30}", lines=[pb.ReservationLine(sku="mug", quantity=1)], commit=True))
            return True
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
            return False

    results = await asyncio.gather(*(buy(i) for i in range(90)))  # 30 ids, each sent 3 times at once
    mug = await stub.GetProduct(pb.GetProductRequest(sku="mug"))
    assert (mug.available, mug.reserved, mug.sold) == (0, 0, 10)
    sold_ids = {i % 30 for i, ok in enumerate(results) if ok}
    assert len(sold_ids) == 10  # every repeat of a sold id replays its sale; the others are refused


@pytest.mark.parametrize("commit", [False, True])
async def test_a_repeat_of_the_sale_that_took_the_last_units_replays_it_not_out_of_stock(stub, commit: bool) -> None:
    """On PostgreSQL a one-line sale tries the stock before its id: with no stock left, a repeat
    must still find the id's outcome and replay it (and a refusal stays the refusal)."""
    await create(stub, available=2)
    await create(stub, sku="pot", available=1)
    await create(stub, sku="cup", available=1)
    one = pb.ReserveStockRequest(reservation_id="last", lines=[pb.ReservationLine(sku="mug", quantity=2)], commit=commit)
    two = pb.ReserveStockRequest(reservation_id="last-2", commit=commit, lines=[  # a transaction of lines
        pb.ReservationLine(sku="cup", quantity=1), pb.ReservationLine(sku="pot", quantity=1)])
    first, first_two = await stub.ReserveStock(one), await stub.ReserveStock(two)
    replies = await asyncio.gather(*(stub.ReserveStock(r) for r in [one, two] * 5))
    assert replies == [first, first_two] * 5
    mug = await stub.GetProduct(pb.GetProductRequest(sku="mug"))
    assert (mug.available, mug.reserved + mug.sold) == (0, 2)
    refused = pb.ReserveStockRequest(reservation_id="late", lines=[pb.ReservationLine(sku="mug", quantity=1)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReserveStock(refused)
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub.ReserveStock(refused)
    assert caught.value.code() == again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert again.value.details() == caught.value.details()
