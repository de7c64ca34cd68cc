"""Provisioning, derived from the catalogue: every stream, durable consumer and KV bucket of
`events.catalogue`, and the S3 buckets of the settings.

One idempotent entry point (`run`) serves production (`klipnote provision`, the provisioning Job
and compose service) and the embedded stack alike: it creates what is missing and updates what
differs, so running it twice, or from several replicas at once, is harmless. It never deletes:
a model left out of `models` keeps its durable and the jobs queued in it.

Every stream, KV bucket and durable consumer is kept in STREAM_REPLICAS copies (`num_replicas`):
1 on a single server, 3 on the production cluster (R3: a publish is acknowledged once two of the
three servers hold it, so one server may go without losing or stopping anything;
docs/reliability.md). Changing the setting later and provisioning again scales what exists in
place (JetStream copies the data to the new peers).
"""

from __future__ import annotations

import asyncio
import dataclasses

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
    rescaled = []  # streams whose number of copies changes now
    for stream in catalogue.STREAMS:
        config = stream_config(stream, settings)
        try:
            before = await js.stream_info(stream.name)
            await js.update_stream(config)
            if (before.config.num_replicas or 1) != settings.stream_replicas:
                rescaled.append(stream.name)
        except NotFoundError:
            await js.add_stream(config)
    if await key_value(js, catalogue.JOBS_KV_BUCKET, settings):
        rescaled.append(f"KV_{catalogue.JOBS_KV_BUCKET}")
    # Each waits for an election (seconds: about 10 s on the test cluster): side by side, not in turn.
    await asyncio.gather(*(copies_placed(js, name, settings.stream_replicas) for name in rescaled))
    for consumer in durables(models):
        await js.add_consumer(consumer.stream.name, consumer_config(consumer, settings))


async def key_value(js: JetStreamContext, bucket: str, settings: Settings) -> bool:
    """Create the KV bucket `bucket` (latest value only) in `stream_replicas` copies, or bring an
    existing one's copies to that number: a KV bucket is the stream `KV_<bucket>`, whose other
    settings are left as they are. Returns whether an existing bucket's number of copies changed
    (see `copies_placed`)."""
    stream = f"KV_{bucket}"
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        await js.create_key_value(KeyValueConfig(bucket=bucket, history=1, replicas=settings.stream_replicas))
        return False
    if (info.config.num_replicas or 1) == settings.stream_replicas:
        return False
    await js.update_stream(dataclasses.replace(info.config, num_replicas=settings.stream_replicas))
    return True


async def copies_placed(js: JetStreamContext, stream: str, replicas: int, timeout_s: float = 60.0) -> None:
    """Wait until `stream`, whose number of copies was just changed, has a leader and `replicas`
    copies placed (the new ones then catch up on their own): JetStream applies the change after
    answering the update, and refuses a durable with more copies than its stream has until then.
    Raises TimeoutError after `timeout_s` seconds (a cluster with fewer servers than `replicas`
    never gets there)."""
    async with asyncio.timeout(timeout_s):
        while True:
            cluster = (await js.stream_info(stream)).cluster
            peers = (cluster.replicas or []) if cluster is not None else []
            if replicas == 1 or (cluster is not None and cluster.leader and len(peers) == replicas - 1):
                return
            await asyncio.sleep(0.1)  # the server announces nothing when a scale is done: ask again


def buckets(settings: Settings) -> None:
    """Create the uploads and results buckets where missing."""
    storage.ensure_buckets(storage.client(settings), settings)


def durables(models: list[str]) -> list[Consumer]:
    """The catalogue's durable consumers, and one queue per model of `models`."""
    return [*catalogue.CONSUMERS, *(catalogue.model_consumer(model) for model in models)]


def stream_config(stream: Stream, settings: Settings) -> StreamConfig:
    """A catalogue stream as JetStream configures it (ages in seconds); the de-duplication window
    (`Nats-Msg-Id`) and the number of copies (`stream_replicas`) come from the settings."""
    return StreamConfig(
        name=stream.name,
        subjects=stream.subjects,
        retention=stream.retention,
        storage=stream.storage,
        max_age=stream.max_age_s,
        duplicate_window=settings.dedupe_window_s,
        num_replicas=settings.stream_replicas,
    )


def consumer_config(consumer: Consumer, settings: Settings) -> ConsumerConfig:
    """A catalogue consumer as a durable pull consumer: explicit acks, from the stream's start,
    redelivered after the settings' `ack_wait_s` seconds, at most `server_max_deliver` times
    (what its handler may settle plus DELIVER_HEADROOM), its state (acks, redeliveries) kept in
    `stream_replicas` copies like its stream's."""
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
        # Stated, not inherited (0), and the stream's: a durable in fewer copies would stop at one
        # node's loss while its stream goes on (and a work queue's must match its stream's).
        num_replicas=settings.stream_replicas,
    )
