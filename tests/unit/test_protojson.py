"""The gateway's strict JSON reader, compared case by case with the reference: Go's protojson
(the codec behind grpc-gateway), run on the same descriptors. Where both accept, both must build
the same message, byte for byte; where ours refuses, the violation names the field as sent."""

from __future__ import annotations

import json
import subprocess

import pytest

from gateway.protojson import BadRequest, Reader, loads
from generated.shop.inventory.v1 import inventory_pb2
from generated.shop.order.v1 import order_pb2
from tests.conftest import ROOT, tool

PROTOSET = ROOT / "generated" / "shopmesh.protoset"
ORDER = "shop.order.v1.CreateOrderRequest"
PRODUCT = "shop.inventory.v1.Product"
LIST = "shop.inventory.v1.ListProductsRequest"
READ_ORDER = "shop.order.v1.Order"
TYPES = {ORDER: order_pb2.CreateOrderRequest, PRODUCT: inventory_pb2.Product,
         LIST: inventory_pb2.ListProductsRequest, READ_ORDER: order_pb2.Order}



def line(value: str) -> str:
    return '{"sku":"mug","quantity":' + value + "}"


CASES: list[tuple[str, str]] = [
    # shapes
    (ORDER, '{}'), (ORDER, '[]'), (ORDER, 'null'), (ORDER, '"x"'), (ORDER, '7'),
    (ORDER, '{"requestId":"r1","userId":"u","lines":[' + line("1") + ']}'),
    (ORDER, '{"request_id":"r1","user_id":"u","lines":[' + line("1") + ']}'),
    (ORDER, '{"lines":{}}'), (ORDER, '{"lines":"mug"}'), (ORDER, '{"lines":[null]}'), (ORDER, '{"lines":[[]]}'),
    (ORDER, '{"lines":null}'), (ORDER, '{"requestId":null}'), (ORDER, '{"lines":[{}]}'),
    (PRODUCT, '{"price":[]}'), (PRODUCT, '{"price":"USD 1"}'), (PRODUCT, '{"price":{"currencyCode":"USD","minorUnits":5}}'),
    # duplicates, also across the two spellings of one field
    (ORDER, '{"requestId":"r2","request_id":"r3"}'), (ORDER, '{"requestId":"r2","requestId":"r3"}'),
    (ORDER, '{"lines":[{"sku":"a","quantity":1,"quantity":2}]}'),
    (PRODUCT, '{"price":{"minorUnits":1,"minor_units":2}}'),
    # unknown fields
    (ORDER, '{"foo":1}'), (ORDER, '{"RequestId":"r"}'), (ORDER, '{"lines":[{"sku":"a","price":1}]}'),
    # strings
    (ORDER, '{"userId":5}'), (ORDER, '{"userId":true}'), (ORDER, '{"userId":{}}'), (ORDER, '{"userId":"caf\\u00e9"}'),
    (ORDER, '{"userId":"\\ud800"}'),
    # bools and floats are not in these messages; enums and timestamps are in Order
    (READ_ORDER, '{"status":"CONFIRMED"}'), (READ_ORDER, '{"status":2}'), (READ_ORDER, '{"status":"confirmed"}'),
    (READ_ORDER, '{"status":"2"}'), (READ_ORDER, '{"status":true}'), (READ_ORDER, '{"status":99}'),
    (READ_ORDER, '{"createTime":"2026-01-31T12:00:00Z"}'), (READ_ORDER, '{"createTime":"2026-01-31T12:00:00.5+01:00"}'),
    (READ_ORDER, '{"createTime":"yesterday"}'), (READ_ORDER, '{"createTime":1}'), (READ_ORDER, '{"createTime":{}}'),
    # not JSON
    (ORDER, '{"a":NaN}'), (ORDER, '{"a":Infinity}'), (ORDER, "{'a':1}"), (ORDER, '{"a":1,}'), (ORDER, '{"a":1} x'),
]
# integers: in an int64 (quantity, available) and an int32 (pageSize), as numbers and as strings
for number in ["1", "-1", "0", "1.0", "1e2", "1E2", "1.5", "1e-1", "01", "-01", "+1", "9223372036854775807",
               "9223372036854775808", "-9223372036854775808", "1e19", "true", "null", '"1"', '"-1"', '"1.0"', '"1e2"',
               '"1.5"', '"1_0"', '"+1"', '"01"', '" 1"', '"1 "', '"\\u0661"', '"0x10"', '"two"', '""', '"-"',
               '"9223372036854775808"', "[]", "{}"]:
    CASES.append((ORDER, '{"lines":[' + line(number) + "]}"))
    CASES.append((PRODUCT, '{"available":' + number + "}"))
    CASES.append((LIST, '{"pageSize":' + number + "}"))
for big in ["2147483647", "2147483648", "-2147483649", '"2147483648"', "4294967296"]:
    CASES.append((LIST, '{"pageSize":' + big + "}"))


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    binary = tool("protojson-reference", "run scripts/install-tools.sh (it builds tests/reference/protojson with Go)")
    lines = "".join(json.dumps({"type": kind, "body": body}) + "\n" for kind, body in CASES)
    done = subprocess.run([binary, str(PROTOSET)], input=lines, capture_output=True, text=True, timeout=60, check=True)
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(CASES)
    return answers


def ours(kind: str, body: str) -> tuple[bool, bytes, list[tuple[str, str]]]:
    message = TYPES[kind]()
    try:
        reader = Reader()
        reader.message(message, loads(body.encode()), "")
        reader.done()
    except BadRequest as error:
        return False, b"", error.violations
    return True, message.SerializeToString(deterministic=True), []


def test_every_case_is_accepted_or_refused_as_go_protojson_does(reference: list[dict]) -> None:
    import base64

    differ = []
    for (kind, body), theirs in zip(CASES, reference, strict=True):
        accepted, wire, violations = ours(kind, body)
        if accepted != theirs["ok"]:
            differ.append(f"{kind} {body}: ours {'accepts' if accepted else violations}, "
                          f"Go {'accepts' if theirs['ok'] else theirs['error']}")
        elif accepted and wire != base64.b64decode(theirs.get("binary", "")):
            differ.append(f"{kind} {body}: both accept, but the messages differ")
    assert not differ, "\n".join(differ)
    assert sum(1 for answer in reference if answer["ok"]) > 20 and sum(1 for a in reference if not a["ok"]) > 60


@pytest.mark.parametrize(("body", "field", "says"), [
    ('{"requestId":"r2","request_id":"r3"}', "request_id", "is given twice, as requestId and as request_id"),
    ('{"lines":[{"sku":"a","quantity":1,"quantity":2}]}', "lines[0].quantity", "is given more than once"),
    ('{"lines":[{"sku":"a","quantity":"1_0"}]}', "lines[0].quantity", "must be an integer such as 12 or -3"),
    ('{"lines":[{"sku":"a","quantity":"two"}]}', "lines[0].quantity", "must be an integer"),
    ('{"userId":5}', "userId", "must be a string, not a number"),
    ('{"lines":{}}', "lines", "must be an array, not an object"),
    ('{"lines":[[]]}', "lines[0]", "must be a JSON object, not an array"),
    ('{"user":"u"}', "user", "unknown field; CreateOrderRequest has requestId, userId, lines"),
    ('[]', "request body", "must be a JSON object, not an array"),
])
def test_a_refusal_names_the_field_as_the_client_spelled_it_in_plain_words(body: str, field: str, says: str) -> None:
    accepted, _, violations = ours(ORDER, body)
    assert not accepted
    assert any(f == field and says in problem for f, problem in violations), violations
    text = " ".join(problem for _, problem in violations)
    for python in ("invalid literal", "int()", "Available Fields", "bytes-like", "Traceback"):
        assert python not in text


def test_every_problem_is_reported_at_once() -> None:
    _, _, violations = ours(ORDER, '{"userId":1,"lines":[{"sku":2,"quantity":"x"}],"extra":0}')
    assert [f for f, _ in violations] == ["userId", "lines[0].sku", "lines[0].quantity", "extra"]


def test_json_nested_too_deep_is_refused_before_it_is_walked() -> None:
    with pytest.raises(BadRequest, match="nested deeper than 64"):
        loads(b"[" * 100 + b"]" * 100)
    with pytest.raises(BadRequest, match="nested deeper"):
        loads(b"[" * 100_000)



# The field mask of a PATCH without one: ours (gateway/protojson.py mask_of) against grpc-gateway's
# runtime.FieldMaskFromRequestBody on the same bodies and descriptors.
MASK_CASES: list[tuple[str, str]] = [
    (PRODUCT, '{"name":"x"}'), (PRODUCT, '{"name":""}'), (PRODUCT, '{}'), (PRODUCT, '{"available":0}'),
    (PRODUCT, '{"price":{"minorUnits":"5"}}'), (PRODUCT, '{"price":{"minor_units":5,"currencyCode":"EUR"}}'),
    (PRODUCT, '{"price":{}}'), (PRODUCT, '{"price":null}'), (PRODUCT, '{"name":null,"state":"ARCHIVED"}'),
    (PRODUCT, '{"name":"a","price":{"currencyCode":"EUR","minorUnits":1},"state":"ARCHIVED","sku":"s"}'),
    (PRODUCT, '{"createTime":"2026-01-01T00:00:00Z","update_time":null}'), (PRODUCT, '{"etag":"v1","sold":"3"}'),
    (ORDER, '{"lines":[{"sku":"a","quantity":1}],"userId":"u"}'), (ORDER, '{"lines":[]}'),
    (READ_ORDER, '{"total":{"currencyCode":"USD"},"lines":[{"sku":"a"}],"status":"CONFIRMED"}'),
]


def test_the_mask_of_a_patch_body_is_the_one_grpc_gateway_derives() -> None:
    from gateway.protojson import mask_of

    binary = tool("protojson-reference", "run scripts/install-tools.sh (it builds tests/reference/protojson with Go)")
    lines = "".join(json.dumps({"type": kind, "body": body, "mask": True}) + "\n" for kind, body in MASK_CASES)
    done = subprocess.run([binary, str(PROTOSET)], input=lines, capture_output=True, text=True, timeout=60, check=True)
    theirs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(theirs) == len(MASK_CASES) and all(answer["ok"] for answer in theirs), theirs
    differ = [f"{kind} {body}: ours {ours}, grpc-gateway {answer.get('paths', [])}"
              for (kind, body), answer in zip(MASK_CASES, theirs, strict=True)
              if (ours := mask_of(loads(body.encode()), TYPES[kind].DESCRIPTOR)) != sorted(answer.get("paths", []))]
    assert not differ, "\n".join(differ)
    assert mask_of(loads(b'{"etag":"v1","name":"x"}'), TYPES[PRODUCT].DESCRIPTOR, skip=frozenset({"etag"})) == ["name"]
