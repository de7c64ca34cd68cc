"""What a host decides for one event, without servers (the test harness): the events a handler
yields continue its trace; a permanent error is dead-lettered at once and, for a job's step,
fails the job with `gave_up`; other errors are retried on the backoff schedule until the
delivery limit; a handler's own schedule (RetryLater) wins over the backoff."""

from __future__ import annotations

from collections.abc import AsyncIterator

from cloudevents.core.v1.event import CloudEvent

from events import binding, catalogue
from events.harness import Harness
from events.models import ObjectRef, TranscriptionDispatched, TranscriptionQueued
from events.runtime.function import Health, PermanentError, RetryLater, Runtime, Subscription
from events.settings import Settings

CONSUMER = catalogue.model_consumer("whisperx")
SETTINGS = Settings(max_deliver=3, retry_backoff_s=[1.0, 5.0])


class Scripted:
    """A model function double whose handler does what the test says: yield a `queued` event,
    or raise the error it is given."""

    name = "scripted"

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.started = False

    @property
    def subscriptions(self) -> list[Subscription]:
        return [Subscription(CONSUMER, self.handle)]

    async def start(self, runtime: Runtime) -> None:
        self.started = True

    async def stop(self) -> None:
        return None

    def health(self) -> Health:
        return Health(ready=self.started)

    def app(self) -> None:
        return None

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        if self.error is not None:
            raise self.error
        job = binding.parse_data(event, TranscriptionDispatched)
        yield binding.new_event(
            catalogue.QUEUED, TranscriptionQueued(job_id=job.job_id, model="whisperx"), function=self.name
        )


def dispatched(job_id: str = "job-1") -> CloudEvent:
    work = TranscriptionDispatched(
        job_id=job_id, media=ObjectRef(bucket="uploads", key="a.wav"), model="whisperx"
    )
    return binding.new_event(catalogue.DISPATCHED, work, function="test", subject=job_id)


async def test_a_handled_event_is_acked_and_what_it_yields_continues_its_trace() -> None:
    async with Harness(Scripted(), SETTINGS) as harness:
        assert harness.function.health().ready
        outcome = await harness.run(dispatched())
    assert outcome.error is None and outcome.settlement.action == "ack" and outcome.gave_up == []
    assert [event.get_type() for event in outcome.events] == [catalogue.QUEUED.type]
    assert binding.traceparent_of(outcome.events[0])  # the hop's span, as a host publishes it


async def test_a_job_step_given_up_on_fails_its_job_with_the_reason() -> None:
    async with Harness(
        Scripted(PermanentError("media_cursed", "no retry can read this")), SETTINGS
    ) as harness:
        outcome = await harness.run(dispatched("job-7"))
    assert outcome.settlement.action == "dead_letter"
    assert outcome.settlement.reason == "media_cursed: no retry can read this"
    [failed] = outcome.gave_up
    assert failed.get_type() == catalogue.FAILED.type
    assert failed.get_data()["job_id"] == "job-7" and failed.get_data()["code"] == "gave_up"
    assert "media_cursed: no retry can read this" in failed.get_data()["message"]


async def test_an_event_that_is_no_job_step_is_dead_lettered_alone() -> None:
    queued = binding.new_event(
        catalogue.QUEUED, TranscriptionQueued(job_id="job-2", model="whisperx"), function="test"
    )
    async with Harness(Scripted(PermanentError("refused", "no")), SETTINGS) as harness:
        outcome = await harness.run(queued, subscription=harness.function.subscriptions[0])
    assert outcome.settlement.action == "dead_letter" and outcome.gave_up == []


async def test_other_errors_are_retried_on_the_backoff_until_the_delivery_limit() -> None:
    async with Harness(Scripted(ConnectionError("store away")), SETTINGS) as harness:
        first, later, last = [await harness.run(dispatched(), deliveries=n) for n in (1, 2, 3)]
    assert (first.settlement.action, first.settlement.delay_s) == ("retry", 1.0)
    assert (later.settlement.action, later.settlement.delay_s) == ("retry", 5.0)
    assert last.settlement.action == "dead_letter"
    assert last.settlement.reason == "gave up after 3 deliveries: ConnectionError: store away"
    assert [event.get_data()["code"] for event in last.gave_up] == ["gave_up"]


async def test_a_handlers_own_schedule_wins_over_the_backoff_and_the_limit() -> None:
    async with Harness(Scripted(RetryLater("busy", delay_s=42.0)), SETTINGS) as harness:
        outcome = await harness.run(dispatched(), deliveries=10)
    assert (outcome.settlement.action, outcome.settlement.delay_s) == ("retry", 42.0)
