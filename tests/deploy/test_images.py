"""Each CPU image's environment, proven without Docker: a fresh virtualenv from only
functions/<name>/requirements.txt plus the project installed with --no-deps, as its Dockerfile
does, then `klipnote serve <name>` from it reaches readiness against the session stack's NATS
and S3 (infra/dev/image_env.py does the work; docs/deployment.md runs it for the model images).

The wheels are kept (infra/dev/image_env.py's wheelhouse, under ~/.cache): the first run fills it
from the index (about 40 s per image here), later runs install from it offline (about 27 s each:
venv 7 s, requirements 14 s, project 4 s, readiness 1 s)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.embedded.stack import EmbeddedStack

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("function", ["ingest", "optimize"])
def test_image_environment_starts_from_its_own_requirements(
    function: str, stack: EmbeddedStack, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "infra" / "dev" / "image_env.py"),
            function,
            "--venv",
            str(tmp_path / "venv"),
            "--servers-from-env",
            "--timeout",
            "120",
        ],
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    timings = [line for line in result.stdout.splitlines() if line.startswith(("timing", "venv size"))]
    print("\n".join(timings))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert "reaches readiness" in result.stdout
