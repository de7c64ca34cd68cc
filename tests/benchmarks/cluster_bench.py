"""Jobs through the functions on a three-node JetStream cluster across a node kill and restart.

Three real nats-servers on 127.0.0.1 (tests/support/cluster.py), provisioned with
STREAM_REPLICAS=3, and the embedded stack's SeaweedFS, ingest, optimize and whisperx
(whisper-base) pointed at all three. Half the jobs (short real speech, ../shared/audio) are
submitted, and once the first completes the member chosen by `--victim` is SIGKILLed; the other
half is submitted while it is down (through the API, trying again on 503 with the same
Idempotency-Key, as a client should); once `--down-jobs` more jobs have ended it is started again
on the same store, and the run waits for every job.

Prints the jobs submitted, completed, lost (submitted, never completed), duplicate completions
(extra `completed` events in JOBS), failed and dead-lettered; what the victim led; how long it was
down and how long it took to catch up; and how long the pipeline stalled: the time from the kill
to the next event JOBS stored, against the longest quiet gap between two JOBS events before the
kill (stream timestamps, so the figures are the server's, not a client's).

    .venv/bin/python -m tests.benchmarks.cluster_bench [--jobs 16] [--down-jobs 3]
        [--victim jobs-leader|meta-leader|follower]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
from nats.js import JetStreamContext

from events import catalogue
from events.reader import reading
from events.settings import Settings
from infra.embedded.stack import EmbeddedStack, Ports
from infra.models import assemble_whisper_base
from tests.support.cluster import NatsCluster, connect, stream_leader, submit_until_accepted, wait_for_ends
from tests.support.paths import AUDIO

CLIPS = [AUDIO / "jfk.flac", AUDIO / "librispeech-1995-1837-0001.wav"]
JOB_TIMEOUT = 1800.0
LED = [stream.name for stream in catalogue.STREAMS] + [f"KV_{catalogue.JOBS_KV_BUCKET}"]


async def choose_victim(cluster: NatsCluster, js_leader: str, how: str) -> str:
    if how == "jobs-leader":
        return js_leader
    meta = cluster.meta_leader()
    if how == "meta-leader":
        return meta
    # A member leading neither JOBS nor the meta group (if there is one).
    others = [m.name for m in cluster.members if m.name not in (js_leader, meta)]
    return others[0] if others else next(m.name for m in cluster.members if m.name != js_leader)


async def stored_times(js: JetStreamContext, subject: str) -> list[float]:
    """The stream timestamps (POSIX seconds) of every message on `subject`, in stream order."""
    times: list[float] = []
    async with reading(js, subject) as reader:
        want = await reader.stored()
        while reader.delivered < want:
            for msg in await reader.next_batch(512, wait_s=5.0):
                stamp: datetime = msg.metadata.timestamp
                times.append(stamp.timestamp())
    return times


async def run(
    cluster: NatsCluster, stack: EmbeddedStack, jobs: int, victim_kind: str, down_jobs: int
) -> None:
    nc = await connect(cluster)
    js = nc.jetstream()
    try:
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as api:
            started = time.time()
            first_half = [await submit_until_accepted(api, CLIPS[i % 2]) for i in range(jobs // 2)]
            ids = [job for job, _ in first_half]
            completed, failed = await wait_for_ends(js, ids, at_least=1, timeout=JOB_TIMEOUT)
            ended_before = sum(1 for job in ids if completed[job] or failed[job])

            jobs_leader = await stream_leader(js, catalogue.JOBS.name)
            victim = await choose_victim(cluster, jobs_leader, victim_kind)
            led = [name for name in LED if await stream_leader(js, name) == victim]
            if cluster.meta_leader() == victim:
                led.append("meta")
            cluster.kill(victim)
            killed_at = time.time()

            second_half, latencies = [], []
            for i in range(jobs - jobs // 2):
                posted = time.perf_counter()
                second_half.append(await submit_until_accepted(api, CLIPS[i % 2]))
                latencies.append(time.perf_counter() - posted)
            submitted = first_half + second_half
            ids = [job for job, _ in submitted]
            await wait_for_ends(js, ids, at_least=min(ended_before + down_jobs, jobs), timeout=JOB_TIMEOUT)
            restart_at = time.time()
            await asyncio.to_thread(cluster.restart, victim)
            healthy_at = time.time()
            completed, failed = await wait_for_ends(js, ids, at_least=jobs, timeout=JOB_TIMEOUT)
            finished = time.time()

        dlq = await js.stream_info(catalogue.DLQ.name, subjects_filter="dlq.>")
        letters = sum((dlq.state.subjects or {}).values())
        stamps = await stored_times(js, "transcription.>")
    finally:
        await nc.close()

    done = [job for job in ids if completed[job] >= 1]
    duplicates = sum(completed[job] - 1 for job in done)
    before = [t for t in stamps if started <= t < killed_at]
    gaps_before = [b - a for a, b in itertools.pairwise(before)]
    after_kill = [t for t in stamps if t >= killed_at]
    stall = (after_kill[0] - killed_at) if after_kill else float("nan")
    during = [killed_at, *[t for t in stamps if killed_at <= t <= healthy_at]]
    gaps_during = [b - a for a, b in itertools.pairwise(during)]
    retried = sum(1 for _, tries in submitted if tries > 1)

    rows = [
        (
            "jobs submitted",
            f"{len(submitted)} ({len(first_half)} before the kill, {len(second_half)} while down)",
        ),
        ("jobs completed", f"{len(done)}"),
        ("jobs lost", f"{len(submitted) - len(done)}"),
        ("duplicate completions", f"{duplicates}"),
        ("jobs failed", f"{sum(1 for job in ids if failed[job])}"),
        ("dead letters", f"{letters}"),
        (
            "submissions tried again",
            f"{retried} (most tries {max(tries for _, tries in submitted)}); slowest accepted while down "
            f"{max(latencies):.2f} s (first {latencies[0]:.2f} s)",
        ),
        ("victim", f"{victim} ({victim_kind}; led {', '.join(led) or 'nothing'})"),
        (
            "down",
            f"{restart_at - killed_at:.1f} s; restart to healthy (caught up) {healthy_at - restart_at:.1f} s",
        ),
        ("stall after the kill", f"{stall:.2f} s to the next event JOBS stored"),
        (
            "longest gap while down",
            f"{max(gaps_during):.2f} s (before the kill: {max(gaps_before, default=0.0):.2f} s)",
        ),
        ("wall time", f"{finished - started:.1f} s for {jobs} jobs"),
    ]
    for name, value in rows:
        print(f"{name + ':':<27} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--victim", choices=["jobs-leader", "meta-leader", "follower"], default="jobs-leader")
    parser.add_argument("--down-jobs", type=int, default=3, help="jobs that end while the victim is down")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    settings = Settings(
        enabled_models=["whisperx"],
        stream_replicas=3,
        # A message whose ack was lost with its consumer's leader comes back after ack_wait.
        ack_wait_s=10.0,
        retry_backoff_s=[0.5, 1.0, 2.0],
        max_deliver=50,
        uploads_watch=False,
        uploads_reconcile_interval_s=0,
    )
    assemble_whisper_base(settings.model_cache_dir)
    with (
        NatsCluster(scratch / "nats") as cluster,
        EmbeddedStack(
            scratch / "stack", ports=Ports.free(), settings=settings, nats_url=cluster.urls
        ) as stack,
    ):
        asyncio.run(run(cluster, stack, args.jobs, args.victim, args.down_jobs))


if __name__ == "__main__":
    main()
