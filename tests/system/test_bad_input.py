"""Bad input and secrets: the rows of docs/bad-input.md that no other test pins, the check that
keeps that table true (every test it names exists), and the proof that a webhook's header values
and the API key never reach an event or a log. Runs on the session stack (real nats-server,
SeaweedFS and functions)."""

from __future__ import annotations

import ast
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

from events import binding, catalogue
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
    "media", ["s3://up..loads/x.wav", "s3://" + "b" * 64 + "/x.wav", "s3://uploads/a/../b.wav"]
)
async def test_a_reference_the_store_client_refuses_is_invalid(api: httpx.AsyncClient, media: str) -> None:
    # Each was a 500: the minio client raises ValueError before any request.
    assert problem(await api.post("/v1/jobs", data={"media": media})) == (422, "media_invalid")


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


@pytest.mark.parametrize("way_in", ["upload", "cloudevent"])
async def test_webhook_header_values_and_the_api_key_never_reach_events_or_logs(
    api: httpx.AsyncClient, js: JetStreamContext, stack: EmbeddedStack, way_in: str
) -> None:
    hook = "http://93.184.215.14/klipnote-hook"  # a public address: the guard lets it through
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
    kv = await js.key_value(catalogue.JOBS_KV_BUCKET)
    record = JobRecord.model_validate_json((await kv.get(job_id)).value or b"")
    shown = (await api.get(f"/v1/jobs/{job_id}")).text
    log = stack.child("ingest").log_path.read_text(errors="replace")

    requested = [m for m in messages if catalogue.REQUESTED.type.encode() in m]
    assert len(requested) == 1 and b"/klipnote-hook" in requested[0]  # the event names the webhook...
    for text in (*messages, shown.encode(), log.encode()):
        assert SECRET_HEADER_VALUE.encode() not in text  # ... and none of its header values
        assert API_KEY.encode() not in text
    # The deliverer still has the whole target: it reads it from the job record.
    assert record.webhook_target is not None
    assert record.webhook_target.headers == {"Authorization": SECRET_HEADER_VALUE}


def test_the_projector_and_the_api_agree_on_the_webhook_target_whoever_writes_first() -> None:
    full = WebhookTarget(url="https://hooks.example.com/k", headers={"Authorization": "Bearer t"})
    stripped = full.model_copy(update={"headers": {}})
    request = TranscriptionRequested(
        job_id="j1", media=ObjectRef(bucket="uploads", key="a.wav"), webhook=stripped
    )
    event = binding.new_event(catalogue.REQUESTED, request, function="ingest", event_id="j1:requested")

    by_api = apply(None, event, full)  # the API projects first
    by_projector = apply(None, event)  # the projector (from the event) wins the race ...
    assert by_api is not None and by_api.webhook_target == full
    assert by_projector is not None and by_projector.webhook_target == stripped
    filled = apply(by_projector, event, full)  # ... and the API fills the values in
    assert filled is not None and filled.webhook_target == full
    assert apply(filled, event, full) is None  # nothing more to do
    assert apply(by_projector, event) is None  # a replayed event changes nothing
    ended = by_projector.model_copy(update={"state": JobState.FAILED})
    assert apply(ended, event, full) is None  # never once the job has ended
    other = full.model_copy(update={"url": "https://other.example.com/k"})
    assert apply(by_projector, event, other) is None  # only this request's own target


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


def test_the_bad_input_table_names_only_tests_that_exist() -> None:
    rows = [
        line for line in DOC.read_text(encoding="utf-8").splitlines() if re.match(r"^\|\s*\d+\s*\|", line)
    ]
    assert len(rows) >= 25, f"{len(rows)} numbered rows in {DOC.name}"
    missing = []
    for row in rows:
        references = _REFERENCE.findall(row)
        assert references, f"a row without a test: {row}"
        for file, name in references:
            path = ROOT / file
            if not path.exists() or name not in defined_tests(path):
                missing.append(f"{file}::{name}")
    assert not missing, f"{DOC.name} names tests that do not exist: {missing}"
