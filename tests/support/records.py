"""Stand-ins for ingest's job store, and requests routed through the router in process (both
models enabled), for the routing tests of every option."""

from __future__ import annotations

from cloudevents.core.v1.event import CloudEvent

from events import binding, catalogue
from events.models import ObjectRef, TranscriptionRequested
from events.settings import Settings
from functions.ingest.admission import Admission
from functions.ingest.router import Router
from functions.ingest.schema import JobRecord
from tests.support.paths import WEBHOOK_SECRET

MEDIA = ObjectRef(bucket="uploads", key="talk.wav", etag="e1")
BOTH = Settings(webhook_secret=WEBHOOK_SECRET, enabled_models=["whisperx", "belle2"])


class StandInRecords:
    """Stands in for the job store's reads (`CurrentJobs`): records in a dict."""

    def __init__(self, *records: JobRecord) -> None:
        self.records = {record.id: record for record in records}

    async def current(self, job_id: str) -> JobRecord | None:
        return self.records.get(job_id)

    async def deleted(self, job_id: str) -> bool:
        return False  # no job here is deleted (test_delete_retention.py deletes them)


async def routed(event: CloudEvent, *records: JobRecord) -> list[CloudEvent]:
    """What the router makes of `event` with both models enabled and `records` stored."""
    router = Router(BOTH, Admission.from_settings(BOTH), StandInRecords(*records))
    return [out async for out in router.route(event)]


def requested(**data: object) -> CloudEvent:
    """A `transcription.requested` of job `job1` for MEDIA, with `data` on its request."""
    request = TranscriptionRequested.model_validate({"job_id": "job1", "media": MEDIA, **data})
    return binding.new_event(catalogue.REQUESTED, request, function="test")
