"""Live text: a job's event stream (`GET /v1/jobs/{id}/events`) carries each segment's text as the
model makes it (SSE event `segment`), live and replayed, before the job's end; `klipnote watch`
shows it, a line per segment."""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from events import binding, catalogue, lifecycle, provision
from events.bus import Publisher
from events.models import (
    ObjectRef,
    SegmentTranscribed,
    TranscriptionCompleted,
    TranscriptionFailed,
    TranscriptionRequested,
)
from events.reader import read_until, reading
from events.runtime.function import Runtime
from events.settings import Settings
from functions.ingest.jobs import JobStore
from infra.cli.display import Display, clock, segment_line
from infra.client import JobEvent
from infra.embedded.stack import EmbeddedStack
from tests.deploy.test_deploy_nats import Violations, connect, secured_server
from tests.support.cli import klipnote
from tests.support.jobs import submit
from tests.support.media import long_english_clip

# -- the stream on the running stack ------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One SSE message: its `event:` name, `id:` and `data:` (parsed JSON)."""

    name: str
    id: str | None
    data: dict[str, Any]

    @property
    def segment(self) -> SegmentTranscribed:
        return SegmentTranscribed.model_validate(self.data["data"])


async def sse(api: httpx.AsyncClient, job_id: str) -> list[Message]:
    """The job's event stream read to its end, message by message."""
    messages: list[Message] = []
    fields: dict[str, str] = {}
    async with api.stream("GET", f"/v1/jobs/{job_id}/events", timeout=300) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif "data" in fields:
                messages.append(
                    Message(fields.get("event", ""), fields.get("id"), json.loads(fields["data"]))
                )
                fields = {}
    return messages


@dataclass(frozen=True)
class Followed:
    job_id: str
    live: list[Message]
    stored: list[SegmentTranscribed]  # the completed run's segments as optimize read them


@pytest.fixture(scope="module")
async def followed(
    stack: EmbeddedStack, js: JetStreamContext, tmp_path_factory: pytest.TempPathFactory
) -> Followed:
    """About 40 s of speech (several segments), followed from its submission to its end."""
    clip = long_english_clip(tmp_path_factory.mktemp("live") / "talk.wav", 30.0)
    headers = {"Authorization": f"Bearer {stack.settings.api_key}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=60) as api:
        job_id = await submit(api, clip, language="en")
        live = await sse(api, job_id)
    completed = live[-1].data["data"]
    transcribed = next(
        m.data["data"] for m in live if m.name == catalogue.TRANSCRIBED.type
    )  # the run that counts
    count = transcribed["segment_count"]
    seen: dict[int, SegmentTranscribed] = {}

    def done(msg: Any) -> bool:
        segment = binding.parse_data(binding.decode(msg.headers, msg.data), SegmentTranscribed)
        if segment.run_id == completed["run_id"]:
            seen[segment.sequence] = segment
        return len(seen) == count

    await read_until(js, catalogue.SEGMENT.subject(job_id), done, timeout=30)
    return Followed(job_id, live, [seen[n] for n in range(count)])


def final_segments(messages: list[Message]) -> list[SegmentTranscribed]:
    """The segments of the run the job's `completed` names, in the order the stream sent them."""
    run = messages[-1].data["data"]["run_id"]
    return [m.segment for m in messages if m.name == "segment" and m.segment.run_id == run]


async def test_the_stream_carries_each_segments_text_before_the_end(followed: Followed) -> None:
    live = followed.live
    names = [m.name for m in live]
    segments = final_segments(live)

    assert names[0] == catalogue.REQUESTED.type and names[-1] == catalogue.COMPLETED.type
    assert len(followed.stored) >= 3  # several segments, or the order below proves little
    assert [s.sequence for s in segments] == list(range(len(followed.stored)))
    assert [s.text for s in segments] == [s.text for s in followed.stored]  # what optimize received
    starts = [s.start for s in segments]
    assert starts == sorted(starts) and all(s.end >= s.start for s in segments)
    # Each a whole CloudEvent under its own SSE name, with the event's id as the SSE id.
    for message in live:
        if message.name == "segment":
            assert message.data["type"] == catalogue.SEGMENT.type
            assert (
                message.id
                == message.data["id"]
                == lifecycle.segment_id(message.segment.run_id, message.segment.sequence)
            )
            assert message.segment.job_id == followed.job_id
        else:
            assert message.name == message.data["type"]  # lifecycle events keep their type as name


async def test_a_client_that_comes_after_the_end_gets_the_same_text(
    followed: Followed, api: httpx.AsyncClient
) -> None:
    replay = await sse(api, followed.job_id)

    assert replay[-1].name == catalogue.COMPLETED.type
    assert [(s.run_id, s.sequence, s.text) for s in final_segments(replay)] == [
        (s.run_id, s.sequence, s.text) for s in followed.stored
    ]
    assert {m.id for m in replay} == {m.id for m in followed.live}


def test_watch_prints_the_text_a_line_per_segment(
    followed: Followed, stack: EmbeddedStack, tmp_path: Path
) -> None:
    run = klipnote("watch", followed.job_id, "--api", stack.api_url, cache=tmp_path, timeout=60)

    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    shown = [lines.index(segment_line(segment)) for segment in followed.stored]
    assert shown == sorted(shown)  # in order
    assert lines[0].startswith("requested ") and lines[-1].startswith("completed ")
    assert 0 < shown[0] and shown[-1] < len(lines) - 1
    assert re.match(r"^0:\d\d +\S", lines[shown[0]])  # its start time, then its text


# -- the merge, on events published here ------------------------------------------------------------------


async def job_store(js: JetStreamContext) -> tuple[JobStore, Publisher]:
    settings = Settings()
    publisher = Publisher(js, settings)
    runtime = Runtime(settings, publisher, js)
    return JobStore(await js.key_value(catalogue.JOBS_KV_BUCKET), runtime), publisher


def segment(job_id: str, run_id: str, sequence: int, text: str) -> SegmentTranscribed:
    return SegmentTranscribed(
        job_id=job_id,
        run_id=run_id,
        sequence=sequence,
        start=2.0 * sequence,
        end=2.0 * sequence + 1,
        text=text,
    )


async def test_every_runs_segments_come_before_the_end_and_bad_ones_are_skipped(js: JetStreamContext) -> None:
    """A run superseded (redelivered after a crash) and the run after it: both runs' segments
    come, each with its run_id, and the end comes after all of them though the JOBS reader has it
    first (a replay: both streams are full when the readers start)."""
    store, publisher = await job_store(js)
    job_id = uuid.uuid4().hex
    first, second = f"{job_id}-a", f"{job_id}-b"  # run ids: event ids, and JetStream dedupes by id
    published = [
        segment(job_id, first, 0, "first try"),
        segment(job_id, first, 1, "cut short"),
        *(segment(job_id, second, n, f"line {n}") for n in range(3)),
    ]
    for data in published[:2]:
        await publisher.publish(
            binding.new_event(
                catalogue.SEGMENT,
                data,
                function="test",
                event_id=lifecycle.segment_id(data.run_id, data.sequence),
            )
        )
    await js.publish(catalogue.SEGMENT.subject(job_id), b"no event at all")
    other = segment(uuid.uuid4().hex, "run-x", 0, "another job's")
    await js.publish(
        catalogue.SEGMENT.subject(job_id),
        binding.encode(binding.new_event(catalogue.SEGMENT, other, function="test"), "structured")[1],
    )
    for data in published[2:]:
        await publisher.publish(binding.new_event(catalogue.SEGMENT, data, function="test"))
    end = TranscriptionCompleted(
        job_id=job_id,
        run_id=second,
        model="whisperx",
        results={"txt": ObjectRef(bucket="results", key=f"{job_id}/transcript.txt")},
    )
    await publisher.publish(binding.new_event(catalogue.COMPLETED, end, function="test"))

    loop = asyncio.get_running_loop()
    got = [event async for event in store.events(job_id, 5, until=loop.time() + 60) if event is not None]

    assert [event.get_type() for event in got] == [catalogue.SEGMENT.type] * 5 + [catalogue.COMPLETED.type]
    assert [binding.parse_data(event, SegmentTranscribed) for event in got[:5]] == published


async def test_a_job_that_ended_long_ago_is_watched_to_the_end_its_record_tells(
    js: JetStreamContext, stack: EmbeddedStack, tmp_path: Path
) -> None:
    """Its events gone from the JOBS stream, the API ends the stream with `expired`: the client
    reads the record. Was: `expired` (no CloudEvent) was read as one, and watch failed with
    "the API sent an event this client cannot read"."""
    store, _ = await job_store(js)
    job_id = uuid.uuid4().hex
    request = TranscriptionRequested(job_id=job_id, media=ObjectRef(bucket="uploads", key=job_id))
    failed = TranscriptionFailed(job_id=job_id, code="media_unreadable", message="not audio", function="test")
    # Projected into the record, never published: as if the JOBS stream had aged them out.
    await store.project(binding.new_event(catalogue.REQUESTED, request, function="test"), job_id)
    await store.project(binding.new_event(catalogue.FAILED, failed, function="test"), job_id)

    run = klipnote("watch", job_id, "--api", stack.api_url, cache=tmp_path)

    assert run.returncode == 1, run.stderr
    assert run.stdout.splitlines() == ["failed       media_unreadable: not audio"]
    assert f"job {job_id} failed: media_unreadable: not audio" in run.stderr


async def test_ingest_reads_a_jobs_segments_as_its_own_nats_user(tmp_path: Path) -> None:
    """The event stream reads SEGMENTS as ingest's user of infra/nats/permissions.conf: its reader
    is created, counted (`stored`), fetched from and deleted without a permissions violation."""
    with secured_server(tmp_path / "nats") as (port, _):
        admin, model = await connect(port, "provision"), await connect(port, "whisperx")
        violations = Violations()
        ingest = await connect(port, "ingest", violations)
        try:
            await provision.jetstream(admin.jetstream(), Settings(), ["whisperx"])
            job_id = uuid.uuid4().hex
            data = segment(job_id, f"{job_id}-a", 0, "hello")
            await Publisher(model.jetstream(), Settings()).publish(
                binding.new_event(catalogue.SEGMENT, data, function="whisperx")
            )
            async with reading(ingest.jetstream(), catalogue.SEGMENT.subject(job_id)) as reader:
                assert await reader.stored() == 1
                msg = await reader.next(10)
            assert msg is not None
            assert binding.parse_data(binding.decode(msg.headers, msg.data), SegmentTranscribed) == data
        finally:
            for connection in (ingest, model, admin):
                await connection.close()
    assert violations.seen.empty()


# -- how the text is shown ---------------------------------------------------------------------------


def event(data: SegmentTranscribed) -> JobEvent:
    return JobEvent(lifecycle.segment_id(data.run_id, data.sequence), catalogue.SEGMENT, data)


def test_a_segment_is_a_line_with_its_start_time_and_escaped_text() -> None:
    out = io.StringIO()
    with Display(out) as display:  # a StringIO is no terminal: plain lines
        display.event(event(segment("j", "r1", 0, " Ask not \x1b[2J[red]what[/red]")))
        display.event(
            event(
                SegmentTranscribed(job_id="j", run_id="r1", sequence=1, start=3725.4, end=3726, text="late")
            )
        )
        display.event(event(segment("j", "r2", 0, "again")))

    assert out.getvalue().splitlines() == [
        "0:00         Ask not \\x1b[2J[red]what[/red]",
        "1:02:05      late",
        "restarted    the text starts over (another run of the model)",
        "0:00         again",
    ]
    assert clock(59.99) == "0:59" and clock(600) == "10:00"


def test_a_diarized_segment_shows_its_speaker_as_the_results_write_it() -> None:
    out = io.StringIO()
    with Display(out) as display:
        spoken = SegmentTranscribed(
            job_id="j", run_id="r1", sequence=0, start=1.0, end=2.0, text="Hello.", speaker="SPEAKER_01"
        )
        display.event(event(spoken))
    assert out.getvalue().splitlines() == ["0:01         [SPEAKER_01]: Hello."]


def test_a_narrow_terminal_wraps_the_text_and_keeps_every_word(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws (and wraps) only on a terminal
    monkeypatch.setenv("COLUMNS", "24")
    text = "and so my fellow Americans ask not what your country can do for you"
    out = io.StringIO()
    with Display(out) as display:
        assert display.live
        display.event(event(segment("j", "r1", 0, text)))

    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())  # the bar's drawing
    lines = plain.replace("\r", "\n").splitlines()
    assert " ".join(text.split()) in " ".join(plain.split())  # wrapped, never cut
    assert max(len(line) for line in lines) <= 24
