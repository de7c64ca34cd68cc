"""From a run's model segments to subtitle cues, the optimize pipeline in order:

0. segments the decoder itself doubts dropped (hallucinations.doubtful), counted;
1. timeline: segments sorted by time, impossible times (NaN, negative, overlapping, past the
   audio's end) made possible;
2. Traditional → Simplified for Mandarin, when configured;
3. timed tokens (tokens.py), then decoding loops (loops.py) and standalone silence
   hallucinations (hallucinations.py) removed, each counted;
4. each segment cut into cues that meet the rules (rules.py): at sentence punctuation first,
   then clause punctuation, then between words, balanced;
5. cues too short to read merged with a neighbour, then times settled: ordered, never
   overlapping, inside the audio, long enough to read where the gaps allow.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter
from typing import Any

from pydantic import BaseModel

from events.models import SegmentTranscribed, Word
from events.settings import Settings
from functions.optimize import chinese
from functions.optimize.hallucinations import Hallucinations, doubtful
from functions.optimize.loops import LoopLimits, remove_loops
from functions.optimize.rules import SegmentRules, compliance
from functions.optimize.script import Boundary, close_up, visible_length
from functions.optimize.tokens import Token, join, timed_tokens

# Extra cost of a cut at a clause or word boundary over one at a sentence end, against the
# balance of the two halves (0.5 = even, 1.0 = all on one side).
_CUT_PENALTY = {Boundary.SENTENCE: 0.0, Boundary.CLAUSE: 0.15, Boundary.WORD: 0.35}
_MILLISECOND = 0.001
# A group's lines by the group's id(), with the group itself (see `Optimizer._fits`).
_Wrapped = dict[int, tuple[list[Token], list[str]]]


class Cue(BaseModel):
    start: float
    end: float
    # As shown: lines separated by "\n".
    text: str
    words: list[Word] | None = None


@dataclass
class Optimized:
    cues: list[Cue]
    stats: dict[str, Any]


@dataclass
class _Span:
    """A segment on the fixed timeline."""

    start: float
    end: float
    text: str
    words: list[Word] | None
    language: str | None


class Optimizer:
    def __init__(
        self,
        rules: SegmentRules,
        loops: LoopLimits,
        hallucinations: Hallucinations,
        traditional_to_simplified: bool,
    ) -> None:
        self.rules = rules
        self.loops = loops
        self.hallucinations = hallucinations
        self.traditional_to_simplified = traditional_to_simplified

    @classmethod
    def from_settings(cls, settings: Settings) -> Optimizer:
        return cls(
            SegmentRules.from_settings(settings),
            LoopLimits(
                settings.optimize_loop_max_repeats,
                settings.optimize_loop_max_ngram,
                settings.optimize_loop_max_sentence_repeats,
            ),
            Hallucinations(settings.optimize_hallucinations),
            settings.optimize_traditional_to_simplified,
        )

    def run(
        self, segments: list[SegmentTranscribed], media_end: float, language: str | None = None
    ) -> Optimized:
        """Cues for `segments` of a recording that ends at `media_end` seconds on its file's
        timeline (0 when unknown). No time passes the end, not even to give a cue its minimum
        length: the media's end wins."""
        # 0 means the length is unknown: nothing to stay inside then.
        audio_end = math.floor(media_end * 1000) / 1000
        if audio_end <= 0:
            audio_end = math.inf
        removed: Counter[str] = Counter()
        kept = []
        for segment in segments:
            if doubtful(segment):
                removed["doubtful_segments"] += 1
                removed["characters"] += visible_length(segment.text)
            else:
                kept.append(segment)
        spans = _timeline(kept, audio_end)
        converted = 0
        if self.traditional_to_simplified:
            for span in spans:
                if chinese.is_mandarin(span.language or language):
                    converted += _simplify(span)
        tokens = [
            token
            for index, span in enumerate(spans)
            for token in timed_tokens(
                close_up(span.text),
                span.start,
                span.end,
                span.words,
                index,
                self.rules.max_line_chars,
                self.rules.max_line_chars_cjk,
                self.rules.max_cps / self.rules.max_cps_cjk,
            )
        ]
        tokens = remove_loops(tokens, self.loops, removed)
        groups: list[list[Token]] = []
        # The lines of each group cutting found to fit, for settling to show (it would wrap
        # them again); local to the run, since one Optimizer serves concurrent jobs.
        wrapped: _Wrapped = {}
        for block in _by_segment(tokens):
            text = join(block)
            if text in self.hallucinations:
                removed["hallucinations"] += 1
                removed["characters"] += visible_length(text)
                continue
            groups.extend(self._cut(block, wrapped))
        groups = self._merge_short(groups, audio_end)
        cues = self._settle(groups, audio_end, wrapped)
        stats: dict[str, Any] = {
            "segments": len(segments),
            "cues": len(cues),
            "removed": {
                "sentence_loops": removed["sentence_loops"],
                "ngram_loops": removed["ngram_loops"],
                "hallucinations": removed["hallucinations"],
                "doubtful_segments": removed["doubtful_segments"],
                "characters": removed["characters"],
            },
            "simplified_characters": converted,
            "rules": compliance([(cue.start, cue.end, cue.text) for cue in cues], self.rules),
        }
        return Optimized(cues, stats)

    # -- cutting ----------------------------------------------------------------------------

    def _fits(self, group: list[Token], wrapped: _Wrapped | None = None) -> bool:
        """Whether `group` is one cue within the rules; its lines are kept in `wrapped` when given."""
        if group[-1].end - group[0].start > self.rules.max_cue_s:
            return False
        lines = self.rules.wrap(group)
        if lines is None:
            return False
        if wrapped is not None:
            # The group is kept with its lines: its id stays its own while the entry lives.
            wrapped[id(group)] = (group, lines)
        return True

    def _cut(self, block: list[Token], wrapped: _Wrapped) -> list[list[Token]]:
        """`block` in pieces that fit, each cut at the best boundary (iterative, so that a
        10,000-character segment does not recurse deeply)."""
        done: list[list[Token]] = []
        pending = [block]
        while pending:
            group = pending.pop()
            if len(group) == 1 or self._fits(group, wrapped):
                done.append(group)
                continue
            cut = self._best_cut(group)
            pending.extend([group[cut:], group[:cut]])  # left half is taken next
        return done

    def _best_cut(self, group: list[Token]) -> int:
        lengths = [token.visible + 1 for token in group]
        total_chars = sum(lengths)
        start, duration = group[0].start, group[-1].end - group[0].start
        min_cue_s = self.rules.min_cue_s
        # A half too short to read costs extra only when an even cut would avoid one.
        avoidable = min_cue_s <= duration / 2
        best, best_score = 1, math.inf
        left_chars = 0
        # The same arithmetic as max()/min() of these values, written out: this loop runs for
        # every token of every group cut.
        for cut in range(1, len(group)):
            token = group[cut - 1]
            left_chars += lengths[cut - 1]
            right_chars = total_chars - left_chars
            balance = (left_chars if left_chars >= right_chars else right_chars) / total_chars
            left_time = token.end - start
            if duration > 0:
                share = left_time / duration
                if share > balance:
                    balance = share
                if 1 - share > balance:
                    balance = 1 - share
            score = balance + _CUT_PENALTY[token.boundary]
            right_time = duration - left_time
            if avoidable and (left_time if left_time <= right_time else right_time) < min_cue_s:
                score += 1.0
            if score < best_score:
                best, best_score = cut, score
        return best

    # -- merging and timing -----------------------------------------------------------------

    def _merge_short(self, groups: list[list[Token]], audio_end: float) -> list[list[Token]]:
        """A cue that cannot last `min_cue_s` even using the gap after it joins the nearer
        neighbour when the two together still fit."""
        index = 0
        while index < len(groups):
            group = groups[index]
            room_until = groups[index + 1][0].start if index + 1 < len(groups) else audio_end
            if room_until - group[0].start >= self.rules.min_cue_s:
                index += 1
                continue
            before = groups[index - 1] if index > 0 else None
            after = groups[index + 1] if index + 1 < len(groups) else None
            options = []
            if before is not None and self._fits(before + group):
                options.append((group[0].start - before[-1].end, index - 1))
            if after is not None and self._fits(group + after):
                options.append((after[0].start - group[-1].end, index))
            if not options:
                index += 1
                continue
            _, first = min(options)
            groups[first : first + 2] = [groups[first] + groups[first + 1]]
            index = max(first, 0)
        return groups

    def _settle(self, groups: list[list[Token]], audio_end: float, wrapped: _Wrapped) -> list[Cue]:
        rules = self.rules
        cues: list[Cue] = []
        previous_end = 0.0
        for index, group in enumerate(groups):
            known = wrapped.get(id(group))
            lines = known[1] if known is not None and known[0] is group else rules.wrap(group)
            text = "\n".join(lines or rules.fill(group))
            next_start = groups[index + 1][0].start if index + 1 < len(groups) else audio_end
            limit = max(min(next_start, audio_end), previous_end)
            start = min(max(group[0].start, previous_end), limit)
            end = min(max(group[-1].end, start), limit)
            # Long enough to read: first into the gap after, then into the gap before.
            needed = min(max(rules.min_cue_s, rules.reading_seconds(text)), rules.max_cue_s)
            end = min(max(end, start + needed), limit)
            start = max(min(start, end - needed), previous_end)
            # Too long (a few words spread over a long segment): the words are at its start.
            end = min(end, start + rules.max_cue_s)
            start, end = _milliseconds(start), _milliseconds(end)
            if end - start < _MILLISECOND:
                if end + _MILLISECOND <= limit:
                    end = _milliseconds(end + _MILLISECOND)
                elif cues:
                    # No room left on the timeline: the text joins the cue before...
                    cues[-1].text += "\n" + text
                    cues[-1].words = _words([*(cues[-1].words or []), *_group_words(group)])
                    continue
                elif index + 1 < len(groups):
                    # ...or, for the first cue, the cue after.
                    groups[index + 1] = group + groups[index + 1]
                    continue
            cues.append(Cue(start=start, end=end, text=text, words=_words(_group_words(group))))
            previous_end = end
        return cues


def _ordered(segments: list[SegmentTranscribed]) -> list[SegmentTranscribed]:
    """By start time; a segment without a usable start keeps its place in the sequence."""
    starts: dict[int, float] = {}
    latest = 0.0
    for segment in sorted(segments, key=lambda s: s.sequence):
        latest = _finite(segment.start, latest)
        starts[id(segment)] = latest
    return sorted(segments, key=lambda s: (starts[id(s)], s.sequence))


def _timeline(segments: list[SegmentTranscribed], audio_end: float) -> list[_Span]:
    """Segments in time order with possible times: a missing time takes its neighbour's, none
    is negative or past the audio, and an overlap is trimmed so segments follow each other."""
    spans: list[_Span] = []
    previous_end = 0.0
    for segment in _ordered(segments):
        start = min(max(_finite(segment.start, previous_end), previous_end, 0.0), audio_end)
        end = min(max(_finite(segment.end, start), start), audio_end)
        words = [_clamped(word, start, end) for word in segment.words] if segment.words else None
        spans.append(_Span(start, end, segment.text, words, segment.language))
        previous_end = max(previous_end, end)
    return spans


def _clamped(word: Word, start: float, end: float) -> Word:
    if (
        (word.start is None or start <= word.start <= end)
        and (word.end is None or start <= word.end <= end)
        and (word.score is None or math.isfinite(word.score))
    ):
        return word  # nothing to change (most words): no copy (words are never changed in place)

    def inside(time: float | None) -> float | None:
        return None if time is None or not math.isfinite(time) else min(max(time, start), end)

    # NaN is not JSON: a score alignment could not compute (whisperx writes NaN) becomes None.
    score = word.score if word.score is not None and math.isfinite(word.score) else None
    return Word(word=word.word, start=inside(word.start), end=inside(word.end), score=score)


def _simplify(span: _Span) -> int:
    """Converts the span in place; the number of characters that changed."""
    simplified = chinese.to_simplified(span.text)
    changed = sum(a != b for a, b in zip(span.text, simplified, strict=False))
    span.text = simplified
    if span.words:
        span.words = [
            word.model_copy(update={"word": chinese.to_simplified(word.word)}) for word in span.words
        ]
    return changed


def _by_segment(tokens: list[Token]) -> list[list[Token]]:
    """Runs of tokens of one segment, in order."""
    return [list(block) for _, block in groupby(tokens, key=attrgetter("segment"))]


def _group_words(group: list[Token]) -> list[Word]:
    return [word for token in group for word in token.words]


def _words(words: list[Word]) -> list[Word] | None:
    return words or None


def _milliseconds(time: float) -> float:
    return math.floor(time * 1000 + 0.5) / 1000 if math.isfinite(time) else time


def _finite(value: float, fallback: float) -> float:
    return value if math.isfinite(value) else fallback
