"""Job records: one JetStream KV entry per job, written only by the projector below from the
lifecycle events. Events may arrive twice or out of order; a record only moves forward.

The record's shape is `functions.ingest.schema`; job ids are `functions.ingest.ids`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from cloudevents.core.v1.event import CloudEvent
from nats.aio.msg import Msg
from nats.js.errors import InvalidKeyError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from events import binding, catalogue, models
from events.lifecycle import JobState
from events.models import WebhookTarget, utcnow
from events.reader import Merge, SubjectReader
from events.runtime.function import DELIVERY_ATTEMPT, RetryLater, Runtime
from functions.ingest.ids import checked_job_id, job_id_for, valid_job_id
from functions.ingest.index import IndexBus, JobIndex, Version, index_headers
from functions.ingest.naming import display_filename
from functions.ingest.schema import JobError, JobRecord, WebhookStatus, shown_url

_RANK = {
    JobState.REQUESTED: 0,
    JobState.QUEUED: 1,
    JobState.TRANSCRIBING: 2,
    JobState.TRANSCRIBED: 3,
    JobState.COMPLETED: 4,
    JobState.FAILED: 4,
    JobState.CANCELED: 4,
}


_END_TYPES = frozenset(kind.type for kind in catalogue.JOB_ENDS)
# A lifecycle event that finds no record waits this many deliveries, this long each, for its
# request to be projected (a job another entry point requested has none for good).
_REQUEST_WAITS, _REQUEST_WAIT_S = 4, 0.5

log = logging.getLogger(__name__)


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
            diarization=request.diarization,
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


# A job's events in the JOBS stream that its delete removes: all but `canceled` (`JobStore.delete`).
_DELETED_WITH_THE_JOB = [
    kind
    for kind in catalogue.KINDS
    if kind.subject_prefix.startswith(catalogue.JOBS.subjects[0].removesuffix(">"))
    and kind is not catalogue.CANCELED
]

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
    elif kind is catalogue.CANCELED:
        # Whatever the job was doing: a model still running stops at its next window, and its
        # late progress, `transcribed` or `completed` change nothing (the record is finished).
        job.state, job.stage = JobState.CANCELED, None
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


def expiry(record: JobRecord, results_ttl_s: int) -> datetime | None:
    """When a finished job is deleted: `delete_after` seconds (the request's), else `results_ttl_s`
    (RESULTS_TTL_S), after it ended (`updated_at`); None to keep it for ever (neither set, or
    RESULTS_TTL_S 0 and no `delete_after`). The projector sets it as the record's `expires_at`
    when the job ends; a job that ended before retention existed has none and is kept."""
    seconds = record.delete_after if record.delete_after is not None else results_ttl_s or None
    return None if seconds is None else record.updated_at + timedelta(seconds=seconds)


def _tombstone(missing: KeyNotFoundError) -> bool:
    """Whether a key the bucket has no value for holds a delete or purge marker (nats-py's
    `kv.get` raises KeyNotFoundError with the marker's operation, `DEL` or `PURGE`)."""
    return missing.op in ("DEL", "PURGE")


class JobsBus(IndexBus, Protocol):
    """The reads and writes of the bus the job store makes (a function's `Runtime`): the index's
    (a subject read from a sequence, a stream's last sequence), a job's last event of a kind,
    purges of a job's events, and compare-and-set writes of a key with headers (the index's
    fields)."""

    async def last_event(self, stream: catalogue.Stream, subject: str) -> CloudEvent | None: ...

    async def purge(self, stream: catalogue.Stream, subject: str) -> None: ...

    async def update_key(
        self, bucket: str, key: str, value: bytes, last: int, headers: Mapping[str, str]
    ) -> int: ...


class JobStore:
    """Reads and compare-and-set writes of job records in the `jobs` KV bucket (a `JobLedger`),
    reads of the jobs' events in the JOBS stream, and the listings of the job index
    (`functions.ingest.index`), which this store starts on first use."""

    def __init__(
        self, kv: KeyValue, bus: JobsBus, results_ttl_s: int = 0, uploads_bucket: str = "uploads"
    ) -> None:
        self.kv = kv
        self.bus = bus
        # RESULTS_TTL_S: when a job that ends without its own `delete_after` expires (0: never).
        self.results_ttl_s = results_ttl_s
        self.uploads_bucket = uploads_bucket
        self._index: JobIndex | None = None
        self._index_started = asyncio.Lock()

    @classmethod
    async def open(cls, runtime: Runtime) -> JobStore:
        """The store over the `jobs` bucket (provisioning made it; nats-py's
        `BucketNotFoundError` when it did not), its index built (every record written before
        is listed when this returns)."""
        kv = await runtime.key_value(catalogue.JOBS_KV_BUCKET)
        store = cls(kv, runtime, runtime.settings.results_ttl_s, runtime.settings.uploads_bucket)
        await store.index()
        return store

    @property
    def bucket(self) -> str:
        """The KV bucket's name (`jobs`, or a test's own): nats-py keeps it on the handle."""
        return str(self.kv._name)  # nats-py has no public accessor; status() is a round trip

    async def index(self) -> JobIndex:
        """The job index over this store's bucket, started (and caught up) on first use."""
        async with self._index_started:
            if self._index is None:
                index = JobIndex(self.bus, self.bucket, self.uploads_bucket, self.get)
                await index.start()
                self._index = index
            return self._index

    async def close(self) -> None:
        """Stop following the bucket (the index's reader)."""
        if self._index is not None:
            await self._index.stop()
            self._index = None

    async def deleted(self, job_id: str) -> bool:
        """Whether the job was deleted: its key holds the tombstone `tombstone` left."""
        try:
            await self.kv.get(job_id)
        except KeyNotFoundError as missing:
            return _tombstone(missing)
        except InvalidKeyError:
            return False  # a name no job can have
        return False

    async def tombstone(self, job_id: str) -> None:
        """Replace the job's record by a purge marker (JetStream KV's own tombstone: it holds the
        key, the job's id, and nothing else; every earlier revision is removed with it). `get`
        answers None and `project` writes nothing for the key from then on. Idempotent."""
        await self.kv.purge(job_id)

    async def delete(self, job_id: str) -> None:
        """Remove the job's events (its `transcription.<kind>.<job>` from JOBS, `segments.<job>`
        from SEGMENTS: they carry its file name, metadata and text), then its record
        (`tombstone`). Its `transcription.canceled.<job>`, if any, stays: it holds the job's id
        and nothing else, and it is how the model functions and optimize learn that a job
        deleted while it ran must stop (`lifecycle.was_canceled`); it ages out with JOBS.
        Idempotent; the record goes last, so a delete cut short is finished by the next. Events
        published after it (a model's report before it read the cancel) stay until the next
        delete or their stream's age. Raises nats-py's errors when the bus cannot be reached."""
        for kind in _DELETED_WITH_THE_JOB:
            await self.bus.purge(catalogue.JOBS, kind.subject(job_id))
        await self.bus.purge(catalogue.SEGMENTS, catalogue.SEGMENT.subject(job_id))
        await self.tombstone(job_id)

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
        # The ends' subjects asked side by side: one round trip's wait, not three.
        ends = await asyncio.gather(
            *(self.bus.last_event(catalogue.JOBS, kind.subject(job_id)) for kind in catalogue.JOB_ENDS),
            return_exceptions=True,
        )
        for event in ends:
            if isinstance(event, binding.MalformedEvent) or event is None:
                continue  # the projector dead-letters a malformed one; the record stays as it is
            if isinstance(event, BaseException):
                raise event
            return await self.project(event, job_id) or record
        return record

    async def events(
        self, job_id: str, wait_s: float, until: float | None = None, *, with_segments: bool = True
    ) -> AsyncIterator[CloudEvent | None]:
        """The job's lifecycle events (JOBS, `transcription.*.<job>`) and its segments (SEGMENTS,
        `segments.<job>`: `io.klipnote.transcription.segment.v1`, each run's, with its `run_id`)
        from its request on, merged as they happen, until its end (`completed`, `failed` or
        `canceled`, included) or, when given, the event loop's time `until`; None whenever
        `wait_s` seconds pass without one (a reader's chance to keep its connection alive).

        No segment comes before the job's first lifecycle event (its request; on a replay both
        are there at once). The end comes after every segment the SEGMENTS stream held when it
        came (a run publishes its segments before its `transcribed`), so whoever reads
        `completed` has the whole text,
        live or replayed; should those segments stop coming for `wait_s` (gone from the stream
        meanwhile), the end comes without them. A segment that is no valid segment event is
        skipped (optimize skips it too); a lifecycle event that is no CloudEvent raises
        `binding.MalformedEvent`. A finished job whose end event the JOBS stream no longer keeps
        (past its age) yields nothing: its events would never come. `with_segments=False`: the
        lifecycle events only (a caller that waits for the end reads no text)."""
        if await self._ended_and_forgotten(job_id):
            return
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as readers:
            lifecycle_events = await readers.enter_async_context(
                self.bus.reading(catalogue.job_events_subject(job_id))
            )
            segments = (
                await readers.enter_async_context(self.bus.reading(catalogue.SEGMENT.subject(job_id)))
                if with_segments
                else None
            )
            merge = Merge([lifecycle_events] if segments is None else [lifecycle_events, segments])
            end: CloudEvent | None = None
            begun = segments is None  # whether a lifecycle event came (segments wait for one)
            stored = 0  # the segments the stream held when the end came
            try:
                while until is None or loop.time() < until:
                    if end is not None and (
                        segments is None or (segments.delivered >= stored and not merge.holds(segments))
                    ):
                        yield end
                        return
                    wait = wait_s if until is None else max(0.0, min(wait_s, until - loop.time()))
                    if not begun:
                        # No segment before the job's first lifecycle event (its request): on a
                        # replay both readers have theirs at once, and the request comes first.
                        among: list[SubjectReader] | None = [lifecycle_events]
                    elif end is None or segments is None:
                        among = None
                    else:
                        among = [segments]
                    got = await merge.next(wait, among=among)
                    if got is None:
                        if until is not None and loop.time() >= until:
                            break  # not the end: the caller's deadline
                        if end is not None:
                            yield end  # nothing for `wait_s`: the rest of the segments went meanwhile
                            return
                        yield None
                        continue
                    reader, msg = got
                    if reader is segments:
                        segment = _segment_event(msg, job_id)
                        if segment is not None:
                            yield segment
                        continue
                    begun = True
                    event = binding.decode(msg.headers, msg.data)
                    if event.get_type() in _END_TYPES:
                        end, stored = event, 0 if segments is None else await segments.stored()
                        continue
                    yield event
            finally:
                await merge.close()

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
        there are in all, from the job index: the same cost at 100 jobs and at 100,000 (a slice
        of a sorted list, then one read per job on the page, side by side). Every record written
        before the call is counted (`JobIndex.current`). A job deleted between the index and its
        read is left off the page."""
        index = await self.index()
        await index.current()
        ids, total = index.page(state, offset, limit)
        records = await asyncio.gather(*(self.get(job_id) for job_id in ids))
        # A job that moved on between the index and its read is left off a filtered page.
        return [record for record in records if record is not None and state in (None, record.state)], total

    async def expired(self, now: datetime) -> list[str]:
        """The ids of the finished jobs whose `expires_at` is at or before `now` (the index's)."""
        return (await self.index()).expired(now)

    async def known(self, job_id: str) -> bool:
        """Whether the index has the job's record or delete marker (False may only mean not yet
        indexed: ask `get` and `deleted` to be sure)."""
        return (await self.index()).knows(job_id)

    async def referenced(self) -> dict[Version, float]:
        """The uploads-bucket objects that jobs with ids of their own name (`JobIndex.referenced`)."""
        index = await self.index()
        await index.current()  # the request that named one may have been written a moment ago
        return index.referenced()

    async def project(
        self,
        event: CloudEvent,
        job_id: str,
        webhook_target: WebhookTarget | None = None,
        request_digest: str | None = None,
    ) -> JobRecord | None:
        """Apply one lifecycle event; safe under concurrent projectors (compare-and-set). The
        record as it is afterwards; None when there is none, or the job was deleted (a tombstone
        in the bucket, see `delete`: no event brings it back). The event that ends a job sets
        the record's `expires_at` (`expiry`)."""
        while True:
            try:
                entry = await self.kv.get(job_id)
                record = JobRecord.model_validate_json(entry.value) if entry.value else None
                revision: int | None = entry.revision
            except KeyNotFoundError as missing:
                if _tombstone(missing):
                    return None  # a deleted job: no late event makes it again
                record, revision = None, None
            updated = apply(record, event, webhook_target, request_digest)
            if updated is None:
                return record
            if updated.finished and not (record is not None and record.finished):
                updated.expires_at = expiry(updated, self.results_ttl_s)
            value = updated.model_dump_json().encode()
            try:
                # A first write expects no message at all on the key, not even a tombstone
                # (nats-py's `kv.create` writes over one: it would bring a deleted job back).
                await self.bus.update_key(self.bucket, job_id, value, revision or 0, index_headers(updated))
                return updated
            except KeyWrongLastSequenceError:
                continue  # someone else wrote (or deleted) first: re-read and re-apply


def _segment_event(msg: Msg, job_id: str) -> CloudEvent | None:
    """A message of `segments.<job_id>` as its segment event, or None (logged) when it is none:
    not a CloudEvent, not a segment, or another job's."""
    try:
        event = binding.decode(msg.headers, msg.data)
        if binding.kind_of(event) is not catalogue.SEGMENT:
            raise binding.MalformedEvent(f"{event.get_type()} on {msg.subject}")
        segment = binding.parse_data(event, models.SegmentTranscribed)
    except binding.MalformedEvent as error:
        log.warning("skipping a malformed segment event of job %s: %s", job_id, error)
        return None
    if segment.job_id != job_id:
        log.warning("skipping a segment of job %s on job %s's subject", segment.job_id, job_id)
        return None
    return event


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
        record = await self.jobs.project(event, job_id)
        if record is None and kind is not catalogue.REQUESTED and DELIVERY_ATTEMPT.get() < _REQUEST_WAITS:
            # No record yet: its request may be in another replica's hands, or later in this
            # batch under a subject of the sender's own (`Consumer.by_job` groups by subject).
            # A deleted job has none for good; a job never requested here gives up after a few.
            if not await self.jobs.deleted(job_id):
                raise RetryLater(f"job {job_id} has no record yet", _REQUEST_WAIT_S)
        return
        yield  # an async generator that emits nothing
