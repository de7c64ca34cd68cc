"""The webhook's body: thin, what the receiver needs to fetch the rest."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from cloudevents.core.v1.event import CloudEvent

from events.lifecycle import JobState
from events.models import OutputFormat, TranscriptionCompleted, TranscriptionFailed
from functions.ingest.schema import JobRecord


def body(
    ended: TranscriptionCompleted | TranscriptionFailed,
    record: JobRecord,
    event: CloudEvent,
    links: dict[OutputFormat, str],
    links_expiry_s: float,
) -> str:
    """`{"type": "transcription.<state>", "timestamp", "data": {id, state, model, language, error,
    links, links_expire_at, metadata}}` as compact JSON; the timestamp is the end event's time."""
    state = JobState.COMPLETED if isinstance(ended, TranscriptionCompleted) else JobState.FAILED
    model: str | None
    error = None
    if isinstance(ended, TranscriptionCompleted):
        model, language = ended.model, ended.language or record.detected_language or record.language
    else:
        model, language = record.model, record.detected_language or record.language
        error = {"code": ended.code, "message": ended.message}
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
