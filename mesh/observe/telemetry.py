"""Tracing for every process: OpenTelemetry's SDK, exporter chosen by settings.

`none` (the default) installs nothing, so it costs nothing. `console` prints
spans, `otlp` sends them to a collector, `file` appends one JSON span a line to
SHOPMESH_TRACE_FILE ({instance} is replaced), which tests read. W3C traceparent
travels in gRPC metadata and HTTP headers (OpenTelemetry's propagator).

Spans are made with OpenTelemetry's API at the three places every call already
passes: the server guard (mesh/rpc/status.py), the client channel wrapper
(mesh/client/channels.py) and the database engine's statement events (mesh/data/db.py).
OpenTelemetry's grpc.aio interceptors and SQLAlchemy instrumentation did the
same and were used first; measured with nothing recorded (BENCHMARKS.md), the
interceptor machinery alone took about 17% of the order service's event loop,
so tracing cost 25-40% of CreateOrder's throughput even at a 0% sample rate.
Here a request that is not sampled pays for a sampling decision and a
traceparent header, and a statement outside a recorded span for one check.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import grpc

from mesh.rpc.status import SERVER_FAULT
from mesh.settings import Settings

logger = logging.getLogger(__name__)

_enabled = False
_tracer: Any = None


def enabled() -> bool:
    return _enabled


def setup(settings: Settings) -> None:
    global _enabled, _tracer
    if settings.trace_exporter == "none":
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create({
        "service.name": f"shopmesh-{settings.service}",
        "service.version": settings.version,
        "service.instance.id": settings.instance_id,
    })
    # The first process of a request decides; every process after it follows (one trace, whole or not at all).
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)))
    if settings.trace_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True)))
    elif settings.trace_exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        path = settings.trace_file.replace("{instance}", settings.instance_id)
        out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
        exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("shopmesh")
    _enabled = True
    logger.info("tracing to %s, sampling %g of new traces", settings.trace_exporter, settings.trace_sample_ratio)


def current_ids() -> tuple[str, str]:
    """The current span's trace id and span id in hex, or empty strings outside a span."""
    if not _enabled:
        return "", ""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def annotate(attributes: dict[str, str | int]) -> None:
    """Sets `attributes` on the current span (the RPC being served), if one is being recorded:
    how a trace backend finds the trace of an order by its id."""
    if not _enabled:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)


def _rpc_attributes(method: str) -> dict[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class ServerSpan:
    """The span of one RPC this process serves, current while its handler runs."""

    __slots__ = ("span", "_token")

    def __init__(self, method: str, metadata: Iterable[tuple[str, Any]] | None):
        from opentelemetry import context, propagate, trace

        carrier = {key: value for key, value in metadata or () if key in ("traceparent", "tracestate")}
        parent = propagate.extract(carrier) if carrier else None
        self.span = _tracer.start_span(method, context=parent, kind=trace.SpanKind.SERVER,
                                       attributes=_rpc_attributes(method))
        self._token = context.attach(trace.set_span_in_context(self.span, parent))

    def end(self, code: grpc.StatusCode) -> None:
        from opentelemetry import context, trace

        if self.span.is_recording():
            self.span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in SERVER_FAULT:  # OpenTelemetry's gRPC conventions: the server failed
                self.span.set_status(trace.StatusCode.ERROR, code.name)
        self.span.end()
        try:
            context.detach(self._token)
        except ValueError:  # a stream closed from another context: the span is ended all the same
            pass


def server_span(method: str, metadata: Iterable[tuple[str, Any]] | None) -> ServerSpan | None:
    return ServerSpan(method, metadata) if _enabled else None


class ClientSpan:
    """The span of one call this process makes; its traceparent goes out in the call's metadata."""

    __slots__ = ("span",)

    def __init__(self, method: str):
        from opentelemetry import trace

        self.span = _tracer.start_span(method, kind=trace.SpanKind.CLIENT, attributes=_rpc_attributes(method))

    def metadata(self, metadata: Any) -> tuple[tuple[str, str], ...]:
        from opentelemetry import propagate, trace

        carrier: dict[str, str] = {}
        # Injected even when not recorded: the next process must follow this trace's sampling decision.
        propagate.inject(carrier, context=trace.set_span_in_context(self.span))
        return (*tuple(metadata or ()), *carrier.items())

    def end(self, code: grpc.StatusCode) -> None:
        from opentelemetry import trace

        if self.span.is_recording():
            self.span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                self.span.set_status(trace.StatusCode.ERROR, code.name)
        self.span.end()


def client_span(method: str) -> ClientSpan | None:
    return ClientSpan(method) if _enabled else None


def instrument_engines(*engines: Any) -> None:
    """A span per SQL statement, made only inside a recorded span (one check otherwise)."""
    if not _enabled:
        return
    from opentelemetry import trace
    from sqlalchemy import event

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if not trace.get_current_span().is_recording():
            return
        operation = statement.lstrip().split(" ", 1)[0].upper()
        database = conn.engine.url.database or ""
        span = _tracer.start_span(f"{operation} {database.rsplit('/', 1)[-1]}", kind=trace.SpanKind.CLIENT,
                                  attributes={"db.system": conn.engine.dialect.name, "db.name": database,
                                              "db.statement": statement, "db.operation": operation})
        conn.info.setdefault("shopmesh_spans", []).append(span)

    def after(conn: Any, *_: Any) -> None:
        spans = conn.info.get("shopmesh_spans")
        if spans:
            spans.pop().end()

    def failed(context: Any) -> None:
        spans = context.connection.info.get("shopmesh_spans") if context.connection is not None else None
        if spans:
            span = spans.pop()
            span.set_status(trace.StatusCode.ERROR, str(context.original_exception)[:200])
            span.end()

    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        event.listen(engine, "handle_error", failed)


def shutdown() -> None:
    if _enabled:
        from opentelemetry import trace

        trace.get_tracer_provider().shutdown()  # type: ignore[attr-defined]
