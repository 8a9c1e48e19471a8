"""HTTP to the gateway, the one way: the standard library's client, one connection a call."""

from __future__ import annotations

import http.client
import json
import struct
import uuid
from typing import Any


def call(address: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
         timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """One request to `address` (host:port): its status, headers (lower-case names) and raw body."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def answers(address: str, path: str) -> bool:
    """Whether `path` at `address` answers 200 now (False while nothing listens there yet)."""
    try:
        return call(address, "GET", path)[0] == 200
    except OSError:
        return False


class Http:
    """JSON to and from the gateway at `address`: a body is sent as JSON, a JSON answer parsed."""

    def __init__(self, address: str):
        host, port = address.rsplit(":", 1)
        self.host, self.port = host, int(port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        sent = {"content-type": "application/json"} if data else {}
        status, got, text = call(self.address, method, path, data, {**sent, **(headers or {})})
        parsed = json.loads(text) if text and got.get("content-type", "").startswith("application/json") else text
        return status, got, parsed


def new_product(api: Http, stock: int = 10) -> str:
    """A product of its own for one test (a unique SKU), created over REST; its SKU."""
    sku = f"gw-{uuid.uuid4().hex[:10]}"
    status, _, body = api.call("POST", "/v1/products", {
        "sku": sku, "name": "Gateway mug", "price": {"currencyCode": "USD", "minorUnits": "750"}, "available": stock})
    assert status == 200, body
    return sku


def connect_json(address: str, path: str, message: dict[str, Any], **headers: str) -> tuple[int, dict[str, str], Any]:
    """A Connect unary call in JSON: its status, headers and parsed answer."""
    status, got, data = call(address, "POST", path, json.dumps(message).encode(),
                             {"content-type": "application/json", "connect-protocol-version": "1", **headers})
    return status, got, json.loads(data) if data else None


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """The envelopes of a Connect-streaming or gRPC-Web body: (flags, bytes)."""
    found, at = [], 0
    while at < len(data):
        flags, size = struct.unpack_from(">BI", data, at)
        found.append((flags, data[at + 5:at + 5 + size]))
        at += 5 + size
    return found
