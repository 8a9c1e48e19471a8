"""Refuses a change to protos/ that would break the contracts' users, before it lands.

    python scripts/check_contracts.py                 # protos/ against the last release
    python scripts/check_contracts.py --protos DIR    # another copy of protos/ (the tests' mutants)
    python scripts/check_contracts.py --release       # record protos/ as release protos/VERSION

Three checks, each naming what it refuses:
- `buf lint` with the rules in protos/buf.yaml (Buf's STANDARD set, minus three written down
  there with the reason);
- `buf breaking` against the contracts as they were at every release
  (protos/releases/<version>.binpb), with Buf's FILE rules: nothing a generated stub, the wire
  or the JSON mapping depends on may change (numbers, names, types, enum values, packages);
- our own: no existing RPC's `google.api.http` verb, path or body changed (buf does not look),
  every field and enum value of the release still there by name and number (buf says which
  number went; this says which name), and protos/VERSION moved past the last release once the
  contracts differ from it.

buf reads a Buf image here (a FileDescriptorSet with source info) that protoc builds from
protos/, its imports (googleapis-common-protos) and protovalidate's descriptor, so no Buf
Schema Registry is needed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
RELEASES = PROTOS / "releases"
OURS = "shop"  # the contracts' files: shop/...; the rest of an image is what they import


def image(protos: Path, out: Path, *, source_info: bool = True) -> Path:
    """protos/ (and all it imports) as one FileDescriptorSet at `out`, comments included."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from generate import protoc

    files = sorted(str(p.relative_to(protos)) for p in (protos / OURS).rglob("*.proto"))
    protoc(["--include_imports", f"--descriptor_set_out={out}", *(["--include_source_info"] if source_info else []),
            *files], protos, "check_contracts")
    return out


def version(protos: Path) -> str:
    return (protos / "VERSION").read_text().strip()


def _key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def last_release() -> Path:
    return max(RELEASES.glob("*.binpb"), key=lambda p: _key(p.stem))


def _buf(*args: str) -> list[str]:
    from shutil import which

    buf = which("buf") or str(ROOT / ".tools" / "bin" / "buf")
    done = subprocess.run([buf, *args, "--path", OURS, "--config", str(PROTOS / "buf.yaml"), "--error-format", "text"],
                          capture_output=True, text=True)
    if done.returncode not in (0, 100):  # 100: buf found problems; anything else: buf itself failed
        raise SystemExit(f"check_contracts: buf {args[0]} failed: {done.stderr.strip()}")
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def _services(path: Path) -> dict[str, object]:
    from google.protobuf import descriptor_pb2

    found = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file:
        if file.name.startswith(f"{OURS}/"):
            for service in file.service:
                for method in service.method:
                    found[f"{file.package}.{service.name}.{method.name}"] = method
    return found


def http_changes(current: Path, release: Path) -> list[str]:
    """Every RPC of the release whose google.api.http binding is not the same now."""
    from google.api import annotations_pb2

    def binding(method: object) -> str:
        options = method.options  # type: ignore[attr-defined]
        if not options.HasExtension(annotations_pb2.http):
            return "none"
        rule = options.Extensions[annotations_pb2.http]
        kind = rule.WhichOneof("pattern")
        said = f"{kind.upper()} {getattr(rule, kind)}" + (f" body {rule.body!r}" if rule.body else "")
        extra = [binding_of(extra) for extra in rule.additional_bindings]
        return said + (f" (+ {', '.join(extra)})" if extra else "")

    def binding_of(rule: object) -> str:
        kind = rule.WhichOneof("pattern")  # type: ignore[attr-defined]
        return f"{kind.upper()} {getattr(rule, kind)}"

    now, then = _services(current), _services(release)
    problems = []
    for name, method in sorted(then.items()):
        if name in now and binding(now[name]) != binding(method):
            problems.append(f"{name}: HTTP binding changed from {binding(method)} to {binding(now[name])}; "
                            "clients call the old one: keep it (add the new one as an additional_binding)")
    return problems


def _named(path: Path) -> set[str]:
    """Every field and enum value of the contracts, by full name and number: what users spell."""
    from google.protobuf import descriptor_pb2

    found: set[str] = set()

    def message(prefix: str, msg: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{msg.name}"
        found.update(f"field {name}.{field.name} = {field.number}" for field in msg.field)
        for nested in msg.nested_type:
            message(name, nested)
        for enum in msg.enum_type:
            enumeration(name, enum)

    def enumeration(prefix: str, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        found.update(f"enum value {prefix}.{enum.name}.{value.name} = {value.number}" for value in enum.value)

    for file in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file:
        if file.name.startswith(f"{OURS}/"):
            for msg in file.message_type:
                message(file.package, msg)
            for enum in file.enum_type:
                enumeration(file.package, enum)
    return found


def removed(current: Path, release: Path) -> list[str]:
    """The release's fields and enum values that are not there now, as `name = number` (buf names numbers)."""
    return [f"{gone} is gone or renumbered" for gone in sorted(_named(release) - _named(current))]


def _ours(path: Path) -> bytes:
    from google.protobuf import descriptor_pb2

    files = [f for f in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file if f.name.startswith(f"{OURS}/")]
    return b"".join(f.SerializeToString(deterministic=True) for f in files)


def check(protos: Path) -> list[str]:
    problems = []
    with tempfile.TemporaryDirectory() as folder:
        current = image(protos, Path(folder) / "current.binpb")
        bare = image(protos, Path(folder) / "bare.binpb", source_info=False)
        release = last_release()
        problems += [f"lint: {line}" for line in _buf("lint", str(current))]
        for older in sorted(RELEASES.glob("*.binpb"), key=lambda p: _key(p.stem)):  # every release's users
            problems += [f"breaking (against release {older.stem}): {line}"
                         for line in _buf("breaking", str(current), "--against", str(older))]
            problems += [f"http (against release {older.stem}): {line}" for line in http_changes(current, older)]
            problems += [f"names (against release {older.stem}): {line}" for line in removed(current, older)]
        if _ours(bare) != _ours(release) and _key(version(protos)) <= _key(release.stem):
            problems.append(f"version: the contracts changed since release {release.stem} but protos/VERSION is "
                            f"{version(protos)}; raise it (the minor for additions, as a release's "
                            "contracts never break)")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protos", type=Path, default=PROTOS, help="the contracts to check (default: protos/)")
    parser.add_argument("--release", action="store_true", help="record protos/ as the release in protos/VERSION")
    args = parser.parse_args()
    if args.release:
        target = RELEASES / f"{version(PROTOS)}.binpb"
        RELEASES.mkdir(exist_ok=True)
        image(PROTOS, target, source_info=False)
        print(f"check_contracts: recorded release {target.stem} ({target.relative_to(ROOT)})")
        return 0
    problems = check(args.protos)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check_contracts: {len(problems)} problem(s); see protos/buf.yaml and README "
              "(Calling the mesh from your own service) for the policy", file=sys.stderr)
        return 1
    print(f"check_contracts: {args.protos} passes lint and keeps every promise of release {last_release().stem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
