"""A consumer in a process of its own, for the redelivery test: it takes one message, says so on
`<announce>` (core NATS), then works on it forever, heartbeating, until it is killed."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

from cloudevents.core.v1.event import CloudEvent

from events.catalogue import Consumer, Stream
from events.runtime.function import Runtime, Subscription
from events.runtime.jetstream import JetStreamHost
from events.settings import Settings


class Stuck:
    name = "stuck"

    def __init__(self, consumer: Consumer, announce: str) -> None:
        self.consumer, self.announce = consumer, announce
        self.runtime: Runtime | None = None

    @property
    def subscriptions(self) -> list[Subscription]:
        return [Subscription(self.consumer, self.handle)]

    async def start(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def stop(self) -> None:
        return None

    def ready(self) -> bool:
        return True

    def app(self) -> None:
        return None

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        assert self.runtime is not None
        await self.runtime.nc.publish(self.announce, event.get_id().encode())
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
    await JetStreamHost(Stuck(consumer, args.announce), settings).run()


if __name__ == "__main__":
    asyncio.run(main())
