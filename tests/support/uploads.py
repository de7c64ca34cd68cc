"""MinIO's bucket notification as the tests publish it (a stand-in for MinIO's NATS notifier),
and objects put into the uploads bucket."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from minio import Minio
from nats.js import JetStreamContext

from events import catalogue
from events.bus import Publisher
from events.runtime.function import Runtime
from events.settings import Settings
from functions.ingest.jobs import JobStore
from functions.ingest.schema import JobRecord
from tests.support.jobs import (
    subject_count,
)
from tests.support.paths import ROOT

MINIO_PUT = ROOT.parent / "shared" / "reference" / "minio-nats-put-event.json"


def minio_payload() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(MINIO_PUT.read_text())
    return document


def minio_notification(
    key: str,
    etag: str,
    *,
    bucket: str = "uploads",
    size: int = 4004,
    event_name: str = "s3:ObjectCreated:Put",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """MinIO's documented payload for another object: the key escaped as MinIO escapes it
    (Go's url.QueryEscape: `/` is %2F, a space is +)."""
    document = minio_payload()
    document["EventName"] = event_name
    document["Key"] = f"{bucket}/{key}"
    record = document["Records"][0]
    record["eventName"] = event_name
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    obj = record["s3"]["object"]
    obj["key"], obj["eTag"], obj["size"] = quote_plus(key, safe=""), etag, size
    obj["userMetadata"] = {"content-type": "audio/flac", **(metadata or {})}
    return document


def encoded(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


async def put(store: Minio, key: str, source: Path | None, metadata: dict[str, str] | None = None) -> str:
    """Put a file (or 0 bytes) into the uploads bucket as a user would; its eTag."""
    data = await asyncio.to_thread(source.read_bytes) if source is not None else b""
    result = await asyncio.to_thread(
        store.put_object,
        "uploads",
        key,
        io.BytesIO(data),
        len(data),
        "audio/flac",
        dict(metadata or {}),  # type: ignore[arg-type]
    )
    assert result.etag
    return result.etag


async def notify(js: JetStreamContext, document: dict[str, Any], times: int = 1) -> None:
    """Stands in for MinIO's NATS notifier: its payload on `storage.uploads`, no Nats-Msg-Id."""
    for _ in range(times):
        await js.publish(catalogue.STORAGE_UPLOADS_SUBJECT, encoded(document))


async def jobs_of(js: JetStreamContext, key: str) -> list[JobRecord]:
    settings = Settings()
    store = await JobStore.open(Runtime(settings, Publisher(js, settings), js))
    try:
        records, _ = await store.page(limit=1_000_000)
    finally:
        await store.close()
    return [record for record in records if (record.media.bucket, record.media.key) == ("uploads", key)]


async def requests_published(js: JetStreamContext, job_id: str) -> int:
    return await subject_count(js, catalogue.REQUESTED.subject(job_id))
