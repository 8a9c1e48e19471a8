"""Log lines carry the request they were written for, in text and in JSON."""

from __future__ import annotations

import json
import logging

from mesh.observe import logs


def record(message: str, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("shop", logging.INFO, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(entry, key, value)
    return entry


def test_a_line_written_while_serving_an_rpc_names_the_method_and_request_id() -> None:
    token_m, token_r = logs.rpc_method.set("/shop.order.v1.OrderService/GetOrder"), logs.request_id.set("r-9")
    try:
        entry = record("hello")
        assert logs.RequestContext().filter(entry)
    finally:
        logs.rpc_method.reset(token_m)
        logs.request_id.reset(token_r)
    text = logging.Formatter("%(message)s%(context)s").format(entry)
    assert text == "hello [rpc_method=/shop.order.v1.OrderService/GetOrder request_id=r-9]"
    parsed = json.loads(logs.JsonFormatter("order", "order-1").format(entry))
    assert parsed["rpc_method"] == "/shop.order.v1.OrderService/GetOrder" and parsed["request_id"] == "r-9"
    assert parsed["service"] == "order" and parsed["instance"] == "order-1" and "context" not in parsed


def test_a_line_outside_any_request_has_no_context() -> None:
    entry = record("starting")
    logs.RequestContext().filter(entry)
    assert logging.Formatter("%(message)s%(context)s").format(entry) == "starting"
    assert "rpc_method" not in json.loads(logs.JsonFormatter("order", "o").format(entry))


def test_extra_fields_given_to_the_call_are_kept() -> None:
    entry = record("done", grpc_code="NOT_FOUND", duration_ms=1.5)
    logs.RequestContext().filter(entry)
    parsed = json.loads(logs.JsonFormatter("order", "o").format(entry))
    assert parsed["grpc_code"] == "NOT_FOUND" and parsed["duration_ms"] == 1.5
