"""MinIO's bucket notification (its NATS target's payload): the parts ingest reads, decoded and
wrapped in an internal CloudEvent for the host. The payload's shape is MinIO's documented S3
event record (../shared/reference/minio-nats-put-event.json); everything else is ignored, not
refused."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from events import binding, catalogue
from functions.ingest.ids import object_job_id
from functions.ingest.naming import is_api_upload

# The CloudEvents type a MinIO record is wrapped in between the host and the handler. Internal:
# never published, never in the catalogue (binding.kind_of does not know it, and nothing on this
# path asks it to).
NOTIFICATION_TYPE = "io.klipnote.internal.storage.notification"
NOTIFICATION_SOURCE = catalogue.EVENT_SOURCE_PREFIX + "ingest/" + catalogue.STORAGE_UPLOADS_SUBJECT

_CREATED_PREFIX = "s3:ObjectCreated:"


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
        # The host logs the subject as the job id: one object version, one job.
        attributes["subject"] = object_job_id(first.s3.bucket.name, first.key, obj.etag)
    return CloudEvent(attributes, notification.model_dump(mode="json", by_alias=True))


def notification_of(event: CloudEvent) -> Notification:
    """The notification a `decode_notification` event wraps; MalformedEvent for any other event."""
    if event.get_type() != NOTIFICATION_TYPE:
        raise binding.MalformedEvent(f"the uploads handler does not handle {event.get_type()}")
    try:
        return Notification.model_validate(event.get_data())
    except ValidationError as error:
        raise binding.MalformedEvent(f"not a MinIO S3 event notification: {error}") from error


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
    if is_api_upload(key):
        return "an API upload (the API requested its job)"
    if key.endswith("/"):
        return "a folder marker"
    return unfetchable(key)
