# ruff: noqa: RUF001 (Chinese punctuation in these strings is what is under test)
"""Properties of the optimizer on generated transcripts (hypothesis): whatever the segments,
cues are ordered, never overlap, stay inside the audio, parse back from SRT and VTT, and lose no
text except what loop and hallucination removal counted; and when the input allows it (sane
times, speech at a readable pace, words shorter than a line) every cue meets the rules."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from events.models import SegmentTranscribed
from functions.optimize.script import visible_length
from tests.support.optimize_samples import (
    RULES,
    assert_nothing_lost_but_counted,
    assert_well_formed,
    optimizer,
    parse_back,
    segment,
)

WORDS = [
    "hello",
    "world,",
    "this",
    "is",
    "a",
    "test.",
    "Really?",
    "well—",
    "AT&T",
    "<3",
    "-->",
    "R&D",
    "don't",
    "12,5",
    "ok!",
    "(aside)",
    "Straße",
    "naïve",
    "Привет",
    "мир.",
    "谢",
    "你",
    "好",
    "，",
    "。",
    "世界",
    "「对」",
    "吗？",
    "こんにちは",
    "、",
]
ANY_TIME = st.one_of(
    st.floats(min_value=-50, max_value=400, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0]),
)
TEXT = st.one_of(
    st.lists(st.sampled_from(WORDS), max_size=80).map(" ".join),
    st.lists(st.sampled_from(WORDS), max_size=40).map("".join),
    st.text(max_size=200),
    st.sampled_from(["谢谢" * 30, "Thanks for watching!", "go on " * 10, "x" * 500]),
)
CHECKS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def any_segments(draw: st.DrawFn) -> list[SegmentTranscribed]:
    texts = draw(st.lists(TEXT, max_size=12))
    segments = [segment(index, draw(ANY_TIME), draw(ANY_TIME), text) for index, text in enumerate(texts)]
    return draw(st.permutations(segments))


@CHECKS
# 0 is "length unknown"; subtitle times are in milliseconds, so a known length is at least one.
@given(
    segments=any_segments(),
    audio_seconds=st.one_of(st.just(0.0), st.floats(min_value=0.001, max_value=400)),
)
def test_whatever_the_segments_cues_are_ordered_inside_the_audio_and_nothing_is_lost_uncounted(
    segments: list[SegmentTranscribed], audio_seconds: float
) -> None:
    result = optimizer(simplify=False).run(segments, audio_seconds)

    assert_well_formed(result.cues, audio_seconds)
    assert_nothing_lost_but_counted(segments, result)
    parse_back(result.cues)


@st.composite
def readable_segments(draw: st.DrawFn) -> tuple[list[SegmentTranscribed], float]:
    """Segments a careful speaker could produce: in order, apart, at 5 to 15 characters per
    second and no faster than the reading speed limits, words shorter than a line."""
    segments = []
    clock = draw(st.floats(min_value=0, max_value=5))
    for index in range(draw(st.integers(min_value=0, max_value=10))):
        text = " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=60)))
        chars = visible_length(text)
        fastest = max(1.0, chars / 15, RULES.reading_seconds(text))
        duration = draw(st.floats(min_value=fastest, max_value=max(fastest, chars / 5)))
        segments.append(segment(index, clock, clock + duration, text))
        clock += duration + draw(st.one_of(st.just(0.0), st.floats(min_value=0, max_value=5)))
    return segments, clock


@CHECKS
@given(readable=readable_segments())
def test_every_cue_meets_the_rules_when_the_input_allows_it(
    readable: tuple[list[SegmentTranscribed], float],
) -> None:
    segments, audio_seconds = readable
    result = optimizer(simplify=False).run(segments, audio_seconds)
    # a loop cut out of the middle of a segment may leave pieces no rule can save
    assume(result.stats["removed"]["characters"] == 0)

    assert_well_formed(result.cues, audio_seconds)
    for cue in result.cues:
        assert RULES.text_fits(cue.text), cue
        assert RULES.duration_fits(cue.start, cue.end), cue
        assert RULES.reading_fits(cue.text, cue.start, cue.end), cue
    assert result.stats["rules"]["duration_and_length"] in (None, 1.0)
    assert result.stats["rules"]["reading_speed"] in (None, 1.0)
