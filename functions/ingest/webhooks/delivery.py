"""The webhook deliverer: the handler of `completed` / `failed` / `canceled` that calls a job's
webhook, once per attempt, on the schedule (see the package's docstring for the rules)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from cloudevents.core.v1.event import CloudEvent
from opentelemetry.trace import StatusCode
from standardwebhooks import Webhook

from events import binding, catalogue, lifecycle, tracing
from events.lifecycle import JobState
from events.models import (
    TranscriptionCanceled,
    TranscriptionCompleted,
    TranscriptionFailed,
    WebhookAttempted,
    WebhookTarget,
)
from events.runtime.function import DELIVERY_ATTEMPT, PermanentError, RetryLater
from events.runtime.settlement import settled_deliveries
from events.settings import Settings
from functions.ingest import NAME
from functions.ingest.jobs import JobLedger
from functions.ingest.links import ResultLinks
from functions.ingest.schema import JobRecord, shown_url
from functions.ingest.webhooks import payload, signing
from functions.ingest.webhooks.errors import REFUSALS, WebhookRefused
from functions.ingest.webhooks.guard import Pinned, WebhookGuard, parse_endpoint
from functions.ingest.webhooks.schedule import next_delay, retry_after_s

# The package's logger: every webhook line of ingest's log is under one name.
log = logging.getLogger("functions.ingest.webhooks")

_USER_AGENT = "KlipNote-Webhooks/1"
# What an attempt came to (`WebhookAttempted.outcome`).
Outcome = Literal["delivered", "retrying", "gave_up", "refused"]
# A `completed` may overtake the projection of its job's request: wait this many deliveries.
_RECORD_WAITS, _RECORD_WAIT_S = 5, 1.0


@dataclass(frozen=True)
class _Answer:
    """What one attempt got: a status code, or an error; and a Retry-After if any."""

    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None

    def describe(self) -> str:
        return self.error or f"HTTP {self.status_code}"


class WebhookDeliverer:
    """Calls a job's webhook when the job ends. Reads and records attempts through `jobs` (the
    job store), links results with `links`, checks the target again with `guard` at every
    attempt. Settings: `WEBHOOK_SECRET`, `WEBHOOK_SCHEDULE_S`, `WEBHOOK_TIMEOUT_S` (one deadline
    per attempt, DNS included), `WEBHOOK_CONNECT_TIMEOUT_S`, `WEBHOOK_HOST_CONCURRENCY` (attempts
    in flight per host; beyond it a job waits half a deadline, at least 1 s, without an attempt
    counted, as long as its message has deliveries to spare: `_may_wait`), `RESULT_LINK_EXPIRY_S`.
    `tls` verifies HTTPS receivers (the system's CAs by default)."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobLedger,
        links: ResultLinks,
        guard: WebhookGuard,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.links = links
        self.guard = guard
        self._tls = tls
        # Attempts in flight per host (its IDNA A-label or IP literal), in this replica.
        self._in_flight: dict[str, int] = {}

    async def deliver(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        """On `completed` / `failed` / `canceled`: call the job's webhook, if it has one. Yields the
        attempt's `webhook.attempted`; raises RetryLater (the next attempt's delay) or
        PermanentError (gave up, or the target is refused: the message goes to the DLQ)."""
        kind = binding.kind_of(event)
        ended: payload.Ended
        if kind is catalogue.COMPLETED:
            ended, state = binding.parse_data(event, TranscriptionCompleted), JobState.COMPLETED
        elif kind is catalogue.FAILED:
            ended, state = binding.parse_data(event, TranscriptionFailed), JobState.FAILED
        elif kind is catalogue.CANCELED:
            ended, state = binding.parse_data(event, TranscriptionCanceled), JobState.CANCELED
        else:
            return
        job_id = ended.job_id
        delivery = DELIVERY_ATTEMPT.get()
        record = await self.jobs.get(job_id)
        if record is None:
            if delivery < _RECORD_WAITS:  # the projector may not have written the request yet
                raise RetryLater(f"job {job_id} has no record yet", _RECORD_WAIT_S)
            log.info("no record of job %s: no webhook to call", job_id)
            return
        target, status = record.webhook_target, record.webhook
        if target is None or status is None:
            return
        if record.finished and record.state != state:
            return  # the job's record ended the other way: that end is the one announced
        if status.state in ("delivered", "failed"):
            # Done or given up (a repeated announcement of the job's end calls nobody). While a
            # delivery is retrying, a repeat joins it: same webhook-id, the next attempt number.
            log.info("webhook of job %s already %s: not calling again", job_id, status.state)
            return
        # The attempt number is the record's count plus one rather than the message's delivery
        # count: waits for the record, or a crash before an attempt, are not attempts. Each
        # attempt is recorded (below) before the message goes back, so the count survives restarts.
        attempt = status.attempts + 1
        hook_id = signing.webhook_id(job_id, kind)
        schedule = list(self.settings.webhook_schedule_s) or [0.0]

        def attempted(outcome: Outcome, answer: _Answer | None = None, **extra: Any) -> WebhookAttempted:
            return WebhookAttempted(
                job_id=job_id,
                webhook_id=hook_id,
                attempt=attempt,
                outcome=outcome,
                status_code=answer.status_code if answer else None,
                error=answer.error if answer else None,
                **extra,
            )

        if isinstance(ended, TranscriptionFailed) and ended.function == NAME and ended.code in REFUSALS:
            # The job failed because its webhook is refused (the router's check): record why, call
            # nothing; the failure itself says it all, so no dead letter either.
            yield await self._record(attempted("refused", _Answer(error=ended.message)))
            return

        shown = shown_url(target.url)  # logs and reasons: never the path, query or credentials
        try:
            host: str | None = parse_endpoint(target.url).host
        except WebhookRefused:
            host = None  # refused in the attempt below, which says why
        if host is not None and not self._take_slot(host, force=not self._may_wait(delivery, attempt)):
            # The host already has its share of attempts in flight here: this job waits without an
            # attempt counted, and the consumer goes on with other hosts' jobs meanwhile.
            wait_s = max(1.0, self.settings.webhook_timeout_s / 2)
            busy = self.settings.webhook_host_concurrency
            log.info("webhook of job %s to %s waits %.1fs: its host is busy", job_id, shown, wait_s)
            raise RetryLater(f"webhook host busy ({busy} attempts in flight)", wait_s)

        refusal: WebhookRefused | None = None
        span_attributes: dict[str, str | int] = {tracing.JOB_ID: job_id, "klipnote.webhook.attempt": attempt}
        try:
            with tracing.stage("webhook", span_attributes) as span:
                try:
                    sign = signing.signer(self.settings.webhook_secret)
                    body = await self._body(ended, record, event)
                    answer = await self._attempt(sign, hook_id, body, target)
                except WebhookRefused as refused:
                    refusal, answer = refused, _Answer(error=refused.message)
                if answer.status_code is not None:
                    span.set_attribute("http.response.status_code", answer.status_code)
                if answer.status_code is None or not 200 <= answer.status_code < 300:
                    span.set_status(StatusCode.ERROR, answer.describe())
        finally:
            if host is not None:
                self._give_slot(host)

        if refusal is not None:
            yield await self._record(attempted("refused", answer))
            log.error("webhook of job %s to %s refused: %s", job_id, shown, refusal.message)
            raise PermanentError(refusal.code, refusal.message)
        if answer.status_code is not None and 200 <= answer.status_code < 300:
            log.info("webhook of job %s delivered to %s (attempt %d)", job_id, shown, attempt)
            yield await self._record(attempted("delivered", answer))
            return
        if answer.status_code == 410:
            log.warning("webhook of job %s: %s answered 410 Gone, not retrying", job_id, shown)
            yield await self._record(attempted("gave_up", answer))
            return
        delay = next_delay(schedule, attempt, answer.retry_after)
        if delay is None:
            reason = f"gave up after {attempt} attempt(s) to {shown}: last {answer.describe()}"
            log.error("webhook of job %s %s", job_id, reason)
            yield await self._record(attempted("gave_up", answer))
            raise PermanentError("webhook_exhausted", reason)
        log.warning(
            "webhook of job %s to %s failed (attempt %d: %s), next in %.1fs",
            job_id,
            shown,
            attempt,
            answer.describe(),
            delay,
        )
        yield await self._record(attempted("retrying", answer, next_attempt_in_s=delay))
        raise RetryLater(f"webhook attempt {attempt} failed: {answer.describe()}", delay)

    def _may_wait(self, delivery: int, attempt: int) -> bool:
        """Whether a job may wait for its busy host on this delivery: only while the deliveries its
        message has left (`settled_deliveries`: the server counts waits too) still hold every
        attempt to come. Past that the attempt goes ahead beyond the per-host bound, rather than
        the message running out of deliveries and being dead-lettered unattempted."""
        attempts_left = max(len(self.settings.webhook_schedule_s), 1) - attempt + 1
        return delivery + attempts_left <= settled_deliveries(catalogue.INGEST_WEBHOOKS, self.settings)

    def _take_slot(self, host: str, force: bool = False) -> bool:
        """One of `WEBHOOK_HOST_CONCURRENCY` attempts to `host`, if one is free or `force` (no
        await between the check and the taking: the event loop runs one handler step at a time)."""
        if not force and self._in_flight.get(host, 0) >= self.settings.webhook_host_concurrency:
            return False
        self._in_flight[host] = self._in_flight.get(host, 0) + 1
        return True

    def _give_slot(self, host: str) -> None:
        left = self._in_flight.get(host, 1) - 1
        if left > 0:
            self._in_flight[host] = left
        else:
            self._in_flight.pop(host, None)

    async def _attempt(self, sign: Webhook, hook_id: str, body: str, target: WebhookTarget) -> _Answer:
        """One attempt within one deadline, `WEBHOOK_TIMEOUT_S`: resolving and checking the host
        (the guard), connecting (at most `WEBHOOK_CONNECT_TIMEOUT_S`), TLS, sending, reading the
        answer. Raises WebhookRefused when the guard refuses the host's addresses."""
        timeout = self.settings.webhook_timeout_s
        step = "resolving the host"
        try:
            async with asyncio.timeout(timeout):
                try:
                    pinned = await self.guard.pin(target)
                except OSError as error:  # DNS did not answer: an attempt that failed
                    return _Answer(error=f"could not resolve the host ({type(error).__name__})")
                step = "calling the host"
                return await self._post(sign, hook_id, body, pinned)
        except TimeoutError:
            return _Answer(error=f"no answer within {timeout:g}s ({step})")

    async def _record(self, attempted: WebhookAttempted) -> CloudEvent:
        """The attempt as an event (its id makes a redelivered attempt a duplicate), projected
        onto the job record at once so the next message of this consumer sees it."""
        event = binding.new_event(
            catalogue.WEBHOOK,
            attempted,
            function=NAME,
            subject=attempted.job_id,
            event_id=lifecycle.webhook_attempt_id(attempted.job_id, attempted.attempt),
        )
        try:
            await self.jobs.project(event, attempted.job_id)
        except Exception as error:  # the projector applies the published event anyway
            log.warning("could not record webhook attempt of job %s: %s", attempted.job_id, error)
        return event

    async def _body(self, ended: payload.Ended, record: JobRecord, event: CloudEvent) -> str:
        links = {}
        if isinstance(ended, TranscriptionCompleted):
            links = await self.links.of(record.model_copy(update={"results": ended.results}))
        return payload.body(ended, record, event, links, self.settings.result_link_expiry_s)

    async def _post(self, sign: Webhook, hook_id: str, body: str, pinned: Pinned) -> _Answer:
        """One call: POST `body` signed, to the pinned address; the caller's deadline bounds it."""
        timeout = self.settings.webhook_timeout_s
        connect = min(self.settings.webhook_connect_timeout_s, timeout)
        headers = {
            **pinned.headers,
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            **signing.signed_headers(sign, hook_id, datetime.now(UTC), body),
        }
        if self._tls is None:
            self._tls = ssl.create_default_context()
        try:
            # A client per attempt: connections aimed at a pinned address are never pooled
            # across host names. No proxies from the environment, no redirects.
            async with httpx.AsyncClient(
                verify=self._tls,
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(timeout, connect=connect),
            ) as client:
                request = client.build_request(
                    "POST",
                    pinned.url,
                    content=body.encode(),
                    headers=headers,
                    extensions=pinned.extensions,
                )
                response = await client.send(request, stream=True)
                await response.aclose()  # the answer's body is not needed
        except httpx.ConnectTimeout:
            return _Answer(error=f"could not connect within {connect:g}s")
        except httpx.TimeoutException:
            return _Answer(error=f"no answer within {timeout:g}s")
        except httpx.HTTPError as error:  # the message may hold the URL: give the kind only
            return _Answer(error=f"connection failed ({type(error).__name__})")
        except (OSError, ssl.SSLError) as error:
            return _Answer(error=f"connection failed ({type(error).__name__})")
        delivered = 200 <= response.status_code < 300
        # Retry-After matters only when the call failed; read defensively (a receiver's header).
        retry_after = None if delivered else retry_after_s(response.headers.get("retry-after"))
        return _Answer(status_code=response.status_code, retry_after=retry_after)
