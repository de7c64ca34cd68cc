"""Provisioning, derived from the catalogue: every stream, durable consumer and KV bucket of
`events.catalogue`, and the S3 buckets of the settings.

One idempotent entry point (`run`) serves production (`klipnote provision`, the provisioning Job
and compose service) and the embedded stack alike: it creates what is missing and updates what
differs, so running it twice, or from several replicas at once, is harmless. It never deletes:
a model left out of `models` keeps its durable and the jobs queued in it.
"""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StreamConfig
from nats.js.errors import NotFoundError

from events import bus, catalogue, storage
from events.catalogue import Consumer, Stream
from events.runtime import settlement
from events.settings import Settings


def run(settings: Settings, models: list[str] | None = None) -> None:
    """Provision everything: JetStream (streams, a durable per consumer of the catalogue and per
    model of `models`, default the settings' `enabled_models`, the jobs KV bucket), then the
    uploads and results buckets. Connects as the client name `provision`.

    Blocking (it runs its own event loop): call it from synchronous code, or through
    `asyncio.to_thread` from a coroutine. Raises what nats-py raises when NATS is unreachable or
    refuses (permissions), and `minio.error.S3Error` when the store refuses a bucket.
    """

    async def provision_bus() -> None:
        nc = await bus.connect(settings, "provision")
        try:
            await jetstream(nc.jetstream(), settings, settings.enabled_models if models is None else models)
        finally:
            await nc.close()

    asyncio.run(provision_bus())
    buckets(settings)


async def jetstream(js: JetStreamContext, settings: Settings, models: list[str]) -> None:
    """Create or update every stream, durable consumer and KV bucket on an open connection."""
    for stream in catalogue.STREAMS:
        config = stream_config(stream, settings)
        try:
            await js.stream_info(stream.name)
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)
    for consumer in durables(models):
        await js.add_consumer(consumer.stream.name, consumer_config(consumer, settings))
    try:
        await js.key_value(catalogue.JOBS_KV_BUCKET)
    except NotFoundError:
        await js.create_key_value(KeyValueConfig(bucket=catalogue.JOBS_KV_BUCKET, history=1))


def buckets(settings: Settings) -> None:
    """Create the uploads and results buckets where missing."""
    storage.ensure_buckets(storage.client(settings), settings)


def durables(models: list[str]) -> list[Consumer]:
    """The catalogue's durable consumers, and one queue per model of `models`."""
    return [*catalogue.CONSUMERS, *(catalogue.model_consumer(model) for model in models)]


def stream_config(stream: Stream, settings: Settings) -> StreamConfig:
    """A catalogue stream as JetStream configures it (ages in seconds); the de-duplication window
    (`Nats-Msg-Id`) comes from the settings."""
    return StreamConfig(
        name=stream.name,
        subjects=stream.subjects,
        retention=stream.retention,
        storage=stream.storage,
        max_age=stream.max_age_s,
        duplicate_window=settings.dedupe_window_s,
    )


def consumer_config(consumer: Consumer, settings: Settings) -> ConsumerConfig:
    """A catalogue consumer as a durable pull consumer: explicit acks, from the stream's start,
    redelivered after the settings' `ack_wait_s` seconds, at most `server_max_deliver` times
    (what its handler may settle plus DELIVER_HEADROOM)."""
    # One filter, or several (`filter_subjects`, NATS 2.10+) when a consumer reads more than one.
    filters = [consumer.filter_subject, *consumer.extra_filters]
    return ConsumerConfig(
        durable_name=consumer.durable,
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_s,
        # The host decides when to give up, so it can dead-letter with a reason (a message that
        # crashes its process too: `settlement.unsettled`); the server's bound lies beyond that, a
        # backstop that keeps a poison message from holding an ack-pending slot for ever.
        max_deliver=settlement.server_max_deliver(consumer, settings),
        # Many replicas may each hold one message; one job per replica is the fetch size.
        max_ack_pending=1000,
    )
