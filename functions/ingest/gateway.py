"""The gateway: how a job gets in, the same for every way in (the HTTP API, a CloudEvent from
another system on NATS or over HTTP, a file dropped into the uploads bucket).

Every request passes the same checks first (`admission.Admission.admit`: routing, the language
tag's form, the webhook guard): the API answers a refusal 422 before submitting, and the router
fails the job with the refusal's code.

- `submit`: project `transcription.requested` into the job record, then publish it, so the job
  exists when the caller is answered; a webhook's URL and headers go into the record only.
- `view`: a record as the API shows it, with presigned links to its results once completed.

It depends on narrow parts only: settings, the job store, a publisher, the object store, the
and the result links; never on the function object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from cloudevents.core.v1.event import CloudEvent
from minio import Minio

from events import binding, catalogue, lifecycle, tracing
from events.lifecycle import JobState
from events.models import OutputFormat, TranscriptionRequested
from events.settings import Settings
from functions.ingest import NAME
from functions.ingest.ids import job_id_for
from functions.ingest.jobs import JobStore
from functions.ingest.links import ResultLinks
from functions.ingest.schema import JobRecord, JobView


class EventPublisher(Protocol):
    """Where the gateway publishes requests (`events.bus.Publisher` under a host)."""

    async def publish(self, event: CloudEvent) -> bool: ...


class Intake(Protocol):
    """What a way in that makes jobs by itself (the bucket drop) needs of the gateway."""

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def list_jobs(self, state: JobState | None = None) -> list[JobRecord]: ...

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
        router, which admits the record's target, finds it whenever it reads the event."""
        full_target = request.webhook
        # A caller's own `webhook_in_record` means nothing here: the record holds what we put in it.
        request = request.model_copy(update={"webhook": None, "webhook_in_record": full_target is not None})
        # The job's trace starts here (or continues the caller's); every later hop continues it.
        with self._tracer.start_as_current_span(
            "transcription requested", context=tracing.context_from(traceparent)
        ):
            event = _requested_event(request, tracing.current_traceparent())
            record = await self.jobs.project(event, job_id_for(event, request), full_target, request_digest)
            await self.publisher.publish(event)
        assert record is not None
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

    # -- reading ---------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job's record as the projector left it, or None."""
        return await self.jobs.get(job_id)

    async def current_job(self, job_id: str) -> JobRecord | None:
        """The record caught up with the job's end event (see `JobStore.current`), or None."""
        return await self.jobs.current(job_id)

    async def list_jobs(self, state: JobState | None = None) -> list[JobRecord]:
        """Every record (in `state`, if given), newest first."""
        return await self.jobs.list(state)

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
        self, job_id: str, wait_s: float, until: float | None = None
    ) -> AsyncIterator[CloudEvent | None]:
        """The job's lifecycle events as they happen, until its end or the event loop's time
        `until`; at once for a finished job whose events are no longer kept (see `JobStore.events`)."""
        return self.jobs.events(job_id, wait_s, until)


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
