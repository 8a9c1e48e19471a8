"""Hostile requests at the gateway's edge, through the real processes: each is refused with a 400
(or the status its kind calls for) whose body names the field as the client spelled it, and has
no effect; a polite request next to it is served as ever."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from tests.support.http import Http, new_product

PYTHON_WORDS = ("invalid literal", "int()", "Available Fields", "bytes-like", "Traceback", "NoneType", "KeyError",
                "json.decoder", "Expecting value", "page_size")


def raw_post(api: Http, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    return api.call("POST", path, raw=body, headers=headers)


def violations(error: dict) -> dict[str, str]:
    for detail in error["details"]:
        if detail["@type"] == "type.googleapis.com/google.rpc.BadRequest":
            return {v["field"]: v["description"] for v in detail["fieldViolations"]}
    raise AssertionError(f"no BadRequest detail in {error}")


def orders_of(api: Http, user: str) -> list[dict]:
    status, _, page = api.call("GET", f"/v1/users/{user}/orders?pageSize=100")
    assert status == 200, page
    return page["orders"]


def test_a_duplicate_key_never_changes_what_was_asked(api: Http) -> None:
    sku, user = new_product(api, stock=5), f"dup-{uuid.uuid4().hex[:8]}"
    body = '{"requestId":"r2","request_id":"r3","userId":"' + user + '","lines":[{"sku":"' + sku + '","quantity":1}]}'
    status, _, error = raw_post(api, "/v1/orders", body.encode())
    assert status == 400 and error["code"] == 3, error
    assert violations(error) == {"request_id": "is given twice, as requestId and as request_id"}
    line_twice = ('{"requestId":"' + str(uuid.uuid4()) + '","userId":"' + user + '","lines":[{"sku":"' + sku
                  + '","quantity":1,"quantity":2}]}')
    status, _, error = raw_post(api, "/v1/orders", line_twice.encode())
    assert status == 400 and violations(error) == {"lines[0].quantity": "is given more than once"}
    assert orders_of(api, user) == []  # nothing was placed
    # The polite client's order, right after, goes through.
    polite = {"requestId": str(uuid.uuid4()), "userId": user, "lines": [{"sku": sku, "quantity": 1}]}
    assert api.call("POST", "/v1/orders", polite)[0] == 200
    assert len(orders_of(api, user)) == 1


@pytest.mark.parametrize("body", [
    '[]', '"order"', '{"lines":{}}', '{"lines":[[]]}', '{"lines":[{"sku":"s","quantity":1,"unitPrice":[]}]}',
    '{"lines":[{"sku":"s","quantity":"1_0"}]}', '{"lines":[{"sku":"s","quantity":"+1"}]}',
    '{"lines":[{"sku":"s","quantity":"01"}]}', '{"lines":[{"sku":"s","quantity":" 1"}]}',
    '{"lines":[{"sku":"s","quantity":"\\u0661"}]}', '{"lines":[{"sku":"s","quantity":"two"}]}',
    '{"lines":[{"sku":"s","quantity":1.5}]}', '{"userId":5}', '{"userId":["u"]}', '{"requestId":{"a":1}}',
    '{"lines":[{"sku":"s","quantity":1e400}]}', '{"a":NaN}', '{"requestId":"\\ud800"}',
])
def test_a_body_that_is_not_the_messages_json_is_a_400_in_the_clients_words(api: Http, body: str) -> None:
    status, _, error = raw_post(api, "/v1/orders", body.encode())
    assert status == 400 and error["code"] == 3, error
    found = violations(error)
    assert found and all(found.values())
    said = json.dumps(error)
    assert not any(word in said for word in PYTHON_WORDS), said


@pytest.mark.parametrize("query", ["pageSize=1_0", "pageSize=+1", "pageSize=%201", "pageSize=01", "pageSize=two",
                                   "pageSize=%D9%A1", "pageSize=1&pageSize=2"])
def test_a_query_value_is_read_as_strictly(api: Http, query: str) -> None:
    status, _, error = api.call("GET", f"/v1/products?{query}")
    assert status == 400, error
    assert list(violations(error)) == ["pageSize"]
    assert "must be an integer" in error["message"] or "takes one value" in error["message"]


def test_a_query_parameter_cannot_override_the_body_or_the_path(api: Http) -> None:
    sku_b, sku_q = f"body-{uuid.uuid4().hex[:8]}", f"query-{uuid.uuid4().hex[:8]}"
    product = {"sku": sku_b, "name": "Mug", "price": {"currencyCode": "USD", "minorUnits": "100"}, "available": 1}
    status, _, error = api.call("POST", f"/v1/products?product.sku={sku_q}", product)
    assert status == 400 and list(violations(error)) == ["product.sku"], error
    assert "part of the request body" in violations(error)["product.sku"]
    for sku in (sku_b, sku_q):
        assert api.call("GET", f"/v1/products/{sku}")[0] == 404  # nothing was created
    existing = new_product(api)
    status, _, error = api.call("GET", f"/v1/products/{existing}?sku=other")
    assert status == 400 and "the URL path sets it" in violations(error)["sku"]
    status, _, error = api.call("POST", f"/v1/products/{existing}:adjustStock", {"sku": "other", "delta": "1",
                                                                                  "reason": "x"})
    assert status == 400 and "in the path" in violations(error)["sku"]
    status, _, error = api.call("POST", f"/v1/products/{existing}:adjustStock?delta=5", {"delta": "1", "reason": "x"})
    assert status == 400 and "takes its fields from the body" in violations(error)["delta"]
    status, _, product = api.call("GET", f"/v1/products/{existing}")
    assert product["available"] == "10"  # no adjustment happened


def test_errors_the_gateway_makes_itself_carry_their_own_code_and_name_the_request(api: Http) -> None:
    status, headers, error = api.call("DELETE", "/v1/products", headers={"x-request-id": "mine-1"})
    assert status == 405 and error["code"] == 12 and set(headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}, error
    assert {"@type": "type.googleapis.com/google.rpc.RequestInfo", "requestId": "mine-1"} in error["details"]
    assert headers["x-request-id"] == "mine-1"
    status, headers, error = api.call("POST", "/v1/orders", raw=b"a=b",
                                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert status == 415 and error["code"] == 3
    info = error["details"][-1]
    assert info["@type"].endswith("RequestInfo") and info["requestId"] == headers["x-request-id"]
    assert len(info["requestId"]) == 32  # one of ours, the client sent none
    for method, path, code in (("POST", "/healthz", 12), ("GET", "/nowhere", 5)):
        status, _, error = api.call(method, path)
        assert error["code"] == code and error["details"][-1]["@type"].endswith("RequestInfo"), error
    # The HTTP server's own refusals read the same: too large a body, before it is read.
    host, port = api.host, api.port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /v1/orders HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
                     b"content-length: 999999999\r\n\r\n")
        reply = _read_response(sock)
    assert reply.startswith(b"HTTP/1.1 413 ")
    body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert body["code"] == 3 and body["details"][-1]["@type"].endswith("RequestInfo")


CLIENT_CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "application/proto",
                        "application/connect+json", "application/connect+proto", "application/grpc-web",
                        "application/grpc-web+json", "application/grpc-web-text", "text/plain", None]


@pytest.mark.parametrize("content_type", CLIENT_CONTENT_TYPES)
def test_a_rest_path_is_answered_as_rest_whatever_content_type_the_client_sends(api: Http, content_type: str | None) -> None:
    """Only `/<package.Service>/<Method>` is Connect or gRPC-Web: at a REST path every refusal is the
    JSON google.rpc.Status the README promises, even under Connect's own content types."""
    sent = {"content-type": content_type} if content_type else {}

    def refusal(status: int, headers: dict[str, str], body: object, code: int) -> dict:
        assert headers["content-type"] == "application/json", (content_type, status, headers, body)
        assert isinstance(body, dict) and body["code"] == code and body["message"], (content_type, body)
        assert body["details"][-1]["@type"].endswith("RequestInfo")
        return body

    status, headers, body = api.call("PATCH", "/v1/orders", raw=b"{}", headers=sent)
    assert status == 405 and headers["allow"] == "POST", (content_type, status, body)
    assert "PATCH is not allowed on /v1/orders" in refusal(status, headers, body, 12)["message"]
    status, headers, body = api.call("POST", "/v1/nowhere/at-all", raw=b"{}", headers=sent)
    assert status == 404
    refusal(status, headers, body, 5)
    status, headers, body = api.call("POST", "/v1/orders", raw=b"\x00\x01", headers=sent)
    if content_type is None or content_type.startswith("application/json"):
        assert status == 400, (content_type, status, body)  # REST's own reading of a body that is not JSON
        refusal(status, headers, body, 3)
    else:
        assert status == 415, (content_type, status, body)
        assert "content-type must be application/json" in refusal(status, headers, body, 3)["message"]
    with socket.create_connection((api.host, api.port), timeout=10) as sock:
        head = f"content-type: {content_type}\r\n" if content_type else ""
        sock.sendall(f"POST /v1/orders HTTP/1.1\r\nhost: t\r\n{head}content-length: 999999999\r\n\r\n".encode())
        reply = _read_response(sock)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b"\r\ncontent-type: application/json\r\n" in reply.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["code"] == 3


def _read_response(sock: socket.socket, want: bytes = b"") -> bytes:
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(rest) >= length and (not want or want in data):
                return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise TimeoutError(f"no whole response: {data!r}")


def test_expect_100_continue_is_answered_before_the_body_is_sent(api: Http) -> None:
    sku = new_product(api)
    body = json.dumps({"requestId": str(uuid.uuid4()), "userId": "expect", "lines": [{"sku": sku, "quantity": 1}]})
    with socket.create_connection((api.host, api.port), timeout=10) as sock:
        sock.sendall(f"POST /v1/orders HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
                     f"content-length: {len(body)}\r\nexpect: 100-continue\r\n\r\n".encode())
        interim = sock.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"  # sent before the body: the client may now send it
        sock.sendall(body.encode())
        reply = _read_response(sock)
    assert reply.startswith(b"HTTP/1.1 200 ") and b'"status":"CONFIRMED"' in reply
    with socket.create_connection((api.host, api.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/orders HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\nexpect: magic\r\n\r\n")
        assert _read_response(sock).startswith(b"HTTP/1.1 417 ")


def test_an_http_1_1_request_without_one_host_is_a_400(api: Http) -> None:
    for head in (b"GET /v1/products/coffee-mug HTTP/1.1\r\n\r\n",
                 b"GET /v1/products/coffee-mug HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n"):
        with socket.create_connection((api.host, api.port), timeout=10) as sock:
            sock.sendall(head)
            reply = _read_response(sock)
        assert reply.startswith(b"HTTP/1.1 400 "), reply
        error = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        assert "Host header" in error["message"] and error["code"] == 3
    with socket.create_connection((api.host, api.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/products/coffee-mug HTTP/1.0\r\n\r\n")  # HTTP/1.0 has no such rule
        assert _read_response(sock).startswith(b"HTTP/1.1 200 ")


def test_header_and_path_values_are_refused_naming_what_is_wrong(api: Http) -> None:
    """Issue 11.12: an empty Idempotency-Key was taken as a key differing from requestId, and a path id of
    white space was answered 'value is required'. Each now says what is wrong, and the document states it."""
    sku = new_product(api)
    body = {"requestId": str(uuid.uuid4()), "userId": "hdr", "lines": [{"sku": sku, "quantity": 1}]}
    for key, says in (("", "must not be empty"), ("k" * 129, "at most 128 characters")):
        status, _, error = api.call("POST", "/v1/orders", body, headers={"Idempotency-Key": key})
        assert status == 400 and list(violations(error)) == ["Idempotency-Key"], error
        assert says in error["message"]
    for blank in ("%09", "%20%20"):
        status, _, error = api.call("GET", f"/v1/orders/{blank}")
        assert status == 400 and violations(error) == {
            "orderId": "must not be blank: it has only spaces or other white space"}, error
    status, _, document = api.call("GET", "/openapi.json")
    header = next(p for p in document["paths"]["/v1/orders"]["post"]["parameters"] if p["name"] == "Idempotency-Key")
    assert header["schema"]["minLength"] == 1 and header["schema"]["maxLength"] == 128
    order_id = document["paths"]["/v1/orders/{order_id}"]["get"]["parameters"][0]["schema"]
    assert order_id["x-not-blank"] is True
    page_token = next(p for p in document["paths"]["/v1/products"]["get"]["parameters"] if p["name"] == "pageToken")
    assert page_token["schema"]["description"].startswith("opaque")  # refused unless we issued it, and it says so
