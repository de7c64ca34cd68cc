"""Shared helpers for the optimize tests: segments as a model would emit them, and subtitle
files read back with pysubs2, a parser independent of the libraries that wrote them."""

from __future__ import annotations

import html
import itertools
import json
import re
from collections import Counter

import pysubs2

from events.models import SegmentTranscribed, Word
from functions.optimize import outputs
from functions.optimize.cues import Cue, Optimized, Optimizer
from functions.optimize.hallucinations import Hallucinations
from functions.optimize.loops import LoopLimits
from functions.optimize.rules import SegmentRules

RULES = SegmentRules.defaults()
LOOPS = LoopLimits(max_repeats=3, max_ngram=12, max_sentence_repeats=2)


def optimizer(simplify: bool = True, hallucinations: tuple[str, ...] = ("Thanks for watching",)) -> Optimizer:
    return Optimizer(RULES, LOOPS, Hallucinations(hallucinations), simplify)


def segment(
    sequence: int,
    start: float,
    end: float,
    text: str,
    words: list[Word] | None = None,
    language: str | None = None,
    run_id: str = "r1",
    job_id: str = "job",
    speaker: str | None = None,
) -> SegmentTranscribed:
    return SegmentTranscribed(
        job_id=job_id,
        run_id=run_id,
        sequence=sequence,
        start=start,
        end=end,
        text=text,
        words=words,
        language=language,
        speaker=speaker,
    )


def visible(text: str) -> Counter[str]:
    return Counter(char for char in text if not char.isspace())


def assert_nothing_lost_but_counted(segments: list[SegmentTranscribed], result: Optimized) -> None:
    given = visible("".join(s.text for s in segments))
    kept = visible("".join(cue.text for cue in result.cues))
    assert not kept - given, "cues hold text the segments did not"
    assert (given - kept).total() == result.stats["removed"]["characters"]


def assert_well_formed(cues: list[Cue], audio_seconds: float) -> None:
    for cue in cues:
        assert 0 <= cue.start < cue.end, cue
        if audio_seconds > 0:
            assert cue.end <= audio_seconds, cue
        assert cue.text.strip(), cue
    for before, after in itertools.pairwise(cues):
        assert before.end <= after.start, (before, after)


def parse_back(cues: list[Cue]) -> None:
    """The SRT and VTT files parse with pysubs2 into the same cues, times to the millisecond."""
    expected = [(round(cue.start * 1000), round(cue.end * 1000), cue.text) for cue in cues]
    if any(_markup_for_pysubs2(cue.text) for cue in cues):
        return
    srt_file = pysubs2.SSAFile.from_string(outputs.render("srt", cues, {}).decode(), format_="srt")
    vtt_file = pysubs2.SSAFile.from_string(outputs.render("vtt", cues, {}).decode(), format_="vtt")
    assert [(e.start, e.end, e.plaintext) for e in srt_file] == [
        (start, end, outputs.srt_text(text)) for start, end, text in expected
    ]
    # WebVTT cue text is markup: what was escaped on writing is unescaped on reading.
    assert [(e.start, e.end, html.unescape(e.plaintext)) for e in vtt_file] == expected
    document = json.loads(outputs.render("json", cues, {"job_id": "job"}))
    assert [cue["text"] for cue in document["cues"]] == [cue.text for cue in cues]
    assert outputs.render("vtt", cues, {}).startswith(b"WEBVTT")


_TAG_OR_OVERRIDE = re.compile(r"[{}\\]|<[^<>]*>")


def _markup_for_pysubs2(text: str) -> bool:
    """Text pysubs2 cannot read back as written, whoever wrote the file: SRT has no escaping,
    so anything in angle brackets reads as a tag; pysubs2 reads `{...}` and backslashes as ASS overrides;
    and it takes a cue's last line of digits alone for the next cue's number (the optimizer
    avoids such lines unless nothing else fits, which only generated text reaches)."""
    last_line = text.rsplit("\n", 1)[-1]
    return bool(_TAG_OR_OVERRIDE.search(outputs.srt_text(text))) or ("\n" in text and last_line.isdigit())
