"""Benchmark media made from the public clips in ../shared/audio (nothing is committed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.paths import AUDIO

ENGLISH = ["jfk.flac", "librispeech-1995-1837-0001.wav"]


def long_english_clip(target: Path, min_seconds: float = 60.0) -> Path:
    """The English clips, repeated end to end, as 16 kHz mono WAV of at least `min_seconds`."""
    per_round = 11.0 + 8.73
    rounds = int(min_seconds // per_round) + 1
    inputs: list[str] = []
    for _ in range(rounds):
        for name in ENGLISH:
            inputs += ["-i", str(AUDIO / name)]
    count = len(inputs) // 2
    streams = "".join(f"[{i}:a]" for i in range(count))
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            *inputs,
            "-filter_complex",
            f"{streams}concat=n={count}:v=0:a=1[out]",
            "-map",
            "[out]",
            "-ac",
            "1",
            "-ar",
            "16000",
            str(target),
        ],
        check=True,
    )
    return target
