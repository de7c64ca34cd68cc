"""The reconcile: a periodic listing of the uploads bucket that requests a job for each object
no notification announced (see the package's docstring)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Protocol

from minio.error import S3Error

from functions.ingest.ids import normalise_etag, object_job_id
from functions.ingest.uploads.drop import BucketDrop
from functions.ingest.uploads.notification import skipped

# The package's logger: every bucket-drop line of ingest's log is under one name.
log = logging.getLogger("functions.ingest.uploads")

# Objects younger than this (seconds) are left to their notification for now: it normally
# arrives within milliseconds, and the reconcile then finds the job made and has nothing to do.
RECONCILE_GRACE_S = 5.0


class Listed(Protocol):
    """An object as a listing or a stat shows it (minio's `Object`)."""

    @property
    def object_name(self) -> str | None: ...

    @property
    def etag(self) -> str | None: ...

    @property
    def size(self) -> int | None: ...

    @property
    def last_modified(self) -> datetime | None: ...

    @property
    def is_dir(self) -> bool: ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def metadata(self) -> Any: ...


class Listing(Protocol):
    """What the reconcile asks of the object store (a minio client)."""

    def list_objects(self, bucket_name: str, *, recursive: bool = False) -> Iterator[Listed]: ...

    def stat_object(self, bucket_name: str, object_name: str) -> Listed: ...


class Reconciler:
    """Lists `drop`'s bucket in `store` every `interval_s` seconds (`UPLOADS_RECONCILE_INTERVAL_S`)
    and requests the jobs no notification announced, through the drop."""

    def __init__(self, drop: BucketDrop, store: Listing, interval_s: float) -> None:
        self.drop = drop
        self.store = store
        self.interval_s = interval_s
        # Object versions (bucket, key, eTag) whose job has another id (requested by another
        # system) or was deleted: found once, skipped by every later round.
        self._announced: set[tuple[str, str, str]] = set()

    @property
    def bucket(self) -> str:
        return self.drop.bucket

    async def reconcile_once(self) -> list[str]:
        """One listing of the uploads bucket; the ids of the jobs it requested. Raises what the
        store raises when it cannot be listed."""
        objects = await asyncio.to_thread(_list, self.store, self.bucket)
        now = time.time()
        candidates: list[tuple[Listed, str, str]] = []
        for obj in objects:
            key, etag = obj.object_name, obj.etag
            if not key or not etag or obj.is_dir or skipped(key) is not None:
                continue
            if _age_s(obj.last_modified, now) < RECONCILE_GRACE_S:
                continue  # its notification, if any, comes first
            if (self.bucket, key, normalise_etag(etag)) in self._announced:
                continue
            its_job = object_job_id(self.bucket, key, etag)
            # The index first (in memory): a bucket of 100,000 dropped files costs no read per
            # file; a job not indexed yet is asked of the bucket.
            if await self.drop.intake.known(its_job):
                continue
            if await self.drop.intake.get_job(its_job) is not None:
                continue
            if await self.drop.intake.deleted(its_job):
                # Its job was deleted (the same bytes put back under the key): not made again,
                # and not looked at again by this replica.
                self._announced.add((self.bucket, key, normalise_etag(etag)))
                continue
            candidates.append((obj, key, etag))
        if candidates:
            # A request from another system names an object but derives its own job id: that
            # object was announced too (the job index keeps those few jobs' objects).
            referenced = await self.drop.intake.referenced_media()
            for obj, key, etag in candidates:
                version = (self.bucket, key, normalise_etag(etag))
                # A request that named no eTag announced the version stored when it was made.
                named_at = referenced.get((self.bucket, key, None))
                if version in referenced or (
                    named_at is not None and _age_s(obj.last_modified, named_at) >= 0
                ):
                    self._announced.add(version)
        requested = []
        for obj, key, etag in candidates:
            if (self.bucket, key, normalise_etag(etag)) in self._announced:
                continue
            try:  # the listing carries no user metadata on every store: ask for it
                stat = await asyncio.to_thread(self.store.stat_object, self.bucket, key)
            except S3Error as error:
                if error.code in ("NoSuchKey", "NoSuchObject"):
                    continue  # deleted since the listing
                raise
            except ValueError as error:  # a name the client refuses: one object, not the round
                log.warning("reconcile skips %r: %s", key, error)
                continue
            if stat.etag and normalise_etag(stat.etag) != normalise_etag(etag):
                continue  # replaced since the listing: the next round sees the new version
            job_id = await self.drop.request_object(
                key,
                etag,
                size=obj.size,
                content_type=stat.content_type,
                metadata=_headers(stat.metadata),
                via="reconcile",
            )
            if job_id is not None:
                requested.append(job_id)
        return requested

    async def reconcile_forever(self) -> None:
        """Reconcile every interval; an error (store or NATS down) waits for the next round."""
        while True:
            try:
                requested = await self.reconcile_once()
                if requested:
                    log.info("reconcile requested %d job(s) no notification announced", len(requested))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning(
                    "reconcile of bucket %r failed, retrying in %.0fs: %s",
                    self.bucket,
                    self.interval_s,
                    error,
                )
            await asyncio.sleep(self.interval_s)


def _list(store: Listing, bucket: str) -> list[Listed]:
    return list(store.list_objects(bucket, recursive=True))


def _headers(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    items: Iterable[tuple[str, Any]] = metadata.items()
    return {str(name): str(value) for name, value in items}


def _age_s(modified: datetime | None, now: float) -> float:
    return float("inf") if modified is None else now - modified.timestamp()
