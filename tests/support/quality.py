"""Word error rate as the tests and benchmarks score it."""

from __future__ import annotations

import jiwer

NORMALISE = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


def wer(reference_text: str, hypothesis: str) -> float:
    """WER of `hypothesis`; a cue's line breaks separate words as spaces do (jiwer splits on spaces)."""
    reference_text, hypothesis = " ".join(reference_text.split()), " ".join(hypothesis.split())
    return float(
        jiwer.wer(reference_text, hypothesis, reference_transform=NORMALISE, hypothesis_transform=NORMALISE)
    )
