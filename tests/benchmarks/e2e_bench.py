"""End-to-end wall time through the embedded stack vs bare whisperx, same file, same model,
same settings, one run. Prints ratios (the machine is shared and noisy: compare within a run).

    .venv/bin/python -m tests.benchmarks.e2e_bench [--seconds 60] [--jobs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path

import httpx
import nats

from events import catalogue
from events.settings import Settings
from infra.embedded.stack import EmbeddedStack, Ports
from infra.models import assemble_whisper_base
from tests.support.jobs import job_events, wait_for_state
from tests.support.media import long_english_clip


def bare_whisperx(path: Path, settings: Settings) -> dict[str, float]:
    started = time.perf_counter()
    import whisperx
    import whisperx.asr  # whisperx imports lazily: its pipeline module is the heavy part

    imported = time.perf_counter()
    model = whisperx.load_model(
        str(settings.whisperx_model_path()),
        device="cpu",
        compute_type=settings.resolved_compute_type(),
        vad_method="pyannote",
        threads=settings.cpu_threads,
        local_files_only=True,
    )
    loaded = time.perf_counter()
    audio = whisperx.load_audio(str(path))
    model.transcribe(audio, batch_size=settings.batch_size)
    done = time.perf_counter()
    return {
        "import_s": imported - started,
        "load_s": loaded - imported,
        "transcribe_s": done - loaded,
        "audio_s": len(audio) / 16000,
    }


async def through_stack(stack: EmbeddedStack, path: Path) -> tuple[float, dict[str, float]]:
    """Wall time from POST to the completed job record, and the worker's own stage timings."""
    nc = await nats.connect(stack.settings.nats_url)
    try:
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as api:
            started = time.perf_counter()
            with open(path, "rb") as body:
                response = await api.post("/v1/jobs", files={"file": (path.name, body)})
            job_id = response.json()["id"]
            job = await wait_for_state(nc.jetstream(), job_id, {"completed", "failed"}, 900)
            elapsed = time.perf_counter() - started
            assert job["state"] == "completed", job
            events = await job_events(nc.jetstream(), job_id, {catalogue.TRANSCRIBED.type}, 30)
            return elapsed, events[-1].get_data()["timings"]
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    settings = Settings(enabled_models=["whisperx"])
    assemble_whisper_base(settings.model_cache_dir)
    with tempfile.TemporaryDirectory() as scratch:
        clip = long_english_clip(Path(scratch) / "long.wav", args.seconds)
        bare = bare_whisperx(clip, settings)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stack = EmbeddedStack(Path(scratch) / "stack", ports=Ports.free(), settings=settings)
        started = time.perf_counter()
        with stack:
            ready_s = time.perf_counter() - started
            runs = [asyncio.run(through_stack(stack, clip)) for _ in range(args.jobs)]
    audio = bare["audio_s"]
    print(f"clip: {audio:.1f} s of English speech (jfk + LibriSpeech, repeated)")
    print(
        f"bare whisperx: import {bare['import_s']:.2f} s, load {bare['load_s']:.2f} s, "
        f"transcribe {bare['transcribe_s']:.2f} s (RTF {audio / bare['transcribe_s']:.1f}x), "
        f"peak RSS {peak_mb:.0f} MB"
    )
    print(f"stack start (nats, SeaweedFS, functions, model loaded): {ready_s:.2f} s")
    for index, (wall, timings) in enumerate(runs, start=1):
        stages = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in timings.items())
        print(
            f"job {index}: end-to-end {wall:.2f} s = {wall / bare['transcribe_s']:.3f} x bare whisperx "
            f"(worker: {stages})"
        )
    best = min(wall for wall, _ in runs)
    print(f"best end-to-end / bare: {best / bare['transcribe_s']:.3f} (the seed design allows 1.25)")


if __name__ == "__main__":
    main()
