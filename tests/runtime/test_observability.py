"""One job is one OpenTelemetry trace across every hop and process, with a span per stage; the
metrics and the log lines follow the job too.

A stack of its own (ingest, whisperx on the bundled model, optimize) exports by the standard
OTEL_* variables to a real OTLP/HTTP receiver in this process, which decodes the protobuf
requests; one real job (JFK's speech, with a webhook) goes through the API, and the tests wait
on what the receiver gets, never on sleeps.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from events import binding, catalogue, logs, tracing
from events.settings import Settings
from infra.embedded.stack import EmbeddedStack
from tests.support.jobs import job_events, started_stack
from tests.support.paths import API_KEY, AUDIO, WEBHOOK_SECRET
from tests.support.webhook_receiver import Receiver, serving

T = TypeVar("T")

SERVICES = {"ingest": "klipnote-ingest", "whisperx": "klipnote-whisperx", "optimize": "klipnote-optimize"}
# Which process opens which stage span.
STAGES = {
    "download": "whisperx",
    "decode": "whisperx",
    "model": "whisperx",
    "segments": "whisperx",
    "optimize": "optimize",
    "upload": "optimize",
    "webhook": "ingest",
}
HEADER_SECRET, QUERY_SECRET = "header-secret-value", "query-secret-value"


# -- a real OTLP/HTTP receiver -------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Point:
    service: str
    metric: str
    unit: str
    attributes: dict[str, Any]
    value: float  # a gauge's or counter's value; a histogram's count
    total: float | None = None  # a histogram's sum


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class Collector:
    """What the functions exported, decoded from OTLP/HTTP protobuf (traces and metrics)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.points: list[Point] = []
        self.changed = threading.Condition()
        self.url = ""

    def take(self, path: str, body: bytes) -> bytes:
        if path == "/v1/traces":
            traces = ExportTraceServiceRequest.FromString(body)
            spans = [
                Span(
                    _attributes(resource.resource.attributes)["service.name"],
                    span.name,
                    span.trace_id.hex(),
                    span.span_id.hex(),
                    span.parent_span_id.hex(),
                    _attributes(span.attributes),
                )
                for resource in traces.resource_spans
                for scope in resource.scope_spans
                for span in scope.spans
            ]
            with self.changed:
                self.spans.extend(spans)
                self.changed.notify_all()
            return ExportTraceServiceResponse().SerializeToString()
        if path == "/v1/metrics":
            points = []
            for resource in ExportMetricsServiceRequest.FromString(body).resource_metrics:
                service = _attributes(resource.resource.attributes)["service.name"]
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        points.extend(_points(service, metric))
            with self.changed:
                self.points.extend(points)
                self.changed.notify_all()
            return ExportMetricsServiceResponse().SerializeToString()
        raise LookupError(path)

    def wait_for(self, found: Callable[[Collector], T | None], timeout: float = 90) -> T:
        """The first non-None answer of `found` on what has arrived, woken by each export."""
        with self.changed:
            result = self.changed.wait_for(lambda: found(self), timeout)
        assert result is not None, f"not exported within {timeout:g}s"
        return result


def _points(service: str, metric: Any) -> list[Point]:
    kind = metric.WhichOneof("data")
    if kind in ("gauge", "sum"):
        return [
            Point(service, metric.name, metric.unit, _attributes(p.attributes), p.as_double or p.as_int)
            for p in getattr(metric, kind).data_points
        ]
    if kind == "histogram":
        return [
            Point(service, metric.name, metric.unit, _attributes(p.attributes), p.count, p.sum)
            for p in metric.histogram.data_points
        ]
    return []


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    received = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            try:
                answer = received.take(self.path, body)
            except LookupError:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    server.shutdown()
    server.server_close()


# -- a stack exporting to it, and one job through it ---------------------------------------------


@pytest.fixture(scope="module")
def traced_stack(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path, collector: Collector
) -> Iterator[EmbeddedStack]:
    settings = Settings(
        model_cache_dir=model_cache,
        enabled_models=["whisperx"],
        api_key=API_KEY,
        webhook_secret=WEBHOOK_SECRET,
        webhook_allowed_hosts=["127.0.0.1"],
        uploads_reconcile_interval_s=0,
    )
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms: spans leave soon after they end
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    }
    yield from started_stack(tmp_path_factory, "traced", settings, extra_env=otel)


@pytest.fixture(scope="module")
async def hooks() -> AsyncIterator[Receiver]:
    async with serving(WEBHOOK_SECRET) as receiver:
        yield receiver


@dataclass(frozen=True)
class Job:
    id: str
    trace_id: str


@pytest.fixture(scope="module")
async def job(traced_stack: EmbeddedStack, hooks: Receiver) -> Job:
    """One real job, with a webhook, through the API until its webhook is delivered."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    form = {
        "language": "en",
        "webhook_url": f"{hooks.url}/hook/traced?token={QUERY_SECRET}",
        "webhook_header": f"X-Token: {HEADER_SECRET}",
    }
    async with httpx.AsyncClient(base_url=traced_stack.api_url, headers=headers, timeout=60) as api:
        with open(AUDIO / "jfk.flac", "rb") as media:
            response = await api.post("/v1/jobs", files={"file": ("jfk.flac", media)}, data=form)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    nc = await nats.connect(traced_stack.settings.nats_url)
    try:
        events = await job_events(nc.jetstream(), job_id, {catalogue.COMPLETED.type}, timeout=240)
    finally:
        await nc.close()
    await hooks.wait_hits("traced", 1, timeout=60)
    trace_ids = {tracing.trace_id(binding.traceparent_of(event)) for event in events}
    assert len(trace_ids) == 1 and None not in trace_ids, trace_ids  # every event, one trace
    return Job(job_id, trace_ids.pop() or "")


def whole_trace(trace_id: str) -> Callable[[Collector], list[Span] | None]:
    """The trace's spans once every stage has arrived and every parent is there too."""

    def found(collector: Collector) -> list[Span] | None:
        spans = [span for span in collector.spans if span.trace_id == trace_id]
        ids = {span.span_id for span in spans}
        named = {(span.name, span.service) for span in spans}
        if not all((name, SERVICES[where]) in named for name, where in STAGES.items()):
            return None
        if not any(not span.parent_id for span in spans):
            return None
        return spans if all(span.parent_id in ids for span in spans if span.parent_id) else None

    return found


# -- the tests -----------------------------------------------------------------------------------


async def test_one_trace_per_job_across_every_hop_and_process(job: Job, collector: Collector) -> None:
    spans = collector.wait_for(whole_trace(job.trace_id))

    assert {span.service for span in spans} >= set(SERVICES.values())
    roots = [span for span in spans if not span.parent_id]
    assert len(roots) == 1 and roots[0].service == SERVICES["ingest"], roots
    # One tree: from every span, its parents lead to the root.
    by_id = {span.span_id: span for span in spans}
    for span in spans:
        seen = set()
        while span.parent_id:
            assert span.span_id not in seen, "a cycle in the parentage"
            seen.add(span.span_id)
            span = by_id[span.parent_id]
        assert span == roots[0]
    # Every hop's span continues the trace in its own process, under the span that published.
    hops = [span for span in spans if span.parent_id and span.name not in STAGES]
    assert {span.service for span in hops} >= set(SERVICES.values())
    model_hop = next(span for span in hops if span.name.endswith(catalogue.DISPATCHED.type))
    assert by_id[model_hop.parent_id].service == SERVICES["ingest"]
    # The stages are children of their process's hop span.
    for span in spans:
        if span.name in STAGES:
            hop = by_id[span.parent_id]
            assert hop.service == span.service == SERVICES[STAGES[span.name]], span
            assert hop.name not in STAGES and span.attributes[tracing.JOB_ID] == job.id
    # No span of this job is in another trace.
    stray = [
        s
        for s in collector.spans
        if s.attributes.get(tracing.JOB_ID) == job.id and s.trace_id != job.trace_id
    ]
    assert not stray


async def test_stage_spans_carry_what_a_reader_needs_and_no_secrets(job: Job, collector: Collector) -> None:
    spans = collector.wait_for(whole_trace(job.trace_id))
    stage = {span.name: span for span in spans if span.name in STAGES}

    model = stage["model"].attributes
    assert model[tracing.MODEL] == "whisperx"
    assert model[tracing.RUN_ID] == stage["segments"].attributes[tracing.RUN_ID]
    assert model[tracing.RUN_ID] == stage["upload"].attributes[tracing.RUN_ID]
    assert 10.5 < model[tracing.AUDIO_SECONDS] < 11.5  # JFK speaks for 11 s
    assert 0 < model[tracing.RTF] < 10
    assert stage["segments"].attributes["klipnote.segment_count"] >= 1
    assert stage["webhook"].attributes["http.response.status_code"] == 200
    assert stage["webhook"].attributes["klipnote.webhook.attempt"] == 1
    # Never a header value or a URL's query, on any span of the job.
    exported = json.dumps([span.attributes for span in spans])
    assert HEADER_SECRET not in exported and QUERY_SECRET not in exported


async def test_metrics_arrive_by_the_same_configuration(job: Job, collector: Collector) -> None:
    def arrived(collector: Collector) -> dict[str, Point] | None:
        wanted = {
            "klipnote.job.duration": lambda p: (
                p.service == SERVICES["ingest"] and p.attributes.get("klipnote.outcome") == "completed"
            ),
            "klipnote.transcription.rtf": lambda p: (
                p.service == SERVICES["whisperx"] and p.attributes.get("klipnote.model") == "whisperx"
            ),
            "klipnote.queue.lag": lambda p: p.attributes.get("klipnote.model") == "whisperx",
            "klipnote.webhook.attempts": lambda p: p.attributes.get("klipnote.outcome") == "delivered",
            "klipnote.hop.duration": lambda p: p.service == SERVICES["optimize"],
        }
        found = {}
        for name, matches in wanted.items():
            point = next((p for p in collector.points if p.metric == name and matches(p)), None)
            if point is None:
                return None
            found[name] = point
        return found

    points = collector.wait_for(arrived)
    duration, rtf = points["klipnote.job.duration"], points["klipnote.transcription.rtf"]
    assert duration.unit == "s" and duration.value >= 1 and duration.total is not None and duration.total > 0
    assert rtf.value >= 1 and rtf.total is not None and rtf.total > 0
    assert points["klipnote.queue.lag"].unit == "{message}" and points["klipnote.queue.lag"].value >= 0
    assert points["klipnote.webhook.attempts"].value >= 1


async def test_log_lines_of_a_hop_carry_the_job_and_its_trace(
    job: Job, collector: Collector, traced_stack: EmbeddedStack
) -> None:
    collector.wait_for(whole_trace(job.trace_id))  # every hop has ended (and logged)

    def lines(function: str) -> list[dict[str, Any]]:
        text = traced_stack.child(function).log_path.read_text(errors="replace")
        parsed = []
        for line in text.splitlines():
            if line.startswith("{"):
                parsed.append(json.loads(line))
        return [line for line in parsed if line.get("job_id") == job.id]

    whisperx, ingest = lines("whisperx"), lines("ingest")
    for line in whisperx + ingest:
        assert line["trace_id"] == job.trace_id, line
    loggers = {line["logger"] for line in whisperx}
    assert {"functions.transcriber", "events.runtime.jetstream"} <= loggers, loggers
    assert any(line["logger"] == "functions.ingest.webhooks" for line in ingest), ingest


# -- in one process ------------------------------------------------------------------------------


@pytest.fixture
def spans() -> InMemorySpanExporter:
    tracing.tracer("tests")  # the process's provider (ids, no export) unless one is set
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def test_a_stage_is_a_child_of_the_hop_that_stays_current(spans: InMemorySpanExporter) -> None:
    with tracing.tracer("tests").start_as_current_span("hop") as hop:
        with tracing.stage("decode", {tracing.JOB_ID: "job-1", tracing.RUN_ID: None}) as stage:
            # Events published meanwhile continue the hop, not the stage.
            assert trace.get_current_span() is hop
            assert stage.get_span_context().trace_id == hop.get_span_context().trace_id
    finished = {span.name: span for span in spans.get_finished_spans()}
    assert finished["decode"].parent is not None
    assert finished["decode"].parent.span_id == hop.get_span_context().span_id
    assert dict(finished["decode"].attributes or {}) == {tracing.JOB_ID: "job-1"}


def test_a_log_line_takes_job_and_trace_from_where_it_is_logged(spans: InMemorySpanExporter) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonLines("tests"))
    handler.addFilter(logs.JobContext())
    logger = logging.getLogger(f"tests.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    with logs.job("job-7"), tracing.tracer("tests").start_as_current_span("hop") as hop:
        logger.info("inside")
    logger.info("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["job_id"] == "job-7"
    assert inside["trace_id"] == trace.format_trace_id(hop.get_span_context().trace_id)
    assert "job_id" not in outside and "trace_id" not in outside


def test_exporters_follow_the_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.exporters("traces") == []  # nothing set: nothing exported
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    assert [type(e) for e in tracing.exporters("traces")] == [OTLPSpanExporter]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.exporters("traces") == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    assert [type(e) for e in tracing.exporters("traces")] == [ConsoleSpanExporter, OTLPSpanExporter]
    monkeypatch.setenv("OTEL_SERVICE_NAME", "transcriber-eu")
    assert tracing.resource("whisperx").attributes["service.name"] == "transcriber-eu"
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    assert tracing.resource("whisperx").attributes["service.name"] == "klipnote-whisperx"
