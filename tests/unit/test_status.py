"""The one error table, both ways, and deadline inheritance."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from mesh import errors, status


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("f", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.UpstreamFailed("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_shop_error_has_one_status_code(error: errors.ShopError, code: grpc.StatusCode) -> None:
    assert status.status_code(error) is code


def test_a_subclass_maps_through_its_base() -> None:
    from inventory.domain import OutOfStock

    assert status.status_code(OutOfStock("mug", 2, 1)) is grpc.StatusCode.FAILED_PRECONDITION


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):
        return ()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, errors.UpstreamFailed),
        (grpc.StatusCode.UNKNOWN, errors.UpstreamFailed),
    ],
)
def test_an_upstream_status_becomes_a_shop_error(code: grpc.StatusCode, expected: type) -> None:
    assert type(status.error_from_rpc("inventory", FakeRpcError(code, "why"))) is expected


def test_an_upstream_field_error_keeps_its_field() -> None:
    error = status.error_from_rpc("inventory", FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "lines[0].sku: bad"))
    assert isinstance(error, errors.InvalidArgument) and error.field == "lines[0].sku"


class FakeContext:
    def __init__(self, left: float | None):
        self.left = left

    def time_remaining(self) -> float | None:
        return self.left


async def test_a_downstream_call_gets_what_is_left_of_the_callers_deadline() -> None:
    seen: list[float] = []

    async def handler(request, context):
        await asyncio.sleep(0.05)
        seen.append(status.remaining(default=30.0))
        return request

    interceptor = status.ErrorInterceptor()

    async def continuation(details):
        return grpc.unary_unary_rpc_method_handler(handler)

    class Details:
        method = "/shop.test.v1.Test/Call"

    wrapped = await interceptor.intercept_service(continuation, Details())
    await wrapped.unary_unary("req", FakeContext(2.0))
    await wrapped.unary_unary("req", FakeContext(None))
    assert 1.9 < seen[0] < 1.96
    assert seen[1] == 30.0
