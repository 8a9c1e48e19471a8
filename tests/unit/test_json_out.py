"""The gateway's compiled JSON printer prints exactly what json_format prints, for every message.

Random messages of every type in the contracts, and of a synthetic file with what the contracts
do not use yet (proto3 optional, oneofs, maps, floats, bytes, Duration, a recursive type), go
through both; the fast plans must be used where they can be, and must agree everywhere.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.app import CONTRACTS
from gateway.transcode import _plan, to_dict, to_json
from generated.shop.inventory.v1 import inventory_pb2
from generated.shop.order.v1 import order_pb2

F = descriptor_pb2.FieldDescriptorProto


def _synthetic() -> Any:
    from google.protobuf import duration_pb2, timestamp_pb2  # noqa: F401  (in the pool before the file that imports them)

    file = descriptor_pb2.FileDescriptorProto(name="jsontest.proto", package="jsontest", syntax="proto3",
                                              dependency=["google/protobuf/timestamp.proto",
                                                          "google/protobuf/duration.proto"])
    colour = file.enum_type.add(name="Colour")
    for number, name in enumerate(["COLOUR_UNSPECIFIED", "RED", "GREEN"]):
        colour.value.add(name=name, number=number)
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="label", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="label")
    inner.field.add(name="count_all", number=2, type=F.TYPE_UINT64, label=F.LABEL_OPTIONAL, json_name="countAll")
    plain = file.message_type.add(name="Plain")  # only what the fast path handles
    for number, (name, kind) in enumerate([("text", F.TYPE_STRING), ("small", F.TYPE_SINT32), ("big", F.TYPE_FIXED64),
                                           ("flag", F.TYPE_BOOL), ("u32", F.TYPE_UINT32)], start=1):
        plain.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL, json_name=name)
    plain.field.add(name="colours", number=6, type=F.TYPE_ENUM, type_name=".jsontest.Colour", label=F.LABEL_REPEATED,
                    json_name="colours")
    plain.field.add(name="inner_list", number=7, type=F.TYPE_MESSAGE, type_name=".jsontest.Inner",
                    label=F.LABEL_REPEATED, json_name="innerList")
    plain.field.add(name="maybe", number=8, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL, proto3_optional=True,
                    oneof_index=1, json_name="maybe")
    plain.field.add(name="by_id", number=9, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, oneof_index=0, json_name="byId")
    plain.field.add(name="by_inner", number=10, type=F.TYPE_MESSAGE, type_name=".jsontest.Inner",
                    label=F.LABEL_OPTIONAL, oneof_index=0, json_name="byInner")
    plain.oneof_decl.add(name="key")
    plain.oneof_decl.add(name="_maybe")  # proto3 optional's synthetic oneof comes last
    plain.field.add(name="at", number=11, type=F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp",
                    label=F.LABEL_OPTIONAL, json_name="at")
    plain.field.add(name="tone", number=12, type=F.TYPE_ENUM, type_name=".jsontest.Colour", label=F.LABEL_OPTIONAL,
                    json_name="tone")
    rich = file.message_type.add(name="Rich")  # what goes to json_format whole
    rich.field.add(name="ratio", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL, json_name="ratio")
    rich.field.add(name="blob", number=2, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL, json_name="blob")
    rich.field.add(name="took", number=3, type=F.TYPE_MESSAGE, type_name=".google.protobuf.Duration",
                   label=F.LABEL_OPTIONAL, json_name="took")
    rich.field.add(name="child", number=4, type=F.TYPE_MESSAGE, type_name=".jsontest.Rich", label=F.LABEL_OPTIONAL,
                   json_name="child")
    entry = rich.nested_type.add(name="TagsEntry", options=descriptor_pb2.MessageOptions(map_entry=True))
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="key")
    entry.field.add(name="value", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL, json_name="value")
    rich.field.add(name="tags", number=5, type=F.TYPE_MESSAGE, type_name=".jsontest.Rich.TagsEntry",
                   label=F.LABEL_REPEATED, json_name="tags")
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName("jsontest.proto")
    except KeyError:
        pool.AddSerializedFile(file.SerializeToString())
        return pool.FindFileByName(file.name)


SYNTHETIC = _synthetic()


def _value(field: FieldDescriptor, rng: random.Random, depth: int) -> Any:
    kind = field.type
    if kind == F.TYPE_STRING:
        return rng.choice(["", "a", "Grüße \"quoted\" \\ /", "ünïcødé ✓", "x" * 40])
    if kind == F.TYPE_BYTES:
        return rng.randbytes(rng.randint(0, 8))
    if kind == F.TYPE_BOOL:
        return rng.random() < 0.5
    if kind in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return rng.choice([0, -1, 2**53 + 1, -(2**63), 2**63 - 1, rng.randint(-10**6, 10**6)])
    if kind in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return rng.choice([0, 2**64 - 1, rng.randint(0, 10**9)])
    if kind in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
        return rng.choice([0, -(2**31), 2**31 - 1, rng.randint(-1000, 1000)])
    if kind in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return rng.choice([0, 2**32 - 1, rng.randint(0, 1000)])
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return rng.choice([0.0, -1.5, 1e300, float("inf"), float("nan"), 0.1])
    if kind == F.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return rng.choice([*numbers, max(numbers) + 7])  # an open enum may hold a number it does not name
    raise AssertionError(kind)


def _fill(message: Message, rng: random.Random, depth: int = 0) -> Message:
    descriptor: Descriptor = message.DESCRIPTOR
    if descriptor.full_name == "google.protobuf.Timestamp":
        message.seconds, message.nanos = rng.randint(0, 4102444800), rng.choice([0, 1000, 123456789])  # type: ignore[attr-defined]
        return message
    if descriptor.full_name == "google.protobuf.FieldMask":  # paths that have a JSON form
        message.paths.extend(rng.sample(["name", "price.minor_units", "state", "a.b_c"], rng.randint(0, 3)))  # type: ignore[attr-defined]
        return message
    if descriptor.full_name == "google.protobuf.Duration":
        message.seconds, message.nanos = rng.randint(0, 10**6), rng.choice([0, 500000000])  # type: ignore[attr-defined]
        return message
    for field in descriptor.fields:
        if rng.random() < 0.25:
            continue  # left at its default, or unset where it has presence
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(message, field.name)
            for _ in range(rng.randint(0, 3)):
                target[_value(field.message_type.fields_by_name["key"], rng, depth)] = _value(
                    field.message_type.fields_by_name["value"], rng, depth)
        elif field.is_repeated:
            target = getattr(message, field.name)
            for _ in range(rng.randint(0, 3)):
                if field.type == F.TYPE_MESSAGE:
                    _fill(target.add(), rng, depth + 1)
                else:
                    target.append(_value(field, rng, depth))
        elif field.type == F.TYPE_MESSAGE:
            if depth < 3:
                _fill(getattr(message, field.name), rng, depth + 1)
                if not getattr(message, field.name).ListFields():
                    getattr(message, field.name).SetInParent()
        else:
            setattr(message, field.name, _value(field, rng, depth))
    return message


def _messages(files: Any) -> list[Descriptor]:
    found = []

    def walk(descriptor: Descriptor) -> None:
        if not descriptor.GetOptions().map_entry:
            found.append(descriptor)
        for nested in descriptor.nested_types:
            walk(nested)

    for file in files:
        for descriptor in file.message_types_by_name.values():
            walk(descriptor)
    return found


CASES = _messages([*CONTRACTS, SYNTHETIC])


@pytest.mark.parametrize("descriptor", CASES, ids=[d.full_name for d in CASES])
def test_every_message_prints_as_json_format_prints_it(descriptor: Descriptor) -> None:
    message_class = message_factory.GetMessageClass(descriptor)
    rng = random.Random(descriptor.full_name)
    for _ in range(60):
        message = _fill(message_class(), rng)
        expected = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        assert to_dict(message) == expected
        # NaN is the one value not equal to itself; compare the text for it
        assert json.loads(to_json(message)) == json.loads(json.dumps(expected)) or "NaN" in json.dumps(expected)
    assert to_dict(message_class()) == json_format.MessageToDict(message_class(), always_print_fields_with_no_presence=True)


def test_the_fast_plans_are_used_where_they_can_be() -> None:
    for cls in (inventory_pb2.Product, order_pb2.Order, SYNTHETIC.message_types_by_name["Plain"]):
        descriptor = cls if isinstance(cls, Descriptor) else cls.DESCRIPTOR
        assert _plan(descriptor) is not None, descriptor.full_name
    assert _plan(SYNTHETIC.message_types_by_name["Rich"]) is None  # maps, doubles, bytes, Duration, recursion


def test_an_unnamed_enum_number_prints_as_the_number() -> None:
    order = order_pb2.Order(order_id="o-1", status=42)  # type: ignore[arg-type]
    assert to_dict(order)["status"] == 42 == json_format.MessageToDict(order)["status"]
