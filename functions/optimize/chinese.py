"""Traditional → Simplified Chinese with OpenCC (the project's own Python binding, `opencc`):
whisper-base answers Mandarin in Traditional characters, readers of Mandarin transcripts
mostly expect Simplified. OpenCC converts phrase by phrase, not character by character, so
one-to-many characters (發/髮 → 发) come out right."""

from __future__ import annotations

from functools import lru_cache

import opencc

# Only Mandarin is converted: Cantonese (yue) and Japanese keep their characters, and a
# transcript explicitly in Traditional Chinese stays so.
MANDARIN = {"zh", "zh-cn", "zh-hans", "cmn"}


def is_mandarin(language: str | None) -> bool:
    return language is not None and language.lower() in MANDARIN


@lru_cache(maxsize=1)
def _converter() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    return str(_converter().convert(text))
