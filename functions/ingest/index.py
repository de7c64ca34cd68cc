"""The job index: what listing, paging, retention and the reconcile need of every job, kept in
memory by each ingest replica from the `jobs` bucket's own stream, so that none of them reads
every record.

Every write of a job record (`JobStore.project`) carries its index fields as message headers
(`index_headers`: state, creation time, expiry, and the object it names); a delete leaves the
key's purge marker. The index reads the bucket's stream (`KV_jobs`) with a headers-only
ephemeral consumer, from each key's last message on (JetStream's `LAST_PER_SUBJECT`) and then
live, so at 100,000 jobs its start reads ~100,000 small messages and never a record's body, and
afterwards every write reaches every replica's index within milliseconds.

A page of jobs is a slice of a sorted list (`sortedcontainers`: O(log n) to find the offset)
followed by one KV read per job on the page; counts are list lengths. The durable state stays
the bucket: a replica builds its index anew when it starts, and readiness waits for it.

Memory: one entry per job (its id, state and two times, in a dict and two sorted lists), about
1 KB per job as measured in ingest's RSS (docs/benchmarks.md, `listing`), so ~100 MB per replica
at 100,000 jobs; deleted jobs are not kept. The object a job names is held only for the few
jobs that name an object of the uploads bucket under an id of their own (requests from other
systems; the reconcile asks for those).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from pydantic import ValidationError
from sortedcontainers import SortedList

from events.lifecycle import JobState
from events.models import ObjectRef
from events.reader import SubjectReader
from events.runtime.function import StreamPosition
from events.tasks import cancel_and_wait
from functions.ingest.ids import normalise_etag, object_job_id
from functions.ingest.naming import is_api_upload
from functions.ingest.retention import expires_at
from functions.ingest.schema import JobRecord

log = logging.getLogger(__name__)

# The index fields of a record, as headers of its KV message (`index_headers`).
STATE_HEADER = "KlipNote-Job-State"
CREATED_HEADER = "KlipNote-Job-Created"  # POSIX seconds
EXPIRES_HEADER = "KlipNote-Job-Expires"  # POSIX seconds; absent: kept for ever, or not ended
MEDIA_HEADER = "KlipNote-Job-Media"  # JSON [bucket, key, eTag or null]
# JetStream KV's marker of a deleted or purged key (nats-py `KV_OP`).
_KV_OPERATION = "KV-Operation"

# Messages one fetch of the index's reader takes while it catches up or follows.
_BATCH = 512
# Seconds a page waits for the index to reach the bucket's last write before it answers as is.
_CATCH_UP_S = 3.0
# Seconds between tries to read the bucket's stream again after a failure: the first, and the
# most (the wait doubles), so a bucket gone for good costs a request every half minute.
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 30.0
# Seconds one fetch of the index's reader waits; after one that brought nothing, the reader asks
# the server whether its consumer is still there (one small request a second when idle).
_IDLE_S = 1.0

# An object version a job names: (bucket, key, normalised eTag, or None when the request named none).
Version = tuple[str, str, str | None]


def index_headers(record: JobRecord) -> dict[str, str]:
    """The headers a write of `record` carries for the index (see the module's docstring).
    Strings only (NATS headers); the media as ASCII JSON, so no key can break a header line."""
    headers = {STATE_HEADER: record.state.value, CREATED_HEADER: repr(record.created_at.timestamp())}
    expires = expires_at(record)
    if expires is not None:
        headers[EXPIRES_HEADER] = repr(expires.timestamp())
    media = record.media
    headers[MEDIA_HEADER] = json.dumps([media.bucket, media.key, media.etag])
    return headers


@dataclass(frozen=True, slots=True)
class Entry:
    """One job in the index: its state, and when it was made and expires (POSIX seconds)."""

    state: JobState
    created: float
    expires: float | None


class IndexBus(Protocol):
    """The reads of the bus the index makes (a function's `Runtime`)."""

    def reading(
        self,
        subject: str,
        deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
        *,
        headers_only: bool = False,
        start_sequence: int | None = None,
    ) -> AbstractAsyncContextManager[SubjectReader]: ...

    async def stream_position(self, stream: str) -> StreamPosition: ...


class JobIndex:
    """Every job's `Entry`, sorted newest first overall and per state, and the expiring jobs
    sorted by expiry, kept up to date from the `bucket` KV's stream (`run`). `uploads_bucket`:
    the bucket whose objects the reconcile looks after. `fetch_record` reads one record (for a
    record written before the index existed, whose message carries no index headers)."""

    def __init__(
        self,
        bus: IndexBus,
        bucket: str,
        uploads_bucket: str,
        fetch_record: Callable[[str], Awaitable[JobRecord | None]],
    ) -> None:
        self.bus = bus
        self.bucket = bucket
        self.uploads_bucket = uploads_bucket
        self.fetch_record = fetch_record
        self._entries: dict[str, Entry] = {}
        self._newest: SortedList = SortedList()  # (-created, id)
        self._by_state: dict[JobState, SortedList] = {state: SortedList() for state in JobState}
        self._expiring: SortedList = SortedList()  # (expires, id)
        self._named: dict[str, tuple[Version, float]] = {}  # job id → the object it names, created
        self._applied = 0  # the stream sequence of the last message applied
        # Fetches are numbered as they are sent; `_clear_through` is the latest whose answer left
        # nothing pending: every message the stream held when that fetch was sent is applied (or
        # was removed from the stream before it could be, so no waiter waits for its sequence).
        self._fetches = 0
        self._clear_through = 0
        self._created: str | None = None  # when the stream the index reads was made
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @property
    def stream(self) -> str:
        return f"KV_{self.bucket}"

    # -- running ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start following the bucket and return once every record written before is indexed.
        Raises what the bus raises when the bucket's stream cannot be read."""
        if self._task is None:
            self._task = asyncio.create_task(self._follow())
            began = asyncio.get_running_loop().time()
            while not await self._reach(await self.bus.stream_position(self.stream), timeout_s=30.0):
                if self._task.done():  # its connection closed: nothing more will come
                    raise RuntimeError("the job index stopped before it was built")
                log.info(
                    "the job index is still being built: %d jobs after %.0f s",
                    len(self._entries),
                    asyncio.get_running_loop().time() - began,
                )

    async def stop(self) -> None:
        """Stop following the bucket; returns once the reader has ended."""
        task, self._task = self._task, None
        await cancel_and_wait([task])  # a plain cancel can be lost in the reader's fetch

    async def _follow(self) -> None:
        """Read the bucket's stream for ever; a reader lost (NATS restarted, the consumer gone)
        is made anew from the next sequence, so no write is missed. A stream made anew since
        (the bucket deleted and created again: its sequences start over) is read from its
        start into an emptied index. While the stream cannot be read the reader tries again,
        0.5 s after the first failure and then less often, up to every `_RETRY_MAX_S`."""
        retry_s = _RETRY_FIRST_S
        while True:
            try:
                created = (await self.bus.stream_position(self.stream)).created
                if self._created is not None and created != self._created:
                    log.warning("the %s stream was made anew: the job index is built again", self.stream)
                    self._clear()
                self._created = created
                start = self._applied + 1 if self._applied else None
                async with self.bus.reading(
                    f"$KV.{self.bucket}.>",
                    DeliverPolicy.BY_START_SEQUENCE if start else DeliverPolicy.LAST_PER_SUBJECT,
                    headers_only=True,
                    start_sequence=start,
                ) as reader:
                    while True:
                        self._fetches += 1
                        fetch = self._fetches
                        messages = await reader.next_batch(_BATCH, wait_s=_IDLE_S)
                        if not messages and not await reader.exists():
                            raise LookupError("the server dropped the index's reader")
                        await self._apply_all(messages)
                        retry_s = _RETRY_FIRST_S
                        if not messages or _pending(messages[-1]) == 0:
                            self._clear_through = fetch
                        async with self._changed:
                            self._changed.notify_all()
            except asyncio.CancelledError:
                raise
            except nats.errors.ConnectionClosedError:
                log.info("the job index stops: its NATS connection was closed")
                return
            except Exception as error:
                log.warning(
                    "the job index cannot read %s (%s: %s); trying again in %.1f s",
                    self.stream,
                    type(error).__name__,
                    error,
                    retry_s,
                )
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, _RETRY_MAX_S)

    def _clear(self) -> None:
        """Forget every entry and the stream position (the stream read was replaced)."""
        self._entries.clear()
        self._newest.clear()
        for ordered in self._by_state.values():
            ordered.clear()
        self._expiring.clear()
        self._named.clear()
        self._applied = 0

    async def _apply_all(self, messages: list[Msg]) -> None:
        """Apply a fetch's messages in stream order. A record written before the index existed
        carries no index headers: its fields are read from the record itself, the batch's such
        records side by side (an upgrade's first start reads each old record once)."""
        prefix = f"$KV.{self.bucket}."
        old = {
            msg.subject.removeprefix(prefix)
            for msg in messages
            if STATE_HEADER not in (msg.headers or {}) and not _is_delete(msg)
        }
        read = await asyncio.gather(*(self._read_old(job_id) for job_id in old))
        records = dict(zip(old, read, strict=True))
        for msg in messages:
            job_id = msg.subject.removeprefix(prefix)
            headers = msg.headers or {}
            if _is_delete(msg):
                self._remove(job_id)
            elif STATE_HEADER in headers:
                self._put(job_id, headers)
            elif (record := records.get(job_id)) is not None:
                self._put(job_id, index_headers(record))
            if msg.metadata.sequence is not None:
                self._applied = max(self._applied, msg.metadata.sequence.stream)

    async def _read_old(self, job_id: str) -> JobRecord | None:
        """A record written before the index existed, or None (gone, or not a record: logged and
        left out of the index, never retried for ever)."""
        try:
            return await self.fetch_record(job_id)
        except ValidationError as error:
            log.warning("the job index leaves out job %s: its record is not one (%s)", job_id, error)
            return None

    def _put(self, job_id: str, headers: Mapping[str, str]) -> None:
        self._remove(job_id)
        try:
            state = JobState(headers[STATE_HEADER])
            created = float(headers[CREATED_HEADER])
            expires = float(headers[EXPIRES_HEADER]) if EXPIRES_HEADER in headers else None
        except (KeyError, ValueError) as error:
            log.warning("the job index skips job %s: headers %s", job_id, error)
            return
        entry = Entry(state, created, expires)
        self._entries[job_id] = entry
        self._newest.add((-created, job_id))
        self._by_state[state].add((-created, job_id))
        if expires is not None:
            self._expiring.add((expires, job_id))
        version = _named_version(headers.get(MEDIA_HEADER), job_id, self.uploads_bucket)
        if version is not None:
            self._named[job_id] = (version, created)

    def _remove(self, job_id: str) -> None:
        entry = self._entries.pop(job_id, None)
        self._named.pop(job_id, None)
        if entry is None:
            return
        self._newest.discard((-entry.created, job_id))
        self._by_state[entry.state].discard((-entry.created, job_id))
        if entry.expires is not None:
            self._expiring.discard((entry.expires, job_id))

    async def _reach(self, position: StreamPosition, timeout_s: float) -> bool:
        """Wait until the index reads the stream made at `position.created` and has applied its
        `position.last_sequence`, or a fetch sent after this call found nothing pending (the
        message was removed meanwhile: a purge, an age limit); False when `timeout_s` passed
        first. The condition's lock is never held across an await, so no notify falls between
        a check and its wait."""
        sent_before = self._fetches

        def reached() -> bool:
            return self._created == position.created and (
                self._applied >= position.last_sequence or self._clear_through > sent_before
            )

        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(reached)
        except TimeoutError:
            return False
        return True

    async def current(self) -> None:
        """Wait (up to `_CATCH_UP_S`) until every write made before this call is indexed: a listing
        answered right after a request shows it. A lagging index answers as it is after that."""
        target = await self.bus.stream_position(self.stream)
        if not await self._reach(target, timeout_s=_CATCH_UP_S):
            log.warning(
                "the job index lags the bucket (%d < %d): answering as it is",
                self._applied,
                target.last_sequence,
            )

    # -- reading ----------------------------------------------------------------------------

    def page(self, state: JobState | None, offset: int, limit: int) -> tuple[list[str], int]:
        """The ids of jobs `offset` to `offset + limit`, newest first (in `state` if given), and
        how many such jobs there are."""
        ordered = self._newest if state is None else self._by_state[state]
        return [job_id for _, job_id in ordered[offset : offset + limit]], len(ordered)

    def expired(self, now: datetime) -> list[str]:
        """The finished jobs whose expiry (`expires_at`) is at or before `now`, soonest first."""
        return [job_id for _, job_id in self._expiring.irange(maximum=(now.timestamp(), "\uffff"))]

    def knows(self, job_id: str) -> bool:
        """Whether the bucket has a record of `job_id` (as of the index). Deleted jobs are not
        kept (their number only grows): `JobStore.deleted` asks the bucket."""
        return job_id in self._entries

    def referenced(self) -> dict[Version, float]:
        """Every version of an uploads-bucket object that a job with an id of its own names
        (a request from another system), with when its latest such job was made (POSIX)."""
        named: dict[Version, float] = {}
        for version, created in self._named.values():
            named[version] = max(named.get(version, 0.0), created)
        return named

    def __len__(self) -> int:
        return len(self._entries)


def _is_delete(msg: Msg) -> bool:
    """Whether a KV message is a delete or purge marker (JetStream KV's `KV-Operation` header)."""
    return (msg.headers or {}).get(_KV_OPERATION) in ("DEL", "PURGE")


def _pending(msg: Msg) -> int:
    """How many messages the reader's consumer had left after `msg` (JetStream's ack metadata)."""
    return msg.metadata.num_pending if msg.metadata.num_pending is not None else 1


def named_version(media: ObjectRef, job_id: str, uploads_bucket: str) -> Version | None:
    """The object version job `job_id` names, when the reconcile must know of it: an object of
    the uploads bucket that is no API upload, named by a job whose id is not the object's own (a
    drop's job is found by its id). None otherwise."""
    if media.bucket != uploads_bucket or is_api_upload(media.key):
        return None
    if media.etag and object_job_id(media.bucket, media.key, media.etag) == job_id:
        return None
    return (media.bucket, media.key, normalise_etag(media.etag) if media.etag else None)


def _named_version(header: str | None, job_id: str, uploads_bucket: str) -> Version | None:
    """`named_version` of the media in a `MEDIA_HEADER` (None when it is missing or garbled)."""
    if header is None:
        return None
    try:
        bucket, key, etag = json.loads(header)
        media = ObjectRef(bucket=bucket, key=key, etag=etag)
    except (ValueError, TypeError):
        return None
    return named_version(media, job_id, uploads_bucket)
