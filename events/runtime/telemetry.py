"""Telemetry as one wrapper around a handler call, so no host loop and no function interleaves it.

Each event is handled in a CONSUMER span continuing the event's trace (the W3C `traceparent`
of the CloudEvents distributed tracing extension), with the job id in the log context; each
event the handler emits carries the hop's span as its traceparent (one job, one trace);
`events.metrics` sees every event handled (hop duration) and published, and a subscription's
own observer (`Subscription.observe`) runs after an event handled without error.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from cloudevents.core.v1.event import CloudEvent
from opentelemetry import trace

from events import binding, lifecycle, logs, metrics, tracing
from events.runtime.function import Runtime, Subscription

Emit = Callable[[CloudEvent], Awaitable[None]]


def continue_trace(event: CloudEvent) -> CloudEvent:
    """The outgoing event carries the current span as its traceparent (one job, one trace)."""
    traceparent = tracing.current_traceparent()
    if not traceparent:
        return event
    return CloudEvent({**event.get_attributes(), binding.TRACEPARENT: traceparent}, event.get_data())


def event_fields(event: CloudEvent) -> dict[str, str | None]:
    """The fields a log line about `event` carries (`extra=`): its id, its job and its trace."""
    return {
        "event_id": event.get_id(),
        "job_id": lifecycle.job_of(event),
        "trace_id": tracing.trace_id(binding.traceparent_of(event)),
    }


class Telemetry:
    """The telemetry of one function's hops (`function` names its spans and metrics)."""

    def __init__(self, function: str) -> None:
        self.function = function
        self._tracer = tracing.tracer(f"klipnote.{function}")

    async def around(
        self, subscription: Subscription, event: CloudEvent, emit: Emit, runtime: Runtime
    ) -> None:
        """Run `event` through `subscription`'s handler inside the hop's span and log context,
        passing each event it emits (trace continued) to `emit`; then record the hop. Raises what
        the handler (or `emit`) raises, after recording the hop as an error."""
        parent = tracing.context_from(binding.traceparent_of(event))
        attributes = {
            "messaging.system": "nats",
            "messaging.consumer.group.name": subscription.consumer.durable,
            "cloudevents.event_id": event.get_id(),
            "cloudevents.event_type": event.get_type(),
        }
        job_id = lifecycle.job_of(event)
        if job_id:
            attributes[tracing.JOB_ID] = job_id
        started, ok = time.perf_counter(), False
        try:
            with (
                logs.job(job_id),
                self._tracer.start_as_current_span(
                    f"{self.function} {event.get_type()}",
                    context=parent,
                    kind=trace.SpanKind.CONSUMER,
                    attributes=attributes,
                ),
            ):
                async for outgoing in subscription.handle(event):
                    outgoing = continue_trace(outgoing)
                    await emit(outgoing)
                    metrics.published(outgoing)
            ok = True
        finally:
            metrics.handled(self.function, event, time.perf_counter() - started, ok)
        if subscription.observe is not None:
            await subscription.observe(event, runtime)
