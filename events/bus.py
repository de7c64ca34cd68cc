"""The bus: NATS connection, publishing CloudEvents with `Nats-Msg-Id`, idempotent provisioning.

Provisioning is one idempotent command shared by the embedded stack and production
(`klipnote provision`): it creates what is missing and updates what differs, so running it
twice, or from several replicas at once, is harmless.
"""

from __future__ import annotations

import logging

import nats
from cloudevents.core.v1.event import CloudEvent
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StreamConfig
from nats.js.errors import NotFoundError

from events import binding, catalogue
from events.catalogue import Consumer, EventKind
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


async def provision(js: JetStreamContext, settings: Settings, models: list[str]) -> None:
    """Create or update every stream, durable consumer and KV bucket KlipNote uses."""
    for stream in catalogue.STREAMS:
        config = StreamConfig(
            name=stream.name,
            subjects=stream.subjects,
            retention=stream.retention,
            storage=stream.storage,
            max_age=stream.max_age_s,
            duplicate_window=settings.dedupe_window_s,
        )
        try:
            await js.stream_info(stream.name)
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)
    consumers = [
        catalogue.INGEST_ROUTER,
        catalogue.INGEST_PROJECTOR,
        catalogue.INGEST_WEBHOOKS,
        catalogue.INGEST_UPLOADS,
        catalogue.OPTIMIZE,
    ]
    consumers += [catalogue.model_consumer(model) for model in models]
    for consumer in consumers:
        await js.add_consumer(consumer.stream.name, consumer_config(consumer, settings))
    try:
        await js.key_value(catalogue.JOBS_KV_BUCKET)
    except NotFoundError:
        await js.create_key_value(KeyValueConfig(bucket=catalogue.JOBS_KV_BUCKET, history=1))


def consumer_config(consumer: Consumer, settings: Settings) -> ConsumerConfig:
    # One filter, or several (`filter_subjects`, NATS 2.10+) when a consumer reads more than one.
    filters = [consumer.filter_subject, *consumer.extra_filters]
    return ConsumerConfig(
        durable_name=consumer.durable,
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_s,
        # The host, not the server, decides when to give up, so it can dead-letter with a reason.
        max_deliver=-1,
        # Many replicas may each hold one message; one job per replica is the fetch size.
        max_ack_pending=1000,
    )
