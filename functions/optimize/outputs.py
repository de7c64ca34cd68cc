"""Result files, each written by a subtitle library rather than hand-formatted timestamps:
`srt` for SubRip, `webvtt-py` for WebVTT."""

from __future__ import annotations

import html
import json
from datetime import timedelta
from typing import Any

import srt
import webvtt
from webvtt.models import Timestamp

from events.models import OutputFormat
from functions.optimize.cues import Cue
from functions.optimize.script import run_on


def srt_text(text: str) -> str:
    """SubRip has no escaping, and readers find timing lines by their arrow: an arrow in the
    text ("-->") is written as "->" so no reader mistakes the line for a timing."""
    return text.replace("-->", "->")


def to_srt(cues: list[Cue]) -> str:
    return srt.compose(
        srt.Subtitle(index, timedelta(seconds=cue.start), timedelta(seconds=cue.end), srt_text(cue.text))
        for index, cue in enumerate(cues, start=1)
    )


def to_vtt(cues: list[Cue]) -> str:
    if not cues:
        return "WEBVTT\n"
    captions = [
        # WebVTT cue text is markup: "&", "<" and ">" ("AT&T", "-->") must be escaped.
        webvtt.Caption(
            str(Timestamp.from_seconds(cue.start)),
            str(Timestamp.from_seconds(cue.end)),
            html.escape(cue.text, quote=False),
        )
        for cue in cues
    ]
    return str(webvtt.WebVTT(captions=captions).content)


# A pause this long between cues starts a new paragraph in the plain text.
PARAGRAPH_PAUSE_S = 2.0


def to_txt(cues: list[Cue]) -> str:
    """Text to read or search, not to show: cues run on in paragraphs broken at long pauses."""
    paragraphs: list[list[str]] = []
    for index, cue in enumerate(cues):
        if index == 0 or cue.start - cues[index - 1].end >= PARAGRAPH_PAUSE_S:
            paragraphs.append([])
        paragraphs[-1].extend(cue.text.split("\n"))
    return "".join(f"{run_on(lines)}\n" for lines in paragraphs)


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
