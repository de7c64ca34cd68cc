"""The segment rules: how long a cue stays on screen, how much text it holds, how its lines
break, how fast it must be read; and the check that reports how many cues meet them.

Line length is one budget measured in both scripts at once: a line may hold `max_line_chars`
Latin characters or `max_line_chars_cjk` Chinese ones, and a mixed line the matching share of
each. Reading speed works the same way with seconds.

A diarized cue is shown in SubRip (and plain text) after its speaker's label, `[SPEAKER_00]: `
(`speaker_label`, WhisperX's SubtitlesWriter prefix): the label is on screen, so it counts
against its first line's length and the cue's characters, as `reserved` characters of `wrap`.
WebVTT carries the speaker in a voice span (`<v SPEAKER_00>`), which players do not show as
text, but the cue's lines are one text for every format, so its lines are the SubRip ones. The
label does not count against reading speed: a reader takes in a label that repeats at a glance,
and counting it would lengthen every diarized cue for no words."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from operator import add, attrgetter
from typing import Any

from events.settings import Settings
from functions.optimize.script import Boundary, visible_length, wide_count
from functions.optimize.tokens import Token, join

# Tolerance for times already rounded to the millisecond in subtitle files.
_EPSILON_S = 0.0015


def speaker_label(speaker: str | None) -> str:
    """What SubRip and plain text show before a cue of `speaker`: `[SPEAKER_00]: ` (WhisperX's
    SubtitlesWriter), nothing without a speaker (a job without diarization)."""
    return "" if speaker is None else f"[{speaker}]: "


@dataclass(frozen=True)
class SegmentRules:
    """Times in seconds, lengths in characters, reading speeds in characters per second. The
    values, their defaults and their descriptions are the OPTIMIZE_* settings
    (`events.settings.Settings`), and only there."""

    min_cue_s: float
    max_cue_s: float
    max_cue_chars: int
    max_line_chars: int
    max_line_chars_cjk: int
    max_lines: int
    max_cps: float
    max_cps_cjk: float

    @classmethod
    def defaults(cls) -> SegmentRules:
        """The settings' defaults, whatever the environment says."""
        return cls.from_settings(Settings.model_construct())

    @classmethod
    def from_settings(cls, settings: Settings) -> SegmentRules:
        return cls(
            min_cue_s=settings.optimize_min_cue_s,
            max_cue_s=settings.optimize_max_cue_s,
            max_cue_chars=settings.optimize_max_cue_chars,
            max_line_chars=settings.optimize_max_line_chars,
            max_line_chars_cjk=settings.optimize_max_line_chars_cjk,
            max_lines=settings.optimize_max_lines,
            max_cps=settings.optimize_max_cps,
            max_cps_cjk=settings.optimize_max_cps_cjk,
        )

    def line_fits(self, line: str) -> bool:
        wide = wide_count(line)
        return self._counts_fit(len(line), wide)

    def _counts_fit(self, length: int, wide: int) -> bool:
        """`line_fits` for a line of `length` characters, `wide` of them Chinese/Japanese."""
        # integer form of narrow / max_line_chars + wide / max_line_chars_cjk <= 1
        return (length - wide) * self.max_line_chars_cjk + wide * self.max_line_chars <= (
            self.max_line_chars * self.max_line_chars_cjk
        )

    def reading_seconds(self, text: str) -> float:
        """How long a reader needs for `text` at the reading speed limits."""
        return self._reading_seconds(visible_length(text), wide_count(text))

    def _reading_seconds(self, visible: int, wide: int) -> float:
        """`reading_seconds` of a text with `visible` characters, `wide` of them Chinese/Japanese."""
        return (visible - wide) / self.max_cps + wide / self.max_cps_cjk

    def text_fits(self, text: str) -> bool:
        return self._text_fits(text, visible_length(text))

    def _text_fits(self, text: str, visible: int) -> bool:
        """`text_fits` of `text`, whose `visible_length` is `visible`."""
        lines = text.split("\n")
        return (
            visible <= self.max_cue_chars
            and len(lines) <= self.max_lines
            and all(self.line_fits(line) for line in lines)
        )

    def duration_fits(self, start: float, end: float) -> bool:
        return self.min_cue_s - _EPSILON_S <= end - start <= self.max_cue_s + _EPSILON_S

    def reading_fits(self, text: str, start: float, end: float) -> bool:
        return self.reading_seconds(text) <= end - start + _EPSILON_S

    def wrap(self, tokens: list[Token], reserved: int = 0) -> list[str] | None:
        """The tokens as at most `max_lines` lines that fit, breaking between tokens only
        (balanced, at punctuation when it costs little), or None when they cannot fit.
        `reserved` Latin characters are already on the first line (a speaker's label)."""
        # Lengths come from the tokens' own measures (a line is its tokens' text and one space
        # before each spaced token but the first): no candidate line is joined to be measured.
        visible = sum(map(_VISIBLE, tokens))
        wide = sum(map(_WIDE, tokens))
        if visible + reserved > self.max_cue_chars:
            return None
        # Not even the visible characters fill fewer than `max_lines` lines: no wrap can fit
        # (the quick answer for the long groups cutting asks about first).
        if (visible + reserved - wide) * self.max_line_chars_cjk + wide * self.max_line_chars > (
            self.max_lines * self.max_line_chars * self.max_line_chars_cjk
        ):
            return None
        ends, wides = _line_measures(tokens)
        if self._counts_fit(ends[-1] + reserved, wides[-1]):
            return [join(tokens)]
        if self.max_lines < 2:
            return None
        if self.max_lines == 2:
            return self._two_lines(tokens, ends, wides, reserved)
        return self._greedy(tokens, reserved)

    def _two_lines(
        self, tokens: list[Token], ends: list[int], wides: list[int], reserved: int = 0
    ) -> list[str] | None:
        count = len(tokens)
        total, total_wide = ends[-1], wides[-1]
        latin, cjk = self.max_line_chars, self.max_line_chars_cjk
        # `_counts_fit` in one comparison: length * cjk + wide * (latin - cjk) <= latin * cjk.
        # It only grows as a line takes more tokens, so the first line fits up to some cut and
        # the second from some cut on: the loop stops at the first cut too long for line one.
        extra, area = latin - cjk, latin * cjk
        # tokens[cut:] joined is all digits from `digits_from` on: each token is, none spaced.
        digits_from = cut = count
        while cut > 1 and tokens[cut - 1].text.isdigit() and (cut == count or not tokens[cut].space_before):
            cut -= 1
            digits_from = cut
        best: tuple[float, int] | None = None
        for cut in range(1, count):
            first, first_wide = ends[cut] + reserved, wides[cut]
            if first * cjk + first_wide * extra > area:
                break
            # the second line starts at tokens[cut] without the space before it
            second = total - ends[cut] - (1 if tokens[cut].space_before else 0)
            second_wide = total_wide - first_wide
            if second * cjk + second_wide * extra > area:
                continue
            # Balanced lines read best; a break after punctuation is worth a few characters.
            score = max(
                (first - first_wide) / latin + first_wide / cjk,
                (second - second_wide) / latin + second_wide / cjk,
            )
            if tokens[cut - 1].boundary is not Boundary.WORD:
                score -= 0.15
            if cut >= digits_from:
                # Lenient readers (pysubs2, players guessing at broken files) take a last line
                # of digits alone ("in the year / 2020") for the next cue's number.
                score += 1.0
            if best is None or score < best[0]:
                best = (score, cut)
        if best is None:
            return None
        return [join(tokens[: best[1]]), join(tokens[best[1] :])]

    def _greedy(self, tokens: list[Token], reserved: int = 0) -> list[str] | None:
        lines = self.fill(tokens, reserved)
        if len(lines) > self.max_lines or not all(
            self._counts_fit(len(line) + (reserved if index == 0 else 0), wide_count(line))
            for index, line in enumerate(lines)
        ):
            return None
        return lines

    def fill(self, tokens: list[Token], reserved: int = 0) -> list[str]:
        """As many lines as the tokens need, each as full as it can be (for text that cannot
        meet the rules, such as what broken times left no room for); `reserved` as in `wrap`."""
        lines: list[list[Token]] = [[]]
        length, wide = reserved, 0  # of the last line
        for token in tokens:
            if lines[-1]:
                longer = length + len(token.text) + (1 if token.space_before else 0)
                if self._counts_fit(longer, wide + token.wide):
                    length, wide = longer, wide + token.wide
                else:
                    lines.append([])
                    length, wide = len(token.text), token.wide
            else:
                length, wide = length + len(token.text), token.wide
            lines[-1].append(token)
        return [join(line) for line in lines]


def _line_measures(tokens: list[Token]) -> tuple[list[int], list[int]]:
    """Running (length, wide characters) of `join(tokens[:k])` for k = 0..len(tokens)."""
    spaced = list(map(_SPACED, tokens))
    spaced[0] = False  # a line's first token has no space before it
    lengths = accumulate(map(len, map(_TEXT, tokens)))
    return [0, *map(add, lengths, accumulate(spaced))], [0, *accumulate(map(_WIDE, tokens))]


_TEXT = attrgetter("text")
_SPACED = attrgetter("space_before")
_VISIBLE = attrgetter("visible")
_WIDE = attrgetter("wide")


def compliance(
    cues: list[tuple[float, float, str]], rules: SegmentRules, labels: list[str] | None = None
) -> dict[str, Any]:
    """The quality figure: shares of cues meeting the duration and length rules (target 0.95),
    and each rule alone. None when there are no cues to judge. `labels`, one per cue when given,
    are the speakers' labels shown before the text: they count for length, not reading speed."""
    total = len(cues)
    duration = length = both = reading = 0
    for index, (start, end, text) in enumerate(cues):  # each rule judged once per cue
        visible, wide = visible_length(text), wide_count(text)
        duration_fits = rules.duration_fits(start, end)
        label = labels[index] if labels else ""
        if label:
            text_fits = rules._text_fits(label + text, visible + visible_length(label))
        else:
            text_fits = rules._text_fits(text, visible)
        duration += duration_fits
        length += text_fits
        both += duration_fits and text_fits
        reading += rules._reading_seconds(visible, wide) <= end - start + _EPSILON_S

    def share(count: int) -> float | None:
        return None if total == 0 else round(count / total, 4)

    return {
        "cues": total,
        "duration_and_length": share(both),
        "duration": share(duration),
        "length": share(length),
        "reading_speed": share(reading),
    }
