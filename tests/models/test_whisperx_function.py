"""The whisperx worker as the platform runs it: a process of the session's embedded stack on its
durable JetStream consumer. Bad media ends as `failed` with a clear code while the worker keeps
serving and nothing is redelivered; a SIGKILLed worker's job completes once, on redelivery, from
the new run's segments only; a warm worker loads nothing per job."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import uuid
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from events import binding, catalogue, storage
from events.bus import Publisher
from events.models import ObjectRef, TranscriptionDispatched
from infra.embedded.stack import EmbeddedStack
from tests.support.jobs import finished_job, messages_until, submit, wait_for_job_end
from tests.support.media import long_english_clip
from tests.support.paths import AUDIO, ffmpeg, reference
from tests.support.quality import wer


def readiness(stack: EmbeddedStack) -> dict[str, Any]:
    response = httpx.get(stack.health_url("whisperx"), timeout=5)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def unknown_codec_wav(path: Path) -> Path:
    """A WAV whose format tag (0x1234) names a codec no decoder knows."""
    samples = b"\x00\x01" * 16_000
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 16_000, 32_000, 2, 16)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(samples)) + samples
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    return path


def corrupt(path: Path) -> Path:
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\xff" * 4000)
    return path


def header_only_wav(path: Path) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
    return path


def silent_film(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=10", "-c:v", "mpeg4", str(path))
    return path


BAD_MEDIA = {
    "corrupt.mp3": (corrupt, "media_unreadable"),
    "header-only.wav": (header_only_wav, "media_zero_duration"),
    "silent-film.mp4": (silent_film, "media_no_audio"),
    "unknown-codec.wav": (unknown_codec_wav, "media_unsupported_codec"),
}


@pytest.mark.parametrize("name", BAD_MEDIA)
async def test_bad_media_fails_the_job_with_a_clear_code(
    api: httpx.AsyncClient, js: JetStreamContext, stack: EmbeddedStack, tmp_path: Path, name: str
) -> None:
    make, code = BAD_MEDIA[name]
    job = await finished_job(api, js, await submit(api, make(tmp_path / name)))

    assert job["state"] == "failed", job
    assert job["error"]["code"] == code
    assert job["error"]["message"]


async def dispatch(js: JetStreamContext, stack: EmbeddedStack, key: str) -> str:
    """Put a job straight on whisperx's queue, as ingest would, for media the API never lets in."""
    job_id = uuid.uuid4().hex
    media = ObjectRef(bucket=stack.settings.uploads_bucket, key=key)
    work = TranscriptionDispatched(job_id=job_id, media=media, model="whisperx")
    event = binding.new_event(catalogue.DISPATCHED, work, function="tests", subject=job_id, event_id=job_id)
    await Publisher(js, stack.settings).publish(event)
    return job_id


async def test_zero_bytes_in_storage_fail_as_empty(js: JetStreamContext, stack: EmbeddedStack) -> None:
    key = f"tests/{uuid.uuid4().hex}/empty.wav"
    storage.client(stack.settings).put_object(stack.settings.uploads_bucket, key, io.BytesIO(b""), 0)

    failed = await wait_for_job_end(js, await dispatch(js, stack, key), timeout=60)

    assert failed.get_type() == catalogue.FAILED.type
    assert failed.get_data()["code"] == "media_empty"


async def test_media_that_vanished_from_storage_fails_as_missing(
    js: JetStreamContext, stack: EmbeddedStack
) -> None:
    job_id = await dispatch(js, stack, "tests/deleted-before-its-turn.wav")
    failed = await wait_for_job_end(js, job_id, timeout=60)

    assert failed.get_type() == catalogue.FAILED.type
    assert failed.get_data()["code"] == "media_missing"
    assert "deleted-before-its-turn.wav" in failed.get_data()["message"]


async def test_a_key_the_store_client_refuses_fails_as_invalid(
    js: JetStreamContext, stack: EmbeddedStack
) -> None:
    """Another system may name any key; one with a `..` segment cannot be fetched at all."""
    failed = await wait_for_job_end(js, await dispatch(js, stack, "tests/../escape.wav"), timeout=60)

    assert failed.get_type() == catalogue.FAILED.type
    assert failed.get_data()["code"] == "media_key_invalid"


async def test_after_bad_media_the_worker_is_up_and_nothing_is_redelivered(
    api: httpx.AsyncClient, js: JetStreamContext, stack: EmbeddedStack
) -> None:
    # Runs after the failures above: each was answered with `failed` and acknowledged.
    pid = stack.child("whisperx").process.pid
    job = await finished_job(api, js, await submit(api, AUDIO / "jfk.flac"))

    assert job["state"] == "completed", job
    assert stack.child("whisperx").process.pid == pid
    queue = await js.consumer_info(catalogue.TRANSCRIBE.name, "whisperx")
    assert queue.num_pending == 0 and queue.num_ack_pending == 0 and queue.num_redelivered == 0


async def test_silence_and_a_video_without_speech_complete_with_near_empty_transcripts(
    api: httpx.AsyncClient, js: JetStreamContext, tmp_path: Path
) -> None:
    quiet = tmp_path / "quiet.flac"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=10:a=0.0005:r=16000", str(quiet))
    for media in (quiet, AUDIO / "big_buck_bunny_small.mp4"):
        job_id = await submit(api, media)
        job = await finished_job(api, js, job_id)
        assert job["state"] == "completed", job
        text = (await api.get(f"/v1/jobs/{job_id}/transcript.txt")).text
        assert len(text.split()) <= 3, text


async def test_a_warm_worker_loads_nothing_per_job(
    api: httpx.AsyncClient, js: JetStreamContext, stack: EmbeddedStack
) -> None:
    before = readiness(stack)
    for clip in ("jfk.flac", "librispeech-1995-1837-0001.wav"):
        job = await finished_job(api, js, await submit(api, AUDIO / clip))
        assert job["state"] == "completed", job
    after = readiness(stack)

    assert after["loads"] == before["loads"] == 1
    assert after["jobs_handled"] == before["jobs_handled"] + 2
    assert after["load_seconds"] == before["load_seconds"]


async def first_event(js: JetStreamContext, subject: str, timeout: float) -> Any:
    [msg] = await messages_until(js, subject, lambda _: True, None, per_message=timeout)
    return binding.decode(msg.headers, msg.data)


async def count_events(js: JetStreamContext, subject: str) -> int:
    """How many messages the JOBS stream holds on `subject` (after at least one has arrived)."""
    messages = await messages_until(
        js, subject, lambda msg: msg.metadata.num_pending == 0, None, per_message=10
    )
    return len(messages)


async def test_a_worker_killed_mid_job_completes_it_once_from_the_new_run(
    api: httpx.AsyncClient, js: JetStreamContext, stack: EmbeddedStack, tmp_path: Path
) -> None:
    """150 s of speech: VAD cuts it into more chunks than one batch, so segments are out before
    the job is done. SIGKILL then; the message comes back after ack_wait to the restarted worker."""
    clip = long_english_clip(tmp_path / "long.wav", 150.0)
    job_id = await submit(api, clip, language="en")
    first = await first_event(js, catalogue.SEGMENT.subject(job_id), timeout=120)
    killed_run = first.get_data()["run_id"]
    stack.kill("whisperx")
    await asyncio.to_thread(stack.restart, "whisperx")

    end = await wait_for_job_end(js, job_id, timeout=300)

    assert end.get_type() == catalogue.COMPLETED.type, end.get_data()
    assert end.get_data()["run_id"] != killed_run
    assert await count_events(js, catalogue.COMPLETED.subject(job_id)) == 1
    transcribed = await first_event(js, catalogue.TRANSCRIBED.subject(job_id), timeout=10)
    assert transcribed.get_data()["run_id"] == end.get_data()["run_id"]
    assert await count_events(js, catalogue.TRANSCRIBED.subject(job_id)) == 1
    document = json.loads((await api.get(f"/v1/jobs/{job_id}/transcript.json")).content)
    assert document["stats"]["segments"] == transcribed.get_data()["segment_count"]
    rounds = round(transcribed.get_data()["audio_seconds"] / (11.0 + 8.73))
    expected = " ".join([reference("jfk"), reference("librispeech-1995-1837-0001")] * rounds)
    text = " ".join(cue["text"] for cue in document["cues"])
    assert wer(expected, text) <= 0.10, text  # the killed run's segments would repeat text
