"""The HTTP API of ingest (`/v1`). A job is the same whichever way it came in: the API only
stores the upload (or checks the referenced object), admits the request and submits it through
the gateway; routing and state follow from events.

One router per resource (`jobs`, `events`, `results`), FastAPI dependencies for the API key and
the gateway (`dependencies`), one error body (`problems`), and in front of them all the guard that
checks the key and a body's size and pace before a byte of it is read (`limits`).

Every route under `/v1/` needs the key (when API_KEY is set) but the JSON Schema under
`/v1/schemas/`; the health probes and the API's own documentation (`/docs`, `/redoc`,
`/openapi.json`) are public too: they describe the API and hold no job, key or secret, and other
systems fetch them to build their requests.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from events.runtime import problems
from events.settings import Settings
from functions.ingest.admission import Admission
from functions.ingest.api import control, events, jobs, openai, results
from functions.ingest.api.dependencies import Parts
from functions.ingest.api.limits import RequestGuard, StreamSlots
from functions.ingest.gateway import Gateway, JobDeleted


def create_app(settings: Settings, admission: Admission, gateway: Callable[[], Gateway | None]) -> FastAPI:
    """The API's ASGI app. `gateway` gives the gateway once ingest has started (None before:
    routes that need it answer 503 `not_ready`); `admission` checks requests from the start."""
    app = FastAPI(
        title="KlipNote",
        version="1",
        summary="Self-hosted speech-to-text: submit media, follow the job, fetch transcripts.",
        description=(
            "Jobs come from `POST /v1/jobs` (an upload or an object already in storage), from files "
            "dropped into the uploads bucket, and from `io.klipnote.transcription.requested.v1` "
            "CloudEvents (on NATS, or `POST /v1/events`), whose data follows the JSON Schema at "
            "`/v1/schemas/transcription-requested.json`. Errors answer `{detail: {code, message}}`, "
            "except on the OpenAI-compatible routes (`/v1/audio/transcriptions`, "
            "`/v1/audio/translations`, `/v1/models`), which answer in OpenAI's shapes and errors "
            "(`{error: {message, type, param, code}}`; docs/openai.md). Every `/v1` route needs "
            "`Authorization: Bearer <API_KEY>` (when the key is set) but the schemas; this "
            "documentation, the schemas, the health probes and `/metrics` are public: they hold no "
            "secret."
        ),
    )
    app.state.parts = Parts(settings, admission, gateway, StreamSlots(settings.api_max_event_streams))
    problems.install(app)
    # A request naming a deleted job again, whichever route it came by (`Gateway.submit`).
    app.add_exception_handler(JobDeleted, control.job_deleted)
    # Outside every route, inside Starlette's error handling: it answers before FastAPI reads a body.
    app.add_middleware(RequestGuard, settings=settings)
    routers = (jobs.router, control.router, events.router, results.router, openai.router, events.schemas)
    for router in routers:
        app.include_router(router)
    return app
