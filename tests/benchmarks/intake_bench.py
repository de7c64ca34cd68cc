"""What media intake costs: `functions.transcriber.audio.decode` (probe, packet probe, allow-lists, streamed
channel mix, timeline padding) against the plain one-shot ffmpeg decode it replaced
(`-map 0:a:0 -ac 1 -ar 16000` to a file), on the media cases of ../shared/cases and on a 20-minute
stereo AAC recording. Ratios and percentiles from this one run.

    .venv/bin/python -m tests.benchmarks.intake_bench
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from functions.transcriber.audio import JobFailed, Limits, decode
from tests.support.media import long_english_clip
from tests.support.paths import CASES_SCRIPT

LIMITS = Limits(max_seconds=4 * 3600, decode_timeout_s=600)


def plain_ffmpeg(media: Path, target: Path) -> None:
    """The decode before media intake: first audio track, ffmpeg's own downmix, to a file."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(media), "-map", "0:a:0",
         "-f", "s16le", "-ac", "1", "-ar", "16000", str(target)],
        check=False, capture_output=True,
    )  # fmt: skip


def timed(action: object, *args: object) -> float:
    started = time.perf_counter()
    action(*args)  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        cases = folder / "cases"
        subprocess.run(["bash", str(CASES_SCRIPT), str(cases)], check=True, capture_output=True)
        ratios, extra = [], []
        for media in sorted(cases.iterdir()):
            if media.name.startswith(("h", "03")):
                continue  # refused or unreadable: nothing to compare
            try:
                new = min(timed(decode, media, folder / "new.s16le", LIMITS) for _ in range(3))
            except JobFailed:
                continue
            old = min(timed(plain_ffmpeg, media, folder / "old.s16le") for _ in range(3))
            ratios.append(new / old)
            extra.append(new - old)
        p50, worst = statistics.median(extra) * 1000, max(extra) * 1000
        print(f"media cases ({len(ratios)} files, best of 3 each): decode() / plain ffmpeg "
              f"p50 {statistics.median(ratios):.2f}x, max {max(ratios):.2f}x; "
              f"added time p50 {p50:.0f} ms, max {worst:.0f} ms")  # fmt: skip

        minute = long_english_clip(folder / "minute.wav", 60.0)
        long = folder / "long.m4a"
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "19", "-i", str(minute),
             "-ac", "2", "-ar", "44100", "-c:a", "aac", "-b:a", "96k", str(long)],
            check=True,
        )  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        new = timed(decode, long, folder / "new.s16le", LIMITS)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        old = timed(plain_ffmpeg, long, folder / "old.s16le")
        seconds = (folder / "new.s16le").stat().st_size / 32000
        print(f"{seconds / 60:.1f} min stereo AAC: decode() {new:.2f} s ({seconds / new:.0f}x real time) vs "
              f"plain ffmpeg {old:.2f} s ({seconds / old:.0f}x): {new / old:.2f}x; "
              f"peak RSS of the process grew {grown / 1024:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
