"""Request messages read strictly from JSON and from URL text, as the proto3 JSON mapping says.

`json_format.ParseDict` reads a Python dict, so by the time it runs a duplicate key has already
replaced its twin (`"requestId":"r2","request_id":"r3"` silently changes the idempotency key),
and it takes what Python's `int()` takes (`"1_0"`, `" 1"`, `"+1"`, Arabic-Indic digits), reads
`[]` as an empty message, and explains itself in Python's words. This reader walks the JSON text's
own object pairs against the message descriptor instead and writes straight into the message:

- every key is a field (its proto name or its JSON name), given once, also across the two
  spellings; at most one member of a oneof;
- every value has the field's JSON shape: an object for a message, an array for a repeated
  field, `true`/`false` for a bool, a string for a string;
- integers are JSON numbers with an integral value, or strings holding such a number as JSON
  writes it (what Go's protojson, behind grpc-gateway, accepts), within the field's range;
- every problem is a `(path, description)` pair, the path spelled as the client spelled it
  (`lines[0].quantity`), all of them reported at once.

`null` is the field's default, as the mapping says. Well-known types other than Timestamp and
Duration (Struct, Any, wrappers, ...) are handed to json_format whole, their errors reworded.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

MAX_JSON_DEPTH = 64

Violation = tuple[str, str]


class BadRequest(ValueError):
    """The HTTP request cannot become the RPC's request message: each violation names a field."""

    def __init__(self, violations: list[Violation] | str):
        if isinstance(violations, str):
            violations = [("", violations)]
        self.violations = violations
        super().__init__("; ".join(f"{field}: {problem}" if field else problem for field, problem in violations))


class _Object(list):  # type: ignore[type-arg]
    """One JSON object as the pairs the text had, duplicates and order kept."""

    __slots__ = ()


# A JSON number as JSON writes it (RFC 8259 section 6): no sign, spaces or leading zeros of Python's.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)
_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1, "a 32-bit integer"),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1, "an unsigned 32-bit integer"),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1, "a 64-bit integer"),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1, "an unsigned 64-bit integer"),
}
_FLOAT_MAX = 3.4028234663852886e38
_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# Well-known messages written as one string, so also settable from a URL (`?updateMask=name,price`).
_TIME_TYPES = ("google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask")
_TIME_EXAMPLES = {"google.protobuf.Timestamp": "an RFC 3339 time such as 2026-01-31T12:00:00Z",
                  "google.protobuf.Duration": "a duration such as 1.5s",
                  "google.protobuf.FieldMask": "field paths separated by commas, such as name,price.minorUnits"}


class _Bad(Exception):
    """One value is wrong; the description says how."""


def _constant(name: str) -> Any:
    raise _Bad(f"{name} is not JSON")


def loads(body: bytes, where: str = "request body") -> Any:
    """The JSON text as values, each object an `_Object` of its pairs; BadRequest if it is not JSON."""
    try:
        value = json.loads(body, object_pairs_hook=_Object, parse_constant=_constant)
    except RecursionError:
        raise BadRequest([(where, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")]) from None
    except _Bad as error:
        raise BadRequest([(where, f"malformed JSON: {error}")]) from None
    except UnicodeDecodeError:
        raise BadRequest([(where, "malformed JSON: not UTF-8 text")]) from None
    except json.JSONDecodeError as error:
        raise BadRequest([(where, f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}")]) from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise BadRequest([(where, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")])
    return value


def _depth(value: Any) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        if isinstance(item, _Object):
            stack.extend((v, level + 1) for _, v in item)
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _plain(value: Any) -> Any:
    """An `_Object` tree as plain dicts and lists (for json_format's well-known types)."""
    if isinstance(value, _Object):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


_NAMES: dict[str, dict[str, FieldDescriptor]] = {}


def fields_of(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields by every name a client may use: the proto name and the JSON name."""
    names = _NAMES.get(descriptor.full_name)
    if names is None:
        names = {}
        for field in descriptor.fields:
            names[field.name] = field
            names[field.json_name] = field
        _NAMES[descriptor.full_name] = names
    return names


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, _Object):
        return "an object"
    return "an array"


def _integer(field: FieldDescriptor, value: Any, text: bool) -> int:
    low, high, name = _INT_RANGES[field.cpp_type]
    number: Any
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Bad(f"must be an integer, not {_kind(value)}")
    if isinstance(value, str):
        if not _JSON_NUMBER.fullmatch(value):
            raise _Bad(f"must be an integer such as 12 or -3 (digits 0-9 only), not {value!r}")
        number = float(value) if any(c in value for c in ".eE") else int(value)
    else:
        number = value
    if isinstance(number, float):
        if not math.isfinite(number) or not number.is_integer():
            raise _Bad(f"must be an integer, not {value!r}")
        number = int(number)
    if not low <= number <= high:
        raise _Bad(f"must fit {name} ({low} to {high})")
    return int(number)


def _float(field: FieldDescriptor, value: Any) -> float:
    if isinstance(value, str):
        if value in _FLOAT_WORDS:
            return _FLOAT_WORDS[value]
        if not _JSON_NUMBER.fullmatch(value):
            raise _Bad(f"must be a number, not {value!r}")
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"must be a number, not {_kind(value)}")
    number = float(value)
    if field.cpp_type == FieldDescriptor.CPPTYPE_FLOAT and math.isfinite(number) and abs(number) > _FLOAT_MAX:
        raise _Bad("must fit a 32-bit float")
    return number


def _enum(field: FieldDescriptor, value: Any, text: bool) -> int:
    values = field.enum_type.values_by_name
    if isinstance(value, str):
        found = values.get(value)
        if found is None:
            if text and re.fullmatch(r"-?(?:0|[1-9][0-9]*)", value, re.ASCII):  # URL text: a number is as good
                return _enum(field, int(value), text)
            raise _Bad(f"must be one of {', '.join(values)}, not {value!r}")
        return int(found.number)
    if isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31:
        return value  # an open enum keeps numbers it does not know, as proto3 does
    raise _Bad(f"must be one of {', '.join(values)}, not {_kind(value)}")


def _scalar(field: FieldDescriptor, value: Any, text: bool = False) -> Any:
    """The field's value from one JSON value (or, with `text`, from URL text); _Bad if it is wrong."""
    cpp = field.cpp_type
    if cpp in _INT_RANGES:
        return _integer(field, value, text)
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        return _enum(field, value, text)
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        if text and isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, bool):
            return value
        raise _Bad("must be true or false" + (f", not {value!r}" if text else f", not {_kind(value)}"))
    if cpp in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return _float(field, value)
    if not isinstance(value, str):
        raise _Bad(f"must be a string, not {_kind(value)}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _Bad("must be Unicode text (it holds a lone surrogate escape)") from None
    if field.type == FieldDescriptor.TYPE_BYTES:
        try:
            return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_" if "-" in value or "_" in value else None,
                                    validate=True)
        except ValueError:
            raise _Bad("must be base64") from None
    return value


def _well_known(field: FieldDescriptor, target: Message, value: Any) -> None:
    """Timestamp and Duration from their strings; other well-known types through json_format."""
    kind = field.message_type.full_name
    if kind in _TIME_TYPES:
        if not isinstance(value, str):
            raise _Bad(f"must be {_TIME_EXAMPLES[kind]}, not {_kind(value)}")
        if kind == "google.protobuf.FieldMask":
            target.paths.extend(_mask_paths(value))  # type: ignore[attr-defined]
            return
        try:
            target.FromJsonString(value)  # type: ignore[attr-defined]
        except ValueError:
            raise _Bad(f"must be {_TIME_EXAMPLES[kind]}, not {value!r}") from None
        return
    try:
        json_format.ParseDict(_plain(value), target, max_recursion_depth=MAX_JSON_DEPTH)
    except json_format.ParseError:
        raise _Bad(f"must be a {kind} in its JSON form") from None


def _mask_paths(text: str) -> list[str]:
    """A FieldMask's paths from its JSON form (`name,price.minorUnits`), or, as grpc-gateway's query
    parameters are written, in proto names (`price.minor_units`): each becomes the proto path."""
    paths = []
    for path in text.split(","):
        path = path.strip()
        if not path:
            continue
        if not re.fullmatch(r"[A-Za-z_*][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", path):
            raise _Bad(f"{path!r} is not a field path (names separated by dots)")
        paths.append(path if "_" in path else re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), path))
    return paths


def mask_of(value: Any, descriptor: Descriptor, *, skip: frozenset[str] = frozenset()) -> list[str]:
    """The field mask a JSON object implies: the proto path of every field present in it, as
    grpc-gateway's runtime.FieldMaskFromRequestBody derives it for a PATCH without one (into
    nested objects; a repeated field, a map, a scalar, null or `{}` ends a path). `skip`: top-level
    fields that are not data (AIP-154's etag, the precondition). Sorted, as grpc-gateway sorts."""
    paths: list[str] = []
    queue: list[tuple[Any, Descriptor | None, str]] = [(value, descriptor, "")]
    while queue:
        node, message, path = queue.pop(0)
        if isinstance(node, _Object) and node and message is not None:
            for key, item in node:
                field = fields_of(message).get(key)
                if field is None or (not path and field.name in skip):
                    continue
                child = f"{path}.{field.name}" if path else field.name
                if field.is_repeated:  # a map is repeated too: whole, never into its entries
                    paths.append(child)
                elif field.message_type is not None and not field.message_type.full_name.startswith("google.protobuf."):
                    queue.append((item, field.message_type, child))
                else:
                    queue.append((item, None, child))
        elif path:
            paths.append(path)
    return sorted(set(paths))


class Reader:
    """Fills one request message; collects every problem before raising them together."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []

    def done(self) -> None:
        if self.violations:
            raise BadRequest(self.violations)

    # --- JSON bodies ---

    def message(self, target: Message, value: Any, path: str) -> None:
        if not isinstance(value, _Object):
            self.violations.append((path or "request body", f"must be a JSON object, not {_kind(value)}"))
            return
        descriptor = target.DESCRIPTOR
        names = fields_of(descriptor)
        seen: dict[int, str] = {}
        oneofs: dict[str, str] = {}
        for key, item in value:
            where = _join(path, key)
            field = names.get(key)
            if field is None:
                self.violations.append((where, f"unknown field; {descriptor.name} has {_listed(descriptor)}"))
                continue
            if field.number in seen:
                twin = seen[field.number]
                self.violations.append((where, "is given more than once" if twin == key
                                        else f"is given twice, as {twin} and as {key}"))
                continue
            seen[field.number] = key
            oneof = field.containing_oneof
            if oneof is not None and item is not None and not _synthetic(oneof):
                if oneof.name in oneofs:
                    self.violations.append((where, f"only one of the {oneof.name} fields may be set; "
                                                   f"{oneofs[oneof.name]} is set too"))
                    continue
                oneofs[oneof.name] = key
            self.field(target, field, item, where)

    def field(self, target: Message, field: FieldDescriptor, value: Any, where: str) -> None:
        if value is None and not (field.message_type is not None and field.message_type.full_name == "google.protobuf.Value"):
            return  # null is the default
        try:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                self._map(target, field, value, where)
            elif field.is_repeated:
                self._repeated(target, field, value, where)
            elif field.message_type is not None:
                sub = getattr(target, field.name)
                if field.message_type.full_name.startswith("google.protobuf."):
                    _well_known(field, sub, value)
                else:
                    sub.SetInParent()
                    self.message(sub, value, where)
            else:
                setattr(target, field.name, _scalar(field, value))
        except _Bad as bad:
            self.violations.append((where, str(bad)))

    def _repeated(self, target: Message, field: FieldDescriptor, value: Any, where: str) -> None:
        if not isinstance(value, list) or isinstance(value, _Object):
            raise _Bad(f"must be an array, not {_kind(value)}")
        items = getattr(target, field.name)
        for i, item in enumerate(value):
            at = f"{where}[{i}]"
            if item is None:
                self.violations.append((at, "must not be null"))
            elif field.message_type is not None:
                sub = items.add()
                if field.message_type.full_name.startswith("google.protobuf."):
                    try:
                        _well_known(field, sub, item)
                    except _Bad as bad:
                        self.violations.append((at, str(bad)))
                else:
                    self.message(sub, item, at)
            else:
                try:
                    items.append(_scalar(field, item))
                except _Bad as bad:
                    self.violations.append((at, str(bad)))

    def _map(self, target: Message, field: FieldDescriptor, value: Any, where: str) -> None:
        if not isinstance(value, _Object):
            raise _Bad(f"must be an object, not {_kind(value)}")
        key_field, value_field = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        entries = getattr(target, field.name)
        seen = set()
        for key, item in value:
            at = f"{where}[{json.dumps(key)}]"
            try:
                map_key = _scalar(key_field, key, text=True)
                if map_key in seen:
                    raise _Bad("is given more than once")
                seen.add(map_key)
                if item is None:
                    raise _Bad("must not be null")
                if value_field.message_type is not None:
                    self.message(entries[map_key], item, at)
                else:
                    entries[map_key] = _scalar(value_field, item)
            except _Bad as bad:
                self.violations.append((at, str(bad)))

    # --- URL text: path variables and query parameters ---

    def text(self, target: Message, dotted: str, raw: list[str], *, as_said: str | None = None) -> None:
        """`a.b=1` (repeated: `x=1&x=2`) into the message; `as_said` names it in a violation."""
        where = as_said or dotted
        names = dotted.split(".")
        for name in names[:-1]:
            field = fields_of(target.DESCRIPTOR).get(name)
            if field is None:
                self.violations.append((where, f"unknown field; {target.DESCRIPTOR.name} has {_listed(target.DESCRIPTOR)}"))
                return
            if field.message_type is None or field.is_repeated or field.message_type.full_name.startswith("google.protobuf."):
                self.violations.append((where, f"{name} is not a message whose fields can be set one by one"))
                return
            target = getattr(target, field.name)
        field = fields_of(target.DESCRIPTOR).get(names[-1])
        if field is None:
            self.violations.append((where, f"unknown field; {target.DESCRIPTOR.name} has {_listed(target.DESCRIPTOR)}"))
            return
        try:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                raise _Bad("a map cannot be set from the URL")
            if field.message_type is not None and field.message_type.full_name not in _TIME_TYPES:
                raise _Bad("a message cannot be set from a single value")
            if not field.is_repeated and len(raw) > 1:
                raise _Bad(f"takes one value, got {len(raw)}")
            if field.message_type is not None:
                if field.is_repeated:
                    for value in raw:
                        _well_known(field, getattr(target, field.name).add(), value)
                else:
                    _well_known(field, getattr(target, field.name), raw[0])
            elif field.is_repeated:
                getattr(target, field.name).extend(_scalar(field, value, text=True) for value in raw)
            else:
                setattr(target, field.name, _scalar(field, raw[0], text=True))
        except _Bad as bad:
            self.violations.append((where, str(bad)))


def _synthetic(oneof: Any) -> bool:
    """A proto3 `optional` field's own oneof, which is no choice at all."""
    return len(oneof.fields) == 1 and oneof.name.startswith("_")


def _listed(descriptor: Descriptor) -> str:
    names = [field.json_name for field in descriptor.fields]
    return ", ".join(names) if names else "no fields"


def resolve(descriptor: Descriptor, dotted: str) -> FieldDescriptor | None:
    """The field a dotted URL name (`product.sku`, `page_size`) names, or None."""
    field = None
    for name in dotted.split("."):
        if descriptor is None:
            return None
        field = fields_of(descriptor).get(name)
        if field is None:
            return None
        descriptor = field.message_type
    return field
