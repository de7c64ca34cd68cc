"""Job listing at scale: `GET /v1/jobs?limit=20` p50/p99 with N jobs in the `jobs` bucket (any
state filter, shallow and deep offsets), ingest's memory before and after the N jobs, and how
long a restarted ingest takes to build its job index (it reports ready only after).

The N records are written straight into the `jobs` bucket, as the projector writes them (the
record and its index headers, `functions.ingest.index.index_headers`): a stand-in for a history
of N jobs, which through the API would take N / (jobs/s) seconds to make. Ingest runs on the
embedded stack (nats-server, SeaweedFS, no model), following the bucket while they are written.

    .venv/bin/python -m tests.benchmarks.listing_bench [--jobs 100000] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import nats

from events import catalogue
from events.lifecycle import JobState
from events.models import ObjectRef, utcnow
from events.settings import Settings
from functions.ingest.index import index_headers
from functions.ingest.schema import JobRecord
from infra.embedded.stack import EmbeddedStack, Ports

# The mix of states the N jobs are in (a busy queue: most done, a fifth still queued).
MIX = [
    (JobState.COMPLETED, 0.6),
    (JobState.QUEUED, 0.2),
    (JobState.FAILED, 0.1),
    (JobState.TRANSCRIBING, 0.1),
]


def percentiles(values: list[float]) -> str:
    ms = sorted(value * 1000 for value in values)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"p50 {p50:7.2f} ms   p99 {p99:7.2f} ms"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def record(index: int, jobs: int) -> JobRecord:
    cut, state = 0.0, MIX[-1][0]
    for candidate, share in MIX:
        cut += share
        if (index % 100) / 100 < cut:
            state = candidate
            break
    created = utcnow() - timedelta(seconds=jobs - index)
    return JobRecord(
        id=uuid.uuid4().hex,
        state=state,
        media=ObjectRef(bucket="uploads", key=f"api/{uuid.uuid4().hex}/clip-{index}.wav", size=4096),
        filename=f"clip-{index}.wav",
        requested_model="whisperx" if index % 3 else None,
        language="en",
        created_at=created,
        updated_at=created,
    )


async def seed(nats_url: str, jobs: int) -> float:
    """Write `jobs` records into the `jobs` bucket, 1,000 publishes in flight; the seconds taken."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    began = time.perf_counter()
    for start in range(0, jobs, 1000):
        batch = [record(index, jobs) for index in range(start, min(jobs, start + 1000))]
        await asyncio.gather(
            *(
                js.publish(
                    f"$KV.{catalogue.JOBS_KV_BUCKET}.{job.id}",
                    job.model_dump_json().encode(),
                    headers=index_headers(job),
                )
                for job in batch
            )
        )
    took = time.perf_counter() - began
    await nc.close()
    return took


async def listed_total(client: httpx.AsyncClient) -> int:
    return int((await client.get("/v1/jobs", params={"limit": 1})).json()["total"])


async def time_listings(client: httpx.AsyncClient, jobs: int, requests: int) -> None:
    cases: list[tuple[str, dict[str, str | int]]] = [
        ("newest 20", {"limit": 20}),
        ("offset n/2", {"limit": 20, "offset": jobs // 2}),
        ("last page", {"limit": 20, "offset": max(0, jobs - 20)}),
        ("state=queued", {"limit": 20, "state": "queued"}),
        ("state=completed, deep", {"limit": 20, "state": "completed", "offset": jobs // 2}),
        ("state=canceled (none)", {"limit": 20, "state": "canceled"}),
    ]
    for name, params in cases:
        times = []
        for _ in range(requests):
            began = time.perf_counter()
            response = await client.get("/v1/jobs", params=params)
            times.append(time.perf_counter() - began)
            assert response.status_code == 200, response.text
        body = response.json()
        shown = len(body["jobs"])
        print(f"  GET /v1/jobs {name:24s} {percentiles(times)}   ({shown} shown of {body['total']})")


async def run(stack: EmbeddedStack, jobs: int, requests: int) -> None:
    ingest = stack.child("ingest").process.pid
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as client:
        await time_listings(client, 0, 5)  # the first requests' imports and connections
        before = rss_mib(ingest)
        seeded_s = await seed(stack.settings.nats_url, jobs)
        began = time.perf_counter()
        while True:  # a benchmark's poll: the index follows the writes
            if await listed_total(client) >= jobs:
                break
            await asyncio.sleep(0.2)
        caught_up_s = time.perf_counter() - began
        after = rss_mib(ingest)
        print(f"{jobs} jobs written into the jobs bucket in {seeded_s:.1f} s ({jobs / seeded_s:.0f}/s);")
        print(f"  ingest's index listed them all {caught_up_s:.2f} s after the last write")
        print(
            f"  ingest RSS {before:.0f} MiB before, {after:.0f} MiB with {jobs} jobs "
            f"({(after - before) * 1024 * 1024 / max(jobs, 1):.0f} bytes per job)"
        )
        print(f"listing, {requests} requests each, one client:")
        await time_listings(client, jobs, requests)
    stack.kill("ingest")
    restarted = time.perf_counter()
    stack.restart("ingest")
    took = time.perf_counter() - restarted
    print(f"ingest restarted to ready (its index built from {jobs} records): {took:.2f} s")
    print(f"  ingest RSS after the restart: {rss_mib(stack.child('ingest').process.pid):.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    settings = Settings(
        enabled_models=["whisperx"], uploads_reconcile_interval_s=0, retention_sweep_interval_s=0
    )
    with tempfile.TemporaryDirectory() as scratch:
        stack = EmbeddedStack(Path(scratch), ports=Ports.free(), settings=settings, functions=["ingest"])
        with stack:
            asyncio.run(run(stack, args.jobs, args.requests))


if __name__ == "__main__":
    main()
