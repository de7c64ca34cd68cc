"""The JetStream host against a real nats-server: malformed messages land in the DLQ with their
reason while the consumer keeps going; a consumer killed mid-message has the message
redelivered to the next one; heartbeats keep a long job from being redelivered meanwhile; a
message that kills its process on every delivery is dead-lettered with the reason once its
handler could have settled it, and the server's delivery count is bounded; a consumer with
concurrency 2 handles a second message while the first is stuck."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest
from cloudevents.core.v1.event import CloudEvent
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from events import binding, catalogue
from events.models import DeadLetter, ObjectRef, TranscriptionDispatched, TranscriptionQueued
from events.runtime import settlement
from events.runtime.function import PermanentError
from infra.embedded.stack import EmbeddedStack
from tests.support.handlers import Recorder, jetstream_host, make_consumer, running, valid_event
from tests.support.jobs import wait_for_job_end
from tests.support.paths import ROOT


async def test_malformed_messages_go_to_the_dlq_with_a_reason_and_the_consumer_keeps_going(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    settings = stack.settings
    consumer = await make_consumer(js, settings)
    recorder = Recorder(consumer)
    host = jetstream_host(recorder, settings)
    task = await running(host)
    subject = consumer.stream.subjects[0].replace(">", "in")
    structured = {"Content-Type": "application/cloudevents+json"}
    good = {
        "specversion": "1.0",
        "id": "x",
        "source": "/t",
        "type": catalogue.QUEUED.type,
        "data": {"job_id": "j", "model": "whisperx"},
    }
    malformed = [
        (structured, b"{not json", "not JSON"),
        (
            structured,
            json.dumps({k: v for k, v in good.items() if k != "id"}).encode(),
            "missing required CloudEvents attribute(s): id",
        ),
        (structured, json.dumps({**good, "specversion": "0.3"}).encode(), "specversion"),
        (structured, json.dumps({**good, "data": {"job_id": 1}}).encode(), "does not match its schema"),
        (structured, json.dumps({**good, "type": "com.example.unknown"}).encode(), "unknown event type"),
        ({"ce-id": "y", "ce-source": "/t", "ce-specversion": "1.0"}, b"{}", "attribute(s): type"),
    ]
    try:
        dlq = await js.subscribe(
            catalogue.dead_letter_subject(consumer.durable),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        for headers, body, _ in malformed:
            await js.publish(subject, body, headers=headers)
        first_good, second_good = valid_event("after-1"), valid_event("after-2")
        for event in (first_good, second_good):
            headers, body = binding.encode(event, "binary")
            await js.publish(subject, body, headers=headers)

        letters = []
        for _ in malformed:
            msg = await dlq.next_msg(timeout=10)
            letters.append(
                binding.parse_data(binding.decode(msg.headers, msg.data), catalogue.DEAD_LETTER.data)
            )
        for letter, (_, body, reason) in zip(letters, malformed, strict=True):
            assert reason in letter.reason
            assert letter.consumer == consumer.durable and letter.subject == subject
            assert letter.body == body.decode()  # the original is kept: nothing is lost

        # ... and the consumer went on to handle the valid events that came after them
        seen = [await asyncio.wait_for(recorder.seen.get(), 10) for _ in range(2)]
        assert [event_id for event_id, _ in seen] == [first_good.get_id(), second_good.get_id()]
        await dlq.unsubscribe()
    finally:
        host.process.stop()
        await task


async def test_a_consumer_killed_mid_message_has_it_redelivered_to_the_next(
    stack: EmbeddedStack, js: JetStreamContext, nc: NATS
) -> None:
    ack_wait = 2.0
    settings = stack.settings.model_copy(update={"ack_wait_s": ack_wait})
    consumer = await make_consumer(js, settings)
    announce = f"test.started.{uuid.uuid4().hex}"
    started = await nc.subscribe(announce)
    worker = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "support" / "consumer_process.py"),
            "--nats",
            settings.nats_url,
            "--stream",
            consumer.stream.name,
            "--durable",
            consumer.durable,
            "--subject",
            consumer.filter_subject,
            "--announce",
            announce,
            "--ack-wait",
            str(ack_wait),
        ],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    recorder = Recorder(consumer)
    host = jetstream_host(recorder, settings)
    try:
        event = valid_event("long-job")
        headers, body = binding.encode(event)
        await js.publish(consumer.stream.subjects[0].replace(">", "job"), body, headers=headers)
        taken = await started.next_msg(timeout=30)
        assert taken.data.decode() == event.get_id()

        # While the worker lives it heartbeats: a second consumer gets nothing for 2 x ack_wait.
        task = await running(host)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(recorder.seen.get(), timeout=2 * ack_wait)

        worker.send_signal(signal.SIGKILL)
        worker.wait()
        event_id, data = await asyncio.wait_for(recorder.seen.get(), timeout=5 * ack_wait)
        assert event_id == event.get_id() and data.job_id == "long-job"
        host.process.stop()
        await task
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


class GivingUp(Recorder):
    """A model function that cannot do this job: every dispatched job is a permanent error."""

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        raise PermanentError("media_cursed", "no retry can read this")
        yield


async def test_a_job_step_given_up_on_fails_its_job_with_the_reason(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    """A dead letter alone would leave the job waiting for a step that never comes."""
    consumer = await make_consumer(js, stack.settings)
    host = jetstream_host(GivingUp(consumer), stack.settings)
    task = await running(host)
    job_id = uuid.uuid4().hex
    work = TranscriptionDispatched(
        job_id=job_id, media=ObjectRef(bucket="uploads", key="cursed.wav"), model="whisperx"
    )
    headers, body = binding.encode(binding.new_event(catalogue.DISPATCHED, work, function="test"))
    try:
        await js.publish(consumer.stream.subjects[0].replace(">", "job"), body, headers=headers)
        failed = await wait_for_job_end(js, job_id, timeout=30)
    finally:
        host.process.stop()
        await task

    assert failed.get_type() == catalogue.FAILED.type
    assert failed.get_data()["code"] == "gave_up"
    assert "media_cursed: no retry can read this" in failed.get_data()["message"]


def _stuck_worker(
    settings_env: dict[str, str], consumer: catalogue.Consumer, announce: str, nats_url: str, ack_wait: float
) -> subprocess.Popen[bytes]:
    """tests/support/consumer_process.py: takes one message, announces it, hangs until killed."""
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "support" / "consumer_process.py"),
            *("--nats", nats_url, "--stream", consumer.stream.name, "--durable", consumer.durable),
            *("--subject", consumer.filter_subject, "--announce", announce, "--ack-wait", str(ack_wait)),
        ],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **settings_env},
    )


async def test_a_message_that_kills_its_process_every_time_is_dead_lettered_with_the_reason(
    stack: EmbeddedStack, js: JetStreamContext, nc: NATS
) -> None:
    """A poison message (it crashes or hangs whatever handles it) used to come back for ever; now
    the delivery after the last its handler could have settled is dead-lettered unhandled."""
    ack_wait, max_deliver = 1.0, 2
    settings = stack.settings.model_copy(update={"ack_wait_s": ack_wait, "max_deliver": max_deliver})
    consumer = await make_consumer(js, settings)
    info = await js.consumer_info(consumer.stream.name, consumer.durable)
    assert info.config.max_deliver == settlement.server_max_deliver(consumer, settings)
    assert info.config.max_deliver == max_deliver + settings.deliver_headroom  # bounded on the server
    announce = f"test.started.{uuid.uuid4().hex}"
    started = await nc.subscribe(announce)
    terminated = await nc.subscribe(
        f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{consumer.stream.name}.{consumer.durable}"
    )
    dlq = await js.subscribe(
        catalogue.dead_letter_subject(consumer.durable),
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    event = valid_event("poison")
    headers, body = binding.encode(event)
    await js.publish(consumer.stream.subjects[0].replace(">", "job"), body, headers=headers)
    env = {"MAX_DELIVER": str(max_deliver)}
    worker = None
    try:
        for _ in range(max_deliver):  # each delivery kills the process handling it
            worker = _stuck_worker(env, consumer, announce, settings.nats_url, ack_wait)
            taken = await started.next_msg(timeout=30)
            assert taken.data.decode() == event.get_id()
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        # The next process to get it does not hand it to its handler: it dead-letters it.
        worker = _stuck_worker(env, consumer, announce, settings.nats_url, ack_wait)
        letter_msg = await dlq.next_msg(timeout=30)
        letter = binding.parse_data(binding.decode(letter_msg.headers, letter_msg.data), DeadLetter)
        assert letter.deliveries == max_deliver + 1
        assert f"delivered {max_deliver + 1} times without being settled" in letter.reason
        assert "crashed or hung" in letter.reason
        assert json.loads(letter.body)["id"] == event.get_id()  # the original is kept
        assert started.pending_msgs == 0  # never handled again
        await terminated.next_msg(timeout=30)  # the server's word that it stopped its redelivery
        done = await js.consumer_info(consumer.stream.name, consumer.durable)
        assert done.num_ack_pending == 0 and done.num_pending == 0  # no slot held for ever
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait()
        await dlq.unsubscribe()


class Blocking(Recorder):
    """Records each event; the one for job `stuck` waits until `release` is set."""

    def __init__(self, consumer: catalogue.Consumer) -> None:
        super().__init__(consumer)
        self.stuck_started, self.release = asyncio.Event(), asyncio.Event()

    async def handle(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        if binding.parse_data(event, TranscriptionQueued).job_id == "stuck":
            self.stuck_started.set()
            await self.release.wait()  # a black-holed webhook host, say
        async for out in super().handle(event):
            yield out


async def test_a_stuck_message_does_not_hold_up_the_next_with_concurrency_2(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    consumer = dataclasses.replace(await make_consumer(js, stack.settings), concurrency=2)
    function = Blocking(consumer)
    host = jetstream_host(function, stack.settings)
    task = await running(host)
    subject = consumer.stream.subjects[0].replace(">", "job")
    try:
        for job_id in ("stuck", "next"):
            headers, body = binding.encode(valid_event(job_id))
            await js.publish(subject, body, headers=headers)
            if job_id == "stuck":
                await asyncio.wait_for(function.stuck_started.wait(), 10)
        # "next" is handled while "stuck" is still in hand ...
        _, handled = await asyncio.wait_for(function.seen.get(), 10)
        assert handled.job_id == "next" and not function.release.is_set()
        # ... and "stuck" is settled once it finishes: acked, nothing left pending.
        function.release.set()
        _, handled = await asyncio.wait_for(function.seen.get(), 10)
        assert handled.job_id == "stuck"
    finally:
        host.process.stop()
        await task
    info = await js.consumer_info(consumer.stream.name, consumer.durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0


def test_concurrency_comes_from_the_consumer_or_the_setting_it_names() -> None:
    from events.runtime.jetstream import concurrency_of
    from events.settings import Settings

    settings = Settings(webhook_concurrency=7)
    assert concurrency_of(catalogue.INGEST_WEBHOOKS, settings) == 7
    assert concurrency_of(catalogue.INGEST_ROUTER, settings) == settings.router_concurrency
    assert concurrency_of(catalogue.model_consumer("whisperx"), settings) == 1  # GPU: one at a time
    with pytest.raises(ValueError, match="concurrency"):
        concurrency_of(dataclasses.replace(catalogue.OPTIMIZE, concurrency=0), settings)


async def test_a_batch_by_job_is_handled_side_by_side_and_each_jobs_events_in_order(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    # The projector's and router's way (`Consumer.by_job`): one fetch of three events, two jobs.
    consumer = dataclasses.replace(await make_consumer(js, stack.settings), batch=16, by_job=True)
    prefix = consumer.stream.subjects[0].removesuffix(">")
    for job_id, model in (("stuck", "whisperx"), ("stuck", "belle2"), ("other", "whisperx")):
        event = binding.new_event(
            catalogue.QUEUED, TranscriptionQueued(job_id=job_id, model=model), function="test"
        )
        headers, body = binding.encode(event)
        await js.publish(f"{prefix}{job_id}", body, headers=headers)
    function = Blocking(consumer)
    host = jetstream_host(function, stack.settings)
    task = await running(host)
    try:
        await asyncio.wait_for(function.stuck_started.wait(), 10)
        # Another job's event is handled while the first job's is in hand, and the first job's
        # second event waits for its first.
        _, handled = await asyncio.wait_for(function.seen.get(), 10)
        assert (handled.job_id, function.seen.empty()) == ("other", True)
        function.release.set()
        after = [(await asyncio.wait_for(function.seen.get(), 10))[1] for _ in range(2)]
        in_order = [(queued.job_id, queued.model) for queued in after]
        assert in_order == [("stuck", "whisperx"), ("stuck", "belle2")]
    finally:
        host.process.stop()
        await task
    info = await js.consumer_info(consumer.stream.name, consumer.durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0
