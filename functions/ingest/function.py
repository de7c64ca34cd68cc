"""ingest as a function: the API, the router (`transcription.requested` → `transcribe.<model>`)
and the projector (lifecycle events → job records)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from cloudevents.core.v1.event import CloudEvent
from minio import Minio

from events import binding, catalogue, lifecycle, routing, storage, tracing
from events.models import (
    LanguageDetected,
    OutputFormat,
    TranscriptionDispatched,
    TranscriptionQueued,
    TranscriptionRequested,
)
from events.runtime.function import Runtime, Subscription
from events.settings import Settings
from functions.ingest.api import content_disposition, create_app, result_filename
from functions.ingest.jobs import JobRecord, JobStore, job_id_for, valid_job_id
from functions.ingest.uploads import BucketDrop, decode_notification
from functions.ingest.webhooks import WebhookDeliverer, WebhookRefused

log = logging.getLogger(__name__)
NAME = "ingest"


class Ingest:
    name = NAME

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runtime: Runtime | None = None
        self._jobs: JobStore | None = None
        self.store: Minio = storage.client(settings)
        self._tracer = tracing.tracer("klipnote.ingest")
        self.webhooks = WebhookDeliverer(self)
        self.uploads = BucketDrop(self)
        self._reconcile: asyncio.Task[None] | None = None
        self._app = create_app(self)

    @property
    def subscriptions(self) -> list[Subscription]:
        return [
            Subscription(catalogue.INGEST_ROUTER, self.route),
            Subscription(catalogue.INGEST_PROJECTOR, self.project),
            Subscription(catalogue.INGEST_WEBHOOKS, self.webhooks.deliver),
            Subscription(catalogue.INGEST_UPLOADS, self.uploads.handle, decode=decode_notification),
        ]

    @property
    def runtime(self) -> Runtime | None:
        return self._runtime

    @property
    def jobs(self) -> JobStore:
        assert self._jobs is not None, "ingest has not started"
        return self._jobs

    async def start(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._jobs = JobStore(await runtime.js.key_value(catalogue.JOBS_KV_BUCKET), runtime.js)
        await asyncio.to_thread(storage.ensure_buckets, self.store, self.settings)
        if self.settings.api_key is None:
            log.warning(
                "the API accepts requests without an API key (set API_KEY); "
                "bind it only to loopback (API_HOST=%s)",
                self.settings.api_host,
            )
        if self.settings.uploads_reconcile_interval_s > 0:
            self._reconcile = asyncio.create_task(self.uploads.reconcile_forever())

    async def stop(self) -> None:
        if self._reconcile is not None:
            self._reconcile.cancel()
            await asyncio.gather(self._reconcile, return_exceptions=True)

    def ready(self) -> bool:
        return self._jobs is not None

    def app(self) -> Any:
        return self._app

    async def result_links(self, record: JobRecord) -> dict[OutputFormat, str]:
        """Presigned download links of a job's results, for the API's job view and the webhook;
        each download is named after the media (`response-content-disposition`). Off the event
        loop: the client may ask the store for the bucket's region first."""
        expiry = timedelta(seconds=self.settings.result_link_expiry_s)

        def presign() -> dict[OutputFormat, str]:
            return {
                fmt: self.store.presigned_get_object(
                    ref.bucket,
                    ref.key,
                    expires=expiry,
                    response_headers={
                        "response-content-disposition": content_disposition(
                            result_filename(record.filename, record.id, fmt)
                        )
                    },
                )
                for fmt, ref in record.results.items()
            }

        return await asyncio.to_thread(presign)

    # -- entry point shared by every way in -------------------------------------------------

    async def request(self, request: TranscriptionRequested, traceparent: str | None = None) -> JobRecord:
        """Publish a job request and project it at once, so the job exists when we answer. A
        repeat (same job id) is a JetStream duplicate and answers with the existing job.

        The values of the webhook's static headers (an Authorization token, say) never enter the
        event, which every reader of the JOBS stream sees: it names the headers' target only, and
        the full target goes straight into the job record, which only ingest reads."""
        assert self._runtime is not None
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
            await self._runtime.publisher.publish(event)
        record = await self.jobs.project(event, job_id_for(event, request), full_target)
        assert record is not None
        return record

    async def admit(self, request: TranscriptionRequested) -> routing.Route:
        """The model a request goes to and why, once its webhook passes the guard (SSRF, signing
        secret); RoutingError or WebhookRefused, each with its code, when it cannot run. Requests
        from other systems pass the same checks as the API's, at the API and again at the router."""
        route = routing.choose_model(request.model, request.language, self.settings)
        if request.webhook is not None:
            await self.webhooks.check_async(request.webhook)
        return route

    # -- handlers --------------------------------------------------------------------------

    async def route(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        """A request to its model's queue; or a job a model function handed over by the language
        it detected, to the model the language rules name."""
        if binding.kind_of(event) is catalogue.LANGUAGE_DETECTED:
            async for out in self._hand_over(binding.parse_data(event, LanguageDetected)):
                yield out
            return
        request = binding.parse_data(event, TranscriptionRequested)
        job_id = _checked_job_id(event, request)
        try:
            route = await self.admit(request)
        except (routing.RoutingError, WebhookRefused) as error:
            yield lifecycle.failed(job_id, error, function=NAME, step="routing")
            return
        job = TranscriptionDispatched(
            job_id=job_id,
            media=request.media,
            model=route.model,
            language=request.language,
            formats=request.formats,
            audio_track=request.audio_track,
            routing_reason=route.reason,
        )
        # Deterministic ids: a repeated request is a JetStream duplicate, not a second job.
        yield binding.new_event(
            catalogue.DISPATCHED, job, function=NAME, subject=job_id, event_id=lifecycle.dispatched_id(job_id)
        )
        queued = TranscriptionQueued(job_id=job_id, model=route.model, routing_reason=route.reason)
        yield binding.new_event(
            catalogue.QUEUED, queued, function=NAME, subject=job_id, event_id=lifecycle.queued_id(job_id)
        )

    async def _hand_over(self, detected: LanguageDetected) -> AsyncIterator[CloudEvent]:
        """Re-dispatch a handed-over job with the language its first model heard: the target
        trusts it and detects nothing, so a job is handed over at most once (and the event ids
        make a repeated hand-over a JetStream duplicate)."""
        job_id = detected.job_id
        if not detected.handover:
            return  # the model keeps the job: the projector records what it heard
        # The store's current view: a job that ended meanwhile (failed, say) is not revived.
        record = await self.jobs.current(job_id)
        if record is None or record.finished:
            log.info("not handing over job %s: %s", job_id, "no record" if record is None else record.state)
            return
        try:
            route = routing.choose_model(None, detected.language, self.settings, detected=True)
        except routing.RoutingError as error:
            yield lifecycle.failed(job_id, error, function=NAME, step="routing")
            return
        job = TranscriptionDispatched(
            job_id=job_id,
            media=record.media,
            model=route.model,
            language=detected.language,
            language_probability=detected.probability,
            formats=record.formats,
            audio_track=record.audio_track,
            routing_reason=route.reason,
        )
        yield binding.new_event(
            catalogue.DISPATCHED,
            job,
            function=NAME,
            subject=job_id,
            event_id=lifecycle.dispatched_id(job_id, handover=True),
        )
        queued = TranscriptionQueued(
            job_id=job_id, model=route.model, routing_reason=route.reason, handed_over_from=detected.model
        )
        yield binding.new_event(
            catalogue.QUEUED,
            queued,
            function=NAME,
            subject=job_id,
            event_id=lifecycle.queued_id(job_id, handover=True),
        )

    async def project(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        kind = binding.kind_of(event)
        data = event.get_data()
        if kind is catalogue.REQUESTED:
            job_id = _checked_job_id(event, binding.parse_data(event, TranscriptionRequested))
        elif isinstance(data, dict) and isinstance(data.get("job_id"), str):
            job_id = data["job_id"]
            if not valid_job_id(job_id):
                raise binding.MalformedEvent(f"{event.get_type()}: job_id {job_id!r} is no job's id")
        else:
            raise binding.MalformedEvent(f"{event.get_type()} carries no job_id")
        await self.jobs.project(event, job_id)
        return
        yield  # an async generator that emits nothing


def _checked_job_id(event: CloudEvent, request: TranscriptionRequested) -> str:
    """The request's job id; MalformedEvent (a dead letter with the reason) when another system
    named one that cannot be a KV key or a subject token."""
    job_id = job_id_for(event, request)
    if not valid_job_id(job_id):
        raise binding.MalformedEvent(
            f"data.job_id {job_id!r} is not a job id (at most 128 of A-Z a-z 0-9 _ -); leave it out"
        )
    return job_id


def create(settings: Settings) -> Ingest:
    return Ingest(settings)
