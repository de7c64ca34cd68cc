"""Reading a subject of a stream from its start until a condition: one ephemeral pull consumer
per read, deleted when the read is over (and dropped by the server `INACTIVE_S` after its last
fetch should the delete not get through).

The job events API (SSE: a job's lifecycle events and its segments, two readers in one `Merge`),
optimize (a run's segments) and the tests all read this way. A pull
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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.tasks import cancel_and_wait

# Seconds the server keeps a reader's consumer without a fetch: longer than any pause of a reader
# between fetches (a caller's `after_subscribing`, a handler between two segments).
INACTIVE_S = 300.0
# Seconds one fetch of a `Merge` waits at most before it is asked anew (a bound on a request the
# server holds open, not on the caller's wait).
_FETCH_S = 5.0


class SubjectReader:
    """The messages of one subscription, one at a time (see `reading`)."""

    def __init__(
        self,
        subscription: JetStreamContext.PullSubscription,
        js: JetStreamContext,
        stream: str,
        subject: str,
        consumer: str | None = None,
    ) -> None:
        self._sub = subscription
        self._js = js
        self._stream = stream
        self._subject = subject
        self._consumer = consumer
        self.delivered = 0  # messages `next` has returned

    async def exists(self) -> bool:
        """Whether the server still has this reader's consumer (a fetch from one it dropped, say
        after a restart of an R1 server, just waits: a reader that follows a stream for ever asks
        this when a fetch brings nothing). Raises nats-py's errors when the server cannot answer."""
        if self._consumer is None:
            return True
        try:
            await self._js.consumer_info(self._stream, self._consumer)
        except nats.js.errors.NotFoundError:
            return False
        return True

    async def next(self, wait_s: float) -> Msg | None:
        """The next message, or None when none came within `wait_s` seconds (the caller decides
        whether to keep waiting: a keep-alive, a deadline)."""
        try:
            (msg,) = await self._sub.fetch(1, timeout=max(wait_s, 0.01))
        except (TimeoutError, nats.errors.TimeoutError):
            return None
        self.delivered += 1
        return msg

    async def next_batch(self, most: int, wait_s: float) -> list[Msg]:
        """Up to `most` messages at once, as soon as one is there (`fetch_available`), or none
        when none came within `wait_s` seconds. For a reader that follows a whole stream (the
        job index), where a round trip per message would not keep up."""
        messages = await fetch_available(self._sub, most, wait_s)
        self.delivered += len(messages)
        return messages

    async def stored(self) -> int:
        """How many messages on the subject the stream holds now (its per-subject counts, one
        `STREAM.INFO` request): a reader from the start (`DeliverPolicy.ALL`) that has
        `delivered` that many has read everything published before this call. Messages the
        stream dropped meanwhile (its age limit, a purge) make the count smaller, never larger."""
        info = await self._js.stream_info(self._stream, subjects_filter=self._subject)
        return sum((info.state.subjects or {}).values())


# Seconds a fetch for more messages after the first lingers when none are waiting (see
# `fetch_available`): the cost of a batch in a quiet moment.
_MORE_S = 0.005


async def fetch_available(sub: JetStreamContext.PullSubscription, most: int, wait_s: float) -> list[Msg]:
    """Up to `most` messages of a pull subscription, returned as soon as the first is there,
    with whatever else is waiting; none when none came within `wait_s` seconds.

    Not one `fetch(most)`: nats-py's fetch of a batch, once its no-wait probe found nothing,
    holds a lingering pull request open until the batch is full or its time is up, so a message
    that arrives meanwhile waits for the deadline (a second, at 8 jobs a second through the
    router). Here the first message is fetched alone (returned as it comes), then the rest with
    a no-wait probe and at most `_MORE_S` of lingering. A message that reaches the client after
    that stays in the subscription's queue for the next fetch, not lost."""
    try:
        messages = await sub.fetch(1, timeout=max(wait_s, 0.01))
    except (TimeoutError, nats.errors.TimeoutError):
        return []
    if most > 1:
        with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
            messages += await sub.fetch(most - 1, timeout=_MORE_S)
    return messages


class Merge:
    """The messages of several readers as they come, each reader's in its own order: one fetch
    in flight per reader, none lost when another's message comes first (a finished fetch waits
    for the next call). `close` cancels the fetches in flight."""

    def __init__(self, readers: Sequence[SubjectReader]) -> None:
        self._readers = list(readers)
        self._fetches: dict[SubjectReader, asyncio.Task[Msg | None]] = {}

    def holds(self, reader: SubjectReader) -> bool:
        """Whether a message of `reader` was fetched and not yet returned by `next`."""
        fetch = self._fetches.get(reader)
        if fetch is None or not fetch.done() or fetch.cancelled() or fetch.exception() is not None:
            return False
        return fetch.result() is not None

    async def next(
        self, wait_s: float, among: Sequence[SubjectReader] | None = None
    ) -> tuple[SubjectReader, Msg] | None:
        """The next message of any of `among` (default: every reader) and whose it is, or None
        when none came within `wait_s` seconds."""
        readers = self._readers if among is None else list(among)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            for reader in readers:  # a message already fetched first, in the readers' order
                fetch = self._fetches.get(reader)
                if fetch is not None and fetch.done():
                    del self._fetches[reader]
                    msg = fetch.result()
                    if msg is not None:
                        return reader, msg
            left = deadline - loop.time()
            if left <= 0:
                return None
            for reader in readers:
                if reader not in self._fetches:
                    # Kept when this call's wait ends first: the message it brings is the
                    # next call's, not lost.
                    self._fetches[reader] = asyncio.ensure_future(reader.next(min(left, _FETCH_S)))
            await asyncio.wait(
                [self._fetches[reader] for reader in readers],
                timeout=left,
                return_when=asyncio.FIRST_COMPLETED,
            )

    async def close(self) -> None:
        """Cancel the fetches in flight (before their readers' subscriptions end)."""
        fetches = list(self._fetches.values())
        self._fetches.clear()
        await cancel_and_wait(fetches)


@contextlib.asynccontextmanager
async def reading(
    js: JetStreamContext,
    subject: str,
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
    *,
    headers_only: bool = False,
    start_sequence: int | None = None,
) -> AsyncIterator[SubjectReader]:
    """An ephemeral pull consumer on `subject` for the duration of the block. `headers_only`:
    the messages come without their bodies (JetStream adds `Nats-Msg-Size`); `start_sequence`:
    the stream sequence to start from with `DeliverPolicy.BY_START_SEQUENCE`. Raises nats-py's
    `NotFoundError` when no stream holds the subject."""
    stream = await js.find_stream_name_by_subject(subject)
    name = f"read-{uuid.uuid4().hex}"  # never a durable's name (permissions deny those)
    config = ConsumerConfig(
        name=name,
        # A list of filters keeps the filter out of the create subject (`...CREATE.<stream>.<name>`):
        # one permission covers every subject read.
        filter_subjects=[subject],
        deliver_policy=deliver_policy,
        opt_start_seq=start_sequence,
        headers_only=headers_only or None,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=INACTIVE_S,
        mem_storage=True,
        num_replicas=1,
    )
    await js.add_consumer(stream, config)
    try:
        sub = await js.pull_subscribe_bind(name=name, stream=stream)
        try:
            yield SubjectReader(sub, js, stream, subject, name)
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
