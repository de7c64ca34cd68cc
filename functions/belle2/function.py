"""The belle2 function: the transcription skeleton around the BELLE-2 adapter."""

from __future__ import annotations

from events.settings import Settings
from functions.belle2.model import Belle2
from functions.transcriber import TranscriptionFunction


def create(settings: Settings) -> TranscriptionFunction:
    return TranscriptionFunction(Belle2(settings), settings)
