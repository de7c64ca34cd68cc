"""Decoding loops removed: Whisper-family models, stuck, repeat a character ("谢谢谢谢谢…"), a
phrase, or a whole sentence many times over. Runs beyond a threshold are cut back and every cut
is counted, so no text is lost without a trace in the result's stats."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from functions.optimize.script import Boundary, comparison_key, is_cjk, visible_length
from functions.optimize.tokens import Token


@dataclass(frozen=True)
class LoopLimits:
    max_repeats: int
    max_ngram: int
    max_sentence_repeats: int


def remove_loops(tokens: list[Token], limits: LoopLimits, removed: Counter[str]) -> list[Token]:
    """`tokens` without their loops; `removed` counts each kind of loop and the characters cut."""
    return _ngram_loops(_sentence_loops(tokens, limits, removed), limits, removed)


def _sentence_loops(tokens: list[Token], limits: LoopLimits, removed: Counter[str]) -> list[Token]:
    # A loop often spans segments (the same sentence as five segments), so sentences are
    # compared across the whole run; a segment's end also ends a sentence.
    sentences: list[list[Token]] = []
    for token in tokens:
        if not sentences or _ends_sentence(sentences[-1][-1], token):
            sentences.append([])
        sentences[-1].append(token)
    kept: list[Token] = []
    index = 0
    while index < len(sentences):
        key = _key(sentences[index])
        run = 1
        while index + run < len(sentences) and _key(sentences[index + run]) == key:
            run += 1
        kept.extend(sentences[index])
        if run > limits.max_sentence_repeats:
            removed["sentence_loops"] += 1
            removed["characters"] += sum(_length(sentence) for sentence in sentences[index + 1 : index + run])
        else:
            for sentence in sentences[index + 1 : index + run]:
                kept.extend(sentence)
        index += run
    return kept


def _ngram_loops(tokens: list[Token], limits: LoopLimits, removed: Counter[str]) -> list[Token]:
    keys = [comparison_key(token.text) for token in tokens]
    kept: list[Token] = []
    index = 0
    while index < len(tokens):
        loop = _loop_at(keys, index, limits)
        if loop is None:
            kept.append(tokens[index])
            index += 1
            continue
        size, run = loop
        # A doubled character is a word in Chinese (谢谢, 看看): keep two of those.
        keep = 2 if size == 1 and len(keys[index]) == 1 and is_cjk(keys[index]) else 1
        kept.extend(tokens[index : index + keep * size])
        removed["ngram_loops"] += 1
        removed["characters"] += _length(tokens[index + keep * size : index + run * size])
        index += run * size
    return kept


def _loop_at(keys: list[str], index: int, limits: LoopLimits) -> tuple[int, int] | None:
    """(n-gram size, copies in a row) of the shortest loop starting at `index`, if any."""
    for size in range(1, limits.max_ngram + 1):
        if index + size * (limits.max_repeats + 1) > len(keys):
            return None  # too few tokens left for a loop this long or longer
        if keys[index + size] != keys[index]:
            continue
        gram = keys[index : index + size]
        run = 1
        while keys[index + run * size : index + (run + 1) * size] == gram:
            run += 1
        if run > limits.max_repeats:
            return size, run
    return None


def _ends_sentence(last: Token, following: Token) -> bool:
    return last.segment != following.segment or last.boundary is Boundary.SENTENCE


def _key(sentence: list[Token]) -> tuple[str, ...]:
    return tuple(comparison_key(token.text) for token in sentence)


def _length(tokens: list[Token]) -> int:
    return sum(visible_length(token.text) for token in tokens)
