"""Run one handler of a function on one CloudEvent without servers, for unit tests.

The harness calls the handler as a host would (inside the same telemetry wrapper, with the
delivery attempt set) and reports what a host would do: the events the handler yields (which a
host publishes), the error it raised, the settlement of its message (`events.runtime.settlement`:
ack, retry after a delay, or dead letter with a reason) and, for a dead letter, what giving up
publishes beside it (`Subscription.gave_up`, e.g. the job's `failed` event). Nothing is published.

The function is started with the `Runtime` given, or with one that has no JetStream (its reads
raise RuntimeError) and whose publisher records what the function publishes by itself
(`Harness.published`). Real servers stay for system tests.

    async with Harness(function, settings) as harness:
        outcome = await harness.run(event)
    assert outcome.settlement.action == "ack" and [e.get_type() for e in outcome.events] == [...]
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field
from types import TracebackType

from cloudevents.core.v1.event import CloudEvent

from events import bus
from events.runtime.function import DELIVERY_ATTEMPT, Function, Runtime, Subscription
from events.runtime.settlement import Settlement, settle
from events.runtime.telemetry import Telemetry
from events.settings import Settings


@dataclass(frozen=True)
class Outcome:
    """What handling one event came to. `events`: yielded by the handler, traceparent continued
    as a host would publish them; `error`: what it raised (None on success); `settlement`: what a
    host would do with the message; `gave_up`: the events a host would publish beside the dead
    letter (empty unless dead-lettered)."""

    events: list[CloudEvent]
    error: Exception | None
    settlement: Settlement
    gave_up: list[CloudEvent] = field(default_factory=list)


class _Recorder(bus.Publisher):
    """A publisher that keeps what it is given."""

    def __init__(self) -> None:  # no JetStream behind it
        self.events: list[CloudEvent] = []

    async def publish(self, event: CloudEvent) -> bool:
        self.events.append(event)
        return True


class Harness:
    """`function` with `settings` (default: `Settings()`), started with `runtime` (default: one
    without JetStream that records publishes) by `start` or `async with`."""

    def __init__(
        self, function: Function, settings: Settings | None = None, *, runtime: Runtime | None = None
    ) -> None:
        self.function = function
        self.settings = settings or (runtime.settings if runtime is not None else Settings())
        self._recorder = _Recorder()
        self.runtime = runtime or Runtime(self.settings, self._recorder)
        self.telemetry = Telemetry(function.name)

    @property
    def published(self) -> list[CloudEvent]:
        """What the function published through the harness's own runtime, outside any yield."""
        return self._recorder.events

    async def start(self) -> None:
        await self.function.start(self.runtime)

    async def stop(self) -> None:
        await self.function.stop()

    async def __aenter__(self) -> Harness:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    def subscription_for(self, event: CloudEvent) -> Subscription:
        """The function's only subscription, or the one whose consumer reads `event`'s subject.
        Raises LookupError when none does."""
        subscriptions = self.function.subscriptions
        if len(subscriptions) == 1:
            return subscriptions[0]
        subject = bus.subject_for(event)
        for subscription in subscriptions:
            if subscription.accepts(subject):
                return subscription
        raise LookupError(f"{self.function.name} has no subscription reading {subject}")

    async def run(
        self, event: CloudEvent, *, subscription: Subscription | None = None, deliveries: int = 1
    ) -> Outcome:
        """Handle `event` (by `subscription`, else `subscription_for(event)`) as its
        `deliveries`-th delivery (1 for the first)."""
        subscription = subscription or self.subscription_for(event)
        emitted: list[CloudEvent] = []

        async def collect(outgoing: CloudEvent) -> None:
            emitted.append(outgoing)

        context = contextvars.copy_context()
        context.run(DELIVERY_ATTEMPT.set, deliveries)
        handling = asyncio.create_task(
            self.telemetry.around(subscription, event, collect, self.runtime), context=context
        )
        error: Exception | None = None
        try:
            await handling
        except Exception as failure:
            error = failure
        settlement = settle(error, deliveries, self.settings)
        gave_up = (
            subscription.gave_up(event, settlement.reason or "", self.function.name)
            if settlement.action == "dead_letter"
            else []
        )
        return Outcome(emitted, error, settlement, gave_up)
