"""Presigned download links of a job's results, for the API's job view and the webhook payload."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from minio import Minio

from events.models import OutputFormat
from functions.ingest.naming import content_disposition, result_filename
from functions.ingest.schema import JobRecord


class ResultLinks:
    """Presigns GET links of results in the object store, valid for `expiry_s` seconds
    (`RESULT_LINK_EXPIRY_S`); each download is named after the media through S3's
    `response-content-disposition` override."""

    def __init__(self, store: Minio, expiry_s: float) -> None:
        self.store = store
        self.expiry_s = expiry_s

    async def of(self, record: JobRecord) -> dict[OutputFormat, str]:
        """A link per result of `record` (none when it has no results). Off the event loop: the
        client may ask the store for the bucket's region first."""
        expiry = timedelta(seconds=self.expiry_s)

        def presign() -> dict[OutputFormat, str]:
            return {
                fmt: self.store.presigned_get_object(
                    ref.bucket,
                    ref.key,
                    expires=expiry,
                    response_headers={
                        "response-content-disposition": content_disposition(
                            result_filename(record.filename, record.id, fmt)
                        )
                    },
                )
                for fmt, ref in record.results.items()
            }

        return await asyncio.to_thread(presign)
