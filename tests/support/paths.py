"""Where the test material is, and the credentials of the test stacks."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


AUDIO = ROOT.parent / "shared" / "audio"


# The session stack's API wants a key, as production does (the `api` client sends it).
API_KEY = "klipnote-test-api-key"


# A Standard Webhooks signing secret for test stacks (whsec_ + base64 of 24 bytes).
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"klipnote-tests-signing-k").decode()


def reference(name: str) -> str:
    return (AUDIO / f"{name}.txt").read_text(encoding="utf-8").strip()


CASES_SCRIPT = ROOT.parent / "shared" / "cases" / "make_media_cases.sh"


def ffmpeg(*args: str) -> None:
    """Make test media (nothing is committed but the public clips in ../shared/audio)."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)
