"""The router in process, without servers: one admission for every way in, and one place that
emits `dispatched` + `queued` (first dispatch and language hand-over)."""

from __future__ import annotations

from cloudevents.core.v1.event import CloudEvent

from events import binding, catalogue
from events.lifecycle import JobState
from events.models import LanguageDetected, ObjectRef, TranscriptionRequested, WebhookTarget
from events.settings import Settings
from functions.ingest.admission import Admission
from functions.ingest.router import Router
from functions.ingest.schema import JobRecord
from functions.ingest.uploads.drop import BucketDrop
from tests.support.paths import WEBHOOK_SECRET

MEDIA = ObjectRef(bucket="uploads", key="talk.wav", etag="e1")
SETTINGS = Settings(webhook_secret=WEBHOOK_SECRET, enabled_models=["whisperx", "belle2"])


class StandInRecords:
    """Stands in for the job store's reads (`CurrentJobs`): records in a dict."""

    def __init__(self, *records: JobRecord) -> None:
        self.records = {record.id: record for record in records}

    async def current(self, job_id: str) -> JobRecord | None:
        return self.records.get(job_id)


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

    async def list_jobs(self, state: JobState | None = None) -> list[JobRecord]:
        return []

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
