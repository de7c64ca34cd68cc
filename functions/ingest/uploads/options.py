"""What a dropped object asks for: options in its user metadata (`X-Amz-Meta-*`), made into a
`transcription.requested`. A value that cannot be an option is logged and left out; the router
admits the rest as it admits any request.

The options: `Model`, `Language`, `Formats`, `Webhook`, `Audio-Track`, the decoding options
`Task`, `Prompt`, `Hotwords`, `Temperature`, `Delete-After` (seconds), and `Diarize` (`true`)
with `Min-Speakers` and `Max-Speakers`. S3 user metadata is
sent as HTTP headers, so US-ASCII: a prompt in another script is sent as an RFC 2047 encoded word
(`=?UTF-8?B?...?=`, what `email.header.Header(text, "utf-8").encode()` makes), and decoded here."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from email.header import decode_header, make_header
from typing import Annotated

from pydantic import TypeAdapter, ValidationError

from events.models import (
    DEFAULT_FORMATS,
    Decoding,
    Diarization,
    ObjectRef,
    OutputFormat,
    TranscriptionRequested,
    WebhookTarget,
    split_formats,
)
from functions.ingest.ids import normalise_etag
from functions.ingest.naming import display_filename

# The package's logger: every bucket-drop line of ingest's log is under one name.
log = logging.getLogger("functions.ingest.uploads")

_META_PREFIX = "x-amz-meta-"
# A number of seconds within TranscriptionRequested.delete_after's bounds (its own, read from it).
_DELETE_AFTER: TypeAdapter[int] = TypeAdapter(
    Annotated[(int, *TranscriptionRequested.model_fields["delete_after"].metadata)]
)


def user_options(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """`X-Amz-Meta-*` values by their lower-case suffix (`language`, `model`, ...)."""
    options: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        lowered = name.lower()
        if lowered.startswith(_META_PREFIX) and isinstance(value, str) and value.strip():
            options[lowered[len(_META_PREFIX) :]] = value.strip()
    return options


def request_for(
    job_id: str,
    bucket: str,
    key: str,
    etag: str,
    *,
    size: int | None,
    content_type: str | None,
    metadata: Mapping[str, str] | None,
) -> TranscriptionRequested:
    """The request of one stored object (size in bytes), with the options of its user metadata."""
    options = user_options(metadata)
    webhook = None
    if url := options.get("webhook"):
        # The router applies the webhook guard (SSRF, signing secret) and fails a refused
        # one's job with its code; a value that is no http(s) URL at all is only logged.
        try:
            webhook = WebhookTarget(url=url)
        except ValidationError as error:
            log.warning("%s: ignoring X-Amz-Meta-Webhook, not an http(s) URL: %s", key, error)
    content_type = content_type if content_type and content_type != "application/octet-stream" else None
    return TranscriptionRequested(
        job_id=job_id,
        media=ObjectRef(
            bucket=bucket, key=key, etag=normalise_etag(etag), size=size, content_type=content_type
        ),
        model=options.get("model"),
        language=options["language"].lower() if "language" in options else None,
        formats=_formats(options.get("formats"), key),
        filename=display_filename(key),
        webhook=webhook,
        audio_track=_audio_track(options.get("audio-track"), key),
        decoding=_decoding(options, key),
        diarization=_diarization(options, key),
        delete_after=_delete_after(options.get("delete-after"), key),
    )


# What `Diarize` may say (case aside) to turn diarization on or off.
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _diarization(options: Mapping[str, str], key: str) -> Diarization | None:
    """The diarization the object's metadata asks for: `Diarize: true`, with `Min-Speakers` and
    `Max-Speakers` as whole numbers. A value that cannot be one is logged and left out (a bad
    count leaves diarization on, estimating the count); counts without `Diarize` are logged and
    left out."""
    diarize = options.get("diarize", "").lower()
    if diarize not in _TRUE:
        if diarize and diarize not in _FALSE:
            log.warning("%s: ignoring X-Amz-Meta-Diarize %r: not true or false", key, diarize[:80])
        elif "min-speakers" in options or "max-speakers" in options:
            log.warning("%s: ignoring X-Amz-Meta-Min/Max-Speakers: they need X-Amz-Meta-Diarize: true", key)
        return None
    counts = {}
    for name in ("min-speakers", "max-speakers"):
        if (value := options.get(name)) is not None:
            counts[name.replace("-", "_")] = value
    try:
        return Diarization.model_validate(counts)
    except ValidationError as error:
        log.warning("%s: ignoring X-Amz-Meta-Min/Max-Speakers %s: %s", key, counts, error.errors()[0]["msg"])
        return Diarization()


def _decoding(options: Mapping[str, str], key: str) -> Decoding:
    """The decoding options among the object's metadata; each value that cannot be one (a task
    other than transcribe or translate, a temperature outside 0 to 1, a prompt over 2000
    characters) is logged and left out, as every other option here."""
    decoding = Decoding()
    for name in ("task", "prompt", "hotwords", "temperature"):
        if (value := options.get(name)) is None:
            continue
        if name in ("prompt", "hotwords"):
            value = _decoded_words(value)
        try:
            decoding = Decoding.model_validate({**decoding.model_dump(exclude_unset=True), name: value})
        except ValidationError as error:
            reason = error.errors()[0]["msg"]
            log.warning("%s: ignoring X-Amz-Meta-%s %r: %s", key, name.title(), value[:80], reason)
    return decoding


def _decoded_words(value: str) -> str:
    """A metadata value with its RFC 2047 encoded words (`=?UTF-8?B?...?=`) decoded; plain ASCII
    as it is."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeDecodeError):
        return value  # not an encoded word after all: the text as sent


def _delete_after(value: str | None, key: str) -> int | None:
    if value is None:
        return None
    try:
        return _DELETE_AFTER.validate_python(value.strip())
    except ValidationError as error:
        reason = error.errors()[0]["msg"]
        log.warning("%s: ignoring X-Amz-Meta-Delete-After %r (seconds): %s", key, value[:80], reason)
        return None


def _formats(value: str | None, key: str) -> list[OutputFormat]:
    if value is None:
        return list(DEFAULT_FORMATS)
    chosen, unknown = split_formats(value)
    if unknown:
        log.warning("%s: ignoring unknown output format(s) %s in X-Amz-Meta-Formats", key, unknown)
    return chosen or list(DEFAULT_FORMATS)


def _audio_track(value: str | None, key: str) -> int | None:
    if value is None:
        return None
    if value.strip().isdigit():
        return int(value.strip())
    log.warning("%s: ignoring X-Amz-Meta-Audio-Track %r, not a track number (0, 1, ...)", key, value)
    return None
