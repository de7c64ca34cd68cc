"""The HTTP API of ingest (`/v1`). A job is the same whichever way it came in: the API only
stores the upload (or checks the referenced object) and publishes `transcription.requested`;
routing and state follow from events.
"""

import asyncio
import json
import re
import secrets
import unicodedata
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Query, Request, UploadFile
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from minio.error import S3Error
from nats.js.api import DeliverPolicy
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from events import binding, catalogue, routing, storage
from events.models import (
    AUDIO_TRACK_DESCRIPTION,
    DEFAULT_FORMATS,
    MEDIA_TYPES,
    ObjectRef,
    OutputFormat,
    TranscriptionRequested,
    WebhookTarget,
    split_formats,
)
from functions.ingest.jobs import (
    JobRecord,
    JobState,
    JobView,
    job_id_for,
    keyed_job_id,
    new_job_id,
    normalise_etag,
    object_job_id,
    valid_job_id,
)
from functions.ingest.webhooks import WebhookRefused

if TYPE_CHECKING:
    from functions.ingest.function import Ingest

_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)
# The API's own uploads live under this prefix; bucket notifications and the reconcile leave it
# alone (the API has announced those objects itself). Unlikely to be a folder of the users' own.
API_PREFIX = "klipnote-api/"
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")
_MAX_METADATA_BYTES = 4096
# A header a webhook call may carry: an RFC 9110 token for its name, no control characters in its
# value (a CR/LF would smuggle a header of its own).
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")
_HEADER_VALUE = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]{1,4096}$")
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


def display_filename(name: str | None) -> str:
    """The name a user gave their file, as they wrote it (CJK, full-width characters, quotes and
    brackets kept): its last path component without control characters, for records and download
    names (never a path: storage keys use `safe_filename`)."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    printable = "".join(char for char in base if unicodedata.category(char)[0] != "C")
    return printable.strip()[:255] or "media"


def content_disposition(filename: str) -> str:
    """A `Content-Disposition: attachment` value that names `filename` safely for every client:
    `filename*=UTF-8''` with the name percent-encoded (RFC 6266 section 4.3, RFC 8187), and a plain
    ASCII `filename=` fallback for clients without RFC 8187."""
    fallback = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    fallback = re.sub(r"[^A-Za-z0-9._ -]+", "_", fallback).strip(" ._") or "transcript"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def result_filename(record_filename: str | None, job_id: str, fmt: str) -> str:
    """What a job's `fmt` result is called when downloaded: the media's name with the format's
    extension (`talk.mp4` → `talk.srt`), else the job id."""
    stem = PurePosixPath(record_filename).stem if record_filename else ""
    return f"{stem or job_id}.{fmt}"


def safe_filename(name: str | None) -> str:
    """The last path component, without control or path characters (`../x` is `x`)."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", base).strip(" .")
    return cleaned[:200] or "media"


class Problem(BaseModel):
    code: str
    message: str


class ProblemResponse(BaseModel):
    detail: Problem


class JobPage(BaseModel):
    jobs: list[JobView]
    total: int
    offset: int
    limit: int


def problem(status: int, code: str, message: str) -> HTTPException:
    return HTTPException(status, {"code": code, "message": message})


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemResponse} for status in (400, 401, 404, 409, 413, 415, 422)
}


def create_app(ingest: "Ingest") -> FastAPI:
    settings = ingest.settings
    app = FastAPI(
        title="KlipNote",
        version="1",
        summary="Self-hosted speech-to-text: submit media, follow the job, fetch transcripts.",
        description=(
            "Jobs come from `POST /v1/jobs` (an upload or an object already in storage), from files "
            "dropped into the uploads bucket, and from `io.klipnote.transcription.requested.v1` "
            "CloudEvents (on NATS, or `POST /v1/events`), whose data follows the JSON Schema at "
            "`/v1/schemas/transcription-requested.json`. Errors answer `{detail: {code, message}}`."
        ),
    )
    bearer = HTTPBearer(auto_error=False)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own checks (a query parameter out of range, a header too long) answer as every
        # other error does: {detail: {code, message}}.
        problems = binding.describe_errors(error.errors(), "request")
        return JSONResponse({"detail": {"code": "request_invalid", "message": problems}}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        # Starlette's own refusals (a multipart body it cannot parse, an unknown route) carry a
        # bare string: answer them in the same {detail: {code, message}} shape as ours.
        if not isinstance(error.detail, dict):
            code = HTTPStatus(error.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
            detail = {"code": code, "message": str(error.detail)}
            error = StarletteHTTPException(error.status_code, detail, headers=error.headers)  # type: ignore[arg-type]
        return await http_exception_handler(request, error)

    def authorize(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if settings.api_key is None:
            return
        if credentials is None or not secrets.compare_digest(
            credentials.credentials.encode(), settings.api_key.encode()
        ):
            raise HTTPException(
                401,
                {"code": "unauthorized", "message": "a valid API key is required (Authorization: Bearer)"},
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def checked_options(
        model: str | None,
        language: str | None,
        formats: str | None,
        metadata: str | None,
        webhook_url: str | None,
        webhook_header: str | None,
    ) -> tuple[list[OutputFormat], dict[str, str], WebhookTarget | None]:
        try:
            routing.choose_model(model, language, settings)
        except routing.RoutingError as error:
            raise problem(422, error.code, error.message) from error
        if language is not None and not _LANGUAGE.match(language):
            raise problem(422, "language_invalid", f"{language!r} is not an ISO 639-1 language code")
        chosen: list[OutputFormat] = list(DEFAULT_FORMATS)
        if formats:
            chosen, unknown = split_formats(formats)
            if unknown or not chosen:
                raise problem(422, "formats_invalid", f"formats are among {', '.join(DEFAULT_FORMATS)}")
        echoed: dict[str, str] = {}
        if metadata:
            if len(metadata.encode()) > _MAX_METADATA_BYTES:
                raise problem(422, "metadata_invalid", f"metadata is limited to {_MAX_METADATA_BYTES} bytes")
            try:
                echoed = json.loads(metadata)
            except json.JSONDecodeError as error:
                raise problem(422, "metadata_invalid", f"metadata is not JSON: {error}") from error
            except RecursionError as error:  # [[[[...]]]] nested deeper than the parser goes
                raise problem(422, "metadata_invalid", "metadata is nested too deeply") from error
            if not isinstance(echoed, dict) or not all(
                isinstance(key, str) and isinstance(value, str) for key, value in echoed.items()
            ):
                raise problem(422, "metadata_invalid", "metadata is a JSON object of strings")
        webhook = None
        if webhook_url:
            headers = {}
            if webhook_header:
                name, sep, value = webhook_header.partition(":")
                name, value = name.strip(), value.strip()
                if not sep or not _HEADER_NAME.match(name) or not _HEADER_VALUE.match(value):
                    raise problem(
                        422, "webhook_invalid", "webhook_header is `Name: value`, with no control characters"
                    )
                headers[name] = value
            try:
                webhook = WebhookTarget(url=webhook_url, headers=headers)
                await ingest.webhooks.check_async(webhook)
            except ValidationError as error:
                raise problem(422, "webhook_invalid", "webhook_url must be an http(s) URL") from error
            except WebhookRefused as error:
                raise problem(422, error.code, error.message) from error
        return chosen, echoed, webhook

    @app.post("/v1/jobs", status_code=202, dependencies=[Depends(authorize)], responses=_ERRORS)
    async def submit_job(
        file: Annotated[UploadFile | None, File(description="The media (any audio or video).")] = None,
        media: Annotated[
            str | None, Form(description="Or an object already in storage: s3://bucket/key.")
        ] = None,
        model: Annotated[str | None, Form(description="A model; otherwise routing decides.")] = None,
        language: Annotated[str | None, Form(description="ISO 639-1; otherwise detected.")] = None,
        formats: Annotated[str | None, Form(description="Comma separated: json,srt,vtt,txt.")] = None,
        metadata: Annotated[str | None, Form(description="JSON object of strings, echoed back.")] = None,
        webhook_url: Annotated[str | None, Form(description="Called (signed) when the job ends.")] = None,
        webhook_header: Annotated[
            str | None, Form(description="A static `Name: value` header sent with each call.")
        ] = None,
        audio_track: Annotated[int | None, Form(ge=0, description=AUDIO_TRACK_DESCRIPTION)] = None,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JobView:
        """Start a job: upload media in the multipart field `file`, or name an object already in
        storage in `media`. Answers 202 with the job (its `id`). A repeated `Idempotency-Key`,
        or the same stored object named again, answers with the same job."""
        model, language = model or None, language or None
        chosen, echoed, webhook = await checked_options(
            model, language, formats, metadata, webhook_url, webhook_header
        )
        if (file is None) == (media is None):
            raise problem(422, "media_missing", "send the media as `file`, or name it in `media`")
        if file is not None:
            job_id = keyed_job_id(idempotency_key) if idempotency_key else new_job_id()
            existing = await ingest.jobs.get(job_id)
            if existing is not None:
                return existing.public()
            ref, filename = await _store_upload(ingest, file, job_id)
        else:
            ref = await _stat_reference(ingest, media or "")
            filename = display_filename(ref.key)
            job_id = object_job_id(ref.bucket, ref.key, ref.etag)
        request = TranscriptionRequested(
            job_id=job_id,
            media=ref,
            model=model,
            language=language,
            formats=chosen,
            metadata=echoed,
            filename=filename,
            webhook=webhook,
            audio_track=audio_track,
        )
        return await _view(ingest, await ingest.request(request))

    @app.get("/v1/jobs", dependencies=[Depends(authorize)], responses=_ERRORS)
    async def list_jobs(
        state: JobState | None = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> JobPage:
        """Jobs, newest first, optionally only those in one state."""
        records = await ingest.jobs.list(state)
        page = [record.public() for record in records[offset : offset + limit]]
        return JobPage(jobs=page, total=len(records), offset=offset, limit=limit)

    @app.get("/v1/jobs/{job_id}", dependencies=[Depends(authorize)], responses=_ERRORS)
    async def get_job(job_id: str) -> JobView:
        """The job; once completed, `links` holds presigned download links of its results."""
        return await _view(ingest, await _record(ingest, job_id))

    @app.get("/v1/jobs/{job_id}/events", dependencies=[Depends(authorize)], responses=_ERRORS)
    async def job_events(job_id: str) -> StreamingResponse:
        """The job's lifecycle events as they happen (server-sent events, each `data:` a
        CloudEvent in JSON), from its request to its end (`completed` or `failed`)."""
        if await ingest.jobs.get(job_id) is None:  # the stream replays every event: no catch-up
            raise problem(404, "job_not_found", f"no job {job_id}")
        return StreamingResponse(_event_stream(ingest, job_id), media_type="text/event-stream")

    @app.get("/v1/jobs/{job_id}/transcript.{fmt}", dependencies=[Depends(authorize)], responses=_ERRORS)
    async def get_transcript(job_id: str, fmt: OutputFormat) -> StreamingResponse:
        record = await _record(ingest, job_id)
        if record.state != JobState.COMPLETED:
            raise problem(409, "job_not_completed", f"job is {record.state.value}")
        ref = record.results.get(fmt)
        if ref is None:
            raise problem(404, "format_not_produced", f"{fmt} was not requested for this job")
        try:
            response = await asyncio.to_thread(ingest.store.get_object, ref.bucket, ref.key)
        except S3Error as error:
            raise problem(404, "result_missing", str(error)) from error
        disposition = content_disposition(result_filename(record.filename, record.id, fmt))
        return StreamingResponse(
            _chunks(response), media_type=MEDIA_TYPES[fmt], headers={"Content-Disposition": disposition}
        )

    @app.post("/v1/events", status_code=202, dependencies=[Depends(authorize)], responses=_ERRORS)
    async def receive_event(request: Request) -> JobView:
        """A `io.klipnote.transcription.requested.v1` CloudEvent from another system, in binary or
        structured mode. The event's source and id name the job: a repeat is the same job."""
        try:
            event = binding.decode(dict(request.headers), await request.body())
            if binding.kind_of(event) is not catalogue.REQUESTED:
                raise binding.MalformedEvent(f"only {catalogue.REQUESTED.type} is accepted here")
            wanted = binding.parse_data(event, TranscriptionRequested)
        except binding.MalformedEvent as error:
            raise problem(400, "malformed_event", str(error)) from error
        if wanted.job_id is not None and not valid_job_id(wanted.job_id):
            raise problem(400, "malformed_event", "data.job_id is up to 128 of A-Z a-z 0-9 _ - (or left out)")
        try:
            await ingest.admit(wanted)
        except (routing.RoutingError, WebhookRefused) as error:
            raise problem(422, error.code, error.message) from error
        job_id = job_id_for(event, wanted)
        existing = await ingest.jobs.get(job_id)
        if existing is not None:
            return await _view(ingest, existing)
        request_data = wanted.model_copy(update={"job_id": job_id})
        return await _view(ingest, await ingest.request(request_data, binding.traceparent_of(event)))

    @app.get("/v1/schemas/transcription-requested.json")
    async def requested_schema() -> JSONResponse:
        """The JSON Schema of a `transcription.requested` event's data, for other systems."""
        return JSONResponse(TranscriptionRequested.model_json_schema())

    return app


async def _record(ingest: "Ingest", job_id: str) -> JobRecord:
    record = await ingest.jobs.current(job_id)
    if record is None:
        raise problem(404, "job_not_found", f"no job {job_id}")
    return record


async def _view(ingest: "Ingest", record: JobRecord) -> JobView:
    view = record.public()
    if record.state == JobState.COMPLETED:
        view.links = await ingest.result_links(record)
    return view


async def _store_upload(ingest: "Ingest", file: UploadFile, job_id: str) -> tuple[ObjectRef, str]:
    settings = ingest.settings
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
    key = f"{API_PREFIX}{job_id}/{safe_filename(filename)}"
    content_type = file.content_type or "application/octet-stream"
    # UploadFile spools to disk past 1 MiB; put_object streams it in parts.
    result = await asyncio.to_thread(
        ingest.store.put_object, settings.uploads_bucket, key, file.file, size, content_type=content_type
    )
    ref = ObjectRef(
        bucket=settings.uploads_bucket, key=key, etag=result.etag, size=size, content_type=content_type
    )
    return ref, filename


async def _stat_reference(ingest: "Ingest", media: str) -> ObjectRef:
    """`s3://bucket/key` of an object that exists now (its eTag names the job)."""
    bucket, _, key = media.removeprefix("s3://").partition("/")
    if not media.startswith("s3://") or len(bucket) < 3 or not key:
        raise problem(422, "media_invalid", "media is s3://bucket/key")
    try:
        stat = await asyncio.to_thread(ingest.store.stat_object, bucket, key)
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
    limit = ingest.settings.max_upload_bytes
    if stat.size > limit:
        raise problem(413, "media_too_large", f"{media} is {stat.size} bytes, over the limit of {limit}")
    etag = normalise_etag(stat.etag) if stat.etag else None
    return ObjectRef(bucket=bucket, key=key, etag=etag, size=stat.size, content_type=stat.content_type)


async def _event_stream(ingest: "Ingest", job_id: str) -> AsyncIterator[bytes]:
    assert ingest.runtime is not None
    ends = {catalogue.COMPLETED.type, catalogue.FAILED.type}
    sub = await ingest.runtime.js.subscribe(
        catalogue.job_events_subject(job_id), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=15)
            except TimeoutError:
                yield b": keep-alive\n\n"  # proxies close idle streams
                continue
            event = binding.decode(msg.headers, msg.data)
            _, body = binding.encode(event, "structured")
            yield f"id: {event.get_id()}\nevent: {event.get_type()}\n".encode() + b"data: " + body + b"\n\n"
            if event.get_type() in ends:
                return
    finally:
        await sub.unsubscribe()


def _size_of(file: UploadFile) -> int:
    if file.size is not None:
        return file.size
    file.file.seek(0, 2)
    size = file.file.tell()
    file.file.seek(0)
    return size


def _chunks(response: Any) -> Any:
    try:
        yield from response.stream(64 * 1024)
    finally:
        response.close()
        response.release_conn()
