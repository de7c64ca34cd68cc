"""The router in process, without servers: one admission for every way in, and one place that
emits `dispatched` + `queued` (first dispatch and language hand-over)."""

from __future__ import annotations

from cloudevents.core.v1.event import CloudEvent

from events import binding, catalogue
from events.lifecycle import JobState
from events.models import LanguageDetected, ObjectRef, TranscriptionRequested, WebhookTarget
from events.settings import Settings
from functions.ingest.admission import Admission
from functions.ingest.index import Version
from functions.ingest.router import Router
from functions.ingest.schema import JobRecord
from functions.ingest.uploads.drop import BucketDrop
from tests.support.paths import WEBHOOK_SECRET
from tests.support.records import StandInRecords

MEDIA = ObjectRef(bucket="uploads", key="talk.wav", etag="e1")
SETTINGS = Settings(webhook_secret=WEBHOOK_SECRET, enabled_models=["whisperx", "belle2"])


def router(*records: JobRecord, settings: Settings = SETTINGS) -> Router:
    return Router(settings, Admission.from_settings(settings), StandInRecords(*records))


async def routed(handler: Router, event: CloudEvent) -> list[CloudEvent]:
    return [out async for out in handler.route(event)]


def requested(**data: object) -> CloudEvent:
    request = TranscriptionRequested.model_validate({"job_id": "job1", "media": MEDIA, **data})
    return binding.new_event(catalogue.REQUESTED, request, function="test")


async def test_a_request_is_dispatched_then_queued_with_deterministic_ids() -> None:
    out = await routed(router(), requested(language="zh"))

    assert [(event.get_type(), event.get_id()) for event in out] == [
        (catalogue.DISPATCHED.type, "job1:dispatched"),
        (catalogue.QUEUED.type, "job1:queued"),
    ]
    assert out[0].get_data()["model"] == "belle2" and out[0].get_data()["routing_reason"] == "language rule"


async def test_a_hand_over_is_dispatched_then_queued_with_ids_of_its_own() -> None:
    record = JobRecord(id="job1", state=JobState.TRANSCRIBING, media=MEDIA, model="whisperx")
    detected = LanguageDetected(
        job_id="job1", run_id="r1", model="whisperx", language="zh", probability=0.97,
        speech_seconds=12.0, windows=1, handover=True,
    )  # fmt: skip
    event = binding.new_event(catalogue.LANGUAGE_DETECTED, detected, function="whisperx")

    out = await routed(router(record), event)

    assert [(event.get_type(), event.get_id()) for event in out] == [
        (catalogue.DISPATCHED.type, "job1:dispatched:handover"),
        (catalogue.QUEUED.type, "job1:queued:handover"),
    ]
    assert out[0].get_data()["model"] == "belle2" and out[0].get_data()["language"] == "zh"
    assert out[1].get_data()["handed_over_from"] == "whisperx"


async def test_the_router_refuses_what_the_api_refuses_with_the_same_codes() -> None:
    cases = [
        (requested(model="no-such-model"), "model_unknown"),
        (requested(language="english!"), "language_invalid"),
        (requested(webhook=WebhookTarget(url="http://169.254.169.254/latest")), "webhook_forbidden"),
    ]
    for event, code in cases:
        (failed,) = await routed(router(), event)
        assert failed.get_type() == catalogue.FAILED.type and failed.get_id() == "job1:failed:routing"
        assert failed.get_data()["code"] == code


class StandInIntake:
    """Stands in for the gateway (an `Intake`): keeps what is submitted."""

    def __init__(self) -> None:
        self.submitted: list[TranscriptionRequested] = []

    async def get_job(self, job_id: str) -> JobRecord | None:
        return None

    async def known(self, job_id: str) -> bool:
        return False

    async def referenced_media(self) -> dict[Version, float]:
        return {}

    async def submit(self, request: TranscriptionRequested, traceparent: str | None = None) -> JobRecord:
        self.submitted.append(request)
        return JobRecord(id=request.job_id or "", state=JobState.REQUESTED, media=request.media)


async def test_a_dropped_file_with_a_language_that_is_no_code_fails_at_routing() -> None:
    """The bucket drop's requests pass the same admission as the API's (before, only the API
    checked the language's form; a dropped file's job failed later, at its model)."""
    intake = StandInIntake()
    drop = BucketDrop(SETTINGS.uploads_bucket, intake)
    await drop.request_object(
        "talk.wav", "e1", size=10, content_type="audio/wav",
        metadata={"X-Amz-Meta-Language": "English!"}, via="notification",
    )  # fmt: skip
    (request,) = intake.submitted
    event = binding.new_event(catalogue.REQUESTED, request, function="ingest")

    (failed,) = await routed(router(), event)

    assert failed.get_data()["code"] == "language_invalid"


# -- trust boundaries (issue 15) ----------------------------------------------------------------------


async def test_a_job_past_requested_is_never_dispatched_again() -> None:
    """A repeated request past JetStream's dedupe window (a re-announced object, a re-published
    CloudEvent, the same object named again) reaches the router as a new message: before, it
    re-ran a finished job and overwrote its results."""
    for state in (JobState.COMPLETED, JobState.FAILED, JobState.QUEUED, JobState.TRANSCRIBING):
        record = JobRecord(id="job1", state=state, media=MEDIA, model="whisperx")
        assert await routed(router(record), requested(language="zh")) == [], state
    # ... while a job still `requested` (its record written first, by the gateway) goes on.
    waiting = JobRecord(id="job1", state=JobState.REQUESTED, media=MEDIA)
    out = await routed(router(waiting), requested(language="zh"))
    assert [event.get_type() for event in out] == [catalogue.DISPATCHED.type, catalogue.QUEUED.type]


async def test_media_from_a_bucket_media_buckets_does_not_allow_fails_at_routing() -> None:
    """The model functions read media with the service's credentials, which reach every bucket:
    before, a request naming `results` (other jobs' transcripts) was fetched and transcribed."""
    for bucket in ("results", "some-other-bucket"):
        media = ObjectRef(bucket=bucket, key="x.wav")
        (failed,) = await routed(router(), requested(media=media))
        assert failed.get_type() == catalogue.FAILED.type
        assert failed.get_data()["code"] == "media_bucket_forbidden"
        assert "MEDIA_BUCKETS" in failed.get_data()["message"]
    archive = SETTINGS.model_copy(update={"media_buckets": ["uploads", "archive"]})
    out = await routed(router(settings=archive), requested(media=ObjectRef(bucket="archive", key="x.wav")))
    assert out[0].get_type() == catalogue.DISPATCHED.type


async def test_a_webhook_kept_in_the_job_record_is_admitted_from_the_record() -> None:
    """Ingest's own requests carry `webhook_in_record` instead of the URL (tokens live in URLs):
    the router admits the record's target, and a reference no record backs fails."""
    reference = requested(webhook_in_record=True)
    forbidden = WebhookTarget(url="http://169.254.169.254/latest", headers={"Authorization": "Bearer t"})
    record = JobRecord(id="job1", state=JobState.REQUESTED, media=MEDIA, webhook_target=forbidden)
    (failed,) = await routed(router(record), reference)
    assert failed.get_data()["code"] == "webhook_forbidden"

    for orphan in (router(), router(JobRecord(id="job1", state=JobState.REQUESTED, media=MEDIA))):
        (failed,) = await routed(orphan, reference)
        assert failed.get_data()["code"] == "webhook_reference_unknown"

    public = WebhookTarget(url="https://93.184.215.14/hook?token=t", headers={"Authorization": "Bearer t"})
    record = JobRecord(id="job1", state=JobState.REQUESTED, media=MEDIA, webhook_target=public)
    out = await routed(router(record), reference)
    assert out[0].get_type() == catalogue.DISPATCHED.type
