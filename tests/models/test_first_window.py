"""First words within seconds (issue 17): the first window of a long file is short
(FIRST_WINDOW_S), cut at a quiet point, and later windows stay AUDIO_WINDOW_S long, so a job's
first segments are handed over for publishing before the rest of the file is transcribed, with
their times right across the window boundary. The windows on synthetic audio; the job's path on
real speech (../shared/audio) through the real whisperx on the bundled whisper-base."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from events.models import Decoding
from events.settings import Settings
from functions.transcriber import (
    SAMPLE_RATE,
    DecodedAudio,
    Segment,
    Transcript,
    TranscriptionFunction,
    decode,
)
from functions.transcriber.audio import windows
from functions.whisperx.model import WhisperX
from tests.support.media import long_english_clip
from tests.support.paths import reference
from tests.support.quality import wer


def noise(tmp_path: Path, seconds: float, quiet_at: tuple[float, ...] = ()) -> DecodedAudio:
    """Loud noise (int16 on disk) with 100 ms of silence starting at each of `quiet_at` (seconds)."""
    rng = np.random.default_rng(7)
    pcm = rng.integers(-8000, 8000, int(seconds * SAMPLE_RATE), dtype=np.int16)
    for at in quiet_at:
        pcm[int(at * SAMPLE_RATE) : int((at + 0.1) * SAMPLE_RATE)] = 0
    path = tmp_path / "noise.s16le"
    pcm.tofile(path)
    return DecodedAudio(path, len(pcm))


def test_a_long_file_starts_with_a_short_window_cut_at_a_quiet_point(tmp_path: Path) -> None:
    audio = noise(tmp_path, 620.0, quiet_at=(27.3, 145.0))

    plan = windows(audio, 120.0, first_s=30.0)

    first_start, first_end = plan[0]
    assert first_start == 0
    assert 27.3 <= first_end / SAMPLE_RATE <= 27.4  # inside the silence, within the last 5 s
    assert 115.0 <= (plan[1][1] - plan[1][0]) / SAMPLE_RATE <= 120.0  # then AUDIO_WINDOW_S windows
    assert 145.0 <= plan[1][1] / SAMPLE_RATE <= 145.1  # at its own quiet point
    assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))  # contiguous, no gap, no overlap
    assert plan[-1][1] == audio.samples
    assert all(end - start <= 1.25 * 120.0 * SAMPLE_RATE for start, end in plan)


@pytest.mark.parametrize(
    ("seconds", "window_s", "first_s"),
    [(37.0, 600.0, 30.0), (20.0, 600.0, 30.0), (700.0, 600.0, 0.0), (700.0, 20.0, 30.0)],
    ids=["within-1.25-first-windows", "shorter-than-the-first", "off", "first-not-shorter"],
)
def test_short_audio_and_a_first_window_that_is_off_or_not_shorter_change_nothing(
    tmp_path: Path, seconds: float, window_s: float, first_s: float
) -> None:
    audio = noise(tmp_path, seconds)

    assert windows(audio, window_s, first_s=first_s) == windows(audio, window_s)
    if seconds < 1.25 * first_s:
        assert windows(audio, window_s, first_s=first_s) == [(0, audio.samples)]


class Recorded:
    """A loaded WhisperX whose calls, and the segments the skeleton hands over, are noted in one
    list, in the order they happen on the model's thread."""

    def __init__(self, model: WhisperX) -> None:
        self.model = model
        self.name, self.default_language = model.name, model.default_language
        self.log: list[str] = []

    def load(self) -> None:
        return None

    def detect_language(self, audio: np.ndarray) -> dict[str, float]:
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
        self.log.append(f"window of {len(audio) / SAMPLE_RATE:.1f} s")
        return self.model.transcribe(audio, language, on_segment, on_progress, decoding=decoding)


@pytest.fixture(scope="module")
def recorded(model_cache: Path) -> Recorded:
    model = WhisperX(Settings(model_cache_dir=model_cache))
    model.load()
    return Recorded(model)


def test_a_long_file_hands_its_first_segment_over_before_its_last_window_is_transcribed(
    recorded: Recorded, model_cache: Path, tmp_path: Path
) -> None:
    """2.5 minutes of real speech, AUDIO_WINDOW_S at its default (600 s, so the file would be one
    window) and FIRST_WINDOW_S at its default (15 s): two windows, the first short."""
    settings = Settings(model_cache_dir=model_cache)
    assert settings.first_window_s == 15.0 and settings.audio_window_s == 600.0
    function = TranscriptionFunction(recorded, settings)  # type: ignore[arg-type]
    clip = long_english_clip(tmp_path / "long.wav", 150.0)
    audio = decode(clip, tmp_path / "long.s16le")
    recorded.log.clear()
    segments: list[Segment] = []

    def put(item: Segment | float) -> None:  # the skeleton's hand-over to the event loop
        if isinstance(item, Segment):
            recorded.log.append("segment")
            segments.append(item)

    function.transcribe_audio(audio, "en", put)

    calls = [entry for entry in recorded.log if entry.startswith("window")]
    assert len(calls) == 2, recorded.log
    first_window_s = float(calls[0].split()[2])
    assert 10.0 <= first_window_s <= 15.0
    # The first segments went out while the first window was transcribed, before the last one began.
    assert recorded.log.index("segment") < recorded.log.index(calls[-1])
    assert recorded.log[1] == "segment"
    # Times are on the file's timeline across the boundary: in order, inside the audio, and
    # the text is the file's, nothing lost or said twice at the cut.
    starts = [segment.start for segment in segments]
    assert starts == sorted(starts)
    assert any(segment.start >= first_window_s for segment in segments)
    assert all(0.0 <= s.start <= s.end <= audio.seconds + 0.01 for s in segments)
    rounds = round(audio.seconds / (11.0 + 8.73))
    expected = " ".join([reference("jfk"), reference("librispeech-1995-1837-0001")] * rounds)
    assert wer(expected, " ".join(segment.text for segment in segments)) <= 0.10
