"""Result files, each written by a subtitle library rather than hand-formatted timestamps:
`srt` for SubRip, `webvtt-py` for WebVTT.

A diarized cue names its speaker in each format, as WhisperX's writers and the WebVTT spec do:
SubRip and plain text show the label before the text (`[SPEAKER_00]: `, `rules.speaker_label`),
WebVTT opens the cue with a voice span (`<v SPEAKER_00>`, W3C WebVTT §4.2.2 "cue voice span",
the annotation being the label), JSON has `speaker` on each cue and word and the `speakers` in
the order they first speak. A cue without a speaker is written exactly as before diarization."""

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
from functions.optimize.rules import speaker_label
from functions.optimize.script import run_on


def srt_text(text: str) -> str:
    """SubRip has no escaping, and readers find timing lines by their arrow: an arrow in the
    text ("-->") is written as "->" so no reader mistakes the line for a timing."""
    return text.replace("-->", "->")


def to_srt(cues: list[Cue]) -> str:
    return srt.compose(
        srt.Subtitle(
            index,
            timedelta(seconds=cue.start),
            timedelta(seconds=cue.end),
            srt_text(speaker_label(cue.speaker) + cue.text),
        )
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
            voice_span(cue.speaker) + html.escape(cue.text, quote=False),
        )
        for cue in cues
    ]
    return str(webvtt.WebVTT(captions=captions).content)


def voice_span(speaker: str | None) -> str:
    """The WebVTT voice span's start tag for `speaker` (nothing without one). It spans the whole
    cue, so its end tag may be left out (W3C WebVTT §4.2.2); the annotation is escaped like cue
    text, where a ">" or "&" would end or garble the tag."""
    return "" if speaker is None else f"<v {html.escape(speaker, quote=False)}>"


# A pause this long between cues starts a new paragraph in the plain text.
PARAGRAPH_PAUSE_S = 2.0


def to_txt(cues: list[Cue]) -> str:
    """Text to read or search, not to show: cues run on in paragraphs broken at long pauses and
    at every change of speaker, a diarized paragraph starting with its speaker's label."""
    paragraphs: list[tuple[str | None, list[str]]] = []
    for index, cue in enumerate(cues):
        if (
            index == 0
            or cue.start - cues[index - 1].end >= PARAGRAPH_PAUSE_S
            or cue.speaker != cues[index - 1].speaker
        ):
            paragraphs.append((cue.speaker, []))
        paragraphs[-1][1].extend(cue.text.split("\n"))
    return "".join(f"{speaker_label(speaker)}{run_on(lines)}\n" for speaker, lines in paragraphs)


def speakers_of(cues: list[Cue]) -> list[str]:
    """The speakers the cues name, in the order they first speak."""
    return list(dict.fromkeys(cue.speaker for cue in cues if cue.speaker is not None))


def to_json(cues: list[Cue], header: dict[str, Any]) -> str:
    """The header, then (for a diarized job) `speakers` in the order they first speak, then the
    cues, each with its `speaker` (and its words' when they carry one)."""
    speakers = speakers_of(cues)
    document = {
        **header,
        **({"speakers": speakers} if speakers else {}),
        "cues": [cue.model_dump(exclude_none=True) for cue in cues],
    }
    return json.dumps(document, ensure_ascii=False, indent=2)


def render(fmt: OutputFormat, cues: list[Cue], header: dict[str, Any]) -> bytes:
    if fmt == "json":
        return to_json(cues, header).encode()
    if fmt == "srt":
        return to_srt(cues).encode()
    if fmt == "vtt":
        return to_vtt(cues).encode()
    return to_txt(cues).encode()
