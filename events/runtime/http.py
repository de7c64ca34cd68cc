"""The HTTP side of every function process: health probes, and the CloudEvents receiver.

Every process serves `/health/liveness` (the process is alive) and `/health/readiness` (model
loaded, bus connected). The HTTP host adds `POST /`, a CloudEvents receiver (binary and
structured mode) so Knative Eventing can push events to the same handlers the JetStream host
runs.

Replies: a handler's outgoing events are published to JetStream, as under the JetStream host,
rather than returned in the response: a model function emits a stream of segment events and
Knative takes one reply event per request. Status codes follow Knative's retry semantics:
202 handled; 400 malformed or permanently failing (not retried); 503 transient (retried).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from events import binding, bus
from events.runtime.function import PermanentError, RetryLater, Subscription
from events.runtime.jetstream import JetStreamHost

log = logging.getLogger(__name__)


def health_app(host: JetStreamHost, app: FastAPI | None = None) -> FastAPI:
    app = app or FastAPI(title=f"klipnote {host.function.name}", docs_url=None, redoc_url=None)

    @app.get("/health/liveness", include_in_schema=False)
    async def liveness() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/readiness", include_in_schema=False)
    async def readiness() -> Response:
        # A function may say why it is not ready (`problem`) and what it has done (`loads`...).
        details = {
            name: getattr(host.function, name)
            for name in ("problem", "loads", "load_seconds", "jobs_handled")
            if getattr(host.function, name, None) is not None
        }
        if host.ready():
            return JSONResponse({"status": "ready", **details})
        status = "starting" if not host.started.is_set() else "not ready"
        return JSONResponse({"status": status, **details}, status_code=503)

    return app


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: `*` is one token, a trailing `>` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


def receiver_app(host: JetStreamHost) -> FastAPI:
    """Health endpoints plus `POST /`, the CloudEvents receiver."""
    app = health_app(host)

    def subscription_for(subject: str) -> Subscription | None:
        for subscription in host.function.subscriptions:
            if subject_matches(subscription.consumer.filter_subject, subject):
                return subscription
        return None

    @app.post("/")
    async def receive(request: Request) -> Response:
        if not host.ready():
            return _problem(503, "not_ready", "the function is still starting")
        body = await request.body()
        try:
            event = binding.decode(dict(request.headers), body)
            subscription = subscription_for(bus.subject_for(event))
            if subscription is None:
                raise binding.MalformedEvent(f"this function does not handle {event.get_type()}")
            await host.handle_once(subscription, event)
        except binding.MalformedEvent as error:
            return _problem(400, "malformed_event", str(error))
        except PermanentError as error:
            return _problem(400, error.code, error.message)
        except ValueError as error:
            return _problem(400, "malformed_event", str(error))
        except RetryLater as error:  # the handler's own schedule: the sender waits that long
            response = _problem(503, "retry_later", str(error))
            response.headers["Retry-After"] = str(max(int(error.delay_s), 0))
            return response
        except Exception as error:  # transient: Knative retries 5xx
            log.warning("handler failed, will be retried: %s", error)
            return _problem(503, "transient_error", f"{type(error).__name__}: {error}")
        return Response(status_code=202)

    return app


def _problem(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)
