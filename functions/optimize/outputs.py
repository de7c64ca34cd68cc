"""Result files, each written by a subtitle library rather than hand-formatted timestamps:
`srt` for SubRip, `webvtt-py` for WebVTT (converted from the SRT)."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import srt
import webvtt

from events.models import OutputFormat
from functions.optimize.cues import Cue

CONTENT_TYPES: dict[OutputFormat, str] = {
    "json": "application/json",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "txt": "text/plain; charset=utf-8",
}


def to_srt(cues: list[Cue]) -> str:
    return srt.compose(
        srt.Subtitle(index, timedelta(seconds=cue.start), timedelta(seconds=cue.end), cue.text)
        for index, cue in enumerate(cues, start=1)
    )


def to_vtt(cues: list[Cue]) -> str:
    if not cues:
        return "WEBVTT\n"
    return str(webvtt.WebVTT.from_buffer(io.StringIO(to_srt(cues)), format="srt").content)


def to_txt(cues: list[Cue]) -> str:
    return "".join(f"{cue.text}\n" for cue in cues)


def to_json(cues: list[Cue], header: dict[str, Any]) -> str:
    document = {**header, "cues": [cue.model_dump(exclude_none=True) for cue in cues]}
    return json.dumps(document, ensure_ascii=False, indent=2)


def render(fmt: OutputFormat, cues: list[Cue], header: dict[str, Any]) -> bytes:
    if fmt == "json":
        return to_json(cues, header).encode()
    if fmt == "srt":
        return to_srt(cues).encode()
    if fmt == "vtt":
        return to_vtt(cues).encode()
    return to_txt(cues).encode()
