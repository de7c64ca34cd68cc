"""Hallucinations: text a Whisper-family model wrote that nobody said.

- Known silence phrases ("Thanks for watching", Amara.org credits, "谢谢观看"), learnt from
  subtitled video. Dropped only when one stands alone as a segment's whole text: inside real speech
  they may well be said.
- Doubtful segments: the decoder itself rates the segment below Whisper's `log_prob_threshold`
  (-1.0, openai/whisper `transcribe.py`, the point where Whisper deems a decode failed) and its
  words are guesses (mean word probability under 0.5). On very short or near-silent audio this is
  what an invented phrase looks like ("Thank you all." for a 0.45 s word); real speech, even
  mumbled, scores far above it."""

from __future__ import annotations

from collections.abc import Iterable

from events.models import SegmentTranscribed
from functions.optimize.script import comparison_key

LOG_PROB_THRESHOLD = -1.0
WORD_PROBABILITY_FLOOR = 0.5


class Hallucinations:
    def __init__(self, phrases: Iterable[str]) -> None:
        self._keys = {comparison_key(phrase) for phrase in phrases if comparison_key(phrase)}

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and comparison_key(text) in self._keys


def doubtful(segment: SegmentTranscribed) -> bool:
    """Whether the decoder doubts `segment` as a whole (see the module docstring). A segment without
    an `avg_logprob` or without word scores is never doubtful: nothing says so."""
    if segment.avg_logprob is None or segment.avg_logprob >= LOG_PROB_THRESHOLD:
        return False
    scores = [word.score for word in segment.words or [] if word.score is not None]
    return bool(scores) and sum(scores) / len(scores) < WORD_PROBABILITY_FLOOR
