"""Shared, expensive fixtures, one per session: the embedded stack (real nats-server with
JetStream, real SeaweedFS, the real functions with the real whisper-base model) and a NATS
connection to it. Tests wait on events, never on sleeps."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events.settings import Settings
from functions.transcriber.hub import offline
from infra.embedded.stack import EmbeddedStack
from infra.models import assemble_whisper_base, derive_whisper_base_hf
from tests.support.jobs import started_stack
from tests.support.paths import API_KEY, CASES_SCRIPT, WEBHOOK_SECRET

# Models load in this process too (tests/models), and tests import transformers before any model
# loads: the hub-offline policy of a model function, applied before either is imported.
offline()


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
        # (test_uploads.py runs it on a stack of its own) and no stand-in for MinIO's notifier
        # (tests/system/test_bucket_watch.py runs it on a stack of its own).
        uploads_reconcile_interval_s=0,
        uploads_watch=False,
    )
    yield from started_stack(tmp_path_factory, "stack", settings)


@pytest.fixture(scope="session")
def routing_stack(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[EmbeddedStack]:
    """The embedded stack as it runs by default: both models (whisperx, and belle2 on the
    transformers checkpoint derived from the bundled whisper-base), routing by language."""
    # Greedy decoding: these tests are about routing and the platform, and five beams through
    # transformers on two CPU cores make every belle2 job several times slower
    # (tests/models/test_belle2_model.py covers beam search).
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
