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

The server makes a few answers itself (400, 408, 413, 414, 417, 429, 431, 503): their bodies come
from the `errors` function the application passes, so they read like the application's own errors.

What one client can make it hold is bounded (`Limits`), each bound named in the refusal it causes:

- **Backpressure.** A reply the client does not read stays in the kernel and in at most one write
  buffer; while it does, nothing more is read from that connection (the client's own sends then
  wait in its kernel), and a reply that makes no progress for `send_timeout` closes the connection.
  Pipelined requests are read at most `pipeline` ahead of the one being answered.
- **Event streams** have a buffer of `stream_buffer` bytes each: a reader that falls further behind
  has its stream ended in its protocol's way (`Response.overflow`: SSE's close, which the page
  resumes from with Last-Event-ID; Connect's and gRPC-Web's resource_exhausted), never queued.
- **Connections.** At most `max_connections` per process, kept below the file limit with room for
  what else the process opens; past it a connection is answered 503 at once and closed (counted in
  `http_limit_refusals_total`, logged once). Each client address may hold `max_connections_per_client`
  (not an address the application says many clients share, a trusted proxy's); past it the
  connection's first request is answered 429 with Retry-After, in the application's form.
- **The listen backlog** is the system's maximum (at least nginx's 511), not asyncio's 100: a burst of
  connections waits in the queue instead of falling into TCP's one-second retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httptools

from mesh.observe import logs
from mesh.observe.metrics import HTTP_CONNECTIONS, HTTP_LIMIT_REFUSALS
from mesh.settings import Settings

logger = logging.getLogger(__name__)

MAX_URL_BYTES = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024
# Raw bytes of one request head as received: httptools buffers a header until its end, so a
# header without an end is cut off here, not when it completes.
MAX_HEAD_BYTES = MAX_URL_BYTES + MAX_HEADER_BYTES + 1024
# Reason phrases are the standard library's (RFC 9110's), and nginx's 499 for a client that left.
REASONS = {**{status.value: status.phrase for status in HTTPStatus}, 499: "Client Closed Request"}
# Bytes handed to the parser at a time: a burst of pipelined requests is parsed only as far as the
# pipeline bound, the rest kept as bytes until the requests before it are answered.
FEED_SLICE = 4096
# A connection past its client's share has this long to send the request its refusal answers.
REFUSAL_WAIT = 2.0
# asyncio accepts up to this many connections at each readiness of the listening socket, and a
# few batches are accepted before the first of them is seen (and refused, past the cap): they are
# in the files the cap leaves free.
ACCEPT_BATCH = 32
# Files a process keeps for what is not a client connection (its upstream channels, database,
# logs, the listening sockets) and for one accept batch: the cap stays this far below the file limit.
FILES_KEPT = 256


@dataclass(frozen=True)
class Limits:
    """What one client may make the server hold; every refusal names the setting it met."""

    max_body: int = 1024 * 1024
    read_timeout: float = 30.0  # a request head and body to arrive whole (408)
    idle_timeout: float = 75.0  # a kept-alive connection to ask again (then closed)
    send_timeout: float = 60.0  # a reply to make progress while the client does not read (then closed)
    max_connections: int = 0  # open at once in this process; 0: below the file limit (`connection_cap`)
    max_connections_per_client: int = 0  # open at once from one address; 0: no share
    stream_buffer: int = 256 * 1024  # unsent bytes of one event stream before it ends
    pipeline: int = 8  # requests read ahead of the one being answered
    # Addresses many clients share (a trusted proxy's): no per-address share for them.
    shared: Callable[[str], bool] | None = None

    @classmethod
    def of(cls, settings: Settings, shared: Callable[[str], bool] | None = None) -> Limits:
        return cls(max_body=settings.http_max_body, read_timeout=settings.http_read_timeout,
                   idle_timeout=settings.http_idle_timeout, send_timeout=settings.http_send_timeout,
                   max_connections=settings.http_max_connections,
                   max_connections_per_client=settings.http_max_connections_per_client,
                   stream_buffer=settings.http_stream_buffer, shared=shared)


def connection_cap(asked: int) -> int:
    """Connections one process may hold: `asked`, but never so many that it runs out of files
    (a process out of files cannot open its upstream channels, and asyncio's accept loop then
    logs every attempt); 0 asks for the most the file limit allows."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = max(16, soft - max(FILES_KEPT, soft // 8)) if soft != resource.RLIM_INFINITY else 1_000_000
    if asked and asked > most:
        logger.warning("%d connections asked (SHOPMESH_HTTP_MAX_CONNECTIONS) but the file limit is %d: "
                       "holding at most %d, room kept for upstream channels", asked, soft, most)
    return min(asked, most) if asked else most


def listen_backlog() -> int:
    """The system's most (net.core.somaxconn), at least nginx's 511: the kernel caps it anyway."""
    try:
        with open("/proc/sys/net/core/somaxconn") as file:
            return max(511, int(file.read()))
    except (OSError, ValueError):
        return 4096


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
    # A stream whose reader fell behind past the buffer ends with these bytes (given the sentence
    # naming the limit): its protocol's way to say so. None: the stream waits for its reader.
    overflow: Callable[[str], bytes] | None = None


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
    def __init__(self, handler: Handler, limits: Limits, server_name: str = "shopmesh", *,
                 errors: Errors = plain_error, server: HttpServer | None = None):
        self._handler = handler
        self._errors = errors
        self._server = server
        self._limits = limits
        self.busy = False  # a request is being answered
        self._timer: asyncio.TimerHandle | None = None
        self._receiving = False  # a request has begun and is not all in yet
        self._server_header = f"server: {server_name}"
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client = ""
        self._queue: asyncio.Queue[Request | Response | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._in_head = False  # a request has begun and its headers are not all in yet
        self._head_bytes = 0
        self._closing = False  # refused: nothing more is read from this connection
        self._counted = False  # holds a place in the server's connection counts
        self._over_share = ""  # past its client's share: the sentence its first request is answered with
        # Flow: the kernel took what we wrote (else we wait to write more, and read nothing), and
        # bytes read but not yet parsed while the pipeline is full.
        self._drained = asyncio.Event()
        self._drained.set()
        self._reading = True
        self._held = b""
        self._reset()

    def _so_far(self) -> Request | None:
        """The request being refused, as much of it as arrived (its method, URL and headers so far)."""
        try:
            method = self._parser.get_method().decode("latin-1")
        except Exception:  # noqa: BLE001 - httptools has not read a method yet
            return None
        path, _, query = self._url.decode("latin-1").partition("?")
        return Request(method, path, query, dict(self._headers), client=self._client)

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
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) else ""
        if self._server is not None:
            refusal = self._server.admit(self, self._client)
            if refusal is not None:  # the process is full: answered at once, nothing read
                transport.write(_encode(self._errors(503, refusal, None), keep_alive=False))  # type: ignore[attr-defined]
                transport.close()
                self._transport = None
                return
        self._transport.set_write_buffer_limits(high=64 * 1024)
        self._worker = asyncio.get_running_loop().create_task(self._serve())
        if self._over_share:
            self._arm(min(REFUSAL_WAIT, self._limits.read_timeout), idle=True)
        else:
            self._arm(self._limits.idle_timeout, idle=True)

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
        elif not self._reading and self._receiving:
            # We stopped reading it (its replies wait for the client): not the client's delay.
            self._arm(self._limits.read_timeout, idle=False)
        elif self._receiving and not self._closing:
            self._refuse(self._errors(408, f"the request did not arrive whole within {self._limits.read_timeout:g}s "
                                           "(SHOPMESH_HTTP_READ_TIMEOUT_SECONDS)", self._so_far()))

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Parse `data` a slice at a time, keeping what is past the pipeline bound for later."""
        at = 0
        while at < len(data) and not self._closing:
            piece = data if len(data) <= FEED_SLICE else data[at:at + FEED_SLICE]
            at += len(piece)
            self._parse(piece)
            if self._queue.qsize() > self._limits.pipeline and at < len(data):
                self._held = data[at:]
                break
        self._flow()

    def _parse(self, data: bytes) -> None:
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

    def _flow(self) -> None:
        """Read while the client takes its replies and the pipeline has room; else stop reading, so
        the client's further requests wait in its own kernel, not in our memory."""
        transport = self._transport
        if transport is None:
            return
        room = self._drained.is_set() and self._queue.qsize() <= self._limits.pipeline and not self._closing
        if room and self._held:
            held, self._held = self._held, b""
            self._feed(held)  # ends with _flow again
            return
        if room and not self._reading:
            self._reading = True
            transport.resume_reading()
        elif not room and self._reading and not self._closing:
            self._reading = False
            transport.pause_reading()

    def pause_writing(self) -> None:
        self._drained.clear()
        self._flow()

    def resume_writing(self) -> None:
        self._drained.set()
        self._flow()

    def _refuse(self, response: Response) -> None:
        """Answer `response` once the requests before it are answered, then close."""
        self._refused = response
        self._closing = True
        self._held = b""
        self._queue.put_nowait(response)
        self._queue.put_nowait(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._transport = None
        self._drained.set()
        if self._server is not None:
            self._server.release(self)
        if self._worker is not None:
            self._worker.cancel()  # cancels the handler and with it its gRPC call

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self._reset()
        self._in_head, self._head_bytes, self._receiving = True, 0, True
        self._arm(min(REFUSAL_WAIT, self._limits.read_timeout) if self._over_share else self._limits.read_timeout,
                  idle=False)

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
        if self._over_share:
            refusal = self._errors(429, self._over_share, self._so_far())
            refusal.headers.append(("retry-after", "1"))
            self._refuse(refusal)
            return
        if self._hosts != 1 and self._parser.get_http_version() == "1.1":
            said = "no Host header" if not self._hosts else f"{self._hosts} Host headers"
            self._refuse(self._errors(400, f"an HTTP/1.1 request carries exactly one Host header; this one has {said}",
                                      self._so_far()))
            return
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._limits.max_body:
            # Refused before the body arrives; the connection closes after the answer.
            self._refuse(self._errors(413, f"request body of {length} bytes exceeds the limit of "
                                           f"{self._limits.max_body}", self._so_far()))
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
        if self._body_size > self._limits.max_body:
            self._refuse(self._errors(413, f"request body exceeds the limit of {self._limits.max_body} bytes",
                                      self._so_far()))
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
                self._flow()  # the pipeline has room again
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
                    self._arm(self._limits.idle_timeout, idle=True)
        except asyncio.CancelledError:
            pass
        finally:
            if self._transport is not None:
                self._transport.close()

    async def _taken(self) -> bool:
        """Whether the client takes what was written within the send timeout; if not, the connection
        is dropped with what it holds (a client that stopped reading gets no more of our memory)."""
        if self._drained.is_set():
            return True
        try:
            await asyncio.wait_for(self._drained.wait(), self._limits.send_timeout)
        except TimeoutError:
            HTTP_LIMIT_REFUSALS.labels("send_timeout").inc()
            if self._transport is not None:
                self._transport.abort()
            return False
        return self._transport is not None

    async def _write(self, response: Response, keep_alive: bool, head: bool = False) -> None:
        """The response; to a HEAD request, its head alone (with the length the body would have)."""
        transport = self._transport
        if transport is None:
            return
        if response.stream is None:
            transport.write(_encode(response, keep_alive, head, self._server_header))
            await self._taken()
            return
        transport.write(_encode(response, False, True, self._server_header))
        if head:
            return
        limit = self._limits.stream_buffer
        # aclosing: however the loop ends (the client gone, the server stops, the reader fell behind),
        # the stream is closed now (its finally cancels its gRPC call), not whenever the garbage
        # collector finds it.
        async with contextlib.aclosing(_until(response.stream, self._server.stopping if self._server else None)) as chunks:
            async for chunk in chunks:
                if self._transport is None:
                    return
                if response.overflow is not None and transport.get_write_buffer_size() + len(chunk) > limit:
                    HTTP_LIMIT_REFUSALS.labels("stream_buffer").inc()
                    last = response.overflow(f"the stream's reader fell more than {limit} bytes behind "
                                             "(SHOPMESH_HTTP_STREAM_BUFFER_BYTES); it was ended")
                    transport.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last) if last else b"0\r\n\r\n")
                    return
                transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if response.overflow is None and not await self._taken():
                    return
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


def _encode(response: Response, keep_alive: bool, head: bool = False, server: str = "server: shopmesh") -> bytes:
    """A response's head, and its body unless `head`; a stream's head says chunked."""
    lines = [
        f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
        f"date: {_date()}",
        server,
        f"content-type: {response.content_type}",
    ]
    lines += [f"{name}: {value}" for name, value in response.headers]
    if response.stream is not None:
        lines += ["cache-control: no-cache", "transfer-encoding: chunked", "connection: close"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    lines.append(f"content-length: {len(response.body)}")
    lines.append("connection: keep-alive" if keep_alive else "connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else response.body)


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
    (asyncio's `Server.wait_closed` returns at once on Python 3.11 while connections live on),
    and hold each client to its share of them."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.connections: set[HttpProtocol] = set()
        self.stopping = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.cap = connection_cap(self.limits.max_connections)
        self._per_client: dict[str, int] = {}
        self._full_since: float | None = None  # refusing for lack of room since (logged once then)

    async def start(self, handler: Handler, host: str, port: int, server_name: str = "shopmesh", *,
                    errors: Errors = plain_error, reuse_port: bool = False) -> HttpServer:
        logs.explain_out_of_files()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(handler, self.limits, server_name, errors=errors, server=self),
            host, port, reuse_address=True, reuse_port=reuse_port or None, backlog=ACCEPT_BATCH)
        # asyncio uses one number for the kernel's queue and its accept batch; the queue is made the
        # system's most by listening again, on a duplicate of the socket's descriptor.
        for listening in self._server.sockets:
            with socket.socket(fileno=os.dup(listening.fileno())) as same:
                same.listen(listen_backlog())
        return self

    def admit(self, connection: HttpProtocol, client: str) -> str | None:
        """Count a new connection in; the sentence it is refused with when the process is full. Past
        its client's share it is kept just long enough to answer its first request 429."""
        if len(self.connections) >= self.cap:
            HTTP_LIMIT_REFUSALS.labels("connections").inc()
            if self._full_since is None:
                self._full_since = time.monotonic()
                logger.warning("refusing connections: %d open, the most this process holds (SHOPMESH_HTTP_MAX_CONNECTIONS"
                               " and the file limit); logged once until there is room again", len(self.connections))
            return (f"the gateway holds {self.cap} connections at once (SHOPMESH_HTTP_MAX_CONNECTIONS) and is full; "
                    "retry shortly")
        self.connections.add(connection)
        HTTP_CONNECTIONS.inc()
        share = self.limits.max_connections_per_client
        if share and not (self.limits.shared is not None and self.limits.shared(client)):
            held = self._per_client.get(client, 0)
            if held >= share:
                HTTP_LIMIT_REFUSALS.labels("client_connections").inc()
                connection._over_share = (f"this client holds {held} connections, its share "
                                          f"(SHOPMESH_HTTP_MAX_CONNECTIONS_PER_CLIENT); reuse one or close one")
            else:
                self._per_client[client] = held + 1
                connection._counted = True
        return None

    def release(self, connection: HttpProtocol) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        HTTP_CONNECTIONS.dec()
        if connection._counted:
            connection._counted = False
            left = self._per_client[connection._client] - 1
            if left:
                self._per_client[connection._client] = left
            else:
                del self._per_client[connection._client]
        if self._full_since is not None and len(self.connections) < self.cap * 0.9:
            logger.warning("accepting connections again after %.1fs of refusing them",
                           time.monotonic() - self._full_since)
            self._full_since = None

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


async def serve_http(handler: Handler, host: str, port: int, limits: Limits | None = None,
                     server_name: str = "shopmesh", *, errors: Errors = plain_error,
                     reuse_port: bool = False) -> HttpServer:
    return await HttpServer(limits).start(handler, host, port, server_name, errors=errors, reuse_port=reuse_port)
