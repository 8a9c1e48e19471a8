"""Log lines carry the request they were written for, in text and in JSON."""

from __future__ import annotations

import json
import logging
import sys

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


def test_a_reply_the_core_refused_to_send_is_one_info_line_not_a_traceback():
    # The record grpc.aio writes when a caller's cancel and the handler's return cross (server.pyx.pxi).
    try:
        raise RuntimeError('Failed "execute_batch"')
    except RuntimeError:
        entry = logging.getLogger("grpc._cython.cygrpc").makeRecord(
            "grpc._cython.cygrpc", logging.ERROR, "server.pyx.pxi", 710,
            "ExecuteBatchError raised in core by servicer method [/shop.order.v1.OrderService/CreateOrder]",
            None, sys.exc_info())
    assert logs.UnsentReply().filter(entry)
    assert (entry.levelno, entry.exc_info) == (logging.INFO, None)
    assert entry.getMessage().startswith("/shop.order.v1.OrderService/CreateOrder: reply not sent")
    assert "Traceback" not in logging.Formatter().format(entry)


def test_other_grpc_errors_keep_their_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        entry = logging.getLogger("grpc._cython.cygrpc").makeRecord(
            "grpc._cython.cygrpc", logging.ERROR, "server.pyx.pxi", 1, "Unexpected [ValueError] raised by servicer",
            None, sys.exc_info())
    assert logs.UnsentReply().filter(entry)
    assert entry.levelno == logging.ERROR and entry.exc_info is not None


def test_the_filter_goes_on_grpcs_logger_once():
    logs.explain_unsent_replies()
    logs.explain_unsent_replies()
    assert sum(isinstance(f, logs.UnsentReply) for f in logging.getLogger("grpc._cython.cygrpc").filters) == 1


def test_out_of_files_at_accept_is_one_warning_a_minute_not_a_traceback_each_second() -> None:
    """asyncio's accept loop logs `socket.accept() out of system resource` with a traceback at every
    retry; the filter lets one WARNING through a minute, counting the ones it held back."""
    found = logs.OutOfFiles()

    def record() -> logging.LogRecord:
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            return logging.getLogger("asyncio").makeRecord(
                "asyncio", logging.ERROR, "base_events.py", 1, "socket.accept() out of system resource\nsocket: x",
                None, sys.exc_info())

    first = record()
    assert found.filter(first) and (first.levelno, first.exc_info) == (logging.WARNING, None)
    assert "Too many open files" in first.getMessage() and "(1 times" in first.getMessage()
    assert not any(found.filter(record()) for _ in range(1000))  # the same minute: held back
    found._said -= logs.OutOfFiles.EVERY  # a minute later
    later = record()
    assert found.filter(later) and "(1001 times" in later.getMessage()
    other = logging.getLogger("asyncio").makeRecord("asyncio", logging.ERROR, "x", 1, "Task exception", None, None)
    assert found.filter(other) and other.levelno == logging.ERROR  # anything else is left as it is
