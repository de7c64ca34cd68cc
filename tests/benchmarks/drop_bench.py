"""A file dropped into the embedded stack's uploads bucket, to its job's start: the stand-in for
MinIO's bucket notifier (`infra.embedded.notifier_standin`) announces it, with the reconcile off
(`UPLOADS_RECONCILE_INTERVAL_S=0`), on the whole default stack (ingest, optimize, whisperx).

Hops, timed by one subscriber on `transcription.>` in this process, from the moment the minio
client's PUT returned (the object is stored; the filer's event can precede the PUT's answer, so
`sent → started` times the same from the moment the PUT was sent, its upload included):
  requested  drop → `transcription.requested` seen (filer event, HEAD, record on storage.uploads,
             ingest's uploads consumer, the job record and the request)
  started    drop → the model's first `transcription.progress` seen (routed, queued, fetched by
             the idle whisperx worker: the job has started)
Each drop waits for the previous job's end, so the worker is idle and nothing queues. Target
(issue 16): under 3 s. Before the stand-in only the reconcile found a drop: its grace
(RECONCILE_GRACE_S, 5 s) plus up to one interval (UPLOADS_RECONCILE_INTERVAL_S, 60 s).

    .venv/bin/python -m tests.benchmarks.drop_bench [--drops 10]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import nats
from minio import Minio
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from events import binding, catalogue, storage
from events.settings import Settings
from functions.ingest.ids import object_job_id
from infra.embedded.stack import EmbeddedStack, Ports
from tests.support.paths import AUDIO

CLIP = AUDIO / "librispeech-1995-1837-0001.wav"
ENDS = {kind.type for kind in catalogue.JOB_ENDS}


def figures(values: list[float]) -> str:
    ms = sorted(value * 1000 for value in values)
    return f"p50 {statistics.median(ms):6.0f} ms   max {ms[-1]:6.0f} ms   (n={len(ms)})"


async def run(stack: EmbeddedStack, drops: int) -> None:
    store: Minio = storage.client(stack.settings)
    bucket = stack.settings.uploads_bucket
    data = CLIP.read_bytes()
    nc = await nats.connect(stack.settings.nats_url)
    seen: dict[tuple[str, str], float] = {}
    ended: dict[str, asyncio.Event] = {}

    async def on_event(msg: Msg) -> None:
        event = binding.decode(msg.headers, msg.data)
        data = event.get_data()
        assert isinstance(data, dict)
        job_id = data["job_id"]
        seen.setdefault((event.get_type(), job_id), time.perf_counter())
        if event.get_type() in ENDS and job_id in ended:
            ended[job_id].set()

    sub = await nc.jetstream().subscribe(
        "transcription.>", cb=on_event, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
    )
    requested, started, sent_started = [], [], []
    for index in range(drops + 1):  # the first warms the model up and is not counted
        key = f"bench/{uuid.uuid4().hex}/talk {index}.wav"
        sent = time.perf_counter()
        result = await asyncio.to_thread(store.put_object, bucket, key, io.BytesIO(data), len(data))
        dropped = time.perf_counter()
        job_id = object_job_id(bucket, key, result.etag)
        ended[job_id] = asyncio.Event()
        await asyncio.wait_for(ended[job_id].wait(), timeout=300)
        if index == 0:
            continue
        requested.append(seen[(catalogue.REQUESTED.type, job_id)] - dropped)
        started.append(seen[(catalogue.PROGRESS.type, job_id)] - dropped)
        sent_started.append(seen[(catalogue.PROGRESS.type, job_id)] - sent)
    await sub.unsubscribe()
    await nc.close()
    print(f"{drops} drops of an 8.7 s WAV ({len(data) // 1024} KiB), one at a time, reconcile off, 2 cores")
    print(f"drop → requested       {figures(requested)}")
    print(f"drop → model started   {figures(started)}")
    print(f"sent → model started   {figures(sent_started)}")
    print(f"under the 3 s target: {sum(value < 3.0 for value in sent_started)}/{len(started)} drops")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--drops", type=int, default=10)
    args = parser.parse_args()
    settings = Settings(enabled_models=["whisperx"], uploads_reconcile_interval_s=0, uploads_watch=True)
    with tempfile.TemporaryDirectory() as scratch:
        with EmbeddedStack(Path(scratch), ports=Ports.free(), settings=settings) as stack:
            asyncio.run(run(stack, args.drops))


if __name__ == "__main__":
    main()
