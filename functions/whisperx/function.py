"""The whisperx function: the transcription skeleton around the WhisperX adapter."""

from __future__ import annotations

from events.settings import Settings
from functions.transcriber import TranscriptionFunction
from functions.whisperx.model import WhisperX


def create(settings: Settings) -> TranscriptionFunction:
    return TranscriptionFunction(WhisperX(settings), settings)
