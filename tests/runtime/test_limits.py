"""No input keeps a worker busy past its limits, on the session's real nats-server and store:

- a model that stops making progress (a test double: the one thing here that is not the real
  model, because a real one cannot be made to hang on cue) fails its job as
  `transcription_stalled` after STALL_TIMEOUT_S; its message is settled, not redelivered; the worker
  takes no job while the stuck model thread runs, says why on its readiness, and takes the next
  job once the thread ends;
- the host keeps a message in progress only while its handler makes progress: a handler silent
  for longer than STALL_TIMEOUT_S loses its heartbeat and the message comes back.

The media limits themselves (playlists, bombs, decode time) are in test_media.py, and on the
running stack in test_media_cases.py."""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import numpy as np
import pytest
from cloudevents.core.v1.event import CloudEvent
from nats.js import JetStreamContext

from events import binding, catalogue, provision, storage
from events.models import Decoding, ObjectRef, TranscriptionDispatched
from events.runtime.function import alive
from functions.ingest.ids import object_job_id
from functions.transcriber import Segment, Transcript, TranscriptionFunction
from infra.embedded.stack import EmbeddedStack
from tests.support.handlers import Recorder, jetstream_host, make_consumer, running, valid_event
from tests.support.jobs import messages_until, wait_for_job_end
from tests.support.paths import AUDIO
from tests.support.uploads import minio_notification, notify


class StallingModel:
    """A test double of a model adapter whose first job hangs (no segment, no progress) until the
    test releases it, as a wedged GPU kernel would; later jobs transcribe at once."""

    default_language = "en"  # the job names no language; this model needs none detected

    def __init__(self, name: str) -> None:
        self.name = name
        self.release = threading.Event()
        self.stuck = threading.Event()
        self.calls = 0

    def load(self) -> None:
        return None

    def detect_language(self, audio: np.ndarray) -> dict[str, float]:
        return {"en": 1.0}

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        on_segment: Callable[[Segment], None],
        on_progress: Callable[[float], None],
        *,
        decoding: Decoding | None = None,
    ) -> Transcript:
        self.calls += 1
        if self.calls == 1:
            on_progress(0.1)
            self.stuck.set()
            self.release.wait(timeout=120)  # never reports again: the skeleton cannot stop it
            return Transcript(language="en")
        segment = Segment(start=0.0, end=1.0, text="done", language="en")
        on_segment(segment)
        return Transcript(language="en", segments=[segment])


async def dispatch(js: JetStreamContext, stack: EmbeddedStack, model: str, job_id: str) -> None:
    key = f"tests/limits/{job_id}.flac"
    data = (AUDIO / "jfk.flac").read_bytes()
    storage.client(stack.settings).put_object(stack.settings.uploads_bucket, key, io.BytesIO(data), len(data))
    job = TranscriptionDispatched(
        job_id=job_id, media=ObjectRef(bucket=stack.settings.uploads_bucket, key=key), model=model
    )
    event = binding.new_event(catalogue.DISPATCHED, job, function="test", subject=job_id)
    headers, body = binding.encode(event)
    await js.publish(catalogue.DISPATCHED.subject(model), body, headers=headers)


async def test_a_stalled_model_fails_its_job_and_frees_the_worker_once_it_stops(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    name = f"stall{uuid.uuid4().hex[:8]}"
    settings = stack.settings.model_copy(update={"stall_timeout_s": 2.0})
    consumer = catalogue.model_consumer(name)
    await js.add_consumer(catalogue.TRANSCRIBE.name, provision.consumer_config(consumer, settings))
    model = StallingModel(name)
    function = TranscriptionFunction(model, settings)
    host = jetstream_host(function, settings)
    task = await running(host)
    first, second = f"{name}-first", f"{name}-second"
    try:
        await dispatch(js, stack, name, first)
        failed = await wait_for_job_end(js, first, timeout=60)
        assert failed.get_type() == catalogue.FAILED.type
        data = failed.get_data()
        assert data["code"] == "transcription_stalled" and "STALL_TIMEOUT_S" in data["message"]

        # The model thread still hangs: the worker says so and takes nothing.
        assert model.stuck.is_set() and not function.health().ready
        assert function.problem is not None and "stalled" in function.problem
        await dispatch(js, stack, name, second)
        info = await js.consumer_info(catalogue.TRANSCRIBE.name, consumer.durable)
        assert info.num_pending == 1  # the next job waits on the queue, for this or another worker

        model.release.set()  # the thread ends: the worker is free again and takes the next job
        transcribed = await messages_until(
            js,
            catalogue.TRANSCRIBED.subject(second),
            lambda msg: True,
            timeout=60,
        )
        assert binding.decode(transcribed[0].headers, transcribed[0].data).get_data()["segment_count"] == 1
        assert function.health().ready and model.calls == 2
        host.process.stop()
        await task  # every message in hand is settled when the host has stopped
        info = await js.consumer_info(catalogue.TRANSCRIBE.name, consumer.durable)
        # Both settled (the stalled one too: failed, not left to come back), neither delivered twice.
        assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (0, 0, 0)
    finally:
        model.release.set()
        host.process.stop()
        await task
        await js.delete_consumer(catalogue.TRANSCRIBE.name, consumer.durable)


class Silent(Recorder):
    """A handler that hangs without a word, or (`busy`) hangs while saying it is alive."""

    def __init__(self, consumer: catalogue.Consumer, busy: bool) -> None:
        super().__init__(consumer)
        self.name, self.busy = "silent", busy
        self.deliveries: asyncio.Queue[str] = asyncio.Queue()

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        await self.deliveries.put(event.get_id())
        while True:
            await asyncio.sleep(0.2)
            if self.busy:
                alive()
        yield event


async def test_heartbeats_follow_progress_not_a_timer(stack: EmbeddedStack, js: JetStreamContext) -> None:
    ack_wait = 2.0
    settings = stack.settings.model_copy(update={"ack_wait_s": ack_wait, "stall_timeout_s": 1.0})
    for busy in (False, True):
        consumer = await make_consumer(js, settings)
        # Two workers on one queue: the first takes the message and hangs; the second gets it only
        # if the first stops heartbeating.
        first, second = Silent(consumer, busy), Silent(consumer, busy)
        hosts = [jetstream_host(function, settings, drain_grace_s=0.1) for function in (first, second)]
        tasks = [await running(hosts[0])]
        try:
            event = valid_event(f"silent-{busy}")
            headers, body = binding.encode(event)
            await js.publish(consumer.stream.subjects[0].replace(">", "job"), body, headers=headers)
            assert await asyncio.wait_for(first.deliveries.get(), timeout=30) == event.get_id()
            tasks.append(await running(hosts[1]))
            if busy:
                # Alive all along: never handed out again, however long it runs.
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(second.deliveries.get(), timeout=3 * ack_wait)
            else:
                # Silent past STALL_TIMEOUT_S: no heartbeat, so the server hands it out again.
                assert (
                    await asyncio.wait_for(second.deliveries.get(), timeout=10 * ack_wait) == event.get_id()
                )
        finally:
            for host in hosts:
                host.process.stop()
            await asyncio.gather(*tasks)


async def test_an_object_over_the_size_limit_is_refused_whichever_way_it_comes(
    stack: EmbeddedStack, js: JetStreamContext, api: httpx.AsyncClient
) -> None:
    # The session stack allows 8 MiB (MAX_UPLOAD_BYTES); this object is 9 MiB.
    limit = stack.settings.max_upload_bytes
    key = f"tests/limits/too-large-{uuid.uuid4().hex[:8]}.wav"
    data = bytes(limit + 2**20)
    stored = storage.client(stack.settings).put_object(
        stack.settings.uploads_bucket, key, io.BytesIO(data), len(data)
    )
    # Named by reference: refused at once.
    response = await api.post("/v1/jobs", data={"media": f"s3://{stack.settings.uploads_bucket}/{key}"})
    assert response.status_code == 413, response.text
    assert response.json()["detail"]["code"] == "media_too_large"
    # Dropped into the bucket (MinIO's notifier stood in for): the job fails before a byte is read.
    await notify(js, minio_notification(key, stored.etag, size=len(data)))
    failed = await wait_for_job_end(
        js, object_job_id(stack.settings.uploads_bucket, key, stored.etag), timeout=60
    )
    assert failed.get_type() == catalogue.FAILED.type
    assert failed.get_data()["code"] == "media_too_large"
    assert "MAX_UPLOAD_BYTES" in failed.get_data()["message"]
