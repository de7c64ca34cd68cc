"""Faults with real processes: a stack of this module's own (real nats-server with file storage,
real SeaweedFS, the real ingest, optimize and whisperx on whisper-base) and a real webhook
receiver that verifies every signature. Each test injects one kind of fault while jobs run:

1. the whisperx worker SIGKILLed mid-job, again and again, across a batch of 20+ jobs;
2. nats-server stopped and started again in place (same port, same data dir);
3. the object store down for 30 s;
4. the webhook receiver answering 503, or refusing connections, for a while;
5. a storm of duplicate bucket notifications (MinIO's payload, no Nats-Msg-Id) over several objects.

Every job must end `completed`, with exactly one `completed` event in the JOBS stream and exactly
one successful webhook delivery. The last test checks that again over every job of the module
(so a late duplicate is caught too) and prints the figures docs/reliability.md reports:

    .venv/bin/python -m pytest tests/system/test_chaos.py

Waits are on events, KV and the receiver, with timeouts; the only sleep holds the store down.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from minio import Minio
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from events import binding, catalogue, storage
from events.lifecycle import JobState
from events.settings import Settings
from functions.ingest.ids import object_job_id
from functions.ingest.schema import JobRecord
from infra.embedded.stack import EmbeddedStack, free_port
from tests.support.jobs import messages_until, started_stack, subject_count, submit, wait_for_job_end
from tests.support.paths import AUDIO, WEBHOOK_SECRET
from tests.support.uploads import jobs_of, minio_notification, notify, put, requests_published
from tests.support.webhook_receiver import Receiver, Reply, serving

CLIPS = [AUDIO / "jfk.flac", AUDIO / "librispeech-1995-1837-0001.wav"]
SCHEDULE = [0.0, 1.0, 2.0, 4.0, 8.0, 15.0]  # webhook attempts: delay before each
JOB_TIMEOUT = 480.0  # generous: the machine is shared; nothing here asserts on speed
STORE_DOWN_S = 30.0
NATS_DOWN_S = 8.0

BATCH, RESTART, STORE, WEBHOOKS, STORM, STORM_TOTAL = (
    "whisperx SIGKILLed mid-job",
    "nats-server down 8 s, restarted",
    "object store down 30 s",
    "webhook receiver down",
    "duplicate notifications",
    "all",
)


# -- what the module saw, for the final checks and the report ----------------------------------


@dataclass
class Ledger:
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> scenario
    hooks: dict[str, str] = field(default_factory=dict)  # job id -> hook name on the receiver
    faults: Counter[str] = field(default_factory=Counter)  # scenario -> faults injected
    # Hooks whose receiver was scripted to fail first: job id -> (receiver, failed replies).
    scripted: dict[str, tuple[Receiver, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what each fault did, for the report
    started: float = field(default_factory=time.monotonic)

    def add(self, scenario: str, job_id: str, hook: str | None = None) -> None:
        self.jobs[job_id] = scenario
        if hook is not None:
            self.hooks[job_id] = hook


LEDGER = Ledger()


# -- the stack, a NATS client that survives the restart, the receiver --------------------------


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[EmbeddedStack]:
    settings = Settings(
        model_cache_dir=model_cache,
        enabled_models=["whisperx"],
        # A killed worker's job is back after ack_wait (heartbeats every third of it).
        ack_wait_s=8.0,
        # Transient failures (a store or a server down) retry quickly and long enough that a
        # 30 s outage never exhausts a message: the host dead-letters only after max_deliver.
        retry_backoff_s=[1.0, 2.0, 3.0],
        max_deliver=200,
        webhook_secret=WEBHOOK_SECRET,
        webhook_allowed_hosts=["127.0.0.1"],
        webhook_schedule_s=SCHEDULE,
        webhook_timeout_s=5.0,
        uploads_reconcile_interval_s=2.0,
    )
    yield from started_stack(tmp_path_factory, "chaos-stack", settings)


@pytest.fixture(scope="module")
async def chaos_nc(chaos_stack: EmbeddedStack) -> AsyncIterator[NATS]:
    connection = await nats.connect(
        chaos_stack.settings.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5
    )
    yield connection
    await connection.close()


@pytest.fixture(scope="module")
def chaos_js(chaos_nc: NATS) -> JetStreamContext:
    return chaos_nc.jetstream()


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(WEBHOOK_SECRET) as hooks:
        yield hooks


@pytest.fixture
async def chaos_api(chaos_stack: EmbeddedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=chaos_stack.api_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def store(chaos_stack: EmbeddedStack) -> Minio:
    return storage.client(chaos_stack.settings)


# -- helpers ---------------------------------------------------------------------------------


async def submit_hooked(
    api: httpx.AsyncClient, receiver_url: str, scenario: str, clip: Path, hook: str | None = None
) -> str:
    """A job from an upload, with a webhook to the receiver; recorded in the ledger."""
    hook = hook or uuid.uuid4().hex
    job_id = await submit(api, clip, language="en", webhook_url=f"{receiver_url}/hook/{hook}")
    LEDGER.add(scenario, job_id, hook)
    return job_id


async def ends(js: JetStreamContext, job_ids: list[str]) -> dict[str, Any]:
    """Each job's `completed` or `failed` event (waited on in the JOBS stream)."""
    events = await asyncio.gather(*(wait_for_job_end(js, job_id, JOB_TIMEOUT) for job_id in job_ids))
    return dict(zip(job_ids, events, strict=True))


async def completions(js: JetStreamContext) -> Counter[str]:
    """How many `completed` events the JOBS stream holds, per job."""
    prefix = f"{catalogue.COMPLETED.subject_prefix}."
    info = await js.stream_info(catalogue.JOBS.name, subjects_filter=f"{prefix}*")
    return Counter({name.removeprefix(prefix): n for name, n in (info.state.subjects or {}).items()})


async def stored_events(js: JetStreamContext, subject: str) -> list[tuple[Any, datetime]]:
    """Every event on `subject` so far, with the time the stream stored it."""
    total = await subject_count(js, subject)
    if total == 0:
        return []
    read = itertools.count(1)
    messages = await messages_until(js, subject, lambda _: next(read) >= total, None, per_message=30)
    return [(binding.decode(msg.headers, msg.data), msg.metadata.timestamp) for msg in messages]


async def assert_all_completed_once(
    js: JetStreamContext, receiver: Receiver, job_ids: list[str]
) -> dict[str, Any]:
    """Every job completed, once, and its webhook arrived once, signed."""
    ended = await ends(js, job_ids)
    failed = {
        job: event.get_data() for job, event in ended.items() if event.get_type() != catalogue.COMPLETED.type
    }
    assert not failed, failed
    counts = await completions(js)
    assert {job: counts[job] for job in job_ids} == dict.fromkeys(job_ids, 1)
    for job_id in job_ids:
        hook = LEDGER.hooks[job_id]
        [hit] = await receiver.wait_hits(hook, 1, timeout=120)
        assert hit.payload is not None, f"the signature of {job_id}'s webhook did not verify"
        assert hit.payload["data"]["id"] == job_id and hit.payload["data"]["state"] == "completed"
    return ended


def data_of(msg: Any) -> dict[str, Any]:
    data = binding.decode(msg.headers, msg.data).get_data()
    assert isinstance(data, dict)
    return data


async def watch_progress(js: JetStreamContext) -> Any:
    """A subscription to progress events published from now on."""
    return await js.subscribe(
        f"{catalogue.PROGRESS.subject_prefix}.*", ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
    )


async def progress_of(sub: Any) -> AsyncGenerator[dict[str, Any]]:
    """The data of each progress event a `watch_progress` subscription receives."""
    try:
        while True:
            msg = await sub.next_msg(timeout=JOB_TIMEOUT)
            yield data_of(msg)
    finally:
        await sub.unsubscribe()


async def first_progress(sub: Any, job_ids: set[str], stages: set[str]) -> dict[str, Any]:
    """The first progress event at one of `stages` of one of `job_ids` on `sub`."""
    events = progress_of(sub)
    try:
        async with asyncio.timeout(JOB_TIMEOUT):
            async for data in events:
                if data["job_id"] in job_ids and data["stage"] in stages:
                    return data
    finally:
        await events.aclose()
    raise AssertionError("the progress subscription ended")


def pids(stack: EmbeddedStack) -> dict[str, int]:
    return {name: stack.child(name).process.pid for name in stack.functions}


# -- 1. the model worker SIGKILLed mid-job, repeatedly ----------------------------------------


async def test_a_worker_killed_mid_job_again_and_again_loses_and_repeats_nothing(
    chaos_stack: EmbeddedStack,
    chaos_js: JetStreamContext,
    chaos_api: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    """20 short real clips, each with a webhook. The worker is SIGKILLed three times while a
    job is in its hands (after the fetch, before any segment; and once with its segments out),
    and restarted each time; the killed job comes back after ack_wait."""
    # (distinct jobs seen at work before the kill, stage whose event triggers it)
    plan = [(1, "decoding"), (7, "transcribing"), (13, "decoding")]
    killed: list[dict[str, Any]] = []

    job_ids: set[str] = set()

    async def killer(sub: Any) -> None:
        seen: set[str] = set()
        steps = iter(plan)
        after, stage = next(steps)
        events = progress_of(sub)
        try:
            async for data in events:
                if data["job_id"] not in job_ids:
                    continue
                seen.add(data["job_id"])
                again = data["job_id"] in {kill["job_id"] for kill in killed}
                if len(seen) > after and data["stage"] == stage and not again:
                    chaos_stack.kill("whisperx")
                    killed.append(data)
                    LEDGER.faults[BATCH] += 1
                    await asyncio.to_thread(chaos_stack.restart, "whisperx")
                    step = next(steps, None)
                    if step is None:
                        return
                    after, stage = step
        finally:
            await events.aclose()

    killing = asyncio.create_task(killer(await watch_progress(chaos_js)))
    try:
        for i in range(20):
            job_ids.add(await submit_hooked(chaos_api, receiver.url, BATCH, CLIPS[i % 2]))
        ended = await assert_all_completed_once(chaos_js, receiver, sorted(job_ids))
        await asyncio.wait_for(killing, timeout=60)
    finally:
        killing.cancel()
        await asyncio.gather(killing, return_exceptions=True)

    assert len(killed) == len(plan)
    for kill in killed:
        run = ended[kill["job_id"]].get_data()["run_id"]
        again = "a new run" if run != kill["run_id"] else "the killed run (it had finished)"
        LEDGER.notes.append(f"SIGKILL at {kill['stage']}: job completed by {again}")
    for kill in killed:
        if kill["stage"] == "decoding":  # no segment was out: the completion is the new run's
            assert ended[kill["job_id"]].get_data()["run_id"] != kill["run_id"]
    queue = await chaos_js.consumer_info(catalogue.TRANSCRIBE.name, "whisperx")
    assert queue.num_pending == 0 and queue.num_ack_pending == 0


# -- 2. nats-server restarted mid-run --------------------------------------------------------


async def test_nats_restarted_mid_run_loses_nothing_and_every_function_reconnects(
    chaos_stack: EmbeddedStack,
    chaos_js: JetStreamContext,
    chaos_api: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    """Jobs queued and one in the worker's hands when nats-server stops (SIGTERM; file storage);
    8 s later it starts again on the same port and data dir. No function is restarted: each reconnects by
    itself, and jobs submitted after the restart complete too."""
    before = pids(chaos_stack)
    sub = await watch_progress(chaos_js)
    queued = [await submit_hooked(chaos_api, receiver.url, RESTART, CLIPS[i % 2]) for i in range(3)]
    await first_progress(sub, set(queued), {"decoding", "transcribing"})

    logs = {name: chaos_stack.child(name).log_path for name in chaos_stack.functions}
    marks = {name: path.stat().st_size for name, path in logs.items()}
    await asyncio.to_thread(chaos_stack.stop_server, "nats")
    LEDGER.faults[RESTART] += 1
    await asyncio.sleep(NATS_DOWN_S)  # the fault: long enough for publishes in flight to fail
    await asyncio.to_thread(chaos_stack.start_server, "nats")
    for name in chaos_stack.functions:  # ready means connected again (and the model loaded)
        await asyncio.to_thread(chaos_stack.wait_ready, name, time.monotonic() + 120)
    after = [await submit_hooked(chaos_api, receiver.url, RESTART, CLIPS[i % 2]) for i in range(2)]

    await assert_all_completed_once(chaos_js, receiver, queued + after)
    assert pids(chaos_stack) == before, "a function process was restarted"
    assert not chaos_stack.failed_children()
    said = {name: read_from(path, marks[name]) for name, path in logs.items()}
    retried = {name: lines_with(text, "retrying in") for name, text in said.items()}
    LEDGER.notes.append(
        f"nats down: {sum(lines_with(text, 'nats error') for text in said.values())} connection errors "
        f"logged, handler retries {retried}; every function reconnected with its pid unchanged"
    )


# -- 3. the object store down for 30 s ------------------------------------------------------


async def test_an_object_store_outage_makes_jobs_wait_and_retry_then_complete(
    chaos_stack: EmbeddedStack,
    chaos_js: JetStreamContext,
    chaos_api: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    """SeaweedFS SIGKILLed as soon as the first job is decoding: that job's results cannot be
    written (optimize's upload fails and retries), the others cannot be fetched (the worker's
    fetch raises TransientError and the message comes back). 30 s later it starts again on the
    same ports and data dir, and every job completes."""
    sub = await watch_progress(chaos_js)
    job_ids = [await submit_hooked(chaos_api, receiver.url, STORE, CLIPS[i % 2]) for i in range(4)]
    await first_progress(sub, set(job_ids), {"decoding"})

    logs = {name: chaos_stack.child(name).log_path for name in ("whisperx", "optimize")}
    marks = {name: path.stat().st_size for name, path in logs.items()}
    await asyncio.to_thread(chaos_stack.stop_server, "seaweedfs", kill=True)
    LEDGER.faults[STORE] += 1
    await asyncio.sleep(STORE_DOWN_S)  # the fault itself: the store stays down this long
    counts = await completions(chaos_js)
    completed_while_down = [job for job in job_ids if counts[job]]
    await asyncio.to_thread(chaos_stack.start_server, "seaweedfs")

    await assert_all_completed_once(chaos_js, receiver, job_ids)
    assert completed_while_down == [], "a job completed while the store was down"
    # They waited and retried: the worker's fetch, and optimize's upload of the first job.
    said = {name: read_from(path, marks[name]) for name, path in logs.items()}
    fetches = lines_with(said["whisperx"], "retrying in", "TransientError: storage unreachable")
    uploads = lines_with(said["optimize"], "retrying in", "/results/")
    assert fetches > 0, "no fetch was retried"
    assert uploads > 0, "no upload was retried"
    LEDGER.notes.append(
        f"store down: {fetches} fetch retries (whisperx), {uploads} upload retries (optimize)"
    )


def lines_with(text: str, *parts: str) -> int:
    return sum(1 for line in text.splitlines() if all(part in line for part in parts))


def read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


# -- 4. the webhook receiver down, then up ---------------------------------------------------


async def attempts_until(
    js: JetStreamContext, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float
) -> list[tuple[dict[str, Any], datetime]]:
    """The job's webhook attempt events, with the time the stream stored each, up to the first
    one `done` accepts."""
    messages = await messages_until(
        js, catalogue.WEBHOOK.subject(job_id), lambda msg: done(data_of(msg)), timeout
    )
    return [(data_of(msg), msg.metadata.timestamp) for msg in messages]


def delivered(data: dict[str, Any]) -> bool:
    return bool(data["outcome"] == "delivered")


def assert_in_schedule(times: list[float]) -> list[float]:
    """Attempt k+1 came at least the schedule's delay after attempt k (lower bounds only)."""
    gaps = [round(later - earlier, 2) for earlier, later in itertools.pairwise(times)]
    for k, gap in enumerate(gaps, start=1):
        assert gap >= SCHEDULE[k] - 0.05, (k, gaps)
    return gaps


async def test_webhooks_to_a_receiver_that_is_down_arrive_signed_in_the_retry_schedule(
    chaos_js: JetStreamContext, chaos_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    """One receiver answers 503 three times; another is not listening at all (connections
    refused) until the third attempt has failed. Both deliveries then arrive, signed, each
    attempt at least its delay of the schedule after the one before."""
    failing = 3
    unavailable = uuid.uuid4().hex
    receiver.scripts[unavailable] = [Reply(503) for _ in range(failing)]
    answered_503 = await submit_hooked(chaos_api, receiver.url, WEBHOOKS, CLIPS[0], unavailable)
    LEDGER.scripted[answered_503] = (receiver, failing)
    LEDGER.faults[WEBHOOKS] += 1

    port = free_port()
    refused = await submit_hooked(chaos_api, f"http://127.0.0.1:{port}", WEBHOOKS, CLIPS[1], "refused")
    LEDGER.faults[WEBHOOKS] += 1
    # Down until its third attempt has failed; then it comes up.
    await attempts_until(chaos_js, refused, lambda data: data["attempt"] >= failing, JOB_TIMEOUT)
    async with serving(WEBHOOK_SECRET, port) as late:
        LEDGER.scripted[refused] = (late, 0)
        [hit] = await late.wait_hits("refused", 1, timeout=120)
        attempts = await attempts_until(chaos_js, refused, delivered, 120)

    assert hit.payload is not None and hit.payload["data"]["id"] == refused
    assert [data["outcome"] for data, _ in attempts] == ["retrying"] * failing + ["delivered"]
    assert [data["attempt"] for data, _ in attempts] == list(range(1, failing + 2))
    assert all(data["error"] for data, _ in attempts[:failing])  # connection refused, said so
    refused_gaps = assert_in_schedule([at.timestamp() for _, at in attempts])

    hits = await receiver.wait_hits(unavailable, failing + 1, timeout=120)
    assert len(hits) == failing + 1
    assert all(hit.payload is not None for hit in hits), "a signature did not verify"
    assert len({hit.headers["webhook-id"] for hit in hits}) == 1  # one message, retried
    assert hits[-1].payload["data"]["state"] == "completed"
    unavailable_gaps = assert_in_schedule([hit.at for hit in hits])
    outcomes = await attempts_until(chaos_js, answered_503, delivered, 60)
    assert [data["status_code"] for data, _ in outcomes] == [503] * failing + [200]

    # And the jobs themselves: completed once each.
    counts = await completions(chaos_js)
    assert counts[answered_503] == counts[refused] == 1
    LEDGER.notes += [
        f"webhook answered 503 x{failing}, then 200: attempts {unavailable_gaps} s apart "
        f"(schedule {SCHEDULE[1 : failing + 1]})",
        f"webhook refused x{failing}, then up: attempts {refused_gaps} s apart",
    ]


# -- 5. a storm of duplicate bucket notifications ---------------------------------------------


async def test_a_storm_of_duplicate_notifications_makes_one_job_per_object(
    chaos_js: JetStreamContext, store: Minio, receiver: Receiver
) -> None:
    """Five objects dropped into the bucket, each announced 50 times in a shuffled storm of
    MinIO's payload without Nats-Msg-Id (as MinIO's queue dir may replay it), while the reconcile
    lists the bucket every 2 s as well: one job per object, completed once, called back once."""
    objects, repeats = 5, 50
    folder = f"storm/{uuid.uuid4().hex}"
    documents, job_ids, keys = [], [], []
    for i in range(objects):
        clip, key, hook = CLIPS[i % 2], f"{folder}/take {i} ü{CLIPS[i % 2].suffix}", uuid.uuid4().hex
        metadata = {"X-Amz-Meta-Webhook": f"{receiver.url}/hook/{hook}", "X-Amz-Meta-Language": "en"}
        etag = await put(store, key, clip, metadata)
        job_id = object_job_id("uploads", key, etag)
        LEDGER.add(STORM, job_id, hook)
        job_ids.append(job_id)
        keys.append(key)
        documents += [minio_notification(key, etag, size=clip.stat().st_size, metadata=metadata)] * repeats
    random.Random(8).shuffle(documents)
    for document in documents:
        await notify(chaos_js, document)
    LEDGER.faults[STORM] += len(documents) - objects

    await assert_all_completed_once(chaos_js, receiver, job_ids)
    for key, job_id in zip(keys, job_ids, strict=True):
        assert [record.id for record in await jobs_of(chaos_js, key)] == [job_id]
        assert await requests_published(chaos_js, job_id) == 1


# -- the figures -----------------------------------------------------------------------------


async def successful_deliveries(js: JetStreamContext, job_id: str) -> int:
    """2xx answers the job's webhook got: `delivered` attempts in the JOBS stream."""
    events = await stored_events(js, catalogue.WEBHOOK.subject(job_id))
    return sum(1 for event, _ in events if event.get_data()["outcome"] == "delivered")


async def test_zz_every_job_of_the_module_completed_once_and_was_called_back_once(
    chaos_js: JetStreamContext, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs last: over every job the faults above touched, again (a late duplicate shows here),
    and prints the table docs/reliability.md reports."""
    assert LEDGER.jobs, "no job was submitted"
    counts = await completions(chaos_js)
    kv = await chaos_js.key_value(catalogue.JOBS_KV_BUCKET)
    dead = (await chaos_js.stream_info(catalogue.DLQ.name)).state.messages
    rows, totals = [], Counter[str]()
    for scenario in (BATCH, RESTART, STORE, WEBHOOKS, STORM):
        jobs = [job for job, where in LEDGER.jobs.items() if where == scenario]
        row = Counter(submitted=len(jobs), faults=LEDGER.faults[scenario])
        for job_id in jobs:
            entry = await kv.get(job_id)
            state = JobRecord.model_validate_json(entry.value).state if entry.value else None
            row["completed"] += state == JobState.COMPLETED and counts[job_id] >= 1
            row["duplicate completions"] += max(counts[job_id] - 1, 0)
            deliveries = await successful_deliveries(chaos_js, job_id)
            hit_receiver, failures = LEDGER.scripted.get(job_id, (receiver, 0))
            hits = hit_receiver.hits.get(LEDGER.hooks[job_id], [])
            row["webhooks delivered"] += min(deliveries, 1)
            row["duplicate webhooks"] += max(deliveries - 1, 0) + max(len(hits) - failures - 1, 0)
            row["unsigned"] += sum(1 for hit in hits if hit.payload is None)
        row["losses"] = row["submitted"] - row["completed"]
        rows.append((scenario, row))
        totals.update(row)
    rows.append((STORM_TOTAL, totals))

    columns = ["submitted", "faults", "completed", "duplicate completions", "webhooks delivered",
               "duplicate webhooks", "losses"]  # fmt: skip
    lines = [
        f"chaos run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {time.monotonic() - LEDGER.started:.0f} s "
        f"(stack start included); dead letters: {dead}",
        "| scenario | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
        *(f"| {name} | " + " | ".join(str(row[c]) for c in columns) + " |" for name, row in rows),
    ]
    lines += [f"- {note}" for note in LEDGER.notes]
    with capsys.disabled():  # shown without -s
        print("\n" + "\n".join(lines))

    assert totals["losses"] == 0, lines
    assert totals["duplicate completions"] == 0, lines
    assert totals["duplicate webhooks"] == 0 and totals["unsigned"] == 0, lines
    assert totals["webhooks delivered"] == totals["submitted"], lines
    assert dead == 0, lines
