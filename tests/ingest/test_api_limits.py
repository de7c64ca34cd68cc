"""The API's trust boundary (issue 15): the key is checked and a body's size and pace bounded
before a byte of it is read; every malformed event is a 400; references only to allowed buckets;
caller-named job ids in their own namespace; bounded listings and live streams; what is public.

Most tests talk to the session stack's API over a socket of their own, to send exactly what an
attacker would (headers without the body that they announce). Those that need limits of their own
(a short body timeout, one stream at a time) serve `create_app` with uvicorn in this process, over
the stack's NATS and SeaweedFS.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig

from events import binding, catalogue, storage
from events.bus import Publisher
from events.lifecycle import JobState
from events.models import ObjectRef, TranscriptionFailed, TranscriptionRequested
from events.runtime.function import Runtime
from events.settings import Settings, media_bucket_allowed
from functions.ingest.admission import Admission
from functions.ingest.api import create_app
from functions.ingest.gateway import Gateway
from functions.ingest.ids import checked_job_id
from functions.ingest.jobs import JobStore
from functions.ingest.links import ResultLinks
from infra.embedded.stack import EmbeddedStack
from tests.support.paths import API_KEY

KEY = f"Authorization: Bearer {API_KEY}\r\n"
# How long a test waits for an answer the server owes at once; only a broken guard waits this long.
ANSWER_WAIT_S = 30


@dataclass
class Answer:
    status: int
    body: dict[str, object]

    @property
    def code(self) -> object:
        detail = self.body.get("detail")
        return detail.get("code") if isinstance(detail, dict) else None


async def exchange(url: str, head: str, body: bytes = b"") -> Answer:
    """Send a request's head and `body` (perhaps less than the head announces) on a connection of
    our own, and read the answer: the server must answer without the rest of the body."""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), ANSWER_WAIT_S)  # the server closes after it
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    return Answer(int(status_line.split()[1]), json.loads(payload))


def post_head(path: str, *, length: int | None, key: bool = True, more: str = "") -> str:
    sized = f"Content-Length: {length}\n" if length is not None else "Transfer-Encoding: chunked\n"
    auth = KEY.removesuffix("\r\n") + "\n" if key else ""
    return f"POST {path} HTTP/1.1\nHost: klipnote\n{auth}{sized}{more}"


# -- 1. the key before the body; the body's size and pace --------------------------------------


@pytest.mark.parametrize("authorization", ["", "Authorization: Bearer wrong-key\n"])
async def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(
    stack: EmbeddedStack, authorization: str
) -> None:
    """Was: the 40 MiB were read and spooled to disk, then 401. Now the answer comes while the
    client has sent none of them."""
    head = post_head(
        "/v1/jobs",
        length=40 * 2**20,
        key=False,
        more=authorization + "Content-Type: multipart/form-data; boundary=x\n",
    )
    answer = await exchange(stack.api_url, head)

    assert answer.status == 401 and answer.code == "unauthorized"


async def test_a_body_declared_over_the_limit_is_refused_at_once(stack: EmbeddedStack) -> None:
    limit = stack.settings.max_upload_bytes + stack.settings.api_max_body_bytes
    upload = post_head("/v1/jobs", length=limit + 1, more="Content-Type: multipart/form-data; boundary=x\n")
    event = post_head(
        "/v1/events",
        length=stack.settings.api_max_body_bytes + 1,
        more="Content-Type: application/cloudevents+json\n",
    )

    assert (await exchange(stack.api_url, upload)).code == "media_too_large"
    refused = await exchange(stack.api_url, event)
    assert refused.status == 413 and refused.code == "body_too_large"


@dataclass
class Served:
    url: str
    settings: Settings
    store: JobStore


@pytest.fixture
async def served(stack: EmbeddedStack, js: JetStreamContext) -> AsyncIterator[Served]:
    """ingest's API with small limits, served by uvicorn here, over the stack's NATS and
    SeaweedFS, with a job store over a KV bucket of its own (no projector writes it)."""
    settings = stack.settings.model_copy(
        update={
            "api_max_body_bytes": 1000,
            "max_upload_bytes": 4000,
            "api_body_timeout_s": 0.5,
            "api_max_event_streams": 1,
            "api_event_stream_max_s": 1.0,
        }
    )
    bucket = f"jobs-limits-{uuid.uuid4().hex[:8]}"
    runtime = Runtime(settings, Publisher(js, settings), js)
    store = JobStore(await js.create_key_value(KeyValueConfig(bucket=bucket, history=1)), runtime)
    client = storage.client(settings)
    gateway = Gateway(settings, store, runtime.publisher, client, ResultLinks(client, 60))
    app = create_app(settings, Admission.from_settings(settings), lambda: gateway)
    # Listening before uvicorn starts: a connection waits in the backlog, no need to wait for it.
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    # A stream left open by a failing test must not hold the teardown for ever.
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        yield Served(f"http://127.0.0.1:{port}", settings, store)
    finally:
        server.should_exit = True
        await task
        listening.close()
        await store.close()  # its index would read a deleted bucket for ever
        await js.delete_key_value(bucket)


async def test_a_body_streamed_past_the_limit_is_refused_when_it_passes(served: Served) -> None:
    """No Content-Length (chunked): counted as it comes; 413 once it passes the limit."""
    chunk = b"x" * 600
    chunked = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    head = post_head("/v1/events", length=None, more="Content-Type: application/cloudevents+json\n")
    answer = await exchange(served.url, head, chunked * 2)  # 1200 bytes of 1000, and no end

    assert answer.status == 413 and answer.code == "body_too_large"
    upload = post_head("/v1/jobs", length=None, more="Content-Type: multipart/form-data; boundary=x\n")
    big = b"x" * 3000
    assert (
        await exchange(served.url, upload, b"%x\r\n%s\r\n" % (len(big), big) * 2)
    ).code == "media_too_large"


async def test_a_body_that_stalls_is_refused_with_408(served: Served) -> None:
    """A slowloris: ten bytes of the hundred announced, then nothing."""
    head = post_head("/v1/events", length=100, more="Content-Type: application/cloudevents+json\n")
    answer = await exchange(served.url, head, b'{"id": "1"')

    assert answer.status == 408 and answer.code == "body_timeout"


# -- 3. poison: JSON nested deeper than the parser goes ----------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
REQUESTED_HEADERS = {
    "ce-specversion": "1.0",
    "ce-id": "1",
    "ce-source": "/crm",
    "ce-type": catalogue.REQUESTED.type,
    "content-type": "application/json",
}


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"content-type": "application/cloudevents+json"}, DEEP),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion":"1.0","id":"1","source":"/x","type":"t","data":' + DEEP + b"}",
        ),
        (REQUESTED_HEADERS, DEEP),
        (REQUESTED_HEADERS, b'{"media":' + b"[" * 40 + b"]" * 40 + b"}"),  # under the limit, over ours
        ({**REQUESTED_HEADERS, "content-type": "text/plain"}, DEEP),
    ],
    ids=["structured", "structured-data", "binary", "binary-40-deep", "binary-text-data"],
)
def test_json_nested_too_deeply_is_a_malformed_event_not_a_crash(
    headers: dict[str, str], body: bytes
) -> None:
    """On NATS a MalformedEvent is a dead letter with the reason (was: a RecursionError, the
    message never settled)."""
    with pytest.raises(binding.MalformedEvent):
        event = binding.decode(headers, body)
        binding.parse_data(event, TranscriptionRequested)


async def test_a_deeply_nested_cloudevent_over_http_is_a_400(api: httpx.AsyncClient) -> None:
    """Was a 500."""
    nested = b'{"media":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    response = await api.post("/v1/events", content=nested, headers=REQUESTED_HEADERS)

    assert response.status_code == 400, response.text
    assert response.json()["detail"]["code"] == "malformed_event"


# -- 4. references only to buckets meant for input ---------------------------------------------


async def test_a_reference_to_another_bucket_is_refused(api: httpx.AsyncClient, stack: EmbeddedStack) -> None:
    """Was: read with the service's credentials, another job's transcript included."""
    for media in (f"s3://{stack.settings.results_bucket}/any-job/transcript.json", "s3://secrets/x.wav"):
        response = await api.post("/v1/jobs", data={"media": media})
        assert response.status_code == 422, response.text
        assert response.json()["detail"]["code"] == "media_bucket_forbidden"
        assert stack.settings.s3_secret_key not in response.text


def test_media_buckets_name_the_buckets_a_reference_may_name() -> None:
    assert media_bucket_allowed("uploads", Settings()) and not media_bucket_allowed("results", Settings())
    chosen = Settings(media_buckets=["incoming", "archive"])
    assert media_bucket_allowed("archive", chosen) and not media_bucket_allowed("uploads", chosen)


# -- 6b. caller-named job ids live in their own namespace --------------------------------------


def requested_by(source: str, job_id: str | None) -> tuple[object, TranscriptionRequested]:
    request = TranscriptionRequested(job_id=job_id, media=ObjectRef(bucket="uploads", key="x.wav"))
    return binding.new_event(catalogue.REQUESTED, request, function=source), request


def test_only_ingest_names_a_job_with_an_id_of_its_own_form() -> None:
    ours = uuid.uuid4().hex
    event, request = requested_by("crm", ours)
    with pytest.raises(binding.MalformedEvent, match="32 lowercase hex"):
        checked_job_id(event, request)  # type: ignore[arg-type]

    for source, job_id in [("ingest", ours), ("crm", "order-17"), ("crm", ours.upper())]:
        event, request = requested_by(source, job_id)
        assert checked_job_id(event, request) == job_id  # type: ignore[arg-type]
    event, request = requested_by("crm", None)
    assert len(checked_job_id(event, request)) == 32  # type: ignore[arg-type]


async def test_a_cloudevent_over_http_may_not_name_a_job_with_our_form(api: httpx.AsyncClient) -> None:
    """Was: a caller could pick the id of an Idempotency-Key's or a stored object's job."""
    event, _ = requested_by("crm", uuid.uuid4().hex)
    headers, body = binding.encode(event, "structured")  # type: ignore[arg-type]
    response = await api.post("/v1/events", content=body, headers=headers)

    assert response.status_code == 400 and response.json()["detail"]["code"] == "malformed_event"


# -- 8. bounded inputs, listings and streams ---------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"metadata": {"k": "v" * 5000}},
        {"metadata": {f"k{n}": "v" * 40 for n in range(100)}},
        {"filename": "a" * 256 + ".wav"},
    ],
    ids=["metadata-value", "metadata-many-keys", "filename"],
)
async def test_a_cloudevent_with_oversized_fields_is_refused(
    api: httpx.AsyncClient, data: dict[str, object]
) -> None:
    request = {"media": {"bucket": "uploads", "key": "crm/x.wav"}, **data}
    headers = {**REQUESTED_HEADERS, "ce-id": uuid.uuid4().hex}
    response = await api.post("/v1/events", content=json.dumps(request).encode(), headers=headers)

    assert response.status_code == 400 and response.json()["detail"]["code"] == "malformed_event"


async def project_job(store: JobStore, *, failed: bool = False, created_offset_s: float = 0) -> str:
    job_id = uuid.uuid4().hex
    request = TranscriptionRequested(job_id=job_id, media=ObjectRef(bucket="uploads", key=job_id))
    await store.project(binding.new_event(catalogue.REQUESTED, request, function="ingest"), job_id)
    if created_offset_s:
        record = await store.get(job_id)
        assert record is not None
        record.created_at += timedelta(seconds=created_offset_s)
        await store.kv.put(job_id, record.model_dump_json().encode())
    if failed:
        end = TranscriptionFailed(job_id=job_id, code="media_unreadable", message="x", function="test")
        await store.project(binding.new_event(catalogue.FAILED, end, function="test"), job_id)
    return job_id


async def test_a_page_of_jobs_holds_only_its_window(served: Served) -> None:
    ids = [await project_job(served.store, created_offset_s=n, failed=n % 2 == 1) for n in range(7)]
    newest_first = ids[::-1]

    page, total = await served.store.page(offset=2, limit=3)
    failed, failed_total = await served.store.page(JobState.FAILED, offset=0, limit=2)

    assert [record.id for record in page] == newest_first[2:5] and total == 7
    assert [record.id for record in failed] == [ids[5], ids[3]] and failed_total == 3
    async with httpx.AsyncClient(
        base_url=served.url, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as client:
        listed = (await client.get("/v1/jobs", params={"offset": 1, "limit": 2})).json()
        past_the_end = await client.get("/v1/jobs", params={"offset": 10**12})
        negative = await client.get("/v1/jobs", params={"offset": -1})
    assert [job["id"] for job in listed["jobs"]] == newest_first[1:3] and listed["total"] == 7
    assert past_the_end.status_code == 200 and past_the_end.json()["jobs"] == []
    assert past_the_end.json()["total"] == 7
    assert negative.status_code == 422


async def sse_messages(response: httpx.Response) -> list[str]:
    """The stream's messages' `event:` names, read to its end."""
    return [
        line.removeprefix("event: ") async for line in response.aiter_lines() if line.startswith("event: ")
    ]


async def test_live_streams_are_bounded_in_number_and_in_time(served: Served) -> None:
    job_id = await project_job(served.store)  # requested, never ending
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=served.url, headers=headers, timeout=ANSWER_WAIT_S) as client:
        async with client.stream("GET", f"/v1/jobs/{job_id}/events") as first:
            assert first.status_code == 200
            refused = await client.get(f"/v1/jobs/{job_id}/events")  # the one slot is taken
            assert refused.status_code == 503 and refused.json()["detail"]["code"] == "too_many_streams"
            assert await sse_messages(first) == ["timeout"]  # API_EVENT_STREAM_MAX_S, then it ends

        async with client.stream("GET", f"/v1/jobs/{job_id}/events") as again:  # its slot was freed
            assert again.status_code == 200


async def test_a_finished_job_whose_events_aged_out_ends_its_stream_at_once(served: Served) -> None:
    """Was: the stream waited for ever for events the JOBS stream no longer held."""
    job_id = await project_job(served.store, failed=True)  # a record, and no event in JOBS
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=served.url, headers=headers, timeout=ANSWER_WAIT_S) as client:
        async with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            assert await sse_messages(stream) == ["expired"]


# -- 9. what answers without the key -----------------------------------------------------------


async def test_the_api_documentation_and_schemas_are_public_and_nothing_else(stack: EmbeddedStack) -> None:
    """A decision (functions/ingest/api/__init__.py, README): the docs and schemas describe the
    API and hold no secret; integrators fetch them. Every other `/v1` route needs the key."""
    async with httpx.AsyncClient(base_url=stack.api_url) as stranger:
        public = [
            await stranger.get(path)
            for path in ("/docs", "/redoc", "/openapi.json", "/v1/schemas/transcription-requested.json")
        ]
        closed = [await stranger.get("/v1/jobs"), await stranger.get(f"/v1/jobs/{uuid.uuid4().hex}/events")]

    assert [answer.status_code for answer in public] == [200] * 4
    assert [answer.status_code for answer in closed] == [401] * 2
    assert "API_KEY" in public[2].json()["info"]["description"]
