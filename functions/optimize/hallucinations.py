"""Known silence hallucinations: phrases Whisper-family models write over silence or music
("Thanks for watching", Amara.org credits, "谢谢观看"), learnt from subtitled video. Dropped only
when one stands alone as a segment's whole text: inside real speech they may well be said."""

from __future__ import annotations

from collections.abc import Iterable

from functions.optimize.script import comparison_key


class Hallucinations:
    def __init__(self, phrases: Iterable[str]) -> None:
        self._keys = {comparison_key(phrase) for phrase in phrases if comparison_key(phrase)}

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and comparison_key(text) in self._keys
