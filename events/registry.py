"""The model registry: which model functions exist, and what each can do. It imports nothing, so
that the settings, the routing policy and the deployment tools can all read it."""

from __future__ import annotations

# The model registry: one entry per model function, name -> what it is for. The name is its
# folder (functions/<name>/, with its adapter, Dockerfile, requirements and README), its queue
# (`transcribe.<name>`), its NATS user (infra/nats_permissions.py), its Knative service and KEDA
# scaler (infra/knative/, infra/keda/). Routing, the settings' defaults, NATS permissions, the
# settings table, the manifest checks and the tests all read this: adding a model is its
# folder plus one line here.
MODELS: dict[str, str] = {
    "whisperx": "WhisperX: multilingual, forced alignment",
    "belle2": "BELLE-2 (Whisper large-v3 fine-tune): Mandarin",
}

# What each model can do with speech (events.models.Task): `transcribe` (write it down in its
# language) and `translate` (to English). A fact about the checkpoint, not configuration: Whisper's
# multilingual checkpoints were trained on both tasks (Radford et al. 2022, section 2.3); BELLE-2
# was fine-tuned on Mandarin transcription only, and its translate token is untrained. Routing
# (events/routing.py) never sends a job to a model that cannot do its task.
TASKS: dict[str, frozenset[str]] = {
    "whisperx": frozenset({"transcribe", "translate"}),
    "belle2": frozenset({"transcribe"}),
}

# The models whose function can name speakers (events.models.Diarization): whisperx runs a
# diarization stage after alignment (functions/whisperx/diarization.py); belle2 has none. Routing
# sends a job that asks for speakers only to one of these.
DIARIZES: frozenset[str] = frozenset({"whisperx"})
