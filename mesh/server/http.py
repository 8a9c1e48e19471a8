"""A small HTTP/1.1 server on asyncio and httptools: keep-alive, limits, streaming.

The gateway serves its API with it and every gRPC service its `/metrics`.
It parses (httptools, the parser uvicorn uses), enforces its limits as the bytes
arrive (a URL, headers, a whole request head, a body: each refused as soon as it
is too long, and the connection closed, so no client makes it buffer more), gives a
request `read_timeout` seconds to arrive whole (408) and an idle connection
`idle_timeout` seconds (then closes it, so silent clients cannot hold sockets), hands
each request to an async handler one at a time per connection, and cancels the
handler when the client goes away, which cancels its gRPC call. It answers `Expect:
100-continue` before a body is sent and refuses an HTTP/1.1 request without exactly one `Host`
(RFC 9112 section 3.2). `HttpServer.shutdown` stops taking connections, lets requests in flight
finish and streams end cleanly within a grace period, then closes what is left.

The server makes a few answers itself (400, 408, 413, 414, 417, 431): their bodies come from the
`errors` function the application passes, so they read like the application's own errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httptools

logger = logging.getLogger(__name__)

MAX_URL_BYTES = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024
# Raw bytes of one request head as received: httptools buffers a header until its end, so a
# header without an end is cut off here, not when it completes.
MAX_HEAD_BYTES = MAX_URL_BYTES + MAX_HEADER_BYTES + 1024
# Reason phrases are the standard library's (RFC 9110's), and nginx's 499 for a client that left.
REASONS = {**{status.value: status.phrase for status in HTTPStatus}, 499: "Client Closed Request"}


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""
    # The peer's address: who is calling, for per-client limits.
    client: str = ""
    # What the application's layers learn about the request on its way in (its match, caller, id).
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A streaming response writes each chunk as it comes (Server-Sent Events).
    stream: AsyncIterator[bytes] | None = None
    # Called once when the response is written or abandoned (the client left, the server stops),
    # even if its stream never started: what the stream holds (a gRPC call) is released here.
    on_close: Callable[[], object] | None = None


Handler = Callable[[Request], Awaitable[Response]]
# (status, message, the request as far as it came, or None): the server's own refusals, as the app words them.
Errors = Callable[[int, str, "Request | None"], Response]

_date_cache = (0, "")


def _date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def plain_error(status: int, message: str, request: Request | None = None) -> Response:
    """A refusal as plain text: for servers with no error format of their own (the /metrics pages)."""
    return Response(status, message.encode() + b"\n", "text/plain; charset=utf-8")


class HttpProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, max_body: int, server_name: str = "shopmesh", *,
                 idle_timeout: float = 75.0, read_timeout: float = 30.0, errors: Errors = plain_error,
                 server: HttpServer | None = None):
        self._handler = handler
        self._errors = errors
        self._server = server
        self.busy = False  # a request is being answered
        self._idle_timeout, self._read_timeout = idle_timeout, read_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._receiving = False  # a request has begun and is not all in yet
        self._server_header = f"server: {server_name}"
        self._max_body = max_body
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client = ""
        self._queue: asyncio.Queue[Request | Response | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._in_head = False  # a request has begun and its headers are not all in yet
        self._head_bytes = 0
        self._closing = False  # refused: nothing more is read from this connection
        self._reset()

    def _so_far(self) -> Request | None:
        """The request being refused, as much of it as arrived (its method, URL and headers so far)."""
        try:
            method = self._parser.get_method().decode("latin-1")
        except Exception:  # noqa: BLE001 - httptools has not read a method yet
            return None
        path, _, query = self._url.decode("latin-1").partition("?")
        return Request(method, path, query, dict(self._headers))

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._hosts = 0
        self._refused: Response | None = None

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if self._server is not None:
            self._server.connections.add(self)
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) else ""
        self._worker = asyncio.get_running_loop().create_task(self._serve())
        self._arm(self._idle_timeout, idle=True)

    def _arm(self, seconds: float, *, idle: bool) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expired, idle)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, idle: bool) -> None:
        self._timer = None
        if idle:
            if self._transport is not None:
                self._transport.close()  # nothing asked for a while: free the socket
        elif self._receiving and not self._closing:
            self._refuse(self._errors(408, f"the request did not arrive whole within {self._read_timeout:g}s",
                                      self._so_far()))

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        continuing_head = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(self._errors(400, "protocol upgrades are not supported", self._so_far()))
        except httptools.HttpParserError as error:
            self._refuse(self._errors(400, f"malformed HTTP request: {error}", self._so_far()))
        if continuing_head and self._in_head and not self._closing:
            # All of this chunk was head: count it (the chunk a request begins in is not counted,
            # so a head may reach one read over the limit before it is cut off).
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(self._errors(431, f"request head exceeds {MAX_HEAD_BYTES} bytes", self._so_far()))

    def _refuse(self, response: Response) -> None:
        """Answer `response` once the requests before it are answered, then close."""
        self._refused = response
        self._closing = True
        self._queue.put_nowait(response)
        self._queue.put_nowait(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._transport = None
        if self._server is not None:
            self._server.connections.discard(self)
        if self._worker is not None:
            self._worker.cancel()  # cancels the handler and with it its gRPC call

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self._reset()
        self._in_head, self._head_bytes, self._receiving = True, 0, True
        self._arm(self._read_timeout, idle=False)

    def on_url(self, url: bytes) -> None:
        if self._refused is not None:
            return
        if len(self._url) + len(url) > MAX_URL_BYTES:
            self._refuse(self._errors(414, f"request URL exceeds {MAX_URL_BYTES} bytes", self._so_far()))
            return
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused is not None:
            return
        if name.lower() == b"host":
            self._hosts += 1
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(self._errors(431, f"request headers exceed {MAX_HEADER_BYTES} bytes", self._so_far()))
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._refused is not None:
            return
        if self._hosts != 1 and self._parser.get_http_version() == "1.1":
            said = "no Host header" if not self._hosts else f"{self._hosts} Host headers"
            self._refuse(self._errors(400, f"an HTTP/1.1 request carries exactly one Host header; this one has {said}",
                                      self._so_far()))
            return
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            # Refused before the body arrives; the connection closes after the answer.
            self._refuse(self._errors(413, f"request body of {length} bytes exceeds the limit of {self._max_body}",
                                      self._so_far()))
            return
        expect = self._headers.get("expect")
        if expect is not None:
            if expect.lower() != "100-continue":
                self._refuse(self._errors(417, f"Expect: {expect} is not understood; only 100-continue is", self._so_far()))
            elif self._transport is not None:
                # The client waits for this before it sends the body (curl does, for large ones).
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refused is not None:
            return
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._refuse(self._errors(413, f"request body exceeds the limit of {self._max_body} bytes", self._so_far()))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._receiving = False
        self._disarm()  # the handler takes what it takes (its deadline is the call's)
        if self._refused is not None:
            return  # answered when it was refused
        parsed = httptools.parse_url(self._url)
        request = Request(
            method=self._parser.get_method().decode(),
            path=parsed.path.decode("latin-1"),
            query=(parsed.query or b"").decode("latin-1"),
            headers=self._headers,
            body=b"".join(self._body),
            client=self._client,
        )
        if not self._parser.should_keep_alive():
            request.headers["connection"] = "close"
        self._queue.put_nowait(request)

    # --- serving, one request at a time per connection ---

    async def _serve(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if item is None or self._transport is None:
                    break
                if isinstance(item, Response):
                    await self._write(item, keep_alive=False)
                    break
                self.busy = True
                try:
                    response = await self._handler(item)
                except Exception:
                    logger.exception("%s %s failed", item.method, item.path)
                    response = self._errors(500, "internal error; see the server log", item)
                stopping = self._server is not None and self._server.stopping.is_set()
                keep_alive = (item.headers.get("connection", "").lower() != "close" and response.stream is None
                              and not stopping)
                try:
                    await self._write(response, keep_alive, head=item.method == "HEAD")
                finally:
                    self.busy = False
                    if response.on_close is not None:
                        response.on_close()
                if not keep_alive:
                    break
                if self._queue.empty() and not self._receiving:
                    self._arm(self._idle_timeout, idle=True)
        except asyncio.CancelledError:
            pass
        finally:
            if self._transport is not None:
                self._transport.close()

    async def _write(self, response: Response, keep_alive: bool, head: bool = False) -> None:
        """The response; to a HEAD request, its head alone (with the length the body would have)."""
        transport = self._transport
        if transport is None:
            return
        lines = [
            f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
            f"date: {_date()}",
            self._server_header,
            f"content-type: {response.content_type}",
        ]
        lines += [f"{name}: {value}" for name, value in response.headers]
        if response.stream is None:
            lines.append(f"content-length: {len(response.body)}")
            lines.append("connection: keep-alive" if keep_alive else "connection: close")
            transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else response.body))
            return
        lines += ["cache-control: no-cache", "transfer-encoding: chunked", "connection: close"]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if head:
            return
        # aclosing: however the loop ends (the client gone, the server stopping), the stream is closed
        # now (its finally cancels its gRPC call), not whenever the garbage collector finds it.
        async with contextlib.aclosing(_until(response.stream, self._server.stopping if self._server else None)) as chunks:
            async for chunk in chunks:
                if self._transport is None:
                    return
                transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if self._transport is not None:
            transport.write(b"0\r\n\r\n")

    def close_if_idle(self) -> None:
        if not self.busy and self._queue.empty() and not self._receiving and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._worker is not None:
            self._worker.cancel()


async def _until(stream: AsyncIterator[bytes], stopping: asyncio.Event | None) -> AsyncIterator[bytes]:
    """The stream's chunks until it ends or the server stops: then it is closed (its finally runs) and
    the response ends cleanly, so a client sees a finished stream it may resume, not a reset."""
    if stopping is None:
        async for chunk in stream:
            yield chunk
        return
    iterator = stream.__aiter__()
    stop = asyncio.ensure_future(stopping.wait())
    step: asyncio.Future[bytes] | None = None
    try:
        while True:
            step = asyncio.ensure_future(iterator.__anext__())
            await asyncio.wait((step, stop), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                return
            try:
                chunk = step.result()
            except StopAsyncIteration:
                step = None
                return
            step = None
            yield chunk
    finally:
        # Whether the stream ended, the server stops or the client went away (we are cancelled):
        # nothing is left running, and the stream's own cleanup (cancelling its gRPC call) runs.
        for task in (step, stop):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (step, stop) if t is not None), return_exceptions=True)
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class HttpServer:
    """A listening HTTP server that knows its connections, so it can stop gracefully
    (asyncio's `Server.wait_closed` returns at once on Python 3.11 while connections live on)."""

    def __init__(self) -> None:
        self.connections: set[HttpProtocol] = set()
        self.stopping = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self, handler: Handler, host: str, port: int, max_body: int, server_name: str = "shopmesh", *,
                    idle_timeout: float = 75.0, read_timeout: float = 30.0,
                    errors: Errors = plain_error, reuse_port: bool = False) -> HttpServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(handler, max_body, server_name, idle_timeout=idle_timeout,
                                 read_timeout=read_timeout, errors=errors, server=self),
            host, port, reuse_address=True, reuse_port=reuse_port or None)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; end idle connections and streams; give requests in flight `grace` seconds."""
        if self._server is not None:
            self._server.close()
        self.stopping.set()
        deadline = asyncio.get_running_loop().time() + grace
        while self.connections and asyncio.get_running_loop().time() < deadline:
            for connection in list(self.connections):
                connection.close_if_idle()
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            logger.warning("closing a connection still busy after the %gs grace period", grace)
            connection.abort()
        await asyncio.sleep(0)

    def close(self) -> None:
        """Stop at once (no grace): for servers nobody waits on, such as /metrics."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.abort()


async def serve_http(handler: Handler, host: str, port: int, max_body: int, server_name: str = "shopmesh", *,
                     idle_timeout: float = 75.0, read_timeout: float = 30.0,
                     errors: Errors = plain_error, reuse_port: bool = False) -> HttpServer:
    return await HttpServer().start(handler, host, port, max_body, server_name, idle_timeout=idle_timeout,
                                    read_timeout=read_timeout, errors=errors, reuse_port=reuse_port)
