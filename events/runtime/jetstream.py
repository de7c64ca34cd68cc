"""The JetStream host: durable pull consumers in front of a function's handlers.

- one message at a time per subscription for GPU functions (batch size from the catalogue); an
  I/O-bound consumer (webhooks, routing) runs `Consumer.concurrency` fetches side by side, so one
  slow message holds up only itself (`concurrency_of`);
- in-progress heartbeats every third of ack_wait while a handler makes progress (publishes, or
  calls `alive`), so a job of hours is not redelivered while a dead or hung worker's job is;
- no fetch while the function is not ready (e.g. its model is still busy with a stalled job);
- ack on success; nak with backoff on transient errors; a malformed message, a permanent error or
  an exhausted retry budget goes to the DLQ with its reason and is terminated, and the consumer
  keeps going (`events.runtime.settlement` decides which); a message delivered more times than its
  handler could have settled (each delivery crashed or hung its process) is dead-lettered before
  the handler runs again (`settlement.unsettled`); what giving up means beyond the dead
  letter is the subscription's (`Subscription.gave_up`), published here unread;
- on stop (SIGTERM) no new message is fetched; the message in hand gets a grace period to finish,
  then is nak'ed so another replica takes it at once.

Each message is handled by `FunctionProcess.handle`, inside the telemetry wrapper; this host adds
the lag of its queues (`events.metrics.watch_queues`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time

from cloudevents.core.v1.event import CloudEvent
from nats.aio.msg import Msg

from events import binding, lifecycle, metrics
from events.catalogue import DEAD_LETTER, Consumer
from events.models import DeadLetter
from events.reader import fetch_available
from events.runtime.function import ACTIVITY, DELIVERY_ATTEMPT, RetryLater, Subscription
from events.runtime.process import FunctionProcess
from events.runtime.settlement import settle, unsettled
from events.runtime.telemetry import event_fields
from events.settings import Settings
from events.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class JetStreamHost:
    """Runs a process's subscriptions as pull consumers (a `Host` of `FunctionProcess.run`)."""

    def __init__(self, process: FunctionProcess, *, drain_grace_s: float = 30.0) -> None:
        self.process = process
        self.settings = process.settings
        self.drain_grace_s = drain_grace_s

    async def run(self) -> None:
        """Once the function has started (and only if it is ready then), consume until the process
        stops; then give each message in hand `drain_grace_s` to finish."""
        if not await self.process.wait_started() or not self.process.health().ready:
            return  # stopped while starting; or not ready, which the process has logged
        subscriptions = self.process.function.subscriptions
        stopping = self.process.stopping
        consumers = [asyncio.create_task(self._consume(subscription)) for subscription in subscriptions]
        queues = [subscription.consumer for subscription in subscriptions]
        consumers.append(asyncio.create_task(metrics.watch_queues(self.process.js, queues, stopping)))
        try:
            await stopping.wait()
        finally:
            await asyncio.wait(consumers, timeout=self.drain_grace_s + 2)
            await cancel_and_wait(consumers)  # a plain cancel can be lost in a lane's fetch

    # -- consuming ------------------------------------------------------------------------------

    async def _consume(self, subscription: Subscription) -> None:
        """Run the subscription's lanes: each its own pull subscription, fetching and handling one
        batch after another, so a message in hand blocks only its lane."""
        lanes = concurrency_of(subscription.consumer, self.settings)
        await asyncio.gather(*(self._lane(subscription) for _ in range(lanes)))

    async def _lane(self, subscription: Subscription) -> None:
        consumer = subscription.consumer
        pull = await self.process.js.pull_subscribe_bind(
            durable=consumer.durable, stream=consumer.stream.name
        )
        while not self.process.stopping.is_set():
            if not self.process.function.health().ready:  # e.g. a model still busy with a job it gave up on
                await asyncio.sleep(0.5)
                continue
            try:
                # As soon as one is there, with what else is waiting (not after a batch fills).
                messages = await fetch_available(pull, consumer.batch, wait_s=1.0)
                if not messages:
                    continue
            except Exception as error:  # reconnecting, server restarting: try again shortly
                log.warning("fetch failed on %s: %s", consumer.durable, error)
                await asyncio.sleep(0.5)
                continue
            if consumer.by_job and len(messages) > 1:
                # Each run drains on its own (`_wait_or_drain`); none ends the others.
                runs = by_job(messages)
                await asyncio.gather(
                    *(self._settle_each(subscription, run) for run in runs), return_exceptions=True
                )
            else:
                await self._settle_each(subscription, messages)

    async def _settle_each(self, subscription: Subscription, messages: list[Msg]) -> None:
        """Handle and settle `messages` one after another; once stopping, the ones not begun are
        given back at once (nak) for another replica, not left for ack_wait."""
        for message in messages:
            if self.process.stopping.is_set():
                with contextlib.suppress(Exception):
                    await message.nak()
                continue
            try:
                await self._process(subscription, message)
            except Exception as error:  # e.g. the dead-letter publish while NATS is away
                # The message was neither acked nor termed: it comes back after ack_wait.
                log.error("could not settle a message on %s: %s", subscription.consumer.durable, error)

    async def _process(self, subscription: Subscription, msg: Msg) -> None:
        try:
            event = subscription.decode(msg.headers, msg.data)
        except binding.MalformedEvent as error:
            await self._dead_letter(subscription, msg, str(error))
            return
        deliveries = msg.metadata.num_delivered or 1
        poisoned = unsettled(subscription.consumer, deliveries, self.settings)
        if poisoned is not None:  # it would crash (or hang) this process too: not handled again
            await self._dead_letter(subscription, msg, poisoned.reason or "", event)
            return
        DELIVERY_ATTEMPT.set(deliveries)  # copied into the handler's task below
        last_activity = [time.monotonic()]
        ACTIVITY.set(lambda: last_activity.__setitem__(0, time.monotonic()))
        heartbeat = asyncio.create_task(self._heartbeat(msg, last_activity))
        handling = asyncio.create_task(self.process.handle(subscription, event))
        raised: Exception | None = None
        try:
            try:
                await self._wait_or_drain(handling)
            except asyncio.CancelledError:
                # Stopping mid-message: give it back at once rather than after ack_wait.
                with contextlib.suppress(Exception):
                    await msg.nak()
                raise
            except Exception as failure:
                raised = failure
            settlement = settle(raised, deliveries, self.settings)
            if settlement.action == "ack":
                log.info("handled %s", event.get_type(), extra=event_fields(event))
                await msg.ack_sync()
            elif settlement.action == "retry":
                delay = settlement.delay_s or 0.001
                if isinstance(raised, RetryLater):  # the handler's own schedule
                    log.info("retrying in %.1fs: %s", delay, raised, extra=event_fields(event))
                else:
                    log.warning(
                        "retrying in %.1fs: %s: %s",
                        delay,
                        type(raised).__name__,
                        raised,
                        extra=event_fields(event),
                    )
                await msg.nak(delay=delay)
            else:
                await self._dead_letter(subscription, msg, settlement.reason or "", event)
        finally:
            heartbeat.cancel()

    async def _wait_or_drain(self, handling: asyncio.Task[None]) -> None:
        """Wait for the handler; once stopping, give it the grace period, then cancel it."""
        stopping = asyncio.create_task(self.process.stopping.wait())
        try:
            await asyncio.wait({handling, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not handling.done():
                await asyncio.wait({handling}, timeout=self.drain_grace_s)
            if not handling.done():
                handling.cancel()
                raise asyncio.CancelledError()
            handling.result()
        finally:
            stopping.cancel()

    async def _heartbeat(self, msg: Msg, last_activity: list[float]) -> None:
        """Keep the message in progress while its handler makes progress (see `alive`), not for
        ever: a handler silent for STALL_TIMEOUT_S is left to ack_wait, and the message returns."""
        interval = max(self.settings.ack_wait_s / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - last_activity[0] > self.settings.stall_timeout_s:
                continue
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _dead_letter(
        self, subscription: Subscription, msg: Msg, reason: str, event: CloudEvent | None = None
    ) -> None:
        """Keep the message with its reason in the DLQ, publish what giving up on its event means
        (`Subscription.gave_up`), then stop its redelivery."""
        consumer: Consumer = subscription.consumer
        function = self.process.function.name
        try:
            body, encoding = msg.data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(msg.data).decode("ascii"), "base64"
        letter = DeadLetter(
            consumer=consumer.durable,
            subject=msg.subject,
            reason=reason,
            deliveries=msg.metadata.num_delivered or 1,
            headers=dict(msg.headers or {}),
            body=body,
            body_encoding=encoding,  # type: ignore[arg-type]
        )
        sequence = msg.metadata.sequence.stream if msg.metadata.sequence else 0
        publisher = self.process.runtime.publisher if self.process.runtime else None
        assert publisher is not None, "not connected"
        await publisher.publish(
            binding.new_event(
                DEAD_LETTER,
                letter,
                function=function,
                event_id=lifecycle.dead_letter_id(consumer.durable, sequence),
            )
        )
        if event is not None:
            await self.process.give_up(subscription, event, reason)
        await msg.term()
        log.error("dead-lettered: %s", reason, extra={"consumer": consumer.durable})


def by_job(messages: list[Msg]) -> list[list[Msg]]:
    """`messages` in runs of one job each (the subject's last token), each run in stream order,
    the runs in the order of their first message (see `Consumer.by_job`)."""
    runs: dict[str, list[Msg]] = {}
    for message in messages:
        runs.setdefault(message.subject.rsplit(".", 1)[-1], []).append(message)
    return list(runs.values())


def concurrency_of(consumer: Consumer, settings: Settings) -> int:
    """How many fetches of `consumer` one replica runs side by side: its `concurrency`, or the
    value of the `Settings` field it names (e.g. WEBHOOK_CONCURRENCY). Raises ValueError when
    that is below 1."""
    lanes = consumer.concurrency
    value = getattr(settings, lanes) if isinstance(lanes, str) else lanes
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{consumer.durable}: concurrency must be a whole number >= 1, not {value!r}")
    return value
