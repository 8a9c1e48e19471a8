"""HTTP request -> request message, response message -> JSON, as the proto3 JSON mapping says.

A request is bound as `google.api.HttpRule` says: path variables, then the body (`*`, or one
field of the request), and query parameters only for fields bound by neither (`a.b=1`, repeated
`x=1&x=2`). A query parameter naming a field the path or the body binds is refused, never
allowed to override it, and so is a body value that contradicts the path. Values are read
strictly (`gateway/protojson.py`); every problem is a `BadRequest` violation naming the field as
the client spelled it.

A PATCH whose request has an `update_mask` (AIP-134) and takes one field as its body gets, when
the client sent no mask, the mask of the fields present in the JSON body, as grpc-gateway's patch
feature derives it: `{"name": ""}` updates the name to "" (which the service then refuses), and a
field left out is left alone. The resource's `etag` is the update's precondition, not a field to
change, so it is not put in the mask.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.protojson import BadRequest, Reader, fields_of, loads, mask_of

__all__ = ["BadRequest", "build_request", "dumps", "etag_holder", "to_dict", "to_json"]


def _proto_path(descriptor: Descriptor, dotted: str) -> str | None:
    """`product.sku` / `pageSize` as the proto field path (`product.sku`, `page_size`), None if unknown."""
    names = []
    for name in dotted.split("."):
        field = fields_of(descriptor).get(name) if descriptor is not None else None
        if field is None:
            return None
        names.append(field.name)
        descriptor = field.message_type
    return ".".join(names)


def _current(message: Message, proto_path: str) -> Any:
    for name in proto_path.split("."):
        message = getattr(message, name)
    return message


def build_request(
    message_class: type[Message],
    *,
    body_field: str,
    body: bytes,
    path: dict[str, str],
    query: dict[str, list[str]],
    patch: bool = False,
) -> Message:
    descriptor = message_class.DESCRIPTOR
    message = message_class()
    reader = Reader()
    parsed: Any = None
    if body_field:
        if body.strip():
            parsed = loads(body)
            if body_field == "*":
                reader.message(message, parsed, "")
            else:
                field = descriptor.fields_by_name[body_field]
                reader.field(message, field, parsed, field.json_name)
    elif body.strip():
        raise BadRequest([("request body", "this method takes no request body; send its fields in the query")])
    for name, value in path.items():
        said = _json_names(descriptor, name)
        if body_field == "*" or name.startswith(f"{body_field}."):
            given = _current(message, name)
            if given not in ("", 0) and str(given) != value:
                reader.violations.append((said, f"is {given!r} in the body but {value!r} in the path; "
                                                "leave it out of the body"))
                continue
        reader.text(message, name, [value], as_said=said)
    for name, raw in query.items():
        if body_field == "*":
            reader.violations.append((name, "cannot be a query parameter: this method takes its fields from the body"))
            continue
        proto = _proto_path(descriptor, name)
        if proto is not None and body_field and proto.split(".")[0] == body_field:
            reader.violations.append((name, f"cannot be a query parameter: it is part of the request body "
                                            f"({descriptor.fields_by_name[body_field].json_name})"))
        elif proto is not None and any(proto == bound or proto.startswith(bound + ".") for bound in path):
            reader.violations.append((name, "cannot be a query parameter: the URL path sets it"))
        else:
            reader.text(message, name, raw)
    reader.done()
    if patch and body_field not in ("", "*") and parsed is not None and _derives_mask(descriptor):
        mask = message.update_mask  # type: ignore[attr-defined]
        if not mask.paths:
            mask.paths.extend(mask_of(parsed, descriptor.fields_by_name[body_field].message_type,
                                      skip=frozenset({"etag"})))
    return message


def etag_holder(request: Descriptor, body: str, http_method: str) -> str | None:
    """Where a PATCH's, PUT's or DELETE's If-Match goes: "" for the request's own `etag`, the body
    field's name when the body is a resource with one (UpdateProduct's `product`), None when the RPC
    has no etag to compare (or creates: a POST's resource has no etag yet)."""
    if http_method not in ("PATCH", "PUT", "DELETE"):
        return None
    if "etag" in request.fields_by_name:
        return ""
    field = request.fields_by_name.get(body) if body not in ("", "*") else None
    if field is not None and field.message_type is not None and "etag" in field.message_type.fields_by_name:
        return field.name
    return None


def _derives_mask(descriptor: Descriptor) -> bool:
    field = descriptor.fields_by_name.get("update_mask")
    return field is not None and field.message_type is not None and \
        field.message_type.full_name == "google.protobuf.FieldMask"


_SAID: dict[tuple[str, str], str] = {}


def _json_names(descriptor: Descriptor, proto_path: str) -> str:
    """`book.page_count` as a JSON client spells it (`book.pageCount`), worked out once."""
    said = _SAID.get((descriptor.full_name, proto_path))
    if said is None:
        names, message = [], descriptor
        for name in proto_path.split("."):
            field: FieldDescriptor = message.fields_by_name[name]
            names.append(field.json_name)
            message = field.message_type
        said = _SAID[(descriptor.full_name, proto_path)] = ".".join(names)
    return said


# --- response message -> JSON --------------------------------------------------------------
#
# json_format walks every message through generic, reflective code (~50 µs for a Product, a
# tenth of the gateway's CPU per request). A plan compiled once per message type does the same
# walk with the decisions taken ahead: which fields print always, which only when set, and how
# each value converts. Types it does not handle (maps, floats, bytes, well-known types other
# than Timestamp) go to json_format whole. tests/unit/test_json_out.py holds the two equal.

_Plan = tuple[tuple[str, str, bool, bool, Any], ...]  # (json name, attribute, has presence, repeated, convert)
_PLANS: dict[str, _Plan | None] = {}
_REFERENCE = json_format._Printer(always_print_fields_with_no_presence=True)  # noqa: SLF001  for enum names
_INT64 = {FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64}
_PLAIN = {FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32, FieldDescriptor.CPPTYPE_BOOL}


def _timestamp(value: Any) -> str:
    return value.ToJsonString()  # type: ignore[no-any-return]


def _enum(field: FieldDescriptor) -> Any:
    names = {number: _REFERENCE._FieldToJsonObject(field, number) for number in field.enum_type.values_by_number}  # noqa: SLF001
    return lambda value: names.get(value, value)  # an unknown number prints as the number, as json_format does


def _plan(descriptor: Descriptor) -> _Plan | None:
    """How to print one message type, or None where json_format must do it."""
    if descriptor.full_name in _PLANS:
        return _PLANS[descriptor.full_name]
    _PLANS[descriptor.full_name] = None  # a recursive type is left to json_format
    steps = []
    for field in descriptor.fields:
        if field.is_extension or (field.message_type is not None and field.message_type.GetOptions().map_entry):
            return None
        cpp = field.cpp_type
        convert: Any
        if cpp == FieldDescriptor.CPPTYPE_MESSAGE:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                convert = _timestamp
            elif field.message_type.full_name.startswith("google.protobuf."):
                return None
            else:
                nested = _plan(field.message_type)
                if nested is None:
                    return None
                convert = (lambda plan: lambda value: _print(value, plan))(nested)
        elif cpp == FieldDescriptor.CPPTYPE_STRING and field.type == FieldDescriptor.TYPE_STRING:
            convert = None
        elif cpp in _INT64:
            convert = str
        elif cpp in _PLAIN:
            convert = None
        elif cpp == FieldDescriptor.CPPTYPE_ENUM and field.enum_type.full_name != "google.protobuf.NullValue":
            convert = _enum(field)
        else:  # floats, doubles, bytes
            return None
        steps.append((field.json_name, field.name, field.has_presence, field.is_repeated, convert))
    plan = _PLANS[descriptor.full_name] = tuple(steps)
    return plan


def _print(message: Message, plan: _Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, attribute, presence, repeated, convert in plan:
        if presence and not message.HasField(attribute):
            continue
        value = getattr(message, attribute)
        if repeated:
            out[name] = [convert(item) for item in value] if convert is not None else list(value)
        else:
            out[name] = convert(value) if convert is not None else value
    return out


def to_dict(message: Message) -> dict[str, Any]:
    """The message as the proto3 JSON mapping's object, every field without presence included."""
    plan = _PLANS.get(message.DESCRIPTOR.full_name) or _plan(message.DESCRIPTOR)
    if plan is None:
        return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return _print(message, plan)


def dumps(value: Any) -> bytes:
    """Every JSON body the gateway writes: compact UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def to_json(message: Message) -> bytes:
    return dumps(to_dict(message))
