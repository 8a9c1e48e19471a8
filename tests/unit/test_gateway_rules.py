"""The gateway's pure rules: templates, routes from annotations, transcoding, the status table."""

from __future__ import annotations

import grpc
import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from gateway.errors import HTTP_STATUS
from gateway.routes import Router, TemplateError, compile_template, routes_from
from gateway.transcode import BadRequest, build_request


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/orders/{order_id}", "/v1/orders/a%20b", {"order_id": "a b"}),
        ("/v1/orders/{order_id}:cancel", "/v1/orders/o-1:cancel", {"order_id": "o-1"}),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2", {"name": "shelves/1/books/2"}),
        ("/v1/{book.name=shelves/*}/x", "/v1/shelves/9/x", {"book.name": "shelves/9"}),
        ("/v1/files/{path=**}", "/v1/files/a/b%2Fc", {"path": "a/b%2Fc"}),
        ("/v1/products", "/v1/products", {}),
    ],
)
def test_templates_match_and_bind_variables(template: str, path: str, expected: dict) -> None:
    assert compile_template(template).match(path) == expected


@pytest.mark.parametrize(("template", "path"), [("/v1/orders/{order_id}", "/v1/orders/a/b"), ("/v1/products", "/v1/products/x")])
def test_templates_refuse_other_paths(template: str, path: str) -> None:
    assert compile_template(template).match(path) is None


@pytest.mark.parametrize("bad", ["v1/no-slash", "/v1/{unclosed", "/v1/a}b"])
def test_malformed_templates_are_refused(bad: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(bad)


def annotated_service():
    """A contract the gateway has never seen, made in the test: its routes must appear by themselves."""
    file = descriptor_pb2.FileDescriptorProto(name="test/library.proto", package="test.library.v1", syntax="proto3")
    file.dependency.append("google/api/annotations.proto")
    book = file.message_type.add(name="Book")
    book.field.add(name="name", number=1, type=9, label=1, json_name="name")
    book.field.add(name="page_count", number=2, type=5, label=1, json_name="pageCount")
    request = file.message_type.add(name="GetBookRequest")
    request.field.add(name="book", number=1, type=11, type_name=".test.library.v1.Book", label=1, json_name="book")
    request.field.add(name="tags", number=2, type=9, label=3, json_name="tags")
    request.field.add(name="verbose", number=3, type=8, label=1, json_name="verbose")
    service = file.service.add(name="LibraryService")
    method = service.method.add(name="GetBook", input_type=".test.library.v1.GetBookRequest",
                                output_type=".test.library.v1.Book")
    rule = http_pb2.HttpRule(get="/v1/{book.name=shelves/*/books/*}")
    rule.additional_bindings.add(post="/v1/{book.name=shelves/*/books/*}:fetch", body="*")
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    pool = descriptor_pool.Default()  # where google.api.http's extension is registered
    try:
        return pool.FindFileByName(file.name)
    except KeyError:
        pool.AddSerializedFile(file.SerializeToString())
        return pool.FindFileByName(file.name)


def test_an_annotated_rpc_gets_its_routes_and_bindings_with_no_gateway_code() -> None:
    router = Router(routes_from([annotated_service()]))
    route, values, _ = router.match("GET", "/v1/shelves/s1/books/b2")
    assert route is not None and route.rpc == "/test.library.v1.LibraryService/GetBook"
    assert values == {"book.name": "shelves/s1/books/b2"}
    extra, _, _ = router.match("POST", "/v1/shelves/s1/books/b2:fetch")
    assert extra is not None and extra.body == "*"
    assert router.match("DELETE", "/v1/shelves/s1/books/b2")[2] == ["GET", "HEAD"]  # a GET resource takes HEAD
    assert router.match("HEAD", "/v1/shelves/s1/books/b2")[0] is route


def test_a_path_ending_in_a_declared_custom_verb_names_that_method_not_an_id() -> None:
    from gateway.app import CONTRACTS

    router = Router(routes_from(CONTRACTS))
    assert router.match("GET", "/v1/orders/o1:cancel") == (None, {}, ["POST"])  # not GetOrder("o1:cancel")
    assert router.match("GET", "/v1/products/mug:adjustStock")[2] == ["POST"]
    cancel, values, _ = router.match("POST", "/v1/orders/o1:cancel")
    assert cancel is not None and cancel.rpc.endswith("/CancelOrder") and values == {"order_id": "o1"}
    get, values, _ = router.match("GET", "/v1/orders/o1:unknownVerb")  # no route declares it: an id
    assert get is not None and get.rpc.endswith("/GetOrder") and values == {"order_id": "o1:unknownVerb"}


def test_path_nested_and_repeated_query_values_fill_the_request() -> None:
    file = annotated_service()
    request_class = message_factory.GetMessageClass(file.message_types_by_name["GetBookRequest"])
    message = build_request(request_class, body_field="", body=b"", path={"book.name": "shelves/1/books/2"},
                            query={"tags": ["a", "b"], "book.pageCount": ["12"], "verbose": ["true"]})
    assert (message.book.name, message.book.page_count, list(message.tags), message.verbose) == (
        "shelves/1/books/2", 12, ["a", "b"], True)
    with pytest.raises(BadRequest, match="verbose"):
        build_request(request_class, body_field="", body=b"", path={}, query={"verbose": ["maybe"]})
    with pytest.raises(BadRequest, match="colour"):
        build_request(request_class, body_field="", body=b"", path={}, query={"colour": ["red"]})


def test_the_status_table_is_grpc_gateways() -> None:
    expected = {
        "OK": 200, "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
        "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "ABORTED": 409, "RESOURCE_EXHAUSTED": 429,
        "CANCELLED": 499, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "UNKNOWN": 500,
        "INTERNAL": 500, "DATA_LOSS": 500,
    }
    assert {code.name: HTTP_STATUS[code] for code in grpc.StatusCode} == expected


def test_field_paths_are_said_in_the_json_names_a_client_sent() -> None:
    from gateway.errors import json_path

    assert json_path("request_id") == "requestId"
    assert json_path("lines[12].unit_price") == "lines[12].unitPrice"
    assert json_path("product.price.currency_code") == "product.price.currencyCode"
    assert json_path("sku") == "sku"
