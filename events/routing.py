"""The routing policy, in one place: which model transcribes a job, and why.

explicit request > language rule > DEFAULT_TRANSCRIPTION_MODEL, and only models in
ENABLED_MODELS. A language rule naming a disabled model is skipped (the default takes over); an
explicit request for an unknown or disabled model is an error, never a silent queue.

A request that names neither a model nor a language is routed twice: first to the default model,
whose function listens to the file (functions/transcriber/language.py) and applies the same rules to the
language it detected; when they name another model, the function hands the job over with a
`transcription.language_detected` event and ingest re-dispatches it, once. Ingest reads the rules
from its settings, the model function from its own: both run this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.errors import CodedError
from events.models import RoutingReason, TranscriptionDispatched
from events.registry import MODELS
from events.settings import Settings


class RoutingError(CodedError, ValueError):
    """A request no enabled model can take (unknown or disabled model, no rule for the language)."""


@dataclass(frozen=True)
class Route:
    model: str
    # `requested`: the request named the model; `language rule`: the request's language has a
    # rule (LANGUAGE_MODELS); `detected language`: the language the model function heard decided,
    # by the rules (a language without a rule stays on the default model); `default`: nothing else
    # applied (DEFAULT_TRANSCRIPTION_MODEL).
    reason: RoutingReason


def choose_model(
    requested: str | None, language: str | None, settings: Settings, *, detected: bool = False
) -> Route:
    """The model for a request (`requested` model, `language` as an ISO 639-1 code or a tag such
    as zh-CN), or for a job whose language was `detected`. Raises RoutingError (`model_disabled`,
    `model_unknown`) when the request cannot run here."""
    enabled = settings.enabled_models
    if requested:
        if requested not in enabled:
            code = "model_disabled" if requested in MODELS else "model_unknown"
            raise RoutingError(
                code, f"model {requested!r} is not available; enabled models: {', '.join(enabled)}"
            )
        return Route(requested, "requested")
    if language:
        # The rule table is configuration (LANGUAGE_MODELS); Mandarin -> BELLE-2 by default.
        ruled = settings.language_models.get(language.lower().split("-")[0])
        if ruled in enabled:
            return Route(ruled, "detected language" if detected else "language rule")
    if settings.default_transcription_model not in enabled:
        raise RoutingError(
            "model_disabled",
            f"DEFAULT_TRANSCRIPTION_MODEL {settings.default_transcription_model!r} is not enabled",
        )
    return Route(settings.default_transcription_model, "detected language" if detected else "default")


def routed_by_detection(job: TranscriptionDispatched) -> bool:
    """Whether the model function that receives `job` decides its model: the request named
    neither a model nor a language, and the job has not been handed over yet (a handed-over job
    carries the detected language, so it is handed over at most once)."""
    return job.language is None and job.routing_reason == "default"
