"""Prometheus's `/metrics` on each function's health port: the OpenTelemetry metrics of
events/metrics.py, read by the OpenTelemetry Prometheus exporter and served by the HTTP host in
the Prometheus text format (OpenMetrics on request), with no OTLP export configured at all.

On the session stack (real nats-server, SeaweedFS, whisper-base): every function answers in a
format prometheus_client's own parsers read; one real job (a short recording of human speech)
moves the job, model and hop figures of the functions it passed; no series carries a job id,
and only the labels events/metrics.py allows appear. In this process: the same meter provider
feeds a push exporter and the Prometheus reader at once, and a job id passed as an attribute is
dropped before either sees it.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from events import metrics, tracing
from events.runtime.http import METRICS_PATH
from infra.embedded.stack import EmbeddedStack
from tests.support.jobs import finished_job, submit
from tests.support.paths import AUDIO

# The Prometheus names of events/metrics.py's instruments (OpenTelemetry's Prometheus
# compatibility rules: dots to underscores, the unit `s` as `_seconds`, counters `_total`), as
# docs/observability.md lists them; a family's name, as the parser gives it, has no `_total`.
JOB_DURATION = "klipnote_job_duration_seconds"
RTF = "klipnote_transcription_rtf"
HOP_DURATION = "klipnote_hop_duration_seconds"
QUEUE_LAG = "klipnote_queue_lag"
WEBHOOK_ATTEMPTS = "klipnote_webhook_attempts"
# The labels a klipnote series may carry: events/metrics.py's LABELS, a histogram's bucket bound,
# and the instrumentation scope the exporter adds to every series.
ALLOWED_LABELS = {label.replace(".", "_") for label in metrics.LABELS} | {
    "le",
    "otel_scope_name",
    "otel_scope_version",
    "otel_scope_schema_url",
}
FUNCTIONS = ("ingest", "whisperx", "optimize")
CLIP = AUDIO / "dev" / "en_arctic_axb_a0004.wav"  # 2.8 s of read English speech (CMU ARCTIC)
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Scrape:
    """One function's `/metrics`: the body as served, and its samples by family."""

    text: str
    families: dict[str, list[tuple[str, dict[str, str], float]]]

    def total(self, sample: str, **labels: str) -> float:
        """The sum of the samples named `sample` whose labels include `labels`."""
        return sum(
            value
            for samples in self.families.values()
            for name, found, value in samples
            if name == sample and labels.items() <= found.items()
        )


def metrics_url(stack: EmbeddedStack, function: str) -> str:
    """Where Prometheus scrapes `function` on the stack: its health port (ingest's is the API's)."""
    return f"http://127.0.0.1:{stack.ports.health[function]}{METRICS_PATH}"


async def scrape(stack: EmbeddedStack, function: str) -> Scrape:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(metrics_url(stack, function))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == TEXT_FORMAT
    families = {
        family.name: [(sample.name, sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(response.text)
    }
    return Scrape(response.text, families)


async def scraped_until(
    stack: EmbeddedStack, function: str, done: Callable[[Scrape], bool], timeout: float = 30
) -> Scrape:
    """`function`'s metrics once `done` holds for them. A scrape has no watch: this polls the
    condition (a figure is recorded just after the event that tells a test it is due)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await scrape(stack, function)
        if done(found):
            return found
        assert time.monotonic() < deadline, f"{function}'s /metrics never met the condition:\n{found.text}"
        await asyncio.sleep(0.2)


def klipnote_labels(found: Scrape) -> set[str]:
    return {
        label
        for family, samples in found.families.items()
        if family.startswith("klipnote_")
        for _, labels, _ in samples
        for label in labels
    }


async def test_every_function_serves_prometheus_metrics_on_its_health_port(stack: EmbeddedStack) -> None:
    for function in FUNCTIONS:
        # Each consuming host reads its queues' lag as it starts: the gauge is there with no job.
        found = await scraped_until(stack, function, lambda found: QUEUE_LAG in found.families)
        assert klipnote_labels(found) <= ALLOWED_LABELS, function
        # The resource the OTLP export would carry, as Prometheus's `target_info`.
        (info,) = [labels for name, labels, _ in found.families["target_info"] if name == "target_info"]
        assert info["service_name"] == f"klipnote-{function}"
        # prometheus_client's own series of the process, from the same registry.
        assert "process_resident_memory_bytes" in found.families

    # OpenMetrics to a scraper that asks for it (Prometheus does), readable by its strict parser.
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            metrics_url(stack, "whisperx"), headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert QUEUE_LAG in {family.name for family in openmetrics_families(response.text)}


async def test_a_job_moves_the_figures_of_every_function_it_passed_and_names_none(
    stack: EmbeddedStack, api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    before = {function: await scrape(stack, function) for function in FUNCTIONS}
    job_id = await submit(api, CLIP)
    job = await finished_job(api, js, job_id)
    assert job["state"] == "completed", job
    model = job["model"]

    def grew(function: str, sample: str, **labels: str) -> Callable[[Scrape], bool]:
        return lambda found: found.total(sample, **labels) > before[function].total(sample, **labels)

    # ingest: the job's duration, by model and outcome, once its projector has taken the end.
    ingest = await scraped_until(
        stack,
        "ingest",
        grew("ingest", f"{JOB_DURATION}_count", klipnote_model=model, klipnote_outcome="completed"),
    )
    # The model: its real-time factor; and a hop of each function the job passed.
    whisperx = await scraped_until(stack, "whisperx", grew("whisperx", f"{RTF}_count", klipnote_model=model))
    after = {"ingest": ingest, "whisperx": whisperx}
    for function in FUNCTIONS:
        after[function] = await scraped_until(
            stack,
            function,
            grew(function, f"{HOP_DURATION}_count", klipnote_function=function, klipnote_outcome="ok"),
        )
    seconds = ingest.total(f"{JOB_DURATION}_sum", klipnote_model=model) - before["ingest"].total(
        f"{JOB_DURATION}_sum", klipnote_model=model
    )
    assert 0 < seconds < 300, seconds
    # Every bucket bound events/metrics.py gives the job's duration, up to an hour.
    bounds = {
        float(labels["le"]) for name, labels, _ in ingest.families[JOB_DURATION] if name.endswith("_bucket")
    }
    assert {0.01, 3600.0, math.inf} <= bounds

    for function, found in after.items():
        assert job_id not in found.text, f"{function}'s /metrics names the job"
        assert klipnote_labels(found) <= ALLOWED_LABELS, function


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[ExportMetricsServiceRequest]]]:
    """A real OTLP/HTTP metrics endpoint in this process: its URL, and the requests it took."""
    received: list[ExportMetricsServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received.append(ExportMetricsServiceRequest.FromString(body))
            answer = ExportMetricsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/metrics", received
    finally:
        server.shutdown()
        server.server_close()


def test_otlp_and_prometheus_read_one_provider_and_neither_sees_a_job_id(
    monkeypatch: pytest.MonkeyPatch, otlp_receiver: tuple[str, list[ExportMetricsServiceRequest]]
) -> None:
    """The provider a function process runs with, built here with OTLP export configured and
    `prometheus` named too (which adds no reader, nor a server of its own: `/metrics` is always
    there): both readers take the same figure, and the job id and run id passed with it as
    attributes reach neither."""
    url, received = otlp_receiver
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus,otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", url)
    assert [type(exporter) for exporter in tracing.exporters("metrics")] == [OTLPMetricExporter]
    registry = CollectorRegistry()
    provider = metrics.meter_provider("probe", registry)
    assert provider is not None
    try:
        attempts = provider.get_meter("klipnote").create_counter(
            "klipnote.webhook.attempts", unit="{attempt}"
        )
        ids = {tracing.JOB_ID: "job-0b5e7d", tracing.RUN_ID: "run-4c1a9f"}
        attempts.add(1, {metrics.OUTCOME: "delivered", **ids})
        body, content_type = metrics.exposition(None, registry)
        assert provider.force_flush()  # the periodic reader exports now, synchronously
    finally:
        provider.shutdown()

    assert content_type == TEXT_FORMAT
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    assert set(families) == {"target_info", WEBHOOK_ATTEMPTS}
    ((_, labels, value),) = [(s.name, s.labels, s.value) for s in families[WEBHOOK_ATTEMPTS].samples]
    assert value == 1 and labels["klipnote_outcome"] == "delivered"
    assert set(labels) <= ALLOWED_LABELS

    (pushed,) = {
        (point.as_int, tuple((pair.key, pair.value.string_value) for pair in point.attributes))
        for request in received
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "klipnote.webhook.attempts"
        for point in metric.sum.data_points
    }
    assert pushed == (1, ((metrics.OUTCOME, "delivered"),))


def test_an_sdk_disabled_by_otel_sdk_disabled_has_no_meter_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    registry = CollectorRegistry()
    assert metrics.meter_provider("probe", registry) is None
    body, _ = metrics.exposition(None, registry)
    assert body == b""
