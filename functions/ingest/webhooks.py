"""Webhooks (Standard Webhooks): one signed call when a job ends, retried on a schedule.

- The payload is thin: the job's id, state, model, language, error, presigned result links and
  echoed metadata, as `{"type", "timestamp", "data"}`; signed with the `standardwebhooks` package.
  `webhook-id` is derived from the job and its end, so every retry carries the same one.
- Retries ride on JetStream redelivery: a failed attempt naks the `completed`/`failed` message
  with the next delay of `WEBHOOK_SCHEDULE_S` (or a longer Retry-After); each attempt is written to
  the job record before the message goes back, so the schedule survives restarts. 2xx delivers,
  410 stops, every other answer (3xx and 4xx included, as Standard Webhooks has it) and timeouts
  and connection errors are failed attempts; the last one sends the message to the DLQ with the
  reason.
- SSRF guard: only http(s), and never an address that is private, loopback, link-local (cloud
  metadata), multicast, reserved or unspecified, unless `WEBHOOK_ALLOWED_HOSTS` names the host,
  the address or its network. Checked when a request names a webhook and again at every attempt
  after DNS resolution; the connection then goes to the address that was checked (no DNS rebinding
  between the check and the call).
- Header values and the URL's query string never reach logs, events, job records or spans (a
  `webhook` span per attempt carries the job, the attempt number and the status code).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from cloudevents.core.v1.event import CloudEvent
from opentelemetry.trace import StatusCode
from standardwebhooks import Webhook

from events import binding, catalogue, lifecycle, tracing
from events.errors import CodedError
from events.models import (
    OutputFormat,
    TranscriptionCompleted,
    TranscriptionFailed,
    WebhookAttempted,
    WebhookTarget,
)
from events.runtime.function import DELIVERY_ATTEMPT, PermanentError, RetryLater
from events.settings import Settings
from functions.ingest.jobs import JobRecord

if TYPE_CHECKING:
    from functions.ingest.function import Ingest

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_WEBHOOK_ID_NAMESPACE = uuid.UUID("0b4d3f7e-58c2-4d55-9a43-2f8e6c1d9b70")
# Headers a target's static headers may not set: ours (signature, framing) win.
_RESERVED_HEADERS = {
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
}
_USER_AGENT = "KlipNote-Webhooks/1"
# A receiver's Retry-After is honoured up to a day (Standard Webhooks' longest delay).
_MAX_RETRY_AFTER_S = 24 * 3600.0
# A `completed` may overtake the projection of its job's request: wait this many deliveries.
_RECORD_WAITS, _RECORD_WAIT_S = 5, 1.0
_METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


# The codes of WebhookRefused.
REFUSALS = frozenset({"webhook_unsigned", "webhook_scheme", "webhook_invalid", "webhook_forbidden"})


class WebhookRefused(CodedError, ValueError):
    """A webhook target ingest will not call (SSRF guard, no signing secret)."""


# -- SSRF guard ---------------------------------------------------------------------------------


def forbidden_reason(address: IPAddress) -> str | None:
    """Why a webhook may not reach this address, or None when it is a public one."""
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address wrapped in IPv6 is judged as itself.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and (reason := forbidden_reason(embedded)):
            return reason
    for attribute, label in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(address, attribute):
            return label
    if not address.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT)
        return "not globally routable"
    return None


@dataclass(frozen=True)
class Allowlist:
    """`WEBHOOK_ALLOWED_HOSTS`: host names, addresses and networks that may be private."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        names, networks = set(), []
        for entry in entries:
            text = entry.strip().strip("[]")
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                names.add(_normal_host(text))
        return cls(frozenset(names), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return _normal_host(host) in self.names

    def allows_address(self, address: IPAddress) -> bool:
        plain = ipaddress.ip_address(str(address).split("%", 1)[0])  # without an IPv6 scope
        return any(plain in network for network in self.networks)


def _normal_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int


def parse_endpoint(url: str) -> Endpoint:
    """The scheme, host and port of a webhook URL; WebhookRefused unless it is http(s)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise WebhookRefused("webhook_invalid", f"the webhook URL is not valid: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookRefused(
            "webhook_scheme", f"webhook URLs must be http or https, not {scheme or 'schemeless'}"
        )
    if not parts.hostname:
        raise WebhookRefused("webhook_invalid", "the webhook URL has no host")
    if _literal(parts.hostname) is None:
        try:  # what the resolver will be asked: a name IDNA cannot encode is no host at all
            parts.hostname.encode("idna")
        except UnicodeError:
            raise WebhookRefused("webhook_invalid", f"{parts.hostname!r} is not a valid host name") from None
    return Endpoint(scheme, parts.hostname, port or (443 if scheme == "https" else 80))


def _literal(host: str) -> IPAddress | None:
    """The address a host stands for without DNS: an IP literal, or loopback for `localhost`
    and its subdomains (RFC 6761, whatever the resolver says)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        name = _normal_host(host)
        if name == "localhost" or name.endswith(".localhost"):
            return ipaddress.ip_address("127.0.0.1")
        return None


def screen(host: str, addresses: Iterable[IPAddress], allow: Allowlist) -> None:
    """Refuse when any address `host` resolves to is one a webhook must not reach."""
    if allow.allows_host(host):
        return
    for address in addresses:
        reason = forbidden_reason(address)
        if reason and not allow.allows_address(address):
            raise WebhookRefused(
                "webhook_forbidden",
                f"webhook host {host} resolves to {address}, {reason}; such addresses are refused "
                "unless WEBHOOK_ALLOWED_HOSTS lists them",
            )


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[IPAddress]:
    found: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0])
        if family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3] and "%" not in text:
            text = f"{text}%{sockaddr[3]}"
        address = ipaddress.ip_address(text)
        if address not in found:
            found.append(address)
    return found


# -- retry schedule ---------------------------------------------------------------------------


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (delay in seconds, or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def next_delay(schedule: Sequence[float], attempt: int, retry_after: float | None) -> float | None:
    """The delay before the attempt after `attempt` (1-based), or None when that was the last."""
    if attempt >= len(schedule):
        return None
    delay = float(schedule[attempt])
    if retry_after is not None:
        delay = max(delay, min(retry_after, _MAX_RETRY_AFTER_S))
    return delay


def webhook_id(job_id: str, kind: catalogue.EventKind) -> str:
    """`webhook-id`: one per job end, the same on every retry (and free of '.', which signs)."""
    return "msg_" + uuid.uuid5(_WEBHOOK_ID_NAMESPACE, f"{job_id}\n{kind.type}").hex


# -- delivery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """What one attempt got: a status code, or an error; and a Retry-After if any."""

    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None

    def describe(self) -> str:
        return self.error or f"HTTP {self.status_code}"


@dataclass(frozen=True)
class _Pinned:
    url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, Any]


class WebhookDeliverer:
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self._ssl: ssl.SSLContext | None = None

    @property
    def settings(self) -> Settings:
        return self.ingest.settings

    @property
    def allowlist(self) -> Allowlist:
        return Allowlist.parse(self.settings.webhook_allowed_hosts)

    def _signer(self) -> Webhook:
        secret = self.settings.webhook_secret
        if not secret:
            raise WebhookRefused(
                "webhook_unsigned", "webhooks are off: this ingest has no WEBHOOK_SECRET to sign them"
            )
        try:
            return Webhook(secret)
        except Exception:  # never echo the secret
            raise WebhookRefused(
                "webhook_unsigned", "WEBHOOK_SECRET is not a valid signing secret (whsec_ + base64)"
            ) from None

    # -- at submission ---------------------------------------------------------------------

    def check(self, target: WebhookTarget) -> None:
        """Refuse a target at submission (raises WebhookRefused). Resolves the host with the
        system resolver (blocking): from async code use `check_async`. A host that does not
        resolve now is accepted; every delivery attempt checks again."""
        endpoint = self._precheck(target)
        if endpoint is None:
            return
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        except OSError:
            return
        screen(endpoint.host, _addresses(infos), self.allowlist)

    async def check_async(self, target: WebhookTarget) -> None:
        """`check` without blocking the event loop."""
        endpoint = self._precheck(target)
        if endpoint is None:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                endpoint.host, endpoint.port, type=socket.SOCK_STREAM
            )
        except OSError:
            return
        screen(endpoint.host, _addresses(infos), self.allowlist)

    def _precheck(self, target: WebhookTarget) -> Endpoint | None:
        """What needs no DNS; the endpoint when its host name still needs resolving."""
        self._signer()
        endpoint = parse_endpoint(target.url)
        allow = self.allowlist
        literal = _literal(endpoint.host)
        if literal is not None:
            screen(endpoint.host, [literal], allow)
            return None
        return None if allow.allows_host(endpoint.host) else endpoint

    # -- the handler -----------------------------------------------------------------------

    async def deliver(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        """On `completed` / `failed`: call the job's webhook, if it has one."""
        kind = binding.kind_of(event)
        ended: TranscriptionCompleted | TranscriptionFailed
        if kind is catalogue.COMPLETED:
            ended, state = binding.parse_data(event, TranscriptionCompleted), "completed"
        elif kind is catalogue.FAILED:
            ended, state = binding.parse_data(event, TranscriptionFailed), "failed"
        else:
            return
        job_id = ended.job_id
        delivery = DELIVERY_ATTEMPT.get()
        record = await self.ingest.jobs.get(job_id)
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
        hook_id = webhook_id(job_id, kind)
        schedule = list(self.settings.webhook_schedule_s) or [0.0]

        def attempted(outcome: str, answer: _Answer | None = None, **extra: Any) -> WebhookAttempted:
            return WebhookAttempted(
                job_id=job_id,
                webhook_id=hook_id,
                attempt=attempt,
                outcome=outcome,  # type: ignore[arg-type]
                status_code=answer.status_code if answer else None,
                error=answer.error if answer else None,
                **extra,
            )

        if isinstance(ended, TranscriptionFailed) and ended.function == "ingest" and ended.code in REFUSALS:
            # The job failed because its webhook is refused (the router's check): record why, call
            # nothing; the failure itself says it all, so no dead letter either.
            yield await self._record(attempted("refused", _Answer(error=ended.message)))
            return

        with tracing.stage("webhook", {tracing.JOB_ID: job_id, "klipnote.webhook.attempt": attempt}) as span:
            try:
                signer = self._signer()
                pinned = await self._pin(target)
            except WebhookRefused as refused:
                yield await self._record(attempted("refused", _Answer(error=refused.message)))
                log.error("webhook of job %s to %s refused: %s", job_id, status.url, refused.message)
                raise PermanentError(refused.code, refused.message) from None
            except OSError as error:  # DNS did not answer: an attempt that failed
                answer = _Answer(error=f"could not resolve the host ({type(error).__name__})")
            else:
                body = await self._body(state, ended, record, event)
                answer = await self._post(signer, hook_id, body, target, pinned)
            if answer.status_code is not None:
                span.set_attribute("http.response.status_code", answer.status_code)
            if answer.status_code is None or not 200 <= answer.status_code < 300:
                span.set_status(StatusCode.ERROR, answer.describe())

        if answer.status_code is not None and 200 <= answer.status_code < 300:
            log.info("webhook of job %s delivered to %s (attempt %d)", job_id, status.url, attempt)
            yield await self._record(attempted("delivered", answer))
            return
        if answer.status_code == 410:
            log.warning("webhook of job %s: %s answered 410 Gone, not retrying", job_id, status.url)
            yield await self._record(attempted("gave_up", answer))
            return
        delay = next_delay(schedule, attempt, answer.retry_after)
        if delay is None:
            reason = f"gave up after {attempt} attempt(s) to {status.url}: last {answer.describe()}"
            log.error("webhook of job %s %s", job_id, reason)
            yield await self._record(attempted("gave_up", answer))
            raise PermanentError("webhook_exhausted", reason)
        log.warning(
            "webhook of job %s to %s failed (attempt %d: %s), next in %.1fs",
            job_id,
            status.url,
            attempt,
            answer.describe(),
            delay,
        )
        yield await self._record(attempted("retrying", answer, next_attempt_in_s=delay))
        raise RetryLater(f"webhook attempt {attempt} failed: {answer.describe()}", delay)

    async def _record(self, attempted: WebhookAttempted) -> CloudEvent:
        """The attempt as an event (its id makes a redelivered attempt a duplicate), projected
        onto the job record at once so the next message of this consumer sees it."""
        event = binding.new_event(
            catalogue.WEBHOOK,
            attempted,
            function="ingest",
            subject=attempted.job_id,
            event_id=lifecycle.webhook_id(attempted.job_id, attempted.attempt),
        )
        try:
            await self.ingest.jobs.project(event, attempted.job_id)
        except Exception as error:  # the projector applies the published event anyway
            log.warning("could not record webhook attempt of job %s: %s", attempted.job_id, error)
        return event

    # -- one attempt -----------------------------------------------------------------------

    async def _pin(self, target: WebhookTarget) -> _Pinned:
        """Resolve the host, refuse forbidden addresses, and aim the call at a checked address
        (Host header and TLS server name stay the URL's)."""
        endpoint = parse_endpoint(target.url)
        literal = _literal(endpoint.host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(
                endpoint.host, endpoint.port, type=socket.SOCK_STREAM
            )
            addresses = _addresses(infos)
            if not addresses:
                raise OSError("no address")
        screen(endpoint.host, addresses, self.allowlist)
        url = httpx.URL(target.url)
        default_port = 443 if endpoint.scheme == "https" else 80
        host_header = url.raw_host.decode("ascii")
        if ":" in host_header:
            host_header = f"[{host_header}]"
        if endpoint.port != default_port:
            host_header += f":{endpoint.port}"
        extensions: dict[str, Any] = {}
        if literal is None or _normal_host(endpoint.host) != str(literal):
            url = url.copy_with(host=str(addresses[0]).split("%", 1)[0])
            if endpoint.scheme == "https":
                extensions["sni_hostname"] = endpoint.host
        headers = {
            name: value for name, value in target.headers.items() if name.lower() not in _RESERVED_HEADERS
        }
        headers["Host"] = host_header
        return _Pinned(url, headers, extensions)

    async def _post(
        self, signer: Webhook, hook_id: str, body: str, target: WebhookTarget, pinned: _Pinned
    ) -> _Answer:
        timeout = self.settings.webhook_timeout_s
        sent_at = datetime.now(UTC)
        headers = {
            **pinned.headers,
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            "webhook-id": hook_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signer.sign(hook_id, sent_at, body),
        }
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            async with asyncio.timeout(timeout):
                # A client per attempt: connections aimed at a pinned address are never pooled
                # across host names. No proxies from the environment, no redirects.
                async with httpx.AsyncClient(
                    verify=self._ssl, follow_redirects=False, trust_env=False, timeout=timeout
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
        except (TimeoutError, httpx.TimeoutException):
            return _Answer(error=f"no answer within {timeout:g}s")
        except httpx.HTTPError as error:  # the message may hold the URL: give the kind only
            return _Answer(error=f"connection failed ({type(error).__name__})")
        except (OSError, ssl.SSLError) as error:
            return _Answer(error=f"connection failed ({type(error).__name__})")
        return _Answer(
            status_code=response.status_code, retry_after=retry_after_s(response.headers.get("retry-after"))
        )

    async def _body(
        self,
        state: str,
        ended: TranscriptionCompleted | TranscriptionFailed,
        record: JobRecord,
        event: CloudEvent,
    ) -> str:
        """The thin payload: what the receiver needs to fetch the rest."""
        expiry = timedelta(seconds=self.settings.result_link_expiry_s)
        links: dict[OutputFormat, str] = {}
        model: str | None
        error = None
        if isinstance(ended, TranscriptionCompleted):
            model, language = ended.model, ended.language or record.detected_language or record.language
            links = await self.ingest.result_links(record.model_copy(update={"results": ended.results}))
        else:
            model, language = record.model, record.detected_language or record.language
            error = {"code": ended.code, "message": ended.message}
        occurred = event.get_time() or datetime.now(UTC)
        data = {
            "id": ended.job_id,
            "state": state,
            "model": model,
            "language": language,
            "error": error,
            "links": links,
            "links_expire_at": (datetime.now(UTC) + expiry).isoformat() if links else None,
            "metadata": record.metadata,
        }
        payload = {"type": f"transcription.{state}", "timestamp": occurred.isoformat(), "data": data}
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
