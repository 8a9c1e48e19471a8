"""Inventory's and order's rules, without gRPC or a database."""

from __future__ import annotations

import pytest

from generated.shop.inventory.v1 import inventory_pb2
from generated.shop.order.v1 import order_pb2
from inventory import domain as inv
from mesh.kernel import validate
from mesh.kernel.errors import InvalidArgument
from mesh.kernel.money import Money
from order import domain as orders


def test_reservation_lines_come_back_sorted_by_sku_so_rows_lock_in_one_order() -> None:
    lines = inv.check_lines([inv.Line("b", 1), inv.Line("a", 2)])
    assert [l.sku for l in lines] == ["a", "b"]


def test_a_sku_twice_is_what_the_domain_refuses_itself() -> None:
    with pytest.raises(InvalidArgument) as caught:
        inv.check_lines([inv.Line("a", 1), inv.Line("a", 1)])
    assert caught.value.field == "lines[1].sku"
    with pytest.raises(InvalidArgument) as caught:
        orders.check_request("r", "u", [("a", 1), ("b", 1), ("a", 2)])
    assert caught.value.field == "lines[2].sku"
    with pytest.raises(InvalidArgument) as caught:
        orders.check_request("   ", "u", [("a", 1)])
    assert caught.value.field == "request_id"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (inventory_pb2.ReserveStockRequest(reservation_id="r"), "lines"),
        (inventory_pb2.ReserveStockRequest(reservation_id="r", lines=[inventory_pb2.ReservationLine(sku="a")]),
         "lines[0].quantity"),
        (inventory_pb2.ReserveStockRequest(reservation_id="r", lines=[
            inventory_pb2.ReservationLine(sku="bad sku", quantity=1)]), "lines[0].sku"),
        (order_pb2.CreateOrderRequest(request_id="r", user_id="u"), "lines"),
        (order_pb2.CreateOrderRequest(request_id="r" * 129, user_id="u", lines=[order_pb2.OrderLine(sku="a", quantity=1)]),
         "request_id"),
        (order_pb2.CreateOrderRequest(request_id="r", user_id="u", lines=[order_pb2.OrderLine(sku="a", quantity=10**7)]),
         "lines[0].quantity"),
    ],
)
def test_the_shape_of_a_sale_or_an_order_is_the_contracts_to_check(message, field: str) -> None:
    """Checked once, at the edge (every server's guard runs mesh.kernel.validate.contract before a
    handler): the domain keeps only what a rule cannot say (above)."""
    with pytest.raises(InvalidArgument) as caught:
        validate.contract(message)
    assert caught.value.field == field


def test_a_reservation_matches_the_same_lines_in_any_order() -> None:
    held = inv.Reservation("r", (inv.Line("a", 1), inv.Line("b", 2)), inv.ReservationState.RESERVED)
    assert held.same_request([inv.Line("b", 2), inv.Line("a", 1)])
    assert not held.same_request([inv.Line("a", 1)])


def test_out_of_stock_says_which_sku() -> None:
    error = inv.OutOfStock("mug", 3, 1)
    assert "'mug'" in str(error) and error.subject == "sku/mug"


def test_an_order_is_priced_from_the_given_unit_prices() -> None:
    request = orders.check_request("r", "u", [("mug", 2), ("pot", 1)])
    lines, total = orders.price(request, {"mug": Money("USD", 1299), "pot": Money("USD", 3450)})
    assert [l.total for l in lines] == [Money("USD", 2598), Money("USD", 3450)]
    assert total == Money("USD", 6048)


def test_an_order_in_two_currencies_is_refused() -> None:
    request = orders.check_request("r", "u", [("mug", 1), ("tee", 1)])
    with pytest.raises(orders.MixedCurrencies, match="EUR, USD"):
        orders.price(request, {"mug": Money("USD", 1), "tee": Money("EUR", 1)})


def test_the_fingerprint_ignores_line_order_but_not_content() -> None:
    a = orders.check_request("r", "u", [("mug", 1), ("pot", 2)])
    b = orders.check_request("r", "u", [("pot", 2), ("mug", 1)])
    c = orders.check_request("r", "u", [("pot", 3), ("mug", 1)])
    d = orders.check_request("r", "v", [("pot", 2), ("mug", 1)])
    assert a.fingerprint == b.fingerprint
    assert len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3


def test_events_are_keyed_by_order_so_redelivery_is_recognised() -> None:
    order = orders.Order("o1", "u", (orders.OrderLine("mug", 2, Money("USD", 500)),), Money("USD", 1000),
                         orders.OrderStatus.CONFIRMED, "r", "order:r")
    created, cancelled = orders.created_event(order), orders.cancelled_event(order, "late")
    assert (created.event_id, cancelled.event_id) == ("order.created:o1", "order.cancelled:o1")
    assert "2 items" in created.body and "USD 10.00" in created.body and "late" in cancelled.body
