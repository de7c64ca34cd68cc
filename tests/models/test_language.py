"""Language identification (functions/transcriber/language.py) with the real whisper-base model and real
speech: what it listens to is speech found across the file, so music, ring tones or silence
before the speech do not decide the language; whispered speech the VAD misses is still heard."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from events.settings import Settings
from functions.transcriber import SAMPLE_RATE
from functions.transcriber.audio import decode as decode_media
from functions.transcriber.language import CLIP_SAMPLES, identify
from functions.transcriber.vad import WINDOW, SpeechDetector
from functions.whisperx.model import WhisperX
from tests.support.paths import AUDIO, ffmpeg


@pytest.fixture(scope="module")
def whisperx(model_cache: Path) -> WhisperX:
    adapter = WhisperX(Settings(model_cache_dir=model_cache))
    adapter.load()
    return adapter


@pytest.fixture(scope="module")
def listener() -> SpeechDetector:
    return SpeechDetector()


def audio_of(path: Path) -> np.ndarray:
    with tempfile.TemporaryDirectory() as scratch:
        decoded = decode_media(path, Path(scratch) / "audio.s16le")
        return np.array(decoded.window(0, decoded.samples))


def music(seconds: float) -> np.ndarray:
    """Big Buck Bunny's soundtrack (music and effects, no speech), looped to `seconds`."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "music.wav"
        ffmpeg("-stream_loop", "-1", "-i", str(AUDIO / "big_buck_bunny_small.mp4"), "-vn", "-t", str(seconds),
               "-ac", "1", "-ar", str(SAMPLE_RATE), str(out))  # fmt: skip
        return audio_of(out)


def ring_tones(seconds: float) -> np.ndarray:
    """A ringback tone: 440 + 480 Hz, 2 s on, 4 s off (the North American cadence)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    on = (t % 6) < 2
    return (0.2 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t)) * on).astype(np.float32)


@pytest.mark.parametrize("opening", ["music", "ring tones"])
def test_mandarin_after_half_a_minute_of_music_or_tones_is_heard_as_mandarin(
    whisperx: WhisperX, listener: SpeechDetector, opening: str
) -> None:
    before = music(35) if opening == "music" else ring_tones(35)
    speech = audio_of(AUDIO / "aishell-BAC009S0724W0121.wav")
    audio = np.concatenate([before, speech])
    # Whisper's own rule, the first 30 s, hears no Mandarin at all there.
    first = whisperx.detect_language(audio[:CLIP_SAMPLES])
    assert max(first, key=first.__getitem__) != "zh"
    heard = identify(audio, whisperx.detect_language, listener)
    assert heard is not None
    assert heard.language == "zh", heard
    assert heard.probability > 0.9


@pytest.mark.parametrize(
    ("clip", "language"),
    [("jfk.flac", "en"), ("dev/en_mfa_whisper.flac", "en"), ("sr-chinese.flac", "zh"),
     ("dev/zh_aishell3_SSB00430378.wav", "zh")],
    ids=["speech", "whispered-no-vad-regions", "one-second", "number-string"],
)  # fmt: skip
def test_the_language_of_real_speech(
    whisperx: WhisperX, listener: SpeechDetector, clip: str, language: str
) -> None:
    heard = identify(audio_of(AUDIO / clip), whisperx.detect_language, listener)
    assert heard is not None
    assert heard.language == language, heard
    assert 0.5 < heard.probability <= 1.0


def test_long_speech_is_heard_in_clips_from_its_start_middle_and_end(listener: SpeechDetector) -> None:
    """Model stand-in: a function that records the clips it is given (what is listened to is the
    question here, not what the model makes of it)."""
    speech = audio_of(AUDIO / "jfk.flac")
    gap = np.zeros(SAMPLE_RATE, np.float32)
    # Three parts of about 70 s of speech each, told apart by their loudness.
    parts = [np.concatenate([speech * gain, gap] * 6) for gain in (0.25, 0.5, 1.0)]
    clips: list[np.ndarray] = []

    def probabilities(clip: np.ndarray) -> dict[str, float]:
        clips.append(clip)
        return {"en": 0.9, "de": 0.1}

    heard = identify(np.concatenate(parts), probabilities, listener, windows=3)
    assert heard is not None
    assert (heard.language, heard.windows) == ("en", 3)
    assert heard.probability == pytest.approx(0.9)
    assert all(len(clip) <= CLIP_SAMPLES for clip in clips)
    assert heard.speech_seconds == pytest.approx(sum(len(clip) for clip in clips) / SAMPLE_RATE, abs=0.01)
    peaks = [float(np.abs(clip).max()) for clip in clips]
    level = float(np.abs(speech).max())
    assert peaks == pytest.approx([0.25 * level, 0.5 * level, level], rel=0.01)


class HalfBelieving(SpeechDetector):
    """VAD stand-in: 0.6 (speech, but not clear speech) for the first `unsure_s`, 0.95 after."""

    def __init__(self, unsure_s: float) -> None:
        super().__init__()
        self.unsure_s = unsure_s

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        frames = super().probabilities(audio)
        frames[:] = 0.95
        frames[: int(self.unsure_s * SAMPLE_RATE / WINDOW)] = 0.6
        return frames


def test_clear_speech_outweighs_what_the_vad_half_believed() -> None:
    # 100 s the VAD half believes (music, say: the model hears "en" at 0.55 in it), then 20 s of
    # clear speech the model hears as "zh" at 0.95: two clips of the first, one of the second.
    speech = audio_of(AUDIO / "aishell-BAC009S0724W0121.wav")
    tail = np.tile(speech, 5)[: 20 * SAMPLE_RATE]
    audio = np.concatenate([music(35), ring_tones(65), tail])
    marker = speech[len(speech) // 2 : len(speech) // 2 + 160].tobytes()  # 10 ms of the speech

    def probabilities(clip: np.ndarray) -> dict[str, float]:
        return {"zh": 0.95, "en": 0.05} if marker in clip.tobytes() else {"en": 0.55, "nn": 0.45}

    heard = identify(audio, probabilities, HalfBelieving(100), windows=3)
    assert heard is not None
    assert heard.windows == 3
    assert heard.language == "zh", heard


def test_no_audio_has_no_language(listener: SpeechDetector) -> None:
    assert identify(np.zeros(0, np.float32), lambda clip: {"en": 1.0}, listener) is None
