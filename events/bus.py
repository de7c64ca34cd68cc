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


async def connect(settings: Settings, name: str) -> NATS:
    """A connection that reconnects forever: a NATS restart must not kill a function."""

    async def on_error(error: Exception) -> None:
        log.warning("nats error: %s", error)

    return await nats.connect(
        servers=[url.strip() for url in settings.nats_url.split(",")],
        name=f"klipnote-{name}",
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
