"""The webhook's body: thin, what the receiver needs to fetch the rest."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from cloudevents.core.v1.event import CloudEvent

from events.lifecycle import JobState
from events.models import OutputFormat, TranscriptionCanceled, TranscriptionCompleted, TranscriptionFailed
from functions.ingest.schema import JobRecord

# The events that end a job, each a webhook call (catalogue.JOB_ENDS).
Ended = TranscriptionCompleted | TranscriptionFailed | TranscriptionCanceled


def body(
    ended: Ended,
    record: JobRecord,
    event: CloudEvent,
    links: dict[OutputFormat, str],
    links_expiry_s: float,
) -> str:
    """`{"type": "transcription.<state>", "timestamp", "data": {id, state, model, language, error,
    links, links_expire_at, metadata}}` as compact JSON; the timestamp is the end event's time.
    `state` is completed (with links), failed (with `error`: code and message) or canceled (no
    links, no error; `model` is the one it was queued for or ran on, if any)."""
    model: str | None
    error = None
    if isinstance(ended, TranscriptionCompleted):
        state = JobState.COMPLETED
        model, language = ended.model, ended.language or record.detected_language or record.language
    elif isinstance(ended, TranscriptionFailed):
        state = JobState.FAILED
        model, language = record.model, record.detected_language or record.language
        error = {"code": ended.code, "message": ended.message}
    else:
        state = JobState.CANCELED
        model, language = record.model, record.detected_language or record.language
    occurred = event.get_time() or datetime.now(UTC)
    expires = datetime.now(UTC) + timedelta(seconds=links_expiry_s)
    data = {
        "id": ended.job_id,
        "state": state,
        "model": model,
        "language": language,
        "error": error,
        "links": links,
        "links_expire_at": expires.isoformat() if links else None,
        "metadata": record.metadata,
    }
    payload = {"type": f"transcription.{state}", "timestamp": occurred.isoformat(), "data": data}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
