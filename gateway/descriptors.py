"""The contracts a gateway serves when they are not the shop's: a descriptor set and upstream addresses.

    python -m gateway --descriptors api.protoset --upstream pkg.v1.Service=127.0.0.1:50051 ...

`protoc --include_imports --descriptor_set_out=api.protoset ...` (or `buf build -o`) writes the
set. Its files are added to the process's descriptor pool in the set's order (dependencies
first, as both tools write them), except those the process already holds (google.api, the
well-known types, the validate rules), so any service's messages, options and `google.api.http`
rules read as the shop's do. Each `--upstream` names a service of the set and where it answers.
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


def load(descriptor_sets: list[Path], upstreams: list[str]) -> Contracts:
    pool = descriptor_pool.Default()
    for path in descriptor_sets:
        try:
            found = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
        except OSError as error:
            raise DescriptorError(f"--descriptors {path}: {error.strerror}") from None
        except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: not a descriptor set
            raise DescriptorError(f"--descriptors {path}: not a FileDescriptorSet (protoc --descriptor_set_out)") from None
        for file in found.file:
            try:
                pool.FindFileByName(file.name)
                continue  # already here (imported by the gateway itself, or an earlier set)
            except KeyError:
                pass
            try:
                pool.Add(file)
            except TypeError as error:
                raise DescriptorError(f"--descriptors {path}: {file.name}: {error}") from None
    services: dict[str, ServiceDescriptor] = {}
    addresses: dict[str, str] = {}
    for spec in upstreams:
        name, sep, address = spec.partition("=")
        host, colon, port = address.rpartition(":")
        if not sep or not colon or not host or not port.isdigit():
            raise DescriptorError(f"--upstream {spec!r}: expected package.Service=host:port")
        try:
            service = pool.FindServiceByName(name)
        except KeyError:
            raise DescriptorError(f"--upstream {spec!r}: no service {name} in the descriptors") from None
        services[name] = service
        addresses[upstream_of(service)] = address
    if not services:
        raise DescriptorError("--descriptors needs at least one --upstream package.Service=host:port")
    files = {service.file.name: service.file for service in services.values()}
    return Contracts(list(files.values()), sorted(services), addresses)


__all__ = ["Contracts", "DescriptorError", "load"]
