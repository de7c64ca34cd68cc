"""Following jobs on a running stack: submit, read a job's events, wait for a state."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from events import binding, catalogue, storage
from events.lifecycle import FINISHED_STATES
from events.reader import read_until as messages_until
from events.settings import Settings
from infra.embedded.stack import EmbeddedStack, Ports


def started_stack(
    tmp_path_factory: pytest.TempPathFactory, name: str, settings: Settings, **options: Any
) -> Iterator[EmbeddedStack]:
    """The body of a stack fixture: a stack of its own on free ports, stopped after its tests."""
    with EmbeddedStack(
        tmp_path_factory.mktemp(name), ports=Ports.free(), settings=settings, **options
    ) as stack:
        yield stack


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
    ends = {kind.type for kind in catalogue.JOB_ENDS}
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


async def wait_for_state(
    js: JetStreamContext, job_id: str, states: Collection[str], timeout: float = 30
) -> Any:
    """The job record once the projector has brought it to one of `states` (a KV watch)."""
    return await wait_for_record(js, job_id, lambda record: record["state"] in states, timeout)


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
