"""The HTTP host of a function process: health probes, the function's own routes, and (under the
HTTP transport) a CloudEvents receiver.

Every process serves `/health/liveness` (the process is alive) and `/health/readiness` (model
loaded, bus connected: 200 `{"status": "ready", ...}`, else 503 with `starting` or `not ready`,
the function's reason as `problem` and its health details beside), and `/metrics`, the process's
metrics in the Prometheus text format (`events.metrics.exposition`; OpenMetrics when the scraper's
Accept asks for it), public like the probes: figures per model, function and outcome, never a job
(docs/observability.md). The receiver is `POST /`
(binary and structured mode, the CloudEvents HTTP binding) so Knative Eventing can push events to
the same handlers the JetStream host runs.

Replies: a handler's outgoing events are published to JetStream, as under the JetStream host,
rather than returned in the response: a model function emits a stream of segment events and
Knative takes one reply event per request. Status codes follow Knative's retry semantics:
202 handled; 400 malformed or permanently failing (not retried); 503 transient (retried); 401
without the receiver token when RECEIVER_TOKEN is set. The receiver trusts whoever can reach it
otherwise: keep it cluster-local (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from events import binding, bus, metrics
from events.errors import problem_body
from events.runtime import problems
from events.runtime.function import PermanentError, RetryLater
from events.runtime.process import FunctionProcess
from events.runtime.telemetry import event_fields

log = logging.getLogger(__name__)

# Where Prometheus scrapes a function (its health port), as the ServiceMonitor under
# infra/prometheus/ names it.
METRICS_PATH = "/metrics"


class HttpHost:
    """The HTTP side of `process`: health endpoints, plus `routes` (the function's own app, whose
    routes stay as they are) and, with `receiver`, the CloudEvents receiver."""

    def __init__(
        self, process: FunctionProcess, *, receiver: bool = False, routes: FastAPI | None = None
    ) -> None:
        self.process = process
        self.app: FastAPI = routes if routes is not None else _bare_app(process.function.name)
        _add_health(self.app, process)
        if receiver:
            _add_receiver(self.app, process)

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int) -> AsyncIterator[None]:
        """Serve on `host`:`port` for the duration of the block (the process's signal handlers
        stay the process's: uvicorn does not take SIGTERM)."""
        server = _Server(uvicorn.Config(self.app, host=host, port=port, log_config=None, access_log=False))
        task = asyncio.create_task(server.serve())
        try:
            yield
        finally:
            server.should_exit = True
            await task


class _Server(uvicorn.Server):
    # The process owns SIGTERM/SIGINT (graceful drain); uvicorn must not swallow them.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bare_app(name: str) -> FastAPI:
    app = FastAPI(title=f"klipnote {name}", docs_url=None, redoc_url=None)
    problems.install(app)  # an unknown route answers in the one error body too
    return app


def _add_health(app: FastAPI, process: FunctionProcess) -> None:
    @app.get("/health/liveness", include_in_schema=False)
    async def liveness() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/readiness", include_in_schema=False)
    async def readiness() -> Response:
        health = process.health()
        body: dict[str, object] = {"problem": health.reason} if health.reason is not None else {}
        body.update(health.details)
        if health.ready:
            return JSONResponse({"status": "ready", **body})
        status = "starting" if not process.started.is_set() else "not ready"
        return JSONResponse({"status": status, **body}, status_code=503)

    @app.get(METRICS_PATH, include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        # Collecting runs the instruments' callbacks and formats every series: off the event loop.
        body, content_type = await asyncio.to_thread(metrics.exposition, request.headers.get("accept"))
        return Response(body, media_type=content_type)


def _add_receiver(app: FastAPI, process: FunctionProcess) -> None:
    @app.post("/")
    async def receive(request: Request) -> Response:
        # Before a byte of the body is read: a sender without the token gets nothing in.
        if not _authorized(request, process.settings.receiver_token):
            response = _problem(
                401, "unauthorized", "a valid receiver token is required (Authorization: Bearer)"
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if not process.health().ready:
            return _problem(503, "not_ready", "the function is still starting")
        body = await _bounded_body(request, process.settings.api_max_body_bytes)
        if body is None:
            limit = process.settings.api_max_body_bytes
            return _problem(413, "body_too_large", f"an event is at most {limit} bytes (API_MAX_BODY_BYTES)")
        try:
            event = binding.decode(dict(request.headers), body)
        except binding.MalformedEvent as error:
            return _problem(400, error.code, error.message)
        subscription = process.subscription_for(bus.subject_for(event))
        if subscription is None:
            return _problem(400, "malformed_event", f"this function does not handle {event.get_type()}")
        try:
            await process.handle(subscription, event)
        except RetryLater as error:  # the handler's own schedule: the sender waits that long
            response = _problem(503, "retry_later", str(error))
            response.headers["Retry-After"] = str(max(int(error.delay_s), 0))
            return response
        except (PermanentError, binding.MalformedEvent) as error:
            # Retrying cannot help: Knative sends a 4xx to the dead-letter sink without retrying
            # (its delivery spec), so what giving up means for the job is published here, as
            # the JetStream host does when it dead-letters (a job step fails its job).
            await process.give_up(subscription, event, f"{error.code}: {error.message}")
            return _problem(400, error.code, error.message)
        except Exception as error:  # transient: Knative retries 5xx
            log.warning("handler failed, will be retried: %s", error)
            return _problem(503, "transient_error", f"{type(error).__name__}: {error}")
        log.info("handled %s", event.get_type(), extra=event_fields(event))
        return Response(status_code=202)


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None once it is declared or counted past `limit` bytes (an event is
    small: segments never travel this way), read no further."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _authorized(request: Request, token: str | None) -> bool:
    """Whether `request` may deliver events: any request when no RECEIVER_TOKEN is set (the
    network boundary is then the only guard, see docs/security.md), else one carrying
    `Authorization: Bearer <RECEIVER_TOKEN>` (RFC 6750), compared in constant time."""
    if token is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


def _problem(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(problem_body(code, message), status_code=status)
