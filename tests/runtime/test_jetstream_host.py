"""The JetStream host against a real nats-server: malformed messages land in the DLQ with their
reason while the consumer keeps going; a consumer killed mid-message has the message
redelivered to the next one; heartbeats keep a long job from being redelivered meanwhile."""

from __future__ import annotations

import asyncio
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
from events.models import ObjectRef, TranscriptionDispatched
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
