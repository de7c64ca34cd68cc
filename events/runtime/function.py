"""What a function is: handlers from one CloudEvent to zero or more CloudEvents, plus lifecycle
hooks. A handler knows nothing about the host (JetStream or HTTP) that runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from cloudevents.core.v1.event import CloudEvent
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events import binding
from events.bus import Publisher
from events.catalogue import Consumer
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


Decoder = Callable[[dict[str, str] | None, bytes], CloudEvent]


@dataclass
class Subscription:
    consumer: Consumer
    handle: Handler
    # How a message becomes an event: the CloudEvents NATS binding, unless the subject carries
    # another format (MinIO's S3 records), which its decoder wraps in a CloudEvent.
    decode: Decoder = binding.decode


@dataclass
class Runtime:
    """What a host hands a function at start: settings and the bus."""

    settings: Settings
    nc: NATS
    js: JetStreamContext
    publisher: Publisher
    extras: dict[str, Any] = field(default_factory=dict)


class Function(Protocol):
    name: str

    @property
    def subscriptions(self) -> list[Subscription]: ...

    async def start(self, runtime: Runtime) -> None:
        """Load models, open clients. The host reports ready only after this returns."""

    async def stop(self) -> None:
        """Close what start opened."""

    def ready(self) -> bool:
        """Able to take work now (model loaded, dependencies reachable)."""

    def app(self) -> Any | None:
        """Extra HTTP routes (an ASGI app) served beside the health endpoints, or None."""
