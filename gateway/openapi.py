"""An OpenAPI 3 document generated from the same descriptors the routes come from.

Schemas follow the proto3 JSON mapping the gateway speaks: lowerCamelCase
properties, 64-bit integers as decimal strings, enums by name, Timestamps as
RFC 3339 strings; every operation documents its error body (google.rpc.Status).
The contracts' field rules (protovalidate's `buf.validate`) become JSON Schema
constraints (`required`, lengths, patterns, item counts, bounds), so the
document states what the services will accept.
"""

from __future__ import annotations

import re
from typing import Any

import protovalidate
from google.api import field_behavior_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.auth import Authenticator, Need
from gateway.endpoints import Doc, Table
from gateway.ranges import integer_pattern
from gateway.routes import Route
from gateway.transcode import etag_holder
from generated.buf.validate import validate_pb2

# 64-bit integers are JSON strings: their range is a pattern, exactly what the gateway reads.
INT64_RANGE, UINT64_RANGE = (-(2**63), 2**63 - 1), (0, 2**64 - 1)
_INT64 = {"type": "string", "format": "int64", "pattern": integer_pattern(*INT64_RANGE)}
_UINT64 = {"type": "string", "format": "uint64", "pattern": integer_pattern(*UINT64_RANGE)}
# A required string must hold something besides white space (mesh/kernel/validate.py says "must not be
# blank"): at least one character outside Python's str.isspace() set, spelled so that JSON
# Schema's ECMA-262 regular expressions read it alike.
NOT_BLANK = "[^\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
_T = FieldDescriptor
SCALARS: dict[int, dict[str, Any]] = {
    _T.TYPE_STRING: {"type": "string"},
    _T.TYPE_BOOL: {"type": "boolean"},
    _T.TYPE_BYTES: {"type": "string", "format": "byte"},
    _T.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _T.TYPE_FLOAT: {"type": "number", "format": "float"},
    _T.TYPE_INT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _T.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    _T.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0},
    _T.TYPE_INT64: _INT64,
    _T.TYPE_SINT64: _INT64,
    _T.TYPE_SFIXED64: _INT64,
    _T.TYPE_UINT64: _UINT64,
    _T.TYPE_FIXED64: _UINT64,
}
WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}, "additionalProperties": True},
    "google.protobuf.FieldMask": {"type": "string", "description": "field paths separated by commas (name,price)"},
}
STATUS_SCHEMA = {
    "type": "object",
    "description": "google.rpc.Status: the gRPC status code, a message naming the problem, and details.",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"$ref": "#/components/schemas/google.protobuf.Any"}},
    },
    "required": ["code", "message", "details"],
}


# Rules the services keep that JSON Schema cannot state, said in words on the fields they bind
# (tests/e2e/schemathesis_hooks.py teaches schemathesis the same words).
IN_WORDS = {
    "page_token": "opaque: the nextPageToken of a previous response of this RPC, or empty for the first page; "
                  "any other value is refused (400)",
    "lines": "each SKU at most once: a second line for the same SKU is refused (400)",
    "update_mask": "the fields to change, each given in the body: name, price (or price.currencyCode, "
                   "price.minorUnits) and state; available changes only through adjustStock (400 otherwise)",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _rules(field: FieldDescriptor) -> Any:
    options = field.GetOptions()
    return options.Extensions[validate_pb2.field] if options.HasExtension(validate_pb2.field) else None


_BOUNDS = {"gte": "minimum", "lte": "maximum"}


def _absent_breaks_rules(descriptor: Descriptor) -> set[str]:
    """Fields a JSON body must carry: those whose absence (the zero value) breaks a rule of the
    contract, asked of protovalidate itself (required, a minimum length or count, a quantity >= 1)."""
    empty = message_factory.GetMessageClass(descriptor)()
    return {v.proto.field.elements[0].field_name for v in protovalidate.collect_violations(empty)}


def _constrain(schema: dict[str, Any], field: FieldDescriptor) -> dict[str, Any]:
    """The field's protovalidate rules as JSON Schema keywords on `schema`."""
    rules = _rules(field)
    if rules is None:
        return schema
    kind = rules.WhichOneof("type")
    if kind == "repeated":
        schema = {**schema, **{key: getattr(rules.repeated, name) for name, key in
                               (("min_items", "minItems"), ("max_items", "maxItems")) if rules.repeated.HasField(name)}}
    elif kind == "string":
        string = rules.string
        schema = {**schema, **{key: getattr(string, name) for name, key in
                               (("min_len", "minLength"), ("max_len", "maxLength"), ("pattern", "pattern"))
                               if string.HasField(name)}}
    elif kind in ("int32", "int64"):
        numbers = getattr(rules, kind)
        bounds = {key: getattr(numbers, name) for name, key in _BOUNDS.items() if numbers.HasField(name)}
        if kind == "int32":
            schema = {**schema, **bounds}
        elif bounds:  # a JSON string, by the proto3 mapping: the range is its pattern, and in words
            low = bounds.get("minimum", INT64_RANGE[0])
            high = bounds.get("maximum", INT64_RANGE[1])
            schema = {**schema, "pattern": integer_pattern(low, high), "description": " and ".join(
                f"{'at least' if key == 'minimum' else 'at most'} {value}" for key, value in bounds.items())}
        if list(numbers.not_in):
            schema = {**schema, "not": {"enum": [str(v) if kind == "int64" else v for v in numbers.not_in]}}
    if rules.required and field.type == _T.TYPE_STRING:
        if "minLength" not in schema:
            schema = {**schema, "minLength": 1}
        if "pattern" not in schema:
            schema = {**schema, "pattern": NOT_BLANK, "x-not-blank": True}  # the extension: for readers (/docs)
    return schema


class _Builder:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {
            "google.rpc.Status": STATUS_SCHEMA,
            "google.protobuf.Any": WELL_KNOWN["google.protobuf.Any"],
        }

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        single = self.single(field)
        if field.is_repeated:
            schema = _constrain({"type": "array", "items": single}, field)
        else:
            schema = single if "$ref" in single else _constrain(single, field)
        words = IN_WORDS.get(field.name)
        if words and (field.name != "lines" or (field.message_type and "sku" in field.message_type.fields_by_name)):
            schema = {**schema, "description": words}
        return schema

    def single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type == _T.TYPE_ENUM:
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        if field.type == _T.TYPE_MESSAGE:
            name = field.message_type.full_name
            if name in WELL_KNOWN:
                return dict(WELL_KNOWN[name])
            self.message(field.message_type)
            return _ref(name)
        return dict(SCALARS[field.type])

    def message(self, descriptor: Descriptor, *, skip: frozenset[str] = frozenset(),
                filled: frozenset[str] = frozenset(), partial: bool = False) -> str:
        """The schema of a message; `skip`: fields taken from the path, `filled`: required
        fields the gateway may fill itself (from a header or the token), so optional here;
        `partial`: a PATCH's body, where every field is optional (those present are updated)."""
        name = descriptor.full_name + ("Patch" if partial else "Body" if skip else "")
        if name in self.schemas:
            return name
        self.schemas[name] = {}  # placeholder: messages may refer to themselves
        properties, required, must = {}, [], _absent_breaks_rules(descriptor)
        for field in descriptor.fields:
            if field.name in skip:
                continue
            schema = self.field(field)
            behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                schema = {**schema, "readOnly": True} if "$ref" not in schema else {"allOf": [schema], "readOnly": True}
            if partial and field.enum_type is not None:  # present means "set to this": the zero value is no state
                zero = field.enum_type.values_by_number[0].name
                schema = {**schema, "enum": [name for name in schema["enum"] if name != zero]}
            if field.name in must and field.name not in filled and not partial:
                required.append(field.json_name)
            elif field.name in must and partial:
                pass  # may be left out, but present (null too) it is set, and must then keep its rules
            else:  # the proto3 JSON mapping reads null as the field's default
                schema = {**schema, "nullable": True} if "$ref" not in schema else {"allOf": [schema], "nullable": True}
            properties[field.json_name] = schema
        self.schemas[name] = {"type": "object", "properties": properties, "additionalProperties": False,
                              **({"required": required} if required else {})}
        return name


def _query_parameters(builder: _Builder, route: Route) -> list[dict[str, Any]]:
    params = []
    for field in route.method.input_type.fields:
        if field.name in route.path_fields or (field.type == _T.TYPE_MESSAGE and field.message_type.full_name not in WELL_KNOWN):
            continue
        schema = builder.field(field)
        params.append({"name": field.json_name, "in": "query", "required": False, "schema": schema,
                       **({"explode": True} if field.is_repeated else {})})
    return params


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def document(table: Table, *, title: str = "shopmesh", version: str = "1", auth: bool = False) -> dict[str, Any]:
    """The OpenAPI 3 document of the endpoint table; with `auth`, each operation names what it needs."""
    routes = table.routes
    builder = _Builder()
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(routes, key=lambda r: r.template.source):
        method = route.method
        operation: dict[str, Any] = {
            "operationId": f"{method.containing_service.name}_{method.name}"
            + ("" if route.template.source == _primary(routes, route) else f"_{route.http_method.lower()}"),
            "tags": [method.containing_service.name],
            "summary": f"{method.containing_service.full_name}.{method.name}",
            "parameters": [
                {"name": _short(name), "in": "path", "required": True,
                 "schema": _path_schema(builder, method.input_type, name)}
                for name, _ in route.template.variables
            ],
            "responses": {
                "default": {
                    "description": "An error, as google.rpc.Status",
                    "content": {"application/json": {"schema": _ref("google.rpc.Status")}},
                }
            },
        }
        if "request_id" in method.input_type.fields_by_name:
            operation["parameters"].append({
                "name": "Idempotency-Key", "in": "header", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": NOT_BLANK, "x-not-blank": True},
                "description": "Instead of requestId, or equal to it: the same key returns the first outcome "
                               "(Stripe's header)."})
        if auth:
            need = Authenticator.need(route.rpc)
            operation["security"] = [] if need is Need.ANYONE else [{"bearer": []}, {"apiKey": []}]
            if need is not Need.ANYONE:
                operation["description"] = f"Needs: {need.value}."
        if route.body == "*":
            # requestId stays required although the Idempotency-Key header may carry it instead: JSON
            # Schema cannot say "one of the two", and a document may ask for more than the server.
            filled = {"user_id"} if auth and Authenticator.need(route.rpc) is Need.USER else set()
            body_name = builder.message(method.input_type, skip=route.path_fields, filled=frozenset(filled))
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body_name)}}}
        elif route.body:
            field = method.input_type.fields_by_name[route.body]
            schema = builder.field(field)
            if route.http_method == "PATCH":  # only the fields present change; the path names the resource
                in_path = frozenset(name.split(".", 1)[1] for name in route.path_fields if name.startswith(f"{field.name}."))
                schema = _ref(builder.message(field.message_type, skip=in_path, partial=True))
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
            operation["parameters"] += [p for p in _query_parameters(builder, route) if p["name"] != field.json_name]
            if "update_mask" in method.input_type.fields_by_name and route.http_method == "PATCH":
                operation["description"] = (operation.get("description", "") + " Without updateMask, the fields "
                                            "present in the body are updated (as grpc-gateway's PATCH).").strip()
        else:
            operation["parameters"] += _query_parameters(builder, route)
        if etag_holder(method.input_type, route.body, route.http_method) is not None:
            operation["parameters"].append({
                "name": "If-Match", "in": "header", "required": False,
                "schema": {"type": "string", "pattern": r'^(\*|"[!#-~]*")$'},
                "description": "The ETag of the resource as read: the change is made only if it is still that "
                               "(else 412 Precondition Failed)."})
            operation["responses"]["412"] = {
                "description": "The resource changed since the If-Match ETag was read; read it again",
                "content": {"application/json": {"schema": _ref("google.rpc.Status")}}}
        if route.streaming:
            item = builder.message(method.output_type)
            operation["responses"]["200"] = {
                "description": f"Server-Sent Events; each `data:` line is one {item} as JSON.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        else:
            operation["responses"]["200"] = {
                "description": "OK",
                "content": {"application/json": {"schema": _ref(builder.message(method.output_type))}},
            }
            if "etag" in method.output_type.fields_by_name:
                operation["responses"]["200"]["headers"] = {"ETag": {
                    "description": "The resource's etag, quoted: send it back as If-Match", "schema": {"type": "string"}}}
        paths.setdefault(_doc_path(route.template.source), {})[route.http_method.lower()] = operation
    for path, endpoint in table.documented():
        assert endpoint.doc is not None
        paths.setdefault(path, {})[endpoint.method.lower()] = _own_operation(endpoint.doc, auth)
    builder.schemas.update(_GATEWAY_SCHEMAS)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version,
                 "description": "Generated by the shopmesh gateway from the google.api.http rules of its contracts."},
        "paths": paths,
        "components": {"schemas": builder.schemas, **({"securitySchemes": SECURITY_SCHEMES} if auth else {})},
    }


_GATEWAY_SCHEMAS: dict[str, Any] = {
    "gateway.Health": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}},
                       "required": ["status"], "additionalProperties": False},
    "gateway.Readiness": {"type": "object", "required": ["ready", "upstreams"], "additionalProperties": False,
                          "properties": {"ready": {"type": "boolean"}, "draining": {"type": "boolean"}, "upstreams": {
                              "type": "object", "description": "each upstream service's gRPC health status",
                              "additionalProperties": {"type": "string"}}}},
    "gateway.Caller": {"type": "object", "required": ["auth"], "additionalProperties": False,
                       "description": "Who the request's credentials name; {auth: false} when sign-in is off.",
                       "properties": {"auth": {"type": "boolean"}, "userId": {"type": "string"},
                                      "admin": {"type": "boolean"}, "signedOut": {"type": "boolean"}}},
}


def _own_operation(doc: Doc, auth: bool) -> dict[str, Any]:
    """One of the gateway's own endpoints (not from a contract): health, readiness, the caller, sign-in."""
    reply = {"content": {"application/json": {"schema": _ref(doc.schema)}}}
    operation: dict[str, Any] = {
        "operationId": doc.operation_id, "tags": ["Gateway"], "summary": doc.summary, "parameters": [],
        "responses": {**{code: {"description": "OK" if code == "200" else "Not ready", **reply} for code in doc.codes},
                      "default": {"description": "An error, as google.rpc.Status",
                                  "content": {"application/json": {"schema": _ref("google.rpc.Status")}}}}}
    if auth:
        operation["security"] = [{"bearer": []}, {"apiKey": []}] if doc.signed_in else []
    if doc.sets_cookie:
        operation["responses"]["200"]["headers"] = {"Set-Cookie": {
            "description": "shopmesh_session: HttpOnly, SameSite=Strict, Path=/", "schema": {"type": "string"}}}
    return operation


def _path_schema(builder: _Builder, message: Descriptor, path: str) -> dict[str, Any]:
    """A path variable's schema: its field's, rules included; at least one character."""
    *parents, name = path.split(".")
    for parent in parents:
        message = message.fields_by_name[parent].message_type
    schema = builder.field(message.fields_by_name[name])
    return schema if "minLength" in schema or "pattern" in schema else {**schema, "minLength": 1}


def _short(variable: str) -> str:
    """A path variable as OpenAPI names it: `product.sku` is `sku`, so PATCH /v1/products/{product.sku}
    and GET /v1/products/{sku} are one path of the document (OpenAPI holds two templates that differ
    only in a variable's name to be the same path, and invalid)."""
    return variable.rsplit(".", 1)[-1]


def _doc_path(source: str) -> str:
    return re.sub(r"\{([A-Za-z0-9_.]+)(=[^}]*)?\}", lambda m: "{" + _short(m.group(1)) + "}", source)


def _primary(routes: list[Route], route: Route) -> str:
    for other in routes:
        if other.method is route.method:
            return other.template.source
    return route.template.source
