"""`/v1/jobs`: start a job (an upload, or an object already in storage), list jobs, read one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, Query, UploadFile

from events.lifecycle import JobState
from events.models import AUDIO_TRACK_DESCRIPTION, TranscriptionRequested
from events.runtime.problems import ERRORS, problem
from functions.ingest.api.dependencies import GatewayDep, PartsDep, authorize
from functions.ingest.api.forms import parse_options
from functions.ingest.api.media import stat_reference, store_upload
from functions.ingest.ids import keyed_job_id, new_job_id, object_job_id
from functions.ingest.naming import display_filename
from functions.ingest.schema import JobPage, JobView

router = APIRouter(dependencies=[Depends(authorize)], responses=ERRORS)


@router.post("/v1/jobs", status_code=202)
async def submit_job(
    parts: PartsDep,
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
    options = parse_options(formats, metadata, webhook_url, webhook_header)
    await parts.admit(model=model, language=language, webhook=options.webhook)
    if (file is None) == (media is None):
        raise problem(422, "media_missing", "send the media as `file`, or name it in `media`")
    gateway = parts.started_gateway()
    if file is not None:
        job_id = keyed_job_id(idempotency_key) if idempotency_key else new_job_id()
        existing = await gateway.get_job(job_id)
        if existing is not None:
            return existing.public()
        ref, filename = await store_upload(gateway.store, parts.settings, file, job_id)
    else:
        ref = await stat_reference(gateway.store, parts.settings, media or "")
        filename = display_filename(ref.key)
        job_id = object_job_id(ref.bucket, ref.key, ref.etag)
    request = TranscriptionRequested(
        job_id=job_id,
        media=ref,
        model=model,
        language=language,
        formats=options.formats,
        metadata=options.metadata,
        filename=filename,
        webhook=options.webhook,
        audio_track=audio_track,
    )
    return await gateway.view(await gateway.submit(request))


@router.get("/v1/jobs")
async def list_jobs(
    gateway: GatewayDep,
    state: JobState | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPage:
    """Jobs, newest first, optionally only those in one state."""
    records = await gateway.list_jobs(state)
    page = [record.public() for record in records[offset : offset + limit]]
    return JobPage(jobs=page, total=len(records), offset=offset, limit=limit)


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, gateway: GatewayDep) -> JobView:
    """The job; once completed, `links` holds presigned download links of its results."""
    record = await gateway.current_job(job_id)
    if record is None:
        raise problem(404, "job_not_found", f"no job {job_id}")
    return await gateway.view(record)
