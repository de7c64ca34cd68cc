"""The shapes of ingest's jobs, once: the job record kept in the `jobs` KV bucket, the job as the
HTTP API shows it, a page of jobs, and the one HTTP error body. The API, the projector, the
webhook deliverer, the CLI (`infra/client.py`) and the tests all import them from here.

This module holds data shapes only (pydantic models and enums): it imports nothing of ingest, so
anything may import it, a client without the server's dependencies included.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field

from events.lifecycle import FINISHED_STATES, JobState
from events.models import (
    Decoding,
    Diarization,
    MediaInfo,
    ObjectRef,
    OutputFormat,
    RoutingReason,
    WebhookTarget,
    utcnow,
)


class JobError(BaseModel):
    """Why a job failed: the `failed` event's code and message, and the function that failed it."""

    code: str
    message: str
    function: str


class WebhookStatus(BaseModel):
    """How a job's webhook delivery stands (projected from `webhook.attempted` events)."""

    url: str = Field(description="The receiver, shown as scheme://host[:port] and /… for any path.")
    state: Literal["pending", "delivered", "retrying", "failed"] = "pending"
    attempts: int = 0
    status_code: int | None = None
    error: str | None = None
    next_attempt_in_s: float | None = None


def shown_url(url: str) -> str:
    """A webhook URL as records, logs, answers and dead letters may show it: `scheme://host[:port]`,
    and `/…` in place of any path. Receivers put tokens in the user:password, the query, the
    fragment and the path too (`/services/T0/B1/<secret>`), so none of them is shown; the host
    tells an operator which receiver it is. Never raises (a bad port is left out)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        port = None
    if port:
        netloc += f":{port}"
    path = "/…" if parts.path not in ("", "/") else parts.path
    return urlunsplit((parts.scheme, netloc, path, "", ""))


class JobFields(BaseModel):
    """What a job is, as its record keeps it and the API shows it. Times are UTC; `progress` is a
    fraction (0 to 1) of the running stage; `audio_seconds` is the media's audio in seconds."""

    id: str
    state: JobState
    media: ObjectRef
    filename: str | None = None
    requested_model: str | None = None
    model: str | None = None
    language: str | None = None
    detected_language: str | None = None
    language_probability: float | None = Field(None, description="Of the detected language.")
    routing_reason: RoutingReason | None = Field(
        None,
        description="Why the job went to its model: requested, language rule, detected language, default.",
    )
    formats: list[OutputFormat] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    audio_track: int | None = Field(None, description="The audio track asked for (0-based), if any.")
    decoding: Decoding = Field(default_factory=Decoding, description="Task, prompt, hotwords, temperature.")
    diarization: Diarization | None = Field(None, description="Speakers asked for (unset: none).")
    delete_after: int | None = Field(
        None, description="Seconds after the job ends when it is deleted, as requested (else RESULTS_TTL_S)."
    )
    expires_at: datetime | None = Field(
        None, description="When the job's upload, results and record are deleted (set when it ends)."
    )
    run_id: str | None = None
    stage: str | None = None
    progress: float = 0.0
    audio_seconds: float | None = None
    media_info: MediaInfo | None = None
    segment_count: int | None = None
    results: dict[OutputFormat, ObjectRef] = Field(default_factory=dict)
    stats: dict[str, object] = Field(default_factory=dict)
    error: JobError | None = None
    webhook: WebhookStatus | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class JobRecord(JobFields):
    """The record in the `jobs` KV bucket (the key is the job id), written only by the projector."""

    # Kept in the record for the webhook deliverer; never part of an API answer (headers are secrets).
    webhook_target: WebhookTarget | None = None
    # SHA-256 (hex) of what an `Idempotency-Key` request sent (its file and options): a repeat of
    # the key with another request is refused (`idempotency_key_reused`). Record only.
    request_digest: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def public(self) -> JobView:
        """The record without secrets (no links yet: the gateway adds them)."""
        return JobView.model_validate(self.model_dump(exclude={"webhook_target", "request_digest"}))


class JobView(JobFields):
    """A job as the API shows it: the record without secrets, with links to its results."""

    links: dict[OutputFormat, str] = Field(
        default_factory=dict, description="Presigned download links of the results (they expire)."
    )


class JobPage(BaseModel):
    """`GET /v1/jobs`: one page of jobs, newest first, and how many there are in all."""

    jobs: list[JobView]
    total: int
    offset: int
    limit: int
