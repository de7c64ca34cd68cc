"""Bucket drops at once on the embedded stack: the stand-in for MinIO's bucket notifier
(`infra.embedded.notifier_standin`) follows SeaweedFS's filer metadata and publishes MinIO's S3
event record on `storage.uploads`, so a file dropped with an S3 client becomes a job within about
a second. This module's stack runs with the reconcile off (`UPLOADS_RECONCILE_INTERVAL_S=0`): every
job here is the stand-in's. The reconcile's own tests (tests/ingest/test_uploads.py) run with the
stand-in off (`UPLOADS_WATCH=false`), so neither passes by the other.

A negative (no record, no job) is read up to a probe: the stand-in announces in the filer's order,
so once a file put after the others is announced, every earlier event has been handled.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
import nats
import pytest
from minio import Minio
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from pydantic import ValidationError

from events import catalogue, provision, storage
from events.settings import Settings
from functions.ingest.ids import object_job_id
from functions.ingest.uploads.notification import decode_notification
from infra.embedded import notifier_standin
from infra.embedded.notifier_standin import (
    CHILD,
    DocumentReader,
    StoredFile,
    UnreadableEvent,
    documents,
    filer_event,
)
from infra.embedded.stack import EmbeddedStack
from tests.deploy.test_deploy_nats import PASSWORD, connect, secured_server
from tests.support.jobs import finished_job, messages_until, started_stack, wait_for_record
from tests.support.paths import AUDIO
from tests.support.uploads import jobs_of, minio_payload, requests_published

BUCKET = "uploads"


@pytest.fixture(scope="module")
def watch_stack(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[EmbeddedStack]:
    """The embedded stack with the stand-in on and the reconcile off (one for this module)."""
    settings = Settings(
        model_cache_dir=model_cache,
        enabled_models=["whisperx"],
        uploads_reconcile_interval_s=0,
        uploads_watch=True,
        beam_size=1,
    )
    yield from started_stack(tmp_path_factory, "watch-stack", settings)


@pytest.fixture(scope="module")
async def watch_js(watch_stack: EmbeddedStack) -> AsyncIterator[JetStreamContext]:
    connection = await nats.connect(watch_stack.settings.nats_url)
    yield connection.jetstream()
    await connection.close()


@pytest.fixture
async def watch_api(watch_stack: EmbeddedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=watch_stack.api_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def store(watch_stack: EmbeddedStack) -> Minio:
    return storage.client(watch_stack.settings)


async def drop(store: Minio, key: str, data: bytes, bucket: str = BUCKET, **options: Any) -> str:
    """Put `data` under `key` with the minio client, as a person dropping a file would; its eTag."""
    result = await asyncio.to_thread(store.put_object, bucket, key, io.BytesIO(data), len(data), **options)
    assert result.etag
    return str(result.etag)


async def announced_until(js: JetStreamContext, probe_key: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Every record on `storage.uploads` up to and including the one announcing `probe_key`."""
    messages = await messages_until(
        js,
        catalogue.STORAGE_UPLOADS_SUBJECT,
        lambda msg: json.loads(msg.data)["Key"] == f"{BUCKET}/{probe_key}",
        timeout,
    )
    return [json.loads(msg.data) for msg in messages]


async def probe(store: Minio, js: JetStreamContext, folder: str) -> list[dict[str, Any]]:
    """Drop a probe into `folder` and read every record up to its own (see the module's docstring)."""
    key = f"{folder}/probe-{uuid.uuid4().hex}.wav"
    await drop(store, key, (AUDIO / "librispeech-1995-1837-0001.wav").read_bytes())
    return await announced_until(js, key)


def keys_of(records: list[dict[str, Any]], prefix: str) -> list[str]:
    return [record["Key"] for record in records if record["Key"].startswith(prefix)]


# -- a drop becomes a job at once --------------------------------------------------------------


async def test_a_file_dropped_into_the_bucket_becomes_a_job_without_the_reconcile(
    watch_stack: EmbeddedStack, watch_js: JetStreamContext, watch_api: httpx.AsyncClient, store: Minio
) -> None:
    """The reconcile is off: only the stand-in can announce the file. Its job completes with
    the options of the object's user metadata, and the record it published is MinIO's."""
    assert watch_stack.settings.uploads_reconcile_interval_s == 0
    key = f"drop/{uuid.uuid4().hex}/JFK speech ü.flac"
    etag = await drop(store, key, (AUDIO / "jfk.flac").read_bytes(), metadata={"Language": "en"})
    job_id = object_job_id(BUCKET, key, etag)
    job = await finished_job(watch_api, watch_js, job_id, timeout=180)
    assert job["state"] == "completed", job
    assert job["language"] == "en"  # from the object's X-Amz-Meta-Language
    transcript = (await watch_api.get(f"/v1/jobs/{job_id}/transcript.txt")).text
    assert "ask not what your country" in transcript.lower()

    [record] = [r for r in await announced_until(watch_js, key) if r["Key"] == f"{BUCKET}/{key}"]
    # MinIO's shape (../shared/reference): every field MinIO's record has, ours has.
    assert _paths(minio_payload()) <= _paths(record)
    obj = record["Records"][0]["s3"]["object"]
    assert record["EventName"] == "s3:ObjectCreated:Put"
    assert unquote_plus(obj["key"]) == key and "/" not in obj["key"]  # escaped as MinIO escapes it
    assert obj["eTag"] == etag.strip('"') and obj["size"] == (AUDIO / "jfk.flac").stat().st_size
    assert {name.lower(): value for name, value in obj["userMetadata"].items()}["x-amz-meta-language"] == "en"
    # Ingest reads it as it reads MinIO's: the same job.
    assert decode_notification({}, json.dumps(record).encode()).get_subject() == job_id


async def test_a_multipart_upload_becomes_one_job(
    watch_stack: EmbeddedStack, watch_js: JetStreamContext, store: Minio, tmp_path: Path
) -> None:
    """Over 5 MiB the minio client uploads in parts; SeaweedFS stores each part as a file under
    `.uploads/` first. One record (CompleteMultipartUpload, the `-2` eTag), one job."""
    big = tmp_path / "jfk-96k-stereo.wav"
    await asyncio.to_thread(
        subprocess.run,
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(AUDIO / "jfk.flac"),
         "-ar", "96000", "-ac", "2", "-c:a", "pcm_f32le", str(big)],
        check=True,
    )  # fmt: skip
    data = big.read_bytes()
    assert len(data) > 5 * 2**20
    folder = f"multipart/{uuid.uuid4().hex}"
    key = f"{folder}/talk.wav"
    result = await asyncio.to_thread(store.put_object, BUCKET, key, io.BytesIO(data), -1, part_size=5 * 2**20)
    assert str(result.etag).endswith("-2")  # it really went in two parts
    job_id = object_job_id(BUCKET, key, result.etag)
    await wait_for_record(watch_js, job_id, lambda record: True, timeout=30)

    records = await probe(store, watch_js, folder)
    mine = [record for record in records if record["Key"].startswith(f"{BUCKET}/{folder}/talk")]
    assert [record["EventName"] for record in mine] == ["s3:ObjectCreated:CompleteMultipartUpload"]
    assert not [record for record in records if ".uploads" in record["Key"]]
    assert [job.id for job in await jobs_of(watch_js, key)] == [job_id]


async def test_what_is_not_a_stored_file_of_the_uploads_bucket_makes_no_job(
    watch_stack: EmbeddedStack, watch_js: JetStreamContext, store: Minio
) -> None:
    """An object in another bucket, a folder marker (`name/`) and a deletion: no record, no job."""
    folder = f"none/{uuid.uuid4().hex}"
    elsewhere = f"{folder}/elsewhere.wav"
    other_etag = await drop(store, elsewhere, b"RIFF", bucket=watch_stack.settings.results_bucket)
    await drop(store, f"{folder}/marker/", b"")
    deleted = f"{folder}/deleted.wav"
    await drop(store, deleted, b"RIFF")
    await asyncio.to_thread(store.remove_object, BUCKET, deleted)

    records = await probe(store, watch_js, folder)
    assert all(record["Records"][0]["s3"]["bucket"]["name"] == BUCKET for record in records)
    assert [key for key in keys_of(records, f"{BUCKET}/{folder}/") if "/probe-" not in key] in (
        [],  # the deletion came before its HEAD: nothing to announce
        [f"{BUCKET}/{deleted}"],  # or the HEAD came first: announced once, as MinIO would
    )
    assert not await jobs_of(watch_js, f"{folder}/marker/")
    kv = await watch_js.key_value(catalogue.JOBS_KV_BUCKET)
    results = watch_stack.settings.results_bucket
    with pytest.raises(KeyNotFoundError):
        await kv.get(object_job_id(results, elsewhere, other_etag))


# -- restarts --------------------------------------------------------------------------------


def _tail_pids(stack: EmbeddedStack) -> list[int]:
    """The running `filer.meta.tail` children of the stand-in."""
    pid = stack.child(CHILD).process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children if _running(int(child))]


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


async def _exit_of(pid: int, timeout: float = 30) -> None:
    """Until process `pid` (not ours: the stand-in's child) has exited: its pidfd turns readable."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await asyncio.wait_for(exited, timeout)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def test_a_file_dropped_while_the_filer_stream_is_down_is_announced_when_it_is_back(
    watch_stack: EmbeddedStack, watch_js: JetStreamContext, store: Minio
) -> None:
    """`filer.meta.tail` exits when the filer goes away; the stand-in starts it again from the
    last event it handled, so a file stored in between is not lost."""
    [tail] = _tail_pids(watch_stack)
    os.kill(tail, signal.SIGKILL)
    await _exit_of(tail)
    key = f"restart/{uuid.uuid4().hex}.wav"
    etag = await drop(store, key, (AUDIO / "librispeech-1995-1837-0001.wav").read_bytes())
    await wait_for_record(watch_js, object_job_id(BUCKET, key, etag), lambda record: True, timeout=30)
    assert _tail_pids(watch_stack) not in ([], [tail])  # a new one follows the filer


async def test_the_stand_in_and_the_reconcile_name_one_drop_the_same_job(
    watch_stack: EmbeddedStack, watch_js: JetStreamContext, store: Minio
) -> None:
    """With the stand-in stopped the reconcile makes the job of a drop; started again, the
    stand-in resumes from its saved position and announces the same object with the eTag the
    reconcile listed: the same job id, and still one job. (Last in the module: it turns the
    reconcile on.)"""
    watch_stack.processes.end(watch_stack.child(CHILD))
    key = f"both/{uuid.uuid4().hex}.wav"
    await drop(store, key, (AUDIO / "librispeech-1995-1837-0001.wav").read_bytes())
    watch_stack.kill("ingest")
    watch_stack.settings = watch_stack.settings.model_copy(update={"uploads_reconcile_interval_s": 1.0})
    watch_stack.restart("ingest")
    [listed] = await asyncio.to_thread(lambda: list(store.list_objects(BUCKET, prefix=key)))
    reconciled = object_job_id(BUCKET, key, listed.etag)  # the reconcile's id: from the listing
    record = await wait_for_record(watch_js, reconciled, lambda record: True, timeout=60)
    assert record["media"]["key"] == key

    watch_stack.spawn_notifier_standin()
    [announced] = [
        r for r in await announced_until(watch_js, key, timeout=60) if r["Key"] == f"{BUCKET}/{key}"
    ]
    assert decode_notification({}, json.dumps(announced).encode()).get_subject() == reconciled
    # A drop behind it whose job exists shows ingest went past the stand-in's record.
    behind = f"both/{uuid.uuid4().hex}.wav"
    behind_etag = await drop(store, behind, b"")
    await wait_for_record(watch_js, object_job_id(BUCKET, behind, behind_etag), lambda record: True, 60)
    assert [job.id for job in await jobs_of(watch_js, key)] == [reconciled]
    assert await requests_published(watch_js, reconciled) == 1


# -- as MinIO's NATS user ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """nats-server with the production permissions (infra/nats/permissions.conf)."""
    with secured_server(tmp_path_factory.mktemp("secured-nats")) as (port, _):
        yield port


async def test_the_stand_in_publishes_as_minio_s_nats_user_and_a_repeat_is_a_duplicate(
    secured_nats: int, tmp_path: Path
) -> None:
    """Connected as user `minio` (what MinIO's NATS target may do: publish `storage.uploads`,
    acks on `_INBOX.>`), the stand-in's publish is acked by STORAGE; the same object version
    announced again is a JetStream duplicate (its Nats-Msg-Id), a new version is not."""
    admin = await connect(secured_nats, "provision")
    await provision.jetstream(admin.jetstream(), Settings(), ["whisperx"])
    settings = Settings(nats_url=f"nats://minio:{PASSWORD}@127.0.0.1:{secured_nats}")
    position = notifier_standin.Position(tmp_path / "position", 0)
    standin = notifier_standin.MinioNotifierStandIn(settings, "127.0.0.1:1.2", position)
    nc = await notifier_standin.connect(settings)
    try:
        stored = StoredFile(BUCKET, "in/Meeting 01.wav", 1796176982631142965)
        first, second = (
            notifier_standin.s3_record(
                stored, etag=etag, size=100, content_type="audio/wav", metadata={}, principal="klipnote"
            )
            for etag in ("aed563ecafb4bcc5654c597a421547b2", "608367d7ab56b138608cbf35a9a32c02")
        )
        before = (await admin.jetstream().stream_info(catalogue.STORAGE.name)).state.messages
        for message in (first, first, second):
            await standin.publish(nc.jetstream(), message)
        after = (await admin.jetstream().stream_info(catalogue.STORAGE.name)).state.messages
        assert after == before + 2
    finally:
        await nc.close()
        await admin.close()


# -- what the filer prints ---------------------------------------------------------------------

# One document as `weed filer.meta.tail` (SeaweedFS 4.48) prints it for a PUT of
# `uploads/in/Meeting 01.wav`, trimmed of fields the stand-in does not read.
PUT_DOCUMENT = """{
  "directory":  "/buckets/uploads/in",
  "eventNotification":  {
    "oldEntry":  null,
    "newEntry":  {
      "name":  "Meeting 01.wav",
      "isDirectory":  false,
      "attributes":  {
        "fileSize":  "100",
        "mime":  "audio/wav"
      },
      "extended":  {
        "Seaweed-X-Amz-ETag":  "YWVkNTYzZWNhZmI0YmNjNTY1NGM1OTdhNDIxNTQ3YjI="
      }
    },
    "deleteChunks":  true,
    "newParentPath":  "/buckets/uploads/in",
    "isFromOtherCluster":  false
  },
  "tsNs":  "1796176982631142965"
}
"""


def test_documents_it_cannot_read_are_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    """The tool's own messages, a document that is no JSON and one of another shape are logged
    and skipped; the documents around them are read."""
    garbage = '{\n  "directory": nope\n}\n'
    other_shape = '{\n  "tsNs": "12",\n  "eventNotification": "deleted"\n}\n'
    output = (
        "tail 127.0.0.1:8888: subscribing filer meta change: connection refused\n"
        + PUT_DOCUMENT
        + garbage
        + other_shape
        + PUT_DOCUMENT
    )
    with caplog.at_level(logging.INFO, logger=notifier_standin.log.name):
        read = list(documents(output.splitlines(keepends=True)))
    assert len(read) == 3  # both PUTs and the document of another shape; not the garbage
    assert "subscribing filer meta change" in caplog.text and "no JSON" in caplog.text
    assert filer_event(read[0]) == (
        1796176982631142965,
        StoredFile(BUCKET, "in/Meeting 01.wav", 1796176982631142965),
    )
    with pytest.raises(UnreadableEvent):
        filer_event(read[1])
    with pytest.raises(UnreadableEvent):
        filer_event(["not", "an", "object"])


@pytest.mark.parametrize(
    ("directory", "entry", "why"),
    [
        ("/buckets/uploads/.uploads/abc_123", {"name": "0001_x.part"}, "a multipart part"),
        ("/buckets/uploads", {"name": "folder", "isDirectory": True}, "a folder marker"),
        ("/buckets/uploads/in", None, "a deletion"),
        ("/buckets", {"name": "uploads", "isDirectory": True}, "the bucket itself"),
        ("/etc", {"name": "passwd"}, "outside /buckets"),
    ],
)
def test_only_stored_files_are_objects(directory: str, entry: dict[str, Any] | None, why: str) -> None:
    document = {"directory": directory, "eventNotification": {"newEntry": entry}, "tsNs": "5"}
    assert filer_event(document) == (5, None), why


def test_a_document_that_never_closes_is_dropped_not_buffered_without_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifier_standin, "MAX_DOCUMENT_BYTES", 1000)
    reader = DocumentReader()
    assert reader.feed("{\n") == []
    for _ in range(100):
        assert reader.feed('  "padding": "' + "x" * 50 + '",\n') == []
    assert reader._lines == []  # dropped at the limit
    read = [document for line in PUT_DOCUMENT.splitlines() for document in reader.feed(line)]
    assert [filer_event(document)[0] for document in read] == [1796176982631142965]


def _paths(document: Any, prefix: str = "") -> set[str]:
    """The field paths of a JSON document (list items under `[]`), values left out."""
    if isinstance(document, dict):
        found = set()
        for name, value in document.items():
            if prefix.endswith("userMetadata") or prefix.endswith("responseElements"):
                continue  # per object and per server
            found |= {f"{prefix}.{name}"} | _paths(value, f"{prefix}.{name}")
        return found
    if isinstance(document, list):
        return set().union(*(_paths(item, f"{prefix}[]") for item in document))
    return set()


def test_a_negative_reconcile_interval_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """0 turns the reconcile off; a negative interval was taken for "off" without a word."""
    monkeypatch.setenv("UPLOADS_RECONCILE_INTERVAL_S", "-5")
    with pytest.raises(ValidationError, match="greater than or equal to 0") as refused:
        Settings()
    assert "uploads_reconcile_interval_s" in str(refused.value)
    monkeypatch.setenv("UPLOADS_RECONCILE_INTERVAL_S", "0")
    assert Settings().uploads_reconcile_interval_s == 0
