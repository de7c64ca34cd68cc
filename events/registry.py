"""The model registry: which model functions exist. It imports nothing, so that the settings,
the routing policy and the deployment tools can all read it."""

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
