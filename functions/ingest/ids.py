"""Job ids: how a job is named, whichever way it came in, so that a repeat makes the same job.

A job id is a JetStream KV key and the last token of NATS subjects (`jobs.<kind>.<job>`), so it
is at most 128 of `A-Z a-z 0-9 _ -`. Ours are 32 hex digits: random for a plain upload, or a
UUIDv5 (RFC 9562) of what names the job (an object version, an `Idempotency-Key`, a CloudEvent's
source and id), so every repeat of the same thing computes the same id.

Caller-named ids live in their own namespace (issue 15): another system may name its job in
`data.job_id`, but never with our form, 32 lowercase hex digits. Otherwise a caller could choose
the id an `Idempotency-Key` or a stored object maps to (both public inputs to a public UUIDv5) and
take over, or pre-empt, someone else's job. Such a request is refused, not renamed: a caller
keeps the id it chose or learns at once why not (400 `malformed_event` on `POST /v1/events`; a
dead letter with the reason via `checked_job_id` on NATS). Only ingest's own requests (source
`/klipnote/ingest`, which only ingest's NATS user may publish) carry ids of our form.
"""

from __future__ import annotations

import re
import uuid

from cloudevents.core.v1.event import CloudEvent

from events import binding
from events.catalogue import EVENT_SOURCE_PREFIX
from events.models import TranscriptionRequested
from functions.ingest import NAME

_JOB_NAMESPACE = uuid.UUID("5f1c2a9e-3a47-4c1f-9b7e-6c0d7f9e1a21")
# A job id is a KV key and the last token of NATS subjects: no dots, wildcards or spaces.
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# The form of the ids we make (uuid hex): no caller may name a job so.
_OUR_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_OUR_SOURCE = EVENT_SOURCE_PREFIX + NAME
CALLER_JOB_ID_RULE = "data.job_id is up to 128 of A-Z a-z 0-9 _ -, not 32 lowercase hex digits (or left out)"


def valid_job_id(job_id: str) -> bool:
    """Whether a job id (ours are hex; another system may name its own) fits KV keys and subjects."""
    return bool(_JOB_ID.fullmatch(job_id))  # not `match`: its `$` lets a final newline through


def valid_caller_job_id(job_id: str) -> bool:
    """Whether another system may name its job `job_id`: a valid job id not of our form (see the
    module's docstring: caller ids live in their own namespace)."""
    return valid_job_id(job_id) and not _OUR_JOB_ID.fullmatch(job_id)


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
    event's source and id (CloudEvents' identity of an event), so its repeats make one job.

    The name hashed starts `event` and gives the source's length: no source and id a caller
    chooses can spell the name of an `Idempotency-Key` (`request\n<key>`) or of a stored object
    (`object\n<bucket>\n<key>\n<etag>`), nor another source's events."""
    if request.job_id:
        return request.job_id
    source = event.get_source()
    return uuid.uuid5(_JOB_NAMESPACE, f"event\n{len(source)}:{source}\n{event.get_id()}").hex


def checked_job_id(event: CloudEvent, request: TranscriptionRequested) -> str:
    """The request's job id (`job_id_for`); MalformedEvent (a dead letter with the reason) when
    another system named one that cannot be a KV key or a subject token, or one of our form (only
    ingest's own requests, source `/klipnote/ingest`, may)."""
    job_id = job_id_for(event, request)
    if not valid_job_id(job_id):
        raise binding.MalformedEvent(
            f"data.job_id {job_id!r} is not a job id (at most 128 of A-Z a-z 0-9 _ -); leave it out"
        )
    if request.job_id and event.get_source() != _OUR_SOURCE and not valid_caller_job_id(job_id):
        raise binding.MalformedEvent(f"data.job_id {job_id!r}: {CALLER_JOB_ID_RULE}")
    return job_id
