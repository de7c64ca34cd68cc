"""Fuzzing the ways in: hypothesis over the CloudEvents binding, the S3-record parser and the API's
models and form options (any input is either accepted or refused with the module's own error,
never another exception), then schemathesis over ingest's OpenAPI spec on the running session
stack (no 5xx, every answer as the spec says).

What schemathesis leaves out, and why:
- `GET /v1/jobs/{job_id}/events` (server-sent events): it streams until the job ends, so a generated
  case would hang to the read timeout; its 401/404 answers are the same dependency as every route.
- `POST /v1/jobs` gets few examples (MULTIPART_EXAMPLES): each accepted upload is a real job for the
  whisperx worker (random bytes fail fast as `media_unreadable`, but they queue behind real work).
- The `positive_data_acceptance` check: the spec types the form fields as strings, and many strings
  are refused on purpose with 422 and a code (an unknown model, a language that is no ISO code,
  a webhook to a private address); that is the API working, not a schema violation.
"""

from __future__ import annotations

import asyncio
import json
import string
import time
from typing import Any

import httpx
import pytest
import schemathesis
from cloudevents.core.v1.event import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from events import binding, catalogue
from events.models import EventData, ObjectRef, TranscriptionRequested, WebhookTarget
from events.settings import Settings
from functions.ingest.admission import Admission
from functions.ingest.api import create_app
from functions.ingest.ids import object_job_id
from functions.ingest.uploads.notification import NOTIFICATION_TYPE, decode_notification, notification_of
from infra.embedded.stack import EmbeddedStack
from tests.support.paths import API_KEY, WEBHOOK_SECRET

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


# -- the CloudEvents binding ----------------------------------------------------------------------

ATTRIBUTES = ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema"]
TYPES = [kind.type for kind in catalogue.KINDS] + ["com.example.other", ""]
attribute_values = (
    st.sampled_from(["1.0", "0.3", "", "2024-01-01T00:00:00Z", "not a time", "/x", "application/json"])
    | st.sampled_from(TYPES)
    | json_scalars
)


@st.composite
def structured_bodies(draw: st.DrawFn) -> bytes:
    """Mostly CloudEvents-shaped JSON documents with wrong, missing or odd attributes and data."""
    document: dict[str, Any] = {
        name: draw(attribute_values) for name in draw(st.sets(st.sampled_from(ATTRIBUTES)))
    }
    if draw(st.booleans()):
        document["data"] = draw(json_values)
    if draw(st.booleans()):
        document["data_base64"] = draw(st.text(max_size=12) | json_scalars)
    document.update(draw(st.dictionaries(st.text(max_size=8), json_scalars, max_size=3)))
    return json.dumps(document).encode()


header_names = st.sampled_from(
    ["content-type", "Content-Type", "ce-datacontenttype", "traceparent"] + [f"ce-{a}" for a in ATTRIBUTES]
) | st.text(string.ascii_letters + "-", min_size=1, max_size=12)
header_values = (
    st.sampled_from(["application/cloudevents+json", "application/json", "text/plain", "1.0"])
    | st.sampled_from(TYPES)
    | st.text(max_size=30)
)
bodies = structured_bodies() | st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())


def check_event(event: CloudEvent) -> None:
    """A decoded event: every required attribute there, and its data refused only as malformed."""
    attributes = event.get_attributes()
    assert all(attributes.get(name) for name in ("id", "source", "type", "specversion")), attributes
    try:
        kind = binding.kind_of(event)
        binding.parse_data(event, kind.data)
    except binding.MalformedEvent as refused:
        assert str(refused)


@FAST
@given(headers=st.dictionaries(header_names, header_values, max_size=6), body=bodies)
def test_the_binding_decodes_or_refuses_anything(headers: dict[str, str], body: bytes) -> None:
    try:
        event = binding.decode(headers, body)
    except binding.MalformedEvent as refused:
        assert str(refused)
        return
    check_event(event)


@FAST
@given(
    kind=st.sampled_from(catalogue.KINDS), data=json_values, mode=st.sampled_from(["structured", "binary"])
)
def test_any_data_under_any_type_is_refused_only_as_malformed(kind: Any, data: Any, mode: str) -> None:
    event = CloudEvent(
        {"type": kind.type, "source": "/fuzz", "id": "1", "datacontenttype": "application/json"}, data
    )
    headers, body = binding.encode(event, mode)  # type: ignore[arg-type]
    check_event(binding.decode(headers, body))


# -- the S3-record parser --------------------------------------------------------------------------


def minio_record(key: Any, etag: Any, event_name: Any, bucket: Any, extra: dict[str, Any]) -> dict[str, Any]:
    obj = {"key": key, "eTag": etag, "size": 10, "contentType": "audio/wav", "userMetadata": {}, **extra}
    return {"eventName": event_name, "s3": {"bucket": {"name": bucket}, "object": obj}}


keys = st.text(max_size=40) | st.sampled_from(["a/../b.wav", "./x", "a%2Fb.wav", "x+y.wav", "a/", "%ZZ"])
event_names = st.sampled_from(
    ["s3:ObjectCreated:Put", "s3:ObjectRemoved:Delete", "s3:ObjectCreated:"]
) | st.text(max_size=20)


@st.composite
def notifications(draw: st.DrawFn) -> bytes:
    records = draw(
        st.lists(
            st.builds(
                minio_record,
                key=keys | json_scalars,
                etag=st.text(max_size=10) | json_scalars,
                event_name=event_names | json_scalars,
                bucket=st.sampled_from(["uploads", ""]) | json_scalars,
                extra=st.dictionaries(
                    st.sampled_from(["size", "userMetadata", "sequencer"]), json_values, max_size=2
                ),
            )
            | json_values,
            max_size=3,
        )
    )
    document: dict[str, Any] = {
        "EventName": draw(event_names | json_scalars),
        "Key": draw(keys),
        "Records": records,
    }
    for name in draw(st.sets(st.sampled_from(["EventName", "Key", "Records"]))):
        document.pop(name)
    return json.dumps(document).encode()


@FAST
@given(body=notifications() | st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_the_s3_record_parser_decodes_or_refuses_anything(body: bytes) -> None:
    try:
        event = decode_notification(None, body)
    except binding.MalformedEvent as refused:
        assert str(refused)
        return
    assert event.get_type() == NOTIFICATION_TYPE
    notification = notification_of(event)  # what the handler reads back must hold
    for record in notification.records:
        if record.created:
            assert record.s3.object.etag
            object_job_id(record.s3.bucket.name, record.key, record.s3.object.etag)


# -- the API's models --------------------------------------------------------------------------------


def model_shaped(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with the model's own field names (and a stranger), each any JSON value."""
    names = [*model.model_fields, "unknown_field"]
    return st.dictionaries(st.sampled_from(names), json_values, max_size=len(names))


@st.composite
def requests_data(draw: st.DrawFn) -> dict[str, Any]:
    data = draw(model_shaped(TranscriptionRequested))
    if draw(st.booleans()):
        data["media"] = draw(model_shaped(ObjectRef))
    if draw(st.booleans()):
        data["webhook"] = draw(model_shaped(WebhookTarget))
    return data


@FAST
@pytest.mark.parametrize("model", [TranscriptionRequested, WebhookTarget, ObjectRef])
@given(data=st.data())
def test_the_models_validate_or_refuse_anything(model: type[EventData], data: st.DataObject) -> None:
    value = data.draw(requests_data() if model is TranscriptionRequested else model_shaped(model))
    try:
        parsed = model.model_validate(value)
    except ValidationError as refused:
        assert refused.errors()
        return
    # Accepted data survives the wire: what a function publishes, the next one reads.
    assert model.model_validate_json(parsed.model_dump_json()) == parsed


# -- the API's form options (ingest's own app, in process: no stack) ---------------------------------


def options_app() -> Any:
    values = Settings(webhook_secret=WEBHOOK_SECRET, enabled_models=["whisperx"])
    # No gateway: the options are refused (or the missing media is) before any job is made.
    return create_app(values, Admission.from_settings(values), lambda: None)


hosts = (
    st.sampled_from(
        ["example.com", "10.0.0.1", "[::1]", "169.254.169.254", "a..b", "localhost", "[::1", "ü.example"]
    )
    | st.text(string.ascii_letters + string.digits + ".-:[]%@", max_size=30)
    | st.text(max_size=10)
)
form_fields = {
    "model": st.sampled_from(["whisperx", "belle2", "", "WHISPERX"]) | st.text(max_size=12),
    "language": st.sampled_from(["en", "zh", "en-US", "", "english"]) | st.text(max_size=8),
    "formats": st.sampled_from(["srt", "json,srt,vtt,txt", ",", "SRT, vtt", "docx"]) | st.text(max_size=16),
    "metadata": json_values.map(json.dumps) | st.text(max_size=20) | st.just("[" * 3000 + "]" * 3000),
    "webhook_url": st.builds(lambda s, h, p: f"{s}://{h}{p}", st.sampled_from(["http", "https", "ftp"]),
                             hosts, st.sampled_from(["", "/", "/hook?token=x", ":99999/"]))
    | st.text(max_size=20),
    "webhook_header": st.sampled_from(["Authorization: Bearer x", "X-A:b", "no colon", ": v", "X Y: v",
                                       "A: b\r\nC: d"])
    | st.text(max_size=20),
}  # fmt: skip
OPTION_CODES = {
    "media_missing",  # valid options: the request names no media, so it stops there
    "model_unknown",
    "model_disabled",
    "model_language_unsupported",
    "language_invalid",
    "language_unsupported",
    "formats_invalid",
    "metadata_invalid",
    "webhook_invalid",
    "webhook_forbidden",
    "webhook_scheme",
    "request_invalid",
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(form=st.fixed_dictionaries({}, optional=form_fields))
def test_any_form_options_are_accepted_or_refused_with_a_code(form: dict[str, str]) -> None:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=APP)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            return await client.post("/v1/jobs", data=form)

    response = asyncio.run(post())
    assert response.status_code == 422, (form, response.text)
    problem = response.json()["detail"]
    assert problem["message"], form
    assert problem["code"] in OPTION_CODES, (form, problem)


APP = options_app()


# -- schemathesis on the running stack ---------------------------------------------------------------

AUTH = {"Authorization": f"Bearer {API_KEY}"}
EXAMPLES = 50  # per operation (positive and negative cases mixed)
MULTIPART_EXAMPLES = 10
EXCLUDED_OPERATIONS = {"GET /v1/jobs/{job_id}/events"}
# negative_data_rejection: an unknown query parameter (`?=null`) is ignored, as HTTP APIs do, and
# the Authorization header it strips to make a "negative" case is put back by `call_and_validate`.
EXCLUDED_CHECKS = [positive_data_acceptance, negative_data_rejection]
# Message framing belongs to the HTTP client: a made-up `Content-Length: @` is no HTTP request at
# all, which uvicorn refuses in plain text before the app runs (a protocol error, not the API's).
FRAMING_HEADERS = {"content-length", "transfer-encoding", "host", "connection"}


def test_the_api_holds_to_its_openapi_spec(stack: EmbeddedStack) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.api_url}/openapi.json", headers=AUTH, timeout=10)
    session = __import__("requests").Session()
    started, ran = time.monotonic(), {}
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises: the spec is ours
        label = f"{operation.method.upper()} {operation.path}"
        if label in EXCLUDED_OPERATIONS:
            continue
        examples = MULTIPART_EXAMPLES if label == "POST /v1/jobs" else EXAMPLES
        count = 0

        @settings(
            max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(
            case=operation.as_strategy(GenerationMode.POSITIVE)
            | operation.as_strategy(GenerationMode.NEGATIVE)
        )
        def exercise(case: schemathesis.Case) -> None:
            nonlocal count
            count += 1
            for name in [name for name in case.headers or {} if name.lower() in FRAMING_HEADERS]:
                del case.headers[name]
            case.call_and_validate(headers=AUTH, session=session, excluded_checks=EXCLUDED_CHECKS, timeout=30)  # type: ignore[arg-type]

        exercise()
        ran[label] = count
    print(f"schemathesis: {ran} in {time.monotonic() - started:.1f}s")
    assert "POST /v1/events" in ran and "GET /v1/jobs/{job_id}" in ran
