"""What a dropped object asks for: options in its user metadata (`X-Amz-Meta-*`), made into a
`transcription.requested`. A value that cannot be an option is logged and left out; the router
admits the rest as it admits any request."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pydantic import ValidationError

from events.models import (
    DEFAULT_FORMATS,
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
    )


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
