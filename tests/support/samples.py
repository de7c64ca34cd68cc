"""A valid instance of every event's data, for round-trip and host tests."""

from __future__ import annotations

from events import catalogue, models
from events.catalogue import EventKind

MEDIA = models.ObjectRef(bucket="uploads", key="in/Meeting 01 ü.wav", etag="abc", size=4004)


def sample(kind: EventKind) -> models.EventData:
    job = "0f8fad5bd9cb469fa16570867728950e"
    samples: dict[str, models.EventData] = {
        catalogue.REQUESTED.type: models.TranscriptionRequested(
            job_id=job,
            media=MEDIA,
            language="de",
            metadata={"ticket": "42"},
            webhook=models.WebhookTarget(url="https://hooks.example.com/klipnote", headers={"X-Token": "t"}),
        ),
        catalogue.DISPATCHED.type: models.TranscriptionDispatched(job_id=job, media=MEDIA, model="whisperx"),
        catalogue.QUEUED.type: models.TranscriptionQueued(job_id=job, model="whisperx"),
        catalogue.LANGUAGE_DETECTED.type: models.LanguageDetected(
            job_id=job,
            run_id="r1",
            model="whisperx",
            language="zh",
            probability=0.98,
            speech_seconds=12.5,
            windows=1,
            handover=True,
        ),
        catalogue.SEGMENT.type: models.SegmentTranscribed(
            job_id=job,
            run_id="r1",
            sequence=3,
            start=1.5,
            end=3.25,
            text="你好, world",
            words=[models.Word(word="你好", start=1.5, end=2.0, score=0.9)],
        ),
        catalogue.PROGRESS.type: models.TranscriptionProgress(
            job_id=job, run_id="r1", model="whisperx", stage="transcribing", fraction=0.5
        ),
        catalogue.TRANSCRIBED.type: models.TranscriptionTranscribed(
            job_id=job, run_id="r1", model="whisperx", language="en", segment_count=2, audio_seconds=11.0
        ),
        catalogue.COMPLETED.type: models.TranscriptionCompleted(
            job_id=job, run_id="r1", model="whisperx", results={"srt": MEDIA}, stats={"cues": 2}
        ),
        catalogue.FAILED.type: models.TranscriptionFailed(
            job_id=job, code="media_unreadable", message="could not decode", function="whisperx"
        ),
        catalogue.CANCELED.type: models.TranscriptionCanceled(job_id=job),
        catalogue.WEBHOOK.type: models.WebhookAttempted(
            job_id=job,
            webhook_id="msg_2b8a",
            attempt=2,
            outcome="retrying",
            status_code=503,
            next_attempt_in_s=300,
        ),
        catalogue.DEAD_LETTER.type: models.DeadLetter(
            consumer="optimize", subject="transcription.transcribed.x", reason="bad", deliveries=1, body="{"
        ),
    }
    return samples[kind.type]
