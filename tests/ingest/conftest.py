"""Fixtures of the ingest tests that run a stack of their own (`hook_stack`, defined by each such
module: test_cancel.py, test_webhooks.py): a NATS connection to it and its JetStream context."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from infra.embedded.stack import EmbeddedStack


@pytest.fixture(scope="module")
async def hook_nc(hook_stack: EmbeddedStack) -> AsyncIterator[NATS]:
    connection = await nats.connect(hook_stack.settings.nats_url)
    yield connection
    await connection.close()


@pytest.fixture(scope="module")
def hjs(hook_nc: NATS) -> JetStreamContext:
    return hook_nc.jetstream()
