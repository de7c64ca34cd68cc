"""The routing policy, in one place: which model transcribes a job.

explicit request > language rule > DEFAULT_TRANSCRIPTION_MODEL, and only models in
ENABLED_MODELS. A language rule naming a disabled model is skipped (the default takes over); an
explicit request for an unknown or disabled model is an error, never a silent queue.
"""

from __future__ import annotations

from events.settings import Settings

# The routing entry of each model function: adding a model adds a line here.
MODELS: dict[str, str] = {
    "whisperx": "WhisperX: multilingual, forced alignment",
    "belle2": "BELLE-2 (Whisper large-v3 fine-tune): Mandarin",
}


class RoutingError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def choose_model(requested: str | None, language: str | None, settings: Settings) -> str:
    enabled = settings.enabled_models
    if requested:
        if requested not in enabled:
            code = "model_disabled" if requested in MODELS else "model_unknown"
            raise RoutingError(
                code, f"model {requested!r} is not available; enabled models: {', '.join(enabled)}"
            )
        return requested
    if language:
        # The rule table is configuration (LANGUAGE_MODELS); Mandarin -> BELLE-2 by default.
        ruled = settings.language_models.get(language.lower().split("-")[0])
        if ruled in enabled:
            return ruled
    if settings.default_transcription_model not in enabled:
        raise RoutingError(
            "model_disabled",
            f"DEFAULT_TRANSCRIPTION_MODEL {settings.default_transcription_model!r} is not enabled",
        )
    return settings.default_transcription_model
