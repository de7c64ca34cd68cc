"""One function in one process, whatever hosts bring it events: the NATS connection and the
function's `Runtime`, start and stop, health, and handling one event (the telemetry wrapper, then
publishing what the handler emits).

Hosts are separate and composed by `events.runtime.serve`: the JetStream host pulls from the
function's consumers (a `Host` run by `FunctionProcess.run`); the HTTP host serves the health
probes, the CloudEvents receiver and the function's own routes, around the whole run.

On stop (SIGTERM) every host settles what it holds (see each host), then the function stops, the
connection closes, and batched spans and metrics are flushed; the HTTP server stops last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from cloudevents.core.v1.event import CloudEvent
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events import bus, metrics, tracing
from events.runtime.function import ACTIVITY, Function, Health, Runtime, Subscription
from events.runtime.telemetry import Telemetry
from events.settings import Settings

log = logging.getLogger(__name__)


class Host(Protocol):
    async def run(self) -> None:
        """Bring the process events until it stops, then settle what is in hand and return."""


class FunctionProcess:
    """`function` run in this process with `settings`; hosts share it (see the module)."""

    def __init__(self, function: Function, settings: Settings) -> None:
        self.function = function
        self.settings = settings
        self.runtime: Runtime | None = None
        self.started = asyncio.Event()  # set once the function has started (model loaded)
        self.stopping = asyncio.Event()
        self.telemetry = Telemetry(function.name)
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None

    @property
    def nc(self) -> NATS:
        """The process's NATS connection (hosts only; a function gets its `Runtime`)."""
        assert self._nc is not None, "not connected"
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context of `nc` (hosts only: consumers, queue lag)."""
        assert self._js is not None, "not connected"
        return self._js

    async def connect(self) -> Runtime:
        """Connect to NATS (reconnecting for ever afterwards) and build the function's Runtime."""
        self._nc = await bus.connect(self.settings, self.function.name)
        self._js = self._nc.jetstream()
        self.runtime = Runtime(self.settings, bus.Publisher(self._js, self.settings), self._js)
        return self.runtime

    def health(self) -> Health:
        """The function's health, not ready as well until it has started and while NATS is away."""
        own = self.function.health()
        connected = self._nc is not None and self._nc.is_connected
        return Health(own.ready and self.started.is_set() and connected, own.reason, own.details)

    def stop(self) -> None:
        self.stopping.set()

    async def wait_started(self) -> bool:
        """Wait until the function has started (True) or the process stops before that (False)."""
        started = asyncio.create_task(self.started.wait())
        stopping = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait({started, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
            stopping.cancel()
        return self.started.is_set() and not self.stopping.is_set()

    async def run(self, hosts: Sequence[Host] = ()) -> None:
        """Connect (unless `connect` was called), run `hosts` while the function starts and until
        `stop`; then let each host settle what it holds, stop the function, close the connection
        and flush telemetry. Raises what the function's start raises (after the same cleanup)."""
        if self._nc is None:
            await self.connect()
        assert self.runtime is not None
        running = [asyncio.create_task(host.run()) for host in hosts]
        try:
            await self.function.start(self.runtime)
            self.started.set()
            health = self.function.health()
            if health.ready:
                log.info("ready", extra={"function": self.function.name})
            else:  # e.g. a missing model: take no work, keep answering the probes
                log.error("not ready, taking no work: %s", health.reason)
            await self.stopping.wait()
        finally:
            self.stopping.set()
            await asyncio.gather(*running, return_exceptions=True)
            await self.function.stop()
            # Every publish was awaited and every message acked or nak'ed by now; close()
            # flushes. (drain() waits on the pull subscriptions' inboxes until it times out.)
            with contextlib.suppress(Exception):
                await self.nc.close()
            # Batched spans and metrics leave before the process does (SIGTERM loses none).
            await asyncio.to_thread(tracing.flush)
            await asyncio.to_thread(metrics.flush)
            log.info("stopped", extra={"function": self.function.name})

    def subscription_for(self, subject: str) -> Subscription | None:
        """The subscription whose consumer reads `subject`, if any."""
        return next((sub for sub in self.function.subscriptions if sub.accepts(subject)), None)

    async def handle(self, subscription: Subscription, event: CloudEvent) -> None:
        """Run one event through its handler inside the telemetry wrapper and publish each event
        it emits (an event out is progress, see `alive`). Raises what the handler raises."""
        runtime = self.runtime
        assert runtime is not None, "not connected"

        async def publish(outgoing: CloudEvent) -> None:
            await runtime.publisher.publish(outgoing)
            ACTIVITY.get()()

        await self.telemetry.around(subscription, event, publish, runtime)

    async def give_up(self, subscription: Subscription, event: CloudEvent, reason: str) -> None:
        """Publish what giving up on `event` for `reason` means (`Subscription.gave_up`: a job
        step fails its job). Both hosts call it when they stop delivering an event."""
        runtime = self.runtime
        assert runtime is not None, "not connected"
        for consequence in subscription.gave_up(event, reason, self.function.name):
            await runtime.publisher.publish(consequence)
