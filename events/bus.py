"""The bus: NATS connection, publishing CloudEvents with `Nats-Msg-Id`, and subjects (where an
event goes, which subjects a consumer's filter matches).

Streams, consumers and KV buckets are created by `events.provision`.
"""

from __future__ import annotations

import logging

import nats
from cloudevents.core.v1.event import CloudEvent
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events import binding
from events.catalogue import EventKind
from events.settings import Settings

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"


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
    """Publishes CloudEvents to JetStream; every publish carries `Nats-Msg-Id` = the event id."""

    def __init__(self, js: JetStreamContext, settings: Settings) -> None:
        self._js = js
        self._mode = settings.publish_mode

    async def publish(self, event: CloudEvent) -> bool:
        """Publish and wait for the stream's ack. Returns False when JetStream saw a duplicate."""
        headers, body = binding.encode(event, self._mode)
        headers[MSG_ID_HEADER] = event.get_id()
        ack = await self._js.publish(subject_for(event), body, headers=headers)
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
