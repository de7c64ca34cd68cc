"""ingest alone on the embedded stack (nats-server, SeaweedFS, the ingest process; no model
worker, so routed jobs wait on their queue): jobs/s accepted by the API and routed onto a model's
queue, and the latency of each hop, p50/p99, measured in one run.

Hops, timed by one subscriber on `transcription.>` in this process:
  API      POST sent → `transcription.requested` seen (upload stored, request published, record made)
  answer   POST sent → 202 received
  routing  `requested` seen → `queued` seen (the router consumed it, published the dispatch and queued)
and the projector's lag when the last job was queued, and how long it took to drain.

    .venv/bin/python -m tests.benchmarks.ingest_bench [--jobs 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import nats
import nats.js
from nats.js.api import DeliverPolicy

from events import binding, catalogue
from events.settings import Settings
from infra.embedded.stack import EmbeddedStack, Ports

MEDIA = b"RIFF" + b"\0" * 4092  # what the API stores is not decoded here: 4 KiB of anything


def percentiles(values: list[float]) -> str:
    ms = sorted(value * 1000 for value in values)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   (n={len(ms)})"


async def run(stack: EmbeddedStack, jobs: int, concurrency: int) -> None:
    nc = await nats.connect(stack.settings.nats_url)
    seen: dict[tuple[str, str], float] = {}
    all_queued = asyncio.Event()
    queued_count = 0

    async def on_event(msg: nats.aio.msg.Msg) -> None:
        nonlocal queued_count
        event = binding.decode(msg.headers, msg.data)
        job_id = event.get_data()["job_id"]
        seen[(event.get_type(), job_id)] = time.perf_counter()
        if event.get_type() == catalogue.QUEUED.type:
            queued_count += 1
            if queued_count == jobs:
                all_queued.set()

    sub = await nc.jetstream().subscribe(
        "transcription.>", cb=on_event, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
    )
    sent: dict[str, float] = {}
    answered: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def submit(client: httpx.AsyncClient, index: int) -> None:
        async with gate:
            began = time.perf_counter()
            response = await client.post("/v1/jobs", files={"file": (f"clip-{index}.wav", MEDIA)})
            answered.append(time.perf_counter() - began)
            assert response.status_code == 202, response.text
            sent[response.json()["id"]] = began

    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(submit(client, index) for index in range(jobs)))
        accepted_s = time.perf_counter() - started
        await asyncio.wait_for(all_queued.wait(), timeout=300)
        routed_s = time.perf_counter() - started
        drained_s, most_behind = await projector_drained(nc.jetstream())
    await sub.unsubscribe()
    await nc.close()

    api_hop = [seen[(catalogue.REQUESTED.type, job)] - began for job, began in sent.items()]
    routing_hop = [seen[(catalogue.QUEUED.type, job)] - seen[(catalogue.REQUESTED.type, job)] for job in sent]
    print(f"{jobs} jobs, {concurrency} at a time, 4 KiB uploads, ingest as one process on 2 cores")
    print(f"accepted: {jobs / accepted_s:7.1f} jobs/s  ({accepted_s:.2f} s for all 202s)")
    print(f"routed:   {jobs / routed_s:7.1f} jobs/s  ({routed_s:.2f} s until every job was queued)")
    print(f"hop API      (POST → requested) {percentiles(api_hop)}")
    print(f"hop answer   (POST → 202)       {percentiles(answered)}")
    print(f"hop routing  (requested → queued) {percentiles(routing_hop)}")
    print(
        f"projector: {most_behind} events behind when every job was queued, "
        f"all projected {drained_s * 1000:.0f} ms later"
    )


async def projector_drained(js: nats.js.JetStreamContext) -> tuple[float, int]:
    """Seconds until the projector's consumer has nothing pending or unacknowledged, and how far
    behind it was at first (a benchmark's poll of the consumer's info, every 10 ms)."""
    began = time.perf_counter()
    first: int | None = None
    while True:
        info = await js.consumer_info(catalogue.JOBS.name, catalogue.INGEST_PROJECTOR.durable)
        behind = info.num_pending + info.num_ack_pending
        first = behind if first is None else first
        if behind == 0:
            return time.perf_counter() - began, first
        await asyncio.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    settings = Settings(enabled_models=["whisperx"], uploads_reconcile_interval_s=0)
    with tempfile.TemporaryDirectory() as scratch:
        stack = EmbeddedStack(Path(scratch), ports=Ports.free(), settings=settings, functions=["ingest"])
        with stack:
            asyncio.run(run(stack, args.jobs, args.concurrency))


if __name__ == "__main__":
    main()
