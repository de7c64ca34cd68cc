"""What becomes of a message once its handler returned or raised: acked, retried after a delay,
or dead-lettered with a reason. The JetStream host applies it to the message; the test harness
reports it, so a unit test sees the same decision a host would make."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from events import binding
from events.catalogue import Consumer
from events.runtime.function import PermanentError, RetryLater
from events.settings import Settings

Action = Literal["ack", "retry", "dead_letter"]


@dataclass(frozen=True)
class Settlement:
    """`retry` carries `delay_s` (seconds before the next delivery), `dead_letter` its `reason`."""

    action: Action
    delay_s: float | None = None
    reason: str | None = None


def settle(error: BaseException | None, deliveries: int, settings: Settings) -> Settlement:
    """The settlement of a message on its `deliveries`-th delivery (1 for the first) whose handler
    raised `error` (None: it succeeded).

    A malformed event or a PermanentError is dead-lettered at once; RetryLater is retried after
    its own delay, however many deliveries came before; any other error is retried after
    RETRY_BACKOFF_S[deliveries - 1] (its last entry beyond), until MAX_DELIVER deliveries, then
    dead-lettered. A cancellation is not settled here (the host gives the message back)."""
    if error is None:
        return Settlement("ack")
    if isinstance(error, asyncio.CancelledError):
        raise ValueError("a cancelled handler is given back, not settled")
    if isinstance(error, binding.MalformedEvent):
        return Settlement("dead_letter", reason=str(error))
    if isinstance(error, PermanentError):
        return Settlement("dead_letter", reason=f"{error.code}: {error.message}")
    if isinstance(error, RetryLater):
        return Settlement("retry", delay_s=max(error.delay_s, 0.001))  # a delay of 0 would be ignored
    if deliveries >= settings.max_deliver:
        reason = f"gave up after {deliveries} deliveries: {type(error).__name__}: {error}"
        return Settlement("dead_letter", reason=reason)
    backoff = settings.retry_backoff_s
    return Settlement("retry", delay_s=backoff[min(deliveries - 1, len(backoff) - 1)] if backoff else 1.0)


def settled_deliveries(consumer: Consumer, settings: Settings) -> int:
    """The most deliveries of one message its handler can settle before it gives up (`settle`):
    MAX_DELIVER; for a consumer retrying on its own schedule (`Consumer.retry_schedule`, e.g.
    WEBHOOK_SCHEDULE_S), twice that schedule's length more: each attempt, and as many waits for
    what an attempt needs (a webhook waits for its job record)."""
    schedule = getattr(settings, consumer.retry_schedule) if consumer.retry_schedule else []
    return settings.max_deliver + 2 * len(schedule)


def server_max_deliver(consumer: Consumer, settings: Settings) -> int:
    """The consumer's delivery bound on the server (`max_deliver`): what its handler may settle
    plus DELIVER_HEADROOM, so the host always sees a message that crashed or hung its process on
    every delivery, and dead-letters it with the reason (`unsettled`), before the server stops
    delivering it without one."""
    return settled_deliveries(consumer, settings) + settings.deliver_headroom


def unsettled(consumer: Consumer, deliveries: int, settings: Settings) -> Settlement | None:
    """Before the handler runs: a message on its `deliveries`-th delivery, more than its handler
    could have settled (`settled_deliveries`), never got a settlement, because every delivery
    crashed or hung the process handling it (a poison message). It is dead-lettered unhandled,
    rather than given to a handler that would crash again. None: handle it."""
    limit = settled_deliveries(consumer, settings)
    if deliveries <= limit:
        return None
    reason = (
        f"delivered {deliveries} times without being settled (its handler settles at most {limit}): "
        "the process handling it crashed or hung"
    )
    return Settlement("dead_letter", reason=reason)
