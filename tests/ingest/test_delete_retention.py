"""Deleting a job (`DELETE /v1/jobs/{id}`) and retention (RESULTS_TTL_S, `delete_after`, the
sweeper), on the session's running stack: real nats-server, real SeaweedFS, whisper-base on real
speech. After a delete nothing of the job is left in either bucket, the `jobs` KV (a purge marker
holding only its id) or the JOBS and SEGMENTS streams, and nothing brings it back: not a late
event, its `Idempotency-Key` or object again, a repeated notification or the reconcile.

The sweeper and the reconcile are run here in this process, over the stack's own bus and store
(`in_process`), one round at a time: the session stack's own reconcile is off and its sweeper
deletes nothing of a session's age."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from minio import Minio
from minio.error import S3Error
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import KeyNotFoundError
from pydantic import ValidationError

from events import binding, catalogue, storage
from events.bus import Publisher
from events.lifecycle import JobState
from events.models import ObjectRef, TranscriptionRequested, utcnow
from events.runtime.function import Runtime
from events.settings import Settings
from functions.ingest import retention
from functions.ingest.admission import Admission
from functions.ingest.api import create_app
from functions.ingest.gateway import Gateway
from functions.ingest.ids import job_id_for, object_job_id
from functions.ingest.jobs import JobStore, expiry
from functions.ingest.links import ResultLinks
from functions.ingest.naming import API_PREFIX
from functions.ingest.retention import Sweeper
from functions.ingest.schema import JobRecord
from functions.ingest.uploads import reconcile
from functions.ingest.uploads.drop import BucketDrop
from functions.ingest.uploads.reconcile import Listed, Reconciler
from infra.embedded.stack import EmbeddedStack
from tests.support.cli import klipnote
from tests.support.jobs import finished_job, submit, wait_for_record, wait_for_state
from tests.support.media import long_english_clip
from tests.support.paths import API_KEY, AUDIO
from tests.support.uploads import encoded, minio_notification, put

JFK = AUDIO / "jfk.flac"


def problem_code(response: httpx.Response) -> str:
    code: str = response.json()["detail"]["code"]
    return code


# -- what is left of a job ----------------------------------------------------------------------


def stored_keys(store: Minio, bucket: str, prefix: str) -> list[str]:
    return [obj.object_name or "" for obj in store.list_objects(bucket, prefix, recursive=True)]


def object_exists(store: Minio, bucket: str, key: str) -> bool:
    try:
        store.stat_object(bucket, key)
    except S3Error as error:
        assert error.code in ("NoSuchKey", "NoSuchObject"), error
        return False
    return True


async def stored_events(js: JetStreamContext, stream: catalogue.Stream, subject: str) -> int:
    """How many messages `stream` holds on `subject` (a wildcard counts every match)."""
    info = await js.stream_info(stream.name, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def job_events_left(js: JetStreamContext, job_id: str) -> tuple[int, int]:
    """The job's messages in JOBS (`transcription.*.<job>`) and SEGMENTS (`segments.<job>`), but
    its cancel mark (`transcription.canceled.<job>`: the job id and nothing else), which a delete
    leaves by design so that no model or optimize writes for the job again (`cancel_marks`)."""
    return (
        await stored_events(js, catalogue.JOBS, catalogue.job_events_subject(job_id))
        - await cancel_marks(js, job_id),
        await stored_events(js, catalogue.SEGMENTS, catalogue.SEGMENT.subject(job_id)),
    )


async def cancel_marks(js: JetStreamContext, job_id: str) -> int:
    return await stored_events(js, catalogue.JOBS, catalogue.CANCELED.subject(job_id))


async def assert_tombstone(js: JetStreamContext, job_id: str) -> None:
    """The job's key holds one message, a purge marker with no value: the id and nothing else."""
    kv = await js.key_value(catalogue.JOBS_KV_BUCKET)
    with pytest.raises(KeyNotFoundError) as missing:
        await kv.get(job_id)
    assert missing.value.op == "PURGE"
    subject = f"$KV.{catalogue.JOBS_KV_BUCKET}.{job_id}"
    assert await stored_events(js, catalogue.Stream(f"KV_{catalogue.JOBS_KV_BUCKET}", []), subject) == 1
    marker = await js.get_last_msg(f"KV_{catalogue.JOBS_KV_BUCKET}", subject)
    assert not marker.data


async def settled(
    js: JetStreamContext, consumer: catalogue.Consumer, ack: PubAck, timeout: float = 30
) -> None:
    """Wait until `consumer` has acknowledged (or terminated) the message `ack` published."""
    async with asyncio.timeout(timeout):
        while True:
            info = await js.consumer_info(consumer.stream.name, consumer.durable)
            if info.ack_floor.stream_seq is not None and info.ack_floor.stream_seq >= ack.seq:
                return
            await asyncio.sleep(0.05)  # consumer state has no watch; this polls a condition


async def republish(js: JetStreamContext, raw: Any) -> PubAck:
    """A stored event published again under another Nats-Msg-Id: past the dedupe window, as a
    redelivery or a replay would come."""
    headers = {**(raw.headers or {}), "Nats-Msg-Id": uuid.uuid4().hex}
    return await js.publish(raw.subject, raw.data, headers=headers)


# -- ingest's parts, in this process, over the stack's bus and store ----------------------------


@pytest.fixture(scope="module")
def store(stack: EmbeddedStack) -> Minio:
    return storage.client(stack.settings)


@pytest.fixture(scope="module")
async def in_process(stack: EmbeddedStack, js: JetStreamContext, store: Minio) -> AsyncIterator[Gateway]:
    """A gateway as ingest builds one, over the stack's own `jobs` KV, streams and buckets."""
    settings = stack.settings
    jobs = await JobStore.open(Runtime(settings, Publisher(js, settings), js))
    yield Gateway(settings, jobs, Publisher(js, settings), store, ResultLinks(store, 60))
    await jobs.close()


@pytest.fixture(scope="module")
async def client(stack: EmbeddedStack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60, headers=headers) as http:
        yield http


# -- one uploaded job, completed, then deleted ---------------------------------------------------


@dataclass(frozen=True)
class Deleted:
    job_id: str
    idempotency_key: str
    record: dict[str, Any]  # as it was, completed
    uploads: list[str]  # its keys in the uploads bucket before the delete
    results: list[str]  # its keys in the results bucket before the delete
    events: tuple[int, int]  # its messages in JOBS and SEGMENTS before the delete
    requested: Any  # its `requested`, `transcribed` and `completed` messages, to publish again
    transcribed: Any
    completed: Any


@pytest.fixture(scope="module")
async def deleted(client: httpx.AsyncClient, js: JetStreamContext, store: Minio) -> Deleted:
    key = uuid.uuid4().hex
    with open(JFK, "rb") as body:
        response = await client.post(
            "/v1/jobs",
            files={"file": ("jfk speech.flac", body)},
            data={"metadata": json.dumps({"speaker": "J. F. Kennedy"})},
            headers={"Idempotency-Key": key},
        )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    record = await finished_job(client, js, job_id)
    assert record["state"] == "completed", record
    before = Deleted(
        job_id=job_id,
        idempotency_key=key,
        record=record,
        uploads=stored_keys(store, "uploads", f"{API_PREFIX}{job_id}/"),
        results=stored_keys(store, "results", f"{job_id}/"),
        events=await job_events_left(js, job_id),
        requested=await js.get_last_msg(catalogue.JOBS.name, catalogue.REQUESTED.subject(job_id)),
        transcribed=await js.get_last_msg(catalogue.JOBS.name, catalogue.TRANSCRIBED.subject(job_id)),
        completed=await js.get_last_msg(catalogue.JOBS.name, catalogue.COMPLETED.subject(job_id)),
    )
    response = await client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 204, response.text
    assert response.content == b""
    return before


async def test_a_deleted_job_leaves_nothing_in_the_buckets_the_kv_or_the_streams(
    deleted: Deleted, js: JetStreamContext, store: Minio
) -> None:
    job_id = deleted.job_id
    # There was something to delete: the upload, four results, its events and segments.
    assert len(deleted.uploads) == 1 and len(deleted.results) == 4, (deleted.uploads, deleted.results)
    assert deleted.events[0] >= 4 and deleted.events[1] >= 1, deleted.events

    assert stored_keys(store, "uploads", f"{API_PREFIX}{job_id}/") == []
    assert stored_keys(store, "results", f"{job_id}/") == []
    assert await job_events_left(js, job_id) == (0, 0)
    # A completed job gets the cancel mark too: what is redelivered of it writes nothing again.
    assert await cancel_marks(js, job_id) == 1
    await assert_tombstone(js, job_id)


async def test_a_job_that_ends_expires_after_results_ttl_s(deleted: Deleted, stack: EmbeddedStack) -> None:
    """No `delete_after`: RESULTS_TTL_S (30 days by default) after its end."""
    record = deleted.record
    ended = datetime.fromisoformat(record["updated_at"])
    assert stack.settings.results_ttl_s == 30 * 24 * 3600
    assert datetime.fromisoformat(record["expires_at"]) == ended + timedelta(days=30)


async def test_a_deleted_job_is_not_found_on_every_route(
    deleted: Deleted, client: httpx.AsyncClient, js: JetStreamContext
) -> None:
    job_id = deleted.job_id
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/transcript.txt", f"/v1/jobs/{job_id}/events"):
        response = await client.get(path)
        assert response.status_code == 404 and problem_code(response) == "job_not_found", (
            path,
            response.text,
        )
    listed = (await client.get("/v1/jobs", params={"limit": 500})).json()["jobs"]
    assert job_id not in [job["id"] for job in listed]
    assert (await client.post(f"/v1/jobs/{job_id}/cancel")).status_code == 404

    again = await client.delete(f"/v1/jobs/{job_id}")  # idempotent: the same answer

    assert again.status_code == 204, again.text
    await assert_tombstone(js, job_id)


async def test_its_idempotency_key_again_is_refused_and_its_upload_not_kept(
    deleted: Deleted, client: httpx.AsyncClient, js: JetStreamContext, store: Minio
) -> None:
    """The retry of the deleted job's own request: the job is not made again, and the file that
    came with it is not left in the bucket."""
    with open(JFK, "rb") as body:
        response = await client.post(
            "/v1/jobs",
            files={"file": ("jfk speech.flac", body)},
            data={"metadata": json.dumps({"speaker": "J. F. Kennedy"})},
            headers={"Idempotency-Key": deleted.idempotency_key},
        )

    assert response.status_code == 409 and problem_code(response) == "job_deleted", response.text
    assert deleted.job_id in response.json()["detail"]["message"]
    assert stored_keys(store, "uploads", f"{API_PREFIX}{deleted.job_id}/") == []
    await assert_tombstone(js, deleted.job_id)
    assert await stored_events(js, catalogue.JOBS, catalogue.REQUESTED.subject(deleted.job_id)) == 0


async def test_a_late_request_or_end_of_a_deleted_job_does_not_bring_it_back(
    deleted: Deleted, js: JetStreamContext, store: Minio
) -> None:
    """Its `requested` (a redelivery past the dedupe window: another Nats-Msg-Id) and its
    `completed` again: the projector writes no record, the router dispatches nothing."""
    job_id = deleted.job_id
    requested = await republish(js, deleted.requested)
    completed = await republish(js, deleted.completed)

    for consumer in (catalogue.INGEST_ROUTER, catalogue.INGEST_PROJECTOR):
        await settled(js, consumer, completed if consumer is catalogue.INGEST_PROJECTOR else requested)

    await assert_tombstone(js, job_id)
    # Only what this test published: no `dispatched`, `queued`, `failed`.
    assert await job_events_left(js, job_id) == (2, 0)
    assert stored_keys(store, "results", f"{job_id}/") == []


async def test_a_redelivered_transcribed_of_a_deleted_job_writes_no_results(
    deleted: Deleted, js: JetStreamContext, store: Minio
) -> None:
    """optimize's ack of the job's `transcribed` lost, the message comes again after the delete:
    the cancel mark the delete left stops it before it writes."""
    job_id = deleted.job_id
    transcribed = await republish(js, deleted.transcribed)

    await settled(js, catalogue.OPTIMIZE, transcribed)

    assert stored_keys(store, "results", f"{job_id}/") == []


async def test_delete_of_a_job_that_never_was_is_not_found(client: httpx.AsyncClient) -> None:
    for job_id in (uuid.uuid4().hex, "no such job", "crm-7"):
        response = await client.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 404 and problem_code(response) == "job_not_found", response.text


async def test_a_running_job_is_canceled_then_deleted_and_writes_nothing_after(
    client: httpx.AsyncClient, js: JetStreamContext, store: Minio, tmp_path: Path
) -> None:
    """The model stops (the `canceled` event stays in JOBS for it: the job's id, nothing else),
    no results are written, and what the model reported before it stopped goes with a second
    delete."""
    job_id = await submit(client, long_english_clip(tmp_path / "long.wav", 150), language="en")
    await wait_for_record(js, job_id, lambda job: job["state"] == "transcribing", timeout=180)

    assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 204

    await assert_tombstone(js, job_id)
    # The model takes the next job only once the canceled run has ended (one job at a time).
    following = await submit(client, JFK, language="en")
    assert (await finished_job(client, js, following, timeout=300))["state"] == "completed"
    for kind in (catalogue.TRANSCRIBED, catalogue.COMPLETED, catalogue.FAILED):
        assert await stored_events(js, catalogue.JOBS, kind.subject(job_id)) == 0, kind.type
    assert stored_keys(store, "results", f"{job_id}/") == []
    assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 204
    assert await stored_events(js, catalogue.JOBS, catalogue.job_events_subject(job_id)) == 1
    assert await stored_events(js, catalogue.JOBS, catalogue.CANCELED.subject(job_id)) == 1
    assert await stored_events(js, catalogue.SEGMENTS, catalogue.SEGMENT.subject(job_id)) == 0
    assert stored_keys(store, "uploads", f"{API_PREFIX}{job_id}/") == []
    await assert_tombstone(js, job_id)


async def test_klipnote_delete(
    stack: EmbeddedStack, client: httpx.AsyncClient, js: JetStreamContext, tmp_path: Path
) -> None:
    """Another system's request for a model that is off: the router fails it at once, so the job
    ends without a model's time."""
    event = requested_event(ObjectRef(bucket="uploads", key="crm/none.flac"), model="belle2")
    headers, body = binding.encode(event, "binary")
    headers["Nats-Msg-Id"] = event.get_id()
    await js.publish(catalogue.REQUESTED.subject(f"crm-{event.get_id()}"), body, headers=headers)
    job_id = job_id_for(event, TranscriptionRequested.model_validate(event.get_data()))
    assert (await wait_for_state(js, job_id, {"failed"}))["error"]["code"] == "model_disabled"
    api = ["--api", stack.api_url]

    done = await asyncio.to_thread(klipnote, "delete", job_id, *api, cache=tmp_path)

    assert done.returncode == 0, done.stderr
    assert f"job {job_id} deleted" in done.stderr
    assert (await client.get(f"/v1/jobs/{job_id}")).status_code == 404
    await assert_tombstone(js, job_id)
    again = await asyncio.to_thread(klipnote, "delete", job_id, *api, cache=tmp_path)
    assert again.returncode == 0, again.stderr
    unknown = await asyncio.to_thread(klipnote, "delete", "0" * 32, *api, cache=tmp_path)
    assert unknown.returncode == 5 and "no job" in unknown.stderr
    unnamed = await asyncio.to_thread(klipnote, "delete", *api, cache=tmp_path)
    assert unnamed.returncode == 2 and "job" in unnamed.stderr  # never "the last one" by default


# -- a dropped file's job, deleted, and the same file put back -----------------------------------


@dataclass
class Folder:
    """The store's listing narrowed to one folder of the uploads bucket (this test's own): the
    reconcile run here leaves the session's other objects alone."""

    store: Minio
    prefix: str

    def list_objects(self, bucket_name: str, *, recursive: bool = False) -> Iterator[Listed]:
        return self.store.list_objects(bucket_name, self.prefix, recursive=recursive)

    def stat_object(self, bucket_name: str, object_name: str) -> Listed:
        return self.store.stat_object(bucket_name, object_name)


async def test_a_dropped_file_put_back_after_its_job_was_deleted_makes_no_job(
    client: httpx.AsyncClient,
    js: JetStreamContext,
    store: Minio,
    in_process: Gateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same object version (the same bytes under the same key) has the same job id: a
    notification of it again, the reconcile and a request by reference all meet the tombstone."""
    folder = f"drops-{uuid.uuid4().hex}/"
    key = f"{folder}jfk.flac"
    etag = await put(store, key, JFK)
    job_id = object_job_id("uploads", key, etag)
    await js.publish(catalogue.STORAGE_UPLOADS_SUBJECT, encoded(minio_notification(key, etag)))
    assert (await finished_job(client, js, job_id))["state"] == "completed"

    assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 204
    assert not object_exists(store, "uploads", key)  # the dropped file went with its job
    assert await put(store, key, JFK) == etag  # put back: the same version
    try:
        notified = await js.publish(catalogue.STORAGE_UPLOADS_SUBJECT, encoded(minio_notification(key, etag)))
        await settled(js, catalogue.INGEST_UPLOADS, notified)
        # The reconcile's grace for young objects waits for a notification; there was one.
        monkeypatch.setattr(reconcile, "RECONCILE_GRACE_S", 0.0)
        reconciler = Reconciler(BucketDrop("uploads", in_process), Folder(store, folder), interval_s=60)
        assert await reconciler.reconcile_once() == []
        by_reference = await client.post("/v1/jobs", data={"media": f"s3://uploads/{key}"})

        assert by_reference.status_code == 409 and problem_code(by_reference) == "job_deleted", (
            by_reference.text
        )
        await assert_tombstone(js, job_id)
        assert await job_events_left(js, job_id) == (0, 0)
    finally:
        store.remove_object("uploads", key)


# -- retention -------------------------------------------------------------------------------------


def requested_event(media: ObjectRef, **data: Any) -> Any:
    request = TranscriptionRequested(media=media, **data)
    return binding.new_event(catalogue.REQUESTED, request, function="crm", event_id=uuid.uuid4().hex)


async def test_delete_after_sets_expires_at_and_one_sweep_after_it_deletes_the_job(
    client: httpx.AsyncClient, js: JetStreamContext, store: Minio, in_process: Gateway, stack: EmbeddedStack
) -> None:
    """A request from another system (`POST /v1/events`) asking for deletion an hour after the
    end: the record says when, a sweep before then keeps the job, one after deletes it through
    the same delete as the API's, and the same CloudEvent again is refused."""
    key = f"crm/{uuid.uuid4().hex}.flac"
    await put(store, key, JFK)
    event = requested_event(ObjectRef(bucket="uploads", key=key), delete_after=3600)
    headers, body = binding.encode(event, "structured")
    response = await client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    record = await finished_job(client, js, job_id)
    assert record["state"] == "completed" and record["delete_after"] == 3600, record
    expires_at = datetime.fromisoformat(record["expires_at"])
    assert expires_at == datetime.fromisoformat(record["updated_at"]) + timedelta(hours=1)
    sweeper = Sweeper(in_process, stack.settings.results_ttl_s, interval_s=60)

    assert job_id not in await sweeper.sweep_once(now=expires_at - timedelta(seconds=1))
    assert (await client.get(f"/v1/jobs/{job_id}")).status_code == 200
    assert job_id in await sweeper.sweep_once(now=expires_at + timedelta(seconds=1))

    assert (await client.get(f"/v1/jobs/{job_id}")).status_code == 404
    await assert_tombstone(js, job_id)
    # Its media is not its own: another system's request named an object in the uploads bucket,
    # whose own job (by bucket, key and eTag) is another; a delete leaves it to that one.
    assert object_exists(store, "uploads", key)
    store.remove_object("uploads", key)
    assert stored_keys(store, "results", f"{job_id}/") == []
    assert await job_events_left(js, job_id) == (0, 0)
    assert job_id not in await sweeper.sweep_once(now=expires_at + timedelta(days=1))  # gone for good
    again = await client.post("/v1/events", content=body, headers=headers)
    assert again.status_code == 409 and problem_code(again) == "job_deleted", again.text


def test_expiry_is_delete_after_else_results_ttl_s_after_the_end() -> None:
    ended = utcnow()
    media = ObjectRef(bucket="uploads", key="a.flac")
    job = JobRecord(id="a", state=JobState.COMPLETED, media=media, updated_at=ended)
    assert expiry(job, 86400) == ended + timedelta(days=1)
    assert expiry(job, 0) is None  # RESULTS_TTL_S 0: kept for ever
    asked = job.model_copy(update={"delete_after": 60})
    assert expiry(asked, 86400) == expiry(asked, 0) == ended + timedelta(minutes=1)
    now = job.model_copy(update={"delete_after": 0})
    assert expiry(now, 86400) == ended  # deleted by the next sweep


def test_a_job_that_ended_before_retention_existed_is_never_swept() -> None:
    # An upgrade must not delete what ended before retention existed: its record has no expires_at.
    long_ago = utcnow() - timedelta(days=400)
    media = ObjectRef(bucket="uploads", key="a.flac")
    old = JobRecord(id="a", state=JobState.COMPLETED, media=media, updated_at=long_ago)
    assert retention.expires_at(old) is None
    timed = old.model_copy(update={"expires_at": long_ago})
    assert retention.expires_at(timed) == long_ago
    running = JobRecord(id="b", state=JobState.TRANSCRIBING, media=media, expires_at=long_ago)
    assert retention.expires_at(running) is None


@pytest.mark.parametrize("delete_after", [-1, 10 * 365 * 24 * 3600 + 1])
async def test_a_delete_after_out_of_range_is_refused(client: httpx.AsyncClient, delete_after: int) -> None:
    event = requested_event(ObjectRef(bucket="uploads", key="crm/never.flac"))
    headers, body = binding.encode(event, "structured")
    document = json.loads(body)
    document["data"]["delete_after"] = delete_after

    response = await client.post("/v1/events", content=json.dumps(document).encode(), headers=headers)

    assert response.status_code == 400 and problem_code(response) == "malformed_event", response.text
    assert "delete_after" in response.json()["detail"]["message"]


@pytest.mark.parametrize("setting", ["results_ttl_s", "retention_sweep_interval_s"])
def test_negative_retention_settings_are_refused(setting: str) -> None:
    with pytest.raises(ValidationError, match=setting):
        Settings(**{setting: -1})


# -- what a delete may remove of the uploads bucket ------------------------------------------------


async def test_a_delete_removes_only_media_that_is_the_jobs_own(
    client: httpx.AsyncClient, store: Minio
) -> None:
    # A job made by naming a stored object owns that object version only: the file dropped again
    # under the same name (another eTag, another job) stays, and so does another job's API upload
    # named by reference.
    key = f"own/{uuid.uuid4().hex}.flac"
    await put(store, key, JFK)
    named = await client.post("/v1/jobs", data={"media": f"s3://uploads/{key}", "formats": "txt"})
    assert named.status_code == 202, named.text
    await put(store, key, AUDIO / "librispeech-1995-1837-0001.wav")  # fixed and dropped again

    uploaded = await submit(client, JFK, formats="txt")
    upload_key = (await client.get(f"/v1/jobs/{uploaded}")).json()["media"]["key"]
    assert upload_key.startswith(f"{API_PREFIX}{uploaded}/")
    borrowed = await client.post("/v1/jobs", data={"media": f"s3://uploads/{upload_key}", "formats": "txt"})
    assert borrowed.status_code == 202, borrowed.text

    for job_id in (named.json()["id"], borrowed.json()["id"]):
        assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 204
        assert (await client.get(f"/v1/jobs/{job_id}")).status_code == 404

    assert object_exists(store, "uploads", key)  # the newer file: another job's
    assert object_exists(store, "uploads", upload_key)  # the other job's upload
    assert (await client.delete(f"/v1/jobs/{uploaded}")).status_code == 204
    assert not object_exists(store, "uploads", upload_key)  # its own job takes it


async def test_a_dropped_object_unchanged_goes_with_its_job(client: httpx.AsyncClient, store: Minio) -> None:
    key = f"own/{uuid.uuid4().hex}.flac"
    await put(store, key, JFK)
    named = await client.post("/v1/jobs", data={"media": f"s3://uploads/{key}", "formats": "txt"})
    assert named.status_code == 202, named.text

    assert (await client.delete(f"/v1/jobs/{named.json()['id']}")).status_code == 204

    assert not object_exists(store, "uploads", key)


async def test_with_the_bus_gone_cancel_delete_and_reads_answer_503_bus_unavailable(
    stack: EmbeddedStack,
) -> None:
    # A real connection to the stack's NATS, closed under a running API: never a bare 500.
    settings = stack.settings
    connection = await nats.connect(settings.nats_url)
    js = connection.jetstream()
    runtime = Runtime(settings, Publisher(js, settings), js)
    jobs = await JobStore.open(runtime)
    s3 = storage.client(settings)
    gateway = Gateway(settings, jobs, runtime.publisher, s3, ResultLinks(s3, 60))
    app = create_app(settings, Admission.from_settings(settings), lambda: gateway)
    await connection.close()

    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest", headers=headers) as http:
        job_id = uuid.uuid4().hex
        for method, path in (
            ("GET", f"/v1/jobs/{job_id}"),
            ("POST", f"/v1/jobs/{job_id}/cancel"),
            ("DELETE", f"/v1/jobs/{job_id}"),
            ("GET", "/v1/jobs"),
        ):
            response = await http.request(method, path)
            assert response.status_code == 503, (method, path, response.text)
            assert problem_code(response) == "bus_unavailable", (method, path, response.text)
