"""The one catalogue of KlipNote's event types, subjects, streams and consumers.

Nothing else in the code spells a subject string: it asks this module. Subjects carry the job
id as their last token so one job's events can be filtered (`transcription.*.<job_id>`).

| type (CloudEvents `type`)                      | subject                          | stream     |
|------------------------------------------------|----------------------------------|------------|
| io.klipnote.transcription.requested.v1         | transcription.requested.<job>    | JOBS       |
| io.klipnote.transcription.dispatched.v1        | transcribe.<model>               | TRANSCRIBE |
| io.klipnote.transcription.queued.v1           | transcription.queued.<job>       | JOBS       |
| io.klipnote.transcription.language_detected.v1 | transcription.language.<job>    | JOBS       |
| io.klipnote.transcription.segment.v1           | segments.<job>                   | SEGMENTS   |
| io.klipnote.transcription.progress.v1          | transcription.progress.<job>     | JOBS       |
| io.klipnote.transcription.transcribed.v1       | transcription.transcribed.<job>  | JOBS       |
| io.klipnote.transcription.completed.v1         | transcription.completed.<job>    | JOBS       |
| io.klipnote.transcription.failed.v1            | transcription.failed.<job>       | JOBS       |
| io.klipnote.transcription.canceled.v1          | transcription.canceled.<job>     | JOBS       |
| io.klipnote.webhook.attempted.v1               | transcription.webhook.<job>      | JOBS       |
| io.klipnote.deadletter.v1                      | dlq.<consumer>                   | DLQ        |
| (MinIO S3 event records, not CloudEvents)      | storage.uploads                  | STORAGE    |
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field

from nats.js.api import RetentionPolicy, StorageType

from events import models
from events.models import EventData

EVENT_SOURCE_PREFIX = "/klipnote/"


@dataclass(frozen=True)
class EventKind:
    type: str
    data: builtins.type[EventData]
    subject_prefix: str
    # The data field whose value is the subject's last token.
    token_field: str = "job_id"

    def subject(self, last_token: str) -> str:
        if not last_token or any(ch in last_token for ch in " .*>\t\r\n"):
            raise ValueError(f"not a valid subject token: {last_token!r}")
        return f"{self.subject_prefix}.{last_token}"


REQUESTED = EventKind(
    "io.klipnote.transcription.requested.v1",
    models.TranscriptionRequested,
    "transcription.requested",
)
DISPATCHED = EventKind(
    "io.klipnote.transcription.dispatched.v1", models.TranscriptionDispatched, "transcribe", "model"
)
QUEUED = EventKind("io.klipnote.transcription.queued.v1", models.TranscriptionQueued, "transcription.queued")
LANGUAGE_DETECTED = EventKind(
    "io.klipnote.transcription.language_detected.v1", models.LanguageDetected, "transcription.language"
)
SEGMENT = EventKind("io.klipnote.transcription.segment.v1", models.SegmentTranscribed, "segments")
PROGRESS = EventKind(
    "io.klipnote.transcription.progress.v1", models.TranscriptionProgress, "transcription.progress"
)
TRANSCRIBED = EventKind(
    "io.klipnote.transcription.transcribed.v1",
    models.TranscriptionTranscribed,
    "transcription.transcribed",
)
COMPLETED = EventKind(
    "io.klipnote.transcription.completed.v1",
    models.TranscriptionCompleted,
    "transcription.completed",
)
FAILED = EventKind("io.klipnote.transcription.failed.v1", models.TranscriptionFailed, "transcription.failed")
CANCELED = EventKind(
    "io.klipnote.transcription.canceled.v1", models.TranscriptionCanceled, "transcription.canceled"
)
WEBHOOK = EventKind("io.klipnote.webhook.attempted.v1", models.WebhookAttempted, "transcription.webhook")
DEAD_LETTER = EventKind("io.klipnote.deadletter.v1", models.DeadLetter, "dlq", "consumer")

KINDS = [
    REQUESTED, DISPATCHED, QUEUED, LANGUAGE_DETECTED, SEGMENT, PROGRESS, TRANSCRIBED, COMPLETED, FAILED,
    CANCELED, WEBHOOK, DEAD_LETTER,
]  # fmt: skip
KINDS_BY_TYPE: dict[str, EventKind] = {kind.type: kind for kind in KINDS}

# The events that move a job forward: a consumer giving up on one (dead letter) fails the job, so
# no job is left waiting for a step that will never come.
JOB_STEPS = (REQUESTED, DISPATCHED, LANGUAGE_DETECTED, TRANSCRIBED)
# The events that end a job: after one, only its webhook's attempts follow.
JOB_ENDS = (COMPLETED, FAILED, CANCELED)

# MinIO's NATS target publishes raw S3 event records (not CloudEvents) on this subject.
STORAGE_UPLOADS_SUBJECT = "storage.uploads"


@dataclass(frozen=True)
class Stream:
    name: str
    subjects: list[str]
    retention: RetentionPolicy = RetentionPolicy.LIMITS
    max_age_s: float | None = None
    storage: StorageType = StorageType.FILE


STORAGE = Stream("STORAGE", ["storage.>"], max_age_s=7 * 24 * 3600)
TRANSCRIBE = Stream("TRANSCRIBE", ["transcribe.>"], retention=RetentionPolicy.WORK_QUEUE)
SEGMENTS = Stream("SEGMENTS", ["segments.>"], max_age_s=7 * 24 * 3600)
JOBS = Stream("JOBS", ["transcription.>"], max_age_s=30 * 24 * 3600)
DLQ = Stream("DLQ", ["dlq.>"])
STREAMS = [STORAGE, TRANSCRIBE, SEGMENTS, JOBS, DLQ]


@dataclass(frozen=True)
class Consumer:
    """A durable pull consumer: who reads what, and how many at a time.

    `batch`: messages one fetch takes, handled one after another, or, when `by_job`, side by side
    except that one job's messages (the subject's last token: `transcription.<kind>.<job>`) keep
    their stream order (the projector and the router: per-job order is all their handlers need,
    and a batch of many jobs costs about one message's wait; a message waiting behind its job's
    earlier one gets no heartbeat, so a run is meant to take well under ack_wait, and a handler
    that hangs holds its lane's next fetch). `concurrency`: fetches one
    replica runs side by side (so up to batch x concurrency messages in hand), a number or the
    name of the `Settings` field that holds it (`concurrency_of`). `retry_schedule`: the name of
    the `Settings` list of delays by which the handler retries on its own (RetryLater) beyond
    MAX_DELIVER; the server's delivery bound counts them (`events.runtime.settlement`)."""

    durable: str
    stream: Stream
    filter_subject: str
    # GPU functions take one message at a time per replica; CPU ones may batch.
    batch: int = 1
    extra_filters: list[str] = field(default_factory=list)
    # 1: one message at a time (GPU functions); I/O-bound consumers wait on many at once.
    concurrency: int | str = 1
    retry_schedule: str | None = None
    by_job: bool = False


def model_consumer(model: str) -> Consumer:
    """The queue of one model function: adding a model adds nothing here."""
    return Consumer(model, TRANSCRIBE, DISPATCHED.subject(model))


# Requests, and jobs a model function hands over by the language it detected.
INGEST_ROUTER = Consumer(
    "ingest-router",
    JOBS,
    f"{REQUESTED.subject_prefix}.>",
    extra_filters=[f"{LANGUAGE_DETECTED.subject_prefix}.>"],
    batch=32,
    concurrency="router_concurrency",
    by_job=True,
)
INGEST_PROJECTOR = Consumer("ingest-projector", JOBS, "transcription.>", batch=128, by_job=True)
OPTIMIZE = Consumer("optimize", JOBS, f"{TRANSCRIBED.subject_prefix}.>")
# A job's end (completed, failed or canceled) calls its webhook; retries ride on JetStream
# redelivery. Deliveries wait on receivers (up to WEBHOOK_TIMEOUT_S each): many at once, so one
# black-holed host delays only its own jobs.
INGEST_WEBHOOKS = Consumer(
    "ingest-webhooks",
    JOBS,
    f"{COMPLETED.subject_prefix}.>",
    extra_filters=[f"{FAILED.subject_prefix}.>", f"{CANCELED.subject_prefix}.>"],
    concurrency="webhook_concurrency",
    retry_schedule="webhook_schedule_s",
)
# MinIO's bucket notifications (S3 event records, not CloudEvents).
INGEST_UPLOADS = Consumer("ingest-uploads", STORAGE, STORAGE_UPLOADS_SUBJECT, batch=16)
# Every durable but the models' (one per model: `model_consumer`); provisioning creates them all.
CONSUMERS = (INGEST_ROUTER, INGEST_PROJECTOR, INGEST_WEBHOOKS, INGEST_UPLOADS, OPTIMIZE)

JOBS_KV_BUCKET = "jobs"


def job_events_subject(job_id: str) -> str:
    """Every lifecycle event of one job (for a live progress stream)."""
    return f"transcription.*.{job_id}"


def dead_letter_subject(consumer: str) -> str:
    return DEAD_LETTER.subject(consumer)
