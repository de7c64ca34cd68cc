"""Job records: one JetStream KV entry per job, written only by the projector below from the
lifecycle events. Events may arrive twice or out of order; a record only moves forward.

The record's shape is `functions.ingest.schema`; job ids are `functions.ingest.ids`.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from cloudevents.core.v1.event import CloudEvent
from nats.js.api import DeliverPolicy
from nats.js.errors import InvalidKeyError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from events import binding, catalogue, models
from events.lifecycle import JobState
from events.models import WebhookTarget, utcnow
from events.reader import SubjectReader
from events.runtime.function import Runtime
from functions.ingest.ids import checked_job_id, job_id_for, valid_job_id
from functions.ingest.naming import display_filename
from functions.ingest.schema import JobError, JobRecord, WebhookStatus, shown_url

_RANK = {
    JobState.REQUESTED: 0,
    JobState.QUEUED: 1,
    JobState.TRANSCRIBING: 2,
    JobState.TRANSCRIBED: 3,
    JobState.COMPLETED: 4,
    JobState.FAILED: 4,
}


class JobLedger(Protocol):
    """The part of the job store a webhook deliverer needs: read a record, project an event."""

    async def get(self, job_id: str) -> JobRecord | None: ...

    async def project(
        self,
        event: CloudEvent,
        job_id: str,
        webhook_target: WebhookTarget | None = None,
        request_digest: str | None = None,
    ) -> JobRecord | None: ...


def apply(
    record: JobRecord | None,
    event: CloudEvent,
    webhook_target: WebhookTarget | None = None,
    request_digest: str | None = None,
) -> JobRecord | None:
    """The record after `event`, or None when the event changes nothing (repeat, stale).

    A `requested` event makes the record and never changes one: a repeat of the request (after
    JetStream's dedupe window, say) leaves a finished job finished and its webhook as it was.
    `webhook_target` is the full target of a request that ingest published with
    `webhook_in_record` (URL and headers, where tokens live, stay out of every event): the
    gateway projects the request, with it, before publishing it, so the record holds the target
    before any reader of the event looks for it. `request_digest` (the gateway's too) is what an
    `Idempotency-Key` request sent, kept to tell a retry from another request under the key."""
    kind = binding.kind_of(event)
    if kind is catalogue.REQUESTED:
        if record is not None:
            return None
        request = binding.parse_data(event, models.TranscriptionRequested)
        target = webhook_target if request.webhook_in_record else request.webhook
        return JobRecord(
            id=job_id_for(event, request),
            state=JobState.REQUESTED,
            media=request.media,
            # Every way in, not only uploads: a name from NATS or /v1/events is whatever was sent.
            filename=display_filename(request.filename) if request.filename else None,
            requested_model=request.model,
            language=request.language,
            formats=request.formats,
            metadata=request.metadata,
            audio_track=request.audio_track,
            decoding=request.decoding,
            delete_after=request.delete_after,
            webhook=WebhookStatus(url=shown_url(target.url)) if target else None,
            webhook_target=target,
            request_digest=request_digest,
        )
    if record is None:
        # A lifecycle event of a job this ingest never saw requested (another entry point's
        # job, or a record lost with its KV): nothing to project onto.
        return None
    updated = _advance(record, event, kind)
    if updated is not None:
        updated.updated_at = utcnow()
    return updated


_WEBHOOK_STATES = {"delivered": "delivered", "retrying": "retrying", "gave_up": "failed", "refused": "failed"}


def _advance(record: JobRecord, event: CloudEvent, kind: catalogue.EventKind) -> JobRecord | None:
    if kind is catalogue.WEBHOOK:  # deliveries come after the job's end
        return _webhook_attempted(record, binding.parse_data(event, models.WebhookAttempted))
    if record.finished:
        return None
    job = record.model_copy(deep=True)
    if kind is catalogue.QUEUED:
        queued = binding.parse_data(event, models.TranscriptionQueued)
        if _handed_over(job, queued):
            # Back on a queue, another model's: the first one only listened.
            job.state, job.model, job.run_id = JobState.QUEUED, queued.model, None
            job.stage, job.progress = None, 0.0
            job.routing_reason = queued.routing_reason or job.routing_reason
        elif _moves(job, JobState.QUEUED):
            job.state, job.model = JobState.QUEUED, queued.model
            job.routing_reason = queued.routing_reason or job.routing_reason
        elif job.routing_reason is None and queued.routing_reason and job.model in (None, queued.model):
            job.routing_reason = queued.routing_reason  # the model's progress came first
        else:
            return None
    elif kind is catalogue.LANGUAGE_DETECTED:
        detected = binding.parse_data(event, models.LanguageDetected)
        job.detected_language, job.language_probability = detected.language, round(detected.probability, 4)
        job.routing_reason = "detected language"
    elif kind is catalogue.PROGRESS:
        progress = binding.parse_data(event, models.TranscriptionProgress)
        if job.model is not None and progress.model != job.model:
            return None  # a late report of the model that handed the job over
        if not _moves(job, JobState.TRANSCRIBING, allow_same=True):
            return None
        job.state, job.model, job.run_id = JobState.TRANSCRIBING, progress.model, progress.run_id
        job.stage, job.progress = progress.stage, progress.fraction
    elif kind is catalogue.TRANSCRIBED:
        done = binding.parse_data(event, models.TranscriptionTranscribed)
        if not _moves(job, JobState.TRANSCRIBED):
            return None
        job.state, job.run_id, job.model = JobState.TRANSCRIBED, done.run_id, done.model
        job.stage, job.progress = "optimizing", 1.0
        job.detected_language, job.audio_seconds = done.language, done.audio_seconds
        if done.language_probability is not None:
            job.language_probability = round(done.language_probability, 4)
        job.segment_count, job.media_info = done.segment_count, done.media_info
    elif kind is catalogue.COMPLETED:
        completed = binding.parse_data(event, models.TranscriptionCompleted)
        job.state, job.run_id, job.results = JobState.COMPLETED, completed.run_id, completed.results
        job.stats, job.stage, job.progress = completed.stats, None, 1.0
        job.detected_language = completed.language or job.detected_language
    elif kind is catalogue.FAILED:
        failed = binding.parse_data(event, models.TranscriptionFailed)
        job.state, job.stage = JobState.FAILED, None
        job.error = JobError(code=failed.code, message=failed.message, function=failed.function)
    else:
        return None
    return job


def _webhook_attempted(record: JobRecord, attempt: models.WebhookAttempted) -> JobRecord | None:
    status = record.webhook
    if status is None or status.state == "delivered" or attempt.attempt < status.attempts:
        return None  # no webhook, already done, or a stale repeat
    job = record.model_copy(deep=True)
    job.webhook = status.model_copy(
        update={
            "state": _WEBHOOK_STATES[attempt.outcome],
            "attempts": attempt.attempt,
            "status_code": attempt.status_code,
            "error": attempt.error,
            "next_attempt_in_s": attempt.next_attempt_in_s,
        }
    )
    return job


def _handed_over(job: JobRecord, queued: models.TranscriptionQueued) -> bool:
    """Whether `queued` puts the job on the queue of the model it was handed over to, from the
    model that still holds it in the record (not a repeat, nor a stale copy after the new model
    began)."""
    return (
        queued.handed_over_from is not None
        and job.model == queued.handed_over_from
        and job.state in (JobState.QUEUED, JobState.TRANSCRIBING)
    )


def _moves(job: JobRecord, to: JobState, allow_same: bool = False) -> bool:
    current, target = _RANK[job.state], _RANK[to]
    return target > current or (allow_same and target == current)


class JobsBus(Protocol):
    """The reads of the bus the job store makes (a function's `Runtime`): the `jobs` bucket's
    keys (the subjects of its `KV_jobs` stream), a job's last event of a kind, a job's events."""

    async def stream_subjects(self, stream: str, subjects_filter: str) -> list[str]: ...

    async def last_event(self, stream: catalogue.Stream, subject: str) -> CloudEvent | None: ...

    def reading(
        self, subject: str, deliver_policy: DeliverPolicy = DeliverPolicy.ALL
    ) -> AbstractAsyncContextManager[SubjectReader]: ...


class JobStore:
    """Reads and compare-and-set writes of job records in the `jobs` KV bucket (a `JobLedger`),
    and reads of the jobs' events in the JOBS stream."""

    def __init__(self, kv: KeyValue, bus: JobsBus) -> None:
        self.kv = kv
        self.bus = bus

    @classmethod
    async def open(cls, runtime: Runtime) -> JobStore:
        """The store over the `jobs` bucket (provisioning made it; nats-py's
        `BucketNotFoundError` when it did not)."""
        return cls(await runtime.key_value(catalogue.JOBS_KV_BUCKET), runtime)

    async def job_ids(self) -> list[str]:
        """Every job's key, from the KV stream's subjects (nats-py's `kv.keys()` can end its
        listing before the first key when the server is busy)."""
        bucket = (await self.kv.status()).bucket  # this store's bucket (`jobs`, or a test's own)
        prefix = f"$KV.{bucket}."
        subjects = await self.bus.stream_subjects(f"KV_{bucket}", f"{prefix}>")
        return [subject.removeprefix(prefix) for subject in subjects]

    async def get(self, job_id: str) -> JobRecord | None:
        try:
            entry = await self.kv.get(job_id)
        except (KeyNotFoundError, InvalidKeyError):  # no such job; a name no job can have
            return None
        return JobRecord.model_validate_json(entry.value) if entry.value else None

    async def current(self, job_id: str) -> JobRecord | None:
        """The record as of the job's end event when that is already in the JOBS stream: the
        projector lags the event by a moment, and a client that saw `completed` (an SSE stream,
        a webhook) fetches its transcript at once. Projecting the end here is the projector's
        own idempotent step, so whichever writes first wins and the other changes nothing."""
        record = await self.get(job_id)
        if record is None or record.finished:
            return record
        for kind in catalogue.JOB_ENDS:
            try:
                event = await self.bus.last_event(catalogue.JOBS, kind.subject(job_id))
            except binding.MalformedEvent:
                continue  # the projector dead-letters it; the record stays as it is
            if event is None:
                continue
            return await self.project(event, job_id) or record
        return record

    async def events(
        self, job_id: str, wait_s: float, until: float | None = None
    ) -> AsyncIterator[CloudEvent | None]:
        """The job's lifecycle events from its request on, as they happen, until its end
        (`completed` or `failed`, included) or, when given, the event loop's time `until`; None
        whenever `wait_s` seconds pass without one (a reader's chance to keep its connection
        alive). A finished job whose end event the JOBS stream no longer keeps (past its age)
        yields nothing: its events would never come."""
        ends = {kind.type for kind in catalogue.JOB_ENDS}
        if await self._ended_and_forgotten(job_id):
            return
        loop = asyncio.get_running_loop()
        async with self.bus.reading(catalogue.job_events_subject(job_id)) as reader:
            while until is None or loop.time() < until:
                wait = wait_s if until is None else max(0.0, min(wait_s, until - loop.time()))
                msg = await reader.next(wait)
                if msg is None:
                    if until is None or loop.time() < until:
                        yield None
                    continue
                event = binding.decode(msg.headers, msg.data)
                yield event
                if event.get_type() in ends:
                    return

    async def _ended_and_forgotten(self, job_id: str) -> bool:
        record = await self.get(job_id)
        if record is None or not record.finished:
            return False
        for kind in catalogue.JOB_ENDS:
            try:
                if await self.bus.last_event(catalogue.JOBS, kind.subject(job_id)) is not None:
                    return False
            except binding.MalformedEvent:
                return False  # an end is there, unreadable: the reader dead-letters nothing, but ends
        return True

    async def page(
        self, state: JobState | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[JobRecord], int]:
        """Records `offset` to `offset + limit` (newest first, in `state` if given) and how many
        there are in all. Holds at most `offset + limit` records at a time however many jobs
        there are (a heap over the scan), so a large bucket of fat records cannot exhaust memory;
        the scan still reads each record once (an index is the step beyond)."""
        window = offset + limit
        newest: list[tuple[float, int, JobRecord]] = []  # a min-heap of the window's newest
        total = 0
        for key in await self.job_ids():
            record = await self.get(key)
            if record is None or (state is not None and record.state != state):
                continue
            total += 1
            item = (record.created_at.timestamp(), total, record)
            if len(newest) < window:
                heapq.heappush(newest, item)
            elif item[0] > newest[0][0]:
                heapq.heapreplace(newest, item)
        ordered = [record for _, _, record in sorted(newest, key=lambda item: item[:2], reverse=True)]
        return ordered[offset:], total

    async def list(self, state: JobState | None = None) -> list[JobRecord]:
        """Every record, newest first (a scan of the bucket: fine for thousands of jobs; an index
        is the next step beyond that)."""
        records = [record for key in await self.job_ids() if (record := await self.get(key)) is not None]
        if state is not None:
            records = [record for record in records if record.state == state]
        return sorted(records, key=lambda record: record.created_at, reverse=True)

    async def project(
        self,
        event: CloudEvent,
        job_id: str,
        webhook_target: WebhookTarget | None = None,
        request_digest: str | None = None,
    ) -> JobRecord | None:
        """Apply one lifecycle event; safe under concurrent projectors (compare-and-set)."""
        while True:
            try:
                entry = await self.kv.get(job_id)
                record = JobRecord.model_validate_json(entry.value) if entry.value else None
                revision: int | None = entry.revision
            except KeyNotFoundError:
                record, revision = None, None
            updated = apply(record, event, webhook_target, request_digest)
            if updated is None:
                return record
            value = updated.model_dump_json().encode()
            try:
                if revision is None:
                    await self.kv.create(job_id, value)
                else:
                    await self.kv.update(job_id, value, last=revision)
                return updated
            except KeyWrongLastSequenceError:
                continue  # someone else wrote first: re-read and re-apply


class Projector:
    """The projector's handler: every lifecycle event of the JOBS stream onto its job's record."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    async def project(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        """Apply `event` to its job's record; emits nothing. MalformedEvent when the event names
        no job, or a job id no job can have."""
        kind = binding.kind_of(event)
        data = event.get_data()
        if kind is catalogue.REQUESTED:
            job_id = checked_job_id(event, binding.parse_data(event, models.TranscriptionRequested))
        elif isinstance(data, dict) and isinstance(data.get("job_id"), str):
            job_id = data["job_id"]
            if not valid_job_id(job_id):
                raise binding.MalformedEvent(f"{event.get_type()}: job_id {job_id!r} is no job's id")
        else:
            raise binding.MalformedEvent(f"{event.get_type()} carries no job_id")
        await self.jobs.project(event, job_id)
        return
        yield  # an async generator that emits nothing
