"""From model segments to cues. The walking skeleton keeps one cue per segment, ordered, with
sane times; the subtitle rules (durations, line lengths, loop removal) grow here."""

from __future__ import annotations

import math

from pydantic import BaseModel

from events.models import SegmentTranscribed, Word


class Cue(BaseModel):
    start: float
    end: float
    text: str
    words: list[Word] | None = None


def build_cues(segments: list[SegmentTranscribed], audio_seconds: float) -> list[Cue]:
    """Ordered, non-overlapping cues inside [0, audio_seconds]; empty text dropped."""
    cues: list[Cue] = []
    for segment in sorted(segments, key=lambda s: (_finite(s.start), s.sequence)):
        text = " ".join(segment.text.split())
        if not text:
            continue
        start = min(max(_finite(segment.start), 0.0), audio_seconds)
        end = min(max(_finite(segment.end), start), audio_seconds)
        if cues and start < cues[-1].end:
            start = max(start, cues[-1].end)
            end = max(end, start)
        cues.append(Cue(start=start, end=end, text=text, words=segment.words))
    return cues


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
