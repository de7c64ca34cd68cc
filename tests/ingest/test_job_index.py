"""The job index (`functions.ingest.index`) on the stack's real NATS: listing, filtering and
paging from the index, a page reading only its own records, the index following state changes
and deletes, records written before the index existed, expiry for retention, the objects the
reconcile asks about, a reader lost on the server made anew, a bucket made anew read from
its start, and a stop under writes that ends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from cloudevents.core.v1.event import CloudEvent
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig

from events import binding, catalogue
from events.bus import Publisher
from events.lifecycle import JobState
from events.models import (
    ObjectRef,
    TranscriptionFailed,
    TranscriptionQueued,
    TranscriptionRequested,
    utcnow,
)
from events.runtime.function import Runtime
from events.tasks import cancel_and_wait
from functions.ingest.ids import object_job_id
from functions.ingest.index import CREATED_HEADER, STATE_HEADER, JobIndex
from functions.ingest.jobs import JobStore
from functions.ingest.naming import API_PREFIX
from functions.ingest.schema import JobRecord
from infra.embedded.stack import EmbeddedStack


@pytest.fixture
async def store(stack: EmbeddedStack, js: JetStreamContext) -> AsyncIterator[JobStore]:
    """A job store over a bucket of its own (no projector writes it)."""
    settings = stack.settings
    bucket = f"jobs-index-{uuid.uuid4().hex[:8]}"
    kv = await js.create_key_value(KeyValueConfig(bucket=bucket, history=1))
    jobs = JobStore(kv, Runtime(settings, Publisher(js, settings), js), results_ttl_s=3600)
    try:
        yield jobs
    finally:
        await jobs.close()
        await js.delete_key_value(bucket)


def requested(key: str, job_id: str | None = None) -> tuple[str, CloudEvent]:
    job_id = job_id or uuid.uuid4().hex
    request = TranscriptionRequested(job_id=job_id, media=ObjectRef(bucket="uploads", key=key))
    return job_id, binding.new_event(catalogue.REQUESTED, request, function="test", event_id=job_id)


async def make(store: JobStore, count: int) -> list[str]:
    """`count` requested jobs, oldest first."""
    ids = []
    for index in range(count):
        job_id, event = requested(f"{API_PREFIX}{uuid.uuid4().hex}/clip-{index}.wav")
        await store.project(event, job_id)
        ids.append(job_id)
    return ids


async def queue(store: JobStore, job_id: str) -> None:
    event = binding.new_event(
        catalogue.QUEUED, TranscriptionQueued(job_id=job_id, model="whisperx"), function="test"
    )
    await store.project(event, job_id)


async def test_a_page_is_newest_first_filtered_by_state_and_counts_all(store: JobStore) -> None:
    ids = await make(store, 12)
    for job_id in ids[:5]:
        await queue(store, job_id)

    page, total = await store.page(offset=0, limit=4)
    assert total == 12 and [record.id for record in page] == ids[::-1][:4]
    deep, _ = await store.page(offset=10, limit=4)
    assert [record.id for record in deep] == ids[::-1][10:]
    queued, queued_total = await store.page(JobState.QUEUED, offset=1, limit=10)
    assert queued_total == 5 and [record.id for record in queued] == ids[:5][::-1][1:]
    assert all(record.state is JobState.QUEUED for record in queued)
    still, still_total = await store.page(JobState.REQUESTED, offset=0, limit=50)
    assert still_total == 7 and {record.id for record in still} == set(ids[5:])


async def test_a_page_reads_only_its_own_records(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await make(store, 30)
    await store.index()  # built: what follows is the page alone
    reads: list[str] = []
    original = store.get

    async def counted(job_id: str) -> JobRecord | None:
        reads.append(job_id)
        return await original(job_id)

    monkeypatch.setattr(store, "get", counted)
    page, total = await store.page(offset=20, limit=3)
    assert total == 30 and len(page) == 3
    assert sorted(reads) == sorted(record.id for record in page)  # not the other 27


async def test_a_delete_leaves_the_listing(store: JobStore) -> None:
    ids = await make(store, 3)
    await store.tombstone(ids[1])
    page, total = await store.page()
    assert total == 2 and [record.id for record in page] == [ids[2], ids[0]]
    assert not await store.known(ids[1]) and await store.deleted(ids[1])  # deletes aren't held
    assert await store.known(ids[0]) and not await store.known(uuid.uuid4().hex)


async def test_records_written_before_the_index_existed_are_listed(store: JobStore) -> None:
    # A record as the projector wrote it before issue 17: a plain KV update, no index headers.
    created = utcnow() - timedelta(days=1)
    old = JobRecord(
        id=uuid.uuid4().hex,
        state=JobState.COMPLETED,
        media=ObjectRef(bucket="uploads", key="old.flac"),
        created_at=created,
        updated_at=created,
    )
    await store.kv.update(old.id, old.model_dump_json().encode(), last=0)
    (newer,) = await make(store, 1)
    page, total = await store.page()
    assert total == 2 and [record.id for record in page] == [newer, old.id]
    completed, _ = await store.page(JobState.COMPLETED)
    assert [record.id for record in completed] == [old.id]


async def test_expired_lists_finished_jobs_by_their_expiry(store: JobStore) -> None:
    running, ended = await make(store, 2)
    failed = binding.new_event(
        catalogue.FAILED,
        TranscriptionFailed(job_id=ended, code="media_unreadable", message="unreadable", function="test"),
        function="test",
    )
    record = await store.project(failed, ended)
    assert record is not None and record.expires_at is not None  # RESULTS_TTL_S 3600
    await store.page()  # the index has caught up with the writes
    assert await store.expired(record.expires_at - timedelta(seconds=1)) == []
    assert await store.expired(record.expires_at + timedelta(seconds=1)) == [ended]
    assert running not in await store.expired(utcnow() + timedelta(days=3650))


async def test_the_reconcile_learns_only_objects_other_systems_named(store: JobStore) -> None:
    etag = "e1"
    drop_id = object_job_id("uploads", "in/a.wav", etag)
    for job_id, key, named_etag in [
        (drop_id, "in/a.wav", etag),  # a drop's own job: found by its id
        (uuid.uuid4().hex, "crm/b.wav", "e2"),  # another system's request naming b
        (uuid.uuid4().hex, f"{API_PREFIX}{uuid.uuid4().hex}/c.wav", None),  # an API upload
    ]:
        request = TranscriptionRequested(
            job_id=job_id, media=ObjectRef(bucket="uploads", key=key, etag=named_etag)
        )
        event = binding.new_event(catalogue.REQUESTED, request, function="test", event_id=job_id)
        await store.project(event, job_id)
    await store.page()
    assert set(await store.referenced()) == {("uploads", "crm/b.wav", "e2")}
    assert await store.known(drop_id)


async def test_the_index_reads_on_when_its_reader_is_lost(store: JobStore, js: JetStreamContext) -> None:
    (first,) = await make(store, 1)
    await store.page()
    stream = f"KV_{store.bucket}"
    for name in await js.consumers_info(stream):  # the server forgets the index's reader
        await js.delete_consumer(stream, name.name)
    later = await make(store, 2)
    page, total = await store.page()
    assert total == 3 and [record.id for record in page] == [*later[::-1], first]


async def test_an_index_stopped_while_writes_reach_it_stops(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    """Stopped 20 times while records are written: each stop returns and leaves no reader.
    Before, about one stop in ten lost its cancel in the reader's fetch (events/tasks.py) and
    the index read on for ever (one CI run hung 600 s in a test's `JobStore.close`)."""
    bucket = f"jobs-stop-{uuid.uuid4().hex[:8]}"
    await js.create_key_value(KeyValueConfig(bucket=bucket, history=1))
    settings = stack.settings
    runtime = Runtime(settings, Publisher(js, settings), js)
    writing = True

    async def write() -> None:
        count = 0
        while writing:
            headers = {STATE_HEADER: "queued", CREATED_HEADER: "1.0"}
            await js.publish(f"$KV.{bucket}.job-{count % 20}", b"{}", headers=headers)
            count += 1

    writer = asyncio.create_task(write())
    try:
        for _ in range(20):
            index = JobIndex(runtime, bucket, settings.uploads_bucket, fetch_record=lambda _: none())
            await index.start()
            async with asyncio.timeout(30):  # a bound on a hang, not a timing: it takes ms
                await index.stop()
        writing = False
        await writer
        assert await js.consumers_info(f"KV_{bucket}") == []
    finally:
        writing = False
        await cancel_and_wait([writer])
        await js.delete_key_value(bucket)


async def none() -> None:
    return None


async def test_a_bucket_made_anew_is_indexed_from_its_start(store: JobStore, js: JetStreamContext) -> None:
    """The bucket deleted and created again under the index: its sequences start over, so
    reading on from where the old stream was would miss every new record. Before, it did."""
    await make(store, 3)
    await store.page()
    await js.delete_key_value(store.bucket)
    await js.create_key_value(KeyValueConfig(bucket=store.bucket, history=1))
    (anew,) = await make(store, 1)
    page, total = await store.page()
    assert total == 1 and [record.id for record in page] == [anew]
