"""Writing systems as the subtitle rules see them: which characters are Chinese/Japanese (no
spaces between words, wider on screen, read more slowly), which are punctuation, and where a
sentence or a clause ends. Chinese punctuation is punctuation here, like ASCII punctuation."""

from __future__ import annotations

import re
from enum import IntEnum

# Han (with extensions and compatibility ideographs), hiragana and katakana: one character is
# one token, lines break between any two of them.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
# CJK symbols and punctuation, full-width punctuation, general punctuation (dashes, curly
# quotes, ellipsis): never a token of its own, always attached to a neighbouring word.
PUNCTUATION = "\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65\u2010-\u2027"
OPENING = set("「『（《〈【〔“‘([{¿¡")  # noqa: RUF001 (these are the point)
CLOSING = set("」』）》〉】〕”’)]}\"'")  # noqa: RUF001 (these are the point)
SENTENCE_ENDS = set(".!?。！？…‼⁇⁈⁉")  # noqa: RUF001 (these are the point)
CLAUSE_ENDS = set(",;:、，；：—–")  # noqa: RUF001 (these are the point)

# Characters that take two cells on screen and are read like Chinese: CJK plus its own punctuation.
WIDE = CJK + "\u3000-\u303f\uff01-\uff60\uffe0-\uffe6"

_CJK_CHAR = re.compile(f"[{CJK}]")
_SPACE_BETWEEN_CJK = re.compile(f"(?<=[{CJK}])\\s+(?=[{CJK}])")
_WIDE_CHAR = re.compile(f"[{WIDE}]")
# The lowest code point of any CJK / WIDE range: below it a character is neither, which a string
# comparison tells without a regex (most characters of most transcripts are below it).
_CJK_FROM = "\u3040"
_WIDE_FROM = "\u3000"


class Boundary(IntEnum):
    """Where a break after a token falls, best first."""

    SENTENCE = 0
    CLAUSE = 1
    WORD = 2


def is_cjk(char: str) -> bool:
    return char >= _CJK_FROM and _CJK_CHAR.fullmatch(char) is not None


def boundary_after(text: str) -> Boundary:
    """What ends `text`: closing quotes and brackets are looked through ("Go." → sentence)."""
    stripped = text.rstrip()
    while stripped and stripped[-1] in CLOSING:
        stripped = stripped[:-1]
    if stripped and stripped[-1] in SENTENCE_ENDS:
        return Boundary.SENTENCE
    if stripped and stripped[-1] in CLAUSE_ENDS:
        return Boundary.CLAUSE
    return Boundary.WORD


def visible_length(text: str) -> int:
    """Characters a reader sees (spaces and line breaks excluded)."""
    # str.split() and str.isspace() share one definition of whitespace: what split drops is
    # exactly what isspace() calls a space.
    return sum(map(len, text.split()))


def is_wide(char: str) -> bool:
    return char >= _WIDE_FROM and _WIDE_CHAR.fullmatch(char) is not None


def wide_count(text: str) -> int:
    """Characters held to the Chinese/Japanese line length and reading speed."""
    return 0 if text.isascii() else len(_WIDE_CHAR.findall(text))


def comparison_key(text: str) -> str:
    """Text as loop and hallucination checks compare it: case, spaces, punctuation ignored."""
    key = "".join(filter(str.isalnum, text.casefold()))
    return key or text.strip()


def run_on(pieces: list[str]) -> str:
    """Pieces of text (lines, cues) as one line: a space between two, none beside a
    Chinese/Japanese character."""
    joined = ""
    for piece in pieces:
        if joined and piece and not (is_wide(joined[-1]) or is_wide(piece[0])):
            joined += " "
        joined += piece
    return joined


def close_up(text: str) -> str:
    """`text` with its runs of whitespace made one space, and none left between two Chinese or
    Japanese characters (a model's spaces between Chinese words; Chinese text has none)."""
    spaced = " ".join(text.split())
    if spaced.isascii() or " " not in spaced:  # no CJK, or no space: nothing to close up
        return spaced
    return _SPACE_BETWEEN_CJK.sub("", spaced)
