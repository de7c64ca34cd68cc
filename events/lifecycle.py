"""A job's lifecycle: its states, its events' deterministic ids, and the constructors every
function uses. The states live here, not in ingest's record, because the CLI (in every image)
and the metrics name them too.

At-least-once delivery makes every step happen more than once; a deterministic CloudEvent id
(`<job>:<step>`) turns a repeat into a duplicate that JetStream's de-duplication window and the
job projector drop (docs/reliability.md). Each step's id is built here and nowhere else.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from cloudevents.core.v1.event import CloudEvent

from events import binding, catalogue
from events.errors import CodedError
from events.models import TranscriptionFailed


class JobState(StrEnum):
    """Where a job stands. It only moves forward: requested → queued → transcribing →
    transcribed → completed, or to failed or canceled from any of them (a language hand-over
    puts a transcribing job back on another model's queue, the one step back there is)."""

    REQUESTED = "requested"
    QUEUED = "queued"
    TRANSCRIBING = "transcribing"
    TRANSCRIBED = "transcribed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


# The states a job ends in: nothing changes it afterwards but its webhook's delivery.
FINISHED_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELED})


def end_state(kind: catalogue.EventKind) -> JobState | None:
    """The state a job ends in with an event of `kind` (`catalogue.JOB_ENDS`), None for others."""
    return {
        catalogue.COMPLETED: JobState.COMPLETED,
        catalogue.FAILED: JobState.FAILED,
        catalogue.CANCELED: JobState.CANCELED,
    }.get(kind)


def requested_id(job_id: str) -> str:
    return f"{job_id}:requested"


def dispatched_id(job_id: str, *, handover: bool = False) -> str:
    """The first dispatch, or the one after a language hand-over (at most one per job)."""
    return f"{job_id}:dispatched:handover" if handover else f"{job_id}:dispatched"


def queued_id(job_id: str, *, handover: bool = False) -> str:
    return f"{job_id}:queued:handover" if handover else f"{job_id}:queued"


def language_id(job_id: str) -> str:
    return f"{job_id}:language"


def segment_id(run_id: str, sequence: int) -> str:
    """A segment of one run (one model attempt); `sequence` counts from 0."""
    return f"{run_id}:{sequence}"


def transcribed_id(run_id: str) -> str:
    return f"{run_id}:transcribed"


def completed_id(job_id: str) -> str:
    return f"{job_id}:completed"


def canceled_id(job_id: str) -> str:
    return f"{job_id}:canceled"


class LastEvent(Protocol):
    """Reads the last event on a subject of a stream (a function's `Runtime`)."""

    async def last_event(self, stream: catalogue.Stream, subject: str) -> CloudEvent | None: ...


async def was_canceled(bus: LastEvent, job_id: str) -> bool:
    """Whether job `job_id` was canceled: its `transcription.canceled.<job>` is in the JOBS stream
    (ingest publishes it on `POST /v1/jobs/{id}/cancel`). The stream, not ingest's record, is what
    every function can read; a model function asks before it starts a job and while it runs,
    optimize before it writes results. An unreadable message there is no cancel (ingest's
    projector dead-letters it and the record goes on). Raises what the read raises (nats-py's
    errors when NATS does not answer): the caller decides whether to go on or retry."""
    try:
        return await bus.last_event(catalogue.JOBS, catalogue.CANCELED.subject(job_id)) is not None
    except binding.MalformedEvent:
        return False


def webhook_attempt_id(job_id: str, attempt: int) -> str:
    """The `webhook.attempted` event of one delivery attempt (1 for the first); not the
    `webhook-id` header, which is the same on every attempt (`ingest.webhooks.signing`)."""
    return f"{job_id}:webhook:{attempt}"


def failed_id(job_id: str, step: str | None = None) -> str:
    """A job's failure; `step` names a failure that may precede a later, different one (routing)."""
    return f"{job_id}:failed:{step}" if step else f"{job_id}:failed"


def dead_letter_id(durable: str, sequence: int) -> str:
    """A dead letter, by the consumer and the stream sequence of the message it replaces."""
    return f"dlq:{durable}:{sequence}"


def failed(
    job_id: str,
    error: CodedError,
    *,
    function: str,
    run_id: str | None = None,
    step: str | None = None,
    traceparent: str | None = None,
) -> CloudEvent:
    """The `failed` event of `job_id`: `error`'s code and message, from `function`."""
    data = TranscriptionFailed(
        job_id=job_id, code=error.code, message=error.message, function=function, run_id=run_id
    )
    return binding.new_event(
        catalogue.FAILED,
        data,
        function=function,
        subject=job_id,
        event_id=failed_id(job_id, step),
        traceparent=traceparent,
    )


def job_of(event: CloudEvent) -> str | None:
    """The job an event is about: its data's `job_id`, else its subject (the catalogue's events
    name the job there too); None for an event about no job."""
    data = event.get_data()
    if isinstance(data, dict) and isinstance(data.get("job_id"), str):
        return str(data["job_id"])
    subject = event.get_subject()
    return subject if isinstance(subject, str) else None


_JOB_STEP_TYPES = {kind.type for kind in catalogue.JOB_STEPS}


def gave_up(event: CloudEvent, reason: str, function: str) -> list[CloudEvent]:
    """What giving up on `event` (its dead letter, for `reason`) means for its job: a job step
    (`catalogue.JOB_STEPS`) fails its job with code `gave_up`, so no job is left waiting for a
    step that will never come; any other event, nothing. Every subscription's default
    `Subscription.gave_up`: the hosts publish what it returns without knowing about jobs."""
    job_id = job_of(event) if event.get_type() in _JOB_STEP_TYPES else None
    if job_id is None:
        return []
    error = CodedError("gave_up", f"{function} gave up on this job: {reason}")
    return [failed(job_id, error, function=function)]
