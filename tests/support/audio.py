"""Clips decoded as the skeleton decodes media: 16 kHz mono float32."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from functions.transcriber.audio import decode as decode_media


def decode_audio(path: Path) -> np.ndarray:
    """A whole clip as the skeleton hands a window of it to the adapter."""
    with tempfile.TemporaryDirectory() as scratch:
        audio = decode_media(path, Path(scratch) / "audio.s16le")
        return np.array(audio.window(0, audio.samples))
