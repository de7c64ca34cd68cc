"""One job, one trace: the W3C `traceparent` rides on every event (CloudEvents distributed
tracing extension) and each hop continues it with a span of its own; the stages inside a hop
(download, decode, model, ...) are child spans of it (`stage`).

Export follows the standard OTEL_* variables, read by the SDK where it reads them itself
(endpoints, headers, timeouts, OTEL_BSP_*, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER). One difference from the spec's default: with neither OTEL_TRACES_EXPORTER
nor an OTLP endpoint set, nothing is exported (a laptop has no collector to complain about);
spans still get real ids, so the trace id is carried end to end and appears in the logs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from opentelemetry import context, trace
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

Signal = Literal["traces", "metrics"]

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
# Span attributes every stage may carry (never header values or URLs).
JOB_ID, RUN_ID, MODEL = "klipnote.job_id", "klipnote.run_id", "klipnote.model"
AUDIO_SECONDS, RTF = "klipnote.audio_seconds", "klipnote.rtf"


# -- configuration (once per process, by `klipnote serve`) ---------------------------------------


def resource(function: str) -> Resource:
    """`service.name` is `klipnote-<function>` unless OTEL_SERVICE_NAME (or
    OTEL_RESOURCE_ATTRIBUTES) names it."""
    default = Resource.create({SERVICE_NAME: f"klipnote-{function}", "service.namespace": "klipnote"})
    return default.merge(OTELResourceDetector().detect())


def sdk_disabled() -> bool:
    """OTEL_SDK_DISABLED=true: no telemetry at all (no exporter, no Prometheus reader)."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def exporters(signal: Signal) -> list[Any]:
    """The exporters OTEL_<SIGNAL>_EXPORTER names (comma-separated: otlp, console, none, or
    any name registered under the SDK's `opentelemetry_<signal>_exporter` entry points). Unset,
    OTLP when an endpoint is configured, else none. `prometheus` (metrics) adds nothing here:
    `/metrics` on the health port is always served (events.metrics), rather than the entry
    point's server of its own on another port."""
    if sdk_disabled():
        return []
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    names = [name.strip().lower() for name in os.environ.get(variable, "").split(",") if name.strip()]
    if not names:
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        names = ["otlp"] if any(os.environ.get(name) for name in endpoints) else []
    found = []
    for name in names:
        if name == "none":
            return []
        if (signal, name) == ("metrics", "prometheus"):
            continue
        if name == "otlp":  # the spec's default protocol; grpc only when asked for
            protocol = os.environ.get(
                f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL",
                os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            )
            name = "otlp_proto_grpc" if protocol.strip() == "grpc" else "otlp_proto_http"
        points = importlib.metadata.entry_points(group=f"opentelemetry_{signal}_exporter", name=name)
        point = next(iter(points), None)
        if point is None:
            log.error("%s names %r, which is not installed: not exporting it", variable, name)
            continue
        found.append(point.load()())
    return found


def configure(function: str) -> None:
    """The process's tracer provider, batching spans to the configured exporters."""
    global _provider
    provider = TracerProvider(resource=resource(function))
    for exporter in exporters("traces"):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider


def flush(timeout_s: float = 5.0) -> None:
    """Export what is batched (a stopping host must not lose its last spans)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


def tracer(name: str) -> trace.Tracer:
    global _provider
    if _provider is None:  # a host in a test process, or a library user: ids, no export
        _provider = TracerProvider()
        trace.set_tracer_provider(_provider)
    return trace.get_tracer(name)


# -- spans --------------------------------------------------------------------------------------


@contextlib.contextmanager
def stage(name: str, attributes: Mapping[str, AttributeValue | None]) -> Iterator[trace.Span]:
    """A child span of the current one (a hop's stage). It is not made current, so it may stay
    open across a handler's `yield`s; events published meanwhile continue the hop's span."""
    span = tracer("klipnote.stages").start_span(
        name, attributes={key: value for key, value in attributes.items() if value is not None}
    )
    try:
        yield span
    except Exception as error:  # not a cancellation: that is the host's business
        span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        span.end()


def context_from(traceparent: str | None) -> context.Context:
    """The context a hop continues: the incoming event's trace, or a new one."""
    if not traceparent:
        return context.Context()
    return _propagator.extract({"traceparent": traceparent})


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def current_trace_id() -> str | None:
    """The trace id of the current span, as the logs spell it (32 hex digits), or None."""
    span_context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None


def trace_id(traceparent: str | None) -> str | None:
    return traceparent.split("-")[1] if traceparent and traceparent.count("-") == 3 else None
