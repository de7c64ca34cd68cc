"""The segment rules: how long a cue stays on screen, how much text it holds, how its lines
break, how fast it must be read; and the check that reports how many cues meet them.

Line length is one budget measured in both scripts at once: a line may hold `max_line_chars`
Latin characters or `max_line_chars_cjk` Chinese ones, and a mixed line the matching share of
each. Reading speed works the same way with seconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events.settings import Settings
from functions.optimize.script import Boundary, visible_length, wide_count
from functions.optimize.tokens import Token, join

# Tolerance for times already rounded to the millisecond in subtitle files.
_EPSILON_S = 0.0015


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
        narrow = len(line) - wide
        # integer form of narrow / max_line_chars + wide / max_line_chars_cjk <= 1
        return narrow * self.max_line_chars_cjk + wide * self.max_line_chars <= (
            self.max_line_chars * self.max_line_chars_cjk
        )

    def reading_seconds(self, text: str) -> float:
        """How long a reader needs for `text` at the reading speed limits."""
        wide = wide_count(text)
        return (visible_length(text) - wide) / self.max_cps + wide / self.max_cps_cjk

    def text_fits(self, text: str) -> bool:
        lines = text.split("\n")
        return (
            visible_length(text) <= self.max_cue_chars
            and len(lines) <= self.max_lines
            and all(self.line_fits(line) for line in lines)
        )

    def duration_fits(self, start: float, end: float) -> bool:
        return self.min_cue_s - _EPSILON_S <= end - start <= self.max_cue_s + _EPSILON_S

    def reading_fits(self, text: str, start: float, end: float) -> bool:
        return self.reading_seconds(text) <= end - start + _EPSILON_S

    def wrap(self, tokens: list[Token]) -> list[str] | None:
        """The tokens as at most `max_lines` lines that fit, breaking between tokens only
        (balanced, at punctuation when it costs little), or None when they cannot fit."""
        if visible_length(join(tokens)) > self.max_cue_chars:
            return None
        whole = join(tokens)
        if self.line_fits(whole):
            return [whole]
        if self.max_lines < 2:
            return None
        if self.max_lines == 2:
            return self._two_lines(tokens)
        return self._greedy(tokens)

    def _two_lines(self, tokens: list[Token]) -> list[str] | None:
        best: tuple[float, list[str]] | None = None
        for cut in range(1, len(tokens)):
            lines = [join(tokens[:cut]), join(tokens[cut:])]
            if not all(self.line_fits(line) for line in lines):
                continue
            # Balanced lines read best; a break after punctuation is worth a few characters.
            score = max(_width(self, line) for line in lines)
            if tokens[cut - 1].boundary is not Boundary.WORD:
                score -= 0.15
            if lines[1].isdigit():
                # Lenient readers (pysubs2, players guessing at broken files) take a last line
                # of digits alone ("in the year / 2020") for the next cue's number.
                score += 1.0
            if best is None or score < best[0]:
                best = (score, lines)
        return None if best is None else best[1]

    def _greedy(self, tokens: list[Token]) -> list[str] | None:
        lines = self.fill(tokens)
        if len(lines) > self.max_lines or not all(self.line_fits(line) for line in lines):
            return None
        return lines

    def fill(self, tokens: list[Token]) -> list[str]:
        """As many lines as the tokens need, each as full as it can be (for text that cannot
        meet the rules, such as what broken times left no room for)."""
        lines: list[list[Token]] = [[]]
        for token in tokens:
            if lines[-1] and not self.line_fits(join([*lines[-1], token])):
                lines.append([])
            lines[-1].append(token)
        return [join(line) for line in lines]


def _width(rules: SegmentRules, line: str) -> float:
    """Share of a full line that `line` takes."""
    wide = wide_count(line)
    return (len(line) - wide) / rules.max_line_chars + wide / rules.max_line_chars_cjk


def compliance(cues: list[tuple[float, float, str]], rules: SegmentRules) -> dict[str, Any]:
    """The quality figure: shares of cues meeting the duration and length rules (target 0.95),
    and each rule alone. None when there are no cues to judge."""
    total = len(cues)
    duration = sum(rules.duration_fits(start, end) for start, end, _ in cues)
    length = sum(rules.text_fits(text) for _, _, text in cues)
    both = sum(rules.duration_fits(start, end) and rules.text_fits(text) for start, end, text in cues)
    reading = sum(rules.reading_fits(text, start, end) for start, end, text in cues)

    def share(count: int) -> float | None:
        return None if total == 0 else round(count / total, 4)

    return {
        "cues": total,
        "duration_and_length": share(both),
        "duration": share(duration),
        "length": share(length),
        "reading_speed": share(reading),
    }
