"""The router: `transcription.requested` → `transcribe.<model>`, and a job a model function
handed over by the language it detected → the model the language rules name (events/routing.py).

Every job leaves the router the same way: `dispatched` (the work, on the model's queue) then
`queued` (for the job record), with deterministic ids so a repeated request or hand-over is a
JetStream duplicate, not a second job. Past JetStream's dedupe window a repeat is no duplicate
any more (a re-announced bucket object, a re-published CloudEvent, the same object named again):
the router reads the job's record and dispatches only a job that is still `requested`, so a
finished job never runs again and its results are never overwritten (issue 15, finding 6).

Before admission, a request's media must be in a bucket MEDIA_BUCKETS allows: the model functions
read it with the service's credentials, which reach every bucket (issue 15, finding 4)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol

from cloudevents.core.v1.event import CloudEvent

from events import binding, catalogue, lifecycle, routing
from events.errors import CodedError
from events.lifecycle import JobState
from events.models import (
    Decoding,
    Diarization,
    LanguageDetected,
    ObjectRef,
    OutputFormat,
    TranscriptionDispatched,
    TranscriptionQueued,
    TranscriptionRequested,
    WebhookTarget,
)
from events.settings import Settings, media_bucket_allowed
from functions.ingest import NAME
from functions.ingest.admission import REFUSALS, Admission
from functions.ingest.ids import checked_job_id
from functions.ingest.schema import JobRecord
from functions.ingest.webhooks.errors import WebhookRefused

log = logging.getLogger(__name__)


class CurrentJobs(Protocol):
    """How the router reads a job's record (the job store's `current`), and whether the job was
    deleted (`deleted`)."""

    async def current(self, job_id: str) -> JobRecord | None: ...

    async def deleted(self, job_id: str) -> bool: ...


class Router:
    """The handler of the router's consumer: admits requests by the one `admission` every way in
    uses, and reads a job's record in `jobs` before handing it over."""

    def __init__(self, settings: Settings, admission: Admission, jobs: CurrentJobs) -> None:
        self.settings = settings
        self.admission = admission
        self.jobs = jobs

    async def route(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        """A request to its model's queue, or a `failed` (step `routing`) with the refusal's code
        when admission refuses it; or a job a model function handed over by the language it
        detected, to the model the language rules name. MalformedEvent for a request whose
        job id cannot be one."""
        if binding.kind_of(event) is catalogue.LANGUAGE_DETECTED:
            async for out in self._hand_over(binding.parse_data(event, LanguageDetected)):
                yield out
            return
        request = binding.parse_data(event, TranscriptionRequested)
        job_id = checked_job_id(event, request)
        record = await self.jobs.current(job_id)
        if record is not None and record.state is not JobState.REQUESTED:
            # Dispatched already (a redelivery) or finished: a repeat past the dedupe window.
            log.info("not dispatching job %s again: it is %s", job_id, record.state)
            return
        if record is None and await self.jobs.deleted(job_id):
            # A deleted job's request again: a model would write its results anew.
            log.info("not dispatching job %s: it was deleted", job_id)
            return
        try:
            if not media_bucket_allowed(request.media.bucket, self.settings):
                raise MediaBucketForbidden(
                    "media_bucket_forbidden",
                    f"media may come only from buckets MEDIA_BUCKETS allows, not {request.media.bucket!r}",
                )
            route = await self.admission.admit(
                model=request.model,
                language=request.language,
                webhook=_webhook(request, record),
                decoding=request.decoding,
                diarization=request.diarization,
            )
        except (MediaBucketForbidden, *REFUSALS) as error:
            yield lifecycle.failed(job_id, error, function=NAME, step="routing")
            return
        for out in _dispatch(
            job_id,
            route,
            media=request.media,
            language=request.language,
            formats=request.formats,
            audio_track=request.audio_track,
            decoding=request.decoding,
            diarization=request.diarization,
        ):
            yield out

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
            # The job's task holds on the hand-over too: a Mandarin job to translate (or with
            # speakers) stays with a model that can translate (name speakers).
            route = routing.choose_model(
                None,
                detected.language,
                self.settings,
                detected=True,
                task=record.decoding.task,
                diarize=record.diarization is not None,
            )
        except routing.RoutingError as error:
            yield lifecycle.failed(job_id, error, function=NAME, step="routing")
            return
        for out in _dispatch(
            job_id,
            route,
            media=record.media,
            language=detected.language,
            formats=record.formats,
            audio_track=record.audio_track,
            decoding=record.decoding,
            diarization=record.diarization,
            language_probability=detected.probability,
            handed_over_from=detected.model,
        ):
            yield out


class MediaBucketForbidden(CodedError):
    """`media_bucket_forbidden`: the media names a bucket MEDIA_BUCKETS does not allow."""


def _webhook(request: TranscriptionRequested, record: JobRecord | None) -> WebhookTarget | None:
    """The webhook target the deliverer will call, for admission: the record's (a repeat never
    changes it; ingest's own requests carry only `webhook_in_record`), else the event's (another
    system's request the projector has not written yet). WebhookRefused
    `webhook_reference_unknown` for a reference no record backs."""
    target = record.webhook_target if record is not None else request.webhook
    if request.webhook_in_record and target is None:
        raise WebhookRefused(
            "webhook_reference_unknown",
            "the request says its webhook is in the job's record, but no record holds one: send "
            "`webhook` with the URL instead",
        )
    return target


def _dispatch(
    job_id: str,
    route: routing.Route,
    *,
    media: ObjectRef,
    language: str | None,
    formats: list[OutputFormat],
    audio_track: int | None,
    decoding: Decoding,
    diarization: Diarization | None,
    language_probability: float | None = None,
    handed_over_from: str | None = None,
) -> list[CloudEvent]:
    """`dispatched` and `queued` of a job going to `route.model`; a hand-over (from the model
    `handed_over_from`) has ids of its own, as it follows the first dispatch."""
    handover = handed_over_from is not None
    job = TranscriptionDispatched(
        job_id=job_id,
        media=media,
        model=route.model,
        language=language,
        language_probability=language_probability,
        formats=formats,
        audio_track=audio_track,
        routing_reason=route.reason,
        decoding=decoding,
        diarization=diarization,
    )
    queued = TranscriptionQueued(
        job_id=job_id, model=route.model, routing_reason=route.reason, handed_over_from=handed_over_from
    )
    return [
        binding.new_event(
            catalogue.DISPATCHED,
            job,
            function=NAME,
            subject=job_id,
            event_id=lifecycle.dispatched_id(job_id, handover=handover),
        ),
        binding.new_event(
            catalogue.QUEUED,
            queued,
            function=NAME,
            subject=job_id,
            event_id=lifecycle.queued_id(job_id, handover=handover),
        ),
    ]
