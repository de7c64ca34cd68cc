"""One job, one trace: the W3C `traceparent` rides on every event (CloudEvents distributed
tracing extension) and each hop continues it with a span of its own.

Exporters are configured by the standard OTEL_* variables (issue 8 adds OTLP); without one,
spans still get real ids, so the trace id is carried end to end.
"""

from __future__ import annotations

from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
_configured = False


def tracer(name: str) -> trace.Tracer:
    global _configured
    if not _configured:
        trace.set_tracer_provider(TracerProvider())
        _configured = True
    return trace.get_tracer(name)


def context_from(traceparent: str | None) -> context.Context:
    """The context a hop continues: the incoming event's trace, or a new one."""
    if not traceparent:
        return context.Context()
    return _propagator.extract({"traceparent": traceparent})


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def trace_id(traceparent: str | None) -> str | None:
    return traceparent.split("-")[1] if traceparent and traceparent.count("-") == 3 else None
