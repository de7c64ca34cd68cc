"""The bus: NATS connection, publishing CloudEvents with `Nats-Msg-Id`, and subjects (where an
event goes, which subjects a consumer's filter matches).

Streams, consumers and KV buckets are created by `events.provision`.
"""

from __future__ import annotations

import asyncio
import logging

import nats
import nats.errors
import nats.js.errors
from cloudevents.core.v1.event import CloudEvent
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events import binding
from events.catalogue import EventKind
from events.settings import Settings

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"

# How long a publish keeps trying to get its ack, in seconds, and how long one try waits. A stream
# whose leader is lost (a cluster node killed: JetStream elects another in a few seconds) or a
# server being restarted leaves publishes unanswered ("no responders" while no leader holds the
# subject, or no reply at all from a leader that died with the request); the same message sent
# again carries the same Nats-Msg-Id, so the stream's de-duplication window stores it once
# however many tries reached it. Past the budget the error goes to the caller (a handler's
# message is nak'ed and redelivered; the API answers 503 `bus_unavailable`). The budget covers
# the elections measured on a loopback cluster (4.4-6.8 s, docs/benchmarks.md `cluster`) and no
# more: an API request waits at most this long before its 503 when NATS is gone.
PUBLISH_RETRY_S = 10.0
PUBLISH_ACK_TIMEOUT_S = 5.0
# Pauses between tries, in seconds: quick at first (an election is often over within a second or
# two of the route closing), then at most one try a second.
_RETRY_PAUSES_S = (0.05, 0.1, 0.2, 0.5, 1.0)
# Failures a later try can cure: no ack in time, nobody serving the stream's subject right now,
# JetStream answering 503 (temporarily unavailable), the client's buffer full while reconnecting.
# Not a closed connection (it never comes back), nor an error the stream gave (a bad request).
RETRYABLE_PUBLISH_ERRORS: tuple[type[Exception], ...] = (
    asyncio.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
)


def inbox_prefix(name: str) -> str:
    """The inbox of the connection named `name` (a function, `provision`): replies to its
    requests (JetStream API answers, publish acks, pull-consumer deliveries, readers'
    deliveries) arrive on `<prefix>.<random>`. Each NATS user may subscribe only to its own
    (infra/nats_permissions.py), so no credential reads another's replies. `_INBOX_<name>`, not
    `_INBOX.<name>`: a client that cannot set a prefix (MinIO's) keeps nats' default `_INBOX.>`,
    which then holds no one else's replies."""
    if not name or any(ch in name for ch in " .*>\t\r\n"):
        raise ValueError(f"not a valid connection name for an inbox: {name!r}")
    return f"_INBOX_{name}"


async def connect(settings: Settings, name: str) -> NATS:
    """A connection that reconnects forever: a NATS restart must not kill a function. Its
    replies arrive on its own inbox (`inbox_prefix(name)`), as the permissions require."""

    async def on_error(error: Exception) -> None:
        log.warning("nats error: %s", error)

    return await nats.connect(
        servers=[url.strip() for url in settings.nats_url.split(",")],
        name=f"klipnote-{name}",
        inbox_prefix=inbox_prefix(name),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
    )


class Publisher:
    """Publishes CloudEvents to JetStream; every publish carries `Nats-Msg-Id` = the event id.

    `retry_s` and `ack_timeout_s` (seconds) bound the tries of one publish (`PUBLISH_RETRY_S`,
    `PUBLISH_ACK_TIMEOUT_S`)."""

    def __init__(
        self,
        js: JetStreamContext,
        settings: Settings,
        *,
        retry_s: float = PUBLISH_RETRY_S,
        ack_timeout_s: float = PUBLISH_ACK_TIMEOUT_S,
    ) -> None:
        self._js = js
        self._mode = settings.publish_mode
        self._retry_s = retry_s
        self._ack_timeout_s = ack_timeout_s

    async def publish(self, event: CloudEvent) -> bool:
        """Publish and wait for the stream's ack, trying again with the same `Nats-Msg-Id` while
        the failure is one a later try can cure (`RETRYABLE_PUBLISH_ERRORS`) for up to `retry_s`
        seconds (a leader election, a server restarting). Returns False when JetStream saw a
        duplicate: an event published before, or an earlier try of this one whose ack was lost.
        Raises the last error once the budget is spent, and at once what no try can cure (a
        closed connection, an error answered by the stream)."""
        headers, body = binding.encode(event, self._mode)
        headers[MSG_ID_HEADER] = event.get_id()
        subject = subject_for(event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_s
        tries = 0
        while True:
            try:
                # No try runs past the budget: the whole publish takes at most `retry_s`.
                wait = max(0.5, min(self._ack_timeout_s, deadline - loop.time()))
                ack = await self._js.publish(subject, body, timeout=wait, headers=headers)
            except RETRYABLE_PUBLISH_ERRORS as error:
                pause = _RETRY_PAUSES_S[min(tries, len(_RETRY_PAUSES_S) - 1)]
                tries += 1
                if loop.time() + pause >= deadline:
                    raise
                log.warning(
                    "publish of %s to %s not acknowledged (%s), trying again (try %d)",
                    event.get_id(),
                    subject,
                    type(error).__name__,
                    tries + 1,
                )
                await asyncio.sleep(pause)
                continue
            return not ack.duplicate


def subject_for(event: CloudEvent) -> str:
    """Where an event goes: its kind's subject prefix plus the value of the kind's token field."""
    kind: EventKind = binding.kind_of(event)
    data = event.get_data()
    token = data.get(kind.token_field) if isinstance(data, dict) else None
    if not isinstance(token, str):
        raise ValueError(f"event {event.get_id()} has no {kind.token_field} to route it by")
    return kind.subject(token)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: `*` is one token, a trailing `>` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)
