"""The hub-offline policy (functions/transcriber/hub.py): importing a model function changes
nothing, starting one turns every model hub off before its libraries are imported, and then
nothing in the process can reach a hub. Each check runs in a fresh interpreter whose environment
names no offline variable, with every network connection recorded (and refused)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from events.registry import MODELS
from events.settings import Settings
from functions.transcriber.hub import OFFLINE_ENV
from infra.models import assemble_whisper_base, derive_whisper_base_hf
from tests.support.paths import ROOT

# Every socket connection and name lookup is recorded and refused: a library that tried a hub
# would show up here, offline policy or not.
_NO_NETWORK = """
import socket
attempts = []
def _refuse(what):
    def refused(*args, **kwargs):
        attempts.append(f"{what} {args[1:] if what == 'connect' else args[:2]}")
        raise OSError("no network in this test")
    return refused
socket.socket.connect = _refuse("connect")
socket.getaddrinfo = _refuse("getaddrinfo")
"""

_START = (
    _NO_NETWORK
    + """
import asyncio, json, os, sys
from pathlib import Path
from events.runtime.serve import load_function
from events.settings import Settings

name, cache, scratch = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
function = load_function(name, Settings(model_cache_dir=cache, model_device="cpu"))
imported = {
    "environment": {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")},
    "hub_libraries": sorted({"huggingface_hub", "transformers"} & set(sys.modules)),
}
asyncio.run(function.start(None))
from huggingface_hub import constants, hf_hub_download
from transformers import AutoConfig
from transformers.utils import is_offline_mode

tried = []
for fetch in (
    lambda: hf_hub_download("openai/whisper-tiny", "config.json", cache_dir=scratch),
    lambda: AutoConfig.from_pretrained("openai/whisper-tiny", cache_dir=scratch),
):
    try:
        fetch()
        tried.append("fetched")
    except Exception as error:
        chain = []
        while error is not None:  # the library's own reason is its error's cause
            chain.append(f"{type(error).__name__}: {error}")
            error = error.__cause__ or error.__context__
        tried.append(" <- ".join(chain))
print(json.dumps({
    "imported": imported,
    "ready": function.health().ready,
    "problem": function.health().reason,
    "huggingface_hub_offline": constants.HF_HUB_OFFLINE,
    "transformers_offline": is_offline_mode(),
    "tried": tried,
    "attempts": attempts,
}))
"""
)


def run_python(script: str, *args: str) -> dict[str, Any]:
    """`script` in a fresh interpreter whose environment names no offline variable (this test
    process has them: conftest applies the policy); its last line of output, as JSON."""
    env = {key: value for key, value in os.environ.items() if key not in OFFLINE_ENV}
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.parametrize("model", MODELS)
def test_a_started_model_function_cannot_reach_a_hub(model: str, model_cache: Path, tmp_path: Path) -> None:
    derive_whisper_base_hf(assemble_whisper_base(model_cache), Settings(model_cache_dir=model_cache)
                           .belle2_model_path())  # fmt: skip
    report = run_python(_START, model, str(model_cache), str(tmp_path))

    # Importing the function changed nothing and imported no hub library: the policy is not a
    # side effect of an import, so nothing depends on import order to be offline.
    assert report["imported"] == {
        "environment": {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None},
        "hub_libraries": [],
    }
    # Started: the model loaded from disk, and both libraries read the policy when they were imported.
    assert report["ready"] and report["problem"] is None, report
    assert report["huggingface_hub_offline"] is True
    assert report["transformers_offline"] is True
    # A fetch is refused by the libraries themselves (huggingface_hub's OfflineModeIsEnabled;
    # transformers asks for local files only), before any connection is tried.
    assert len(report["tried"]) == 2
    for tried in report["tried"]:
        assert "OfflineModeIsEnabled" in tried or "outgoing traffic has been disabled" in tried, tried
    assert report["attempts"] == []


def test_the_policy_refuses_to_start_after_a_hub_library_was_imported_online() -> None:
    """huggingface_hub reads HF_HUB_OFFLINE once, at import: setting it later would leave the
    process online while claiming otherwise, so `offline()` refuses, and the function stays not
    ready, saying why, instead of loading a model that might reach a hub."""
    script = """
import asyncio, json
import huggingface_hub.constants  # where it reads HF_HUB_OFFLINE (the package itself imports lazily)
from events.settings import Settings
from functions.transcriber import TranscriptionFunction, offline

class Local:
    name, default_language = "local", None
    loaded = False
    def load(self):
        Local.loaded = True

try:
    offline()
    refused = None
except RuntimeError as error:
    refused = str(error)
function = TranscriptionFunction(Local(), Settings())
asyncio.run(function.start(None))
print(json.dumps({"refused": refused, "ready": function.health().ready, "problem": function.health().reason,
                  "loaded": Local.loaded}))
"""
    report = run_python(script)
    assert report["refused"] is not None and "huggingface_hub" in report["refused"], report
    assert not report["ready"] and not report["loaded"], report
    assert "huggingface_hub" in report["problem"], report
