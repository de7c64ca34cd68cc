"""Metrics, as middleware of the hosts: every figure is read off the events a hop consumes and
publishes, or off JetStream itself, so no function records a metric of its own (a function may
ask for one by its subscription's observer: ingest's projector takes `job_ended`).

- klipnote.job.duration (histogram, s; model, outcome): a job's request to its end;
- klipnote.transcription.rtf (histogram, 1; model): model seconds per second of audio;
- klipnote.hop.duration (histogram, s; function, event type, outcome): one event, one handler;
- klipnote.webhook.attempts / klipnote.webhook.failures (counters, {attempt}; outcome);
- klipnote.queue.lag (observable gauge, {message}; consumer, model): JetStream num_pending.

Two ways out of one meter provider (`configure`, once per function process): pulled, by Prometheus
from `/metrics` on the function's health port (the OpenTelemetry Prometheus exporter's reader, always
there: a scrape costs the process nothing until it comes); and pushed, by the same OTEL_*
configuration as traces (OTEL_METRICS_EXPORTER, the OTLP endpoint, OTEL_METRIC_EXPORT_INTERVAL),
when configured. Both readers see the same measurements. Only the attributes in `LABELS` reach
either (a View drops any other): no job id, run id or other per-job value is ever a label, so a
series is one per model, function, consumer or outcome, not one per job. OTEL_SDK_DISABLED=true
turns it all off: instruments are no-ops, no queue is polled, `/metrics` shows the Python
process's own series only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from cloudevents.core.v1.event import CloudEvent
from nats.js import JetStreamContext
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from events import catalogue, lifecycle, tracing
from events.catalogue import Consumer

log = logging.getLogger(__name__)

_meter = metrics.get_meter("klipnote")
_provider: MeterProvider | None = None

MODEL, OUTCOME, FUNCTION = "klipnote.model", "klipnote.outcome", "klipnote.function"
CONSUMER, EVENT_TYPE = "klipnote.consumer", "cloudevents.event_type"
# The only attributes any instrument keeps (Prometheus labels `klipnote_model`, ...): each has a
# handful of values. A per-job value (tracing.JOB_ID, RUN_ID) would make a series per job.
LABELS = frozenset({MODEL, OUTCOME, FUNCTION, CONSUMER, EVENT_TYPE})

_SECONDS_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]
_RTF_BUCKETS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5]

job_duration = _meter.create_histogram(
    "klipnote.job.duration",
    unit="s",
    description="From a job's request to its end (completed, failed or canceled).",
    explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
)
real_time_factor = _meter.create_histogram(
    "klipnote.transcription.rtf",
    unit="1",
    description="Model seconds per second of audio (below 1 is faster than real time).",
    explicit_bucket_boundaries_advisory=_RTF_BUCKETS,
)
hop_duration = _meter.create_histogram(
    "klipnote.hop.duration",
    unit="s",
    description="One event through one function's handler, publishing included.",
    explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
)
webhook_attempts = _meter.create_counter(
    "klipnote.webhook.attempts", unit="{attempt}", description="Webhook delivery attempts, by outcome."
)
webhook_failures = _meter.create_counter(
    "klipnote.webhook.failures",
    unit="{attempt}",
    description="Webhook attempts that did not deliver (retrying, gave_up, refused).",
)


# -- configuration ------------------------------------------------------------------------------


def meter_provider(function: str, registry: CollectorRegistry = REGISTRY) -> MeterProvider | None:
    """A meter provider for `function`'s process: a Prometheus reader collecting into `registry`
    at each scrape (what `exposition` serves), beside a periodic reader (every
    OTEL_METRIC_EXPORT_INTERVAL ms) for each push exporter OTEL_METRICS_EXPORTER names
    (`tracing.exporters`). Every `klipnote.*` instrument keeps only the attributes in `LABELS`.
    None when OTEL_SDK_DISABLED=true."""
    if tracing.sdk_disabled():
        return None
    readers: list[MetricReader] = [PrometheusMetricReader(registry=registry)]
    readers += [PeriodicExportingMetricReader(exporter) for exporter in tracing.exporters("metrics")]
    views = [View(instrument_name="klipnote.*", attribute_keys=set(LABELS))]
    return MeterProvider(metric_readers=readers, resource=tracing.resource(function), views=views)


def configure(function: str) -> None:
    """The process's meter provider (`meter_provider` on prometheus_client's default registry),
    set once: OpenTelemetry's global provider cannot be replaced, so a second call does nothing."""
    global _provider
    if _provider is not None:
        return
    _provider = meter_provider(function)
    if _provider is not None:
        metrics.set_meter_provider(_provider)


def enabled() -> bool:
    return _provider is not None


def flush(timeout_s: float = 5.0) -> None:
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


# The Prometheus reader hands a scrape its collection through one queue: one scrape at a time.
_scraping = threading.Lock()


def exposition(accept: str | None, registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """What `/metrics` answers: `registry` (this process's `klipnote_*` series once `configure`
    ran, and prometheus_client's `process_*` and `python_*` ones) as the body, and its content
    type: the Prometheus text format 0.0.4, or OpenMetrics 1.0 when `accept` (an HTTP Accept
    value) asks for it (prometheus_client's own negotiation, as Prometheus scrapes)."""
    encoder, content_type = choose_encoder(accept or "")
    with _scraping:
        return encoder(registry), content_type


def _interval_s() -> float:
    try:
        return max(float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "60000")) / 1000, 0.5)
    except ValueError:
        return 60.0


# -- hooks the hosts call -----------------------------------------------------------------------


def published(event: CloudEvent) -> None:
    """An event a hop published: the real-time factor of a transcription, a webhook attempt."""
    kind = catalogue.KINDS_BY_TYPE.get(event.get_type())
    data = event.get_data()
    if not isinstance(data, dict):
        return
    if kind is catalogue.TRANSCRIBED:
        audio, model_s = data.get("audio_seconds"), (data.get("timings") or {}).get("transcribe")
        if isinstance(audio, int | float) and isinstance(model_s, int | float) and audio > 0:
            real_time_factor.record(model_s / audio, {MODEL: str(data.get("model"))})
    elif kind is catalogue.WEBHOOK:
        outcome = {OUTCOME: str(data.get("outcome"))}
        webhook_attempts.add(1, outcome)
        if data.get("outcome") != "delivered":
            webhook_failures.add(1, outcome)


def handled(function: str, event: CloudEvent, seconds: float, ok: bool) -> None:
    """An event a hop handled (or failed to) in `seconds`, publishing included."""
    hop_duration.record(
        seconds, {FUNCTION: function, EVENT_TYPE: event.get_type(), OUTCOME: "ok" if ok else "error"}
    )


class LastEvents(Protocol):
    """Reads the last event of a subject (a function's `Runtime`)."""

    async def last_event(self, stream: catalogue.Stream, subject: str) -> CloudEvent | None: ...


async def job_ended(event: CloudEvent, bus: LastEvents) -> None:
    """A job's end (completed, failed or canceled) as whoever keeps job records took it: the
    job's duration from its request, read back from the JOBS stream. Any other event, or no
    request there (gone by max_age, an id from elsewhere), records nothing. Ingest's projector
    asks for it as its subscription's observer; the middleware itself knows no function."""
    kind = catalogue.KINDS_BY_TYPE.get(event.get_type())
    job_id = lifecycle.job_of(event)
    if kind not in catalogue.JOB_ENDS or job_id is None or not enabled():
        return
    requested_at = await _requested_at(bus, job_id)
    if requested_at is None:
        return
    ended_at = event.get_time() or datetime.now(UTC)
    attributes = {OUTCOME: str(lifecycle.end_state(kind))}
    data = event.get_data()
    if isinstance(data, dict) and isinstance(data.get("model"), str):
        attributes[MODEL] = data["model"]
    job_duration.record(max((ended_at - requested_at).total_seconds(), 0.0), attributes)


async def _requested_at(bus: LastEvents, job_id: str) -> datetime | None:
    try:
        requested = await bus.last_event(catalogue.JOBS, catalogue.REQUESTED.subject(job_id))
    except Exception:  # malformed, an id no subject can carry, NATS away: no duration to tell
        return None
    when = requested.get_time() if requested is not None else None
    if when is None:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# -- queue lag ----------------------------------------------------------------------------------

_pending: dict[tuple[str, str | None], int] = {}


def _observe_lag(options: CallbackOptions) -> Iterable[Observation]:
    for (consumer, model), count in list(_pending.items()):
        attributes = {CONSUMER: consumer} | ({MODEL: model} if model else {})
        yield Observation(count, attributes)


_meter.create_observable_gauge(
    "klipnote.queue.lag",
    callbacks=[_observe_lag],
    unit="{message}",
    description="Messages waiting for a consumer (JetStream num_pending), per model queue.",
)


async def watch_queues(js: JetStreamContext, consumers: Sequence[Consumer], stopping: asyncio.Event) -> None:
    """Keep the lag of `consumers` (a host's own queues) fresh for the gauge, every export
    interval, until `stopping`. A model function reports its own queue this way."""
    if not enabled() or not consumers:
        return
    interval = _interval_s()
    while not stopping.is_set():
        for consumer in consumers:
            model = consumer.durable if consumer.stream == catalogue.TRANSCRIBE else None
            try:
                info = await js.consumer_info(consumer.stream.name, consumer.durable, timeout=2.0)
            except Exception as error:  # reconnecting: keep the last value
                log.debug("no lag for %s: %s", consumer.durable, error)
                continue
            _pending[(consumer.durable, model)] = int(info.num_pending or 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
