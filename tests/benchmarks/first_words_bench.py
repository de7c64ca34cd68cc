"""Warm means warm, and first words within seconds (issue 17), through the embedded stack (ingest,
optimize, whisperx on the bundled whisper-base), one stack per configuration, in one run:

  warm     the first job after the stack reports ready vs later jobs of the same file (`--seconds`
           of English speech): end to end (POST → `completed` seen) and the worker's own time
           (its first `progress` → `transcribed`, both stamped by the worker); target ≤ 1.1 times.
  first    a 10-minute file (`--long-seconds`), on the same warm stack: the worker's first
           `progress` (the job started) → its first `segments.<job>` event, both stamped by the
           worker (CloudEvents `time`); and POST → the first `event: segment` read from the job's
           SSE stream (`GET /v1/jobs/{id}/events`), as a client sees it. Once the first segment
           is out the job is canceled (the rest is throughput, measured by e2e_bench). Once with
           the language named (`en`), once detected (language identification listens to the
           whole file before the first window). Target: ≤ 3 s after the job started.

Configurations: `before` (MODEL_WARMUP=false, FIRST_WINDOW_S=0: every window AUDIO_WINDOW_S)
and `after` (the defaults: a warm-up before ready, a first window of FIRST_WINDOW_S). Media are
built at bench time from ../shared/audio (its twelve English clips, end to end and again, as FLAC).

    .venv/bin/python -m tests.benchmarks.first_words_bench [--configs before,after] [--seconds 60]
        [--jobs 3] [--long-seconds 600] [--first-window-s SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
from nats.aio.msg import Msg

from events import binding, catalogue
from events.settings import Settings
from infra.embedded.stack import EmbeddedStack, Ports
from infra.models import assemble_whisper_base
from tests.support.paths import AUDIO

CONFIGS = {
    "before": {"model_warmup": False, "first_window_s": 0.0},
    "after": {"model_warmup": True, "first_window_s": Settings().first_window_s},
}
ENDS = {kind.type for kind in (*catalogue.JOB_ENDS, catalogue.CANCELED)}


@dataclass
class Job:
    """What one job's events said, and when: `seen` on this process's clock (perf_counter),
    `stamped` the event's CloudEvents time (the worker's wall clock, seconds since the epoch)."""

    posted: float
    seen: dict[str, float] = field(default_factory=dict)
    stamped: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    first_sse_segment: float | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    first_segment: asyncio.Event = field(default_factory=asyncio.Event)


class Watcher:
    """One subscriber on `transcription.>` and `segments.>`: the first event of each type per job."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}

    async def on_event(self, msg: Msg) -> None:
        seen = time.perf_counter()
        event = binding.decode(msg.headers, msg.data)
        # A job's events may come before its POST has answered: kept until it registers.
        job = self.jobs.setdefault(event.get_subject() or "", Job(float("nan")))
        kind = event.get_type()
        keys = [kind]
        if kind == catalogue.PROGRESS.type:  # and each stage's first: fetching, decoding, transcribing
            keys.append(f"{kind}:{event.get_data()['stage']}")
        for key in keys:
            if key not in job.seen:
                job.seen[key] = seen
                job.stamped[key] = event.get_time().timestamp()  # type: ignore[union-attr]
        if kind == catalogue.TRANSCRIBED.type:
            job.timings = event.get_data()["timings"]
        if kind == catalogue.SEGMENT.type:
            job.first_segment.set()
        if kind in ENDS:
            job.ended.set()


async def first_sse_segment(api: httpx.AsyncClient, job_id: str, job: Job) -> None:
    """When the job's SSE stream first says `event: segment` (this process's clock)."""
    async with api.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
        async for line in response.aiter_lines():
            if line == "event: segment":
                job.first_sse_segment = time.perf_counter()
                return


async def run_job(
    api: httpx.AsyncClient, watcher: Watcher, media: Path, language: str | None, *, cancel_at_first: bool
) -> Job:
    """POST `media` and follow the job to its end (or, `cancel_at_first`, to its first segment,
    then cancel it and wait for the cancel)."""
    form = {"language": language} if language else {}
    with open(media, "rb") as body:
        posted = time.perf_counter()
        response = await api.post("/v1/jobs", files={"file": (media.name, body)}, data=form)
    response.raise_for_status()
    job_id = response.json()["id"]
    job = watcher.jobs.setdefault(job_id, Job(posted))
    job.posted = posted  # the POST's start, whether its events came first or not
    sse = asyncio.create_task(first_sse_segment(api, job_id, job))
    try:
        if cancel_at_first:
            async with asyncio.timeout(900):
                await job.first_segment.wait()
                await sse
            (await api.post(f"/v1/jobs/{job_id}/cancel")).raise_for_status()
        async with asyncio.timeout(1800):
            await job.ended.wait()
    finally:
        sse.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sse
    ended = [kind for kind in ENDS if kind in job.seen]
    assert ended in ([catalogue.COMPLETED.type], [catalogue.CANCELED.type]), (job_id, ended)
    return job


@dataclass
class Figures:
    ready_s: float
    warm: list[Job]
    first: dict[str, Job]


async def measure(
    stack: EmbeddedStack, clip: Path, long: Path, jobs: int
) -> tuple[list[Job], dict[str, Job]]:
    watcher = Watcher()
    nc = await nats.connect(stack.settings.nats_url)
    try:
        # Core subscriptions see every JetStream publish on these subjects as it is stored.
        await nc.subscribe("transcription.>", cb=watcher.on_event)
        await nc.subscribe(f"{catalogue.SEGMENT.subject_prefix}.>", cb=watcher.on_event)
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as api:
            warm = [await run_job(api, watcher, clip, "en", cancel_at_first=False) for _ in range(jobs)]
            first = {
                language or "detected": await run_job(api, watcher, long, language, cancel_at_first=True)
                for language in ("en", None)
            }
        return warm, first
    finally:
        await nc.close()


def english_speech(target: Path, seconds: float) -> Path:
    """Every English clip of ../shared/audio (and dev/), about 77 s of different speakers and
    sentences, end to end and again until `seconds`, as 16 kHz mono FLAC. Different sentences:
    a 30-s chunk of the same two clips repeated reads as a decoding loop to Whisper's rules
    (compression ratio), and its fallback would be measured instead of the model."""
    clips = [AUDIO / "jfk.flac", AUDIO / "librispeech-1995-1837-0001.wav", *sorted(AUDIO.glob("dev/en_*.*"))]
    clips = [clip for clip in clips if clip.suffix in (".wav", ".flac")]
    inputs: list[Path] = []
    total = 0.0
    while total < seconds:
        for clip in clips:
            inputs.append(clip)
            total += float(_duration(clip))
            if total >= seconds:
                break
    arguments = [argument for clip in inputs for argument in ("-i", str(clip))]
    # Each input to 16 kHz mono first: concat needs one format.
    graph = "".join(f"[{i}:a]aresample=16000,aformat=channel_layouts=mono[a{i}];" for i in range(len(inputs)))
    graph += "".join(f"[a{i}]" for i in range(len(inputs))) + f"concat=n={len(inputs)}:v=0:a=1[out]"
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *arguments, "-filter_complex", graph]
    subprocess.run([*command, "-map", "[out]", "-ar", "16000", "-ac", "1", str(target)], check=True)
    return target


def worker_seconds(job: Job) -> float:
    """The worker's own time for the job: its first progress to its `transcribed`."""
    return job.stamped[catalogue.TRANSCRIBED.type] - job.stamped[catalogue.PROGRESS.type]


def report(name: str, settings: Settings, figures: Figures, seconds: float, long_seconds: float) -> None:
    print(
        f"\n== {name}: MODEL_WARMUP={str(settings.model_warmup).lower()} "
        f"FIRST_WINDOW_S={settings.first_window_s:g} AUDIO_WINDOW_S={settings.audio_window_s:g} "
        f"BATCH_SIZE={settings.batch_size} (stack ready in {figures.ready_s:.2f} s)"
    )
    print(f"warm: {len(figures.warm)} jobs of the same {seconds:.1f}-s file, one after another")
    for index, job in enumerate(figures.warm, start=1):
        e2e = job.seen[catalogue.COMPLETED.type] - job.posted
        started = job.seen[catalogue.PROGRESS.type] - job.posted
        stages = ", ".join(f"{stage} {value:.2f}" for stage, value in job.timings.items())
        print(
            f"  job {index}: end to end {e2e:6.2f} s, POST → started {started:5.2f} s, "
            f"worker {worker_seconds(job):6.2f} s ({stages})"
        )
    first, later = figures.warm[0], figures.warm[1:]
    if later:
        e2e_later = statistics.median(j.seen[catalogue.COMPLETED.type] - j.posted for j in later)
        worker_later = statistics.median(worker_seconds(j) for j in later)
        e2e_first = first.seen[catalogue.COMPLETED.type] - first.posted
        print(
            f"  first / later (median of {len(later)}): end to end {e2e_first / e2e_later:.3f}, "
            f"worker {worker_seconds(first) / worker_later:.3f}   (target ≤ 1.1)"
        )
    print(f"first words: a {long_seconds:.0f}-s file, canceled after its first segment")
    for language, job in figures.first.items():
        started = job.stamped[catalogue.PROGRESS.type]
        to_segment = job.stamped[catalogue.SEGMENT.type] - started
        sse = (job.first_sse_segment - job.posted) if job.first_sse_segment else float("nan")
        # Where the time went, on the worker's clock from the job's start.
        steps = {"decoding": "decoding", "transcribing": "first progress of the model"}
        marks = ", ".join(
            f"{what} at {job.stamped[key] - started:.2f} s"
            for stage, what in steps.items()
            if (key := f"{catalogue.PROGRESS.type}:{stage}") in job.stamped
        )
        print(
            f"  language {language:8s}: job started → first segment {to_segment:5.2f} s (target ≤ 3), "
            f"POST → first SSE segment {sse:5.2f} s, POST → started "
            f"{job.seen[catalogue.PROGRESS.type] - job.posted:.2f} s ({marks})"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="before,after", help="comma separated: before, after")
    parser.add_argument("--seconds", type=float, default=75.0, help="the warm jobs' file")
    parser.add_argument("--jobs", type=int, default=3, help="warm jobs per configuration (≥ 2)")
    parser.add_argument("--long-seconds", type=float, default=600.0, help="the first-words file")
    parser.add_argument(
        "--first-window-s", type=float, help="FIRST_WINDOW_S of `after` (default: its default)"
    )
    args = parser.parse_args()
    base = Settings(enabled_models=["whisperx"])
    assemble_whisper_base(base.model_cache_dir)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        clip = english_speech(folder / "clip.flac", args.seconds)
        long = english_speech(folder / "long.flac", args.long_seconds)
        seconds = float(_duration(clip))
        long_seconds = float(_duration(long))
        for name in args.configs.split(","):
            update = dict(CONFIGS[name])
            if name == "after" and args.first_window_s is not None:
                update["first_window_s"] = args.first_window_s
            settings = base.model_copy(update=update)
            stack = EmbeddedStack(folder / f"stack-{name}", ports=Ports.free(), settings=settings)
            began = time.perf_counter()
            with stack:
                ready_s = time.perf_counter() - began
                warm, first = asyncio.run(measure(stack, clip, long, args.jobs))
            report(name, settings, Figures(ready_s, warm, first), seconds, long_seconds)


def _duration(media: Path) -> str:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(media)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


if __name__ == "__main__":
    main()
