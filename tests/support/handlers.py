"""A recording test function and its own stream, for tests of the JetStream host."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from cloudevents.core.v1.event import CloudEvent
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from events import binding, catalogue, provision
from events.catalogue import Consumer, Stream
from events.models import TranscriptionQueued
from events.runtime.function import Function, Health, Runtime, Subscription
from events.runtime.jetstream import JetStreamHost
from events.runtime.process import FunctionProcess
from events.settings import Settings


class Recorder:
    """A function that records the data of every `queued` event it is given."""

    name = "recorder"

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.seen: asyncio.Queue[tuple[str, TranscriptionQueued]] = asyncio.Queue()

    @property
    def subscriptions(self) -> list[Subscription]:
        return [Subscription(self.consumer, self.handle)]

    async def start(self, runtime: Runtime) -> None:
        return None

    async def stop(self) -> None:
        return None

    def health(self) -> Health:
        return Health(ready=True)

    def app(self) -> None:
        return None

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        await self.seen.put((event.get_id(), binding.parse_data(event, TranscriptionQueued)))
        return
        yield


async def make_consumer(js: JetStreamContext, settings: Settings) -> Consumer:
    """A stream and durable of the test's own, beside the platform's."""
    name = f"T{uuid.uuid4().hex[:10]}"
    stream = Stream(name, [f"{name.lower()}.>"])
    await js.add_stream(StreamConfig(name=name, subjects=stream.subjects))
    consumer = Consumer(f"{name.lower()}-worker", stream, f"{name.lower()}.>")
    await js.add_consumer(name, provision.consumer_config(consumer, settings))
    return consumer


def valid_event(job_id: str = "job-1") -> CloudEvent:
    return binding.new_event(
        catalogue.QUEUED, TranscriptionQueued(job_id=job_id, model="whisperx"), function="test"
    )


def jetstream_host(function: Function, settings: Settings, drain_grace_s: float = 30.0) -> JetStreamHost:
    """A JetStream host of its own process for `function`."""
    return JetStreamHost(FunctionProcess(function, settings), drain_grace_s=drain_grace_s)


async def running(host: JetStreamHost) -> asyncio.Task[None]:
    """The host's process, connected and running until `host.process.stop()`."""
    await host.process.connect()
    return asyncio.create_task(host.process.run([host]))
