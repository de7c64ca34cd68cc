"""Shared, expensive fixtures, one per session: the embedded stack (real nats-server with
JetStream, real SeaweedFS, the real functions with the real whisper-base model) and a NATS
connection to it. Tests wait on events, never on sleeps."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from events import binding, catalogue, storage
from events.settings import Settings
from functions.ingest.jobs import JobState
from infra.embedded.stack import EmbeddedStack, Ports
from infra.models import assemble_whisper_base, derive_whisper_base_hf

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT.parent / "shared" / "audio"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# The session stack's API wants a key, as production does (the `api` client sends it).
API_KEY = "klipnote-test-api-key"
# A Standard Webhooks signing secret for test stacks (whsec_ + base64 of 24 bytes).
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"klipnote-tests-signing-k").decode()


def reference(name: str) -> str:
    return (AUDIO / f"{name}.txt").read_text(encoding="utf-8").strip()


@pytest.fixture(scope="session")
def model_cache() -> Path:
    base = Settings().model_cache_dir
    assemble_whisper_base(base)
    return base


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[EmbeddedStack]:
    """The whole platform on free ports, started once for the session."""
    # A short ack_wait: a killed worker's job comes back in 10 s, not 30 (heartbeats every 3.3 s);
    # a small upload limit, so exceeding it costs little; webhooks signed.
    settings = Settings(
        model_cache_dir=model_cache,
        enabled_models=["whisperx"],
        ack_wait_s=10.0,
        max_upload_bytes=8 * 2**20,
        webhook_secret=WEBHOOK_SECRET,
        api_key=API_KEY,
        # Tests here put objects into the uploads bucket for jobs of their own: no reconcile
        # (test_uploads.py runs it on a stack of its own).
        uploads_reconcile_interval_s=0,
    )
    yield from started_stack(tmp_path_factory, "stack", settings)


@pytest.fixture(scope="session")
def routing_stack(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[EmbeddedStack]:
    """The embedded stack as it runs by default: both models (whisperx, and belle2 on the
    transformers checkpoint derived from the bundled whisper-base), routing by language."""
    # Greedy decoding: these tests are about routing and the platform, and five beams through
    # transformers on two CPU cores make every belle2 job several times slower
    # (tests/test_belle2_model.py covers beam search).
    settings = Settings(model_cache_dir=model_cache, enabled_models=["whisperx", "belle2"], beam_size=1)
    derive_whisper_base_hf(assemble_whisper_base(model_cache), settings.belle2_model_path())
    yield from started_stack(tmp_path_factory, "routing-stack", settings)


@pytest.fixture(scope="session")
async def routing_js(routing_stack: EmbeddedStack) -> AsyncIterator[JetStreamContext]:
    connection = await nats.connect(routing_stack.settings.nats_url)
    yield connection.jetstream()
    await connection.close()


@pytest.fixture
async def routing_api(routing_stack: EmbeddedStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=routing_stack.api_url, timeout=60) as client:
        yield client


def started_stack(
    tmp_path_factory: pytest.TempPathFactory, name: str, settings: Settings, **options: Any
) -> Iterator[EmbeddedStack]:
    """The body of a stack fixture: a stack of its own on free ports, stopped after its tests."""
    with EmbeddedStack(
        tmp_path_factory.mktemp(name), ports=Ports.free(), settings=settings, **options
    ) as stack:
        yield stack


@pytest.fixture(scope="session")
async def nc(stack: EmbeddedStack) -> AsyncIterator[NATS]:
    connection = await nats.connect(stack.settings.nats_url)
    yield connection
    await connection.close()


@pytest.fixture(scope="session")
async def js(nc: NATS) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
async def api(stack: EmbeddedStack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60, headers=headers) as client:
        yield client


async def messages_until(
    js: JetStreamContext,
    subject: str,
    done: Callable[[Msg], bool],
    timeout: float | None,
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
    *,
    per_message: float | None = None,
    after_subscribing: Callable[[], Awaitable[object]] | None = None,
) -> list[Msg]:
    """The messages on `subject` (an ordered consumer) up to and including the first that `done`
    accepts. `timeout` bounds the whole read (None: unbounded), `per_message` the wait for each
    message (by default `timeout`); `after_subscribing` runs once the subscription exists (to
    publish what a `DeliverPolicy.NEW` read is to see). Always unsubscribes."""
    wait = per_message if per_message is not None else timeout
    assert wait is not None, "a read with no bound at all"
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=deliver_policy)
    messages: list[Msg] = []
    try:
        if after_subscribing is not None:
            await after_subscribing()
        async with asyncio.timeout(timeout):
            while True:
                msg = await sub.next_msg(timeout=wait)
                messages.append(msg)
                if done(msg):
                    return messages
    finally:
        await sub.unsubscribe()


async def subject_count(js: JetStreamContext, subject: str) -> int:
    """How many messages the JOBS stream holds on `subject` now."""
    info = await js.stream_info(catalogue.JOBS.name, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def job_events(js: JetStreamContext, job_id: str, until: set[str], timeout: float) -> list[Any]:
    """Every lifecycle event of a job, read from the JOBS stream until one of `until` types."""
    messages = await messages_until(
        js,
        catalogue.job_events_subject(job_id),
        lambda msg: binding.decode(msg.headers, msg.data).get_type() in until,
        timeout,
    )
    return [binding.decode(msg.headers, msg.data) for msg in messages]


async def wait_for_job_end(js: JetStreamContext, job_id: str, timeout: float = 180) -> Any:
    """The job's `completed` or `failed` event."""
    ends = {catalogue.COMPLETED.type, catalogue.FAILED.type}
    return (await job_events(js, job_id, ends, timeout))[-1]


async def submit(api: httpx.AsyncClient, path: Path, **form: str) -> str:
    with open(path, "rb") as body:
        response = await api.post("/v1/jobs", files={"file": (path.name, body)}, data=form)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def wait_for_record(
    js: JetStreamContext, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """The job record once `until` holds for it (a KV watch on the jobs bucket, no polling)."""
    kv = await js.key_value(catalogue.JOBS_KV_BUCKET)
    watcher = await kv.watch(job_id)
    try:
        async with asyncio.timeout(timeout):
            while True:
                entry = await watcher.updates(timeout=timeout)
                if entry is None or not entry.value:
                    continue  # the marker after the initial values
                record: dict[str, Any] = json.loads(entry.value)
                if until(record):
                    return record
    finally:
        await watcher.stop()


async def wait_for_state(js: JetStreamContext, job_id: str, states: set[str], timeout: float = 30) -> Any:
    """The job record once the projector has brought it to one of `states` (a KV watch)."""
    return await wait_for_record(js, job_id, lambda record: record["state"] in states, timeout)


FINISHED_STATES = {JobState.COMPLETED.value, JobState.FAILED.value}


async def finished_job(
    api: httpx.AsyncClient, js: JetStreamContext, job_id: str, timeout: float = 180
) -> dict[str, Any]:
    """The job record once ingest has recorded its end: watched in the jobs KV, not polled."""
    await wait_for_job_end(js, job_id, timeout)
    await wait_for_state(js, job_id, FINISHED_STATES, timeout)
    job: dict[str, Any] = (await api.get(f"/v1/jobs/{job_id}")).json()
    return job


def put(stack: EmbeddedStack, key: str, data: bytes) -> None:
    """Put `data` into the stack's uploads bucket under `key`."""
    storage.client(stack.settings).put_object(stack.settings.uploads_bucket, key, io.BytesIO(data), len(data))


CASES_SCRIPT = ROOT.parent / "shared" / "cases" / "make_media_cases.sh"


@pytest.fixture(scope="session")
def media_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The media cases of ../shared/cases/CASES.md, built once by their script from
    ../shared/audio (about 10 s, byte-identical each run; nothing is committed)."""
    folder = tmp_path_factory.mktemp("media-cases")
    made = subprocess.run(
        ["bash", str(CASES_SCRIPT), str(folder)], capture_output=True, text=True, timeout=180, check=False
    )
    assert made.returncode == 0, made.stderr
    return folder


def ffmpeg(*args: str) -> None:
    """Make test media (nothing is committed but the public clips in ../shared/audio)."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)
