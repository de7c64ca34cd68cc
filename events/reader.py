"""Reading a subject of a stream from its start until a condition: one ordered (ephemeral)
consumer per read, always removed afterwards.

The job events API (SSE), optimize (a run's segments) and the tests all read this way; an ordered
consumer is nats-py's flow-controlled, gap-detecting push consumer, so a read never skips a message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy


class SubjectReader:
    """The messages of one subscription, one at a time (see `reading`)."""

    def __init__(self, subscription: object) -> None:
        self._sub = subscription

    async def next(self, wait_s: float) -> Msg | None:
        """The next message, or None when none came within `wait_s` seconds (the caller decides
        whether to keep waiting: a keep-alive, a deadline)."""
        try:
            msg: Msg = await self._sub.next_msg(timeout=wait_s)  # type: ignore[attr-defined]
        except TimeoutError:
            return None
        return msg


@contextlib.asynccontextmanager
async def reading(
    js: JetStreamContext, subject: str, deliver_policy: DeliverPolicy = DeliverPolicy.ALL
) -> AsyncIterator[SubjectReader]:
    """An ordered consumer on `subject` for the duration of the block. Raises nats-py's
    `NotFoundError` when no stream holds the subject."""
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=deliver_policy)
    try:
        yield SubjectReader(sub)
    finally:
        await sub.unsubscribe()


async def read_until(
    js: JetStreamContext,
    subject: str,
    done: Callable[[Msg], bool],
    timeout: float | None,  # noqa: ASYNC109 (a bound on the whole read, applied with asyncio.timeout)
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
    *,
    per_message: float | None = None,
    after_subscribing: Callable[[], Awaitable[object]] | None = None,
) -> list[Msg]:
    """The messages on `subject` up to and including the first that `done` accepts. `timeout`
    bounds the whole read in seconds (None: unbounded), `per_message` the wait for each message
    (by default `timeout`); `after_subscribing` runs once the subscription exists (to publish what
    a `DeliverPolicy.NEW` read is to see). Raises `TimeoutError` when either bound passes."""
    wait = per_message if per_message is not None else timeout
    if wait is None:
        raise ValueError("a read with no bound at all")
    messages: list[Msg] = []
    async with reading(js, subject, deliver_policy) as reader:
        if after_subscribing is not None:
            await after_subscribing()
        async with asyncio.timeout(timeout):
            while True:
                msg = await reader.next(wait)
                if msg is None:
                    raise TimeoutError(f"no message on {subject} within {wait} s")
                messages.append(msg)
                if done(msg):
                    return messages
