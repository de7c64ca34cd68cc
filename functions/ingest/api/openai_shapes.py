"""OpenAI's shapes, as the OpenAI-compatible routes (`api/openai.py`) and the request guard
(`api/limits.py`) answer them: the error body, the transcription answers, the model list, and the
language names OpenAI puts in `verbose_json`.

The shapes follow OpenAI's API reference (Audio: createTranscription; Models: list) and the types
of the `openai` Python SDK (`openai.types.audio.TranscriptionVerbose`, `TranscriptionSegment`,
`TranscriptionWord`, `TranscriptionDiarized`, `TranscriptionDiarizedSegment`; `openai.types.Model`;
the SDK reads an error's `error.{message, type, param, code}`). This module imports nothing of the
API, so the guard, which answers before any route, may use it.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, Field

# What OpenAI names a request's error types: every refusal of a request is an
# `invalid_request_error` (401, 404 and 413 included); what fails on the server side a `server_error`.
ErrorType = Literal["invalid_request_error", "server_error"]

# Where a KlipNote error code points in an OpenAI request (`error.param`): by the code's first
# word, as KlipNote's codes name what they refuse (`media_type_unsupported`, `language_invalid`).
_PARAMS = {
    "media": "file",
    "model": "model",
    "task": "model",
    "language": "language",
    "prompt": "prompt",
    "temperature": "temperature",
    "response": "response_format",
    "timestamp": "timestamp_granularities[]",
    "stream": "stream",
}


class OpenAIError(BaseModel):
    message: str = Field(description="What went wrong, for a person.")
    type: ErrorType = Field(description="invalid_request_error (the request), server_error (ours).")
    param: str | None = Field(None, description="The request's field the error is about, if one.")
    code: str | None = Field(None, description="KlipNote's error code (docs/bad-input.md).")


class OpenAIErrorResponse(BaseModel):
    """OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`."""

    error: OpenAIError


def error_type(status: int) -> ErrorType:
    """OpenAI's error type for an HTTP status: the server's own failures (5xx) are `server_error`,
    every other refusal `invalid_request_error`."""
    return "server_error" if status >= 500 else "invalid_request_error"


def param_of(code: str) -> str | None:
    """The request field a KlipNote error code is about (`language_invalid` -> `language`), or None."""
    return _PARAMS.get(code.split("_", 1)[0])


def openai_error_body(
    status: int, code: str, message: str, param: str | None = None
) -> dict[str, dict[str, str | None]]:
    """The JSON of OpenAI's error body for a KlipNote refusal (`code`, `message`) answered with
    `status`; `param` defaults to the field the code names (`param_of`)."""
    error = OpenAIError(message=message, type=error_type(status), param=param or param_of(code), code=code)
    return OpenAIErrorResponse(error=error).model_dump()


# -- transcriptions ------------------------------------------------------------------------

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]
Granularity = Literal["segment", "word"]


class Transcription(BaseModel):
    """`response_format=json`: the text alone."""

    text: str


class TranscriptionWord(BaseModel):
    word: str
    start: float = Field(description="Seconds from the start of the media.")
    end: float = Field(description="Seconds from the start of the media.")


class TranscriptionSegment(BaseModel):
    """One segment of `verbose_json`: a cue of the job's result (as optimize cut it). KlipNote
    keeps neither Whisper's token ids nor its per-segment statistics past optimize, which has
    already dropped the segments the decoder doubted: `tokens` is empty, `seek` 0 and
    `avg_logprob`, `compression_ratio`, `no_speech_prob` are 0.0, the values that pass OpenAI's
    documented checks (avg_logprob < -1, compression_ratio > 2.4, no_speech_prob > 1.0 flag a
    segment)."""

    id: int
    seek: int = 0
    start: float = Field(description="Seconds from the start of the media.")
    end: float = Field(description="Seconds from the start of the media.")
    text: str
    tokens: list[int] = Field(default_factory=list)
    temperature: float = Field(0.0, description="The request's temperature (0: the model's schedule).")
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


class Usage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float = Field(description="The media's audio, seconds.")


class TranscriptionVerbose(BaseModel):
    """`response_format=verbose_json`. `language` is the language's English name in lower case,
    as OpenAI (Whisper) gives it ("english"; a translation's is its output's, "english");
    `words` only when `word` is among `timestamp_granularities[]`, `segments` unless only `word`
    is."""

    task: Literal["transcribe", "translate"]
    language: str
    duration: float = Field(description="The media's audio, seconds.")
    text: str
    segments: list[TranscriptionSegment] | None = None
    words: list[TranscriptionWord] | None = None
    usage: Usage


def verbose(
    document: dict[str, Any],
    text: str,
    task: Literal["transcribe", "translate"],
    temperature: float | None,
    granularities: set[Granularity],
) -> TranscriptionVerbose:
    """`verbose_json` from a job's stored JSON result (`functions/optimize/outputs.py` `to_json`:
    its header's `language` and `audio_seconds`, and its `cues`, each `{start, end, text,
    words?}`) and its plain text. A word the aligner could not time (no `start` or `end`) takes
    the end of the word before it, or its cue's start: OpenAI's words always carry both."""
    cues: list[dict[str, Any]] = document.get("cues") or []
    duration = float(document.get("audio_seconds") or 0.0)
    segments = [
        TranscriptionSegment(
            id=index,
            start=cue["start"],
            end=cue["end"],
            text=one_line(cue["text"]),
            temperature=temperature or 0.0,
        )
        for index, cue in enumerate(cues)
    ]
    words: list[TranscriptionWord] = []
    for cue in cues:
        before = float(cue["start"])
        for word in cue.get("words") or []:
            start = word.get("start")
            start = before if start is None else float(start)
            end = word.get("end")
            end = start if end is None else float(end)
            words.append(TranscriptionWord(word=str(word["word"]).strip(), start=start, end=end))
            before = end
    return TranscriptionVerbose(
        task=task,
        # A translation's language is its output's, always English (OpenAI's TranslationVerbose).
        language=language_name("en" if task == "translate" else document.get("language")),
        duration=duration,
        text=text,
        segments=segments if "segment" in granularities or not granularities else None,
        words=words if "word" in granularities else None,
        usage=Usage(seconds=duration),
    )


class TranscriptionDiarizedSegment(BaseModel):
    """One segment of `diarized_json`: a cue of the job's result, with its speaker."""

    type: Literal["transcript.text.segment"] = "transcript.text.segment"
    id: str
    start: float = Field(description="Seconds from the start of the media.")
    end: float = Field(description="Seconds from the start of the media.")
    text: str
    speaker: str = Field(description="A, B, ... in the order the speakers first speak (OpenAI's labels).")


class TranscriptionDiarized(BaseModel):
    """`response_format=diarized_json` (OpenAI's answer of `gpt-4o-transcribe-diarize`): the text
    and its segments, each with its speaker."""

    task: Literal["transcribe"] = "transcribe"
    duration: float = Field(description="The media's audio, seconds.")
    text: str
    segments: list[TranscriptionDiarizedSegment]
    usage: Usage


# The label a diarized job's txt result starts each paragraph with (functions/optimize/rules.py
# `speaker_label`: `[SPEAKER_00]: `).
_LABEL = re.compile(r"^\[SPEAKER_\d+\]: ", re.MULTILINE)


def diarized(document: dict[str, Any], text: str) -> TranscriptionDiarized:
    """`diarized_json` from a diarized job's stored JSON result (its `cues`, each with `speaker`
    `SPEAKER_00`, ...; `audio_seconds`) and its txt result (a paragraph per speaker's turn, each
    after its label; OpenAI's `text` is the words alone, so the labels are taken off). KlipNote's
    labels become OpenAI's letters in the same order (`SPEAKER_00` -> `A`, `SPEAKER_25` -> `Z`,
    then `AA`, ...); a cue without a speaker (none was heard in it) is `unknown`."""
    text = _LABEL.sub("", text)
    duration = float(document.get("audio_seconds") or 0.0)
    segments = [
        TranscriptionDiarizedSegment(
            id=f"seg_{index}",
            start=cue["start"],
            end=cue["end"],
            text=one_line(cue["text"]),
            speaker=_letters(cue.get("speaker")),
        )
        for index, cue in enumerate(document.get("cues") or [])
    ]
    return TranscriptionDiarized(
        duration=duration, text=text, segments=segments, usage=Usage(seconds=duration)
    )


def _letters(label: str | None) -> str:
    """`SPEAKER_<n>` as OpenAI's speaker letters: A..Z, then AA, AB, ... (spreadsheet columns)."""
    if not label or not label.removeprefix("SPEAKER_").isdigit():
        return label or "unknown"
    number, letters = int(label.removeprefix("SPEAKER_")) + 1, ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def one_line(text: str) -> str:
    """A cue's lines (one stretch of speech, broken for reading) as OpenAI's one-line segment
    text: a space between two lines, none beside a wide (Chinese, Japanese) character, as the
    txt result joins them (Unicode East Asian Width W or F)."""
    joined = ""
    for line in text.split("\n"):
        wide = bool(joined and line) and (_wide(joined[-1]) or _wide(line[0]))
        joined += line if not joined or not line or wide else f" {line}"
    return joined


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


# -- models --------------------------------------------------------------------------------


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time, seconds: when this ingest started.")
    owned_by: str = "klipnote"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


# -- language names ------------------------------------------------------------------------


def language_name(code: str | None) -> str:
    """The English name, lower case, of an ISO 639-1 code (its primary subtag: `zh-CN` is
    "chinese") as Whisper and OpenAI's `verbose_json` name it; a code Whisper does not know is
    given as it is, and no language as "" (nothing was heard)."""
    if not code:
        return ""
    primary = code.split("-", 1)[0].lower()
    return WHISPER_LANGUAGES.get(primary, code)


# Whisper's language table (openai/whisper, whisper/tokenizer.py `LANGUAGES`, MIT; the same table
# whisperx.utils.LANGUAGES carries): the names OpenAI answers with. Ingest runs no model code, so
# it keeps the table itself; tests/ingest/test_openai_api.py checks it against whisperx's copy.
WHISPER_LANGUAGES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak",
    "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian", "mk": "macedonian",
    "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian", "ne": "nepali",
    "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer",
    "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan",
    "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi", "gu": "gujarati",
    "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek", "fo": "faroese",
    "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese",
    "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog",
    "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala",
    "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}  # fmt: skip
