"""The gateway: how a job gets in, the same for every way in (the HTTP API, a CloudEvent from
another system on NATS or over HTTP, a file dropped into the uploads bucket).

Every request passes the same checks first (`admission.Admission.admit`: routing, the language
tag's form, the webhook guard): the API answers a refusal 422 before submitting, and the router
fails the job with the refusal's code.

- `submit`: publish `transcription.requested` and project it at once, so the job exists when
  the caller is answered.
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

    async def submit(self, request: TranscriptionRequested, traceparent: str | None = None) -> JobRecord: ...


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

    async def submit(self, request: TranscriptionRequested, traceparent: str | None = None) -> JobRecord:
        """Publish a job request and project it at once, so the job exists when we answer. A
        repeat (same job id) is a JetStream duplicate and answers with the existing job.
        `traceparent` (W3C Trace Context) continues a caller's trace.

        The values of the webhook's static headers (an Authorization token, say) never enter the
        event, which every reader of the JOBS stream sees: it names the headers' target only, and
        the full target goes straight into the job record, which only ingest reads."""
        full_target = request.webhook
        if full_target is not None and full_target.headers:
            request = request.model_copy(update={"webhook": full_target.model_copy(update={"headers": {}})})
        # The job's trace starts here (or continues the caller's); every later hop continues it.
        with self._tracer.start_as_current_span(
            "transcription requested", context=tracing.context_from(traceparent)
        ):
            event = binding.new_event(
                catalogue.REQUESTED,
                request,
                function=NAME,
                subject=request.job_id,
                event_id=lifecycle.requested_id(request.job_id) if request.job_id else None,
                traceparent=tracing.current_traceparent(),
            )
            await self.publisher.publish(event)
        record = await self.jobs.project(event, job_id_for(event, request), full_target)
        assert record is not None
        return record

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

    async def result_links(self, record: JobRecord) -> dict[OutputFormat, str]:
        """Presigned download links of a job's results (`RESULT_LINK_EXPIRY_S`)."""
        return await self.links.of(record)

    async def view(self, record: JobRecord) -> JobView:
        """The record as the API shows it: no secrets; links once completed."""
        view = record.public()
        if record.state == JobState.COMPLETED:
            view.links = await self.result_links(record)
        return view

    def follow(self, job_id: str, wait_s: float) -> AsyncIterator[CloudEvent | None]:
        """The job's lifecycle events as they happen, until its end (see `JobStore.events`)."""
        return self.jobs.events(job_id, wait_s)
