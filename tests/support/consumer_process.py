"""A consumer in a process of its own, for the redelivery test: it takes one message, says so on
`<announce>` (core NATS), then works on it forever, heartbeating, until it is killed."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from cloudevents.core.v1.event import CloudEvent

from events.catalogue import Consumer, Stream
from events.runtime.function import Health, Runtime, Subscription
from events.runtime.jetstream import JetStreamHost
from events.runtime.process import FunctionProcess
from events.settings import Settings


class Stuck:
    name = "stuck"

    def __init__(self, consumer: Consumer, announce: Callable[[bytes], Awaitable[None]]) -> None:
        self.consumer, self.announce = consumer, announce

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
        await self.announce(event.get_id().encode())
        await asyncio.Event().wait()  # a job that never ends
        yield event


async def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--nats", "--stream", "--durable", "--subject", "--announce"):
        parser.add_argument(name, required=True)
    parser.add_argument("--ack-wait", type=float, required=True)
    args = parser.parse_args()
    consumer = Consumer(args.durable, Stream(args.stream, [args.subject]), args.subject)
    settings = Settings(nats_url=args.nats, ack_wait_s=args.ack_wait)

    async def announce(data: bytes) -> None:  # core NATS, on the process's own connection
        await process.nc.publish(args.announce, data)

    process = FunctionProcess(Stuck(consumer, announce), settings)
    await process.run([JetStreamHost(process)])


if __name__ == "__main__":
    asyncio.run(main())
