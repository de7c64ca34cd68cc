"""The HTTP API of ingest (`/v1/jobs`). A job is the same whichever way it came in: the API only
stores the upload and publishes `transcription.requested`; routing and state follow from events.
"""

import asyncio
import re
import secrets
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException, UploadFile
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from minio.error import S3Error

from events.models import DEFAULT_FORMATS, ObjectRef, OutputFormat, TranscriptionRequested
from functions.ingest import routing
from functions.ingest.jobs import JobRecord, JobState, new_job_id

if TYPE_CHECKING:
    from functions.ingest.function import Ingest

_MEDIA_TYPES = {
    "json": "application/json",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "txt": "text/plain; charset=utf-8",
}
_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)


def safe_filename(name: str | None) -> str:
    """The last path component, without control or path characters (`../x` is `x`)."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", base).strip(" .")
    return cleaned[:200] or "media"


def create_app(ingest: "Ingest") -> FastAPI:
    settings = ingest.settings
    app = FastAPI(
        title="KlipNote",
        version="1",
        summary="Self-hosted speech-to-text: submit media, follow the job, fetch transcripts.",
    )
    bearer = HTTPBearer(auto_error=False)

    def authorize(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if settings.api_key is None:
            return
        if credentials is None or not secrets.compare_digest(
            credentials.credentials.encode(), settings.api_key.encode()
        ):
            raise HTTPException(401, "a valid API key is required (Authorization: Bearer ...)")

    @app.post("/v1/jobs", status_code=202, dependencies=[Depends(authorize)])
    async def submit_job(
        file: UploadFile,
        model: Annotated[str | None, Form()] = None,
        language: Annotated[str | None, Form()] = None,
    ) -> JobRecord:
        """Upload media (multipart field `file`) and start a job; answers with the job's `id`."""
        model, language = model or None, language or None
        try:
            routing.choose_model(model, language, settings)
        except routing.RoutingError as error:
            raise HTTPException(422, {"code": error.code, "message": error.message}) from error
        size = _size_of(file)
        if size == 0:
            raise HTTPException(422, {"code": "media_empty", "message": "the uploaded file is empty"})
        if size > settings.max_upload_bytes:
            raise HTTPException(
                413,
                {
                    "code": "media_too_large",
                    "message": f"uploads are limited to {settings.max_upload_bytes} bytes",
                },
            )
        job_id = new_job_id()
        filename = safe_filename(file.filename)
        key = f"api/{job_id}/{filename}"
        content_type = file.content_type or "application/octet-stream"
        # UploadFile spools to disk past 1 MiB; put_object streams it in parts.
        result = await asyncio.to_thread(
            ingest.store.put_object,
            settings.uploads_bucket,
            key,
            file.file,
            size,
            content_type=content_type,
        )
        request = TranscriptionRequested(
            job_id=job_id,
            media=ObjectRef(
                bucket=settings.uploads_bucket,
                key=key,
                etag=result.etag,
                size=size,
                content_type=content_type,
            ),
            model=model,
            language=language,
            formats=list(DEFAULT_FORMATS),
            filename=filename,
        )
        record = await ingest.request(request)
        return record

    @app.get("/v1/jobs/{job_id}", dependencies=[Depends(authorize)])
    async def get_job(job_id: str) -> JobRecord:
        record = await ingest.jobs.get(job_id)
        if record is None:
            raise HTTPException(404, {"code": "job_not_found", "message": f"no job {job_id}"})
        return record

    @app.get("/v1/jobs/{job_id}/transcript.{fmt}", dependencies=[Depends(authorize)])
    async def get_transcript(job_id: str, fmt: OutputFormat) -> StreamingResponse:
        record = await ingest.jobs.get(job_id)
        if record is None:
            raise HTTPException(404, {"code": "job_not_found", "message": f"no job {job_id}"})
        if record.state != JobState.COMPLETED:
            raise HTTPException(409, {"code": "job_not_completed", "message": f"job is {record.state.value}"})
        ref = record.results.get(fmt)
        if ref is None:
            raise HTTPException(
                404, {"code": "format_not_produced", "message": f"{fmt} was not requested for this job"}
            )
        try:
            response = await asyncio.to_thread(ingest.store.get_object, ref.bucket, ref.key)
        except S3Error as error:
            raise HTTPException(404, {"code": "result_missing", "message": str(error)}) from error
        return StreamingResponse(_chunks(response), media_type=_MEDIA_TYPES[fmt])

    return app


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
