"""Bucket drop and reconcile: MinIO's S3 event records on `storage.uploads` and a periodic listing
of the uploads bucket, each turning an object into exactly one job.

The parser is tested against MinIO's documented NATS payload (../shared/reference) and variants
built from it. Then, against a stack of this module's own (real nats-server, real SeaweedFS, the
real functions, a reconcile every second): SeaweedFS has no notifications, so the tests that
publish MinIO's payload on `storage.uploads` stand in for MinIO's NATS notifier (as MinIO does,
they set no Nats-Msg-Id); everything else is the real path."""

from __future__ import annotations

import asyncio
import copy
import itertools
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from minio import Minio
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from events import binding, catalogue, storage
from events.lifecycle import JobState
from events.models import DeadLetter, ObjectRef, TranscriptionRequested
from events.settings import Settings
from functions.ingest.ids import object_job_id
from functions.ingest.index import Version, named_version
from functions.ingest.naming import display_filename
from functions.ingest.schema import JobRecord
from functions.ingest.uploads.drop import BucketDrop
from functions.ingest.uploads.notification import NOTIFICATION_TYPE, decode_notification
from functions.ingest.uploads.reconcile import RECONCILE_GRACE_S, Reconciler
from infra.embedded.stack import EmbeddedStack
from tests.support.jobs import (
    finished_job,
    messages_until,
    started_stack,
    wait_for_job_end,
    wait_for_state,
)
from tests.support.paths import AUDIO, WEBHOOK_SECRET, reference
from tests.support.quality import wer
from tests.support.uploads import (
    MINIO_PUT,
    encoded,
    jobs_of,
    minio_notification,
    minio_payload,
    notify,
    put,
    requests_published,
)
from tests.support.webhook_receiver import serving

ALL_STATES = {"requested", "queued", "transcribing", "transcribed", "completed", "failed"}


# -- the parser ------------------------------------------------------------------------------


def test_minio_documented_put_event_is_wrapped_for_the_handler() -> None:
    event = decode_notification(None, MINIO_PUT.read_bytes())
    assert event.get_type() == NOTIFICATION_TYPE
    assert event.get_type() not in catalogue.KINDS_BY_TYPE  # internal, never published
    # The host logs the subject as the job id: the object's.
    assert event.get_subject() == object_job_id(
        "uploads", "in/Meeting 01.wav", "bcb093e2627818d7278803006ff96384"
    )


def test_job_id_is_one_per_object_version() -> None:
    one = object_job_id("uploads", "a b.wav", "abc")
    assert one == object_job_id("uploads", "a b.wav", '"abc"')  # quoted as S3 listings quote it
    assert one == object_job_id("uploads", "a b.wav", "abc")  # as the API's requests by reference
    assert one != object_job_id("uploads", "a b.wav", "abd")
    assert one != object_job_id("uploads", "a  b.wav", "abc")
    assert one != object_job_id("other", "a b.wav", "abc")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (encoded({k: v for k, v in minio_payload().items() if k != "Records"}), "Records: Field required"),
        (encoded({**minio_payload(), "Records": []}), "Records: List should have at least 1 item"),
        (encoded({**minio_payload(), "Records": {"s3": {}}}), "Records: Input should be a valid list"),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(binding.MalformedEvent, match=reason):
        decode_notification(None, body)


def test_wrong_record_shapes_are_refused_with_where_they_are() -> None:
    no_key = minio_payload()
    del no_key["Records"][0]["s3"]["object"]["key"]
    with pytest.raises(binding.MalformedEvent, match=r"Records\.0\.s3\.object\.key: Field required"):
        decode_notification(None, encoded(no_key))
    numeric_key = minio_payload()
    numeric_key["Records"][0]["s3"]["object"]["key"] = 7
    with pytest.raises(binding.MalformedEvent, match=r"Records\.0\.s3\.object\.key"):
        decode_notification(None, encoded(numeric_key))
    no_etag = minio_payload()
    del no_etag["Records"][0]["s3"]["object"]["eTag"]
    with pytest.raises(binding.MalformedEvent, match=r"without s3\.object\.eTag"):
        decode_notification(None, encoded(no_etag))
    negative = minio_notification("x.wav", "e", size=-1)
    with pytest.raises(binding.MalformedEvent, match="size"):
        decode_notification(None, encoded(negative))


# -- the handler, with a stand-in for the gateway ---------------------------------------------


class StandInIntake:
    """Stands in for the gateway (an `Intake`): records what would be submitted; its job records
    are a dict."""

    def __init__(self) -> None:
        self.records: dict[str, JobRecord] = {}
        self.requests: list[TranscriptionRequested] = []
        self.requested = asyncio.Event()

    async def get_job(self, job_id: str) -> JobRecord | None:
        return self.records.get(job_id)

    async def deleted(self, job_id: str) -> bool:
        return False  # these tests delete no job (test_delete_retention.py does)

    async def known(self, job_id: str) -> bool:
        return job_id in self.records

    async def referenced_media(self) -> dict[Version, float]:
        """What the job index keeps of these records (`JobIndex.referenced`)."""
        named: dict[Version, float] = {}
        for record in self.records.values():
            version = named_version(record.media, record.id, Settings().uploads_bucket)
            if version is not None:
                named[version] = max(named.get(version, 0.0), record.created_at.timestamp())
        return named

    async def submit(self, request: TranscriptionRequested, traceparent: str | None = None) -> JobRecord:
        assert request.job_id is not None
        self.requests.append(request)
        record = JobRecord(id=request.job_id, state=JobState.REQUESTED, media=request.media)
        self.records.setdefault(request.job_id, record)
        self.requested.set()
        return self.records[request.job_id]


async def handled(intake: StandInIntake, *documents: dict[str, Any]) -> list[TranscriptionRequested]:
    drop = BucketDrop(Settings().uploads_bucket, intake)
    for document in documents:
        async for _ in drop.handle(decode_notification(None, encoded(document))):
            pass
    return intake.requests


async def test_the_documented_put_requests_one_job_with_its_options() -> None:
    (request,) = await handled(StandInIntake(), minio_payload())
    assert request.job_id == object_job_id("uploads", "in/Meeting 01.wav", "bcb093e2627818d7278803006ff96384")
    assert request.media.bucket == "uploads"
    assert request.media.key == "in/Meeting 01.wav"  # in%2FMeeting+01.wav, unescaped
    assert request.media.size == 4004 and request.media.content_type == "audio/wav"
    assert request.language == "de"  # X-Amz-Meta-Language
    assert request.filename == "Meeting 01.wav"
    assert request.model is None and request.webhook is None


async def test_repeats_of_a_notification_request_one_job() -> None:
    document = minio_payload()
    assert len(await handled(StandInIntake(), *[copy.deepcopy(document) for _ in range(5)])) == 1


async def test_escaped_keys_are_unescaped_and_the_filename_is_the_last_component() -> None:
    keys = ["a+b/c d%2Fe é 中文.wav", "..hidden/..passwd", "x/..y/ z.mp3", "100% sure?.wav"]
    requests = await handled(
        StandInIntake(), *[minio_notification(key, f"e{i}") for i, key in enumerate(keys)]
    )
    assert [r.media.key for r in requests] == keys  # the key is just a key
    # The name as the user wrote it, for the record and downloads (the key alone is fetched).
    assert [r.filename for r in requests] == ["c d%2Fe é 中文.wav", "..passwd", "z.mp3", "100% sure?.wav"]
    escaped = minio_notification("a+b/c.wav", "e")["Records"][0]["s3"]["object"]["key"]
    assert escaped == "a%2Bb%2Fc.wav"


@pytest.mark.parametrize("key", ["../../etc/passwd", "x/../y.wav", "./a.wav", "a/."])
def test_a_key_with_a_dot_segment_is_refused_with_a_reason(key: str) -> None:
    """MinIO refuses such names and the minio client will not fetch them: a notification
    naming one is dead-lettered rather than made a job that could only fail late."""
    with pytest.raises(binding.MalformedEvent, match=r"'\.' or '\.\.' path segment"):
        decode_notification(None, encoded(minio_notification(key, "e")))


async def test_multipart_upload_is_a_created_object_with_its_dash_n_etag() -> None:
    document = minio_notification(
        "big/talk.mp4",
        "a3f0c2d1e4b5a6978877665544332211-3",
        event_name="s3:ObjectCreated:CompleteMultipartUpload",
    )
    (request,) = await handled(StandInIntake(), document)
    assert request.media.etag == "a3f0c2d1e4b5a6978877665544332211-3"
    assert request.job_id == object_job_id("uploads", "big/talk.mp4", "a3f0c2d1e4b5a6978877665544332211-3")


@pytest.mark.parametrize("event_name", ["s3:ObjectCreated:Post", "s3:ObjectCreated:Copy"])
async def test_every_object_created_event_requests_a_job(event_name: str) -> None:
    assert len(await handled(StandInIntake(), minio_notification("k.wav", "e", event_name=event_name))) == 1


async def test_deletes_other_buckets_api_uploads_and_folder_markers_make_no_job() -> None:
    delete = minio_notification("gone.wav", "e", event_name="s3:ObjectRemoved:Delete")
    del delete["Records"][0]["s3"]["object"]["eTag"]  # MinIO sends none on a delete
    del delete["Records"][0]["s3"]["object"]["size"]
    assert decode_notification(None, encoded(delete)).get_subject() is None
    ignored = [
        delete,
        minio_notification("in.wav", "e", bucket="results"),
        minio_notification("klipnote-api/0123/talk.wav", "e"),
        minio_notification("folder/", "e", size=0),
    ]
    assert await handled(StandInIntake(), *ignored) == []


async def test_a_zero_byte_object_still_gets_a_job() -> None:
    # The model function fails it with `media_empty` (checked on the stack below).
    (request,) = await handled(StandInIntake(), minio_notification("empty.wav", "d41d8cd9", size=0))
    assert request.media.size == 0


async def test_options_ride_in_user_metadata_whatever_the_case_of_their_names() -> None:
    metadata = {
        "x-amz-meta-MODEL": "whisperx",
        "X-AMZ-META-LANGUAGE": "EN",
        "X-Amz-Meta-Formats": "srt, VTT, docx",
        "X-Amz-Meta-Webhook": "https://hooks.example.com/klipnote",
        "language": "fr",  # not user metadata: ignored
    }
    (request,) = await handled(StandInIntake(), minio_notification("k.wav", "e", metadata=metadata))
    assert request.model == "whisperx" and request.language == "en"
    assert request.formats == ["srt", "vtt"]  # the unknown one is dropped (and logged)
    assert request.webhook is not None and request.webhook.url == "https://hooks.example.com/klipnote"
    assert request.webhook.headers == {}  # never taken from metadata: anyone reading the object sees it


async def test_a_webhook_that_is_not_a_url_is_dropped_and_the_job_still_made() -> None:
    document = minio_notification("k.wav", "e", metadata={"X-Amz-Meta-Webhook": "ftp://x"})
    (request,) = await handled(StandInIntake(), document)
    assert request.webhook is None


# -- the reconcile, with a stand-in store -----------------------------------------------------


class StandInObject:
    def __init__(self, key: str, etag: str, age_s: float) -> None:
        self.object_name, self.etag, self.size = key, etag, 11
        self.last_modified = datetime.now(UTC) - timedelta(seconds=age_s)
        self.is_dir = key.endswith("/")
        self.content_type = "audio/flac"
        self.metadata = {"X-Amz-Meta-Language": "en", "Content-Type": "audio/flac", "ETag": f'"{etag}"'}


class FlakyStore:
    """Stands in for the S3 store: down for its first listings, then holding a few objects."""

    def __init__(self, down_for: int) -> None:
        self.down_for = down_for
        self.listings = 0
        self.objects = [
            StandInObject("old.flac", "e1", age_s=60),
            StandInObject("just-now.flac", "e2", age_s=0),  # left to its notification this round
            StandInObject("klipnote-api/j/x.flac", "e3", age_s=60),
            StandInObject("dir/", "e4", age_s=60),
            StandInObject("a/../b.flac", "e5", age_s=60),  # the client would refuse to stat it
        ]

    def list_objects(self, bucket_name: str, *, recursive: bool = False) -> Iterator[StandInObject]:
        self.listings += 1
        if self.listings <= self.down_for:
            raise ConnectionRefusedError("store down")
        assert recursive
        return iter(self.objects)

    def stat_object(self, bucket_name: str, object_name: str) -> StandInObject:
        if ".." in object_name.split("/"):
            raise ValueError("object name with '.' or '..' path segment is not supported")
        return next(obj for obj in self.objects if obj.object_name == object_name)


async def test_reconcile_survives_a_store_that_is_down_and_requests_what_no_notification_announced() -> None:
    store = FlakyStore(down_for=2)
    intake = StandInIntake()
    reconciler = Reconciler(BucketDrop(Settings().uploads_bucket, intake), store, interval_s=0.01)
    task = asyncio.create_task(reconciler.reconcile_forever())
    try:
        await asyncio.wait_for(intake.requested.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert store.listings >= 3
    (request,) = intake.requests
    assert request.media.key == "old.flac" and request.language == "en"
    assert request.job_id == object_job_id("uploads", "old.flac", "e1")
    # The next round finds the job and requests nothing more.
    assert await reconciler.reconcile_once() == []


async def test_reconcile_leaves_objects_that_another_systems_request_named() -> None:
    """Another system's request derives its own job id; the object it names was announced."""
    store = FlakyStore(down_for=0)
    store.objects = [
        StandInObject("crm/1.flac", "v1", age_s=60),  # named with its eTag
        StandInObject("crm/2.flac", "v1", age_s=60),  # named without one, after it was stored
        StandInObject("crm/3.flac", "v2", age_s=60),  # named without one, before this version
        StandInObject("crm/4.flac", "v2", age_s=60),  # another version than the one named
    ]
    intake = StandInIntake()
    now = datetime.now(UTC)
    for name, etag, made in [("1", "v1", now), ("2", None, now), ("3", None, now - timedelta(hours=1)),
                             ("4", "v1", now)]:  # fmt: skip
        media = ObjectRef(bucket="uploads", key=f"crm/{name}.flac", etag=etag)
        record = JobRecord(id=uuid.uuid4().hex, state=JobState.COMPLETED, media=media, created_at=made)
        intake.records[record.id] = record
    reconciler = Reconciler(BucketDrop(Settings().uploads_bucket, intake), store, interval_s=60)

    await reconciler.reconcile_once()

    assert [request.media.key for request in intake.requests] == ["crm/3.flac", "crm/4.flac"]


# -- on the running stack ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def drop_stack(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[EmbeddedStack]:
    """This module's own stack: the session one never reconciles; this one every second, and
    without the stand-in for MinIO's notifier, so every job here is the reconcile's or a test's
    own notification's (tests/system/test_bucket_watch.py tests the stand-in)."""
    settings = Settings(
        model_cache_dir=model_cache,
        enabled_models=["whisperx"],
        ack_wait_s=10.0,
        uploads_reconcile_interval_s=1.0,
        uploads_watch=False,
        webhook_secret=WEBHOOK_SECRET,
        webhook_allowed_hosts=["127.0.0.1"],
    )
    yield from started_stack(tmp_path_factory, "drop-stack", settings)


@pytest.fixture(scope="module")
async def drop_js(drop_stack: EmbeddedStack) -> AsyncIterator[JetStreamContext]:
    connection = await nats.connect(drop_stack.settings.nats_url)
    yield connection.jetstream()
    await connection.close()


@pytest.fixture(scope="module")
def store(drop_stack: EmbeddedStack) -> Minio:
    return storage.client(drop_stack.settings)


@pytest.fixture
async def drop_api(drop_stack: EmbeddedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=drop_stack.api_url, timeout=60) as client:
        yield client


async def reconcile_round(store: Minio, js: JetStreamContext) -> dict[str, Any]:
    """Wait until the reconcile has listed every object put before now: a 0-byte probe put now
    gets its job only from a round that listed the bucket after it, and everything older.
    Returns the probe's job record."""
    key = f"probes/{uuid.uuid4().hex}.wav"
    etag = await put(store, key, None)
    return await wait_for_state(
        js, object_job_id("uploads", key, etag), ALL_STATES, timeout=RECONCILE_GRACE_S + 30
    )


async def test_a_storm_of_one_notification_makes_exactly_one_completed_job(
    store: Minio, drop_js: JetStreamContext, drop_api: httpx.AsyncClient
) -> None:
    """MinIO's notifier (stood in for) repeating one event 20 times, as its queue dir may."""
    key = "drops/storm ü 1.flac"
    etag = await put(store, key, AUDIO / "jfk.flac")  # no metadata on the object itself
    # The language rides only in the notification: a job in English was made from it.
    document = minio_notification(key, etag, size=(AUDIO / "jfk.flac").stat().st_size,
                                  metadata={"X-Amz-Meta-Language": "en"})  # fmt: skip
    await notify(drop_js, document, times=20)
    job_id = object_job_id("uploads", key, etag)

    job = await finished_job(drop_api, drop_js, job_id)
    assert job["state"] == "completed", job
    assert job["language"] == "en" and job["filename"] == "storm ü 1.flac"
    await reconcile_round(store, drop_js)  # and the reconcile, passing over it, adds nothing
    assert [record.id for record in await jobs_of(drop_js, key)] == [job_id]
    assert await requests_published(drop_js, job_id) == 1


async def test_a_file_dropped_without_notification_is_transcribed_by_the_reconcile(
    store: Minio, drop_js: JetStreamContext, drop_api: httpx.AsyncClient
) -> None:
    """SeaweedFS sends no notification: the reconcile alone turns the file into a transcript."""
    key = "Eingang/Präsident Kennedy/jfk - speech 1961 ☃.flac"
    etag = await put(store, key, AUDIO / "jfk.flac", {"X-Amz-Meta-Formats": "srt,txt"})
    job_id = object_job_id("uploads", key, etag)

    job = await finished_job(drop_api, drop_js, job_id)
    assert job["state"] == "completed", job
    assert job["media"]["key"] == key and job["filename"] == display_filename("jfk - speech 1961 ☃.flac")
    assert sorted(job["results"]) == ["srt", "txt"]  # the option from the object's metadata
    transcript = (await drop_api.get(f"/v1/jobs/{job_id}/transcript.txt")).text
    assert wer(reference("jfk"), transcript) <= 0.10, transcript


async def test_a_file_dropped_into_the_bucket_ends_as_a_completed_job_and_a_verified_webhook(
    store: Minio, drop_js: JetStreamContext, drop_api: httpx.AsyncClient
) -> None:
    """No HTTP call starts it: a file and its metadata in the bucket, a signed call at the end."""
    async with serving(WEBHOOK_SECRET) as receiver:
        key = f"dropbox/{uuid.uuid4().hex}/interview.wav"
        metadata = {"X-Amz-Meta-Webhook": f"{receiver.url}/hook/dropped", "X-Amz-Meta-Language": "en"}
        etag = await put(store, key, AUDIO / "librispeech-1995-1837-0001.wav", metadata)
        job_id = object_job_id("uploads", key, etag)

        job = await finished_job(drop_api, drop_js, job_id)
        [hit] = await receiver.wait_hits("dropped", 1, timeout=60)

    assert job["state"] == "completed", job
    assert hit.payload is not None, "the signature did not verify"
    assert hit.payload["type"] == "transcription.completed"
    assert hit.payload["data"]["id"] == job_id and hit.payload["data"]["state"] == "completed"
    async with httpx.AsyncClient() as plain:
        text = (await plain.get(hit.payload["data"]["links"]["txt"])).text
    assert wer(reference("librispeech-1995-1837-0001"), text) <= 0.10, text


async def test_a_late_notification_after_the_reconcile_made_the_job_adds_nothing(
    store: Minio, drop_js: JetStreamContext
) -> None:
    """A notification delivered late (MinIO's queue dir after an outage) for an object the
    reconcile already requested; a second notification behind it shows the consumer went past it."""
    key, after = "late/first.wav", "late/second.wav"
    etag = await put(store, key, None)
    job_id = object_job_id("uploads", key, etag)
    await wait_for_state(drop_js, job_id, ALL_STATES, timeout=RECONCILE_GRACE_S + 30)

    await notify(drop_js, minio_notification(key, etag, size=0), times=3)
    after_etag = await put(store, after, None)
    await notify(drop_js, minio_notification(after, after_etag, size=0))
    await wait_for_state(drop_js, object_job_id("uploads", after, after_etag), ALL_STATES)

    assert [record.id for record in await jobs_of(drop_js, key)] == [job_id]
    assert await requests_published(drop_js, job_id) == 1


async def test_a_zero_byte_object_gets_a_failed_job_with_a_clear_code(
    store: Minio, drop_js: JetStreamContext
) -> None:
    key = "drops/empty recording.wav"
    etag = await put(store, key, None)
    end = await wait_for_job_end(drop_js, object_job_id("uploads", key, etag), timeout=RECONCILE_GRACE_S + 60)
    assert end.get_type() == catalogue.FAILED.type
    assert end.get_data()["code"] == "media_empty"


async def test_a_malformed_notification_is_dead_lettered_and_the_next_one_is_handled(
    store: Minio, drop_js: JetStreamContext, drop_api: httpx.AsyncClient
) -> None:
    key = "drops/after the bad one.flac"
    etag = await put(store, key, AUDIO / "jfk.flac")
    no_etag = minio_notification("x.wav", "e")
    del no_etag["Records"][0]["s3"]["object"]["eTag"]
    bad = [
        (b"{not json", "not JSON"),
        (encoded({"EventName": "s3:ObjectCreated:Put", "Key": "uploads/x"}), "Records: Field required"),
        (encoded(no_etag), "without s3.object.eTag"),
    ]

    async def publish() -> None:
        for body, _ in bad:
            await drop_js.publish(catalogue.STORAGE_UPLOADS_SUBJECT, body)
        await notify(drop_js, minio_notification(key, etag, metadata={"X-Amz-Meta-Language": "en"}))

    read = itertools.count(1)
    messages = await messages_until(
        drop_js,
        catalogue.dead_letter_subject(catalogue.INGEST_UPLOADS.durable),
        lambda _: next(read) >= len(bad),
        None,
        DeliverPolicy.NEW,
        per_message=30,
        after_subscribing=publish,
    )
    letters = [binding.parse_data(binding.decode(msg.headers, msg.data), DeadLetter) for msg in messages]
    for letter, (body, reason) in zip(letters, bad, strict=True):
        assert reason in letter.reason
        assert letter.consumer == "ingest-uploads" and letter.subject == catalogue.STORAGE_UPLOADS_SUBJECT
        assert letter.body == body.decode()  # MinIO's record is kept whole
    job = await finished_job(drop_api, drop_js, object_job_id("uploads", key, etag))
    assert job["state"] == "completed" and job["language"] == "en"  # made by the notification


async def test_api_jobs_are_not_made_second_jobs_by_the_reconcile(
    store: Minio, drop_js: JetStreamContext, drop_api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """An upload (stored under klipnote-api/) and a request by reference to an object in the bucket."""
    clip = tmp_path / "api clip.flac"
    shutil.copy(AUDIO / "jfk.flac", clip)
    with open(clip, "rb") as body:
        uploaded = await drop_api.post("/v1/jobs", files={"file": (clip.name, body)})
    assert uploaded.status_code == 202, uploaded.text
    key = "drops/by reference ü.flac"
    await put(store, key, AUDIO / "jfk.flac")
    referenced = await drop_api.post("/v1/jobs", data={"media": f"s3://uploads/{key}"})
    assert referenced.status_code == 202, referenced.text

    await reconcile_round(store, drop_js)
    for job in (uploaded.json(), referenced.json()):
        assert [record.id for record in await jobs_of(drop_js, job["media"]["key"])] == [job["id"]]
        assert await requests_published(drop_js, job["id"]) == 1
        assert (await finished_job(drop_api, drop_js, job["id"]))["state"] == "completed"


async def test_folder_markers_make_no_job(store: Minio, drop_js: JetStreamContext) -> None:
    await put(store, "drops/a folder/", None)
    await reconcile_round(store, drop_js)
    assert await jobs_of(drop_js, "drops/a folder/") == []
