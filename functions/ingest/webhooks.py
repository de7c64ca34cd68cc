"""Webhooks (Standard Webhooks): one signed call when a job ends, retried on a schedule.

STUB: to be implemented (issue 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from cloudevents.core.v1.event import CloudEvent

from events.models import WebhookTarget

if TYPE_CHECKING:
    from functions.ingest.function import Ingest


class WebhookRefused(ValueError):
    """A webhook target ingest will not call (SSRF guard, no signing secret)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WebhookDeliverer:
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def check(self, target: WebhookTarget) -> None:
        """Refuse a target at submission (raises WebhookRefused)."""

    async def deliver(self, event: CloudEvent) -> AsyncIterator[CloudEvent]:
        """On `completed` / `failed`: call the job's webhook, if it has one."""
        return
        yield
