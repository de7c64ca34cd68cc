"""The thin slice through the running stack: real upload, real routing, real whisperx on
whisper-base, real optimize, results fetched over the API contract other tools rely on."""

from __future__ import annotations

import json

import httpx
import srt
from nats.js import JetStreamContext

from events import catalogue
from tests.support.jobs import job_events, submit, wait_for_job_end, wait_for_state
from tests.support.paths import AUDIO, reference
from tests.support.quality import wer


async def test_jfk_clip_is_transcribed_end_to_end_with_low_wer(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    job_id = await submit(api, AUDIO / "jfk.flac")

    end = await wait_for_job_end(js, job_id)
    assert end.get_type() == catalogue.COMPLETED.type, end.get_data()

    await wait_for_state(js, job_id, {"completed"})
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert job["state"] == "completed"
    assert job["model"] == "whisperx"
    assert job["detected_language"] == "en"

    srt_text = (await api.get(f"/v1/jobs/{job_id}/transcript.srt")).text
    cues = list(srt.parse(srt_text))
    assert cues and all(cue.start < cue.end for cue in cues)
    transcript = " ".join(cue.content for cue in cues)
    assert wer(reference("jfk"), transcript) <= 0.10, transcript

    document = json.loads((await api.get(f"/v1/jobs/{job_id}/transcript.json")).content)
    assert document["job_id"] == job_id
    assert " ".join(cue["text"] for cue in document["cues"]) == transcript


async def test_job_lifecycle_is_recorded_in_order(api: httpx.AsyncClient, js: JetStreamContext) -> None:
    job_id = await submit(api, AUDIO / "librispeech-1995-1837-0001.wav", language="en")
    events = await job_events(js, job_id, {catalogue.COMPLETED.type, catalogue.FAILED.type}, 180)
    types = [event.get_type() for event in events]
    order = [
        catalogue.REQUESTED.type,
        catalogue.QUEUED.type,
        catalogue.TRANSCRIBED.type,
        catalogue.COMPLETED.type,
    ]
    assert [t for t in types if t in order] == order
    assert catalogue.PROGRESS.type in types
    # one trace per job: every hop continues the trace the request started
    trace_ids = {event.get_extension("traceparent").split("-")[1] for event in events}
    assert len(trace_ids) == 1

    await wait_for_state(js, job_id, {"completed"})
    text = (await api.get(f"/v1/jobs/{job_id}/transcript.txt")).text
    assert wer(reference("librispeech-1995-1837-0001"), text) <= 0.10, text


async def test_unknown_model_is_refused_with_422(api: httpx.AsyncClient) -> None:
    with open(AUDIO / "jfk.flac", "rb") as body:
        response = await api.post(
            "/v1/jobs", files={"file": ("jfk.flac", body)}, data={"model": "no-such-model"}
        )
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "model_unknown"


async def test_empty_upload_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/jobs", files={"file": ("empty.wav", b"")})
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "media_empty"


async def test_media_that_is_not_audio_fails_the_job_with_a_clear_code(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    response = await api.post("/v1/jobs", files={"file": ("notes.wav", b"this is not audio" * 100)})
    job_id = response.json()["id"]
    end = await wait_for_job_end(js, job_id, timeout=60)
    assert end.get_type() == catalogue.FAILED.type
    assert end.get_data()["code"] == "media_unreadable"
    job = await wait_for_state(js, job_id, {"completed", "failed"})
    assert job["state"] == "failed" and job["error"]["code"] == "media_unreadable"


async def test_unknown_job_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/jobs/does-not-exist")
    assert response.status_code == 404
