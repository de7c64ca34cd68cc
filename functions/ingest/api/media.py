"""The media of `POST /v1/jobs`: an upload stored in the uploads bucket, or a reference to an
object already in storage, checked. Sizes are bytes (`MAX_UPLOAD_BYTES`)."""

from __future__ import annotations

import asyncio

from fastapi import UploadFile
from minio import Minio
from minio.error import S3Error

from events import storage
from events.models import ObjectRef
from events.runtime.problems import problem
from events.settings import Settings, media_bucket_allowed
from functions.ingest.ids import normalise_etag
from functions.ingest.naming import display_filename, upload_key

# Uploads whose declared type is clearly not audio or video are refused at the door (415). Anything
# else, application/octet-stream and types we do not know included, goes to the decoder, which
# fails what it cannot read with a clear code (`media_unreadable`, `media_no_audio`, ...).
_NOT_MEDIA_TOPS = {"text", "image", "font", "model", "multipart", "message", "example", "chemical"}
_NOT_MEDIA_APPLICATIONS = {
    "pdf", "zip", "gzip", "x-gzip", "x-tar", "x-bzip2", "x-xz", "zstd", "x-7z-compressed",
    "x-rar-compressed", "vnd.rar", "java-archive", "json", "ld+json", "xml", "xhtml+xml",
    "javascript", "x-javascript", "ecmascript", "x-sh", "x-csh", "x-httpd-php", "x-python",
    "x-msdownload", "x-executable", "x-elf", "x-mach-binary", "vnd.microsoft.portable-executable",
    "x-sharedlib", "x-msi", "vnd.android.package-archive", "x-apple-diskimage", "x-iso9660-image",
    "msword", "rtf", "epub+zip", "sql", "x-sqlite3", "vnd.sqlite3", "wasm", "postscript",
    "x-shockwave-flash", "x-bittorrent", "pgp-signature", "pkcs7-mime", "x-x509-ca-cert",
    "yaml", "x-yaml", "toml", "graphql", "x-www-form-urlencoded",
}  # fmt: skip
_NOT_MEDIA_VENDOR_PREFIXES = ("vnd.openxmlformats", "vnd.ms-", "vnd.oasis.opendocument", "vnd.apple.")


def not_media(content_type: str | None) -> bool:
    """Whether a declared content type is clearly no audio or video (then the upload is refused)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    top, _, sub = media_type.partition("/")
    if top in _NOT_MEDIA_TOPS:
        return True
    if top != "application":
        return False
    return sub in _NOT_MEDIA_APPLICATIONS or sub.startswith(_NOT_MEDIA_VENDOR_PREFIXES)


async def store_upload(
    store: Minio, settings: Settings, file: UploadFile, job_id: str
) -> tuple[ObjectRef, str]:
    """Store an upload under `klipnote-api/<job>/` in the uploads bucket; its reference and the
    name the user gave it. Raises 415 `media_type_unsupported`, 422 `media_empty`, 413
    `media_too_large`."""
    if not_media(file.content_type):
        raise problem(
            415, "media_type_unsupported", f"{file.content_type} is no audio or video (send the media itself)"
        )
    size = _size_of(file)
    if size == 0:
        raise problem(422, "media_empty", "the uploaded file is empty")
    if size > settings.max_upload_bytes:
        raise problem(413, "media_too_large", f"uploads are limited to {settings.max_upload_bytes} bytes")
    # Browsers and httpx send `"` in a multipart filename as %22 (WHATWG form-data encoding).
    filename = display_filename((file.filename or "").replace("%22", '"'))
    # The key is a safe form of the name; the record keeps the name as the user wrote it.
    key = upload_key(job_id, filename)
    content_type = file.content_type or "application/octet-stream"
    # UploadFile spools to disk past 1 MiB; put_object streams it in parts.
    result = await asyncio.to_thread(
        store.put_object, settings.uploads_bucket, key, file.file, size, content_type=content_type
    )
    ref = ObjectRef(
        bucket=settings.uploads_bucket, key=key, etag=result.etag, size=size, content_type=content_type
    )
    return ref, filename


async def stat_reference(store: Minio, settings: Settings, media: str) -> ObjectRef:
    """`s3://bucket/key` of an object that exists now (its eTag names the job). Raises 422
    `media_invalid`, `media_bucket_forbidden` (a bucket MEDIA_BUCKETS does not allow: the store is
    read with the service's credentials, which reach every bucket), `media_missing`,
    `media_unreachable`, `media_empty`; 413 `media_too_large`; 503 `storage_unavailable` when
    the store cannot be reached."""
    bucket, _, key = media.removeprefix("s3://").partition("/")
    if not media.startswith("s3://") or len(bucket) < 3 or not key:
        raise problem(422, "media_invalid", "media is s3://bucket/key")
    if not media_bucket_allowed(bucket, settings):
        # Checked before the store is asked: whether the object exists is no one's business either.
        raise problem(422, "media_bucket_forbidden", f"media may not be read from bucket {bucket!r}")
    try:
        stat = await asyncio.to_thread(store.stat_object, bucket, key)
    except ValueError as error:  # a bucket name or key the store client refuses outright
        raise problem(422, "media_invalid", f"{media}: {error}") from error
    except S3Error as error:
        if error.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
            raise problem(422, "media_missing", f"{media} does not exist") from error
        raise problem(422, "media_unreachable", f"{media}: {error.code}") from error
    except storage.UNREACHABLE as error:  # the store is down: worth a retry, not the caller's fault
        raise problem(503, "storage_unavailable", f"the object store cannot be reached: {error}") from error
    if not stat.size:
        raise problem(422, "media_empty", f"{media} is empty")
    limit = settings.max_upload_bytes
    if stat.size > limit:
        raise problem(413, "media_too_large", f"{media} is {stat.size} bytes, over the limit of {limit}")
    etag = normalise_etag(stat.etag) if stat.etag else None
    return ObjectRef(bucket=bucket, key=key, etag=etag, size=stat.size, content_type=stat.content_type)


def _size_of(file: UploadFile) -> int:
    if file.size is not None:
        return file.size
    file.file.seek(0, 2)
    size = file.file.tell()
    file.file.seek(0)
    return size
