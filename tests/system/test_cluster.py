"""KlipNote on a three-node JetStream cluster (tests/support/cluster.py: three real nats-servers
on 127.0.0.1, cluster `klipnote`), provisioned with STREAM_REPLICAS=3 as production is, and the
embedded stack's real SeaweedFS, ingest, optimize and whisperx (whisper-base) pointed at all three
members. One member is SIGKILLed while jobs run and started again on the same store:

1. provisioning keeps three copies of every stream, the jobs KV bucket and every durable;
2. a publish made while its stream has no leader (the leader just killed) is tried again with
   the same Nats-Msg-Id until the new leader acknowledges it, and is stored once;
3. jobs of real speech submitted through the API, with the member leading the JOBS stream killed
   after the first completion and restarted once two more jobs completed without it: every job
   completes exactly once (one `completed` event in JOBS, its record `completed`, its results in
   the store, listed as completed), none fails, and the restarted member catches up.

    .venv/bin/python -m pytest tests/system/test_cluster.py -q -s    # -s: what was killed, stalls

Waits are on the JOBS stream's counts and the members' health, with deadlines; no sleep stands in
for an event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events import binding, bus, catalogue, storage
from events.models import DeadLetter
from events.settings import Settings
from infra.embedded.stack import EmbeddedStack
from tests.support.cluster import (
    NatsCluster,
    connect,
    stream_leader,
    submit_until_accepted,
    wait_for_ends,
)
from tests.support.jobs import started_stack
from tests.support.paths import AUDIO

CLIPS = [AUDIO / "jfk.flac", AUDIO / "librispeech-1995-1837-0001.wav"]
JOBS = 8
JOB_TIMEOUT = 420.0  # generous: the machine is shared; nothing here asserts on speed
REPLICAS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats-cluster")) as members:
        yield members


@pytest.fixture(scope="module")
def cluster_stack(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path, cluster: NatsCluster
) -> Iterator[EmbeddedStack]:
    settings = Settings(
        model_cache_dir=model_cache,
        enabled_models=["whisperx"],
        stream_replicas=REPLICAS,
        # A message whose ack was lost with its consumer's leader comes back after ack_wait.
        ack_wait_s=10.0,
        retry_backoff_s=[0.5, 1.0, 2.0],
        max_deliver=50,
        uploads_watch=False,
        uploads_reconcile_interval_s=0,
    )
    yield from started_stack(tmp_path_factory, "cluster-stack", settings, nats_url=cluster.urls)


@pytest.fixture(scope="module")
async def cluster_nc(cluster: NatsCluster) -> AsyncIterator[NATS]:
    connection = await connect(cluster)
    yield connection
    await connection.close()


@pytest.fixture(scope="module")
def cluster_js(cluster_nc: NATS) -> JetStreamContext:
    return cluster_nc.jetstream()


async def test_provisioning_keeps_three_copies_of_every_stream_kv_bucket_and_durable(
    cluster_stack: EmbeddedStack, cluster_js: JetStreamContext
) -> None:
    streams = [stream.name for stream in catalogue.STREAMS] + [f"KV_{catalogue.JOBS_KV_BUCKET}"]
    for name in streams:
        info = await cluster_js.stream_info(name)
        assert info.config.num_replicas == REPLICAS, name
        assert info.cluster is not None and info.cluster.leader, name
        assert len(info.cluster.replicas or []) == REPLICAS - 1, name
    for consumer in [*catalogue.CONSUMERS, catalogue.model_consumer("whisperx")]:
        state = await cluster_js.consumer_info(consumer.stream.name, consumer.durable)
        assert state.config.num_replicas == REPLICAS, consumer.durable
        assert state.cluster is not None and len(state.cluster.replicas or []) == REPLICAS - 1


async def test_a_publish_while_its_stream_elects_a_leader_is_tried_again_and_stored_once(
    cluster: NatsCluster, cluster_stack: EmbeddedStack, cluster_js: JetStreamContext
) -> None:
    """The DLQ's leader is SIGKILLed, then three dead letters (a consumer name of this test's own:
    nothing reads them) are published at once through `bus.Publisher`: each publish returns
    stored (not a duplicate, not an error), each is in the stream once, and once the member is
    back every copy holds them."""
    victim = await stream_leader(cluster_js, catalogue.DLQ.name)
    cluster.kill(victim)
    publisher = bus.Publisher(cluster_js, cluster_stack.settings)
    letters = [
        binding.new_event(
            catalogue.DEAD_LETTER,
            DeadLetter(
                consumer="cluster-test", subject="nowhere", reason="a test", deliveries=1, headers={}, body=""
            ),
            function="cluster-test",
            event_id=f"cluster-test-{time.time_ns()}-{index}",
        )
        for index in range(3)
    ]
    try:
        stored = [await publisher.publish(letter) for letter in letters]
        assert stored == [True, True, True]
        assert await stream_leader(cluster_js, catalogue.DLQ.name) not in ("", victim)
    finally:
        await asyncio.to_thread(cluster.restart, victim)
    subject = catalogue.dead_letter_subject("cluster-test")
    info = await cluster_js.stream_info(catalogue.DLQ.name, subjects_filter=subject)
    assert (info.state.subjects or {}).get(subject) == len(letters)
    # Every copy comes to agree: a restarted member can say healthy before it has heard from
    # the leader that it is behind (its copy read (0, 0) right after /healthz, in one CI run).
    await _copies_agree(cluster, catalogue.DLQ.name, timeout=60)


async def test_jobs_complete_exactly_once_across_a_node_kill_and_restart(
    cluster: NatsCluster, cluster_stack: EmbeddedStack, cluster_js: JetStreamContext
) -> None:
    """8 jobs of real speech; once the first has ended, the member leading JOBS (the stream every
    lifecycle event goes to) is SIGKILLed; once two more have ended without it, it is started
    again on its store. Every job completes exactly once, nothing fails or is dead-lettered, and
    the restarted member's copy of JOBS matches the others'."""
    async with httpx.AsyncClient(base_url=cluster_stack.api_url, timeout=120) as api:
        submitted = [await submit_until_accepted(api, CLIPS[index % len(CLIPS)]) for index in range(JOBS)]
        job_ids = [job_id for job_id, _ in submitted]
        assert len(set(job_ids)) == JOBS

        completed, failed = await wait_for_ends(cluster_js, job_ids, at_least=1, timeout=JOB_TIMEOUT)
        before = sum(1 for job in job_ids if completed[job] or failed[job])
        victim = await stream_leader(cluster_js, catalogue.JOBS.name)
        led = [
            name
            for name in [stream.name for stream in catalogue.STREAMS] + [f"KV_{catalogue.JOBS_KV_BUCKET}"]
            if await stream_leader(cluster_js, name) == victim
        ]
        meta = cluster.meta_leader()
        cluster.kill(victim)
        killed_at = time.monotonic()
        # Two more jobs complete while the member is down (or all do, if fewer are left).
        await wait_for_ends(cluster_js, job_ids, at_least=min(before + 2, JOBS), timeout=JOB_TIMEOUT)
        down_s = time.monotonic() - killed_at
        await asyncio.to_thread(cluster.restart, victim)

        completed, failed = await wait_for_ends(cluster_js, job_ids, at_least=JOBS, timeout=JOB_TIMEOUT)
        print(
            f"\nkilled {victim} (leading {', '.join(led)}; meta leader was {meta}) after "
            f"{before} of {JOBS} jobs had ended; it was down {down_s:.1f} s; "
            f"submission tries {[tries for _, tries in submitted]}"
        )
        assert not failed, f"jobs failed: {dict(failed)}"
        assert {job: completed[job] for job in job_ids} == dict.fromkeys(job_ids, 1), (
            "a completion lost or repeated"
        )

        s3 = storage.client(cluster_stack.settings)
        for job_id in job_ids:
            record = (await api.get(f"/v1/jobs/{job_id}")).json()
            assert record["state"] == "completed", record
            results = list(s3.list_objects(cluster_stack.settings.results_bucket, prefix=f"{job_id}/"))
            assert results, f"no results for {job_id}"
        listed = await _listed_completed(api, set(job_ids))
        assert listed == set(job_ids), f"not listed as completed: {set(job_ids) - listed}"

    # Nothing was dead-lettered, and every member holds the same JOBS stream again.
    dlq = await cluster_js.stream_info(catalogue.DLQ.name, subjects_filter="dlq.>")
    letters = {s: n for s, n in (dlq.state.subjects or {}).items() if s != "dlq.cluster-test"}
    assert letters == {}, letters
    await _copies_agree(cluster, catalogue.JOBS.name, timeout=60)
    assert not cluster_stack.failed_children()


async def _listed_completed(api: httpx.AsyncClient, wanted: set[str], timeout: float = 30) -> set[str]:
    """The jobs of `wanted` that `GET /v1/jobs?state=completed` lists, once it lists them all
    (the listing follows the records within moments) or at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        page = (await api.get("/v1/jobs", params={"state": "completed", "limit": 500})).json()
        listed = {job["id"] for job in page["jobs"]} & wanted
        if listed == wanted or time.monotonic() > deadline:
            return listed
        await asyncio.sleep(0.2)  # a condition polled with a deadline


async def _copies_agree(cluster: NatsCluster, stream: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        copies = {member.name: cluster.stream_counts(member.name).get(stream) for member in cluster.members}
        if len(set(copies.values())) == 1:
            return
        assert time.monotonic() < deadline, f"the copies of {stream} differ: {copies}"
        await asyncio.sleep(0.2)  # a condition polled with a deadline
