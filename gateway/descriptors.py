"""The contracts a gateway serves when they are not the shop's: descriptors and upstream addresses.

    python -m gateway --descriptors api.protoset --upstream pkg.v1.Service=127.0.0.1:50051 ...
    python -m gateway --upstream pkg.v1.Service=127.0.0.1:50051 ...   # descriptors from its reflection

`protoc --include_imports --descriptor_set_out=api.protoset ...` (or `buf build -o`) writes the
set. Its files are added to the process's descriptor pool in the set's order (dependencies
first, as both tools write them), except those the process already holds (google.api, the
well-known types, the validate rules), so any service's messages, options and `google.api.http`
rules read as the shop's do. Each `--upstream` names a service of the set and where it answers.

Without `--descriptors`, each upstream is asked for its service's files (and their imports) over
gRPC server reflection (grpc.reflection.v1alpha, which grpcio-reflection and grpc-go serve), once,
at start: a gateway in front of a service that changes its contracts is restarted to see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2  # noqa: F401  (google.api.http in the pool before any set)
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

from gateway.routes import upstream_of


class DescriptorError(ValueError):
    """A descriptor set or an --upstream the gateway cannot serve; the message says why."""


@dataclass(frozen=True)
class Contracts:
    files: list[FileDescriptor]
    services: list[str]  # the full names served: a file's other services have no upstream
    addresses: dict[str, str]  # upstream name (gateway.routes.upstream_of) -> host:port


REFLECTION_SECONDS = 10.0


def _parse(spec: str) -> tuple[str, str]:
    name, sep, address = spec.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not colon or not host or not port.isdigit():
        raise DescriptorError(f"--upstream {spec!r}: expected package.Service=host:port")
    return name, address


def _reflected(name: str, address: str) -> list[descriptor_pb2.FileDescriptorProto]:
    """The files defining `name` and all they import, dependencies first, from the upstream's reflection."""
    import grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=REFLECTION_SECONDS)
        except grpc.FutureTimeoutError:
            raise DescriptorError(f"--upstream {name}={address}: no answer within {REFLECTION_SECONDS:g}s") from None
        database = ProtoReflectionDescriptorDatabase(channel)
        try:
            top = database.FindFileContainingSymbol(name)
        except KeyError:
            raise DescriptorError(f"--upstream {name}={address}: its reflection knows no service {name}") from None
        except grpc.RpcError as error:
            raise DescriptorError(f"--upstream {name}={address}: reflection failed: {error.code().name} "
                                  "(does it serve grpc.reflection.v1alpha? else pass --descriptors)") from None
        ordered: list[descriptor_pb2.FileDescriptorProto] = []
        seen: set[str] = set()

        def visit(file: descriptor_pb2.FileDescriptorProto) -> None:
            if file.name in seen:
                return
            seen.add(file.name)
            for dependency in file.dependency:
                visit(database.FindFileByName(dependency))
            ordered.append(file)

        visit(top)
    return ordered


def _add(pool: descriptor_pool.DescriptorPool, files: list[descriptor_pb2.FileDescriptorProto], where: str) -> None:
    for file in files:
        try:
            pool.FindFileByName(file.name)
            continue  # already here (imported by the gateway itself, or an earlier set)
        except KeyError:
            pass
        try:
            pool.Add(file)
        except TypeError as error:
            raise DescriptorError(f"{where}: {file.name}: {error}") from None


def load(descriptor_sets: list[Path], upstreams: list[str]) -> Contracts:
    pool = descriptor_pool.Default()
    parsed = [_parse(spec) for spec in upstreams]
    if not descriptor_sets:
        for name, address in parsed:
            _add(pool, _reflected(name, address), f"--upstream {name}={address} (reflection)")
    for path in descriptor_sets:
        try:
            found = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
        except OSError as error:
            raise DescriptorError(f"--descriptors {path}: {error.strerror}") from None
        except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: not a descriptor set
            raise DescriptorError(f"--descriptors {path}: not a FileDescriptorSet (protoc --descriptor_set_out)") from None
        _add(pool, list(found.file), f"--descriptors {path}")
    services: dict[str, ServiceDescriptor] = {}
    addresses: dict[str, str] = {}
    for name, address in parsed:
        try:
            service = pool.FindServiceByName(name)
        except KeyError:
            raise DescriptorError(f"--upstream {name}={address}: no service {name} in the descriptors") from None
        services[name] = service
        addresses[upstream_of(service)] = address
    if not services:
        raise DescriptorError("--descriptors needs at least one --upstream package.Service=host:port")
    files = {service.file.name: service.file for service in services.values()}
    return Contracts(list(files.values()), sorted(services), addresses)


__all__ = ["Contracts", "DescriptorError", "load"]
