"""Language identification: which language a file speaks, heard in stretches of its speech spread
across the whole file, not in its first 30 s (which may be music, ring tones or silence).

1. Silero VAD (functions/transcriber/vad.py) finds the speech regions of the whole file.
2. The regions are split, in time order, into up to `windows` groups of equal speech time (the
   start, the middle and the end of what is said); from each group the regions the VAD is surest
   of are joined into one clip of at most 30 s (Whisper's input).
3. The model gives each clip a probability per language (`LanguageProbabilities`); the clips'
   distributions are averaged, each weighted by its seconds of clear speech (VAD probability at
   least 0.8), so a clip of music the VAD half-believed (Whisper hears "English" in it, at about
   0.5) counts for little against one of real speech.

Whisper's own detection (openai-whisper `detect_language`, faster-whisper with
`language_detection_segments`) reads the first 30 s of the audio, or of its VAD speech.
Whispered speech and other audio the VAD hears nothing in are still identified: then the clips
are stretches of the raw audio spread the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from functions.transcriber.schema import SAMPLE_RATE
from functions.transcriber.vad import WINDOW, Region, SpeechDetector, plan_regions

CLIP_S = 30.0  # Whisper's input window
CLIP_SAMPLES = int(CLIP_S * SAMPLE_RATE)
CLEAR_SPEECH = 0.8  # VAD probability of a frame that counts as clear speech

# One clip (float32, 16 kHz mono, at most 30 s) → probability per language (ISO 639-1 code, as
# Whisper's language tokens name it), summing to 1.
LanguageProbabilities = Callable[[np.ndarray], dict[str, float]]


@dataclass(frozen=True)
class Identified:
    """The language a file speaks (ISO 639-1) and what it was heard in."""

    language: str
    probability: float  # the weighted mean probability of `language` over the clips
    speech_seconds: float  # seconds of audio listened to
    windows: int  # clips listened to


@dataclass(frozen=True)
class _Clip:
    audio: np.ndarray
    weight: float


def identify(
    audio: np.ndarray, probabilities: LanguageProbabilities, detector: SpeechDetector, windows: int = 3
) -> Identified | None:
    """The language of `audio` (float32, shape (samples,), 16 kHz mono), from up to `windows`
    clips; None for audio of no length."""
    if len(audio) == 0:
        return None
    clips = _clips(audio, detector, max(windows, 1))
    total: dict[str, float] = {}
    weights = sum(clip.weight for clip in clips)
    for clip in clips:
        share = clip.weight / weights if weights > 0 else 1 / len(clips)
        for language, probability in probabilities(clip.audio).items():
            total[language] = total.get(language, 0.0) + share * probability
    language = max(total, key=total.__getitem__)
    return Identified(
        language=language,
        probability=min(max(total[language], 0.0), 1.0),
        speech_seconds=round(sum(len(clip.audio) for clip in clips) / SAMPLE_RATE, 3),
        windows=len(clips),
    )


def _clips(audio: np.ndarray, detector: SpeechDetector, windows: int) -> list[_Clip]:
    frames = detector.probabilities(audio)
    # The regions from the same probabilities: Silero runs over the whole file once, not twice.
    regions = plan_regions(frames, len(audio), detector.options) if len(frames) else []
    if not regions:
        # Nothing the VAD calls speech (whispering, a noisy line): stretches of the audio itself.
        return [_Clip(audio[start : start + CLIP_SAMPLES], 0.0) for start in _spread(len(audio), windows)]
    speech = sum(region.end - region.start for region in regions)
    groups: list[list[Region]] = [[] for _ in range(min(windows, -(-speech // CLIP_SAMPLES)))]
    heard = 0
    for region in regions:
        middle = heard + (region.end - region.start) / 2
        groups[min(int(middle * len(groups) / speech), len(groups) - 1)].append(region)
        heard += region.end - region.start
    clips = []
    for group in groups:
        if not group:
            continue

        def clarity(region: Region) -> float:
            first = region.start // WINDOW
            return float(np.mean(frames[first : max(region.end // WINDOW, first + 1)]))

        chosen, room = [], CLIP_SAMPLES
        for region in sorted(group, key=clarity, reverse=True):
            if room <= 0:
                break
            take = min(region.end - region.start, room)
            # A region longer than the room left gives its middle.
            start = region.start + (region.end - region.start - take) // 2
            chosen.append(Region(start, start + take))
            room -= take
        chosen.sort(key=lambda region: region.start)
        clip = np.concatenate([audio[region.start : region.end] for region in chosen])
        clear = sum(
            int(np.count_nonzero(frames[region.start // WINDOW : region.end // WINDOW] >= CLEAR_SPEECH))
            for region in chosen
        )
        clips.append(_Clip(clip, clear * WINDOW / SAMPLE_RATE))
    return clips


def _spread(samples: int, windows: int) -> list[int]:
    """Start samples of up to `windows` 30-s stretches spread evenly over `samples` (one when
    the audio is no longer than a stretch)."""
    if samples <= CLIP_SAMPLES:
        return [0]
    count = min(windows, -(-samples // CLIP_SAMPLES))
    last = samples - CLIP_SAMPLES
    return sorted({round(i * last / max(count - 1, 1)) for i in range(count)})
