"""belle2 through the running platform: its own embedded stack (ingest, optimize, belle2 on the
converted whisper-base checkpoint), real uploads, real routing by language and by model, bad
media reported as `failed` with a clear code while the worker keeps serving."""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
import srt
from nats.js import JetStreamContext

from events.settings import Settings
from infra.embedded.stack import EmbeddedStack
from infra.models import assemble_whisper_base, derive_whisper_base_hf
from tests.conftest import AUDIO, ffmpeg, finished_job, reference, started_stack, submit
from tests.test_end_to_end import wer


@pytest.fixture(scope="module")
def belle2_stack(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[EmbeddedStack]:
    settings = Settings(model_cache_dir=model_cache, enabled_models=["whisperx", "belle2"])
    derive_whisper_base_hf(assemble_whisper_base(model_cache), settings.belle2_model_path())
    yield from started_stack(
        tmp_path_factory, "belle2-stack", settings, functions=["ingest", "optimize", "belle2"]
    )


@pytest.fixture(scope="module")
async def belle2_js(belle2_stack: EmbeddedStack) -> AsyncIterator[JetStreamContext]:
    connection = await nats.connect(belle2_stack.settings.nats_url)
    yield connection.jetstream()
    await connection.close()


@pytest.fixture
async def belle2_api(belle2_stack: EmbeddedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=belle2_stack.api_url, timeout=60) as client:
        yield client


async def failure_code(api: httpx.AsyncClient, js: JetStreamContext, path: Path) -> str:
    job = await finished_job(api, js, await submit(api, path, model="belle2"))
    assert job["state"] == "failed", job
    code: str = job["error"]["code"]
    return code


async def test_mandarin_is_routed_to_belle2_and_timed_inside_the_audio(
    belle2_api: httpx.AsyncClient, belle2_js: JetStreamContext
) -> None:
    job_id = await submit(belle2_api, AUDIO / "aishell-BAC009S0724W0121.wav", language="zh")
    job = await finished_job(belle2_api, belle2_js, job_id)
    assert job["state"] == "completed", job
    assert job["model"] == "belle2"  # the language rule, no model named
    cues = list(srt.parse((await belle2_api.get(f"/v1/jobs/{job_id}/transcript.srt")).text))
    assert cues
    assert all(0 <= cue.start.total_seconds() < cue.end.total_seconds() <= 4.3 for cue in cues)
    text = "".join(cue.content for cue in cues)
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) >= 8, text


async def test_english_clip_routed_to_belle2_explicitly(
    belle2_api: httpx.AsyncClient, belle2_js: JetStreamContext
) -> None:
    job_id = await submit(belle2_api, AUDIO / "jfk.flac", model="belle2", language="en")
    job = await finished_job(belle2_api, belle2_js, job_id)
    assert job["state"] == "completed", job
    text = (await belle2_api.get(f"/v1/jobs/{job_id}/transcript.txt")).text
    assert wer(reference("jfk"), text) <= 0.10, text


async def test_corrupt_media_fails_as_unreadable(
    belle2_api: httpx.AsyncClient, belle2_js: JetStreamContext, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\xff" * 4000)
    assert await failure_code(belle2_api, belle2_js, corrupt) == "media_unreadable"


async def test_video_without_audio_track_fails_as_no_audio(
    belle2_api: httpx.AsyncClient, belle2_js: JetStreamContext, tmp_path: Path
) -> None:
    video = tmp_path / "silent-film.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=10", "-c:v", "mpeg4", str(video))
    assert await failure_code(belle2_api, belle2_js, video) == "media_no_audio"


async def test_zero_seconds_of_audio_fails_as_zero_duration(
    belle2_api: httpx.AsyncClient, belle2_js: JetStreamContext, tmp_path: Path
) -> None:
    empty = tmp_path / "header-only.wav"
    with wave.open(str(empty), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
    assert await failure_code(belle2_api, belle2_js, empty) == "media_zero_duration"


async def test_silence_completes_with_an_empty_transcript(
    belle2_api: httpx.AsyncClient, belle2_js: JetStreamContext, tmp_path: Path
) -> None:
    quiet = tmp_path / "quiet.flac"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=20:a=0.0005:r=16000", str(quiet))
    job_id = await submit(belle2_api, quiet, model="belle2")
    job = await finished_job(belle2_api, belle2_js, job_id)
    assert job["state"] == "completed", job
    assert (await belle2_api.get(f"/v1/jobs/{job_id}/transcript.txt")).text.strip() == ""


async def test_worker_still_serves_a_video_after_bad_media(
    belle2_api: httpx.AsyncClient, belle2_js: JetStreamContext, belle2_stack: EmbeddedStack, tmp_path: Path
) -> None:
    # Runs after the failures above: the same belle2 process takes the next job, a video whose
    # Mandarin audio track the skeleton decodes (the transformers pipeline cannot read video).
    video = tmp_path / "mandarin.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=4.3:size=64x64:rate=10",
           "-i", str(AUDIO / "aishell-BAC009S0724W0121.wav"), "-c:v", "mpeg4", "-c:a", "aac", "-shortest",
           str(video))  # fmt: skip
    job_id = await submit(belle2_api, video, model="belle2")
    job = await finished_job(belle2_api, belle2_js, job_id)
    assert job["state"] == "completed", job
    assert job["model"] == "belle2"
    cues = list(srt.parse((await belle2_api.get(f"/v1/jobs/{job_id}/transcript.srt")).text))
    assert cues and all(0 <= cue.start.total_seconds() < cue.end.total_seconds() <= 4.4 for cue in cues)
    assert sum("\u4e00" <= ch <= "\u9fff" for cue in cues for ch in cue.content) >= 8, cues
    assert belle2_stack.failed_children() == []
