"""Server reflection in both versions, resolving every symbol a tool asks about.

grpcio-reflection serves only `grpc.reflection.v1alpha`, while current grpcurl, `buf curl`, grpcui
and Postman ask for `grpc.reflection.v1` first. The two protocols are the same messages under
another package name (field for field, number for number), so one servicer answers both: v1 is
registered with v1alpha's message classes, and its own descriptor (made from v1alpha's by
renaming the package) is in the pool, so `list` and `describe` show it like any service.

The pool finds services, messages, enums and fields by name, but not a method
(`shop.order.v1.OrderService.CreateOrder`) or an enum value named under its enum
(`...Order.Status.CONFIRMED`): those are answered with the file of what holds them.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = reflection.SERVICE_NAME
SERVICE_NAMES = (V1, V1ALPHA)
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    renamed = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(renamed)
    renamed.name = _V1_FILE
    renamed.package = "grpc.reflection.v1"
    for message in renamed.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(".grpc.reflection.v1alpha.", ".grpc.reflection.v1.")
    for service in renamed.service:
        for method in service.method:
            method.input_type = method.input_type.replace(".grpc.reflection.v1alpha.", ".grpc.reflection.v1.")
            method.output_type = method.output_type.replace(".grpc.reflection.v1alpha.", ".grpc.reflection.v1.")
    renamed.options.Clear()
    pool.AddSerializedFile(renamed.SerializeToString())


class _Servicer(ReflectionServicer):  # type: ignore[misc]
    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        answer = super()._file_containing_symbol(request, fully_qualified_name)
        if answer.HasField("error_response") and "." in fully_qualified_name:
            holder, _, member = fully_qualified_name.rpartition(".")
            if self._holds(holder, member):
                return super()._file_containing_symbol(request, holder)
        return answer

    def _holds(self, holder: str, member: str) -> bool:
        """Whether `holder` is a service with method `member` or an enum with value `member`."""
        for find, members in ((self._pool.FindServiceByName, "methods_by_name"),
                              (self._pool.FindEnumTypeByName, "values_by_name")):
            try:
                return member in getattr(find(holder), members)
            except KeyError:
                continue
        return False


def enable(service_names: list[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha for `service_names` (the reflection services are added)."""
    _register_v1_descriptor()
    servicer = _Servicer([*service_names, *SERVICE_NAMES])
    handlers = {"ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)}
    for name in SERVICE_NAMES:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
