"""Job ids: how a job is named, whichever way it came in, so that a repeat makes the same job.

A job id is a JetStream KV key and the last token of NATS subjects (`jobs.<kind>.<job>`), so it
is at most 128 of `A-Z a-z 0-9 _ -`. Ours are 32 hex digits: random for a plain upload, or a
UUIDv5 (RFC 9562) of what names the job (an object version, an `Idempotency-Key`, a CloudEvent's
source and id), so every repeat of the same thing computes the same id.
"""

from __future__ import annotations

import re
import uuid

from cloudevents.core.v1.event import CloudEvent

from events import binding
from events.models import TranscriptionRequested

_JOB_NAMESPACE = uuid.UUID("5f1c2a9e-3a47-4c1f-9b7e-6c0d7f9e1a21")
# A job id is a KV key and the last token of NATS subjects: no dots, wildcards or spaces.
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def valid_job_id(job_id: str) -> bool:
    """Whether a job id (ours are hex; another system may name its own) fits KV keys and subjects."""
    return bool(_JOB_ID.match(job_id))


def new_job_id() -> str:
    """A fresh job id (an upload with no `Idempotency-Key`)."""
    return uuid.uuid4().hex


def normalise_etag(etag: str) -> str:
    """An eTag without the quotes S3 puts around it in headers and listings (MinIO's records
    have none), so every way of learning an object's eTag names the same version."""
    return etag.strip().strip('"')


def object_job_id(bucket: str, key: str, etag: str | None) -> str:
    """The job of one stored object (bucket, key, eTag): however it is announced (a bucket
    notification, the reconcile, a request by reference), it makes this one job."""
    return uuid.uuid5(_JOB_NAMESPACE, f"object\n{bucket}\n{key}\n{normalise_etag(etag or '')}").hex


def keyed_job_id(idempotency_key: str) -> str:
    """The job of an API request carrying an `Idempotency-Key`: a retried request is the same job."""
    return uuid.uuid5(_JOB_NAMESPACE, f"request\n{idempotency_key}").hex


def job_id_for(event: CloudEvent, request: TranscriptionRequested) -> str:
    """The request's own job id; a request from another system has none: derive one from the
    event's source and id (CloudEvents' identity of an event), so its repeats make one job."""
    if request.job_id:
        return request.job_id
    return uuid.uuid5(_JOB_NAMESPACE, f"{event.get_source()}\n{event.get_id()}").hex


def checked_job_id(event: CloudEvent, request: TranscriptionRequested) -> str:
    """The request's job id (`job_id_for`); MalformedEvent (a dead letter with the reason) when
    another system named one that cannot be a KV key or a subject token."""
    job_id = job_id_for(event, request)
    if not valid_job_id(job_id):
        raise binding.MalformedEvent(
            f"data.job_id {job_id!r} is not a job id (at most 128 of A-Z a-z 0-9 _ -); leave it out"
        )
    return job_id
