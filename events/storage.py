"""Object storage through the `minio` client against any S3 endpoint (MinIO in production,
SeaweedFS in the embedded stack). Every call stays S3-generic so another store can take over."""

from __future__ import annotations

from minio import Minio
from urllib3.exceptions import HTTPError as Urllib3Error

from events.settings import Settings

# What the client raises when the store is away (refused, reset, timed out) rather than answering:
# worth another try later, unlike an S3 error code.
UNREACHABLE: tuple[type[Exception], ...] = (OSError, Urllib3Error)


def client(settings: Settings) -> Minio:
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
    )


def ensure_buckets(store: Minio, settings: Settings) -> None:
    """Idempotent: part of provisioning."""
    for bucket in (settings.uploads_bucket, settings.results_bucket):
        if not store.bucket_exists(bucket):
            store.make_bucket(bucket)
