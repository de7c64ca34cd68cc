"""Canceling a job (`POST /v1/jobs/{id}/cancel`), on real servers: the session stack (real
nats-server, SeaweedFS, whisperx with whisper-base, optimize, one replica each) for what a model
does with a cancel, and a small ingest-only stack that lets webhooks reach 127.0.0.1 for the
webhook, the event stream and the refusals. Long media is built at test time from the public
clips in ../shared/audio. Every wait is on an event, a record or a consumer's state."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from nats.js import JetStreamContext

from events import binding, catalogue, lifecycle, storage
from events.bus import MSG_ID_HEADER, Publisher, subject_for
from events.harness import Harness
from events.lifecycle import JobState
from events.models import (
    Decoding,
    ObjectRef,
    TranscriptionCanceled,
    TranscriptionCompleted,
    TranscriptionDispatched,
    TranscriptionFailed,
    TranscriptionProgress,
    TranscriptionRequested,
    TranscriptionTranscribed,
)
from events.runtime.function import Runtime
from events.settings import Settings
from functions.ingest.admission import Admission
from functions.ingest.jobs import JobStore, apply
from functions.ingest.router import Router
from functions.ingest.webhooks.signing import webhook_id
from functions.optimize.function import Optimize
from functions.transcriber import JobStopped, Segment, Transcript, TranscriptionFunction
from infra.embedded.stack import EmbeddedStack
from tests.support.cli import klipnote
from tests.support.jobs import (
    finished_job,
    job_events,
    started_stack,
    subject_count,
    submit,
    wait_for_record,
    wait_for_state,
)
from tests.support.media import long_english_clip
from tests.support.paths import API_KEY, AUDIO, WEBHOOK_SECRET
from tests.support.webhook_receiver import Receiver, serving

SHORT = AUDIO / "jfk.flac"
# The events only a model function publishes for a job (SEGMENTS holds the segments).
MODEL_KINDS = (catalogue.PROGRESS, catalogue.LANGUAGE_DETECTED, catalogue.TRANSCRIBED)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 s of English speech (4.8 MB of WAV): the model is busy with it for a while."""
    return long_english_clip(tmp_path_factory.mktemp("cancel") / "long.wav", 150)


def taken(record: dict[str, Any]) -> bool:
    """The model has the job (its first progress report, `fetching`, is in the record)."""
    return record["state"] == "transcribing"


async def segment_count(js: JetStreamContext, job_id: str) -> int:
    subject = catalogue.SEGMENT.subject(job_id)
    info = await js.stream_info(catalogue.SEGMENTS.name, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def model_events(js: JetStreamContext, job_id: str) -> dict[str, int]:
    """How many events of each kind only a model publishes the streams hold for the job."""
    counts = {kind.subject_prefix: await subject_count(js, kind.subject(job_id)) for kind in MODEL_KINDS}
    counts["segments"] = await segment_count(js, job_id)
    return counts


# -- the record ----------------------------------------------------------------------------------


def event_of(kind: catalogue.EventKind, data: Any, event_id: str | None = None) -> Any:
    return binding.new_event(kind, data, function="test", subject=data.job_id, event_id=event_id)


def test_canceled_ends_any_unfinished_job_and_nothing_moves_it_after() -> None:
    job = uuid.uuid4().hex
    requested = event_of(
        catalogue.REQUESTED,
        TranscriptionRequested(job_id=job, media=ObjectRef(bucket="uploads", key=f"{job}/a.wav")),
    )
    record = apply(None, requested)
    progress = event_of(
        catalogue.PROGRESS,
        TranscriptionProgress(job_id=job, run_id="r1", model="whisperx", stage="transcribing", fraction=0.4),
    )
    record = apply(record, progress)
    assert record is not None and record.state is JobState.TRANSCRIBING

    canceled = apply(record, event_of(catalogue.CANCELED, TranscriptionCanceled(job_id=job)))
    assert canceled is not None and canceled.state is JobState.CANCELED and canceled.finished
    assert canceled.stage is None
    late = [
        progress,
        event_of(
            catalogue.TRANSCRIBED,
            TranscriptionTranscribed(
                job_id=job, run_id="r1", model="whisperx", segment_count=1, audio_seconds=1
            ),
        ),
        event_of(
            catalogue.COMPLETED,
            TranscriptionCompleted(job_id=job, run_id="r1", model="whisperx", language="en", results={}),
        ),
        event_of(
            catalogue.FAILED, TranscriptionFailed(job_id=job, code="x", message="late", function="optimize")
        ),
        event_of(catalogue.CANCELED, TranscriptionCanceled(job_id=job)),
    ]
    for event in late:
        assert apply(canceled, event) is None, event.get_type()


# -- what a model does with a cancel (the session stack) -------------------------------------------


async def test_canceled_jobs_never_reach_or_stop_the_model_and_it_takes_the_next(
    api: httpx.AsyncClient, js: JetStreamContext, long_clip: Path
) -> None:
    # One whisperx replica takes one job at a time: the long job holds it while the next waits.
    running = await submit(api, long_clip, language="en")
    await wait_for_record(js, running, taken, timeout=300)
    queued = await submit(api, SHORT, language="en")
    await wait_for_state(js, queued, {"queued"}, timeout=60)

    answer = await api.post(f"/v1/jobs/{queued}/cancel")
    assert answer.status_code == 202, answer.text
    assert answer.json()["id"] == queued and answer.json()["state"] == "canceled"
    assert (await api.get(f"/v1/jobs/{queued}")).json()["state"] == "canceled"  # the next GET agrees
    # The running job: whisperx reports only after its first batch of four 30-s chunks (120 s of
    # this clip), so the model reads the cancel before its first report and stops there.
    canceled_at = time.monotonic()
    answer = await api.post(f"/v1/jobs/{running}/cancel")
    assert answer.status_code == 202 and answer.json()["state"] == "canceled"
    # Queued behind both: once it completes, the model has ended the running one and been past
    # the queued one (their messages are acknowledged, none waits or comes back).
    after = await submit(api, SHORT, language="en")

    done = await finished_job(api, js, after, timeout=540)
    assert done["state"] == "completed" and done["model"] == "whisperx"
    took = time.monotonic() - canceled_at
    info = await js.consumer_info(catalogue.TRANSCRIBE.name, catalogue.model_consumer("whisperx").durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    # The queued job never reached a model: not one event of a model, not one segment.
    assert await model_events(js, queued) == {
        "transcription.progress": 0,
        "transcription.language": 0,
        "transcription.transcribed": 0,
        "segments": 0,
    }
    # The running job ended without `transcribed` (or `failed`), and so without results.
    for job_id in (queued, running):
        for kind in (catalogue.TRANSCRIBED, catalogue.COMPLETED, catalogue.FAILED):
            assert await subject_count(js, kind.subject(job_id)) == 0, (job_id, kind.type)
        events = await job_events(js, job_id, {catalogue.CANCELED.type}, timeout=10)
        assert events[-1].get_type() == catalogue.CANCELED.type
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        assert job["state"] == "canceled" and job["stage"] is None
        assert job["results"] == {} and job["links"] == {}
    segments = await segment_count(js, running)
    print(f"\nthe running job stopped after {segments} segments; cancel to the next job's end {took:.1f} s")

    # A job that completed is not changed by a cancel: 409, naming how it ended.
    refused = await api.post(f"/v1/jobs/{after}/cancel")
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert detail["code"] == "job_finished" and "completed" in detail["message"]
    assert (await api.get(f"/v1/jobs/{after}")).json()["state"] == "completed"
    assert await subject_count(js, catalogue.CANCELED.subject(after)) == 0


async def test_optimize_writes_nothing_for_a_job_canceled_before_its_model_finished(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    settings = stack.settings
    runtime = Runtime(settings, Publisher(js, settings), js)
    canceled, kept = f"late{uuid.uuid4().hex[:8]}", f"kept{uuid.uuid4().hex[:8]}"
    await publish(
        js,
        event_of(catalogue.CANCELED, TranscriptionCanceled(job_id=canceled), lifecycle.canceled_id(canceled)),
    )

    async with Harness(Optimize(settings), runtime=runtime) as optimize:
        outcomes = {}
        for job_id in (canceled, kept):
            done = TranscriptionTranscribed(
                job_id=job_id,
                run_id="r1",
                model="whisperx",
                language="en",
                segment_count=0,
                audio_seconds=1.0,
            )
            outcomes[job_id] = await optimize.run(event_of(catalogue.TRANSCRIBED, done, f"{job_id}:done"))

    assert outcomes[canceled].settlement.action == "ack" and outcomes[canceled].events == []
    # The same event for a job nobody canceled completes it: the check is what made the difference.
    assert [event.get_type() for event in outcomes[kept].events] == [catalogue.COMPLETED.type]
    store = optimize.function.store  # type: ignore[attr-defined]
    assert not list(store.list_objects(settings.results_bucket, prefix=f"{canceled}/"))


async def test_optimize_removes_results_of_a_job_canceled_while_they_were_written(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    # The race for real: the cancel (a DELETE marks the job so too) lands on NATS right after
    # optimize wrote the job's first result, past its first check.
    settings = stack.settings
    runtime = Runtime(settings, Publisher(js, settings), js)
    job_id = f"race{uuid.uuid4().hex[:8]}"
    loop = asyncio.get_running_loop()
    cancel = event_of(catalogue.CANCELED, TranscriptionCanceled(job_id=job_id), lifecycle.canceled_id(job_id))

    class CanceledMidWrite(Optimize):
        def _write(self, job: str, fmt: Any, body: bytes) -> Any:
            written = super()._write(job, fmt, body)
            asyncio.run_coroutine_threadsafe(publish(js, cancel), loop).result(timeout=30)
            return written

    done = TranscriptionTranscribed(
        job_id=job_id, run_id="r1", model="whisperx", language="en", segment_count=0, audio_seconds=1.0
    )
    async with Harness(CanceledMidWrite(settings), runtime=runtime) as optimize:
        outcome = await optimize.run(event_of(catalogue.TRANSCRIBED, done, f"{job_id}:done"))

    assert outcome.settlement.action == "ack" and outcome.events == []  # no `completed`
    store = optimize.function.store  # type: ignore[attr-defined]
    # Recursive: SeaweedFS lists the emptied folder itself when asked for one level.
    assert not list(store.list_objects(settings.results_bucket, prefix=f"{job_id}/", recursive=True))


async def publish(js: JetStreamContext, event: Any) -> Any:
    headers, body = binding.encode(event)
    headers[MSG_ID_HEADER] = event.get_id()
    return await js.publish(subject_for(event), body, headers=headers)


# -- the API, the webhook, the event stream (an ingest-only stack: jobs stay queued) ---------------


@pytest.fixture(scope="module")
def hook_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    settings = Settings(
        webhook_secret=WEBHOOK_SECRET,
        webhook_allowed_hosts=["127.0.0.1"],
        api_key=API_KEY,
        uploads_reconcile_interval_s=0,
        enabled_models=["whisperx"],
    )
    yield from started_stack(tmp_path_factory, "cancel", settings, functions=["ingest"])


@pytest.fixture
async def hapi(hook_stack: EmbeddedStack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=hook_stack.api_url, timeout=30, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(WEBHOOK_SECRET) as hooks:
        yield hooks


async def queued_job(api: httpx.AsyncClient, js: JetStreamContext, **form: str) -> str:
    """A job on the whisperx queue, which no model reads on this stack: it stays queued."""
    job_id = await submit(api, SHORT, language="en", **form)
    await wait_for_state(js, job_id, {"queued"})
    return job_id


async def test_the_webhook_is_called_once_with_the_canceled_job_and_a_repeat_changes_nothing(
    hapi: httpx.AsyncClient, hjs: JetStreamContext, receiver: Receiver
) -> None:
    job_id = await queued_job(
        hapi, hjs, webhook_url=f"{receiver.url}/hook/canceled", metadata=json.dumps({"ticket": "T-7"})
    )

    answer = await hapi.post(f"/v1/jobs/{job_id}/cancel")
    assert answer.status_code == 202 and answer.json()["state"] == "canceled"

    (hit,) = await receiver.wait_hits("canceled", 1)
    assert hit.payload is not None, "the signature did not verify"
    assert hit.headers["webhook-id"] == webhook_id(job_id, catalogue.CANCELED)
    assert hit.payload["type"] == "transcription.canceled"
    data = hit.payload["data"]
    assert data["id"] == job_id and data["state"] == "canceled" and data["model"] == "whisperx"
    assert data["error"] is None and data["links"] == {} and data["metadata"] == {"ticket": "T-7"}
    record = await wait_for_record(
        hjs, job_id, lambda r: (r["webhook"] or {}).get("state") == "delivered", 15
    )
    assert record["state"] == "canceled" and record["webhook"]["attempts"] == 1

    # A repeat answers 200 with the job, unchanged; no second event, so no second call.
    before = (await hapi.get(f"/v1/jobs/{job_id}")).json()
    again = await hapi.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 200 and again.json() == before
    assert await subject_count(hjs, catalogue.CANCELED.subject(job_id)) == 1
    assert len(receiver.hits["canceled"]) == 1


async def test_the_event_stream_ends_with_the_cancel(hapi: httpx.AsyncClient, hjs: JetStreamContext) -> None:
    job_id = await queued_job(hapi, hjs)
    assert (await hapi.post(f"/v1/jobs/{job_id}/cancel")).status_code == 202

    names: list[str] = []
    async with asyncio.timeout(20), hapi.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        async for line in stream.aiter_lines():  # ends when the API closes the stream
            if line.startswith("event: "):
                names.append(line.removeprefix("event: "))
    assert names[0] == catalogue.REQUESTED.type and names[-1] == catalogue.CANCELED.type


async def test_a_canceled_job_is_never_dispatched(hook_stack: EmbeddedStack, hjs: JetStreamContext) -> None:
    """The router dispatches only a job still `requested` (a cancel that overtook the request)."""
    settings = hook_stack.settings
    runtime = Runtime(settings, Publisher(hjs, settings), hjs)
    jobs = JobStore(await hjs.create_key_value(bucket=f"cancel-{uuid.uuid4().hex[:8]}"), runtime)
    router = Router(settings, Admission.from_settings(settings), jobs)
    outs = {}
    for job_id, cancel in ((f"canceled-{uuid.uuid4().hex}", True), (f"kept-{uuid.uuid4().hex}", False)):
        request = TranscriptionRequested(
            job_id=job_id, media=ObjectRef(bucket=settings.uploads_bucket, key=f"{job_id}/a.wav")
        )
        requested = event_of(catalogue.REQUESTED, request, lifecycle.requested_id(job_id))
        await jobs.project(requested, job_id)
        if cancel:
            await jobs.project(event_of(catalogue.CANCELED, TranscriptionCanceled(job_id=job_id)), job_id)
        outs[cancel] = [event.get_type() async for event in router.route(requested)]
    assert outs[True] == []
    assert outs[False] == [catalogue.DISPATCHED.type, catalogue.QUEUED.type]  # as any other job


async def test_a_job_that_failed_is_not_canceled(hapi: httpx.AsyncClient, hjs: JetStreamContext) -> None:
    job_id = await queued_job(hapi, hjs)
    failed = TranscriptionFailed(
        job_id=job_id, code="media_unreadable", message="not audio", function="whisperx"
    )
    await publish(hjs, event_of(catalogue.FAILED, failed, lifecycle.failed_id(job_id)))
    await wait_for_state(hjs, job_id, {"failed"})

    refused = await hapi.post(f"/v1/jobs/{job_id}/cancel")
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert detail["code"] == "job_finished" and "failed" in detail["message"]
    job = (await hapi.get(f"/v1/jobs/{job_id}")).json()
    assert job["state"] == "failed" and job["error"]["code"] == "media_unreadable"
    assert await subject_count(hjs, catalogue.CANCELED.subject(job_id)) == 0


@pytest.mark.parametrize("job_id", ["0123456789abcdef0123456789abcdef", "no.such.job", "x" * 300])
async def test_cancel_of_no_job_is_404(hapi: httpx.AsyncClient, job_id: str) -> None:
    refused = await hapi.post(f"/v1/jobs/{job_id}/cancel")
    assert refused.status_code == 404
    assert refused.json()["detail"]["code"] == "job_not_found"


async def test_klipnote_cancel(
    hook_stack: EmbeddedStack, hapi: httpx.AsyncClient, hjs: JetStreamContext, tmp_path: Path
) -> None:
    job_id = await queued_job(hapi, hjs)
    api = ["--api", hook_stack.api_url]

    done = await asyncio.to_thread(klipnote, "cancel", job_id, *api, cache=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"job {job_id} canceled" in done.stderr
    again = await asyncio.to_thread(klipnote, "cancel", job_id, *api, cache=tmp_path)
    assert again.returncode == 0, again.stderr
    listed = await asyncio.to_thread(klipnote, "jobs", "--state", "canceled", *api, cache=tmp_path)
    assert job_id in listed.stdout and "canceled" in listed.stdout
    watched = await asyncio.to_thread(klipnote, "watch", job_id, *api, cache=tmp_path)
    assert watched.returncode == 1 and "canceled" in watched.stdout and "was canceled" in watched.stderr
    unknown = await asyncio.to_thread(klipnote, "cancel", "0" * 32, *api, cache=tmp_path)
    assert unknown.returncode == 5 and "no job" in unknown.stderr


# -- the skeleton's watch, on cue (the hook stack's NATS and store) ---------------------------------


class EndlessModel:
    """A test double of a model adapter (the one thing here that is not the real model: a real one
    cannot be made to run for as long as a test needs on cue): it reports progress every 20 ms for
    up to a minute, and notes what stopped it."""

    name: str = "whisperx"
    default_language: str | None = "en"

    def __init__(self) -> None:
        self.calls = 0
        self.reports = 0
        self.stopped_by: BaseException | None = None
        self.done = threading.Event()

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
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                on_progress(min(self.reports / 3000, 0.99))
                self.reports += 1
                time.sleep(0.02)  # the model's own pace, not a wait for an event
        except BaseException as error:
            self.stopped_by = error
            raise
        finally:
            self.done.set()
        return Transcript(language="en")


@pytest.fixture(scope="module")
async def endless(
    hook_stack: EmbeddedStack, hjs: JetStreamContext
) -> tuple[TranscriptionFunction, EndlessModel]:
    """The skeleton around EndlessModel, started on the hook stack's bus, checking every 0.1 s."""
    settings = hook_stack.settings.model_copy(update={"cancel_check_interval_s": 0.1})
    model = EndlessModel()
    function = TranscriptionFunction(model, settings)
    await function.start(Runtime(settings, Publisher(hjs, settings), hjs))
    return function, model


async def dispatched(stack: EmbeddedStack) -> Any:
    """A job's work item, its media (jfk.flac) in the stack's uploads bucket."""
    job_id = f"run-{uuid.uuid4().hex}"
    key, body = f"{job_id}/jfk.flac", SHORT.read_bytes()
    store = storage.client(stack.settings)
    await asyncio.to_thread(store.put_object, stack.settings.uploads_bucket, key, io.BytesIO(body), len(body))
    media = ObjectRef(bucket=stack.settings.uploads_bucket, key=key)
    work = TranscriptionDispatched(job_id=job_id, media=media, model="whisperx", language="en")
    return event_of(catalogue.DISPATCHED, work)


async def cancel_on_the_bus(js: JetStreamContext, job_id: str) -> None:
    await publish(
        js, event_of(catalogue.CANCELED, TranscriptionCanceled(job_id=job_id), lifecycle.canceled_id(job_id))
    )


async def test_a_running_model_stops_at_its_next_report_after_the_cancel(
    hook_stack: EmbeddedStack, hjs: JetStreamContext, endless: tuple[TranscriptionFunction, EndlessModel]
) -> None:
    function, model = endless
    work = await dispatched(hook_stack)
    job_id = lifecycle.job_of(work)
    assert job_id is not None
    model.done.clear()
    types: list[str] = []
    async with asyncio.timeout(30):  # the model alone would report for a minute, then transcribe
        async for event in function.handle(work):
            types.append(event.get_type())
            first_report = types.count(catalogue.PROGRESS.type) == 3  # after fetching, decoding
            if event.get_type() == catalogue.PROGRESS.type and first_report:
                assert binding.parse_data(event, TranscriptionProgress).stage == "transcribing"
                await cancel_on_the_bus(hjs, job_id)

    assert isinstance(model.stopped_by, JobStopped)  # raised in the model's thread, at a report
    assert model.done.is_set()  # the run ended after the model's thread did: the next job may start
    assert catalogue.TRANSCRIBED.type not in types and catalogue.FAILED.type not in types
    assert function.health().ready


async def test_a_model_never_starts_a_job_canceled_while_queued(
    hook_stack: EmbeddedStack, hjs: JetStreamContext, endless: tuple[TranscriptionFunction, EndlessModel]
) -> None:
    function, model = endless
    work = await dispatched(hook_stack)
    await cancel_on_the_bus(hjs, str(lifecycle.job_of(work)))
    calls = model.calls

    events = [event async for event in function.handle(work)]

    assert events == [] and model.calls == calls  # not even a `fetching` progress
