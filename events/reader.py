"""Reading a subject of a stream from its start until a condition: one ephemeral pull consumer
per read, deleted when the read is over (and dropped by the server `INACTIVE_S` after its last
fetch should the delete not get through).

The job events API (SSE), optimize (a run's segments) and the tests all read this way. A pull
consumer with no acks delivers in stream order and never skips a message: a message that reaches
the subscription after a fetch gave up waits in its queue for the next fetch.

Why not nats-py's ordered (push) consumer: it is created on `$JS.API.CONSUMER.CREATE.<stream>`
with its name in the body, and the server updates an existing consumer named there, so the right
to read a stream would be the right to reconfigure every durable on it (the other functions'
queues). This consumer is created on `...CREATE.<stream>.<name>`, a subject NATS permissions can
allow for random names and deny for the durables' (infra/nats_permissions.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

# Seconds the server keeps a reader's consumer without a fetch: longer than any pause of a reader
# between fetches (a caller's `after_subscribing`, a handler between two segments).
INACTIVE_S = 300.0


class SubjectReader:
    """The messages of one subscription, one at a time (see `reading`)."""

    def __init__(self, subscription: JetStreamContext.PullSubscription) -> None:
        self._sub = subscription

    async def next(self, wait_s: float) -> Msg | None:
        """The next message, or None when none came within `wait_s` seconds (the caller decides
        whether to keep waiting: a keep-alive, a deadline)."""
        try:
            (msg,) = await self._sub.fetch(1, timeout=max(wait_s, 0.01))
        except (TimeoutError, nats.errors.TimeoutError):
            return None
        return msg


@contextlib.asynccontextmanager
async def reading(
    js: JetStreamContext, subject: str, deliver_policy: DeliverPolicy = DeliverPolicy.ALL
) -> AsyncIterator[SubjectReader]:
    """An ephemeral pull consumer on `subject` for the duration of the block. Raises nats-py's
    `NotFoundError` when no stream holds the subject."""
    stream = await js.find_stream_name_by_subject(subject)
    name = f"read-{uuid.uuid4().hex}"  # never a durable's name (permissions deny those)
    config = ConsumerConfig(
        name=name,
        # A list of filters keeps the filter out of the create subject (`...CREATE.<stream>.<name>`):
        # one permission covers every subject read.
        filter_subjects=[subject],
        deliver_policy=deliver_policy,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=INACTIVE_S,
        mem_storage=True,
        num_replicas=1,
    )
    await js.add_consumer(stream, config)
    try:
        sub = await js.pull_subscribe_bind(name=name, stream=stream)
        try:
            yield SubjectReader(sub)
        finally:
            await sub.unsubscribe()
    finally:
        # Not left for INACTIVE_S: a client opening and closing streams would pile them up.
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, name)


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
