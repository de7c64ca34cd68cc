"""Bucket drop: MinIO's S3 event records on `storage.uploads`, and a periodic reconcile of the
uploads bucket, each turning an object into exactly one job.

STUB: to be implemented (issue 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from cloudevents.core.v1.event import CloudEvent

from events import binding

if TYPE_CHECKING:
    from functions.ingest.function import Ingest


def decode_notification(headers: dict[str, str] | None, body: bytes) -> CloudEvent:
    """A MinIO notification (not a CloudEvent) wrapped as one for the handler."""
    raise binding.MalformedEvent("bucket notifications are not handled yet")


class BucketDrop:
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        return
        yield

    async def reconcile_forever(self) -> None:
        return None
