"""Bad input and secrets: the rows of docs/bad-input.md that no other test pins, the check that
keeps that table true (every test it names exists), and the proof that a webhook's header values
and the API key never reach an event or a log. Runs on the session stack (real nats-server,
SeaweedFS and functions)."""

from __future__ import annotations

import ast
import io
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from events import binding, catalogue, storage
from events.lifecycle import JobState
from events.models import DeadLetter, ObjectRef, TranscriptionRequested, WebhookTarget
from functions.ingest.api.media import not_media
from functions.ingest.ids import job_id_for
from functions.ingest.jobs import apply
from functions.ingest.schema import JobRecord
from infra.embedded.stack import EmbeddedStack
from tests.support.jobs import messages_until, put, wait_for_job_end
from tests.support.paths import API_KEY, ROOT

GARBAGE = b"these bytes are no audio or video at all\n" * 40
SECRET_HEADER_VALUE = "Bearer hdr-s3cret-" + uuid.uuid4().hex


def problem(response: httpx.Response) -> tuple[int, str]:
    detail = response.json()["detail"]
    assert detail["message"], response.text
    return response.status_code, detail["code"]


def requested_headers(**data: Any) -> tuple[dict[str, str], bytes]:
    """A binary-mode `transcription.requested` CloudEvent with raw data (no model validation)."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": uuid.uuid4().hex,
        "ce-source": "/crm",
        "ce-type": catalogue.REQUESTED.type,
        "content-type": "application/json",
    }
    body = {"media": {"bucket": "uploads", "key": f"crm/{uuid.uuid4().hex}.wav"}, **data}
    return headers, json.dumps(body).encode()


# -- the API's options and media ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"metadata": json.dumps({"k": "v" * 5000})}, "metadata_invalid"),
        ({"metadata": "[" * 1500 + "]" * 1500}, "metadata_invalid"),  # was a 500 (RecursionError)
        ({"webhook_url": "https://example.com/h", "webhook_header": "X-A: b\r\nX-Evil: 1"},
         "webhook_invalid"),
        ({"webhook_url": "https://example.com/h", "webhook_header": "Bad Name: v"}, "webhook_invalid"),
        ({"webhook_url": "http://a..b/hook"}, "webhook_invalid"),  # was a 500 (IDNA UnicodeError)
        ({"webhook_url": "http://" + "a" * 64 + ".example/hook"}, "webhook_invalid"),  # ditto
        ({"audio_track": "-1"}, "request_invalid"),
        ({"audio_track": "second"}, "request_invalid"),
    ],
    ids=["metadata-too-large", "metadata-too-deep", "header-crlf", "header-name", "host-empty-label",
         "host-label-too-long", "audio-track-negative", "audio-track-not-a-number"],
)  # fmt: skip
async def test_more_bad_options_are_refused_with_a_clear_code(
    api: httpx.AsyncClient, form: dict[str, str], code: str
) -> None:
    # Options are checked before the media: the reference need not exist.
    response = await api.post("/v1/jobs", data={**form, "media": "s3://uploads/never/there.wav"})
    assert problem(response) == (422, code)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/pdf", "image/png", "application/zip", "application/json"]
)
async def test_an_upload_declared_as_no_media_is_refused_415(
    api: httpx.AsyncClient, content_type: str
) -> None:
    response = await api.post("/v1/jobs", files={"file": ("talk.bin", GARBAGE, content_type)})
    assert problem(response) == (415, "media_type_unsupported")


def test_only_types_that_are_clearly_no_media_are_refused() -> None:
    refused = [
        "text/html; charset=utf-8",
        "IMAGE/JPEG",
        "application/vnd.ms-excel",
        "font/woff2",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ]
    accepted = [None, "", "application/octet-stream", "audio/flac", "video/mp4", "application/ogg",
                "application/mp4", "application/x-matroska", "application/x-never-heard-of",
                "garbage"]  # fmt: skip
    assert all(not_media(value) for value in refused)
    assert not any(not_media(value) for value in accepted)


@pytest.mark.parametrize("content_type", ["application/octet-stream", "application/x-never-heard-of"])
async def test_an_undeclared_type_is_left_to_the_decoder(
    api: httpx.AsyncClient, js: JetStreamContext, content_type: str
) -> None:
    response = await api.post("/v1/jobs", files={"file": ("talk", GARBAGE, content_type)})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    end = await wait_for_job_end(js, job_id, timeout=120)
    assert end.get_type() == catalogue.FAILED.type and end.get_data()["code"] == "media_unreadable"
    # ... and a failed job has no transcript to give
    transcript = await api.get(f"/v1/jobs/{job_id}/transcript.srt")
    assert problem(transcript) == (409, "job_not_completed")


@pytest.mark.parametrize(
    ("media", "code"),
    [
        # A bucket no store could have is no bucket MEDIA_BUCKETS allows: refused before the client.
        ("s3://up..loads/x.wav", "media_bucket_forbidden"),
        ("s3://" + "b" * 64 + "/x.wav", "media_bucket_forbidden"),
        ("s3://uploads/a/../b.wav", "media_invalid"),
    ],
)
async def test_a_reference_the_store_client_refuses_is_invalid(
    api: httpx.AsyncClient, media: str, code: str
) -> None:
    # Each was a 500: the minio client raises ValueError before any request.
    assert problem(await api.post("/v1/jobs", data={"media": media})) == (422, code)


async def test_an_idempotency_key_over_255_characters_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/jobs", data={"media": "s3://uploads/x.wav"}, headers={"Idempotency-Key": "k" * 256}
    )
    assert problem(response) == (422, "request_invalid")


@pytest.mark.parametrize("job_id", [uuid.uuid4().hex, "a b*", "x.y", "a:b", ">"])
async def test_unknown_and_impossible_job_ids_are_not_found(api: httpx.AsyncClient, job_id: str) -> None:
    # A name no KV key can have ("a b*", "x.y") was a 500 (InvalidKeyError).
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/transcript.srt"):
        assert problem(await api.get(path)) == (404, "job_not_found"), path


@pytest.mark.parametrize(
    ("path", "params"),
    [("/v1/jobs/abc/transcript.docx", {}), ("/v1/jobs", {"limit": "0"}), ("/v1/jobs", {"limit": "501"}),
     ("/v1/jobs", {"offset": "-1"}), ("/v1/jobs", {"state": "nonsense"})],
    ids=["format-unknown", "limit-0", "limit-501", "offset-negative", "state-unknown"],
)  # fmt: skip
async def test_bad_path_and_query_parameters_are_refused_as_problems(
    api: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    assert problem(await api.get(path, params=params)) == (422, "request_invalid")


# -- the event intake --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ({"job_id": "a b.*"}, 400, "malformed_event"),
        ({"surprise": 1}, 400, "malformed_event"),
        ({"model": "belle2"}, 422, "model_disabled"),
        ({"webhook": {"url": "http://169.254.169.254/latest/meta-data/"}}, 422, "webhook_forbidden"),
        ({"webhook": {"url": "http://a..b/hook"}}, 422, "webhook_invalid"),
    ],
    ids=[
        "job-id-not-a-token",
        "unknown-field",
        "disabled-model",
        "webhook-metadata-address",
        "webhook-host-idna",
    ],
)
async def test_bad_requests_posted_as_cloudevents_are_refused(
    api: httpx.AsyncClient, data: dict[str, Any], status: int, code: str
) -> None:
    headers, body = requested_headers(**data)
    assert problem(await api.post("/v1/events", content=body, headers=headers)) == (status, code)


def dead_letter(msg: Msg) -> DeadLetter:
    return binding.parse_data(binding.decode(msg.headers, msg.data), DeadLetter)


async def publish_raw(js: JetStreamContext, headers: dict[str, str], body: bytes) -> None:
    await js.publish(catalogue.REQUESTED.subject(f"crm-{uuid.uuid4().hex}"), body, headers=headers)


async def test_a_request_on_nats_naming_an_impossible_job_id_is_dead_lettered(js: JetStreamContext) -> None:
    headers, body = requested_headers(job_id="a b.*")
    letters = await messages_until(
        js,
        catalogue.dead_letter_subject(catalogue.INGEST_ROUTER.durable),
        lambda msg: dead_letter(msg).body == body.decode(),
        None,
        DeliverPolicy.NEW,
        per_message=30,
        after_subscribing=lambda: publish_raw(js, headers, body),
    )
    letter = dead_letter(letters[-1])
    assert "is not a job id" in letter.reason and letter.consumer == catalogue.INGEST_ROUTER.durable


async def test_a_request_on_nats_with_a_webhook_host_idna_refuses_fails_the_job(js: JetStreamContext) -> None:
    media = ObjectRef(bucket="uploads", key=f"crm/{uuid.uuid4().hex}.wav")
    request = TranscriptionRequested(media=media, webhook=WebhookTarget(url="http://a..b/hook"))
    event = binding.new_event(catalogue.REQUESTED, request, function="crm", event_id=uuid.uuid4().hex)
    headers, body = binding.encode(event, "binary")
    await publish_raw(js, headers, body)

    end = await wait_for_job_end(js, job_id_for(event, request), timeout=30)
    assert end.get_type() == catalogue.FAILED.type and end.get_data()["code"] == "webhook_invalid"


# -- secrets never in events or logs --------------------------------------------------------------------


async def raw_job_messages(js: JetStreamContext, job_id: str) -> list[bytes]:
    """Every message of the job on JOBS as stored (headers and body), up to its end."""
    ends = (catalogue.FAILED.type, catalogue.COMPLETED.type)
    messages = await messages_until(
        js,
        catalogue.job_events_subject(job_id),
        lambda msg: binding.decode(msg.headers, msg.data).get_type() in ends,
        None,
        per_message=120,
    )
    return [json.dumps(msg.headers or {}).encode() + msg.data for msg in messages]


async def sse_text(api: httpx.AsyncClient, job_id: str) -> str:
    """The job's event stream (`GET /v1/jobs/{id}/events`) as sent, up to the job's end."""
    chunks = []
    async with api.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        async for text in response.aiter_text():
            chunks.append(text)
    return "".join(chunks)


@pytest.mark.parametrize("way_in", ["upload", "cloudevent"])
async def test_webhook_secrets_and_the_api_key_never_reach_events_or_logs(
    api: httpx.AsyncClient, js: JetStreamContext, stack: EmbeddedStack, way_in: str
) -> None:
    """A webhook URL's tokens (user:password, path, query) and its header values live in the job
    record only. Before, the URL went verbatim into `transcription.requested` (30 days in JOBS,
    the SSE stream, dead letters); only the header values were left out."""
    token = uuid.uuid4().hex
    # A public address (the guard lets it through); a token in each place a URL may hold one.
    hook = f"http://hook-user:pw-{token}@93.184.215.14/klipnote-hook/path-{token}?token=q-{token}"
    if way_in == "upload":
        response = await api.post(
            "/v1/jobs",
            files={"file": ("talk", GARBAGE, "application/octet-stream")},  # fails fast, as unreadable
            data={"webhook_url": hook, "webhook_header": f"Authorization: {SECRET_HEADER_VALUE}"},
        )
    else:
        key = f"crm/{uuid.uuid4().hex}.wav"
        put(stack, key, GARBAGE)
        request = TranscriptionRequested(
            media=ObjectRef(bucket="uploads", key=key),
            webhook=WebhookTarget(url=hook, headers={"Authorization": SECRET_HEADER_VALUE}),
        )
        event = binding.new_event(catalogue.REQUESTED, request, function="crm", event_id=uuid.uuid4().hex)
        headers, body = binding.encode(event, "structured")
        response = await api.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    messages = await raw_job_messages(js, job_id)
    streamed = await sse_text(api, job_id)
    kv = await js.key_value(catalogue.JOBS_KV_BUCKET)
    record = JobRecord.model_validate_json((await kv.get(job_id)).value or b"")
    shown = (await api.get(f"/v1/jobs/{job_id}")).text
    log = stack.child("ingest").log_path.read_text(errors="replace")

    requested = [m for m in messages if catalogue.REQUESTED.type.encode() in m]
    assert len(requested) == 1 and b'"webhook_in_record":true' in requested[0].replace(b" ", b"")
    assert catalogue.REQUESTED.type in streamed and "webhook_in_record" in streamed
    for text in (*messages, streamed.encode()):  # the events: nothing of the URL but the flag
        assert token.encode() not in text and b"93.184.215.14" not in text
        assert SECRET_HEADER_VALUE.encode() not in text
        assert API_KEY.encode() not in text
    for text in (shown.encode(), log.encode()):
        assert f"pw-{token}".encode() not in text and f"q-{token}".encode() not in text
        assert SECRET_HEADER_VALUE.encode() not in text
        assert API_KEY.encode() not in text
    # The deliverer still has the whole target: it reads it from the job record.
    assert record.webhook_target == WebhookTarget(url=hook, headers={"Authorization": SECRET_HEADER_VALUE})


def test_only_the_job_record_holds_the_webhook_and_a_repeat_never_changes_a_record() -> None:
    """The gateway projects a request with its full webhook target before publishing it with
    `webhook_in_record`; the projector's later copy of the same event, or any repeat, changes
    nothing, and a finished job never goes back to `requested`."""
    full = WebhookTarget(url="https://hooks.example.com/k?token=t", headers={"Authorization": "Bearer t"})
    request = TranscriptionRequested(
        job_id="j1", media=ObjectRef(bucket="uploads", key="a.wav"), webhook_in_record=True
    )
    event = binding.new_event(catalogue.REQUESTED, request, function="ingest", event_id="j1:requested")

    made = apply(None, event, full)  # the gateway, before publishing
    assert made is not None and made.webhook_target == full and made.webhook is not None
    assert "token" not in made.webhook.url
    assert apply(made, event) is None  # the projector's copy of the event
    other = full.model_copy(update={"url": "https://other.example.com/k"})
    assert apply(made, event, other) is None  # a later request with the same job id
    for state in (JobState.COMPLETED, JobState.FAILED):
        ended = made.model_copy(update={"state": state})
        assert apply(ended, event, full) is None  # a repeat past the dedupe window
    # A reference without the gateway's target (another system's event) makes a record with no
    # webhook: the router fails such a job (webhook_reference_unknown).
    orphan = apply(None, event)
    assert orphan is not None and orphan.webhook_target is None and orphan.webhook is None
    # Another system's request on NATS still names its target in full; the record keeps it.
    theirs = TranscriptionRequested(job_id="j2", media=ObjectRef(bucket="uploads", key="a.wav"), webhook=full)
    made = apply(None, binding.new_event(catalogue.REQUESTED, theirs, function="crm"))
    assert made is not None and made.webhook_target == full
    with pytest.raises(ValueError, match="exclude each other"):
        TranscriptionRequested(media=request.media, webhook=full, webhook_in_record=True)


# -- confused deputy: media only from allowed buckets, the version that was admitted ----------------


async def test_a_request_on_nats_naming_a_bucket_media_buckets_does_not_allow_fails_at_routing(
    js: JetStreamContext, stack: EmbeddedStack
) -> None:
    """Before, the model function fetched `results/...` (another job's transcript) with the
    service's credentials and transcribed it."""
    key = f"crm/{uuid.uuid4().hex}.wav"
    storage.client(stack.settings).put_object(
        stack.settings.results_bucket, key, io.BytesIO(GARBAGE), len(GARBAGE)
    )
    request = TranscriptionRequested(media=ObjectRef(bucket=stack.settings.results_bucket, key=key))
    event = binding.new_event(catalogue.REQUESTED, request, function="crm", event_id=uuid.uuid4().hex)
    headers, body = binding.encode(event, "binary")
    await publish_raw(js, headers, body)

    end = await wait_for_job_end(js, job_id_for(event, request), timeout=30)
    assert end.get_type() == catalogue.FAILED.type and end.get_data()["code"] == "media_bucket_forbidden"
    assert end.get_data()["function"] == "ingest"


async def test_an_object_replaced_after_its_request_is_not_transcribed(
    js: JetStreamContext, stack: EmbeddedStack
) -> None:
    """A request names a version (its eTag); the object now under that key is another one. Before,
    the model function fetched whatever was there."""
    key = f"crm/{uuid.uuid4().hex}.wav"
    store = storage.client(stack.settings)
    admitted = store.put_object(stack.settings.uploads_bucket, key, io.BytesIO(GARBAGE), len(GARBAGE))
    replaced = GARBAGE + b"replaced"
    store.put_object(stack.settings.uploads_bucket, key, io.BytesIO(replaced), len(replaced))
    request = TranscriptionRequested(
        media=ObjectRef(bucket=stack.settings.uploads_bucket, key=key, etag=admitted.etag), language="en"
    )
    event = binding.new_event(catalogue.REQUESTED, request, function="crm", event_id=uuid.uuid4().hex)
    headers, body = binding.encode(event, "binary")
    await publish_raw(js, headers, body)

    end = await wait_for_job_end(js, job_id_for(event, request), timeout=60)
    assert end.get_type() == catalogue.FAILED.type and end.get_data()["code"] == "media_changed"
    assert end.get_data()["function"] == "whisperx"


# -- the table stays true ------------------------------------------------------------------------------

DOC = ROOT / "docs" / "bad-input.md"
_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
    }


def missing_tests(rows: list[str]) -> list[str]:
    """The `tests/...py::test_name` references of table rows that name no existing test; each row
    must name at least one."""
    missing = []
    for row in rows:
        references = _REFERENCE.findall(row)
        assert references, f"a row without a test: {row}"
        for file, name in references:
            path = ROOT / file
            if not path.exists() or name not in defined_tests(path):
                missing.append(f"{file}::{name}")
    return missing


def test_the_bad_input_table_names_only_tests_that_exist() -> None:
    rows = [
        line for line in DOC.read_text(encoding="utf-8").splitlines() if re.match(r"^\|\s*\d+\s*\|", line)
    ]
    assert len(rows) >= 25, f"{len(rows)} numbered rows in {DOC.name}"
    missing = missing_tests(rows)
    assert not missing, f"{DOC.name} names tests that do not exist: {missing}"


def test_the_security_threat_table_names_only_tests_that_exist() -> None:
    """docs/security.md: every threat row names a test that pins it, and each named test exists."""
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    table = text.split("## Threats and where they are stopped", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| **")]
    rows = [row for row in rows if not row.startswith("| attack ")]
    assert len(rows) >= 20, f"{len(rows)} threat rows"
    missing = missing_tests(rows)
    assert not missing, f"security.md names tests that do not exist: {missing}"
