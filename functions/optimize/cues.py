"""From a run's model segments to subtitle cues, the optimize pipeline in order:

0. segments the decoder itself doubts dropped (hallucinations.doubtful), counted;
1. timeline: segments sorted by time, impossible times (NaN, negative, overlapping, past the
   audio's end) made possible; two speakers may talk at once (see "Speakers");
2. Traditional → Simplified for Mandarin, when configured;
3. timed tokens (tokens.py), then decoding loops (loops.py) and standalone silence
   hallucinations (hallucinations.py) removed, each counted;
4. each segment cut into cues that meet the rules (rules.py): at sentence punctuation first,
   then clause punctuation, then between words, balanced;
5. cues too short to read merged with a neighbour, then times settled: ordered, never
   overlapping, inside the audio, long enough to read where the gaps allow.

Speakers (a diarized job: every segment names its `speaker`, None everywhere otherwise, and then
every step below does exactly what it did before speakers existed). A cue never holds two
speakers' words: loops are looked for within one speaker's run of segments (two people saying
"yes." in turn is dialogue, not a decoding loop), and short cues merge, or text with no room left
joins, only with a cue of the same speaker. Two speakers talking at once: subtitles cannot
overlap (SubRip players show one cue at a time, not reliably two), so times are cut, never
text. A segment overlapping one of another speaker keeps its own start; where the other
speaker's segment lies wholly inside it (an "mm-hmm" during a long turn) the long one is split
at the end of the short one, so the cues read in the order things were said: the turn up to the
interjection, the interjection, the rest of the turn. Each cue then ends where the next begins.
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
from functions.optimize.rules import SegmentRules, compliance, speaker_label
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
    # Who said it (`SPEAKER_00`...) on a diarized job; None otherwise.
    speaker: str | None = None
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
    speaker: str | None


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
        # The speaker of each span, by index (a token's and a group's `segment`).
        speakers = [span.speaker for span in spans]
        diarized = any(speaker is not None for speaker in speakers)
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
        if diarized:
            # A loop is one speaker repeating: each speaker's run of segments on its own.
            tokens = [
                token
                for _, run in groupby(tokens, key=lambda token: speakers[token.segment])
                for token in remove_loops(list(run), self.loops, removed)
            ]
        else:
            tokens = remove_loops(tokens, self.loops, removed)
        blocks: list[list[Token]] = []
        for block in _by_segment(tokens):
            text = join(block)
            if text in self.hallucinations:
                removed["hallucinations"] += 1
                removed["characters"] += visible_length(text)
                continue
            blocks.append(block)
        if diarized:
            blocks = _interleave(blocks, speakers)
        groups: list[list[Token]] = []
        # The lines of each group cutting found to fit, for settling to show (it would wrap
        # them again); local to the run, since one Optimizer serves concurrent jobs.
        wrapped: _Wrapped = {}
        for block in blocks:
            groups.extend(self._cut(block, wrapped, _reserved(speakers[block[0].segment])))
        groups = self._merge_short(groups, audio_end, speakers)
        cues = self._settle(groups, audio_end, wrapped, speakers)
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
            "rules": compliance(
                [(cue.start, cue.end, cue.text) for cue in cues],
                self.rules,
                [speaker_label(cue.speaker) for cue in cues] if diarized else None,
            ),
        }
        return Optimized(cues, stats)

    # -- cutting ----------------------------------------------------------------------------

    def _fits(self, group: list[Token], wrapped: _Wrapped | None = None, reserved: int = 0) -> bool:
        """Whether `group` is one cue within the rules, `reserved` characters of its first line
        taken by its speaker's label; its lines are kept in `wrapped` when given."""
        if group[-1].end - group[0].start > self.rules.max_cue_s:
            return False
        lines = self.rules.wrap(group, reserved)
        if lines is None:
            return False
        if wrapped is not None:
            # The group is kept with its lines: its id stays its own while the entry lives.
            wrapped[id(group)] = (group, lines)
        return True

    def _cut(self, block: list[Token], wrapped: _Wrapped, reserved: int = 0) -> list[list[Token]]:
        """`block` in pieces that fit, each cut at the best boundary (iterative, so that a
        10,000-character segment does not recurse deeply)."""
        done: list[list[Token]] = []
        pending = [block]
        while pending:
            group = pending.pop()
            if len(group) == 1 or self._fits(group, wrapped, reserved):
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

    def _merge_short(
        self, groups: list[list[Token]], audio_end: float, speakers: list[str | None]
    ) -> list[list[Token]]:
        """A cue that cannot last `min_cue_s` even using the gap after it joins the nearer
        neighbour of the same speaker when the two together still fit."""
        index = 0
        while index < len(groups):
            group = groups[index]
            room_until = groups[index + 1][0].start if index + 1 < len(groups) else audio_end
            if room_until - group[0].start >= self.rules.min_cue_s:
                index += 1
                continue
            speaker = speakers[group[0].segment]
            reserved = _reserved(speaker)
            before = groups[index - 1] if index > 0 else None
            if before is not None and speakers[before[0].segment] != speaker:
                before = None
            after = groups[index + 1] if index + 1 < len(groups) else None
            if after is not None and speakers[after[0].segment] != speaker:
                after = None
            options = []
            if before is not None and self._fits(before + group, None, reserved):
                options.append((group[0].start - before[-1].end, index - 1))
            if after is not None and self._fits(group + after, None, reserved):
                options.append((after[0].start - group[-1].end, index))
            if not options:
                index += 1
                continue
            _, first = min(options)
            groups[first : first + 2] = [groups[first] + groups[first + 1]]
            index = max(first, 0)
        return groups

    def _settle(
        self, groups: list[list[Token]], audio_end: float, wrapped: _Wrapped, speakers: list[str | None]
    ) -> list[Cue]:
        rules = self.rules
        diarized = any(speaker is not None for speaker in speakers)
        cues: list[Cue] = []
        previous_end = 0.0
        for index, group in enumerate(groups):
            speaker = speakers[group[0].segment]
            reserved = _reserved(speaker)
            known = wrapped.get(id(group))
            lines = known[1] if known is not None and known[0] is group else rules.wrap(group, reserved)
            text = "\n".join(lines or rules.fill(group, reserved))
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
                elif cues and cues[-1].speaker == speaker:
                    # No room left on the timeline: the text joins the cue before...
                    cues[-1].text += "\n" + text
                    cues[-1].words = _words([*(cues[-1].words or []), *_group_words(group)])
                    continue
                elif (
                    not cues and index + 1 < len(groups) and speakers[groups[index + 1][0].segment] == speaker
                ):
                    # ...or, for the first cue, the cue after.
                    groups[index + 1] = group + groups[index + 1]
                    continue
                elif diarized:
                    # Another speaker's cue is before or after: times give way, not text.
                    placed = _room_apart(cues, start, needed, audio_end, rules.max_cue_s)
                    if placed is None:
                        kept = _same_speaker_cue(cues, speaker)
                        if kept is not None:
                            # Not one millisecond of the audio left: the text joins this
                            # speaker's latest cue rather than another speaker's.
                            kept.text += "\n" + text
                            kept.words = _words([*(kept.words or []), *_group_words(group)])
                            continue
                        # Neither (a recording with fewer milliseconds than turns): the cue
                        # stays as short as it is, as it would without speakers.
                    else:
                        start, end = placed
            cues.append(
                Cue(start=start, end=end, text=text, speaker=speaker, words=_words(_group_words(group)))
            )
            previous_end = end
        return cues


def _reserved(speaker: str | None) -> int:
    """Characters of a cue's first line its speaker's label takes (rules.py says why)."""
    return len(speaker_label(speaker))


def _room_apart(
    cues: list[Cue], start: float, needed: float, audio_end: float, max_cue_s: float
) -> tuple[float, float] | None:
    """Times for a cue of another speaker than its neighbours that found no room before the
    next cue's start: it takes the time it needs up to the audio's end (the next cues start
    later), or, at the audio's end, the second half of the cue before; None when neither has
    a millisecond to give."""
    if start + _MILLISECOND <= audio_end:
        end = _milliseconds(min(start + max(needed, _MILLISECOND), audio_end, start + max_cue_s))
        if end - start >= _MILLISECOND:
            return start, end
    if cues and cues[-1].end - cues[-1].start >= 2 * _MILLISECOND:
        before = cues[-1]
        middle = max(
            _milliseconds((before.start + before.end) / 2), _milliseconds(before.start + _MILLISECOND)
        )
        end = before.end
        before.end = middle
        return middle, end
    return None


def _same_speaker_cue(cues: list[Cue], speaker: str | None) -> Cue | None:
    return next((cue for cue in reversed(cues) if cue.speaker == speaker), None)


def _interleave(blocks: list[list[Token]], speakers: list[str | None]) -> list[list[Token]]:
    """Blocks (a segment's tokens each) in the order things were said when speakers overlap:
    a block holding the whole of another speaker's block in its time is split where that one
    ends (before the first of its tokens starting at or after it), and the pieces are ordered by
    their start (stable). Tokens and their times are not changed: settling cuts the times."""
    ordered = sorted(blocks, key=lambda block: block[0].start)
    pieces: list[list[Token]] = []
    for index, block in enumerate(ordered):
        speaker, first, last = speakers[block[0].segment], block[0].start, block[-1].end
        inside = []
        for later in range(index + 1, len(ordered)):
            other = ordered[later]
            if other[0].start >= last:
                break
            if speakers[other[0].segment] != speaker and first < other[0].start and other[-1].end < last:
                inside.append(other[-1].end)
        position = 0
        for cut_time in sorted(inside):
            cut = next((at for at in range(position, len(block)) if block[at].start >= cut_time), len(block))
            if cut > position:
                pieces.append(block[position:cut])
                position = cut
        if position < len(block):
            pieces.append(block[position:])
    pieces.sort(key=lambda piece: piece[0].start)
    return pieces


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
    is negative or past the audio, and an overlap of one speaker's segments (or of segments
    without speakers) is trimmed so they follow each other; two speakers' segments may
    overlap here (`_interleave` and settling order them)."""
    spans: list[_Span] = []
    previous_end = 0.0
    # Where each speaker's segments so far end (None: no diarization, one "speaker").
    turn_ends: dict[str | None, float] = {}
    for segment in _ordered(segments):
        turn_end = turn_ends.get(segment.speaker, 0.0)
        start = min(max(_finite(segment.start, previous_end), turn_end, 0.0), audio_end)
        end = min(max(_finite(segment.end, start), start), audio_end)
        words = [_clamped(word, start, end) for word in segment.words] if segment.words else None
        spans.append(_Span(start, end, segment.text, words, segment.language, segment.speaker))
        previous_end = max(previous_end, end)
        turn_ends[segment.speaker] = max(turn_end, end)
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
    return Word(
        word=word.word, start=inside(word.start), end=inside(word.end), score=score, speaker=word.speaker
    )


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
