"""Warm means warm (issue 17): a model function runs one short inference through a job's own path
before it says ready (MODEL_WARMUP), reports not ready while it does, and a warm-up that fails
leaves it up, not ready, saying why. The real whisperx on the bundled whisper-base, loaded once
for the module; the warm-up's speech is made in the image (ffmpeg's flite), no media from outside."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from events.models import Decoding
from events.runtime.function import Health
from events.settings import Settings
from functions.transcriber import SAMPLE_RATE, Segment, Transcript, TranscriptionFunction
from functions.transcriber.skeleton import WARMUP_TEXT, vowels, warmup_audio
from functions.transcriber.vad import SpeechDetector
from functions.whisperx.model import WhisperX
from tests.support.quality import wer


@pytest.fixture(scope="module")
def whisperx(model_cache: Path) -> WhisperX:
    adapter = WhisperX(Settings(model_cache_dir=model_cache))
    adapter.load()
    return adapter


class Loaded:
    """The module's loaded WhisperX as a function's adapter (its `load` done already), noting each
    call and what the function's readiness probe said at the time; `fail` makes `transcribe`
    raise it."""

    warms_up = True

    def __init__(self, model: WhisperX, fail: Exception | None = None) -> None:
        self.model = model
        self.name, self.default_language = model.name, model.default_language
        self.fail = fail
        self.function: TranscriptionFunction | None = None
        self.calls: list[tuple[str, Health | None]] = []
        self.segments: list[Segment] = []

    def _note(self, call: str) -> None:
        self.calls.append((call, self.function.health() if self.function else None))

    def load(self) -> None:
        self._note("load")

    def detect_language(self, audio: np.ndarray) -> dict[str, float]:
        self._note("detect_language")
        return self.model.detect_language(audio)

    def transcribe(
        self,
        audio: np.ndarray,
        language: str | None,
        on_segment: Callable[[Segment], None],
        on_progress: Callable[[float], None],
        *,
        decoding: Decoding | None = None,
    ) -> Transcript:
        self._note("transcribe")
        if self.fail is not None:
            raise self.fail

        def keep(segment: Segment) -> None:
            self.segments.append(segment)
            on_segment(segment)

        return self.model.transcribe(audio, language, keep, on_progress, decoding=decoding)


def function_of(adapter: Any, model_cache: Path, **settings: Any) -> TranscriptionFunction:
    function = TranscriptionFunction(adapter, Settings(model_cache_dir=model_cache, **settings))
    adapter.function = function
    return function


async def test_the_model_is_not_ready_until_its_warm_up_inference_is_done(
    whisperx: WhisperX, model_cache: Path
) -> None:
    adapter = Loaded(whisperx)
    function = function_of(adapter, model_cache)
    assert not function.health().ready  # before start: loading

    await function.start(None)  # type: ignore[arg-type]  # loading and warming need no bus

    # Loaded, then the job's path: language identification, then the model on the speech.
    assert [call for call, _ in adapter.calls] == ["load", "detect_language", "transcribe"]
    for call, health in adapter.calls:
        assert health is not None and not health.ready, (call, health)
    during = adapter.calls[-1][1]
    assert during is not None and during.reason == "warming up the model"
    # It heard the words it was given, in English: a real inference, not silence skipped.
    assert wer(WARMUP_TEXT, " ".join(s.text for s in adapter.segments)) <= 0.3, adapter.segments
    after = function.health()
    assert after.ready and after.reason is None
    assert float(after.details["warmup_seconds"]) > 0
    assert function.jobs_handled == 0  # a warm-up is no job


async def test_model_warmup_false_skips_it(whisperx: WhisperX, model_cache: Path) -> None:
    adapter = Loaded(whisperx)
    function = function_of(adapter, model_cache, model_warmup=False)

    await function.start(None)  # type: ignore[arg-type]

    assert [call for call, _ in adapter.calls] == ["load"]
    assert function.health().ready
    assert "warmup_seconds" not in function.health().details


async def test_a_failed_warm_up_leaves_the_function_up_not_ready_saying_why(
    whisperx: WhisperX, model_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = Loaded(whisperx, fail=RuntimeError("CUDA error: out of memory"))
    function = function_of(adapter, model_cache)

    await function.start(None)  # type: ignore[arg-type]  # returns: no crash loop

    health = function.health()
    assert not health.ready
    assert health.reason == "the whisperx model failed its warm-up inference: CUDA error: out of memory"
    assert any(
        record.levelname == "ERROR" and "failed its warm-up" in record.getMessage()
        for record in caplog.records
    )


async def test_an_adapter_that_does_not_ask_for_a_warm_up_gets_none(
    whisperx: WhisperX, model_cache: Path
) -> None:
    """Stand-in models (the tests' endless and stalling ones) have no `warms_up`: started as before."""
    adapter = Loaded(whisperx)
    adapter.warms_up = False
    function = function_of(adapter, model_cache)

    await function.start(None)  # type: ignore[arg-type]

    assert [call for call, _ in adapter.calls] == ["load"] and function.health().ready


def test_the_warm_up_speech_is_made_in_the_image_and_decoded_as_a_job_s_media(tmp_path: Path) -> None:
    audio = warmup_audio(tmp_path)  # ffmpeg's flite, then audio.decode (ffprobe, ffmpeg)

    assert audio.media is not None and audio.media.track.codec == "pcm_s16le"
    assert 1.0 < audio.seconds < 6.0  # one short window, one VAD chunk
    regions = SpeechDetector().regions(audio.window(0, audio.samples))
    assert sum(region.seconds for region in regions) > 1.0


def test_without_flite_the_synthetic_vowels_are_heard_as_speech() -> None:
    pcm = vowels(2.0)

    assert pcm.dtype == np.int16 and len(pcm) == 2 * SAMPLE_RATE
    assert np.array_equal(pcm, vowels(2.0))  # the same each time
    regions = SpeechDetector().regions(pcm.astype(np.float32) / 32768.0)
    assert sum(region.seconds for region in regions) > 1.5
