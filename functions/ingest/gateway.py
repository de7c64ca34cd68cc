"""The gateway: how a job gets in, the same for every way in (the HTTP API, a CloudEvent from
another system on NATS or over HTTP, a file dropped into the uploads bucket).

Every request passes the same checks first (`admission.Admission.admit`: routing, the language
tag's form, the webhook guard): the API answers a refusal 422 before submitting, and the router
fails the job with the refusal's code.

- `submit`: project `transcription.requested` into the job record, then publish it, so the job
  exists when the caller is answered; a webhook's URL and headers go into the record only.
- `cancel`: project `transcription.canceled` into the job record, then publish it (the models
  and optimize read the JOBS stream for it).
- `view`: a record as the API shows it, with presigned links to its results once completed.
- `delete`: a job's upload, results, events and record removed, a tombstone left in its place
  (no late event, repeat or reconcile makes the job again: `submit` raises `JobDeleted`).

It depends on narrow parts only: settings, the job store, a publisher, the object store, the
and the result links; never on the function object.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol

from cloudevents.core.v1.event import CloudEvent
from minio import Minio
from minio.error import S3Error

from events import binding, catalogue, lifecycle, tracing
from events.errors import CodedError
from events.lifecycle import JobState
from events.models import ObjectRef, OutputFormat, TranscriptionCanceled, TranscriptionRequested
from events.settings import Settings
from functions.ingest import NAME
from functions.ingest.ids import job_id_for, normalise_etag, object_job_id
from functions.ingest.index import Version
from functions.ingest.jobs import JobStore
from functions.ingest.links import ResultLinks
from functions.ingest.naming import API_PREFIX
from functions.ingest.schema import JobRecord, JobView


class EventPublisher(Protocol):
    """Where the gateway publishes requests (`events.bus.Publisher` under a host)."""

    async def publish(self, event: CloudEvent) -> bool: ...


class JobDeleted(CodedError):
    """`job_deleted`: a request names a job that was deleted (its id is a tombstone): the same
    `Idempotency-Key`, stored object version or CloudEvent again. A deleted job is never made
    again; a new request needs a new key, another object version or another event id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            "job_deleted",
            f"job {job_id}, which this request names again, was deleted and is not made again; "
            "send a new Idempotency-Key, another object (key or content) or another event id",
        )
        self.job_id = job_id


class Intake(Protocol):
    """What a way in that makes jobs by itself (the bucket drop) needs of the gateway."""

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def deleted(self, job_id: str) -> bool: ...

    async def known(self, job_id: str) -> bool: ...

    async def referenced_media(self) -> dict[Version, float]: ...

    async def submit(
        self,
        request: TranscriptionRequested,
        traceparent: str | None = None,
        request_digest: str | None = None,
    ) -> JobRecord: ...


class Gateway:
    """Admission, submission and the job views of ingest (an `Intake`)."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobStore,
        publisher: EventPublisher,
        store: Minio,
        links: ResultLinks,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.publisher = publisher
        self.store = store
        self.links = links
        self._tracer = tracing.tracer("klipnote.ingest")

    # -- submission ------------------------------------------------------------------------

    async def submit(
        self,
        request: TranscriptionRequested,
        traceparent: str | None = None,
        request_digest: str | None = None,
    ) -> JobRecord:
        """Project a job request, then publish it, so the job exists when we answer. A repeat
        (same job id) changes no record (a finished job stays finished: the router dispatches
        only a job still `requested`) and answers with the existing job. `traceparent` (W3C
        Trace Context) continues a caller's trace; `request_digest` goes into a new record (see
        `JobRecord.request_digest`).

        A webhook (its URL, whose query, user:password or path may hold a token, and its static
        headers) never enters the event, which every reader of the JOBS stream and the job's
        event stream sees for 30 days: the event says `webhook_in_record`, and the full target
        goes into the job record, which only ingest reads. The record is written first, so the
        router, which admits the record's target, finds it whenever it reads the event.

        Raises `JobDeleted` (nothing published) when the job id is a deleted job's: an upload the
        API stored for it (under `klipnote-api/<job>/`) is removed again first."""
        full_target = request.webhook
        # A caller's own `webhook_in_record` means nothing here: the record holds what we put in it.
        request = request.model_copy(update={"webhook": None, "webhook_in_record": full_target is not None})
        # The job's trace starts here (or continues the caller's); every later hop continues it.
        with self._tracer.start_as_current_span(
            "transcription requested", context=tracing.context_from(traceparent)
        ):
            event = _requested_event(request, tracing.current_traceparent())
            job_id = job_id_for(event, request)
            record = await self.jobs.project(event, job_id, full_target, request_digest)
            if record is None:  # only a tombstone stops a request's projection
                await asyncio.to_thread(self._remove_api_upload, job_id, request.media)
                raise JobDeleted(job_id)
            await self.publisher.publish(event)
        return record

    async def republish(self, record: JobRecord) -> None:
        """Publish the request of a job still `requested` again, from its record: its publish may
        have failed after the record was written (the caller saw an error and retries), and a
        job must not wait for ever for a request that never reached the router. The event id is
        the request's, so when the first publish got through this one is a JetStream duplicate
        (and past the dedupe window the router dispatches only a job still `requested`)."""
        if record.state is not JobState.REQUESTED:
            return
        request = TranscriptionRequested(
            job_id=record.id,
            media=record.media,
            model=record.requested_model,
            language=record.language,
            formats=record.formats,
            metadata=record.metadata,
            filename=record.filename,
            webhook_in_record=record.webhook_target is not None,
            audio_track=record.audio_track,
            decoding=record.decoding,
            delete_after=record.delete_after,
        )
        await self.publisher.publish(_requested_event(request))

    async def cancel(self, record: JobRecord) -> JobRecord | None:
        """Cancel the job of `record` (the store's current view): project `transcription.canceled`
        into its record, then publish it, as `submit` does, so the answer and the next read agree.
        Returns the record after it: state `canceled`, or the job's other end when it had ended
        otherwise (completed, failed; also when that end came in meanwhile), which is left as it
        is and nothing is published; None when the record is gone (deleted meanwhile).

        Repeats are harmless: the event's id (`lifecycle.canceled_id`) makes a second publish a
        JetStream duplicate, and a job canceled already has its event published again only when
        the JOBS stream lacks it (the first publish failed after the record was written), so
        the model functions, which read the stream, still learn of it."""
        event = _canceled_event(record.id)
        if record.state is JobState.CANCELED:
            if await lifecycle.was_canceled(self.jobs.bus, record.id):
                return record
        elif record.finished:
            return record
        else:
            projected = await self.jobs.project(event, record.id)
            if projected is None or projected.state is not JobState.CANCELED:
                return projected  # deleted, or it ended otherwise meanwhile: nothing to announce
            record = projected
        await self.publisher.publish(event)
        return record

    # -- reading ---------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job's record as the projector left it, or None."""
        return await self.jobs.get(job_id)

    async def current_job(self, job_id: str) -> JobRecord | None:
        """The record caught up with the job's end event (see `JobStore.current`), or None."""
        return await self.jobs.current(job_id)

    async def expired_jobs(self, now: datetime) -> list[str]:
        """The ids of the finished jobs expired at `now` (`JobStore.expired`)."""
        return await self.jobs.expired(now)

    async def known(self, job_id: str) -> bool:
        """Whether the job index has the job, or its delete (`JobStore.known`)."""
        return await self.jobs.known(job_id)

    async def referenced_media(self) -> dict[Version, float]:
        """The uploads-bucket objects that jobs with ids of their own name (`JobStore.referenced`)."""
        return await self.jobs.referenced()

    async def page_of_jobs(
        self, state: JobState | None, offset: int, limit: int
    ) -> tuple[list[JobRecord], int]:
        """One page of records, newest first, and how many there are (see `JobStore.page`)."""
        return await self.jobs.page(state, offset, limit)

    async def result_links(self, record: JobRecord) -> dict[OutputFormat, str]:
        """Presigned download links of a job's results (`RESULT_LINK_EXPIRY_S`)."""
        return await self.links.of(record)

    async def view(self, record: JobRecord) -> JobView:
        """The record as the API shows it: no secrets; links once completed."""
        view = record.public()
        if record.state == JobState.COMPLETED:
            view.links = await self.result_links(record)
        return view

    def follow(
        self, job_id: str, wait_s: float, until: float | None = None, *, with_segments: bool = True
    ) -> AsyncIterator[CloudEvent | None]:
        """The job's lifecycle events and (unless `with_segments` is False) its segments as they
        happen, until its end (after the segments before it) or the event loop's time `until`; at
        once for a finished job whose events are no longer kept (see `JobStore.events`)."""
        return self.jobs.events(job_id, wait_s, until, with_segments=with_segments)

    async def read_result(self, record: JobRecord, fmt: OutputFormat) -> bytes | None:
        """The bytes of a completed job's result file in `fmt`, read whole (transcripts are small:
        text); None when the job has no such result. Raises minio's S3Error when the object is
        gone from the results bucket (deleted), `events.storage.UNREACHABLE` when the store is down."""
        ref = record.results.get(fmt)
        if ref is None:
            return None

        def read() -> bytes:
            response = self.store.get_object(ref.bucket, ref.key)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return await asyncio.to_thread(read)

    # -- deletion --------------------------------------------------------------------------

    async def deleted(self, job_id: str) -> bool:
        """Whether `job_id` is a deleted job's (a tombstone: see `JobStore.tombstone`)."""
        return await self.jobs.deleted(job_id)

    async def delete(self, job_id: str) -> bool:
        """Delete a job: cancel it first when it has not ended (`cancel`), then remove its
        upload, its results, its events and its record, leaving a tombstone that holds nothing
        but its id. False when there never was such a job; True when it is deleted now or was
        before (a repeat does the removals again: whatever a late writer added goes too).

        Removed: the media when it is the job's own (`_owns_media`: its API upload, or the
        dropped object version that made the job, still unchanged in the uploads bucket), everything
        under `<job>/` in the results bucket (optimize's keys, `<job>/transcript.<fmt>`), then
        `JobStore.delete` (events, record). Media in another bucket MEDIA_BUCKETS allows is left:
        ingest only reads those, and they belong to whoever put them there. The record goes last,
        so a delete cut short (the store or the bus away: minio's S3Error or
        `events.storage.UNREACHABLE`, nats-py's errors) is finished by the next one. Several
        replicas deleting one job at once do the same removals twice, harmlessly."""
        record = await self.jobs.current(job_id)
        marked = False  # whether `cancel` published the mark just now
        if record is None:
            if not await self.jobs.deleted(job_id):
                return False
        elif not record.finished:
            # A job still running stops first, so no model or optimize writes for it much longer.
            canceled = await self.cancel(record)
            marked = canceled is not None and canceled.state is JobState.CANCELED
            record = canceled or record
        # A finished job gets the cancel mark too (the projector and the webhook deliverer ignore
        # it for a job that ended otherwise): a `dispatched` or `transcribed` redelivered after a
        # lost ack finds it, and no model or optimize writes for the job after its delete. The
        # mark holds only the job id; `JobStore.delete` keeps it for that reason.
        if not marked:
            await self.publisher.publish(_canceled_event(job_id))
        await asyncio.to_thread(self._remove_objects, job_id, record)
        await self.jobs.delete(job_id)
        return True

    def _remove_objects(self, job_id: str, record: JobRecord | None) -> None:
        """The job's objects in the uploads and results buckets (see `delete`)."""
        uploads, results = self.settings.uploads_bucket, self.settings.results_bucket
        named = [(ref.bucket, ref.key) for ref in (record.results.values() if record else [])]
        if record is not None and self._owns_media(job_id, record.media):
            named.append((uploads, record.media.key))
        for bucket, prefix in ((uploads, f"{API_PREFIX}{job_id}/"), (results, f"{job_id}/")):
            listed = self.store.list_objects(bucket, prefix, recursive=True)
            named += [(bucket, obj.object_name) for obj in listed if obj.object_name]
        for bucket, key in dict.fromkeys(named):  # once each, in order
            self.store.remove_object(bucket, key)  # S3 answers a missing key with success too

    def _owns_media(self, job_id: str, media: ObjectRef) -> bool:
        """Whether the job's media is its own to delete (blocking: one HEAD): an API upload
        under `klipnote-api/<job>/`, or, elsewhere in the uploads bucket, the very object version
        whose job this is (its id derives from bucket, key and eTag: a drop, or that object named
        by reference) while the object there still has that eTag. Another job's upload named by
        reference, or a newer file dropped under the same name, is left: it is another job's.
        Media in other buckets is never ingest's to delete."""
        if media.bucket != self.settings.uploads_bucket:
            return False
        if media.key.startswith(API_PREFIX):
            return media.key.startswith(f"{API_PREFIX}{job_id}/")
        if media.etag is None or object_job_id(media.bucket, media.key, media.etag) != job_id:
            return False
        try:
            stat = self.store.stat_object(media.bucket, media.key)
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject"):
                return False  # gone already
            raise
        return stat.etag is not None and normalise_etag(stat.etag) == normalise_etag(media.etag)

    def _remove_api_upload(self, job_id: str, media: ObjectRef) -> None:
        """Remove the upload the API stored for a request of a deleted job (`submit`)."""
        if media.bucket == self.settings.uploads_bucket and media.key.startswith(f"{API_PREFIX}{job_id}/"):
            self.store.remove_object(media.bucket, media.key)


def _canceled_event(job_id: str) -> CloudEvent:
    """The `transcription.canceled` event of a job; its id (`lifecycle.canceled_id`) makes a
    repeat a JetStream duplicate."""
    return binding.new_event(
        catalogue.CANCELED,
        TranscriptionCanceled(job_id=job_id),
        function=NAME,
        subject=job_id,
        event_id=lifecycle.canceled_id(job_id),
    )


def _requested_event(request: TranscriptionRequested, traceparent: str | None = None) -> CloudEvent:
    """The `transcription.requested` event ingest publishes for `request`: its id derives from the
    job id, so every publish of one job's request (a retry, a republish) is a JetStream duplicate."""
    return binding.new_event(
        catalogue.REQUESTED,
        request,
        function=NAME,
        subject=request.job_id,
        event_id=lifecycle.requested_id(request.job_id) if request.job_id else None,
        traceparent=traceparent,
    )
