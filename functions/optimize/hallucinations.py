"""Hallucinations: text a Whisper-family model wrote that nobody said.

- Known silence phrases ("Thanks for watching", Amara.org credits, "谢谢观看"), learnt from
  subtitled video. Dropped only when one stands alone as a segment's whole text: inside real speech
  they may well be said.
- Doubtful segments: the words are guesses (mean word probability under 0.5) and the decoder
  itself says the decode failed: the segment's average log-probability is below Whisper's
  `log_prob_threshold` (-1.0), or its no-speech probability is over even odds (Whisper's
  `no_speech_threshold` is 0.6; openai/whisper `transcribe.py`). On very short or near-silent
  audio this is what an invented phrase looks like ("Thank you all." for one 0.45 s word); real
  speech, even mumbled, scores far above it."""

from __future__ import annotations

from collections.abc import Iterable

from events.models import SegmentTranscribed
from functions.optimize.script import comparison_key

LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_ODDS = 0.5
WORD_PROBABILITY_FLOOR = 0.5


class Hallucinations:
    def __init__(self, phrases: Iterable[str]) -> None:
        self._keys = {comparison_key(phrase) for phrase in phrases if comparison_key(phrase)}

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and comparison_key(text) in self._keys


def doubtful(segment: SegmentTranscribed) -> bool:
    """Whether the decoder doubts `segment` as a whole (see the module docstring). A segment without
    decoder scores or word scores is never doubtful: nothing says so."""
    failed = (segment.avg_logprob is not None and segment.avg_logprob < LOG_PROB_THRESHOLD) or (
        segment.no_speech_prob is not None and segment.no_speech_prob > NO_SPEECH_ODDS
    )
    if not failed:
        return False
    scores = [word.score for word in segment.words or [] if word.score is not None]
    return bool(scores) and sum(scores) / len(scores) < WORD_PROBABILITY_FLOOR
