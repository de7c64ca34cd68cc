"""The bucket drop's handler: each `s3:ObjectCreated:*` record of the uploads bucket requests
its object's job, once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

from cloudevents.core.v1.event import CloudEvent

from functions.ingest.gateway import Intake, JobDeleted
from functions.ingest.ids import object_job_id
from functions.ingest.uploads.notification import notification_of, skipped
from functions.ingest.uploads.options import request_for

# The package's logger: every bucket-drop line of ingest's log is under one name.
log = logging.getLogger("functions.ingest.uploads")


class BucketDrop:
    """Requests the job of each object dropped into `bucket` (`UPLOADS_BUCKET`) through `intake`
    (the gateway)."""

    def __init__(self, bucket: str, intake: Intake) -> None:
        self.bucket = bucket
        self.intake = intake

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        """Each `s3:ObjectCreated:*` record of the uploads bucket requests its object's job;
        records of other kinds or buckets are ignored. MalformedEvent for an event that is no
        notification."""
        notification = notification_of(event)
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
        yield  # an async generator: the gateway publishes the requests

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
        """Request the job of one object (size in bytes) unless it has one, is skipped or had one
        that was deleted; the new job's id, or None. `via` names the way it was found, for the log."""
        reason = skipped(key)
        if reason is not None:
            log.debug("skipping %r: %s", key, reason)
            return None
        job_id = object_job_id(self.bucket, key, etag)
        if await self.intake.get_job(job_id) is not None:
            return None  # a repeat: this object version has its job
        request = request_for(
            job_id, self.bucket, key, etag, size=size, content_type=content_type, metadata=metadata
        )
        try:
            await self.intake.submit(request)
        except JobDeleted:
            # The same object version again (the same bytes put back, a late notification): its
            # job was deleted and is not made again.
            log.info("no job for s3://%s/%s (from the %s): job %s was deleted", self.bucket, key, via, job_id)
            return None
        log.info("job %s for s3://%s/%s (from the %s)", job_id, self.bucket, key, via)
        return job_id
