"""The JetStream host: durable pull consumers in front of a function's handlers.

- one message at a time per subscription for GPU functions (batch size from the catalogue);
- in-progress heartbeats every third of ack_wait while a handler makes progress (publishes, or
  calls `alive`), so a job of hours is not redelivered while a dead or hung worker's job is;
- no fetch while the function is not ready (e.g. its model is still busy with a stalled job);
- ack on success; nak with backoff on transient errors; a malformed message, a permanent error or
  an exhausted retry budget goes to the DLQ with its reason and is terminated, and the consumer
  keeps going;
- on stop (SIGTERM) no new message is fetched; the message in hand gets a grace period to finish,
  then is nak'ed so another replica takes it at once; batched spans and metrics are flushed.

Telemetry is middleware here, not in the functions: each event is handled in a CONSUMER span
continuing the event's trace, with the job id in the log context; `events.metrics` sees every
event handled and published, and the lag of this host's queues.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time

import nats.errors
from cloudevents.core.v1.event import CloudEvent
from nats.aio.msg import Msg
from opentelemetry import trace

from events import binding, lifecycle, logs, metrics, tracing
from events.bus import Publisher, connect
from events.catalogue import DEAD_LETTER, JOB_STEPS, Consumer
from events.errors import CodedError
from events.models import DeadLetter
from events.runtime.function import (
    ACTIVITY,
    DELIVERY_ATTEMPT,
    Function,
    PermanentError,
    RetryLater,
    Runtime,
    Subscription,
)
from events.settings import Settings

log = logging.getLogger(__name__)


def continue_trace(event: CloudEvent) -> CloudEvent:
    """The outgoing event carries the current span as its traceparent (one job, one trace)."""
    traceparent = tracing.current_traceparent()
    if not traceparent:
        return event
    return CloudEvent({**event.get_attributes(), binding.TRACEPARENT: traceparent}, event.get_data())


class JetStreamHost:
    def __init__(
        self,
        function: Function,
        settings: Settings,
        *,
        consume: bool = True,
        drain_grace_s: float = 30.0,
    ) -> None:
        self.function = function
        self.consume = consume  # False under the HTTP host: events are pushed instead
        self.settings = settings
        self.drain_grace_s = drain_grace_s
        self.runtime: Runtime | None = None
        self._stopping = asyncio.Event()
        self.started = asyncio.Event()  # set once the function has started (model loaded)
        self._tracer = tracing.tracer(f"klipnote.{function.name}")

    # -- lifecycle ------------------------------------------------------------------------------

    def ready(self) -> bool:
        return (
            self.started.is_set()
            and self.runtime is not None
            and self.runtime.nc.is_connected
            and self.function.ready()
        )

    def stop(self) -> None:
        self._stopping.set()

    async def connect(self) -> Runtime:
        nc = await connect(self.settings, self.function.name)
        js = nc.jetstream()
        self.runtime = Runtime(self.settings, nc, js, Publisher(js, self.settings))
        return self.runtime

    async def run(self) -> None:
        runtime = self.runtime or await self.connect()
        await self.function.start(runtime)
        self.started.set()
        taking_work = self.consume and self.function.ready()
        if self.function.ready():
            log.info("ready", extra={"function": self.function.name})
        else:  # e.g. a missing model: take no work, keep answering the probes
            log.error("not ready, taking no work: %s", getattr(self.function, "problem", None))
        consumers = [
            asyncio.create_task(self._consume(subscription))
            for subscription in self.function.subscriptions
            if taking_work
        ]
        if taking_work:
            queues = [subscription.consumer for subscription in self.function.subscriptions]
            consumers.append(asyncio.create_task(metrics.watch_queues(runtime.js, queues, self._stopping)))
        try:
            await self._stopping.wait()
        finally:
            self._stopping.set()
            if consumers:
                _, pending = await asyncio.wait(consumers, timeout=self.drain_grace_s + 2)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*consumers, return_exceptions=True)
            await self.function.stop()
            # Every publish was awaited and every message acked or nak'ed by now; close()
            # flushes. (drain() waits on the pull subscriptions' inboxes until it times out.)
            with contextlib.suppress(Exception):
                await runtime.nc.close()
            # Batched spans and metrics leave before the process does (SIGTERM loses none).
            await asyncio.to_thread(tracing.flush)
            await asyncio.to_thread(metrics.flush)
            log.info("stopped", extra={"function": self.function.name})

    # -- consuming ------------------------------------------------------------------------------

    async def _consume(self, subscription: Subscription) -> None:
        assert self.runtime is not None
        consumer = subscription.consumer
        pull = await self.runtime.js.pull_subscribe_bind(
            durable=consumer.durable, stream=consumer.stream.name
        )
        while not self._stopping.is_set():
            if not self.function.ready():  # e.g. a model still busy with a job it gave up on
                await asyncio.sleep(0.5)
                continue
            try:
                # fetch(1) and fetch(n) raise different timeout classes; both are asyncio's.
                messages = await pull.fetch(consumer.batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as error:  # reconnecting, server restarting: try again shortly
                log.warning("fetch failed on %s: %s", consumer.durable, error)
                await asyncio.sleep(0.5)
                continue
            for message in messages:
                try:
                    await self._process(consumer, subscription, message)
                except Exception as error:  # e.g. the dead-letter publish while NATS is away
                    # The message was neither acked nor termed: it comes back after ack_wait.
                    log.error("could not settle a message on %s: %s", consumer.durable, error)

    async def _process(self, consumer: Consumer, subscription: Subscription, msg: Msg) -> None:
        try:
            event = subscription.decode(msg.headers, msg.data)
        except binding.MalformedEvent as error:
            await self._dead_letter(consumer, msg, str(error))
            return
        deliveries = msg.metadata.num_delivered or 1
        DELIVERY_ATTEMPT.set(deliveries)  # copied into the handler's task below
        last_activity = [time.monotonic()]
        ACTIVITY.set(lambda: last_activity.__setitem__(0, time.monotonic()))
        heartbeat = asyncio.create_task(self._heartbeat(msg, last_activity))
        handling = asyncio.create_task(self.handle_once(subscription, event))
        try:
            await self._wait_or_drain(handling)
            await msg.ack_sync()
        except binding.MalformedEvent as error:
            await self._dead_letter(consumer, msg, str(error), event)
        except PermanentError as error:
            await self._dead_letter(consumer, msg, f"{error.code}: {error.message}", event)
        except RetryLater as error:
            log.info("retrying in %.1fs: %s", error.delay_s, error, extra=_event_fields(event))
            await msg.nak(delay=max(error.delay_s, 0.001))  # a delay of 0 would be ignored
        except asyncio.CancelledError:
            # Stopping mid-message: give it back at once rather than after ack_wait.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as error:
            if deliveries >= self.settings.max_deliver:
                reason = f"gave up after {deliveries} deliveries: {type(error).__name__}: {error}"
                await self._dead_letter(consumer, msg, reason, event)
            else:
                backoff = self.settings.retry_backoff_s
                delay = backoff[min(deliveries - 1, len(backoff) - 1)] if backoff else 1.0
                log.warning(
                    "retrying in %.1fs: %s: %s",
                    delay,
                    type(error).__name__,
                    error,
                    extra=_event_fields(event),
                )
                await msg.nak(delay=delay)
        finally:
            heartbeat.cancel()

    async def _wait_or_drain(self, handling: asyncio.Task[None]) -> None:
        """Wait for the handler; once stopping, give it the grace period, then cancel it."""
        stopping = asyncio.create_task(self._stopping.wait())
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

    async def handle_once(self, subscription: Subscription, event: CloudEvent) -> None:
        """Run one event through its handler in a span of the job's trace; publish what it emits."""
        assert self.runtime is not None
        parent = tracing.context_from(binding.traceparent_of(event))
        attributes = {
            "messaging.system": "nats",
            "messaging.consumer.group.name": subscription.consumer.durable,
            "cloudevents.event_id": event.get_id(),
            "cloudevents.event_type": event.get_type(),
        }
        job_id = _job_id(event)
        if job_id:
            attributes[tracing.JOB_ID] = job_id
        started, ok = time.perf_counter(), False
        try:
            with (
                logs.job(job_id),
                self._tracer.start_as_current_span(
                    f"{self.function.name} {event.get_type()}",
                    context=parent,
                    kind=trace.SpanKind.CONSUMER,
                    attributes=attributes,
                ),
            ):
                async for outgoing in subscription.handle(event):
                    await self.runtime.publisher.publish(continue_trace(outgoing))
                    metrics.published(outgoing)
                    ACTIVITY.get()()  # an event out is progress
            ok = True
        finally:
            await metrics.handled(
                self.runtime.js,
                self.function.name,
                subscription.consumer,
                event,
                job_id,
                time.perf_counter() - started,
                ok,
            )
        log.info("handled %s", event.get_type(), extra=_event_fields(event))

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
        self, consumer: Consumer, msg: Msg, reason: str, event: CloudEvent | None = None
    ) -> None:
        """Keep the message with its reason in the DLQ, then stop its redelivery. A job's step
        given up on fails its job, with the reason."""
        assert self.runtime is not None
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
        job_step = event if event is not None and event.get_type() in _JOB_STEP_TYPES else None
        event = binding.new_event(
            DEAD_LETTER,
            letter,
            function=self.function.name,
            event_id=lifecycle.dead_letter_id(consumer.durable, sequence),
        )
        await self.runtime.publisher.publish(event)
        if job_step is not None and (job_id := _job_id(job_step)) is not None:
            gave_up = CodedError("gave_up", f"{self.function.name} gave up on this job: {reason}")
            await self.runtime.publisher.publish(
                lifecycle.failed(job_id, gave_up, function=self.function.name)
            )
        await msg.term()
        log.error("dead-lettered: %s", reason, extra={"consumer": consumer.durable})


_JOB_STEP_TYPES = {kind.type for kind in JOB_STEPS}


def _job_id(event: CloudEvent) -> str | None:
    """The job an event is about: its data's `job_id`, else its subject (the catalogue's events
    name the job there too)."""
    data = event.get_data()
    if isinstance(data, dict) and isinstance(data.get("job_id"), str):
        return str(data["job_id"])
    subject = event.get_subject()
    return subject if isinstance(subject, str) else None


def _event_fields(event: CloudEvent) -> dict[str, str | None]:
    return {
        "event_id": event.get_id(),
        "job_id": _job_id(event),
        "trace_id": tracing.trace_id(binding.traceparent_of(event)),
    }
