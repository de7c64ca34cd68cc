"""Media naming rules: what an uploaded file is stored as, what a job's file is called in its
record, and what a result is called when downloaded.

A user's file name is kept as they wrote it for display (`display_filename`); storage keys use a
safe form of it (`safe_filename`) under `API_PREFIX`; downloads name the result after the media
(`result_filename`) in a `Content-Disposition` every client reads (`content_disposition`).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath
from urllib.parse import quote

# The API's own uploads live under this prefix; bucket notifications and the reconcile leave it
# alone (the API has announced those objects itself). Unlikely to be a folder of the users' own.
API_PREFIX = "klipnote-api/"
_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)


def upload_key(job_id: str, filename: str) -> str:
    """The storage key of an API upload: `klipnote-api/<job>/<safe name>`."""
    return f"{API_PREFIX}{job_id}/{safe_filename(filename)}"


def is_api_upload(key: str) -> bool:
    """Whether a key in the uploads bucket is one of the API's own uploads (see `API_PREFIX`)."""
    return key.startswith(API_PREFIX)


def safe_filename(name: str | None) -> str:
    """The last path component, without control or path characters (`../x` is `x`); at most 200
    characters, `media` when nothing is left."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", base).strip(" .")
    return cleaned[:200] or "media"


def display_filename(name: str | None) -> str:
    """The name a user gave their file, as they wrote it (CJK, full-width characters, quotes and
    brackets kept): its last path component without control characters, at most 255 characters,
    for records and download names (never a path: storage keys use `safe_filename`)."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    printable = "".join(char for char in base if unicodedata.category(char)[0] != "C")
    return printable.strip()[:255] or "media"


def result_filename(record_filename: str | None, job_id: str, fmt: str) -> str:
    """What a job's `fmt` result is called when downloaded: the media's name with the format's
    extension (`talk.mp4` → `talk.srt`), else the job id."""
    stem = PurePosixPath(record_filename).stem if record_filename else ""
    return f"{stem or job_id}.{fmt}"


def content_disposition(filename: str) -> str:
    """A `Content-Disposition: attachment` value that names `filename` safely for every client:
    `filename*=UTF-8''` with the name percent-encoded (RFC 6266 section 4.3, RFC 8187), and a plain
    ASCII `filename=` fallback for clients without RFC 8187."""
    fallback = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    fallback = re.sub(r"[^A-Za-z0-9._ -]+", "_", fallback).strip(" ._") or "transcript"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
