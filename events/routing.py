"""The routing policy, in one place: which model transcribes a job, and why.

explicit request > language rule > DEFAULT_TRANSCRIPTION_MODEL, and only models in
ENABLED_MODELS. A language rule naming a disabled model is skipped (the default takes over); an
explicit request for an unknown or disabled model is an error, never a silent queue.

A request that names neither a model nor a language is routed twice: first to the default model,
whose function listens to the file (functions/transcriber/language.py) and applies the same rules to the
language it detected; when they name another model, the function hands the job over with a
`transcription.language_detected` event and ingest re-dispatches it, once. Ingest reads the rules
from its settings, the model function from its own: both run this module.

Every step honours the job's task (events.models.Task; what each model can do is
events/registry.py TASKS): a model that cannot do it is refused when requested
(`task_unsupported`) and skipped by a language rule, and a job the default model cannot do goes to
the first enabled model (ENABLED_MODELS order) that can. A Mandarin job to translate goes to
whisperx, never to belle2. A job that asks for speakers (`diarize`) is held to the models that
can name them (events/registry.py DIARIZES) the same way (`diarization_unsupported`): a Mandarin
job with speakers goes to whisperx.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.errors import CodedError
from events.models import RoutingReason, Task, TranscriptionDispatched
from events.registry import DIARIZES, MODELS, TASKS
from events.settings import Settings


class RoutingError(CodedError, ValueError):
    """A request no enabled model can take (unknown or disabled model, a task the model or no
    enabled model can do, no default)."""


@dataclass(frozen=True)
class Route:
    model: str
    # `requested`: the request named the model; `language rule`: the request's language has a
    # rule (LANGUAGE_MODELS); `detected language`: the language the model function heard decided,
    # by the rules (a language without a rule stays on the default model); `default`: nothing else
    # applied (DEFAULT_TRANSCRIPTION_MODEL).
    reason: RoutingReason


def can_do(model: str, task: Task, *, diarize: bool = False) -> bool:
    """Whether `model` (a registry name) can do `task` (events/registry.py TASKS), and name
    speakers when `diarize` (DIARIZES)."""
    return task in TASKS.get(model, frozenset()) and (not diarize or model in DIARIZES)


def choose_model(
    requested: str | None,
    language: str | None,
    settings: Settings,
    *,
    detected: bool = False,
    task: Task = "transcribe",
    diarize: bool = False,
) -> Route:
    """The model for a request (`requested` model, `language` as an ISO 639-1 code or a tag such
    as zh-CN, `task` transcribe or translate, `diarize`: it asks for speakers), or for a job whose
    language was `detected`. Raises RoutingError (`model_disabled`, `model_unknown`;
    `task_unsupported` / `diarization_unsupported` when the requested model, or no enabled model,
    can do the task / name speakers) when the request cannot run here."""
    enabled = settings.enabled_models
    if requested:
        if requested not in enabled:
            code = "model_disabled" if requested in MODELS else "model_unknown"
            raise RoutingError(
                code, f"model {requested!r} is not available; enabled models: {', '.join(enabled)}"
            )
        if not can_do(requested, task):
            raise RoutingError(
                "task_unsupported", f"model {requested!r} cannot {task}; {_able(task, False, settings)}"
            )
        if not can_do(requested, task, diarize=diarize):
            raise RoutingError(
                "diarization_unsupported",
                f"model {requested!r} cannot name speakers; {_able(task, True, settings)}",
            )
        return Route(requested, "requested")
    if language:
        # The rule table is configuration (LANGUAGE_MODELS); Mandarin -> BELLE-2 by default. A rule
        # naming a model that cannot do the task is passed over like a disabled one.
        ruled = settings.language_models.get(language.lower().split("-")[0])
        if ruled in enabled and can_do(ruled, task, diarize=diarize):
            return Route(ruled, "detected language" if detected else "language rule")
    reason: RoutingReason = "detected language" if detected else "default"
    default = settings.default_transcription_model
    if default not in enabled:
        raise RoutingError("model_disabled", f"DEFAULT_TRANSCRIPTION_MODEL {default!r} is not enabled")
    if can_do(default, task, diarize=diarize):
        return Route(default, reason)
    able = [model for model in enabled if can_do(model, task, diarize=diarize)]
    if not able:
        if not any(can_do(model, task) for model in enabled):
            raise RoutingError(
                "task_unsupported", f"no enabled model can {task}; {_able(task, False, settings)}"
            )
        raise RoutingError(
            "diarization_unsupported", f"no enabled model can name speakers; {_able(task, True, settings)}"
        )
    return Route(able[0], reason)


def _able(task: Task, diarize: bool, settings: Settings) -> str:
    """Which models can do `task` (and name speakers, with `diarize`), and which are enabled,
    for a refusal's message."""
    able = [model for model in MODELS if can_do(model, task, diarize=diarize)]
    what = f"{task} and name speakers" if diarize else task
    return (
        f"models that can {what}: {', '.join(able) or 'none'}; "
        f"enabled models (ENABLED_MODELS): {', '.join(settings.enabled_models)}"
    )


def routed_by_detection(job: TranscriptionDispatched) -> bool:
    """Whether the model function that receives `job` decides its model: the request named
    neither a model nor a language, and the job has not been handed over yet (a handed-over job
    carries the detected language, so it is handed over at most once)."""
    return job.language is None and job.routing_reason == "default"
