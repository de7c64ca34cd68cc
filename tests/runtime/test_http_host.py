"""The HTTP host (what Knative Eventing pushes to) runs the same handler as the JetStream host:
binary and structured CloudEvents are accepted, malformed ones refused with 400 and a reason
(not retried), and the health probes follow the function's readiness."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from cloudevents.core.v1.event import CloudEvent
from nats.js import JetStreamContext

from events import binding, catalogue
from events.bus import subject_matches
from events.reader import read_until
from events.runtime.function import PermanentError
from events.runtime.http import HttpHost
from events.runtime.process import FunctionProcess
from events.runtime.serve import ReceiverUnguarded, serve
from events.settings import Settings
from infra.embedded.stack import EmbeddedStack
from tests.support.handlers import Recorder, make_consumer, valid_event
from tests.support.samples import sample


async def receiver(
    stack: EmbeddedStack, js: JetStreamContext, token: str | None = None, max_body: int | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Recorder]]:
    consumer = await make_consumer(js, stack.settings)
    # The recorder's consumer filters on its own subjects; the HTTP host routes by catalogue
    # subject, so point it at the `queued` events the recorder understands.
    consumer = type(consumer)(consumer.durable, consumer.stream, "transcription.queued.*")
    recorder = Recorder(consumer)
    limits = {"receiver_token": token, "api_max_body_bytes": max_body or stack.settings.api_max_body_bytes}
    process = FunctionProcess(recorder, stack.settings.model_copy(update=limits))
    app = HttpHost(process, receiver=True).app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://function") as client:
        assert (await client.get("/health/readiness")).status_code == 503  # not started yet
        await process.connect()
        task = asyncio.create_task(process.run())
        try:
            await asyncio.wait_for(process.started.wait(), 10)
            yield client, recorder
        finally:
            process.stop()
            await task


async def test_binary_and_structured_events_reach_the_handler(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    async for client, recorder in receiver(stack, js):
        assert (await client.get("/health/liveness")).status_code == 200
        assert (await client.get("/health/readiness")).status_code == 200
        for mode in ("binary", "structured"):
            event = valid_event(f"http-{mode}")
            headers, body = binding.encode(event, mode)
            if mode == "binary":  # over HTTP the data's media type rides in Content-Type
                headers["Content-Type"] = headers.pop("ce-datacontenttype")
            response = await client.post("/", headers=headers, content=body)
            assert response.status_code == 202, response.text
            event_id, data = recorder.seen.get_nowait()
            assert event_id == event.get_id() and data.job_id == f"http-{mode}"


async def test_malformed_events_are_refused_with_400_and_a_reason(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    async for client, recorder in receiver(stack, js):
        response = await client.post(
            "/", headers={"Content-Type": "application/cloudevents+json"}, content=b'{"specversion": "1.0"}'
        )
        assert response.status_code == 400
        assert response.json()["detail"]["code"] == "malformed_event"
        assert (
            "missing required CloudEvents attribute(s): id, source, type"
            in response.json()["detail"]["message"]
        )
        assert recorder.seen.empty()


async def test_with_a_receiver_token_only_its_holder_may_deliver_events(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    async for client, recorder in receiver(stack, js, token="receiver-s3cret"):
        event = valid_event("http-token")
        headers, body = binding.encode(event, "structured")
        for wrong in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic receiver-s3cret"}):
            response = await client.post("/", headers={**headers, **wrong}, content=body)
            assert response.status_code == 401, response.text
            assert response.json()["detail"]["code"] == "unauthorized"
        assert recorder.seen.empty()
        headers["Authorization"] = "Bearer receiver-s3cret"
        assert (await client.post("/", headers=headers, content=body)).status_code == 202
        event_id, _ = recorder.seen.get_nowait()
        assert event_id == event.get_id()


async def test_an_event_over_the_body_limit_is_refused_unread(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    """Before, the receiver read any body whole into memory."""
    async for client, recorder in receiver(stack, js, max_body=2048):
        headers, body = binding.encode(valid_event("http-big"), "structured")
        padded = body[:-1] + b', "padding": "' + b"x" * 4096 + b'"}'
        response = await client.post("/", headers=headers, content=padded)
        assert response.status_code == 413 and response.json()["detail"]["code"] == "body_too_large"

        response = await client.post("/", headers=headers, content=_chunked(padded, 512))
        assert response.status_code == 413
        assert recorder.seen.empty()


async def _chunked(body: bytes, size: int) -> AsyncIterator[bytes]:
    """`body` streamed in parts, with no Content-Length: counted as it arrives."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_ingest_under_the_http_transport_needs_a_receiver_token() -> None:
    """ingest serves its public API and, under the HTTP transport, the CloudEvents receiver on
    the same port: without a token anyone reaching the API could push any event past the key."""
    with pytest.raises(ReceiverUnguarded, match="RECEIVER_TOKEN"):
        asyncio.run(serve("ingest", Settings(), "http"))


def test_subject_matching_follows_nats_wildcards() -> None:
    assert subject_matches("transcription.>", "transcription.completed.j1")
    assert subject_matches("transcription.*.j1", "transcription.completed.j1")
    assert not subject_matches("transcription.>", "transcription")
    assert not subject_matches("transcribe.whisperx", "transcribe.belle2")
    assert not subject_matches("transcription.*", "transcription.completed.j1")


class Refuser(Recorder):
    """A function whose handler refuses every event as a PermanentError (the event is wrong)."""

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        raise PermanentError("media_invalid", "this media can never be transcribed")
        yield


async def test_a_job_step_refused_for_good_fails_its_job_as_on_jetstream(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    """Knative sends a 4xx to the dead-letter sink without retrying, so the HTTP host must do what
    the JetStream host does when it dead-letters: fail the job, or it waits for ever."""
    consumer = await make_consumer(js, stack.settings)
    consumer = type(consumer)(consumer.durable, consumer.stream, "transcribe.*")
    process = FunctionProcess(Refuser(consumer), stack.settings)
    app = HttpHost(process, receiver=True).app
    job_id = f"http-refused-{uuid.uuid4().hex[:8]}"
    data = sample(catalogue.DISPATCHED).model_copy(update={"job_id": job_id})
    event = binding.new_event(catalogue.DISPATCHED, data, function="test", subject=job_id)
    await process.connect()
    task = asyncio.create_task(process.run())
    try:
        await asyncio.wait_for(process.started.wait(), 10)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://function") as client:
            headers, body = binding.encode(event, "structured")
            response = await client.post("/", headers=headers, content=body)
        assert response.status_code == 400
        assert response.json()["detail"]["code"] == "media_invalid"
        failed = await read_until(js, catalogue.FAILED.subject(job_id), lambda msg: True, timeout=10)
        data_out = binding.decode(failed[0].headers, failed[0].data).get_data()
        assert data_out["code"] == "gave_up" and "media_invalid" in data_out["message"]
    finally:
        process.stop()
        await task
