"""`/v1/jobs`: start a job (an upload, or an object already in storage), list jobs, read one."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, Query, UploadFile

from events.lifecycle import JobState
from events.models import AUDIO_TRACK_DESCRIPTION, MAX_SPEAKERS, TranscriptionRequested
from events.runtime.problems import ERRORS, problem
from functions.ingest.api.dependencies import GatewayDep, PartsDep, authorize
from functions.ingest.api.forms import parse_decoding, parse_diarization, parse_options
from functions.ingest.api.media import stat_reference, store_upload
from functions.ingest.gateway import Gateway
from functions.ingest.ids import keyed_job_id, new_job_id, object_job_id
from functions.ingest.naming import display_filename
from functions.ingest.schema import JobPage, JobRecord, JobView

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
    task: Annotated[
        str | None,
        Form(
            description="`transcribe` (the default) or `translate` (to English; only models that "
            "can translate take it: whisperx, not belle2; 422 `task_unsupported` otherwise)."
        ),
    ] = None,
    prompt: Annotated[
        str | None,
        Form(
            description="Initial prompt, up to 2000 characters: text the model reads as what came "
            "before (names, spelling, punctuation style). Whisper keeps its last 223 tokens."
        ),
    ] = None,
    hotwords: Annotated[
        str | None,
        Form(description="Words and phrases to expect (names, terms), up to 1000 characters."),
    ] = None,
    temperature: Annotated[
        float | None,
        Form(
            description="First sampling temperature, 0 to 1; higher ones follow when a result is "
            "refused. Unset: the model's own schedule from 0 (beam search)."
        ),
    ] = None,
    delete_after: Annotated[
        int | None,
        Form(
            ge=0,
            le=10 * 365 * 24 * 3600,
            description="Seconds after the job ends when its upload, results and record are "
            "deleted; unset: RESULTS_TTL_S.",
        ),
    ] = None,
    diarize: Annotated[
        bool | None,
        Form(
            description="Name who spoke when: `speaker` on words, segments and cues (SPEAKER_00, "
            "...), voice tags in VTT, a prefix in SRT and TXT. Only models that can name speakers "
            "take it (whisperx; 422 `diarization_unsupported` otherwise)."
        ),
    ] = None,
    min_speakers: Annotated[
        int | None, Form(description=f"With diarize: at least this many speakers (1-{MAX_SPEAKERS}).")
    ] = None,
    max_speakers: Annotated[
        int | None, Form(description=f"With diarize: at most this many speakers (1-{MAX_SPEAKERS}).")
    ] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobView:
    """Start a job: upload media in the multipart field `file`, or name an object already in
    storage in `media`. Answers 202 with the job (its `id`). A repeated `Idempotency-Key` with
    the same file and options, or the same stored object named again, answers with the same job;
    the key with another file or other options is refused (422 `idempotency_key_reused`, as the
    IETF draft-ietf-httpapi-idempotency-key-header asks).

    The decoding options (`task`, `prompt`, `hotwords`, `temperature`) go to the model with the
    job, each applied where the model supports it (README, "Decoding options"); a task the chosen
    model cannot do is 422 `task_unsupported`, a bad value 422 `task_invalid`, `prompt_invalid`,
    `hotwords_invalid` or `temperature_invalid`. `diarize=true` (with `min_speakers` and
    `max_speakers`) names the speakers (README, "Speakers"); a bad count is 422 `speakers_invalid`."""
    model, language = model or None, language or None
    options = parse_options(formats, metadata, webhook_url, webhook_header)
    decoding = parse_decoding(task, prompt, hotwords, temperature)
    diarization = parse_diarization(diarize, min_speakers, max_speakers)
    await parts.admit(
        model=model, language=language, webhook=options.webhook, decoding=decoding, diarization=diarization
    )
    if (file is None) == (media is None):
        raise problem(422, "media_missing", "send the media as `file`, or name it in `media`")
    gateway = parts.started_gateway()
    digest: str | None = None
    if file is not None:
        job_id = keyed_job_id(idempotency_key) if idempotency_key else new_job_id()
        if idempotency_key:
            options_sent: dict[str, object] = {
                "model": model,
                "language": language,
                "formats": options.formats,
                "metadata": options.metadata,
                "webhook": options.webhook.model_dump(mode="json") if options.webhook else None,
                "audio_track": audio_track,
                "decoding": decoding.model_dump(mode="json"),
                "delete_after": delete_after,
                # As stored (store_upload): a client quoting `"` as %22 sends the same name.
                "filename": display_filename((file.filename or "").replace("%22", '"')),
            }
            if diarization is not None:  # only then: a request without it keeps its digest of before
                options_sent["diarization"] = diarization.model_dump(mode="json")
            digest = await _request_digest(file, options_sent)
        existing = await gateway.get_job(job_id)
        if existing is not None:
            return await _repeated(gateway, existing, digest)
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
        decoding=decoding,
        diarization=diarization,
        delete_after=delete_after,
    )
    record = await gateway.submit(request, request_digest=digest)
    if digest is not None and record.request_digest not in (None, digest):
        # Another request under the same key made the job first (both found no record).
        raise _key_reused()
    return await gateway.view(record)


async def _request_digest(file: UploadFile, options: dict[str, object]) -> str:
    """SHA-256 (hex) of an upload's bytes and its options (canonical JSON): what an
    `Idempotency-Key` request sent. Reads the spooled upload once, off the event loop."""

    def digest() -> str:
        hashed = hashlib.sha256(json.dumps(options, sort_keys=True, separators=(",", ":")).encode())
        hashed.update(b"\0")
        file.file.seek(0)
        for chunk in iter(lambda: file.file.read(2**20), b""):
            hashed.update(chunk)
        file.file.seek(0)
        return hashed.hexdigest()

    return await asyncio.to_thread(digest)


async def _repeated(gateway: Gateway, existing: JobRecord, digest: str | None) -> JobView:
    """The answer to a request whose `Idempotency-Key` names an existing job: the job, when it is
    the same request (a job still `requested` is published again: the first publish may have
    failed); 422 `idempotency_key_reused` when the key came with another file or options."""
    if digest is not None and existing.request_digest is not None and existing.request_digest != digest:
        raise _key_reused()
    await gateway.republish(existing)
    return await gateway.view(existing)


def _key_reused() -> Exception:
    return problem(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was sent before with another file or other options; "
        "a new request needs a new key",
    )


@router.get("/v1/jobs")
async def list_jobs(
    gateway: GatewayDep,
    state: JobState | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPage:
    """Jobs, newest first, optionally only those in one state, from ingest's job index: any
    `offset` costs the same (a page reads only its own records); past the last job, an empty
    page and the total."""
    records, total = await gateway.page_of_jobs(state, offset, limit)
    return JobPage(jobs=[record.public() for record in records], total=total, offset=offset, limit=limit)


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, gateway: GatewayDep) -> JobView:
    """The job; once completed, `links` holds presigned download links of its results."""
    record = await gateway.current_job(job_id)
    if record is None:
        raise problem(404, "job_not_found", f"no job {job_id}")
    return await gateway.view(record)
