"""Events: a job's lifecycle events as server-sent events, `transcription.requested` CloudEvents
from other systems over HTTP, and the JSON Schema of that event's data."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from cloudevents.core.v1.event import CloudEvent
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from events import binding, catalogue
from events.models import TranscriptionRequested
from events.runtime.problems import ERRORS, problem
from functions.ingest.api.dependencies import GatewayDep, PartsDep, authorize
from functions.ingest.api.limits import StreamSlot
from functions.ingest.gateway import Gateway
from functions.ingest.ids import CALLER_JOB_ID_RULE, job_id_for, valid_caller_job_id
from functions.ingest.schema import JobView

router = APIRouter(dependencies=[Depends(authorize)], responses=ERRORS)
# Unauthenticated: a schema is no secret, and other systems fetch it to build their events.
schemas = APIRouter()

# Seconds between SSE comments on a quiet stream: proxies close idle streams.
_KEEP_ALIVE_S = 15
_ENDS = {kind.type for kind in catalogue.JOB_ENDS}
# The SSE `event:` of a segment's message (the others carry their CloudEvent type): see `job_events`.
SEGMENT_EVENT = "segment"


@router.get("/v1/jobs/{job_id}/events")
async def job_events(job_id: str, parts: PartsDep, gateway: GatewayDep) -> StreamingResponse:
    """The job's lifecycle events and the text of its segments as they happen (server-sent
    events, each `data:` a structured-mode CloudEvent in JSON, `id:` its id), from its request to
    its end (`completed`, `failed` or `canceled`), which comes last.

    `event:` is `segment` for a segment and the CloudEvent type for every other event
    (`io.klipnote.transcription.progress.v1`, ...; unchanged). A browser's EventSource subscribes
    by exact name, and a page that shows the text as it comes wants one short name that stays
    when the event's version moves on: `source.addEventListener("segment", ...)`. Its `data:` is
    still the whole CloudEvent (type `io.klipnote.transcription.segment.v1`, with `id`, `time`,
    `source`), so one parser reads every message. A segment's data: `run_id`, `sequence` (from
    0 in its run), `start` and `end` (seconds of the media), `text`, `words` (each with `start`,
    `end`, `word`, `score`, or null), `language`, and on a diarized job `speaker` (on the segment
    and its words). Segments of every run of the job come, in their
    run's order: a run that was superseded (a language
    hand-over, a run redelivered after a crash) has its own `run_id`; keep the latest run's
    (`transcribed` and `completed` name the run that counts). Every segment published before
    the job's end comes before it, on a live stream and on a replay alike.

    Bounded: at most `API_MAX_EVENT_STREAMS` streams at once (then 503 `too_many_streams`), each
    for at most `API_EVENT_STREAM_MAX_S` seconds, after which it ends with an `event: timeout`
    message (reconnect to go on). A finished job whose events the JOBS stream no longer keeps
    ends at once with an `event: expired` message: its record (`GET /v1/jobs/{id}`) says how it
    ended."""
    if await gateway.get_job(job_id) is None:  # the stream replays every event: no catch-up
        raise problem(404, "job_not_found", f"no job {job_id}")
    slot = parts.streams.take()
    if slot is None:
        limit = parts.settings.api_max_event_streams
        raise problem(503, "too_many_streams", f"{limit} event streams are open already; try again later")
    stream = _event_stream(gateway, job_id, slot, parts.settings.api_event_stream_max_s)
    return _SlotStream(slot, stream, media_type="text/event-stream")


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
    if wanted.job_id is not None and not valid_caller_job_id(wanted.job_id):
        # Caller-named ids live in their own namespace (functions/ingest/ids.py).
        raise problem(400, "malformed_event", CALLER_JOB_ID_RULE)
    await parts.admit(
        model=wanted.model,
        language=wanted.language,
        webhook=wanted.webhook,
        decoding=wanted.decoding,
        diarization=wanted.diarization,
    )
    job_id = job_id_for(event, wanted)
    existing = await gateway.get_job(job_id)
    if existing is not None:
        await gateway.republish(existing)  # still `requested`: its first publish may have failed
        return await gateway.view(existing)
    request_data = wanted.model_copy(update={"job_id": job_id})
    return await gateway.view(await gateway.submit(request_data, binding.traceparent_of(event)))


@schemas.get("/v1/schemas/transcription-requested.json")
async def requested_schema() -> JSONResponse:
    """The JSON Schema of a `transcription.requested` event's data, for other systems."""
    return JSONResponse(TranscriptionRequested.model_json_schema())


class _SlotStream(StreamingResponse):
    """A stream that frees its slot when the response ends, however it ends (the client gone
    included, which the generator itself may never learn)."""

    def __init__(self, slot: StreamSlot, content: AsyncIterator[bytes], media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


async def _event_stream(
    gateway: Gateway, job_id: str, slot: StreamSlot, max_s: float
) -> AsyncIterator[bytes]:
    deadline = asyncio.get_running_loop().time() + max_s
    ended = False
    try:
        async for event in gateway.follow(job_id, _KEEP_ALIVE_S, until=deadline):
            if event is None:
                yield b": keep-alive\n\n"
                continue
            _, body = binding.encode(event, "structured")
            # A line break in an id or a type would start a field (or an event) of its own (the
            # SSE format, WHATWG HTML 9.2.6): events from other functions are not trusted for it.
            fields = f"id: {_one_line(event.get_id())}\nevent: {_one_line(_sse_name(event))}\n"
            yield fields.encode() + b"data: " + body + b"\n\n"
            ended = event.get_type() in _ENDS
    finally:
        # Freed before the last message goes out: a client that read the stream's end may open another.
        slot.release()
    if ended:
        return
    if asyncio.get_running_loop().time() >= deadline:
        yield _notice("timeout", job_id, f"the stream reached its limit of {max_s:g} s; reconnect to go on")
    else:
        yield _notice(
            "expired", job_id, "the job has ended and its events are no longer kept; read its record"
        )


def _sse_name(event: CloudEvent) -> str:
    """The SSE `event:` of `event`: `segment` for a segment (the name the route promises), its
    CloudEvent type for any other."""
    return SEGMENT_EVENT if event.get_type() == catalogue.SEGMENT.type else event.get_type()


def _notice(name: str, job_id: str, message: str) -> bytes:
    """An SSE message of ours that ends a stream early, `data:` JSON with the job and why."""
    return f"event: {name}\ndata: {json.dumps({'job_id': job_id, 'message': message})}\n\n".encode()


def _one_line(value: str) -> str:
    """`value` with CR, LF and NUL replaced by spaces: one SSE field."""
    return value.translate({0x0D: " ", 0x0A: " ", 0x00: " "})
