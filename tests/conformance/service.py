"""The Connect conformance suite's ConformanceService, as a plain grpc.aio service.

The suite's reference client calls it through the gateway under test (`server.py`), so it does
exactly what the suite's own gRPC server (connectrpc.com/conformance internal/app/grpcserver)
does: it answers as each request's response definition says (headers, trailers, data, an error,
a delay) and echoes what reached it (the request, its metadata, its deadline), which is how the
suite sees what the gateway passed on. Its stubs are generated from the suite's protos
(`stubs()`), which scripts/install-tools.sh keeps in .tools/conformance/proto.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / ".tools" / "conformance" / "proto"
FILES = ("config", "service", "server_compat", "client_compat", "suite")


def stubs(out: Path) -> tuple[ModuleType, ModuleType, ModuleType, Path]:
    """Generates the suite's Python stubs and descriptor set into `out` (once); service_pb2,
    service_pb2_grpc, server_compat_pb2 and the descriptor set's path."""
    protoset = out / "conformance.protoset"
    if not protoset.exists():
        import grpc_tools

        include = Path(grpc_tools.__file__).parent / "_proto"
        names = [f"connectrpc/conformance/v1/{name}.proto" for name in FILES]
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"-I{include}",
                        f"--python_out={out}", f"--grpc_python_out={out}", "--include_imports",
                        f"--descriptor_set_out={protoset}", *names], check=True)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return (importlib.import_module("connectrpc.conformance.v1.service_pb2"),
            importlib.import_module("connectrpc.conformance.v1.service_pb2_grpc"),
            importlib.import_module("connectrpc.conformance.v1.server_compat_pb2"), protoset)


def _metadata(headers: Any) -> list[tuple[str, Any]]:
    """The suite's Header list as gRPC metadata (a -bin header's values are base64 there)."""
    found = []
    for header in headers:
        key = header.name.lower()
        for value in header.value:
            found.append((key, base64.b64decode(value + "=" * (-len(value) % 4)) if key.endswith("-bin") else value))
    return found


def build(pb: ModuleType, pb_grpc: ModuleType) -> Any:
    def request_info(context: grpc.aio.ServicerContext, requests: list[Any]) -> Any:
        info = pb.ConformancePayload.RequestInfo()
        grouped: dict[str, list[str]] = {}
        for key, value in context.invocation_metadata() or ():
            text = base64.b64encode(value).decode() if isinstance(value, bytes) else value
            grouped.setdefault(key, []).append(text)
        for key, values in grouped.items():
            info.request_headers.add(name=key, value=values)
        left = context.time_remaining()
        if left is not None:
            info.timeout_ms = max(int(left * 1000), 0)
        for request in requests:
            packed = info.requests.add()
            packed.Pack(request)
        return info

    async def fail(context: grpc.aio.ServicerContext, error: Any, info: Any | None,
                   trailers: list[tuple[str, Any]]) -> None:
        details = list(error.details)
        if info is not None:
            packed = any_pb2.Any()
            packed.Pack(info)
            details.append(packed)
        status = status_pb2.Status(code=error.code, message=error.message, details=details)
        await context.abort(_CODES.get(error.code, grpc.StatusCode.UNKNOWN), error.message,
                            trailing_metadata=(*trailers, ("grpc-status-details-bin", status.SerializeToString())))

    async def unary(request: Any, context: grpc.aio.ServicerContext, response_class: Any) -> Any:
        definition = request.response_definition if request.HasField("response_definition") else None
        trailers: list[tuple[str, Any]] = []
        if definition is not None:
            await context.send_initial_metadata(_metadata(definition.response_headers))
            trailers = _metadata(definition.response_trailers)
            context.set_trailing_metadata(trailers)
            await asyncio.sleep(definition.response_delay_ms / 1000)
        info = request_info(context, [request])
        if definition is not None and definition.WhichOneof("response") == "error":
            await fail(context, definition.error, info, trailers)
        payload = pb.ConformancePayload(request_info=info)
        if definition is not None and definition.WhichOneof("response") == "response_data":
            payload.data = definition.response_data
        return response_class(payload=payload)

    class ConformanceService(pb_grpc.ConformanceServiceServicer):  # type: ignore[misc, name-defined]
        async def Unary(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
            return await unary(request, context, pb.UnaryResponse)

        async def IdempotentUnary(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
            return await unary(request, context, pb.IdempotentUnaryResponse)

        async def ServerStream(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
            definition = request.response_definition
            await context.send_initial_metadata(_metadata(definition.response_headers))
            trailers = _metadata(definition.response_trailers)
            context.set_trailing_metadata(trailers)
            sent = 0
            for data in definition.response_data:
                payload = pb.ConformancePayload(data=data)
                if sent == 0:
                    payload.request_info.CopyFrom(request_info(context, [request]))
                await asyncio.sleep(definition.response_delay_ms / 1000)
                yield pb.ServerStreamResponse(payload=payload)
                sent += 1
            if definition.HasField("error"):
                await fail(context, definition.error, request_info(context, [request]) if sent == 0 else None, trailers)

        async def Unimplemented(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
            await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                "connectrpc.conformance.v1.ConformanceService.Unimplemented is unimplemented")

    return ConformanceService()


_CODES = {code.value[0]: code for code in grpc.StatusCode}


async def serve(pb: ModuleType, pb_grpc: ModuleType, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    pb_grpc.add_ConformanceServiceServicer_to_server(build(pb, pb_grpc), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server
