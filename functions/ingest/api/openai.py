"""The OpenAI-compatible routes (`/v1/audio/transcriptions`, `/v1/audio/translations`,
`/v1/models`): a request is a job like any other, answered in OpenAI's shapes when it ends.

A request is admitted, its upload stored and its job submitted exactly as `POST /v1/jobs` does
(`media.store_upload`, `Parts.admit`, `Gateway.submit`), so routing, limits, traces and records
all apply; the route then follows the job's events until it ends (at most `OPENAI_WAIT_S`) and
answers from the job's stored results. The job id is in every answer's `X-KlipNote-Job-Id` header.

Every refusal on these routes is OpenAI's error body `{"error": {"message", "type", "param",
"code"}}` (`openai_shapes`), `code` being KlipNote's (docs/bad-input.md). Statuses follow OpenAI's:
an invalid request is 400 (KlipNote's 415 and 422 included: OpenAI answers an unreadable file or
an invalid parameter 400, and its SDK raises `BadRequestError` for it), 401, 404, 413, 503 as
KlipNote answers them; a job still running at the wait's end is 504 (see `_still_running`).
docs/openai.md tells integrators what maps to what.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from minio.error import S3Error
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from events import binding, storage
from events.lifecycle import JobState
from events.models import Decoding, Diarization, OutputFormat, TranscriptionRequested
from events.registry import MODELS
from events.runtime.problems import problem
from functions.ingest.api.dependencies import Parts, PartsDep, authorize
from functions.ingest.api.media import store_upload
from functions.ingest.api.openai_shapes import (
    Granularity,
    Model,
    ModelList,
    OpenAIErrorResponse,
    ResponseFormat,
    Transcription,
    TranscriptionDiarized,
    TranscriptionVerbose,
    diarized,
    openai_error_body,
    verbose,
)
from functions.ingest.gateway import Gateway
from functions.ingest.ids import new_job_id
from functions.ingest.schema import JobRecord

log = logging.getLogger(__name__)

# The header naming the job a request became: poll it with GET /v1/jobs/{id}.
JOB_HEADER = "X-KlipNote-Job-Id"
# The model name OpenAI's clients send by default: here, as any name that is no KlipNote model,
# it means "route by language" (LANGUAGE_MODELS, detection).
WHISPER_1 = "whisper-1"
# OpenAI's SDKs (Stainless-generated) retry 408, 409, 429 and 5xx unless told not to. A retry of
# an upload is a new job: answers about a job say "do not" (the job id is there to poll instead).
_NO_RETRY = {"x-should-retry": "false"}
# KlipNote's statuses OpenAI spells otherwise: it answers an unreadable file and invalid
# parameters 400 invalid_request_error.
_OPENAI_STATUS = {415: 400, 422: 400}
# Failure codes that are the request's fault (its media, model, task or language): 400, the
# others (the model, the store) 500.
_REQUEST_FAULT_PREFIXES = ("media_", "language_", "task_")
_REQUEST_FAULTS = {"model_disabled", "model_unknown", "diarization_unsupported"}
_STARTED = int(time.time())


class OpenAIRoute(APIRoute):
    """A route whose every refusal, FastAPI's own validation of the form included, is answered in
    OpenAI's error body with OpenAI's status (the app's handlers answer KlipNote's shape)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:
                return _invalid(error.errors())
            except StarletteHTTPException as error:
                return _refused(error)

        return handle


_ERROR_STATUSES = (400, 401, 404, 408, 409, 413, 500, 503, 504)
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorResponse} for status in _ERROR_STATUSES
}
router = APIRouter(
    route_class=OpenAIRoute, dependencies=[Depends(authorize)], responses=_ERRORS, tags=["OpenAI"]
)

_TEXT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": Transcription | TranscriptionVerbose | TranscriptionDiarized,
        "description": "`json`: `{text}`; `verbose_json`: the text with its segments and words; "
        "`diarized_json`: the segments with their speakers; "
        "`text`, `srt`, `vtt`: the transcript as plain text, SubRip or WebVTT.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
        "headers": {
            JOB_HEADER: {
                "description": "The job the request became (GET /v1/jobs/{id}); on its errors too.",
                "schema": {"type": "string"},
            }
        },
    }
}

# The form of both routes, once.
FileField = Annotated[
    UploadFile, File(description="The media: any audio or video ffmpeg reads (flac, mp3, mp4, wav, ...).")
]
ModelField = Annotated[
    str | None,
    Form(
        description="A KlipNote model (GET /v1/models) sends the job to it; `whisper-1` and any other "
        "name mean: route by language (LANGUAGE_MODELS, else the detected language)."
    ),
]
LanguageField = Annotated[
    str | None, Form(description="The spoken language, ISO 639-1 (`en`, `zh`); otherwise detected.")
]
PromptField = Annotated[
    str | None,
    Form(description="Initial prompt: text the model reads as what came before (names, spelling, style)."),
]
FormatField = Annotated[
    ResponseFormat,
    Form(
        description="json (`{text}`), text, srt, vtt, verbose_json (segments, words, language), or "
        "diarized_json (segments with their speakers A, B, ...: the job names speakers; transcriptions only)."
    ),
]
TemperatureField = Annotated[
    float | None,
    Form(
        ge=0,
        le=1,
        description="The first sampling temperature, 0 to 1; 0 or none: the model's own schedule (from 0, "
        "rising when a window decodes badly), as OpenAI's 0 means.",
    ),
]
GranularityField = Annotated[
    list[Granularity] | None,
    Form(
        alias="timestamp_granularities[]",
        description="With verbose_json: `segment` (the default), `word` (adds `words`), or both.",
    ),
]
StreamField = Annotated[
    bool, Form(description="Streaming (SSE) is not supported: true is refused 400 `stream_unsupported`.")
]


@router.post("/v1/audio/transcriptions", response_model=None, responses=_TEXT_RESPONSES)
async def create_transcription(
    parts: PartsDep,
    file: FileField,
    model: ModelField = None,
    language: LanguageField = None,
    prompt: PromptField = None,
    response_format: FormatField = "json",
    temperature: TemperatureField = None,
    timestamp_granularities: GranularityField = None,
    stream: StreamField = False,
) -> Response:
    """OpenAI's createTranscription: the media's speech as text, in its own language. The request
    becomes a job (routing, limits, records as `POST /v1/jobs`), answered when it ends, at most
    `OPENAI_WAIT_S` seconds; the job's id is in the `X-KlipNote-Job-Id` header. Errors: OpenAI's
    body `{error: {message, type, param, code}}`; 400 for an invalid request or media the decoder
    cannot read (the job's code, e.g. `media_unreadable`), 401, 413 `media_too_large`, 503
    `not_ready` or `too_many_streams` (API_MAX_EVENT_STREAMS requests and event streams wait
    already), 504 `job_still_running` (the job goes on: poll `GET /v1/jobs/{id}`)."""
    answer = _Answer(response_format, set(timestamp_granularities or ()))
    return await _run(parts, file, "transcribe", model, language, prompt, temperature, answer, stream)


@router.post("/v1/audio/translations", response_model=None, responses=_TEXT_RESPONSES)
async def create_translation(
    parts: PartsDep,
    file: FileField,
    model: ModelField = None,
    language: LanguageField = None,
    prompt: PromptField = None,
    response_format: FormatField = "json",
    temperature: TemperatureField = None,
    stream: StreamField = False,
) -> Response:
    """OpenAI's createTranslation: the media's speech translated to English text (Whisper's
    `translate` task). Routing sends it only to a model that can translate (whisperx; belle2
    cannot): where no enabled model can, 400 `task_unsupported`. Otherwise as
    `/v1/audio/transcriptions` (`language`, the spoken one, is KlipNote's addition)."""
    answer = _Answer(response_format, set())
    return await _run(parts, file, "translate", model, language, prompt, temperature, answer, stream)


@router.get("/v1/models")
async def list_models(parts: PartsDep) -> ModelList:
    """OpenAI's model list: the enabled models (ENABLED_MODELS) and `whisper-1`, the name OpenAI's
    clients send by default (clients such as Open WebUI pick from this list), which routes by
    language. `created` is when this ingest started."""
    return ModelList(data=[_model(name) for name in _model_names(parts.settings.enabled_models)])


@router.get("/v1/models/{model_id}")
async def retrieve_model(model_id: str, parts: PartsDep) -> Model:
    """One model of the list; 404 `model_not_found` for any other name."""
    if model_id not in _model_names(parts.settings.enabled_models):
        raise problem(404, "model_not_found", f"no model {model_id!r}; GET /v1/models lists them")
    return _model(model_id)


@router.api_route(
    "/v1/audio/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def unknown_audio_route(path: str, request: Request) -> Response:
    """Any other `/v1/audio/` path (OpenAI's `speech`, say): 404 in OpenAI's shape."""
    raise problem(404, "route_not_found", f"{request.method} /v1/audio/{path} is not served here")


# -- the job ---------------------------------------------------------------------------------


class _Answer:
    """What the caller wants back: the response format and, for verbose_json, the granularities."""

    def __init__(self, response_format: ResponseFormat, granularities: set[Granularity]) -> None:
        self.response_format = response_format
        self.granularities = granularities

    @property
    def formats(self) -> list[OutputFormat]:
        """The job's result files: json (segments, words, language) and txt (the text, run on as
        optimize runs it on, CJK without spaces), plus the subtitle file asked for."""
        wanted: list[OutputFormat] = ["json", "txt"]
        if self.response_format == "srt" or self.response_format == "vtt":
            wanted.append(self.response_format)
        return wanted


async def _run(
    parts: Parts,
    file: UploadFile,
    task: Literal["transcribe", "translate"],
    model: str | None,
    language: str | None,
    prompt: str | None,
    temperature: float | None,
    answer: _Answer,
    stream: bool,
) -> Response:
    if stream:
        raise problem(
            400, "stream_unsupported", "streaming is not supported: send the request without stream=true"
        )
    # OpenAI's diarized_json is its diarizing model's answer: here any request for it names speakers.
    diarization = Diarization() if answer.response_format == "diarized_json" else None
    if diarization is not None and task == "translate":
        raise problem(
            400,
            "response_format_unsupported",
            "diarized_json is a transcription's format, not a translation's",
        )
    # Any name that is no KlipNote model (whisper-1, gpt-4o-transcribe, ...) routes by language.
    model = model if model in MODELS else None
    language = language or None
    try:
        # Temperature 0 is OpenAI's "the model's own schedule" (from 0, rising on failure).
        decoding = Decoding(task=task, prompt=prompt or None, temperature=temperature or None)
    except ValidationError as error:
        raise RequestValidationError(
            [{**found, "loc": ("body", *found["loc"])} for found in error.errors()]
        ) from error
    await parts.admit(
        model=model, language=language, webhook=None, decoding=decoding, diarization=diarization
    )
    gateway = parts.started_gateway()
    # The wait holds a reader of the job's events, as a live event stream does: it takes one of
    # the same slots (API_MAX_EVENT_STREAMS), before anything is stored.
    slot = parts.streams.take()
    if slot is None:
        limit = parts.settings.api_max_event_streams
        raise problem(503, "too_many_streams", f"{limit} requests and event streams are waiting already")
    try:
        return await _submit_and_wait(parts, gateway, file, model, language, decoding, diarization, answer)
    finally:
        slot.release()


async def _submit_and_wait(
    parts: Parts,
    gateway: Gateway,
    file: UploadFile,
    model: str | None,
    language: str | None,
    decoding: Decoding,
    diarization: Diarization | None,
    answer: _Answer,
) -> Response:
    job_id = new_job_id()
    ref, filename = await store_upload(gateway.store, parts.settings, file, job_id)
    request = TranscriptionRequested(
        job_id=job_id,
        media=ref,
        model=model,
        language=language,
        formats=answer.formats,
        filename=filename,
        decoding=decoding,
        diarization=diarization,
    )
    headers = {JOB_HEADER: job_id}
    try:
        await gateway.submit(request)
        record = await _ended(gateway, job_id, parts.settings.openai_wait_s)
        if record is None:  # deleted while we waited
            raise problem(404, "job_not_found", f"job {job_id} was deleted", {**headers, **_NO_RETRY})
        if record.state is JobState.COMPLETED:
            return await _completed(gateway, record, answer, headers)
        raise _not_completed(record, parts.settings.openai_wait_s, headers)
    except StarletteHTTPException:
        raise
    except Exception as error:
        # The job may exist (its record is written before its request is published): the SDK
        # would retry a bare 500 and upload the media again as a new job. Name the job instead.
        log.warning("job %s: the OpenAI-compatible answer failed: %s", job_id, error)
        message = (
            f"job {job_id} was submitted, but its answer could not be made ({type(error).__name__}); "
            f"poll GET /v1/jobs/{job_id} rather than sending the file again"
        )
        raise problem(503, "job_unfollowed", message, {**headers, **_NO_RETRY}) from error


async def _ended(gateway: Gateway, job_id: str, wait_s: float) -> JobRecord | None:
    """The job's record once it has ended, or as it stands after `wait_s` seconds: its events
    are followed (no polling) until its end event, then read through the store's current view."""
    if wait_s > 0:
        until = asyncio.get_running_loop().time() + wait_s
        # Read to its end: the stream ends itself after the job's end event (or at `until`), and
        # leaving it early would leave its consumer open until the generator is collected.
        async for _ in gateway.follow(job_id, wait_s, until=until, with_segments=False):
            pass
    return await gateway.current_job(job_id)


def _not_completed(record: JobRecord, wait_s: float, headers: dict[str, str]) -> Exception:
    """The refusal for a job that has not completed: failed (its code and message), canceled,
    or still running after the wait."""
    headers = {**headers, **_NO_RETRY}
    if record.state is JobState.FAILED and record.error is not None:
        code = record.error.code
        fault = code.startswith(_REQUEST_FAULT_PREFIXES) or code in _REQUEST_FAULTS
        return problem(400 if fault else 500, code, record.error.message, headers)
    if record.state is JobState.CANCELED:
        return problem(409, "job_canceled", f"job {record.id} was canceled", headers)
    return _still_running(record.id, wait_s, headers)


def _still_running(job_id: str, wait_s: float, headers: dict[str, str]) -> Exception:
    """504 `job_still_running`: the request waited `OPENAI_WAIT_S` and the job goes on. 504
    (Gateway Timeout), because ingest is a gateway to the model that has not answered in time,
    and OpenAI's clients treat it as an error (a 202 would be parsed as an empty transcript);
    with `x-should-retry: false`, so that they do not upload the media again as a new job."""
    message = (
        f"job {job_id} is still running after {wait_s:g} s; it goes on: poll GET /v1/jobs/{job_id} "
        f"and, once completed, fetch GET /v1/jobs/{job_id}/transcript.<json|txt|srt|vtt>"
    )
    return problem(504, "job_still_running", message, headers)


async def _completed(
    gateway: Gateway, record: JobRecord, answer: _Answer, headers: dict[str, str]
) -> Response:
    """The answer of a completed job in the response format asked for, from its stored results."""
    fmt = answer.response_format
    if fmt == "srt" or fmt == "vtt":
        return PlainTextResponse(await _result(gateway, record, fmt), 200, headers)
    text = await _result(gateway, record, "txt")
    if fmt == "text":
        return PlainTextResponse(text, 200, headers)
    if fmt == "json":
        return JSONResponse(Transcription(text=text.strip()).model_dump(), 200, headers)
    document = json.loads(await _result(gateway, record, "json"))
    if fmt == "diarized_json":
        return JSONResponse(diarized(document, text.strip()).model_dump(), 200, headers)
    shown = verbose(
        document, text.strip(), record.decoding.task, record.decoding.temperature, answer.granularities
    )
    return JSONResponse(shown.model_dump(exclude_none=True), 200, headers)


async def _result(gateway: Gateway, record: JobRecord, fmt: OutputFormat) -> str:
    """A result file of the job as text; 500 `result_missing` when it is gone, 503
    `storage_unavailable` when the store cannot be reached."""
    headers = {JOB_HEADER: record.id, **_NO_RETRY}
    try:
        data = await gateway.read_result(record, fmt)
    except S3Error as error:
        message = f"the {fmt} result of job {record.id} is gone"
        raise problem(500, "result_missing", message, headers) from error
    except storage.UNREACHABLE as error:
        message = f"the object store cannot be reached: {error}"
        raise problem(503, "storage_unavailable", message, headers) from error
    if data is None:
        raise problem(500, "result_missing", f"job {record.id} has no {fmt} result", headers)
    return data.decode("utf-8")


# -- models ----------------------------------------------------------------------------------


def _model_names(enabled: list[str]) -> list[str]:
    return [*enabled, WHISPER_1]


def _model(name: str) -> Model:
    return Model(id=name, created=_STARTED)


# -- errors ----------------------------------------------------------------------------------


def _refused(error: StarletteHTTPException) -> JSONResponse:
    """A refusal (ours `{code, message}`, or Starlette's bare string) in OpenAI's body and status."""
    status = _OPENAI_STATUS.get(error.status_code, error.status_code)
    if isinstance(error.detail, dict):
        code, message = str(error.detail["code"]), str(error.detail["message"])
    else:  # Starlette's own (a multipart body it cannot parse)
        code = HTTPStatus(error.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        message = str(error.detail)
    return JSONResponse(openai_error_body(status, code, message), status, headers=error.headers)


def _invalid(errors: Any) -> JSONResponse:
    """FastAPI's validation of the form (a missing file, an unknown response_format): 400
    `request_invalid`, `param` the first field named."""
    listed = list(errors)
    # A location is ("body", field[, index]): the field is the first name after "body".
    fields = [str(part) for problem in listed for part in problem.get("loc", ())[1:2]]
    message = binding.describe_errors(listed, "request")
    body = openai_error_body(400, "request_invalid", message, fields[0] if fields else None)
    return JSONResponse(body, 400)
