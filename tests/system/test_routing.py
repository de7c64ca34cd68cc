"""Routing by what is spoken, on the default embedded stack (whisperx and belle2): a request that
names neither model nor language goes to the default model, whose function listens to the file
and hands it over to belle2 when it hears Mandarin; ingest re-dispatches it once, in one trace.
The record says what was heard and why the model was chosen. Also the routing policy and the
projector's side of a hand-over, without a stack."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from minio import Minio
from nats.js import JetStreamContext

from events import binding, catalogue, routing, storage
from events.lifecycle import JobState
from events.models import (
    LanguageDetected,
    ObjectRef,
    TranscriptionProgress,
    TranscriptionQueued,
    TranscriptionRequested,
)
from events.settings import Settings
from functions.ingest.ids import object_job_id
from functions.ingest.jobs import apply
from functions.ingest.schema import JobRecord
from infra.embedded.stack import EmbeddedStack
from tests.support.jobs import finished_job, job_events, submit
from tests.support.paths import AUDIO, ffmpeg
from tests.support.uploads import minio_notification, notify, put


def spoken_clips() -> list[tuple[Path, str]]:
    """Every clip of ../shared/audio with speech, and its language (dev/: the name's prefix;
    the others: SOURCES.md)."""
    top = {"jfk.flac": "en", "librispeech-1995-1837-0001.wav": "en",
           "aishell-BAC009S0724W0121.wav": "zh", "sr-chinese.flac": "zh"}  # fmt: skip
    clips = [(AUDIO / name, language) for name, language in top.items()]
    dev = sorted(p for p in (AUDIO / "dev").iterdir() if p.suffix in (".wav", ".flac"))
    return clips + [(path, path.name[:2]) for path in dev]


MODEL_FOR = {"en": "whisperx", "zh": "belle2"}


def misrouted(clip: Path, language: str, job: dict[str, Any]) -> str | None:
    wanted = (JobState.COMPLETED, MODEL_FOR[language], language, "detected language")
    found = (job["state"], job["model"], job["detected_language"], job["routing_reason"])
    return None if found == wanted else f"{clip.name}: {found} (error: {job.get('error')})"


# 24 jobs, each Mandarin one transcribed twice over (listened to, then handed over).
@pytest.mark.timeout(1200)
async def test_every_clip_goes_to_the_model_for_the_language_it_speaks_through_the_api(
    routing_api: httpx.AsyncClient, routing_js: JetStreamContext
) -> None:
    clips = spoken_clips()
    job_ids = [await submit(routing_api, clip) for clip, _ in clips]  # no language, no model
    jobs = await asyncio.gather(*(finished_job(routing_api, routing_js, job_id, 600) for job_id in job_ids))
    wrong = [m for (clip, lang), job in zip(clips, jobs, strict=True) if (m := misrouted(clip, lang, job))]
    assert not wrong, "\n".join(wrong)
    assert all(job["language_probability"] > 0.5 for job in jobs)
    for (clip, language), job in zip(clips, jobs, strict=True):
        if language == "zh":
            assert not await spaced_han(routing_api, job["id"]), clip.name


# Two Han characters with a space (or an ideographic space) between them; a cue's line break is not one.
SPACED_HAN = re.compile(r"[\u4e00-\u9fff][ \u3000]+[\u4e00-\u9fff]")


async def spaced_han(api: httpx.AsyncClient, job_id: str) -> list[str]:
    """Where a job's results, in every format, put a space between two Han characters."""
    found = []
    for fmt in ("json", "srt", "vtt", "txt"):
        text = (await api.get(f"/v1/jobs/{job_id}/transcript.{fmt}")).text
        found += [f"{fmt}: {match.group()}" for match in SPACED_HAN.finditer(text)]
    return found


# 24 jobs, each Mandarin one transcribed twice over (listened to, then handed over).
@pytest.mark.timeout(1200)
async def test_every_clip_goes_to_the_model_for_the_language_it_speaks_through_a_bucket_drop(
    routing_stack: EmbeddedStack, routing_api: httpx.AsyncClient, routing_js: JetStreamContext
) -> None:
    """MinIO's notifier is a stand-in here (SeaweedFS has none): its payload, published as MinIO does."""
    store: Minio = storage.client(routing_stack.settings)
    clips = spoken_clips()
    job_ids = []
    for clip, _ in clips:
        key = f"drops/{uuid.uuid4().hex}/{clip.name}"
        etag = await put(store, key, clip)
        await notify(routing_js, minio_notification(key, etag, size=clip.stat().st_size))
        job_ids.append(object_job_id("uploads", key, etag))  # one stored object, one job
    jobs = await asyncio.gather(*(finished_job(routing_api, routing_js, job_id, 600) for job_id in job_ids))
    wrong = [m for (clip, lang), job in zip(clips, jobs, strict=True) if (m := misrouted(clip, lang, job))]
    assert not wrong, "\n".join(wrong)


@pytest.mark.timeout(1000)
@pytest.mark.parametrize("opening", ["music", "ring tones"])
async def test_mandarin_after_half_a_minute_of_music_or_tones_goes_to_belle2_in_one_trace(
    routing_api: httpx.AsyncClient, routing_js: JetStreamContext, tmp_path: Path, opening: str
) -> None:
    speech = AUDIO / "aishell-BAC009S0724W0121.wav"
    media = tmp_path / f"{opening.replace(' ', '-')}-then-mandarin.m4a"
    if opening == "music":
        before = ["-stream_loop", "-1", "-t", "35", "-i", str(AUDIO / "big_buck_bunny_small.mp4")]
    else:  # a ringback tone: 440 + 480 Hz, 2 s on, 4 s off
        before = [
            "-f",
            "lavfi",
            "-i",
            "aevalsrc='0.2*(sin(2*PI*440*t)+sin(2*PI*480*t))*lt(mod(t,6),2)':s=16000:d=35",
        ]
    ffmpeg(*before, "-i", str(speech), "-filter_complex",
           "[0:a]aresample=16000,aformat=channel_layouts=mono[a];[1:a]aresample=16000[b];[a][b]concat=n=2:v=0:a=1",
           "-c:a", "aac", str(media))  # fmt: skip
    job_id = await submit(routing_api, media)
    job = await finished_job(routing_api, routing_js, job_id, 900)
    assert (job["state"], job["model"], job["detected_language"]) == ("completed", "belle2", "zh"), job
    assert job["routing_reason"] == "detected language"
    assert job["stats"]  # optimize ran: the transcript was written
    text = (await routing_api.get(f"/v1/jobs/{job_id}/transcript.txt")).text
    assert "广州" in text  # Simplified (the language is known: optimize converts)

    events = await job_events(routing_js, job_id, {catalogue.COMPLETED.type}, 30)
    kinds = [binding.kind_of(event) for event in events]
    heard = [
        binding.parse_data(e, LanguageDetected)
        for e in events
        if binding.kind_of(e) is catalogue.LANGUAGE_DETECTED
    ]
    # whisperx listened once and handed the job over, once; belle2 trusted what it heard.
    assert [(h.model, h.language, h.handover) for h in heard] == [("whisperx", "zh", True)]
    queued = [
        binding.parse_data(e, TranscriptionQueued) for e in events if binding.kind_of(e) is catalogue.QUEUED
    ]
    assert [(q.model, q.handed_over_from) for q in queued] == [("whisperx", None), ("belle2", "whisperx")]
    assert kinds.count(catalogue.TRANSCRIBED) == 1
    transcribed = next(e for e in events if binding.kind_of(e) is catalogue.TRANSCRIBED).get_data()
    assert (transcribed["model"], transcribed["language"]) == ("belle2", "zh")
    # One job, one trace: every event of the job carries the request's trace id.
    trace_ids = {binding.traceparent_of(event).split("-")[1] for event in events}  # type: ignore[union-attr]
    assert len(trace_ids) == 1


async def test_a_named_language_or_model_is_not_listened_to(
    routing_api: httpx.AsyncClient, routing_js: JetStreamContext
) -> None:
    clip = AUDIO / "aishell-BAC009S0724W0121.wav"
    by_rule = await finished_job(routing_api, routing_js, await submit(routing_api, clip, language="zh"))
    named = await finished_job(routing_api, routing_js, await submit(routing_api, clip, model="whisperx"))
    assert (by_rule["model"], by_rule["routing_reason"]) == ("belle2", "language rule")
    assert (named["model"], named["routing_reason"]) == ("whisperx", "requested")
    for job in (by_rule, named):
        events = await job_events(routing_js, job["id"], {catalogue.COMPLETED.type}, 30)
        assert catalogue.LANGUAGE_DETECTED not in {binding.kind_of(event) for event in events}
    # whisperx, asked by name, still listens across the file for the language it transcribes in.
    assert named["detected_language"] == "zh"
    for job in (by_rule, named):  # Chinese has no spaces between words, whichever model wrote it
        assert not await spaced_han(routing_api, job["id"]), job["model"]


# -- the policy and the record, without a stack ----------------------------------------------------


@pytest.mark.parametrize(
    ("model", "language", "detected", "expected"),
    [
        ("whisperx", "zh", False, ("whisperx", "requested")),
        (None, "zh-CN", False, ("belle2", "language rule")),
        (None, "en", False, ("whisperx", "default")),
        (None, None, False, ("whisperx", "default")),
        (None, "zh", True, ("belle2", "detected language")),
        (None, "en", True, ("whisperx", "detected language")),
    ],
)
def test_the_routing_policy_names_its_reason(
    model: str | None, language: str | None, detected: bool, expected: tuple[str, str]
) -> None:
    settings = Settings(enabled_models=["whisperx", "belle2"])
    route = routing.choose_model(model, language, settings, detected=detected)
    assert (route.model, route.reason) == expected


def test_a_rule_for_a_disabled_model_falls_back_to_the_default() -> None:
    route = routing.choose_model(None, "zh", Settings(enabled_models=["whisperx"]), detected=True)
    assert (route.model, route.reason) == ("whisperx", "detected language")


def lifecycle(data: Any, kind: catalogue.EventKind, event_id: str) -> Any:
    return binding.new_event(kind, data, function="test", event_id=event_id)


def test_the_record_follows_a_hand_over_and_ignores_the_first_models_late_reports() -> None:
    request = TranscriptionRequested(job_id="j1", media=ObjectRef(bucket="uploads", key="a.wav"))
    record = apply(None, lifecycle(request, catalogue.REQUESTED, "j1:requested"))
    first = TranscriptionQueued(job_id="j1", model="whisperx", routing_reason="default")
    record = apply(record, lifecycle(first, catalogue.QUEUED, "j1:queued"))
    listening = TranscriptionProgress(
        job_id="j1", run_id="r1", model="whisperx", stage="decoding", fraction=0
    )
    record = apply(record, lifecycle(listening, catalogue.PROGRESS, "p1"))
    assert record is not None and (record.state, record.model) == (JobState.TRANSCRIBING, "whisperx")
    heard = LanguageDetected(job_id="j1", run_id="r1", model="whisperx", language="zh", probability=0.98,
                             speech_seconds=3.5, windows=1, handover=True)  # fmt: skip
    record = apply(record, lifecycle(heard, catalogue.LANGUAGE_DETECTED, "j1:language"))
    handed = TranscriptionQueued(
        job_id="j1", model="belle2", routing_reason="detected language", handed_over_from="whisperx"
    )
    queued_event = lifecycle(handed, catalogue.QUEUED, "j1:queued:handover")
    record = apply(record, queued_event)
    assert isinstance(record, JobRecord)
    assert (record.state, record.model, record.run_id) == (JobState.QUEUED, "belle2", None)
    assert (record.detected_language, record.language_probability) == ("zh", 0.98)
    assert record.routing_reason == "detected language"
    assert apply(record, lifecycle(listening, catalogue.PROGRESS, "p2")) is None  # whisperx, late
    assert apply(record, lifecycle(first, catalogue.QUEUED, "j1:queued")) is None  # the first queue, late
    belle2 = TranscriptionProgress(
        job_id="j1", run_id="r2", model="belle2", stage="transcribing", fraction=0.5
    )
    record = apply(record, lifecycle(belle2, catalogue.PROGRESS, "p3"))
    assert record is not None and (record.state, record.model) == (JobState.TRANSCRIBING, "belle2")
    assert apply(record, queued_event) is None  # a repeated hand-over does not put it back on a queue
