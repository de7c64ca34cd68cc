"""The form fields of `POST /v1/jobs` that need more than FastAPI's checks: output formats,
echoed metadata, the webhook's URL and static header, the decoding options (task, prompt,
hotwords, temperature), the diarization options (diarize, min_speakers, max_speakers). Each
refusal is a 422 with its code."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import ValidationError

from events.models import (
    DEFAULT_FORMATS,
    MAX_METADATA_BYTES,
    Decoding,
    Diarization,
    OutputFormat,
    WebhookTarget,
    split_formats,
)
from events.runtime.problems import problem

_MAX_METADATA_BYTES = MAX_METADATA_BYTES
# A header a webhook call may carry: an RFC 9110 token for its name, no control characters in its
# value (a CR/LF would smuggle a header of its own).
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")
_HEADER_VALUE = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]{1,4096}$")


@dataclass(frozen=True)
class Options:
    formats: list[OutputFormat]
    metadata: dict[str, str]
    webhook: WebhookTarget | None


def parse_options(
    formats: str | None, metadata: str | None, webhook_url: str | None, webhook_header: str | None
) -> Options:
    """The options of a job from its form fields; raises the 422 `formats_invalid`,
    `metadata_invalid` (not a JSON object of strings, or over 4096 bytes) or `webhook_invalid`."""
    return Options(_formats(formats), _metadata(metadata), _webhook(webhook_url, webhook_header))


def _formats(formats: str | None) -> list[OutputFormat]:
    if not formats:
        return list(DEFAULT_FORMATS)
    chosen, unknown = split_formats(formats)
    if unknown or not chosen:
        raise problem(422, "formats_invalid", f"formats are among {', '.join(DEFAULT_FORMATS)}")
    return chosen


def _metadata(metadata: str | None) -> dict[str, str]:
    if not metadata:
        return {}
    if len(metadata.encode()) > _MAX_METADATA_BYTES:
        raise problem(422, "metadata_invalid", f"metadata is limited to {_MAX_METADATA_BYTES} bytes")
    try:
        echoed = json.loads(metadata)
    except json.JSONDecodeError as error:
        raise problem(422, "metadata_invalid", f"metadata is not JSON: {error}") from error
    except RecursionError as error:  # [[[[...]]]] nested deeper than the parser goes
        raise problem(422, "metadata_invalid", "metadata is nested too deeply") from error
    if not isinstance(echoed, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in echoed.items()
    ):
        raise problem(422, "metadata_invalid", "metadata is a JSON object of strings")
    return echoed


def _webhook(webhook_url: str | None, webhook_header: str | None) -> WebhookTarget | None:
    if not webhook_url:
        return None
    headers = {}
    if webhook_header:
        name, sep, value = webhook_header.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            raise problem(
                422, "webhook_invalid", "webhook_header is `Name: value`, with no control characters"
            )
        headers[name] = value
    try:
        return WebhookTarget(url=webhook_url, headers=headers)
    except ValidationError as error:
        raise problem(422, "webhook_invalid", "webhook_url must be an http(s) URL") from error


# Each decoding field's refusal code: a value the model could not use is refused before the job
# exists, never dropped silently.
_DECODING_CODES = {
    "task": "task_invalid",
    "prompt": "prompt_invalid",
    "hotwords": "hotwords_invalid",
    "temperature": "temperature_invalid",
}


def parse_decoding(
    task: str | None, prompt: str | None, hotwords: str | None, temperature: float | None
) -> Decoding:
    """The decoding options of a job (events.models.Decoding) from its form fields (an empty
    field is unset); raises the 422 `task_invalid` (not transcribe or translate),
    `prompt_invalid` (over 2000 characters), `hotwords_invalid` (over 1000 characters) or
    `temperature_invalid` (outside 0 to 1), naming the field and its rule."""
    fields = {"task": task or None, "prompt": prompt or None, "hotwords": hotwords or None}
    given: dict[str, object] = {name: value for name, value in fields.items() if value is not None}
    if temperature is not None:
        given["temperature"] = temperature
    try:
        return Decoding.model_validate(given)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0])
        raise problem(422, _DECODING_CODES[name], f"{name}: {first['msg']}") from error


def parse_diarization(
    diarize: bool | None, min_speakers: int | None, max_speakers: int | None
) -> Diarization | None:
    """The job's diarization (events.models.Diarization) from its form fields: None unless
    `diarize` is true. Raises the 422 `speakers_invalid` when a count is given without
    `diarize=true` (it would be ignored), is outside 1 to MAX_SPEAKERS, or min exceeds max."""
    if not diarize:
        if min_speakers is not None or max_speakers is not None:
            raise problem(422, "speakers_invalid", "min_speakers and max_speakers need diarize=true")
        return None
    try:
        return Diarization(min_speakers=min_speakers, max_speakers=max_speakers)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "speakers"
        raise problem(422, "speakers_invalid", f"{where}: {first['msg']}") from error
