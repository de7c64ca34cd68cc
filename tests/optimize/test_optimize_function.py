# ruff: noqa: RUF001 (Chinese punctuation in these strings is part of the input under test)
"""The optimize function on real servers: a run's segments assembled from the SEGMENTS stream
(only that run's, a gap failing the job with a clear code), the requested formats written to
the results bucket, bad input through the running stack, and real transcripts from the
whisperx function on the shared clips, with SRT and VTT read back by an independent parser."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import jiwer
import pysubs2
import pytest
from cloudevents.core.v1.event import CloudEvent
from nats.js import JetStreamContext

from events import binding, catalogue, storage
from events.bus import Publisher
from events.harness import Harness
from events.models import (
    OutputFormat,
    SegmentTranscribed,
    TranscriptionCompleted,
    TranscriptionFailed,
    TranscriptionTranscribed,
)
from events.runtime.function import Runtime
from functions.optimize.function import Optimize
from functions.optimize.rules import SegmentRules
from infra.embedded.stack import EmbeddedStack
from tests.support.jobs import submit, wait_for_job_end, wait_for_state
from tests.support.optimize_samples import segment
from tests.support.paths import AUDIO, reference
from tests.support.quality import wer

# 10,000+ characters with no sentence repeated (a repeated one would be a loop)
LONG_TEXT = " ".join(f"This is sentence number {index} of one very long segment." for index in range(220))


def new_job() -> str:
    return uuid.uuid4().hex


async def publish_segments(publisher: Publisher, segments: list[SegmentTranscribed]) -> None:
    for item in segments:
        await publisher.publish(
            binding.new_event(
                catalogue.SEGMENT,
                item,
                function="test",
                subject=item.job_id,
                event_id=f"{item.job_id}:{item.run_id}:{item.sequence}",
            )
        )


def transcribed(
    job_id: str, run_id: str, count: int, audio_seconds: float, formats: list[OutputFormat] | None = None
) -> TranscriptionTranscribed:
    extra = {"formats": formats} if formats is not None else {}
    return TranscriptionTranscribed(
        job_id=job_id,
        run_id=run_id,
        model="whisperx",
        language="en",
        segment_count=count,
        audio_seconds=audio_seconds,
        **extra,
    )


@pytest.fixture(scope="session")
async def optimize(stack: EmbeddedStack, js: JetStreamContext) -> AsyncIterator[Harness]:
    """The function in this process (in the test harness: no host), against the stack's servers,
    with a short segment wait so the gap test takes half a second instead of thirty."""
    settings = stack.settings.model_copy(update={"optimize_segment_wait_s": 0.5})
    async with Harness(Optimize(settings), runtime=Runtime(settings, Publisher(js, settings), js)) as harness:
        yield harness


async def handle(harness: Harness, done: TranscriptionTranscribed) -> list[CloudEvent]:
    """The events the function yields for `done`; raises what its handler raised."""
    event = binding.new_event(
        catalogue.TRANSCRIBED, done, function="test", subject=done.job_id, event_id=f"{done.run_id}:done"
    )
    outcome = await harness.run(event)
    if outcome.error is not None:
        raise outcome.error
    return outcome.events


def fetch(stack: EmbeddedStack, bucket: str, key: str) -> bytes:
    response = storage.client(stack.settings).get_object(bucket, key)
    try:
        return bytes(response.read())
    finally:
        response.close()
        response.release_conn()


async def test_only_the_runs_own_segments_are_assembled(
    stack: EmbeddedStack, js: JetStreamContext, optimize: Harness
) -> None:
    job = new_job()
    publisher = Publisher(js, stack.settings)
    # an earlier run of the same job (redelivered after a crash) left its own segments behind
    await publish_segments(publisher, [segment(0, 0, 2, "stale words.", run_id="old", job_id=job)])
    await publish_segments(
        publisher,
        [
            segment(1, 2, 4, "second.", run_id="new", job_id=job),
            segment(0, 0, 2, "First.", run_id="new", job_id=job),
        ],
    )

    replies = await handle(optimize, transcribed(job, "new", 2, 4.0))

    assert [reply.get_type() for reply in replies] == [catalogue.COMPLETED.type]
    completed = binding.parse_data(replies[0], TranscriptionCompleted)
    document = json.loads(fetch(stack, completed.results["json"].bucket, completed.results["json"].key))
    assert [cue["text"] for cue in document["cues"]] == ["First.", "second."]
    assert completed.stats["segments"] == 2
    assert (document["model"], document["language"], document["stats"]["segments"]) == ("whisperx", "en", 2)
    assert set(completed.results) == {"json", "srt", "vtt", "txt"}


async def test_a_missing_segment_fails_the_job_with_a_clear_code(
    stack: EmbeddedStack, js: JetStreamContext, optimize: Harness
) -> None:
    job = new_job()
    await publish_segments(
        Publisher(js, stack.settings),
        [segment(0, 0, 2, "one.", job_id=job), segment(2, 4, 6, "three.", job_id=job)],
    )

    replies = await handle(optimize, transcribed(job, "r1", 3, 6.0))

    assert [reply.get_type() for reply in replies] == [catalogue.FAILED.type]
    failed = binding.parse_data(replies[0], TranscriptionFailed)
    assert failed.code == "segments_incomplete"
    assert "missing sequence numbers [1]" in failed.message


class _WatchedJetStream:
    """The stream context with one addition: an event set once a subscription is open."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self.subscribed = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def pull_subscribe_bind(self, *args: Any, **kwargs: Any) -> Any:
        subscription = await self._js.pull_subscribe_bind(*args, **kwargs)
        self.subscribed.set()
        return subscription


async def test_a_segment_missing_when_the_run_ends_is_waited_for(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    """A gap is retried, not failed at once: a segment the stream holds only after optimize
    started reading (a publisher retrying it) still completes the job."""
    settings = stack.settings.model_copy(update={"optimize_segment_wait_s": 30.0})
    watched = _WatchedJetStream(js)
    harness = Harness(
        Optimize(settings),
        runtime=Runtime(settings, Publisher(js, settings), cast(JetStreamContext, watched)),
    )
    await harness.start()
    job = new_job()
    publisher = Publisher(js, stack.settings)
    await publish_segments(publisher, [segment(0, 0, 2, "Early.", job_id=job)])

    handling = asyncio.create_task(handle(harness, transcribed(job, "r1", 2, 4.0)))
    await asyncio.wait_for(watched.subscribed.wait(), timeout=30)
    assert not handling.done()
    await publish_segments(publisher, [segment(1, 2, 4, "Late.", job_id=job)])
    replies = await asyncio.wait_for(handling, timeout=30)
    await harness.stop()

    assert [reply.get_type() for reply in replies] == [catalogue.COMPLETED.type]
    completed = binding.parse_data(replies[0], TranscriptionCompleted)
    document = json.loads(fetch(stack, completed.results["json"].bucket, completed.results["json"].key))
    assert [cue["text"] for cue in document["cues"]] == ["Early.", "Late."]


async def test_the_requested_formats_are_the_ones_written(
    stack: EmbeddedStack, js: JetStreamContext, optimize: Harness
) -> None:
    job = new_job()
    await publish_segments(Publisher(js, stack.settings), [segment(0, 0, 2, "Only two formats.", job_id=job)])

    replies = await handle(optimize, transcribed(job, "r1", 1, 2.0, formats=["srt", "txt"]))

    completed = binding.parse_data(replies[0], TranscriptionCompleted)
    assert set(completed.results) == {"srt", "txt"}
    assert (
        fetch(stack, completed.results["txt"].bucket, completed.results["txt"].key) == b"Only two formats.\n"
    )


async def test_an_empty_transcript_completes_with_valid_empty_files(
    stack: EmbeddedStack, optimize: Harness
) -> None:
    job = new_job()
    replies = await handle(optimize, transcribed(job, "r1", 0, 5.0))

    completed = binding.parse_data(replies[0], TranscriptionCompleted)
    files = {fmt: fetch(stack, ref.bucket, ref.key) for fmt, ref in completed.results.items()}
    assert json.loads(files["json"])["cues"] == []
    assert len(pysubs2.SSAFile.from_string(files["srt"].decode(), format_="srt")) == 0
    assert files["vtt"].startswith(b"WEBVTT")
    assert files["txt"] == b""


async def test_bad_input_through_the_running_stack_still_gives_valid_files(
    stack: EmbeddedStack, js: JetStreamContext
) -> None:
    """Published as another system would: segments, then `transcribed`, and the stack's own
    optimize process does the rest."""
    job = new_job()
    words = " ".join(f"word{index}" for index in range(90))
    segments = [
        segment(0, 0.0, 40.0, words, job_id=job),  # 40 s, no punctuation
        segment(1, math.nan, -3.0, "Impossible times here.", job_id=job),
        segment(3, 38.0, 45.0, "Overlapping and out of order.", job_id=job),
        segment(2, 50.0, 850.0, LONG_TEXT, job_id=job),  # 10,000+ characters at 15 per second
        segment(4, 851.0, 860.0, "混合 scripts 在一起，我們說 English too。", language="zh", job_id=job),
        segment(5, 860.0, 880.0, "谢谢" * 40, language="zh", job_id=job),
        segment(6, 880.0, 885.0, "Thanks for watching!", job_id=job),
    ]
    await publish_segments(Publisher(js, stack.settings), segments)
    done = transcribed(job, "r1", len(segments), 880.0)
    publisher = Publisher(js, stack.settings)
    await publisher.publish(
        binding.new_event(
            catalogue.TRANSCRIBED, done, function="test", subject=job, event_id=f"{job}:transcribed"
        )
    )

    end = await wait_for_job_end(js, job, timeout=60)
    assert end.get_type() == catalogue.COMPLETED.type, end.get_data()
    completed = binding.parse_data(end, TranscriptionCompleted)
    files = {fmt: fetch(stack, ref.bucket, ref.key).decode() for fmt, ref in completed.results.items()}
    srt_cues = pysubs2.SSAFile.from_string(files["srt"], format_="srt")
    vtt_cues = pysubs2.SSAFile.from_string(files["vtt"], format_="vtt")
    document = json.loads(files["json"])
    assert len(srt_cues) == len(vtt_cues) == len(document["cues"]) > 100
    assert [(e.start, e.end) for e in srt_cues] == [(e.start, e.end) for e in vtt_cues]
    for before, after in itertools.pairwise(srt_cues):
        assert 0 <= before.start < before.end <= after.start
    assert srt_cues[-1].end <= 880_000
    assert "我们说" in files["txt"]  # Traditional → Simplified for the Mandarin segment
    removed = completed.stats["removed"]
    assert removed["ngram_loops"] >= 1 and removed["hallucinations"] == 1
    assert completed.stats["rules"]["duration_and_length"] >= 0.95


# -- real transcripts from the model function ------------------------------------------------


def cues_read_back(srt_text: str, vtt_text: str) -> list[tuple[int, int, str]]:
    """The cues of both files as pysubs2 reads them; both files must agree."""
    srt_cues = [(e.start, e.end, e.plaintext) for e in pysubs2.SSAFile.from_string(srt_text, format_="srt")]
    vtt_cues = [(e.start, e.end, e.plaintext) for e in pysubs2.SSAFile.from_string(vtt_text, format_="vtt")]
    assert srt_cues == vtt_cues
    return srt_cues


async def transcript_files(api: httpx.AsyncClient, js: JetStreamContext, job_id: str) -> dict[str, str]:
    end = await wait_for_job_end(js, job_id)
    assert end.get_type() == catalogue.COMPLETED.type, end.get_data()
    await wait_for_state(js, job_id, {"completed"})
    responses = await asyncio.gather(
        *(api.get(f"/v1/jobs/{job_id}/transcript.{fmt}") for fmt in ("json", "srt", "vtt", "txt"))
    )
    return {
        fmt: response.text for fmt, response in zip(("json", "srt", "vtt", "txt"), responses, strict=True)
    }


@pytest.mark.parametrize("clip", ["jfk.flac", "librispeech-1995-1837-0001.wav"])
async def test_real_english_clips_become_subtitles_that_meet_the_rules(
    clip: str, api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    job_id = await submit(api, AUDIO / clip, language="en")
    files = await transcript_files(api, js, job_id)

    cues = cues_read_back(files["srt"], files["vtt"])
    document = json.loads(files["json"])
    assert [text for _, _, text in cues] == [cue["text"] for cue in document["cues"]]
    rules = SegmentRules.defaults()
    for start, end, text in cues:
        assert rules.text_fits(text), text
        assert rules.duration_fits(start / 1000, end / 1000), (start, end, text)
    assert document["stats"]["rules"]["duration_and_length"] == 1.0
    assert (document["model"], document["language"]) == ("whisperx", "en")
    assert all(cue.get("words") for cue in document["cues"])  # the model's word timestamps
    assert wer(reference(clip.rsplit(".", 1)[0]), files["txt"]) <= 0.10, files["txt"]


async def test_a_real_mandarin_clip_comes_out_in_simplified_characters(
    api: httpx.AsyncClient, js: JetStreamContext
) -> None:
    job_id = await submit(api, AUDIO / "aishell-BAC009S0724W0121.wav", language="zh")
    files = await transcript_files(api, js, job_id)

    cues = cues_read_back(files["srt"], files["vtt"])
    text = "".join(files["txt"].split())
    # whisper-base writes this clip in Traditional characters (廣州市房地產...)
    assert not set(text) & set("廣產協會")
    assert jiwer.cer(reference("aishell-BAC009S0724W0121"), _hanzi(text)) <= 0.30, text
    document = json.loads(files["json"])
    assert document["stats"]["simplified_characters"] >= 1
    for _, _, cue_text in cues:
        assert all(len(line) <= 16 for line in cue_text.split("\n")), cue_text


def _hanzi(text: str) -> str:
    return "".join(char for char in text if "\u4e00" <= char <= "\u9fff")
