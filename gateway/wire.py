"""What Connect and gRPC-Web put on the wire, as pure pieces: content types, envelopes, base64
text, bounded gzip, metadata as headers, and a status in each protocol's form (gateway/rpc.py
serves the protocols with them)."""

from __future__ import annotations

import base64
import binascii
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2

from gateway.errors import Failure
from mesh.server.http import Request, Response

_C = grpc.StatusCode
COMPRESS_MIN_BYTES = 1024  # smaller messages are sent as they are: gzip would only add bytes
ENCODINGS = ("gzip", "identity")
END_STREAM, COMPRESSED, TRAILERS = 0x02, 0x01, 0x80
MESH_OWN = "x-shopmesh-"  # identity, soft errors: between the mesh's processes only
# `/<package.Service>/<Method>`: the only paths Connect and gRPC-Web are spoken at. Any other path is
# REST's, whatever its content type (Connect's unary JSON shares REST's application/json).
RPC_PATH = re.compile(r"/[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+/[A-Za-z_][A-Za-z0-9_]*")


def connect_code(code: grpc.StatusCode) -> str:
    """`INVALID_ARGUMENT` -> `invalid_argument`; CANCELLED is Connect's `canceled`."""
    return "canceled" if code is _C.CANCELLED else code.name.lower()


@dataclass(frozen=True)
class Wire:
    """What one request speaks: its protocol, its codec, and whether its messages are enveloped."""

    protocol: str  # "connect" or "grpc-web"
    codec: str  # "proto" or "json"
    enveloped: bool  # Connect streaming, and all of gRPC-Web
    content_type: str  # the reply's
    text: bool = False  # gRPC-Web's base64 form


def wire_of(request: Request) -> Wire | None:
    """The protocol the request's content type (or, for a GET, its query) names at an RPC's path;
    None if neither, or if the path is not `/<package.Service>/<Method>` (then it is REST's)."""
    if RPC_PATH.fullmatch(request.path) is None:
        return None
    if request.method in ("GET", "HEAD"):  # HEAD: what the GET would answer, without the body
        return Wire("connect", "proto", False, "application/proto") if "connect=v1" in request.query or \
            "message=" in request.query else None
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in ("application/proto", "application/json"):
        return Wire("connect", media.rpartition("/")[2], False, media)
    if media in ("application/connect+proto", "application/connect+json"):
        return Wire("connect", media.rpartition("+")[2], True, media)
    for base, text in (("application/grpc-web-text", True), ("application/grpc-web", False)):
        if media == base or media.startswith(base + "+"):
            codec = media[len(base) + 1:] or "proto"
            if codec not in ("proto", "json") or (text and codec != "proto"):
                return None
            return Wire("grpc-web", codec, True, f"{base}+{codec}", text)
    return None


def connect_error(failure: Failure) -> dict[str, Any]:
    """A failure as Connect's JSON error: its code's name, message and details (base64 values)."""
    body: dict[str, Any] = {"code": connect_code(failure.code)}
    if failure.message:
        body["message"] = failure.message
    if failure.details:
        body["details"] = [{"type": d.TypeName(), "value": b64(d.value)} for d in failure.details]
    return body


def grpc_status(code: grpc.StatusCode, message: str = "", details: Sequence[any_pb2.Any] = ()) -> list[tuple[str, str]]:
    """A status as gRPC's trailers (gRPC-Web's trailers frame, or its headers when trailers-only)."""
    said = [("grpc-status", str(code.value[0]))]
    if message:
        said.append(("grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")))
    if details:
        status = status_pb2.Status(code=code.value[0], message=message, details=details)
        said.append(("grpc-status-details-bin", b64(status.SerializeToString())))  # unpadded, as gRPC sends it
    return said


def refusal(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    """A protocol-level refusal (no such method, verb or content type): the HTTP status says it, and
    a line of text says why; no RPC error body, which a client would read as the RPC's own."""
    return Response(status, message.encode() + b"\n", "text/plain; charset=utf-8", headers=list(headers))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def unb64(text: str | bytes, urlsafe: bool = False) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    raw = raw.strip() + b"=" * (-len(raw.strip()) % 4)
    return base64.urlsafe_b64decode(raw) if urlsafe else base64.b64decode(raw, validate=True)


def header_pairs(metadata: Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    """gRPC metadata as HTTP headers: binary (-bin) values in base64; the mesh's own entries stay inside."""
    return [(key, base64.b64encode(value).decode() if isinstance(value, bytes) else str(value))
            for key, value in metadata if not key.startswith(MESH_OWN)]


def inflate(data: bytes, limit: int) -> bytes:
    """gzip data, refused once it inflates past `limit` bytes (no bomb makes us hold more)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise Failure.of(_C.INVALID_ARGUMENT, "the request body is not valid gzip") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise Failure.of(_C.RESOURCE_EXHAUSTED, f"the request message inflates past {limit} bytes")
    return out


def deflate(data: bytes) -> bytes:
    deflater = zlib.compressobj(6, zlib.DEFLATED, 31)
    return deflater.compress(data) + deflater.flush()


def encoding_of(value: str | None, header: str) -> str:
    value = (value or "identity").strip().lower()
    if value not in ENCODINGS:
        raise Failure.of(_C.UNIMPLEMENTED, f"{header} {value!r} is not supported; use one of {', '.join(ENCODINGS)}")
    return value


def accepts_gzip(value: str | None) -> bool:
    return any(part.split(";")[0].strip().lower() == "gzip" for part in (value or "").split(","))


def envelope(flags: int, data: bytes) -> bytes:
    return struct.pack(">BI", flags, len(data)) + data


def unenvelope(body: bytes) -> list[tuple[int, bytes]]:
    """The envelopes of an enveloped body; INVALID_ARGUMENT if one is cut short."""
    frames, at = [], 0
    while at < len(body):
        if len(body) - at < 5:
            raise Failure.of(_C.INVALID_ARGUMENT, "the request body ends inside an envelope's 5-byte prefix")
        flags, size = struct.unpack_from(">BI", body, at)
        at += 5
        if len(body) - at < size:
            raise Failure.of(_C.INVALID_ARGUMENT, f"an envelope says {size} bytes but {len(body) - at} follow")
        frames.append((flags, body[at:at + size]))
        at += size
    return frames


def grpc_web_text(body: bytes) -> bytes:
    """gRPC-Web-text's body: base64, possibly several padded chunks one after another."""
    out, text = [], b"".join(body.split())
    try:
        while text:
            end = text.find(b"=")
            if end < 0:
                out.append(unb64(text))
                break
            end += 1
            while end < len(text) and text[end:end + 1] == b"=":
                end += 1
            out.append(unb64(text[:end]))
            text = text[end:]
    except (binascii.Error, ValueError):
        raise Failure.of(_C.INVALID_ARGUMENT, "the grpc-web-text body is not base64") from None
    return b"".join(out)
