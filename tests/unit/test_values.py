"""Money and paging: the shared value rules."""

from __future__ import annotations

import pytest

from mesh.kernel import paging, validate
from mesh.kernel.errors import InvalidArgument
from mesh.kernel.money import Money, parse_money


def test_money_adds_and_multiplies_exactly_in_minor_units() -> None:
    assert Money("USD", 1999) * 3 + Money("USD", 3) == Money("USD", 6000)
    assert str(Money("USD", 6000)) == "USD 60.00"


def test_money_refuses_to_add_currencies() -> None:
    with pytest.raises(ValueError, match="EUR"):
        Money("USD", 1) + Money("EUR", 1)


@pytest.mark.parametrize(("code", "units", "field"), [("usd", 1, "price.currency_code"), ("USD", -1, "price.minor_units")])
def test_bad_money_names_the_field(code: str, units: int, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_money("price", code, units)
    assert caught.value.field == field


def test_page_size_defaults_and_caps() -> None:
    assert (paging.page_size(0), paging.page_size(10), paging.page_size(10**6)) == (50, 10, 1000)
    with pytest.raises(InvalidArgument):
        paging.page_size(-1)


def test_a_token_round_trips_and_a_foreign_one_is_refused() -> None:
    token = paging.encode_token({"after": "sku-9"})
    assert paging.decode_token(token, after=str) == {"after": "sku-9"}
    assert paging.decode_token("", after=str) is None
    for bad in ("!!!", paging.encode_token({"after": 3}), paging.encode_token({"before": "x"}), "bnVsbA=="):
        with pytest.raises(InvalidArgument) as caught:
            paging.decode_token(bad, after=str)
        assert caught.value.field == "page_token"


def test_a_token_is_good_only_for_the_list_parameters_it_was_made_for() -> None:
    archived = paging.encode_token({"after": "sku-9"}, {"show_archived": True})
    assert paging.decode_token(archived, query={"show_archived": True}, after=str) == {"after": "sku-9"}
    with pytest.raises(InvalidArgument) as caught:
        paging.decode_token(archived, query={"show_archived": False}, after=str)
    assert caught.value.field == "page_token" and "show_archived" in caught.value.problem
    alice = paging.encode_token({"before": 7}, {"user_id": "alice"})
    with pytest.raises(InvalidArgument):
        paging.decode_token(alice, query={"user_id": "bob"}, before=int)
    # Defaults leave the token as it was before tokens were bound: a rolling upgrade reads both.
    assert paging.encode_token({"after": "a"}, {"show_archived": False}) == paging.encode_token({"after": "a"})
    with pytest.raises(InvalidArgument):
        paging.decode_token(paging.encode_token({"after": "a", "q": 5}), after=str)


def test_a_contract_violation_names_its_field_path_as_the_caller_wrote_it() -> None:
    from generated.shop.order.v1 import order_pb2

    request = order_pb2.CreateOrderRequest(request_id="r", user_id="u", lines=[
        order_pb2.OrderLine(sku="ok", quantity=1), order_pb2.OrderLine(sku="ok2", quantity=1),
        order_pb2.OrderLine(sku="x y", quantity=1)])
    with pytest.raises(InvalidArgument) as caught:
        validate.contract(request)
    assert caught.value.violations == (("lines[2].sku", "does not match regex pattern `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`"),)
    validate.contract(order_pb2.CreateOrderRequest(request_id="r", user_id="u", lines=request.lines[:2]))  # passes
