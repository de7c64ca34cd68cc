"""The hub-offline policy, in one place: a model process never reaches a model hub.

Models come from local disk only (MODEL_CACHE_DIR, WHISPERX_MODEL_DIR, BELLE2_MODEL_DIR,
ALIGNMENT_MODELS): a missing model must fail at once with the fix in its message, not after
minutes of retried downloads, and a worker must never run weights or code it was not deployed
with. The adapters also pass `local_files_only` (or its equivalent) to every loader; this policy
covers whatever a library fetches on its own.

huggingface_hub reads `HF_HUB_OFFLINE` (huggingface_hub/constants.py) and transformers copies it
(transformers/utils/hub.py, `is_offline_mode`) once, when each is first imported: setting the
variables afterwards changes nothing. So the policy is applied when a model loads, before its
libraries are imported: `TranscriptionFunction.start` and every `ModelAdapter.load` call
`offline()` first. Importing KlipNote changes no environment variable.
"""

from __future__ import annotations

import os
import sys

# The variables huggingface_hub (HF_HUB_OFFLINE) and transformers (TRANSFORMERS_OFFLINE, its
# older name, which huggingface_hub also reads) turn offline with.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def offline() -> None:
    """Turn every model hub off for this process (idempotent; call it before a model's libraries
    are imported). Raises RuntimeError when huggingface_hub or transformers was already imported
    with the hub on: they read the variables at import, so the process could still reach a hub."""
    os.environ.update(OFFLINE_ENV)
    late = online_libraries()
    if late:
        raise RuntimeError(
            f"{' and '.join(late)} was imported before the hub-offline policy was applied, so it "
            "may still reach a model hub: call functions.transcriber.hub.offline() before importing it"
        )


def online_libraries() -> list[str]:
    """The hub libraries imported in this process with the hub on ([] when none is)."""
    online = []
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and not getattr(constants, "HF_HUB_OFFLINE", False):
        online.append("huggingface_hub")
    hub = sys.modules.get("transformers.utils.hub")
    if hub is not None and not hub.is_offline_mode():
        online.append("transformers")
    return online
