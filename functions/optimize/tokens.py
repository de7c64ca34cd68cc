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
from collections.abc import Iterable
from itertools import accumulate
from operator import itemgetter

from events.models import Word
from functions.optimize.script import (
    CJK,
    OPENING,
    PUNCTUATION,
    Boundary,
    boundary_after,
    is_cjk,
    is_wide,
    visible_length,
    wide_count,
)

_PIECE = re.compile(f"[{CJK}]|[{PUNCTUATION}]+|[^\\s{CJK}{PUNCTUATION}]+")
# A letter or a digit: `[^\W_]` matches exactly the characters str.isalnum() accepts.
_ALNUM = re.compile(r"[^\W_]")


class Token:
    """One token and its time (seconds). `text` is not changed once the token is made: its
    measures (`visible`, `wide`, `boundary`) are taken here, once. A plain class with slots
    rather than a dataclass: a run makes one per word or Chinese character (some 9,000 an hour
    of speech), and this positional constructor costs about half a dataclass's."""

    __slots__ = ("boundary", "end", "segment", "space_before", "start", "text", "visible", "wide", "words")

    def __init__(
        self,
        text: str,
        start: float,
        end: float,
        space_before: bool,
        segment: int,
        words: list[Word] | None = None,
    ) -> None:
        self.text = text
        self.start = start
        self.end = end
        # Whether the source had a space before this token (none between Chinese characters).
        self.space_before = space_before
        # Index of the segment it came from: cues are cut within a segment, loops counted across.
        self.segment = segment
        self.words: list[Word] = [] if words is None else words
        # Measures of `text`, taken once: cutting and wrapping ask for them again and again.
        # Characters held to the Chinese/Japanese limits; characters a reader sees; what ends it.
        self.wide = 0 if text.isascii() else wide_count(text)
        self.visible: int
        self.boundary: Boundary
        if text.isalnum():  # a plain word or character (most tokens): no space, no punctuation
            self.visible = len(text)
            self.boundary = Boundary.WORD
        else:
            self.visible = visible_length(text)
            self.boundary = boundary_after(text)

    def __repr__(self) -> str:
        return f"Token({self.text!r}, {self.start}, {self.end}, {self.space_before}, {self.segment})"


def join(tokens: list[Token]) -> str:
    """Tokens as the source spelled them, one space at most between two."""
    if not tokens:
        return ""
    parts = [" " + token.text if token.space_before else token.text for token in tokens]
    parts[0] = tokens[0].text
    return "".join(parts)


def spans(text: str, max_chars: int, max_chars_cjk: int) -> list[tuple[int, int, bool]]:
    """(start, end, space_before) character spans of the tokens of `text`."""
    result: list[tuple[int, int, bool]] = []
    opening: tuple[int, bool] | None = None  # an opening mark waiting for its word
    previous_end = 0
    for start, end, piece in _pieces(text):
        spaced = start > previous_end
        previous_end = end
        if not (piece.isalnum() or _ALNUM.search(piece)):  # punctuation only
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
    if all(end - start <= max_chars_cjk <= max_chars for start, end, _ in result):
        return result  # no token longer than a line (nearly always): nothing to cut
    pieces: list[tuple[int, int, bool]] = []
    for start, end, spaced in result:
        if end - start <= max_chars_cjk <= max_chars:  # shorter than either limit: one token
            pieces.append((start, end, spaced))
        else:
            pieces.extend(
                _chunks(text, start, end, spaced, max_chars_cjk if is_cjk(text[start]) else max_chars)
            )
    return pieces


def _pieces(text: str) -> Iterable[tuple[int, int, str]]:
    """(start, end, text) of each match of `_PIECE`, in order."""
    simple = text.isascii() and text.isprintable() and "  " not in text
    if simple and text[:1] not in ("", " ") and text[-1] != " ":
        # ASCII words one space apart (a closed-up English segment): no character is CJK or
        # CJK punctuation, so the pieces are exactly the words, found without the regex.
        words = text.split(" ")
        # one start more than words (where a next word would start): zip stops at the words
        starts = accumulate((len(word) + 1 for word in words), initial=0)
        return ((start, start + len(word), word) for start, word in zip(starts, words, strict=False))
    return ((match.start(), match.end(), match.group()) for match in _PIECE.finditer(text))


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
    token_starts = [a for a, _, _ in pieces]
    starts = _times_at(offsets, times, position, token_starts, starting=True)
    ends = _times_at(offsets, times, position, [b for _, b, _ in pieces], starting=False)
    tokens = [
        Token(text[a:b], token_start, token_end, spaced, segment)
        for (a, b, spaced), token_start, token_end in zip(pieces, starts, ends, strict=True)
    ]
    # Where this segment meets the one before in a cue: a space, except in Chinese/Japanese.
    tokens[0].space_before = not is_wide(text[pieces[0][0]])
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
    isfinite = math.isfinite
    for word in words:
        needle = word.word.strip()
        found = text.find(needle, cursor) if needle else -1
        if found < 0:
            placed.append((cursor, word))
            continue
        placed.append((found, word))
        cursor = found + len(needle)
        # Clamped to the segment: min(max(time, start), end), written out (once per word).
        time = word.start
        if time is not None and isfinite(time):
            if start > time:
                time = start
            anchors.append((found, end if end < time else time))
        time = word.end
        if time is not None and isfinite(time):
            if start > time:
                time = start
            anchors.append((cursor, end if end < time else time))
    anchors.append((len(text), end))
    anchors.sort(key=itemgetter(0))  # stable: anchors at one offset keep their order
    # Times never run backwards, whatever the model said.
    latest = start
    monotonic = []
    for offset, time in anchors:
        if time > latest:
            latest = time
        monotonic.append((offset, latest))
    return monotonic, placed


def _positions(text: str, wide_weight: float) -> list[float]:
    """Where each character offset falls in the time a segment takes to say: spaces take
    none, a Chinese/Japanese character `wide_weight`, any other character one."""
    weights: Iterable[float]
    if text.isascii():  # no wide characters: the common case, weighed byte by byte in C
        weights = map(_ASCII_WEIGHTS.__getitem__, text.encode("ascii"))
    else:
        weights = (0.0 if char.isspace() else wide_weight if is_wide(char) else 1.0 for char in text)
    # accumulate adds in the same order as a running sum: the same floats, to the last bit.
    return list(accumulate(weights, initial=0.0))


# The weight of each ASCII character in `_positions`: none for a space, one for any other.
_ASCII_WEIGHTS = [0.0 if chr(code).isspace() else 1.0 for code in range(128)]


def _times_at(
    offsets: tuple[int, ...],
    times: tuple[float, ...],
    position: list[float],
    points: list[int],
    starting: bool,
) -> list[float]:
    """Times at character offsets `points` (in ascending order, as tokens come), in one sweep
    over the anchors (`offsets` ascending, `times` theirs). Where several anchors share a point
    (a word starting where the segment starts), a token starts at the latest of them and ends
    at the earliest; between anchors time runs in proportion to `position`."""
    count = len(offsets)
    if count == 2 and offsets[0] < offsets[1] and position[offsets[1]] > position[offsets[0]]:
        # Only the segment's ends (no word times): the general case below, in one expression.
        first, last = offsets
        since, until = times
        base, weight, gap = position[first], position[last] - position[first], until - since
        return [
            since
            if point <= first
            else until
            if point >= last
            else since + (position[point] - base) / weight * gap
            for point in points
        ]
    found: list[float] = []
    right = 0  # the first anchor at or after the point
    for point in points:
        while right < count and offsets[right] < point:
            right += 1
        if right < count and offsets[right] == point:
            if starting:
                last = right
                while last + 1 < count and offsets[last + 1] == point:
                    last += 1
                found.append(times[last])
            else:
                found.append(times[right])
        elif right == 0:
            found.append(times[0])
        elif right >= count:
            found.append(times[-1])
        else:
            left = right - 1
            weight = position[offsets[right]] - position[offsets[left]]
            share = (position[point] - position[offsets[left]]) / weight if weight > 0 else 0.0
            found.append(times[left] + share * (times[right] - times[left]))
    return found
