"""The one status model: its code sets, the error table both ways, and deadline inheritance."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from generated.shop.inventory.v1 import inventory_pb2
from mesh.client import breaker
from mesh.kernel import deadline, errors
from mesh.rpc import softerrors, status
from mesh.server import guard

A_REQUEST = inventory_pb2.GetProductRequest(sku="MUG-1")


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
        self.aborted: tuple | None = None

    def time_remaining(self) -> float | None:
        return self.left

    def invocation_metadata(self):
        return ()

    async def abort(self, code, details, trailing_metadata=()):
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


class FailingServicer:
    def __init__(self, error: Exception):
        self.error = error

    async def GetProduct(self, request, context):
        raise self.error


@pytest.mark.allow_log("failed unexpectedly")  # the bug it provokes is logged with its traceback, as it must be
async def test_a_shop_error_aborts_with_its_code_and_a_bug_with_a_bland_internal() -> None:
    context = FakeContext(None)
    with pytest.raises(grpc.aio.AbortError):
        await guard.Guarded(FailingServicer(errors.NotFound("no mug")), inventory_service()).GetProduct(A_REQUEST, context)
    assert context.aborted == (grpc.StatusCode.NOT_FOUND, "no mug")
    context = FakeContext(None)
    with pytest.raises(grpc.aio.AbortError):
        await guard.Guarded(FailingServicer(KeyError("secret")), inventory_service()).GetProduct(A_REQUEST, context)
    assert context.aborted[0] == grpc.StatusCode.INTERNAL and "secret" not in context.aborted[1]


class SleepyServicer:
    def __init__(self) -> None:
        self.seen: list[float] = []

    async def GetProduct(self, request, context):
        await asyncio.sleep(0.05)
        self.seen.append(deadline.remaining(default=30.0))
        return request


def inventory_service():
    from generated.shop.inventory.v1 import inventory_pb2

    return inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"]


async def test_a_downstream_call_gets_what_is_left_of_the_callers_deadline() -> None:
    servicer = SleepyServicer()
    guarded = guard.Guarded(servicer, inventory_service())
    await guarded.GetProduct(A_REQUEST, FakeContext(2.0))
    await guarded.GetProduct(A_REQUEST, FakeContext(None))
    assert 1.9 < servicer.seen[0] < 1.96
    assert servicer.seen[1] == 30.0


def test_every_code_but_ok_is_either_the_callers_fault_or_the_servers() -> None:
    everything = frozenset(grpc.StatusCode) - {grpc.StatusCode.OK}
    assert status.CALLER_FAULT | status.SERVER_FAULT == everything
    assert not status.CALLER_FAULT & status.SERVER_FAULT
    # OpenTelemetry's gRPC conventions name exactly these as the server's errors
    assert status.SERVER_FAULT == {grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                                   grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                                   grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS}


def test_the_derived_sets_nest_as_their_meanings_do() -> None:
    assert status.RETRYABLE <= status.NOT_ANSWERED <= status.SERVER_FAULT
    assert status.ABOUT_THE_REQUEST <= status.CALLER_FAULT
    assert softerrors.CODES == status.ABOUT_THE_REQUEST  # soft errors are derived, not a second list
    # an overloaded or abandoned call says something about the instance or the caller, not the request
    assert grpc.StatusCode.RESOURCE_EXHAUSTED not in softerrors.CODES
    assert grpc.StatusCode.CANCELLED not in softerrors.CODES


def test_only_codes_that_say_nobody_answered_open_the_breaker() -> None:
    for code in grpc.StatusCode:
        guard_ = breaker.Breaker(failures=1, cooldown=60.0, clock=lambda: 0.0)
        guard_.record(code, timeout=10.0)
        assert (guard_.state is breaker.State.OPEN) == (code in status.NOT_ANSWERED), code


def test_a_garbage_status_trailer_is_no_status_and_no_crash() -> None:
    assert status.status_of([(status.DETAILS_KEY, b"\xff\xff\xff")]) is None
    assert status.status_of(None) is None
    said = status.status_of([("other", b"x"), (status.DETAILS_KEY, status.details(errors.NotFound("x"), grpc.StatusCode.NOT_FOUND))])
    assert said is not None and said.code == grpc.StatusCode.NOT_FOUND.value[0] and said.message == "x"
