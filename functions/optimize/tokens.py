"""A segment's text as timed tokens, the units cues are cut from and loops are counted in.

A token is a word in spaced scripts or one character in Chinese/Japanese, with the punctuation
around it attached, so no line starts with a comma and no cut falls inside a word. Times come
from the model's word timestamps where it gave them; between those (or without any) time runs
in proportion to characters, which is the best guess a segment alone allows: to visible ones,
a Chinese/Japanese character weighing as much as it takes to read (`wide_weight` Latin
letters), so a mixed-script segment read at a pace the rules allow gives every piece of it a
pace they allow too.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field

from events.models import Word
from functions.optimize.script import CJK, OPENING, PUNCTUATION, Boundary, boundary_after, is_cjk, is_wide

_PIECE = re.compile(f"[{CJK}]|[{PUNCTUATION}]+|[^\\s{CJK}{PUNCTUATION}]+")


@dataclass(slots=True)
class Token:
    text: str
    start: float
    end: float
    # Whether the source had a space before this token (none between Chinese characters).
    space_before: bool
    # Index of the segment it came from: cues are cut within a segment, loops counted across.
    segment: int
    words: list[Word] = field(default_factory=list)

    @property
    def boundary(self) -> Boundary:
        return boundary_after(self.text)


def join(tokens: list[Token]) -> str:
    """Tokens as the source spelled them, one space at most between two."""
    parts: list[str] = []
    for token in tokens:
        if parts and token.space_before:
            parts.append(" ")
        parts.append(token.text)
    return "".join(parts)


def spans(text: str, max_chars: int, max_chars_cjk: int) -> list[tuple[int, int, bool]]:
    """(start, end, space_before) character spans of the tokens of `text`."""
    result: list[tuple[int, int, bool]] = []
    opening: tuple[int, bool] | None = None  # an opening mark waiting for its word
    previous_end = 0
    for match in _PIECE.finditer(text):
        start, end = match.span()
        spaced = start > previous_end
        previous_end = end
        piece = match.group()
        if _is_punctuation(piece):
            if all(char in OPENING for char in piece):
                # Opening quotes and brackets belong to the word after them.
                opening = opening or (start, spaced)
                continue
            if result and opening is None:
                # Other punctuation belongs to the word before it, spaced or not
                # ("word —" keeps its dash, a Chinese comma too): no line starts with it.
                first, _, first_spaced = result[-1]
                result[-1] = (first, end, first_spaced)
                continue
        if opening is not None:
            (start, spaced), opening = opening, None
        result.append((start, end, spaced))
    if opening is not None:
        if result:
            first, _, first_spaced = result[-1]
            result[-1] = (first, previous_end, first_spaced)
        else:
            result.append((opening[0], previous_end, opening[1]))
    return [
        piece
        for start, end, spaced in result
        for piece in _chunks(text, start, end, spaced, max_chars_cjk if is_cjk(text[start]) else max_chars)
    ]


def _is_punctuation(piece: str) -> bool:
    return not any(char.isalnum() for char in piece)


def _chunks(text: str, start: int, end: int, spaced: bool, limit: int) -> list[tuple[int, int, bool]]:
    # A "word" longer than a whole line is not a word of any language (a URL, a hash, a loop
    # of letters): it is cut into line-sized pieces, the one place a cut falls inside it.
    if end - start <= limit:
        return [(start, end, spaced)]
    return [
        (offset, min(offset + limit, end), spaced and offset == start) for offset in range(start, end, limit)
    ]


def timed_tokens(
    text: str,
    start: float,
    end: float,
    words: list[Word] | None,
    segment: int,
    max_chars: int,
    max_chars_cjk: int,
    wide_weight: float = 1.0,
) -> list[Token]:
    """The tokens of one segment spanning [start, end], each with its time and its words."""
    pieces = spans(text, max_chars, max_chars_cjk)
    if not pieces:
        return []
    anchors, placed = _anchors(text, start, end, words or [])
    offsets, times = zip(*anchors, strict=True)
    position = _positions(text, wide_weight)
    tokens = [
        Token(
            text=text[a:b],
            start=_interpolate(offsets, times, position, a, starting=True),
            end=_interpolate(offsets, times, position, b, starting=False),
            space_before=spaced,
            segment=segment,
        )
        for a, b, spaced in pieces
    ]
    # Where this segment meets the one before in a cue: a space, except in Chinese/Japanese.
    tokens[0].space_before = not is_wide(text[pieces[0][0]])
    token_starts = [a for a, _, _ in pieces]
    for offset, word in placed:
        index = max(bisect.bisect_right(token_starts, offset) - 1, 0)
        tokens[index].words.append(word)
    return tokens


def _anchors(
    text: str, start: float, end: float, words: list[Word]
) -> tuple[list[tuple[int, float]], list[tuple[int, Word]]]:
    """Known (character offset, time) points, and each word with the offset it was found at.

    Words are looked up in order; one the text does not contain (a model whose words and
    text disagree) keeps the offset of the search so far and adds no time."""
    anchors = [(0, start)]
    placed: list[tuple[int, Word]] = []
    cursor = 0
    for word in words:
        needle = word.word.strip()
        found = text.find(needle, cursor) if needle else -1
        offset = found if found >= 0 else cursor
        placed.append((offset, word))
        if found < 0:
            continue
        cursor = found + len(needle)
        for at, time in ((found, word.start), (cursor, word.end)):
            if time is not None and math.isfinite(time):
                anchors.append((at, min(max(time, start), end)))
    anchors.append((len(text), end))
    anchors.sort(key=lambda anchor: anchor[0])
    # Times never run backwards, whatever the model said.
    latest = start
    monotonic = []
    for offset, time in anchors:
        latest = max(latest, time)
        monotonic.append((offset, latest))
    return monotonic, placed


def _positions(text: str, wide_weight: float) -> list[float]:
    """Where each character offset falls in the time a segment takes to say: spaces take
    none, a Chinese/Japanese character `wide_weight`, any other character one."""
    position = [0.0]
    for char in text:
        weight = 0.0 if char.isspace() else wide_weight if is_wide(char) else 1.0
        position.append(position[-1] + weight)
    return position


def _interpolate(
    offsets: tuple[int, ...], times: tuple[float, ...], position: list[float], offset: int, starting: bool
) -> float:
    """Time at a character offset. Where several anchors share the offset (a word starting
    where the segment starts), a token starts at the latest of them and ends at the earliest."""
    if starting:
        at = bisect.bisect_right(offsets, offset) - 1
        if at >= 0 and offsets[at] == offset:
            return times[at]
    else:
        at = bisect.bisect_left(offsets, offset)
        if at < len(offsets) and offsets[at] == offset:
            return times[at]
    right = bisect.bisect_left(offsets, offset)
    if right == 0:
        return times[0]
    if right >= len(offsets):
        return times[-1]
    left = right - 1
    weight = position[offsets[right]] - position[offsets[left]]
    share = (position[offset] - position[offsets[left]]) / weight if weight > 0 else 0.0
    return times[left] + share * (times[right] - times[left])
