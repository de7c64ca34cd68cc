"""Bucket drop: MinIO's S3 event records on `storage.uploads`, and a periodic reconcile of the
uploads bucket, each turning an object into exactly one job.

- MinIO's NATS target publishes `{"EventName", "Key": "bucket/key", "Records": [S3 record]}`
  with no `Nats-Msg-Id`, and may repeat a record. `decode_notification` checks that shape and
  wraps it in an internal CloudEvent (`NOTIFICATION_TYPE`, not in the public catalogue: nothing
  outside ingest ever sees it) so the host can run `BucketDrop.handle` like any handler.
- An object's job id is derived from (bucket, key, eTag): every repeat of a notification, the
  reconcile and any replica compute the same id, the request's event id `<job>:requested` is a
  JetStream duplicate, and a job record that already exists stops the request before it is sent.
- `reconcile_forever` lists the bucket every `UPLOADS_RECONCILE_INTERVAL_S` and requests a job
  for each object that has none, so a lost notification never loses a file and a store without
  notifications (SeaweedFS in the embedded stack) still turns a dropped file into a transcript.

Objects under `klipnote-api/` are the API's own uploads (it announces them itself) and folder markers
(keys ending in `/`) are not media: both are skipped. A created record whose key has a whole `.`
or `..` segment goes to the DLQ with that reason (no S3 client here can fetch such a key). A
0-byte object is not skipped: it gets a job, which the model function fails with the code
`media_empty`, so a broken upload shows up as a failed job rather than vanishing.

Options ride in user metadata (`X-Amz-Meta-Language`, `-Model`, `-Formats`, `-Webhook`,
`-Audio-Track`; names
case-insensitive; webhook headers never, as anyone who can read the object reads them); an
unknown model or language fails the job with the router's or the model's clear code, as for the
API. The router's webhook guard (SSRF, signing secret) fails a refused webhook's job with its code.

The reconcile leaves objects younger than RECONCILE_GRACE_S to their notification, so with
MinIO it requests only what a notification really missed, and skips objects a job of any way in
already names (a request by another system for an object in the uploads bucket).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from cloudevents.core.v1.event import CloudEvent
from minio.datatypes import Object
from minio.error import S3Error
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from events import binding, catalogue
from events.models import (
    DEFAULT_FORMATS,
    ObjectRef,
    OutputFormat,
    TranscriptionRequested,
    WebhookTarget,
    split_formats,
)
from functions.ingest.api import API_PREFIX, display_filename
from functions.ingest.jobs import normalise_etag, object_job_id

if TYPE_CHECKING:
    from functions.ingest.function import Ingest

log = logging.getLogger(__name__)

# The CloudEvents type a MinIO record is wrapped in between the host and the handler. Internal:
# never published, never in the catalogue (binding.kind_of does not know it, and nothing on this
# path asks it to).
NOTIFICATION_TYPE = "io.klipnote.internal.storage.notification"
NOTIFICATION_SOURCE = catalogue.EVENT_SOURCE_PREFIX + "ingest/" + catalogue.STORAGE_UPLOADS_SUBJECT

# Objects younger than this are left to their notification for now: it normally arrives within
# milliseconds, and the reconcile then finds the job made and has nothing to do.
RECONCILE_GRACE_S = 5.0

_CREATED_PREFIX = "s3:ObjectCreated:"
_META_PREFIX = "x-amz-meta-"


# -- MinIO's record, the parts ingest reads (everything else is ignored, not refused) ----------


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class S3Bucket(_Part):
    name: str = Field(min_length=1)


class S3Object(_Part):
    key: str = Field(min_length=1, description="URL-query-escaped (decode with unquote_plus).")
    size: int | None = Field(None, ge=0)
    etag: str | None = Field(None, alias="eTag")
    content_type: str | None = Field(None, alias="contentType")
    user_metadata: dict[str, str] = Field(default_factory=dict, alias="userMetadata")
    sequencer: str | None = None


class S3Entity(_Part):
    bucket: S3Bucket
    object: S3Object


class S3Record(_Part):
    event_name: str = Field(min_length=1, alias="eventName")
    s3: S3Entity

    @property
    def created(self) -> bool:
        return self.event_name.startswith(_CREATED_PREFIX)

    @property
    def key(self) -> str:
        return unquote_plus(self.s3.object.key)


class Notification(_Part):
    """What MinIO's NATS target publishes: one message per event, its records inside."""

    event_name: str = Field(alias="EventName")
    key: str = Field(alias="Key", description="bucket/key, unescaped.")
    records: list[S3Record] = Field(alias="Records", min_length=1)


# -- decoding --------------------------------------------------------------------------------


def decode_notification(headers: dict[str, str] | None, body: bytes) -> CloudEvent:
    """A MinIO notification (not a CloudEvent) wrapped as one for the handler, or MalformedEvent
    with the reason (the host dead-letters it and goes on)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise binding.MalformedEvent(f"bucket notification is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise binding.MalformedEvent("bucket notification is not a JSON object")
    try:
        notification = Notification.model_validate(document)
    except ValidationError as error:
        problems = binding.describe_errors(error.errors(), "body")
        raise binding.MalformedEvent(f"not a MinIO S3 event notification: {problems}") from error
    for index, record in enumerate(notification.records):
        if record.created and not record.s3.object.etag:
            raise binding.MalformedEvent(f"Records.{index}: {record.event_name} without s3.object.eTag")
        if record.created and (problem := unfetchable(record.key)):
            raise binding.MalformedEvent(f"Records.{index}: object key {record.key!r} {problem}")
    first = notification.records[0]
    obj = first.s3.object
    attributes: dict[str, Any] = {
        "type": NOTIFICATION_TYPE,
        "source": NOTIFICATION_SOURCE,
        # Per message, for logs: MinIO gives no id; sequencer orders events on one object.
        "id": f"{first.s3.bucket.name}/{obj.key}@{obj.sequencer or obj.etag}",
        "datacontenttype": "application/json",
    }
    if first.created and obj.etag:
        # The host logs the subject as the job id.
        attributes["subject"] = upload_job_id(first.s3.bucket.name, first.key, obj.etag)
    return CloudEvent(attributes, notification.model_dump(mode="json", by_alias=True))


# One object version, one job: the same id from every notification, the reconcile and a request
# by reference through the API.
upload_job_id = object_job_id


def unfetchable(key: str) -> str | None:
    """Why no S3 client here could fetch this key, or None. A `..` inside a name is fine (the key
    is just a key; the filename shown is its last component); a whole `.` or `..` segment is
    refused by the minio client (and by MinIO itself), so a job for it could only fail late."""
    segments = key.split("/")
    if "." in segments or ".." in segments:
        return "has a '.' or '..' path segment, which S3 clients refuse to fetch"
    return None


def skipped(key: str) -> str | None:
    """Why an object in the uploads bucket makes no job, or None."""
    if key.startswith(API_PREFIX):
        return "an API upload (the API requested its job)"
    if key.endswith("/"):
        return "a folder marker"
    return unfetchable(key)


# -- options from user metadata --------------------------------------------------------------


def user_options(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """`X-Amz-Meta-*` values by their lower-case suffix (`language`, `model`, ...)."""
    options: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        lowered = name.lower()
        if lowered.startswith(_META_PREFIX) and isinstance(value, str) and value.strip():
            options[lowered[len(_META_PREFIX) :]] = value.strip()
    return options


def _formats(value: str | None, key: str) -> list[OutputFormat]:
    if value is None:
        return list(DEFAULT_FORMATS)
    chosen, unknown = split_formats(value)
    if unknown:
        log.warning("%s: ignoring unknown output format(s) %s in X-Amz-Meta-Formats", key, unknown)
    return chosen or list(DEFAULT_FORMATS)


def _audio_track(value: str | None, key: str) -> int | None:
    if value is None:
        return None
    if value.strip().isdigit():
        return int(value.strip())
    log.warning("%s: ignoring X-Amz-Meta-Audio-Track %r, not a track number (0, 1, ...)", key, value)
    return None


# -- the handler and the reconcile -----------------------------------------------------------


class BucketDrop:
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        # Object versions (bucket, key, eTag) whose job has another id (requested by another
        # system): found once by a scan of the records, skipped by every later round.
        self._announced: set[tuple[str, str, str]] = set()

    @property
    def bucket(self) -> str:
        return self.ingest.settings.uploads_bucket

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        """Each `s3:ObjectCreated:*` record of the uploads bucket requests its object's job."""
        notification = _notification_of(event)
        for record in notification.records:
            obj = record.s3.object
            if not record.created:
                log.debug("ignoring %s on %s", record.event_name, notification.key)
                continue
            if record.s3.bucket.name != self.bucket:
                log.info(
                    "ignoring %s in bucket %r (not %r)", record.event_name, record.s3.bucket.name, self.bucket
                )
                continue
            assert obj.etag is not None  # decode_notification refuses a created record without one
            await self.request_object(
                record.key,
                obj.etag,
                size=obj.size,
                content_type=obj.content_type,
                metadata=obj.user_metadata,
                via="notification",
            )
        return
        yield  # an async generator: the requests are published by Ingest.request

    async def request_object(
        self,
        key: str,
        etag: str,
        *,
        size: int | None,
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        via: str,
    ) -> str | None:
        """Request the job of one object unless it has one; returns the new job's id."""
        reason = skipped(key)
        if reason is not None:
            log.debug("skipping %r: %s", key, reason)
            return None
        job_id = upload_job_id(self.bucket, key, etag)
        if await self.ingest.jobs.get(job_id) is not None:
            return None  # a repeat: this object version has its job
        request = self._request(job_id, key, etag, size, content_type, user_options(metadata))
        await self.ingest.request(request)
        log.info("job %s for s3://%s/%s (from the %s)", job_id, self.bucket, key, via)
        return job_id

    def _request(
        self,
        job_id: str,
        key: str,
        etag: str,
        size: int | None,
        content_type: str | None,
        options: dict[str, str],
    ) -> TranscriptionRequested:
        webhook = None
        if url := options.get("webhook"):
            # The router applies the webhook guard (SSRF, signing secret) and fails a refused
            # one's job with its code; a value that is no http(s) URL at all is only logged.
            try:
                webhook = WebhookTarget(url=url)
            except ValidationError as error:
                log.warning("%s: ignoring X-Amz-Meta-Webhook, not an http(s) URL: %s", key, error)
        content_type = content_type if content_type and content_type != "application/octet-stream" else None
        return TranscriptionRequested(
            job_id=job_id,
            media=ObjectRef(
                bucket=self.bucket, key=key, etag=normalise_etag(etag), size=size, content_type=content_type
            ),
            model=options.get("model"),
            language=options["language"].lower() if "language" in options else None,
            formats=_formats(options.get("formats"), key),
            filename=display_filename(key),
            webhook=webhook,
            audio_track=_audio_track(options.get("audio-track"), key),
        )

    async def reconcile_once(self) -> list[str]:
        """One listing of the uploads bucket; the ids of the jobs it requested."""
        store = self.ingest.store
        objects = await asyncio.to_thread(_list, store, self.bucket)
        now = time.time()
        candidates: list[tuple[Object, str, str]] = []
        for obj in objects:
            key, etag = obj.object_name, obj.etag
            if not key or not etag or obj.is_dir or skipped(key) is not None:
                continue
            if _age_s(obj.last_modified, now) < RECONCILE_GRACE_S:
                continue  # its notification, if any, comes first
            if (self.bucket, key, normalise_etag(etag)) in self._announced:
                continue
            if await self.ingest.jobs.get(upload_job_id(self.bucket, key, etag)) is not None:
                continue
            candidates.append((obj, key, etag))
        if candidates:
            # A request from another system names an object but derives its own job id: that
            # object was announced too. One scan of the records, only when something is new.
            referenced = await self._referenced()
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
                stat = await asyncio.to_thread(store.stat_object, self.bucket, key)
            except S3Error as error:
                if error.code in ("NoSuchKey", "NoSuchObject"):
                    continue  # deleted since the listing
                raise
            except ValueError as error:  # a name the client refuses: one object, not the round
                log.warning("reconcile skips %r: %s", key, error)
                continue
            if stat.etag and normalise_etag(stat.etag) != normalise_etag(etag):
                continue  # replaced since the listing: the next round sees the new version
            job_id = await self.request_object(
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

    async def _referenced(self) -> dict[tuple[str, str, str | None], float]:
        """Every object version a job record names (eTag None: the request named no version),
        with when its latest such job was made (a POSIX time)."""
        named: dict[tuple[str, str, str | None], float] = {}
        for record in await self.ingest.jobs.list():
            media = record.media
            version = (media.bucket, media.key, normalise_etag(media.etag) if media.etag else None)
            named[version] = max(named.get(version, 0.0), record.created_at.timestamp())
        return named

    async def reconcile_forever(self) -> None:
        """Reconcile every interval; an error (store or NATS down) waits for the next round."""
        interval = self.ingest.settings.uploads_reconcile_interval_s
        while True:
            try:
                requested = await self.reconcile_once()
                if requested:
                    log.info("reconcile requested %d job(s) no notification announced", len(requested))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning(
                    "reconcile of bucket %r failed, retrying in %.0fs: %s", self.bucket, interval, error
                )
            await asyncio.sleep(interval)


def _notification_of(event: CloudEvent) -> Notification:
    if event.get_type() != NOTIFICATION_TYPE:
        raise binding.MalformedEvent(f"the uploads handler does not handle {event.get_type()}")
    try:
        return Notification.model_validate(event.get_data())
    except ValidationError as error:
        raise binding.MalformedEvent(f"not a MinIO S3 event notification: {error}") from error


def _list(store: Any, bucket: str) -> list[Object]:
    return list(store.list_objects(bucket, recursive=True))


def _headers(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    items: Iterable[tuple[str, Any]] = metadata.items()
    return {str(name): str(value) for name, value in items}


def _age_s(modified: datetime | None, now: float) -> float:
    return float("inf") if modified is None else now - modified.timestamp()
