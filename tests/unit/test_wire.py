"""The pure pieces of the RPC protocols (gateway/wire.py): content types, envelopes, base64 text, bounded gzip, Connect's codes."""

from __future__ import annotations

import base64
import gzip
import struct

import grpc
import pytest

from gateway.errors import Failure
from gateway.wire import connect_code, envelope, grpc_web_text, inflate, unenvelope, wire_of
from mesh.server.http import Request


def request(content_type: str, method: str = "POST", query: str = "") -> Request:
    return Request(method, "/a.B/C", query, {"content-type": content_type} if content_type else {})


@pytest.mark.parametrize(("content_type", "protocol", "codec", "enveloped", "reply"), [
    ("application/json", "connect", "json", False, "application/json"),
    ("application/json; charset=utf-8", "connect", "json", False, "application/json"),
    ("application/proto", "connect", "proto", False, "application/proto"),
    ("application/connect+json", "connect", "json", True, "application/connect+json"),
    ("application/grpc-web", "grpc-web", "proto", True, "application/grpc-web+proto"),
    ("application/grpc-web+json", "grpc-web", "json", True, "application/grpc-web+json"),
    ("application/grpc-web-text", "grpc-web", "proto", True, "application/grpc-web-text+proto"),
])
def test_the_content_type_names_the_protocol_and_codec(content_type, protocol, codec, enveloped, reply) -> None:
    wire = wire_of(request(content_type))
    assert wire is not None and (wire.protocol, wire.codec, wire.enveloped, wire.content_type) == \
        (protocol, codec, enveloped, reply)


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/grpc-web+foo", "application/grpc-web-text+json",
                                          "application/grpc", "application/connect+xml"])
def test_anything_else_is_no_protocol(content_type: str) -> None:
    assert wire_of(request(content_type)) is None


def test_a_connect_get_is_recognised_by_its_query() -> None:
    assert wire_of(request("", "GET", "connect=v1&encoding=json&message=%7B%7D")) is not None
    assert wire_of(request("", "GET", "")) is None


@pytest.mark.parametrize("path", ["/v1/orders", "/v1/products/a.b", "/", "/shop.order.v1.OrderService", "/a.B/C/D"])
def test_only_a_package_service_method_path_speaks_a_protocol(path: str) -> None:
    """Connect's unary JSON shares REST's content type: the path decides, and a REST path is REST's."""
    assert wire_of(Request("POST", path, "", {"content-type": "application/json"})) is None
    assert wire_of(Request("POST", "/shop.order.v1.OrderService/CreateOrder", "", {"content-type": "application/json"}))


def test_envelopes_round_trip_and_lies_about_their_size_are_refused() -> None:
    body = envelope(0, b"abc") + envelope(1, b"") + envelope(2, b"{}")
    assert unenvelope(body) == [(0, b"abc"), (1, b""), (2, b"{}")]
    for broken in (b"\x00\x00\x00", struct.pack(">BI", 0, 10) + b"short", envelope(0, b"ok") + b"\x00"):
        with pytest.raises(Failure) as refused:
            unenvelope(broken)
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_web_text_reads_chunks_each_padded_and_refuses_what_is_not_base64() -> None:
    frames = [envelope(0, b"a"), envelope(0, b"bc"), envelope(0x80, b"grpc-status: 0\r\n")]
    text = b"".join(base64.b64encode(f) for f in frames)  # each chunk padded on its own, as servers stream them
    assert grpc_web_text(text) == b"".join(frames)
    assert grpc_web_text(base64.b64encode(b"".join(frames))) == b"".join(frames)
    with pytest.raises(Failure):
        grpc_web_text(b"not base64 at all!")


def test_gzip_inflates_only_up_to_the_limit() -> None:
    assert inflate(gzip.compress(b"x" * 1000), 1000) == b"x" * 1000
    with pytest.raises(Failure) as refused:
        inflate(gzip.compress(b"x" * 1001), 1000)
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(Failure) as refused:
        inflate(b"not gzip", 1000)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_connect_spells_codes_in_snake_case_and_cancelled_with_one_l() -> None:
    assert connect_code(grpc.StatusCode.INVALID_ARGUMENT) == "invalid_argument"
    assert connect_code(grpc.StatusCode.CANCELLED) == "canceled"
    assert connect_code(grpc.StatusCode.DEADLINE_EXCEEDED) == "deadline_exceeded"


@pytest.mark.parametrize(("code", "said", "reads"), [
    # gRPC's own words for an upstream it could not reach: a sentence naming the upstream.
    (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
     "Failed to connect to remote host: Connection refused", "the order service is unavailable; try again"),
    (grpc.StatusCode.UNAVAILABLE, "Socket closed", "the order service is unavailable; try again"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "the order service did not answer within the deadline"),
    (grpc.StatusCode.UNAVAILABLE, "circuit open: kept failing, so calls are not sent; next try in 2.0s",
     "the order service kept failing, so calls are not sent; next try in 2.0s"),
    # What the upstream itself said is kept word for word, in REST and in Connect alike.
    (grpc.StatusCode.UNAVAILABLE, "unavailable", "unavailable"),
    (grpc.StatusCode.UNAVAILABLE, "inventory did not answer: shutting down", "inventory did not answer: shutting down"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded", "deadline exceeded"),
    (grpc.StatusCode.NOT_FOUND, "order 'x' not found", "order 'x' not found"),
])
def test_transport_text_becomes_a_sentence_and_an_upstreams_words_are_kept(code, said: str, reads: str) -> None:
    from gateway.errors import in_plain_words

    assert in_plain_words(code, said, "order") == reads
