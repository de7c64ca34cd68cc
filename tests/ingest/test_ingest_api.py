"""The ingest API and the CloudEvents intake on the running stack: uploads and references,
idempotency, options, listing, live events, presigned links, requests from other systems (over
HTTP and over NATS), and each bad input answered with a clear error."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import srt
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig

from events import binding, catalogue
from events.bus import Publisher
from events.lifecycle import JobState
from events.models import ObjectRef, TranscriptionRequested
from events.runtime.function import Runtime
from events.settings import Settings
from functions.ingest.ids import job_id_for
from functions.ingest.jobs import JobStore
from infra.embedded.stack import EmbeddedStack
from tests.support.jobs import finished_job, put, submit
from tests.support.paths import AUDIO, reference
from tests.support.quality import wer
from tests.support.samples import sample


def problem_code(response: httpx.Response) -> str:
    code: str = response.json()["detail"]["code"]
    return code


async def test_a_stored_object_is_transcribed_by_reference_once(
    api: httpx.AsyncClient, js: JetStreamContext, stack: EmbeddedStack
) -> None:
    key = f"refs/{uuid.uuid4().hex}/jfk speech ü.flac"
    put(stack, key, (AUDIO / "jfk.flac").read_bytes())
    form = {"media": f"s3://{stack.settings.uploads_bucket}/{key}", "formats": "srt,txt"}

    first = await api.post("/v1/jobs", data=form)
    again = await api.post("/v1/jobs", data=form)

    assert first.status_code == again.status_code == 202, first.text
    job_id = first.json()["id"]
    assert again.json()["id"] == job_id  # one object, one job
    job = await finished_job(api, js, job_id)
    assert job["state"] == "completed", job
    assert set(job["results"]) == {"srt", "txt"}
    assert job["filename"] == "jfk speech ü.flac"
    assert wer(reference("jfk"), (await api.get(f"/v1/jobs/{job_id}/transcript.txt")).text) <= 0.10


async def test_an_idempotency_key_makes_a_retried_upload_the_same_job(api: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    answers = []
    for _ in range(2):
        with open(AUDIO / "librispeech-1995-1837-0001.wav", "rb") as body:
            answers.append(await api.post("/v1/jobs", files={"file": ("l.wav", body)}, headers=key))

    assert [answer.status_code for answer in answers] == [202, 202]
    assert answers[0].json()["id"] == answers[1].json()["id"]


async def test_options_are_kept_and_metadata_is_echoed(api: httpx.AsyncClient, js: JetStreamContext) -> None:
    with open(AUDIO / "jfk.flac", "rb") as body:
        response = await api.post(
            "/v1/jobs",
            files={"file": ("../../etc/passwd jfk.flac", body)},
            data={"language": "en", "formats": "json,vtt", "metadata": json.dumps({"ticket": "KN-7"})},
        )
    assert response.status_code == 202, response.text
    job = await finished_job(api, js, response.json()["id"])

    assert job["state"] == "completed", job
    assert job["filename"] == "passwd jfk.flac"  # the last component, nothing of the path
    assert job["media"]["key"].startswith("klipnote-api/")
    assert job["metadata"] == {"ticket": "KN-7"}
    assert set(job["results"]) == {"json", "vtt"}
    links = job["links"]
    assert set(links) == {"json", "vtt"}
    async with httpx.AsyncClient() as plain:  # a presigned link needs no API key
        vtt = await plain.get(links["vtt"])
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")


async def test_jobs_are_listed_newest_first_and_filtered_by_state(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    job_id = await submit(api, AUDIO / "jfk.flac")
    await finished_job(api, js, job_id)

    everything = (await api.get("/v1/jobs", params={"limit": 500})).json()
    completed = (await api.get("/v1/jobs", params={"state": "completed", "limit": 1})).json()

    assert everything["jobs"][0]["id"] == job_id
    assert everything["total"] >= 1
    assert completed["limit"] == 1 and len(completed["jobs"]) == 1
    assert completed["jobs"][0]["state"] == "completed"
    assert all("webhook_target" not in job for job in everything["jobs"])
    assert (await api.get("/v1/jobs", params={"state": "nonsense"})).status_code == 422


async def test_a_job_is_followed_live_until_it_ends(api: httpx.AsyncClient) -> None:
    job_id = await submit(api, AUDIO / "jfk.flac")
    types = []
    async with api.stream("GET", f"/v1/jobs/{job_id}/events", timeout=180) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                assert event["data"]["job_id"] == job_id
                types.append(event["type"])

    assert types[0] == catalogue.REQUESTED.type
    assert catalogue.PROGRESS.type in types
    assert types[-1] == catalogue.COMPLETED.type
    # What a client does next: the transcript is there though the projector may not have caught up.
    response = await api.get(f"/v1/jobs/{job_id}/transcript.srt")
    assert response.status_code == 200, response.text
    assert wer(reference("jfk"), " ".join(cue.content for cue in srt.parse(response.text))) <= 0.10


@pytest.mark.parametrize(
    ("end", "state"), [(catalogue.COMPLETED, JobState.COMPLETED), (catalogue.FAILED, JobState.FAILED)]
)
async def test_a_read_catches_the_record_up_with_the_jobs_end_event(
    js: JetStreamContext, end: catalogue.EventKind, state: JobState
) -> None:
    """A store over a KV bucket no projector writes stands in for a projector a moment behind: the
    end event is in the JOBS stream, the record still says `requested`."""
    bucket = f"jobs-lagging-{uuid.uuid4().hex[:8]}"
    settings = Settings()
    runtime = Runtime(settings, Publisher(js, settings), js)
    store = JobStore(await js.create_key_value(KeyValueConfig(bucket=bucket, history=1)), runtime)
    job_id = uuid.uuid4().hex
    try:
        request = TranscriptionRequested(job_id=job_id, media=ObjectRef(bucket="uploads", key=job_id))
        await store.project(binding.new_event(catalogue.REQUESTED, request, function="test"), job_id)
        data = sample(end).model_copy(update={"job_id": job_id})
        await Publisher(js, Settings()).publish(binding.new_event(end, data, function="test"))

        before = await store.get(job_id)
        assert before is not None and before.state == JobState.REQUESTED
        record = await store.current(job_id)
        assert record is not None and record.state == state
        assert (await store.get(job_id)) == record  # written back, once, as the projector would
        assert await store.current(f"no-{job_id}") is None
    finally:
        await store.close()  # its index would read a deleted bucket for ever
        await js.delete_key_value(bucket)


async def publish_as_another_system(js: JetStreamContext, event: Any) -> None:
    """As another system would: it names no job, so it publishes under a token of its own."""
    headers, body = binding.encode(event, "binary")
    headers["Nats-Msg-Id"] = event.get_id()
    await js.publish(catalogue.REQUESTED.subject(f"crm-{event.get_id()}"), body, headers=headers)


def other_systems_job(event: Any) -> str:
    return job_id_for(event, TranscriptionRequested.model_validate(event.get_data()))


def requested_event(media: ObjectRef, event_id: str, **data: Any) -> Any:
    request = TranscriptionRequested(media=media, **data)
    return binding.new_event(catalogue.REQUESTED, request, function="crm", event_id=event_id)


@pytest.mark.parametrize("mode", ["structured", "binary"])
async def test_a_requested_cloudevent_posted_over_http_makes_one_job(
    api: httpx.AsyncClient, js: JetStreamContext, stack: EmbeddedStack, mode: str
) -> None:
    key = f"crm/{uuid.uuid4().hex}.wav"
    put(stack, key, (AUDIO / "librispeech-1995-1837-0001.wav").read_bytes())
    event = requested_event(ObjectRef(bucket="uploads", key=key), uuid.uuid4().hex, language="en")
    headers, body = binding.encode(event, mode)  # type: ignore[arg-type]

    first = await api.post("/v1/events", content=body, headers=headers)
    again = await api.post("/v1/events", content=body, headers=headers)

    assert first.status_code == 202, first.text
    assert again.json()["id"] == first.json()["id"]
    job = await finished_job(api, js, first.json()["id"])
    assert job["state"] == "completed", job
    text = (await api.get(f"/v1/jobs/{job['id']}/transcript.txt")).text
    assert wer(reference("librispeech-1995-1837-0001"), text) <= 0.10


async def test_a_requested_cloudevent_published_on_nats_by_another_system_makes_a_job(
    api: httpx.AsyncClient, js: JetStreamContext, stack: EmbeddedStack
) -> None:
    key = f"crm/{uuid.uuid4().hex}.flac"
    put(stack, key, (AUDIO / "jfk.flac").read_bytes())
    event = requested_event(ObjectRef(bucket="uploads", key=key), uuid.uuid4().hex, metadata={"crm": "1"})
    await publish_as_another_system(js, event)
    await publish_as_another_system(js, event)

    job = await finished_job(api, js, other_systems_job(event))
    assert job["state"] == "completed", job
    assert job["metadata"] == {"crm": "1"}


async def test_the_requested_schema_is_published_with_the_api_docs(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/v1/schemas/transcription-requested.json")).json()
    openapi = (await api.get("/openapi.json")).json()

    assert schema["title"] == "TranscriptionRequested" and "media" in schema["required"]
    assert "/v1/schemas/transcription-requested.json" in openapi["paths"]
    assert "/v1/events" in openapi["paths"] and "/v1/jobs" in openapi["paths"]


# -- bad input: a clear error, nothing lost, ingest keeps serving ------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "Basic a2xpcG5vdGU6eA=="])
async def test_without_the_api_key_every_route_is_refused(
    stack: EmbeddedStack, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers) as stranger:
        answers = [
            await stranger.get("/v1/jobs"),
            await stranger.get("/v1/jobs/anything"),
            await stranger.post("/v1/jobs", data={"media": "s3://uploads/x.wav"}),
            await stranger.post("/v1/events", content=b"{}"),
        ]
        probe = await stranger.get("/health/readiness")  # the kubelet's probe needs no key

    assert [answer.status_code for answer in answers] == [401] * 4
    assert probe.status_code == 200


async def jfk_post(api: httpx.AsyncClient, **form: str) -> httpx.Response:
    with open(AUDIO / "jfk.flac", "rb") as body:
        return await api.post("/v1/jobs", files={"file": ("jfk.flac", body)}, data=form)


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"model": "belle2"}, 422, "model_disabled"),
        ({"model": "no-such-model"}, 422, "model_unknown"),
        ({"language": "english!"}, 422, "language_invalid"),
        ({"formats": "srt,docx"}, 422, "formats_invalid"),
        ({"metadata": "{not json"}, 422, "metadata_invalid"),
        ({"metadata": '{"n": 1}'}, 422, "metadata_invalid"),
        ({"webhook_url": "ftp://example.com/hook"}, 422, "webhook_invalid"),
        ({"webhook_url": "http://169.254.169.254/latest/meta-data"}, 422, "webhook_forbidden"),
        ({"webhook_url": "http://10.0.0.8/hook"}, 422, "webhook_forbidden"),
        ({"webhook_url": "http://[::1]:8080/hook"}, 422, "webhook_forbidden"),
        ({"webhook_url": "https://example.com/h", "webhook_header": "no colon"}, 422, "webhook_invalid"),
    ],
    ids=[
        "disabled-model", "unknown-model", "bad-language", "bad-format", "metadata-not-json",
        "metadata-not-strings", "webhook-not-http", "webhook-metadata-address", "webhook-private-range",
        "webhook-loopback", "webhook-header-malformed",
    ],
)  # fmt: skip
async def test_bad_options_are_refused_with_a_clear_code(
    api: httpx.AsyncClient, form: dict[str, str], status: int, code: str
) -> None:
    response = await jfk_post(api, **form)

    assert response.status_code == status, response.text
    assert response.json()["detail"]["message"]
    assert problem_code(response) == code


async def test_an_upload_over_the_limit_is_refused(api: httpx.AsyncClient, stack: EmbeddedStack) -> None:
    too_big = b"\0" * (stack.settings.max_upload_bytes + 1)
    response = await api.post("/v1/jobs", files={"file": ("big.wav", too_big)})

    assert response.status_code == 413 and problem_code(response) == "media_too_large"


@pytest.mark.parametrize(
    ("media", "code"),
    [
        ("s3://uploads/refs/never-stored.wav", "media_missing"),
        ("s3://no-such-bucket/x.wav", "media_bucket_forbidden"),  # only MEDIA_BUCKETS are read
        ("http://example.com/x.wav", "media_invalid"),
        ("s3://uploads/", "media_invalid"),
    ],
)
async def test_bad_references_are_refused(api: httpx.AsyncClient, media: str, code: str) -> None:
    response = await api.post("/v1/jobs", data={"media": media})

    assert response.status_code == 422 and problem_code(response) == code


async def test_neither_or_both_media_are_refused(api: httpx.AsyncClient) -> None:
    neither = await api.post("/v1/jobs", data={"language": "en"})
    with open(AUDIO / "jfk.flac", "rb") as body:
        both = await api.post(
            "/v1/jobs", files={"file": ("jfk.flac", body)}, data={"media": "s3://uploads/x"}
        )

    assert problem_code(neither) == problem_code(both) == "media_missing"


async def test_a_multipart_body_that_cannot_be_parsed_is_refused_in_the_problem_shape(
    api: httpx.AsyncClient,
) -> None:
    """Starlette refuses it before any route runs, with a bare string; schemathesis found the
    answer broke the API's documented error shape."""
    boundary = "91344f497b8a480dd796d4c8ff89cb81"
    body = f"--{boundary}\r\n[{{'x': None}}]--{boundary}--\r\n".encode()
    response = await api.post(
        "/v1/jobs", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )

    assert response.status_code == 400
    assert response.json()["detail"] == {"code": "bad_request", "message": "Invalid multipart data."}
    unknown = await api.get("/v1/no-such-route")
    assert unknown.status_code == 404 and problem_code(unknown) == "not_found"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"content-type": "application/cloudevents+json"}, b"{not json"),
        ({"content-type": "application/cloudevents+json"}, json.dumps({"specversion": "1.0"}).encode()),
        (
            {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/x", "ce-type": catalogue.COMPLETED.type,
             "content-type": "application/json"},
            b"{}",
        ),
        (
            {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/x", "ce-type": catalogue.REQUESTED.type,
             "content-type": "application/json"},
            json.dumps({"media": {"bucket": "uploads"}}).encode(),
        ),
    ],
    ids=["bad-json", "missing-attributes", "wrong-type", "data-not-matching-schema"],
)  # fmt: skip
async def test_malformed_cloudevents_over_http_are_refused_with_a_reason(
    api: httpx.AsyncClient, headers: dict[str, str], body: bytes
) -> None:
    response = await api.post("/v1/events", content=body, headers=headers)

    assert response.status_code == 400
    assert problem_code(response) == "malformed_event" and response.json()["detail"]["message"]


async def test_a_request_from_another_system_for_a_disabled_model_fails_clearly(
    api: httpx.AsyncClient, js: JetStreamContext, stack: EmbeddedStack
) -> None:
    event = requested_event(ObjectRef(bucket="uploads", key="crm/x.wav"), uuid.uuid4().hex, model="belle2")
    await publish_as_another_system(js, event)  # over NATS: no one to answer 422

    job = await finished_job(api, js, other_systems_job(event))
    assert job["state"] == "failed" and job["error"]["code"] == "model_disabled"


async def test_every_way_in_refuses_a_language_that_is_no_code(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    """One admission for every way in: the form, a CloudEvent over HTTP (422) and one on NATS (the
    job fails at routing) refuse `english!` alike."""
    media = ObjectRef(bucket="uploads", key="crm/x.wav")
    over_http = requested_event(media, uuid.uuid4().hex, language="english!")
    headers, body = binding.encode(over_http, "structured")
    response = await api.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 422 and problem_code(response) == "language_invalid"

    on_nats = requested_event(media, uuid.uuid4().hex, language="english!")
    await publish_as_another_system(js, on_nats)
    job = await finished_job(api, js, other_systems_job(on_nats))
    assert job["state"] == "failed" and job["error"]["code"] == "language_invalid"


async def test_ingest_keeps_serving_after_bad_input(api: httpx.AsyncClient, js: JetStreamContext) -> None:
    job = await finished_job(api, js, await submit(api, Path(AUDIO / "jfk.flac")))
    assert job["state"] == "completed"
