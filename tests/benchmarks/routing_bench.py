"""What routing by the spoken language costs, through the default embedded stack (whisperx and
belle2), one run:

- per clip, the wall time from POST to `completed` with the language named in the request and
  without it (routed by detection); the difference is what detection adds to a job. For English
  that is the listening (VAD over the file + the model on up to three 30-s clips); for Mandarin
  also the hand-over (whisperx fetches and decodes the file, belle2 again);
- the `language` stage of the model function (its own timing, from the `transcribed` event);
- the resident memory of each process of the default stack after the jobs (RSS, MiB).

    .venv/bin/python -m tests.benchmarks.routing_bench [--long-seconds 600] [--rounds 3]

The machine is shared and noisy: compare within a run; the median of `--rounds` per case.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import nats

from events import binding, catalogue
from events.settings import Settings
from infra.embedded.stack import EmbeddedStack, Ports
from infra.models import assemble_whisper_base, derive_whisper_base_hf
from tests.support.jobs import job_events
from tests.support.media import long_english_clip
from tests.support.paths import AUDIO


async def timed_job(api: httpx.AsyncClient, js: Any, path: Path, **form: str) -> tuple[float, dict[str, Any]]:
    """Seconds from POST to `completed`, and the job's transcribed event data."""
    started = time.perf_counter()
    with open(path, "rb") as body:
        response = await api.post("/v1/jobs", files={"file": (path.name, body)}, data=form)
    response.raise_for_status()
    job_id = response.json()["id"]
    events = await job_events(js, job_id, {catalogue.COMPLETED.type, catalogue.FAILED.type}, 1800)
    elapsed = time.perf_counter() - started
    if binding.kind_of(events[-1]) is not catalogue.COMPLETED:
        raise RuntimeError(f"{path.name}: {events[-1].get_data()}")
    transcribed = next(e for e in events if binding.kind_of(e) is catalogue.TRANSCRIBED).get_data()
    return elapsed, transcribed


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (ffmpeg is not running between jobs)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main(long_seconds: float, rounds: int) -> None:
    settings = Settings()
    derive_whisper_base_hf(assemble_whisper_base(settings.model_cache_dir), settings.belle2_model_path())
    with tempfile.TemporaryDirectory() as scratch:
        long_clip = long_english_clip(Path(scratch) / "long.wav", long_seconds)
        cases = [
            ("jfk.flac (en, 11 s)", AUDIO / "jfk.flac", "en"),
            ("aishell (zh, 4.3 s)", AUDIO / "aishell-BAC009S0724W0121.wav", "zh"),
            ("dev/zh_aishell3_SSB00180170 (zh, 6.6 s)", AUDIO / "dev" / "zh_aishell3_SSB00180170.wav", "zh"),
            (f"English, {long_seconds:.0f} s", long_clip, "en"),
        ]
        with EmbeddedStack(Path(scratch) / "stack", ports=Ports.free(), settings=settings) as stack:
            nc = await nats.connect(stack.settings.nats_url)
            js = nc.jetstream()
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as api:
                await timed_job(api, js, AUDIO / "jfk.flac", language="en")  # warm both paths once
                await timed_job(api, js, AUDIO / "sr-chinese.flac", language="zh")
                columns = ["clip", "language named (s)", "detected (s)", "adds (s)", "listening (s)"]
                print("| " + " | ".join([*columns, "model"]) + " |")
                print("|---|---|---|---|---|---|")
                for name, path, language in cases:
                    named, detected, stage = [], [], []
                    model = "?"
                    for _ in range(rounds):
                        named.append((await timed_job(api, js, path, language=language))[0])
                        elapsed, transcribed = await timed_job(api, js, path)
                        detected.append(elapsed)
                        if "language" in transcribed["timings"]:  # not after a hand-over: belle2 trusts it
                            stage.append(float(transcribed["timings"]["language"]))
                        model = transcribed["model"]
                    a, b = statistics.median(named), statistics.median(detected)
                    listened = (
                        f"{statistics.median(stage):.2f}" if stage else "(whisperx, before the hand-over)"
                    )
                    print(f"| {name} | {a:.2f} | {b:.2f} | {b - a:+.2f} | {listened} | {model} |")
            await nc.close()
            print()
            print("| process | RSS (MiB) |")
            print("|---|---|")
            total = 0.0
            for child in stack.children:
                mib = rss_mib(child.process.pid)
                total += mib
                print(f"| {child.name} | {mib:.0f} |")
            print(f"| **default stack** | **{total:.0f}** |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--long-seconds", type=float, default=600.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.long_seconds, args.rounds))
