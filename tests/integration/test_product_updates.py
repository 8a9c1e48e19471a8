"""UpdateProduct over real gRPC on every database: field masks (AIP-161), etags (AIP-154),
archiving, who may, and orders priced from one price while prices change under them."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from generated.shop.common.v1 import money_pb2
from generated.shop.inventory.v1 import inventory_pb2 as pb
from generated.shop.inventory.v1 import inventory_pb2_grpc
from generated.shop.order.v1 import order_pb2
from tests.support.mesh import Start, channel
from tests.support.shop import open_shop, order_request
from tests.support.shop import status_details as details

ARCHIVED, ACTIVE = pb.Product.State.ARCHIVED, pb.Product.State.ACTIVE


@pytest.fixture
async def stub(start: Start):
    served = await start("inventory")
    async with channel(served) as ch:
        yield inventory_pb2_grpc.InventoryServiceStub(ch)


async def create(stub, sku: str = "mug", available: int = 10, cents: int = 1299) -> pb.Product:
    product = pb.Product(sku=sku, name="Mug", price=usd(cents), available=available)
    return await stub.CreateProduct(pb.CreateProductRequest(product=product))


def update(sku: str = "mug", *paths: str, etag: str = "", **fields: object) -> pb.UpdateProductRequest:
    product = pb.Product(sku=sku, etag=etag, **fields)  # type: ignore[arg-type]
    return pb.UpdateProductRequest(product=product, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))


def usd(cents: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="USD", minor_units=cents)


async def refused(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def test_the_mask_says_what_changes_and_the_etag_moves_with_every_change(stub) -> None:
    created = await create(stub, available=5)
    assert created.state == ACTIVE and created.etag
    renamed = await stub.UpdateProduct(update("mug", "name", name="Big mug", price=usd(1)))
    # Only the masked field: the price given alongside is not applied.
    assert (renamed.name, renamed.price.minor_units, renamed.available) == ("Big mug", 1299, 5)
    assert renamed.etag != created.etag
    assert renamed.update_time.ToNanoseconds() >= created.update_time.ToNanoseconds()
    repriced = await stub.UpdateProduct(update("mug", "price.minor_units", price=usd(1500)))
    assert (repriced.price.currency_code, repriced.price.minor_units) == ("USD", 1500)
    # A stock movement is a change of the product too: its etag moves.
    restocked = await stub.AdjustStock(pb.AdjustStockRequest(sku="mug", delta=1, reason="restock"))
    assert restocked.etag not in (created.etag, renamed.etag, repriced.etag)
    assert (await stub.GetProduct(pb.GetProductRequest(sku="mug"))) == restocked


async def test_without_a_mask_the_fields_set_are_updated(stub) -> None:
    await create(stub)
    got = await stub.UpdateProduct(update("mug", price=money_pb2.Money(currency_code="EUR", minor_units=999)))
    assert (got.name, got.price.currency_code, got.price.minor_units) == ("Mug", "EUR", 999)
    error = await refused(stub.UpdateProduct(update("mug")), grpc.StatusCode.INVALID_ARGUMENT)
    assert error.details().startswith("update_mask: nothing to update")


@pytest.mark.parametrize(("path", "said"), [
    ("sold", "'sold' is output only"), ("reserved", "'reserved' is output only"),
    ("create_time", "'create_time' is output only"), ("update_time", "'update_time' is output only"),
    ("etag", "'etag' is output only"), ("sku", "'sku' cannot change"),
    ("available", "'available' changes only through AdjustStock"), ("colour", "'colour' is not a field"),
    ("price.cents", "'price.cents' is not a field"),
])
async def test_a_path_that_cannot_be_updated_is_invalid_argument_naming_it(stub, path: str, said: str) -> None:
    before = await create(stub)
    error = await refused(stub.UpdateProduct(update("mug", "name", path, name="X")), grpc.StatusCode.INVALID_ARGUMENT)
    assert error.details().startswith(f"update_mask: {said}"), error.details()
    violation = error_details_pb2.BadRequest()
    assert details(error).details[0].Unpack(violation) and violation.field_violations[0].field == "update_mask"
    assert await stub.GetProduct(pb.GetProductRequest(sku="mug")) == before  # nothing changed


@pytest.mark.parametrize(("paths", "fields", "field"), [
    (("name",), {"name": ""}, "product.name"),  # set to its default on purpose: a validation error
    (("name",), {"name": "   "}, "product.name"),
    (("name",), {"name": "x" * 201}, "product.name"),
    (("price",), {}, "product.price"),
    (("price.currency_code",), {"price": usd(1)}, None),  # fine: USD
    (("price.currency_code",), {"price": money_pb2.Money(currency_code="usd")}, "product.price.currency_code"),
    (("price",), {"price": money_pb2.Money(currency_code="USD", minor_units=-1)}, "product.price.minor_units"),
    (("state",), {}, "product.state"),
    (("state",), {"state": 7}, "product.state"),
    (("*",), {"name": "All", "price": usd(5)}, "product.state"),  # a full replacement names every field
])
async def test_values_are_checked_as_create_checks_them(stub, paths, fields, field) -> None:
    await create(stub)
    call = stub.UpdateProduct(update("mug", *paths, **fields))
    if field is None:
        await call
        return
    error = await refused(call, grpc.StatusCode.INVALID_ARGUMENT)
    assert error.details().startswith(f"{field}:"), error.details()


async def test_a_stale_or_foreign_etag_is_aborted_and_changes_nothing(stub) -> None:
    first = await create(stub)
    second = await stub.UpdateProduct(update("mug", "name", name="Renamed", etag=first.etag))
    for stale in (first.etag, "v999", "not-ours", "W/\"x\""):
        error = await refused(stub.UpdateProduct(update("mug", "name", name="Lost", etag=stale)), grpc.StatusCode.ABORTED)
        assert "changed since it was read" in error.details()
    assert (await stub.GetProduct(pb.GetProductRequest(sku="mug"))).name == "Renamed"
    assert (await stub.UpdateProduct(update("mug", "name", name="Kept", etag=second.etag))).name == "Kept"
    await refused(stub.UpdateProduct(update("nope", "name", name="X", etag="v1")), grpc.StatusCode.NOT_FOUND)
    await refused(stub.UpdateProduct(update("nope", "name", name="X")), grpc.StatusCode.NOT_FOUND)
    await refused(stub.UpdateProduct(update("bad sku", "name", name="X")), grpc.StatusCode.INVALID_ARGUMENT)


async def test_of_writers_holding_one_etag_exactly_one_wins(stub) -> None:
    read = await create(stub)
    writers = 24
    results = await asyncio.gather(*(stub.UpdateProduct(update("mug", "name", name=f"writer {i}", etag=read.etag))
                                     for i in range(writers)), return_exceptions=True)
    won = [r for r in results if isinstance(r, pb.Product)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == writers - 1, results
    assert {e.code() for e in lost} == {grpc.StatusCode.ABORTED}
    assert (await stub.GetProduct(pb.GetProductRequest(sku="mug"))).name == won[0].name


async def test_read_modify_write_with_etags_loses_no_update(stub) -> None:
    """Many admins each raise the price by a cent 10 times, rereading whenever told to: with the
    etag guard the final price counts every raise (a blind write would lose some)."""
    await create(stub, cents=0)
    admins, raises = 8, 10
    conflicts = 0

    async def admin() -> None:
        nonlocal conflicts
        for _ in range(raises):
            while True:
                now = await stub.GetProduct(pb.GetProductRequest(sku="mug"))
                try:
                    await stub.UpdateProduct(update("mug", "price", price=usd(now.price.minor_units + 1), etag=now.etag))
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.ABORTED
                    conflicts += 1

    await asyncio.gather(*(admin() for _ in range(admins)))
    assert (await stub.GetProduct(pb.GetProductRequest(sku="mug"))).price.minor_units == admins * raises
    assert conflicts > 0  # they did race


async def test_an_archived_product_is_not_sold_nor_listed_and_can_come_back(stub) -> None:
    await create(stub, sku="a-mug")
    await create(stub, sku="b-mug", available=10)
    await create(stub, sku="c-mug")
    held = await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="before", lines=[pb.ReservationLine(sku="b-mug", quantity=2)]))
    sold = await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="sold", commit=True,
                                                          lines=[pb.ReservationLine(sku="b-mug", quantity=1)]))
    assert sold.state == pb.Reservation.COMMITTED
    # A sale never touches the product's own state (a reservation's state is not the product's).
    assert (await stub.GetProduct(pb.GetProductRequest(sku="b-mug"))).state == ACTIVE
    archived = await stub.UpdateProduct(update("b-mug", "state", state=ARCHIVED))
    assert archived.state == ARCHIVED
    error = await refused(stub.ReserveStock(pb.ReserveStockRequest(
        reservation_id="after", lines=[pb.ReservationLine(sku="a-mug", quantity=1), pb.ReservationLine(sku="b-mug", quantity=1)])),
        grpc.StatusCode.FAILED_PRECONDITION)
    assert error.details() == "product 'b-mug' is archived and cannot be ordered"
    failure = error_details_pb2.PreconditionFailure()
    assert details(error).details[0].Unpack(failure)
    assert (failure.violations[0].subject, failure.violations[0].type) == ("sku/b-mug", "PRODUCT_ARCHIVED")
    assert (await stub.GetProduct(pb.GetProductRequest(sku="a-mug"))).available == 10  # nothing taken
    listed = await stub.ListProducts(pb.ListProductsRequest(page_size=1))
    page2 = await stub.ListProducts(pb.ListProductsRequest(page_size=1, page_token=listed.next_page_token))
    assert [p.sku for p in [*listed.products, *page2.products]] == ["a-mug", "c-mug"]
    assert not page2.next_page_token
    everything = await stub.ListProducts(pb.ListProductsRequest(show_archived=True))
    assert [(p.sku, p.state) for p in everything.products] == [("a-mug", ACTIVE), ("b-mug", ARCHIVED), ("c-mug", ACTIVE)]
    # What was held or sold before stands: the hold commits, the sale is cancelled.
    assert (await stub.CommitReservation(pb.CommitReservationRequest(reservation_id="before"))).state == pb.Reservation.COMMITTED
    assert (await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id="sold"))).state == pb.Reservation.RELEASED
    assert held.lines[0].unit_price.minor_units == 1299
    back = await stub.UpdateProduct(update("b-mug", "state", state=ACTIVE))
    assert (back.available, back.sold) == (8, 2)
    again = await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="again", lines=[pb.ReservationLine(sku="b-mug", quantity=1)]))
    assert again.state == pb.Reservation.RESERVED


async def test_only_an_admin_may_update(stub) -> None:
    await create(stub)
    error = await refused(stub.UpdateProduct(update("mug", "name", name="Mine"), metadata=(("x-shopmesh-user", "bob"),)),
                          grpc.StatusCode.PERMISSION_DENIED)
    assert "only an admin may update a product; 'bob' is not one" in error.details()
    done = await stub.UpdateProduct(update("mug", "name", name="Theirs"),
                                    metadata=(("x-shopmesh-user", "ann"), ("x-shopmesh-admin", "true")))
    assert done.name == "Theirs"


async def test_orders_racing_price_changes_are_priced_at_a_price_the_product_had(start: Start) -> None:
    """Prices change in a loop while 1000 orders are placed: every order line's unit price is one the
    product really had, and an order's total is its lines' quantities at those prices."""
    shop = await open_shop(start)
    await shop.inventory.AdjustStock(pb.AdjustStockRequest(sku="mug", delta=100_000, reason="sale"))
    await shop.inventory.AdjustStock(pb.AdjustStockRequest(sku="pot", delta=100_000, reason="sale"))
    history = {"mug": {1299}, "pot": {3450}}
    placing = True

    async def repricer() -> None:
        while placing:
            sku = random.choice(("mug", "pot"))
            cents = random.randrange(100, 100_000)
            history[sku].add(cents)  # recorded before the write: a price the product has or will have
            await shop.inventory.UpdateProduct(update(sku, "price.minor_units", price=usd(cents)))
            await asyncio.sleep(0)

    async def buyer(n: int) -> list[order_pb2.Order]:
        placed = []
        for i in range(n):
            lines = {"mug": 1 + i % 3, "pot": 1} if i % 2 else {"mug": 2}
            placed.append(await shop.orders.CreateOrder(order_request(f"r{n}-{id(placed)}-{i}", "alice", **lines)))
        return placed

    try:
        repricing = asyncio.ensure_future(repricer())
        orders = [o for batch in await asyncio.gather(*(buyer(50) for _ in range(20))) for o in batch]
        placing = False
        await repricing
    finally:
        placing = False
    assert len(orders) == 1000
    seen: set[tuple[str, int]] = set()
    for order in orders:
        total = 0
        for line in order.lines:
            assert line.unit_price.minor_units in history[line.sku], (order.order_id, line)
            seen.add((line.sku, line.unit_price.minor_units))
            total += line.unit_price.minor_units * line.quantity
        assert order.total.minor_units == total
        stored = await shop.orders.GetOrder(order_pb2.GetOrderRequest(order_id=order.order_id))
        assert [(l.sku, l.unit_price.minor_units) for l in stored.lines] == [(l.sku, l.unit_price.minor_units) for l in order.lines]
    assert len(seen) > 20  # the prices did change while orders were placed
    for sku in ("mug", "pot"):  # a sale never touches the product's own state
        assert (await shop.inventory.GetProduct(pb.GetProductRequest(sku=sku))).state == ACTIVE
    for ch in shop.channels:
        await ch.close()
