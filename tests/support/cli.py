"""The `klipnote` command run as a person runs it: a subprocess, output to a pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.paths import API_KEY, ROOT


def klipnote(
    *args: str, cache: Path, api_key: str | None = API_KEY, cwd: Path = ROOT, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "KLIPNOTE_API")}
    env["XDG_CACHE_HOME"] = str(cache)  # the record of submitted files, per test
    env["PYTHONPATH"] = str(ROOT)
    if api_key is not None:
        env["API_KEY"] = api_key
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
