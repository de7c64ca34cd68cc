"""Events: a job's lifecycle events as server-sent events, `transcription.requested` CloudEvents
from other systems over HTTP, and the JSON Schema of that event's data."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from events import binding, catalogue
from events.models import TranscriptionRequested
from events.runtime.problems import ERRORS, problem
from functions.ingest.api.dependencies import GatewayDep, PartsDep, authorize
from functions.ingest.gateway import Gateway
from functions.ingest.ids import job_id_for, valid_job_id
from functions.ingest.schema import JobView

router = APIRouter(dependencies=[Depends(authorize)], responses=ERRORS)
# Unauthenticated: a schema is no secret, and other systems fetch it to build their events.
schemas = APIRouter()

# Seconds between SSE comments on a quiet stream: proxies close idle streams.
_KEEP_ALIVE_S = 15


@router.get("/v1/jobs/{job_id}/events")
async def job_events(job_id: str, gateway: GatewayDep) -> StreamingResponse:
    """The job's lifecycle events as they happen (server-sent events, each `data:` a
    CloudEvent in JSON), from its request to its end (`completed` or `failed`)."""
    if await gateway.get_job(job_id) is None:  # the stream replays every event: no catch-up
        raise problem(404, "job_not_found", f"no job {job_id}")
    return StreamingResponse(_event_stream(gateway, job_id), media_type="text/event-stream")


@router.post("/v1/events", status_code=202)
async def receive_event(request: Request, parts: PartsDep, gateway: GatewayDep) -> JobView:
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
    await parts.admit(model=wanted.model, language=wanted.language, webhook=wanted.webhook)
    job_id = job_id_for(event, wanted)
    existing = await gateway.get_job(job_id)
    if existing is not None:
        return await gateway.view(existing)
    request_data = wanted.model_copy(update={"job_id": job_id})
    return await gateway.view(await gateway.submit(request_data, binding.traceparent_of(event)))


@schemas.get("/v1/schemas/transcription-requested.json")
async def requested_schema() -> JSONResponse:
    """The JSON Schema of a `transcription.requested` event's data, for other systems."""
    return JSONResponse(TranscriptionRequested.model_json_schema())


async def _event_stream(gateway: Gateway, job_id: str) -> AsyncIterator[bytes]:
    async for event in gateway.follow(job_id, _KEEP_ALIVE_S):
        if event is None:
            yield b": keep-alive\n\n"
            continue
        _, body = binding.encode(event, "structured")
        yield f"id: {event.get_id()}\nevent: {event.get_type()}\n".encode() + b"data: " + body + b"\n\n"
