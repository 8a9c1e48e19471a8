"""Writes protos/API.md, the contracts' reference, from their comments, rules and HTTP bindings.

    python scripts/api_reference.py           # rewrite protos/API.md
    python scripts/api_reference.py --check   # exit 1 if it is stale (the tests run this)

Every service and RPC (with its REST binding, its Connect / gRPC-Web path and whether it only
reads), every message and field (type, field behavior, protovalidate rules) and every enum
value, each with the comment the contracts give it (a test makes sure none is missing).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from check_contracts import OURS, PROTOS, image, version  # noqa: E402
from google.api import annotations_pb2, field_behavior_pb2  # noqa: E402
from google.protobuf import descriptor_pb2, json_format  # noqa: E402

from generated.buf.validate import validate_pb2  # noqa: E402

OUT = PROTOS / "API.md"
_SCALARS = {v: k[len("TYPE_"):].lower() for k, v in descriptor_pb2.FieldDescriptorProto.Type.items()}
_BEHAVIOR = {v: k for k, v in field_behavior_pb2.FieldBehavior.items()}


def _anchor(full_name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "", full_name.lower())


def _text(comment: str) -> str:
    return " ".join(line.strip() for line in comment.strip().splitlines())


def _flat(value: object, prefix: str = "") -> list[str]:
    """protovalidate's rules as `path = value` items, e.g. `int64.gte = 1`."""
    if isinstance(value, dict):
        return [item for key, sub in sorted(value.items()) for item in _flat(sub, f"{prefix}{key}.")]
    shown = str(value).lower() if isinstance(value, bool) else str(value)
    return [f"`{prefix[:-1]} = {shown}`"]


def _rules(field: descriptor_pb2.FieldDescriptorProto) -> str:
    """Its google.api.field_behavior (REQUIRED, OUTPUT_ONLY) and its protovalidate rules."""
    said = [_BEHAVIOR[b] for b in field.options.Extensions[field_behavior_pb2.field_behavior]]
    if field.options.HasExtension(validate_pb2.field):
        rules = json_format.MessageToDict(field.options.Extensions[validate_pb2.field], preserving_proto_field_name=True)
        said += _flat(rules)
    return ", ".join(said).replace("|", "\\|")


def _type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type_name:
        name = field.type_name.lstrip(".")
        shown = f"[{name}](#{_anchor(name)})" if name.startswith(f"{OURS}.") else f"`{name}`"
    else:
        shown = f"`{_SCALARS[field.type]}`"
    return f"repeated {shown}" if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED else shown


def _binding(method: descriptor_pb2.MethodDescriptorProto) -> list[str]:
    if not method.options.HasExtension(annotations_pb2.http):
        return []
    rules = [method.options.Extensions[annotations_pb2.http]]
    rules += list(rules[0].additional_bindings)
    out = []
    for rule in rules:
        kind = rule.WhichOneof("pattern")
        body = f" (body: `{rule.body}`)" if rule.body else ""
        out.append(f"`{kind.upper()} {getattr(rule, kind)}`{body}")
    return out


def render(files: list[descriptor_pb2.FileDescriptorProto]) -> str:
    lines = [f"# shopmesh API reference (contracts {version(PROTOS)})", "",
             "Generated from `protos/` by `scripts/api_reference.py`: do not edit. Every RPC is served over gRPC "
             "by its service, and through the gateway over REST (its HTTP binding), Connect and gRPC-Web "
             "(`POST /<package.Service>/<Method>`). Field rules are enforced by every service "
             "(`INVALID_ARGUMENT` with a `google.rpc.BadRequest` naming each broken rule).", ""]
    ours = [f for f in files if f.name.startswith(f"{OURS}/")]
    lines += ["## Services", ""]
    for file in ours:
        said = {tuple(where.path): where.leading_comments for where in file.source_code_info.location}
        for i, service in enumerate(file.service):
            full = f"{file.package}.{service.name}"
            lines += [f"### {full}", "", _text(said.get((6, i), "")), ""]
            for j, method in enumerate(service.method):
                stream = "stream " if method.server_streaming else ""
                reads = method.options.idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
                lines += [f"#### {method.name}", "",
                          f"`rpc {method.name}({method.input_type.lstrip('.')}) returns ({stream}{method.output_type.lstrip('.')})`",
                          "", _text(said.get((6, i, 2, j), "")), ""]
                lines += [f"- REST: {', '.join(_binding(method)) or 'none'}",
                          f"- Connect, gRPC-Web: `POST /{full}/{method.name}`"
                          + (" (Connect also `GET`: it only reads)" if reads and not method.server_streaming else ""),
                          f"- Request: [{method.input_type.lstrip('.')}](#{_anchor(method.input_type.lstrip('.'))}); "
                          f"response: {'a stream of ' if stream else ''}"
                          f"[{method.output_type.lstrip('.')}](#{_anchor(method.output_type.lstrip('.'))})", ""]
    lines += ["## Messages and enums", ""]
    for file in ours:
        said = {tuple(where.path): where.leading_comments for where in file.source_code_info.location}

        def message(msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...], prefix: str,
                    said: dict = said) -> None:
            full = f"{prefix}.{msg.name}"
            lines.extend([f"### {full}", "", _text(said.get(path, "")), "",
                          "| Field | Number | Type | Rules | Meaning |", "|---|---:|---|---|---|"])
            for k, field in enumerate(msg.field):
                lines.append(f"| `{field.name}` (`{field.json_name}`) | {field.number} | {_type(field)} | {_rules(field)} "
                             f"| {_text(said.get((*path, 2, k), '')).replace('|', chr(92) + '|')} |")
            lines.append("")
            for k, enum in enumerate(msg.enum_type):
                enumeration(enum, (*path, 4, k), full)
            for k, nested in enumerate(msg.nested_type):
                message(nested, (*path, 3, k), full)

        def enumeration(enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], prefix: str,
                        said: dict = said) -> None:
            lines.extend([f"### {prefix}.{enum.name}", "", _text(said.get(path, "")), "",
                          "| Value | Number | Meaning |", "|---|---:|---|"])
            lines.extend(f"| `{value.name}` | {value.number} | {_text(said.get((*path, 2, k), ''))} |"
                         for k, value in enumerate(enum.value))
            lines.append("")

        for i, msg in enumerate(file.message_type):
            message(msg, (4, i), file.package)
        for i, enum in enumerate(file.enum_type):
            enumeration(enum, (5, i), file.package)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if protos/API.md is stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        files = list(descriptor_pb2.FileDescriptorSet.FromString(
            image(PROTOS, Path(folder) / "contracts.binpb").read_bytes()).file)
    text = render(files)
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print("protos/API.md is stale; run python scripts/api_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"api_reference: wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
