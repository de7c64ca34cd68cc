"""What a function is: handlers from one CloudEvent to zero or more CloudEvents, lifecycle hooks
and a health report; and what a host hands it (`Runtime`). A handler knows nothing about the host
(JetStream, HTTP, or the test harness) that runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from cloudevents.core.v1.event import CloudEvent
from fastapi import FastAPI
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, Header
from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from events import binding, bus, lifecycle, reader
from events.catalogue import Consumer, Stream
from events.errors import CodedError
from events.settings import Settings

Handler = Callable[[CloudEvent], AsyncIterator[CloudEvent]]


class PermanentError(CodedError):
    """Retrying cannot help (the event itself is wrong): the host dead-letters it at once."""


class TransientError(Exception):
    """Worth another try later (a store that is down, segments not all there yet)."""


class RetryLater(TransientError):
    """Try again after `delay_s` exactly (a handler with its own schedule, e.g. webhook delivery
    honouring Retry-After), rather than after the host's backoff; the host's delivery limit does
    not apply: the handler decides when to give up (PermanentError)."""

    def __init__(self, message: str, delay_s: float) -> None:
        super().__init__(message)
        self.delay_s = delay_s


# Which delivery of its message the running handler is on (1 for the first): a handler with its
# own retry schedule reads it, the host sets it.
DELIVERY_ATTEMPT: ContextVar[int] = ContextVar("delivery_attempt", default=1)

# How the running handler tells its host it is making progress (the host sets it per message;
# outside a host it does nothing). See `alive`.
ACTIVITY: ContextVar[Callable[[], None]] = ContextVar("activity", default=lambda: None)


def alive() -> None:
    """Tell the host that the handler is making progress. The host keeps a message in progress
    (heartbeats) only while its handler publishes events or calls this within STALL_TIMEOUT_S, so
    a handler that hangs stops being kept alive and its message comes back. Thread-safe."""
    ACTIVITY.get()()


@dataclass(frozen=True)
class Health:
    """A function's own readiness, as its readiness probe serves it.

    `ready`: able to take work now (model loaded, dependencies reachable). `reason`: why not, in
    words for an operator (served as `problem`), None when ready. `details`: figures the probe
    shows as they are (e.g. a model function's `loads`, `load_seconds`, `jobs_handled`)."""

    ready: bool
    reason: str | None = None
    details: Mapping[str, str | int | float] = field(default_factory=dict)


class StreamPosition(NamedTuple):
    """Where a stream stands: when it was made, as the server reports it (RFC 3339 text; a
    stream deleted and made again under the same name has another), and the sequence of the
    last message it took (0: none yet)."""

    created: str
    last_sequence: int


class Runtime:
    """What a host hands a function at start: its settings, a publisher, and the reads of the bus
    a function may make (a key-value bucket, a subject from its start, a subject's last event,
    the subjects a stream holds). No function gets the JetStream context itself: what it needs
    from the bus is a method here. Every read raises RuntimeError when the runtime was built
    without JetStream (the test harness's default)."""

    def __init__(
        self, settings: Settings, publisher: bus.Publisher, js: JetStreamContext | None = None
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self._js = js

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("this runtime has no JetStream connection (a harness without one)")
        return self._js

    async def key_value(self, bucket: str) -> KeyValue:
        """The key-value bucket `bucket` (provisioning made it). Raises nats-py's
        `BucketNotFoundError` when it does not exist."""
        return await self._jetstream().key_value(bucket)

    def reading(
        self,
        subject: str,
        deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
        *,
        headers_only: bool = False,
        start_sequence: int | None = None,
    ) -> AbstractAsyncContextManager[reader.SubjectReader]:
        """Read `subject` from its start, or as `deliver_policy` says (see
        `events.reader.reading`). Raises nats-py's `NotFoundError` when no stream holds the
        subject."""
        return reader.reading(
            self._jetstream(),
            subject,
            deliver_policy,
            headers_only=headers_only,
            start_sequence=start_sequence,
        )

    async def stream_position(self, stream: str) -> StreamPosition:
        """Where stream `stream` stands (one `STREAM.INFO` request). Raises nats-py's
        `NotFoundError` when there is no such stream."""
        info = await self._jetstream().stream_info(stream)
        return StreamPosition(str(info.created), info.state.last_seq)

    async def update_key(
        self, bucket: str, key: str, value: bytes, last: int, headers: Mapping[str, str]
    ) -> int:
        """Write `key` of KV bucket `bucket` if its last revision is `last` (0: the key has no
        message at all, not even a delete marker), with `headers` on the message (JetStream KV
        keeps them; the job index reads them). The new revision. Raises nats-py's
        `KeyWrongLastSequenceError` when another write came first (what `KeyValue.update` raises)."""
        js = self._jetstream()
        try:
            ack = await js.publish(
                f"$KV.{bucket}.{key}",
                value,
                headers={**headers, Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(last)},
            )
        except APIError as error:
            # 10071 JSStreamWrongLastSequenceErrF, 10164 its constant form (as nats-py's KV).
            if error.err_code in (10071, 10164):
                raise KeyWrongLastSequenceError(description=error.description) from error
            raise
        return ack.seq

    async def last_event(self, stream: Stream, subject: str) -> CloudEvent | None:
        """The last event on `subject` in `stream`, None when there is none. Raises
        `binding.MalformedEvent` when the message there is no CloudEvent."""
        try:
            raw = await self._jetstream().get_last_msg(stream.name, subject)
        except NotFoundError:
            return None
        return binding.decode(raw.headers, raw.data or b"")

    async def purge(self, stream: Stream, subject: str) -> None:
        """Remove every message on `subject` (wildcards allowed) from `stream` (JetStream's purge
        with a subject filter; ingest deleting a job's events). Raises nats-py's `NotFoundError`
        when the stream does not exist."""
        await self._jetstream().purge_stream(stream.name, subject=subject)


Decoder = Callable[[dict[str, str] | None, bytes], CloudEvent]
# What giving up on an event means beyond its dead letter: (event, reason, function name) to the
# events to publish.
GiveUp = Callable[[CloudEvent, str, str], list[CloudEvent]]
# Telemetry of its own that a subscription asks its host to take after each event it handled
# without error (the host awaits it after the hop's metrics).
Observer = Callable[[CloudEvent, Runtime], Awaitable[None]]


@dataclass
class Subscription:
    consumer: Consumer
    handle: Handler
    # How a message becomes an event: the CloudEvents NATS binding, unless the subject carries
    # another format (MinIO's S3 records), which its decoder wraps in a CloudEvent.
    decode: Decoder = binding.decode
    # The domain consequence of giving up on an event: by default the lifecycle's rule (a job
    # step given up on fails its job); the host only publishes what it returns.
    gave_up: GiveUp = lifecycle.gave_up
    # E.g. ingest's projector: `metrics.job_ended`, a job's duration once its end is projected.
    observe: Observer | None = None

    def accepts(self, subject: str) -> bool:
        """Whether `subject` is one this subscription's consumer reads (NATS wildcards)."""
        filters = (self.consumer.filter_subject, *self.consumer.extra_filters)
        return any(bus.subject_matches(pattern, subject) for pattern in filters)


class Function(Protocol):
    name: str

    @property
    def subscriptions(self) -> list[Subscription]: ...

    async def start(self, runtime: Runtime) -> None:
        """Load models, open clients. The host reports ready only after this returns."""

    async def stop(self) -> None:
        """Close what start opened."""

    def health(self) -> Health:
        """Whether the function can take work now, why not, and what it reports. Called at any
        time, before `start` too, and often (each fetch): cheap, and never blocking."""

    def app(self) -> FastAPI | None:
        """Extra HTTP routes served beside the health endpoints (ingest's API), or None."""
