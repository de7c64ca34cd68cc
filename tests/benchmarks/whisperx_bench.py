"""The whisperx function's own overhead: the skeleton (ffmpeg decoding to disk, windows, segment
streaming) around the WhisperX adapter vs bare `whisperx` (`load_audio` + `transcribe`) on the same
file, with the same model and settings, in one process and one run. Rounds alternate so both sides
see the same machine; the best round of each is compared. Prints ratios, import + load time and
peak RSS.

    .venv/bin/python -m tests.benchmarks.whisperx_bench [--seconds 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from events.settings import Settings
from functions.transcriber import Segment, TranscriptionFunction, offline
from functions.transcriber.audio import decode
from functions.whisperx.model import WhisperX
from infra.models import assemble_whisper_base
from tests.support.media import long_english_clip


def peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    offline()  # the bare whisperx below, and the probe's interpreter, never try a hub either
    settings = Settings()
    assemble_whisper_base(settings.model_cache_dir)

    # Import time in a fresh interpreter: here whisperx may already be imported by the tests' helpers.
    # whisperx imports lazily: `whisperx.asr` (torch, transformers, pyannote) is the heavy part.
    probe = "import time; t = time.perf_counter(); import whisperx.asr; print(time.perf_counter() - t)"
    import_s = float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout)
    import whisperx

    imported = time.perf_counter()
    function = TranscriptionFunction(WhisperX(settings), settings)
    function.adapter.load()
    loaded = time.perf_counter()
    bare = function.adapter.pipeline  # type: ignore[attr-defined]  # the same loaded model, bare API

    with tempfile.TemporaryDirectory() as scratch:
        clip = long_english_clip(Path(scratch) / "long.wav", args.seconds)
        bare_s, skeleton_s, decode_s = [], [], []
        segments: list[Segment | float] = []
        for _ in range(args.rounds):
            began = time.perf_counter()
            audio = whisperx.load_audio(str(clip))
            bare.transcribe(audio, batch_size=settings.batch_size, language="en")
            bare_s.append(time.perf_counter() - began)

            began = time.perf_counter()
            decoded = decode(clip, Path(scratch) / "audio.s16le")
            decode_s.append(time.perf_counter() - began)
            function.transcribe_audio(decoded, "en", segments.append)  # type: ignore[arg-type]
            skeleton_s.append(time.perf_counter() - began)

    seconds = len(audio) / 16_000
    best_bare, best_function = min(bare_s), min(skeleton_s)
    print(f"clip: {seconds:.1f} s of English speech (jfk + LibriSpeech, repeated); {args.rounds} rounds")
    print(f"import whisperx.asr (a fresh interpreter) {import_s:.2f} s; cold start here (import + load of "
          f"whisper-base int8 and the pyannote VAD) {loaded - imported:.2f} s")  # fmt: skip
    print(f"bare whisperx (load_audio + transcribe): best {best_bare:.2f} s, RTF {seconds / best_bare:.1f}x; "
          f"rounds {', '.join(f'{s:.2f}' for s in bare_s)}")  # fmt: skip
    print(f"function (decode to disk + windows + segments + decoder word times): best {best_function:.2f} s, "
          f"RTF {seconds / best_function:.1f}x; rounds {', '.join(f'{s:.2f}' for s in skeleton_s)}; "
          f"decode {min(decode_s):.2f} s")  # fmt: skip
    print(f"function / bare: {best_function / best_bare:.3f}")
    print(f"peak RSS (both in this process): {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
