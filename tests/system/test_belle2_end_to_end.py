"""belle2 through the running platform: the default embedded stack (ingest, optimize, whisperx and
belle2 on the converted whisper-base checkpoint), real uploads, real routing by language and by
model, bad media reported as `failed` with a clear code while the worker keeps serving."""

from __future__ import annotations

import wave
from pathlib import Path

import httpx
import srt
from nats.js import JetStreamContext

from infra.embedded.stack import EmbeddedStack
from tests.support.jobs import finished_job, submit
from tests.support.paths import AUDIO, ffmpeg, reference
from tests.support.quality import wer


async def failure_code(api: httpx.AsyncClient, js: JetStreamContext, path: Path) -> str:
    job = await finished_job(api, js, await submit(api, path, model="belle2"))
    assert job["state"] == "failed", job
    code: str = job["error"]["code"]
    return code


async def test_mandarin_is_routed_to_belle2_and_timed_inside_the_audio(
    routing_api: httpx.AsyncClient, routing_js: JetStreamContext
) -> None:
    job_id = await submit(routing_api, AUDIO / "aishell-BAC009S0724W0121.wav", language="zh")
    job = await finished_job(routing_api, routing_js, job_id)
    assert job["state"] == "completed", job
    assert job["model"] == "belle2"  # the language rule, no model named
    cues = list(srt.parse((await routing_api.get(f"/v1/jobs/{job_id}/transcript.srt")).text))
    assert cues
    assert all(0 <= cue.start.total_seconds() < cue.end.total_seconds() <= 4.3 for cue in cues)
    text = "".join(cue.content for cue in cues)
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) >= 8, text


async def test_english_clip_routed_to_belle2_explicitly(
    routing_api: httpx.AsyncClient, routing_js: JetStreamContext
) -> None:
    job_id = await submit(routing_api, AUDIO / "jfk.flac", model="belle2", language="en")
    job = await finished_job(routing_api, routing_js, job_id)
    assert job["state"] == "completed", job
    text = (await routing_api.get(f"/v1/jobs/{job_id}/transcript.txt")).text
    assert wer(reference("jfk"), text) <= 0.10, text


async def test_corrupt_media_fails_as_unreadable(
    routing_api: httpx.AsyncClient, routing_js: JetStreamContext, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\xff" * 4000)
    assert await failure_code(routing_api, routing_js, corrupt) == "media_unreadable"


async def test_video_without_audio_track_fails_as_no_audio(
    routing_api: httpx.AsyncClient, routing_js: JetStreamContext, tmp_path: Path
) -> None:
    video = tmp_path / "silent-film.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=10", "-c:v", "mpeg4", str(video))
    assert await failure_code(routing_api, routing_js, video) == "media_no_audio"


async def test_zero_seconds_of_audio_fails_as_zero_duration(
    routing_api: httpx.AsyncClient, routing_js: JetStreamContext, tmp_path: Path
) -> None:
    empty = tmp_path / "header-only.wav"
    with wave.open(str(empty), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
    assert await failure_code(routing_api, routing_js, empty) == "media_zero_duration"


async def test_silence_completes_with_an_empty_transcript(
    routing_api: httpx.AsyncClient, routing_js: JetStreamContext, tmp_path: Path
) -> None:
    quiet = tmp_path / "quiet.flac"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=20:a=0.0005:r=16000", str(quiet))
    job_id = await submit(routing_api, quiet, model="belle2")
    job = await finished_job(routing_api, routing_js, job_id)
    assert job["state"] == "completed", job
    assert (await routing_api.get(f"/v1/jobs/{job_id}/transcript.txt")).text.strip() == ""


async def test_worker_still_serves_a_video_after_bad_media(
    routing_api: httpx.AsyncClient, routing_js: JetStreamContext, routing_stack: EmbeddedStack, tmp_path: Path
) -> None:
    # Runs after the failures above: the same belle2 process takes the next job, a video whose
    # Mandarin audio track the skeleton decodes (the transformers pipeline cannot read video).
    video = tmp_path / "mandarin.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=4.3:size=64x64:rate=10",
           "-i", str(AUDIO / "aishell-BAC009S0724W0121.wav"), "-c:v", "mpeg4", "-c:a", "aac", "-shortest",
           str(video))  # fmt: skip
    job_id = await submit(routing_api, video, model="belle2")
    job = await finished_job(routing_api, routing_js, job_id)
    assert job["state"] == "completed", job
    assert job["model"] == "belle2"
    cues = list(srt.parse((await routing_api.get(f"/v1/jobs/{job_id}/transcript.srt")).text))
    assert cues and all(0 <= cue.start.total_seconds() < cue.end.total_seconds() <= 4.4 for cue in cues)
    assert sum("\u4e00" <= ch <= "\u9fff" for cue in cues for ch in cue.content) >= 8, cues
    assert routing_stack.failed_children() == []
