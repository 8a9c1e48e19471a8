"""Tracing for every process: OpenTelemetry's SDK, exporter chosen by settings.

`none` (the default) installs nothing, so it costs nothing. `console` prints
spans, `otlp` sends them to a collector, `file` appends one JSON span a line to
SHOPMESH_TRACE_FILE ({instance} is replaced), which tests read. gRPC spans come
from opentelemetry-instrumentation-grpc, database spans from
opentelemetry-instrumentation-sqlalchemy; W3C traceparent travels in metadata.
"""

from __future__ import annotations

import logging
from typing import Any

from mesh.settings import Settings

logger = logging.getLogger(__name__)

_enabled = False


def enabled() -> bool:
    return _enabled


def setup(settings: Settings) -> None:
    global _enabled
    if settings.trace_exporter == "none":
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    resource = Resource.create({
        "service.name": f"shopmesh-{settings.service}",
        "service.version": settings.version,
        "service.instance.id": settings.instance_id,
    })
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

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


def server_interceptors() -> list[Any]:
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list[Any]:
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def instrument_engines(*engines: Any) -> None:
    """Database spans for these engines (the instrumentor takes them all in one call: it is a singleton)."""
    if _enabled:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(engines=list(engines))


def shutdown() -> None:
    if _enabled:
        from opentelemetry import trace

        trace.get_tracer_provider().shutdown()  # type: ignore[attr-defined]
