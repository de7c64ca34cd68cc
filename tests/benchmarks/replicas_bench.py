"""One vs two whisperx replicas on the same queue (the durable `whisperx` consumer): the same
batch of jobs through the embedded stack with one worker, then with a second worker process
started beside it. Prints the throughput ratio measured in one run, and the warm per-job overhead
(a job's wall time through the stack minus the worker's own model time).

On this 2-core machine two replicas share the same cores, so the ratio shows the queue sharing
work (and the cost of contention), not a GPU cluster's scaling.

    .venv/bin/python -m tests.benchmarks.replicas_bench [--jobs 8] [--seconds 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import nats

from events import catalogue
from events.settings import Settings
from infra.embedded.stack import EmbeddedStack, Ports, free_port
from infra.models import assemble_whisper_base
from tests.support.jobs import job_events, wait_for_state
from tests.support.media import long_english_clip


async def batch(stack: EmbeddedStack, clip: Path, jobs: int) -> tuple[float, list[float]]:
    """Wall time for `jobs` submitted at once to all complete; per job, its record's wall time
    minus the worker's model time."""
    nc = await nats.connect(stack.settings.nats_url)
    js = nc.jetstream()
    try:
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as api:
            started = time.perf_counter()
            ids = []
            for _ in range(jobs):
                with open(clip, "rb") as body:
                    ids.append((await api.post("/v1/jobs", files={"file": (clip.name, body)})).json()["id"])
            records = await asyncio.gather(
                *(wait_for_state(js, job_id, {"completed", "failed"}, 1800) for job_id in ids)
            )
            wall = time.perf_counter() - started
        assert all(record["state"] == "completed" for record in records), records
        overheads = []
        for record in records:
            transcribed = (await job_events(js, record["id"], {catalogue.TRANSCRIBED.type}, 30))[-1]
            timings = transcribed.get_data()["timings"]
            started_at, ended_at = record["created_at"], record["updated_at"]
            job_wall = (datetime.fromisoformat(ended_at) - datetime.fromisoformat(started_at)).total_seconds()
            overheads.append(job_wall - timings["transcribe"])
        return wall, overheads
    finally:
        await nc.close()


def second_replica(stack: EmbeddedStack, scratch: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, **stack.env(), "HEALTH_PORT": str(port)}
    log = open(scratch / "whisperx-2.log", "ab")  # kept open for the child's life
    command = [sys.executable, "-m", "infra.cli", "serve", "whisperx"]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/readiness", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # polling a readiness probe: there is no event to wait on
    process.kill()
    raise RuntimeError("the second replica was not ready in time")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per replica")
    args = parser.parse_args()
    settings = Settings(enabled_models=["whisperx"], cpu_threads=args.threads, uploads_reconcile_interval_s=0)
    assemble_whisper_base(settings.model_cache_dir)
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        clip = long_english_clip(scratch / "clip.wav", args.seconds)
        stack = EmbeddedStack(scratch / "stack", ports=Ports.free(), settings=settings)
        with stack:
            # One job at a time on a warm worker: what the platform adds around the model.
            overheads = [asyncio.run(batch(stack, clip, 1))[1][0] for _ in range(3)]
            one, _ = asyncio.run(batch(stack, clip, args.jobs))
            port = free_port()
            replica = second_replica(stack, scratch, port)
            try:
                two, _ = asyncio.run(batch(stack, clip, args.jobs))
                taken = httpx.get(f"http://127.0.0.1:{port}/health/readiness", timeout=5).json()[
                    "jobs_handled"
                ]
            finally:
                replica.terminate()
                replica.wait(timeout=60)
    print(f"{args.jobs} jobs of a {args.seconds:.0f} s+ clip, {args.threads} thread(s) a replica, 2 cores")
    print(f"one replica:  {one:7.2f} s  ({args.jobs / one:.3f} jobs/s)")
    print(f"two replicas: {two:7.2f} s  ({args.jobs / two:.3f} jobs/s)")
    print(
        f"throughput, two / one: {one / two:.2f}x (the second replica took {taken} of the {args.jobs} jobs)"
    )
    runs = ", ".join(f"{overhead:.2f}" for overhead in overheads)
    print(
        f"warm per-job overhead, one job at a time (job record's created→finished minus the worker's "
        f"model time): median {statistics.median(overheads):.2f} s of {runs}"
    )


if __name__ == "__main__":
    main()
