"""Decoding loops removed: Whisper-family models, stuck, repeat a character ("谢谢谢谢谢…"), a
phrase, or a whole sentence many times over. Runs beyond a threshold are cut back and every cut
is counted, so no text is lost without a trace in the result's stats."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from typing import TypeVar

from functions.optimize.script import Boundary, comparison_key, is_cjk
from functions.optimize.tokens import Token


@dataclass(frozen=True)
class LoopLimits:
    max_repeats: int
    max_ngram: int
    max_sentence_repeats: int


def remove_loops(tokens: list[Token], limits: LoopLimits, removed: Counter[str]) -> list[Token]:
    """`tokens` without their loops; `removed` counts each kind of loop and the characters cut."""
    keys = _keys(tokens)
    tokens, keys = _sentence_loops(tokens, keys, limits, removed)
    return _ngram_loops(tokens, keys, limits, removed)


def _sentence_loops(
    tokens: list[Token], keys: list[str], limits: LoopLimits, removed: Counter[str]
) -> tuple[list[Token], list[str]]:
    """The tokens and their keys without sentences repeated more than the limit allows."""
    # A loop often spans segments (the same sentence as five segments), so sentences are
    # compared across the whole run; a segment's end also ends a sentence.
    starts = [
        index
        for index, (last, token) in enumerate(pairwise(tokens), start=1)
        if last.segment != token.segment or last.boundary is Boundary.SENTENCE
    ]
    bounds = list(pairwise([0, *starts, len(tokens)])) if tokens else []
    sentence_keys = [keys[first:after] for first, after in bounds]
    cuts: list[tuple[int, int]] = []  # token ranges removed
    index = 0
    while index < len(bounds):
        key = sentence_keys[index]
        run = 1
        while index + run < len(bounds) and sentence_keys[index + run] == key:
            run += 1
        if run > limits.max_sentence_repeats:
            removed["sentence_loops"] += 1
            if run > 1:  # the copies after the first
                first, after = bounds[index + 1][0], bounds[index + run - 1][1]
                removed["characters"] += _length(tokens[first:after])
                cuts.append((first, after))
        index += run
    return _without(tokens, cuts), _without(keys, cuts)


def _ngram_loops(
    tokens: list[Token], keys: list[str], limits: LoopLimits, removed: Counter[str]
) -> list[Token]:
    following = _next_same(keys)
    # Only where a token's key comes again within `max_ngram` tokens can a loop start.
    candidates = [index for index, after in enumerate(following) if after - index <= limits.max_ngram]
    cuts: list[tuple[int, int]] = []
    index = 0  # tokens before it are decided
    for start in candidates:
        if start < index:
            continue  # inside a loop already cut
        loop = _loop_at(keys, following, start, limits)
        if loop is None:
            continue
        size, run = loop
        # A doubled character is a word in Chinese (谢谢, 看看): keep two of those.
        keep = 2 if size == 1 and len(keys[start]) == 1 and is_cjk(keys[start]) else 1
        removed["ngram_loops"] += 1
        removed["characters"] += _length(tokens[start + keep * size : start + run * size])
        cuts.append((start + keep * size, start + run * size))
        index = start + run * size
    return _without(tokens, cuts)


_Item = TypeVar("_Item")


def _without(items: list[_Item], cuts: list[tuple[int, int]]) -> list[_Item]:
    """`items` without the ranges `cuts` (in order, not overlapping): `items` itself when none."""
    if not cuts:
        return items
    kept: list[_Item] = []
    index = 0
    for first, after in cuts:
        kept.extend(items[index:first])
        index = after
    kept.extend(items[index:])
    return kept


def _loop_at(keys: list[str], following: list[int], index: int, limits: LoopLimits) -> tuple[int, int] | None:
    """(n-gram size, copies in a row) of the shortest loop starting at `index`, if any.

    Only sizes at which the key at `index` comes again can start a loop: they are walked along
    `following` (the next position of the same key), shortest first, not tried one by one."""
    size = following[index] - index
    while index + size < len(keys) and size <= limits.max_ngram:
        if index + size * (limits.max_repeats + 1) > len(keys):
            return None  # too few tokens left for a loop this long or longer
        gram = keys[index : index + size]
        run = 1
        while keys[index + run * size : index + (run + 1) * size] == gram:
            run += 1
        if run > limits.max_repeats:
            return size, run
        size = following[index + size] - index
    return None


def _next_same(keys: list[str]) -> list[int]:
    """For each position, the next position holding the same key (len(keys) when none does)."""
    following = [len(keys)] * len(keys)
    seen: dict[str, int] = {}
    for position in range(len(keys) - 1, -1, -1):
        following[position] = seen.get(keys[position], len(keys))
        seen[keys[position]] = position
    return following


def _keys(tokens: list[Token]) -> list[str]:
    """The tokens' comparison keys, each distinct text's computed once (words repeat)."""
    texts = [token.text for token in tokens]
    memo = {text: comparison_key(text) for text in set(texts)}
    return list(map(memo.__getitem__, texts))


def _length(tokens: list[Token]) -> int:
    return sum(token.visible for token in tokens)
