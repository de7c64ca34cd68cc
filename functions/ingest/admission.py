"""Admission: the checks every request passes, once, whichever way it came in (the HTTP API, a
CloudEvent from another system on NATS or over HTTP, a file dropped into the uploads bucket).

Routing (the model exists, is enabled and can do the job's task: events/routing.py), the
language tag's form, and the webhook guard (SSRF, a signing secret: webhooks/guard.py). The API
answers a refusal 422 before it stores anything; the router fails the job with the refusal's code
(`failed`, step `routing`).
"""

from __future__ import annotations

import re

from events import routing
from events.errors import CodedError
from events.models import Decoding, Diarization, WebhookTarget
from events.settings import Settings
from functions.ingest.webhooks.errors import WebhookRefused
from functions.ingest.webhooks.guard import WebhookGuard

# An ISO 639-1 (or 639-2/3) code, optionally with a region or script (zh-CN, zh-Hant): BCP 47's
# common forms, enough for the routing rules and the models' language tokens.
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")


class LanguageRefused(CodedError, ValueError):
    """`language_invalid`: a language that is no ISO 639-1 code (with an optional region)."""


# Everything `Admission.admit` raises: a refusal, each with its code.
REFUSALS = (routing.RoutingError, LanguageRefused, WebhookRefused)


class Admission:
    """Admits requests by the routing rules of `settings` (`ENABLED_MODELS`, `LANGUAGE_MODELS`,
    `DEFAULT_TRANSCRIPTION_MODEL`) and the webhook `guard`."""

    def __init__(self, settings: Settings, guard: WebhookGuard) -> None:
        self.settings = settings
        self.guard = guard

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        return cls(settings, WebhookGuard.from_settings(settings))

    async def admit(
        self,
        *,
        model: str | None,
        language: str | None,
        webhook: WebhookTarget | None,
        decoding: Decoding | None = None,
        diarization: Diarization | None = None,
    ) -> routing.Route:
        """The model a request goes to and why, for its `decoding`'s task (unset: transcribe)
        and its `diarization` (set: a model that can name speakers). Raises, in this order, each
        with its code: RoutingError (`model_disabled`, `model_unknown`, `task_unsupported`,
        `diarization_unsupported`: the model, or no enabled model, can do the task or name speakers),
        LanguageRefused (`language_invalid`), WebhookRefused (`webhook_*`; the guard resolves the
        host off the event loop)."""
        task = decoding.task if decoding is not None else "transcribe"
        route = routing.choose_model(
            model, language, self.settings, task=task, diarize=diarization is not None
        )
        if language is not None and not _LANGUAGE.fullmatch(language):
            raise LanguageRefused("language_invalid", f"{language!r} is not an ISO 639-1 language code")
        if webhook is not None:
            await self.guard.check_async(webhook)
        return route
