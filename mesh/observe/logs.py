"""Process-wide logging: readable text by default, one JSON object a line when set.

Every line carries the process's service and instance; a line written while an
RPC or HTTP request is being served also carries that request's trace id, span
id (when tracing is on), RPC method and x-request-id, so a user can go from a
log line to its trace and back.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from mesh.observe import telemetry

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "context"}
CONTEXT_FIELDS = ("trace_id", "span_id", "rpc_method", "request_id")

# Set by whatever serves a request (the gRPC guard, the gateway) for the lines logged while serving it.
rpc_method: contextvars.ContextVar[str | None] = contextvars.ContextVar("shopmesh_rpc_method", default=None)
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("shopmesh_request_id", default=None)


class RequestContext(logging.Filter):
    """Adds the current request's trace id, span id, RPC method and request id to a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if telemetry.enabled() and not hasattr(record, "trace_id"):
            trace_id, span_id = telemetry.current_ids()
            if trace_id:
                record.trace_id, record.span_id = trace_id, span_id
        method = rpc_method.get()
        if method is not None and not hasattr(record, "rpc_method"):
            record.rpc_method = method
        rid = request_id.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        parts = [f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name)]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, instance: str):
        super().__init__()
        self._static = {"service": service, "instance": instance}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self._static,
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class UnsentReply(logging.Filter):
    """Turns grpc.aio's traceback for a reply the core refused to send into the one line it means.

    When a caller cancels (or its deadline passes) just as the handler returns, the core refuses to
    send the reply; grpc.aio ignores that only if it has already processed the cancellation, which
    runs in a callback of its own and can come second (server.pyx.pxi, `_handle_exceptions`: it
    checks `rpc_state.client_closed`). Nothing is wrong on our side and nothing can be sent: the call
    is over. A failed send batch means exactly that in gRPC core, so the record becomes one INFO line.
    """

    PREFIX = "ExecuteBatchError raised in core by servicer method"

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(self.PREFIX):
            method = message[len(self.PREFIX):].strip(" []")
            record.msg, record.args = "%s: reply not sent; the call had already ended (cancelled or past its deadline)", (method,)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


def explain_unsent_replies() -> None:
    """Puts UnsentReply on grpc.aio's logger (once); every process that serves gRPC calls it."""
    grpc_core = logging.getLogger("grpc._cython.cygrpc")
    if not any(isinstance(f, UnsentReply) for f in grpc_core.filters):
        grpc_core.addFilter(UnsentReply())


class OutOfFiles(logging.Filter):
    """asyncio's accept loop logs a traceback each time accept() finds no file free (and tries again a
    second later): a client holding thousands of connections made 350,144 of them in a minute. One
    WARNING a minute says it; `mesh/server/http.py` keeps its connections below the file limit, so it
    means something else in the process holds files."""

    PREFIX = "socket.accept() out of system resource"
    EVERY = 60.0

    def __init__(self) -> None:
        super().__init__()
        self._said = -self.EVERY
        self._since = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.PREFIX):
            return True
        self._since += 1
        now = time.monotonic()
        if now - self._said < self.EVERY:
            return False
        error = record.exc_info[1] if record.exc_info else None
        record.msg = "cannot accept connections: %s (%d times since this was last logged); trying again each second"
        record.args = (error or "out of files", self._since)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        self._said, self._since = now, 0
        return True


def explain_out_of_files() -> None:
    """Puts OutOfFiles on asyncio's logger (once); every process that serves HTTP calls it."""
    aio = logging.getLogger("asyncio")
    if not any(isinstance(f, OutOfFiles) for f in aio.filters):
        aio.addFilter(OutOfFiles())


def configure(service: str, instance: str, level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestContext())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service, instance))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s%(context)s",
                                               "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates every plugin and step at INFO (ten lines a service at each start); we log one
    # line a migration ourselves (mesh/data/migrate.py). Its own lines come back with SHOPMESH_LOG_LEVEL=DEBUG.
    logging.getLogger("alembic").setLevel(logging.DEBUG if logging.getLevelName(level) == logging.DEBUG
                                          else logging.WARNING)
