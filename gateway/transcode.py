"""HTTP request -> request message, response message -> JSON, as the proto3 JSON mapping says.

Path variables, then the body (`*` or one field), then query parameters for
every other field (`a.b=1`, repeated `x=1&x=2`), as grpc-gateway does. Both
lowerCamelCase and proto field names are accepted; anything unknown or of the
wrong type is a `BadRequest` naming it.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

MAX_JSON_DEPTH = 64


class BadRequest(ValueError):
    """The HTTP request cannot become the RPC's request message; the message says why."""


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor:
    found = descriptor.fields_by_name.get(name) or descriptor.fields_by_camelcase_name.get(name)
    if found is None:
        raise BadRequest(f"{descriptor.full_name} has no field {name!r}")
    return found


def _scalar(field: FieldDescriptor, raw: str, where: str) -> Any:
    """A query or path string as the JSON value the field's type takes."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise BadRequest(f"{where}: {raw!r} is not a boolean")
        return raw.lower() in ("true", "1")
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
            return raw
        raise BadRequest(f"{where}: a message field cannot be set from a single value")
    return raw  # numbers, enums (by name or number) and strings: json_format parses strings for all of them


def _set_path(target: dict[str, Any], descriptor: Descriptor, dotted: str, raw: list[str], where: str) -> None:
    names = dotted.split(".")
    for name in names[:-1]:
        field = _field(descriptor, name)
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.is_repeated:
            raise BadRequest(f"{where}: {name!r} is not a message field")
        target = target.setdefault(field.name, {})
        if not isinstance(target, dict):
            raise BadRequest(f"{where}: {name!r} is set twice")
        descriptor = field.message_type
    field = _field(descriptor, names[-1])
    if field.is_repeated:
        target[field.name] = [_scalar(field, value, where) for value in raw]
    else:
        if len(raw) > 1:
            raise BadRequest(f"{where}: {names[-1]!r} takes one value, got {len(raw)}")
        target[field.name] = _scalar(field, raw[0], where)


def _depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def parse_json(body: bytes) -> Any:
    try:
        value = json.loads(body)
    except RecursionError:
        raise BadRequest(f"request body: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"request body: malformed JSON: {error}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise BadRequest(f"request body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def build_request(
    message_class: type[Message],
    *,
    body_field: str,
    body: bytes,
    path: dict[str, str],
    query: dict[str, list[str]],
) -> Message:
    descriptor = message_class.DESCRIPTOR
    values: dict[str, Any] = {}
    if body_field:
        parsed = parse_json(body) if body.strip() else {}
        if body_field == "*":
            if not isinstance(parsed, dict):
                raise BadRequest("request body: must be a JSON object")
            values = parsed
        else:
            values[_field(descriptor, body_field).name] = parsed
    elif body.strip():
        raise BadRequest("this method takes no request body")
    for name, value in path.items():
        _set_path(values, descriptor, name, [value], f"path variable {name}")
    if query and body_field == "*":
        raise BadRequest(f"query parameter {next(iter(query))!r}: this method takes its fields from the body")
    for name, raw in query.items():
        if name in path:
            continue
        _set_path(values, descriptor, name, raw, f"query parameter {name!r}")
    message = message_class()
    try:
        json_format.ParseDict(values, message, ignore_unknown_fields=False, max_recursion_depth=MAX_JSON_DEPTH)
    except json_format.ParseError as error:
        raise BadRequest(str(error)) from None
    return message


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
