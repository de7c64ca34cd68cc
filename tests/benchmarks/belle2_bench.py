"""The BELLE-2 adapter against the transformers ASR pipeline called directly, same model, same
audio, same run: real-time factor, import + load time, peak RSS; and the adapter's CER on the
AISHELL clip and WER on jfk.flac.

    python -m tests.benchmarks.belle2_bench [--repeat N]

Uses the checkpoint `klipnote setup` derives (Settings().belle2_model_path()). RTF = audio s / wall s.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"
SPEECH = ["jfk.flac", "librispeech-1995-1837-0001.wav"] * 4  # 79 s of English speech
RATE = 16_000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def concatenated(directory: Path) -> Path:
    """The clips joined into one file with ffmpeg (each resampled to 16 kHz mono first)."""
    out = directory / "long.wav"
    inputs = [arg for name in SPEECH for arg in ("-i", str(AUDIO / name))]
    graph = "".join(f"[{i}:a]aresample=16000,aformat=channel_layouts=mono[a{i}];" for i in range(len(SPEECH)))
    graph += "".join(f"[a{i}]" for i in range(len(SPEECH))) + f"concat=n={len(SPEECH)}:v=0:a=1[out]"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph,
         "-map", "[out]", str(out)],
        check=True,
    )  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs of each (best is kept)")
    args = parser.parse_args()
    started = time.perf_counter()
    from functions.transcriber.hub import offline

    offline()  # before torch and transformers are imported: they read it then
    import numpy as np
    import torch
    import transformers

    from events.settings import Settings
    from functions.belle2.model import Belle2
    from functions.transcriber.audio import decode

    imported = time.perf_counter() - started
    settings = Settings(model_device="cpu")
    adapter = Belle2(settings)
    started = time.perf_counter()
    adapter.load()
    loaded = time.perf_counter() - started
    rss_loaded = peak_rss_mb()

    def decoded(path: Path) -> np.ndarray:
        with tempfile.TemporaryDirectory() as scratch:
            audio = decode(path, Path(scratch) / "audio.s16le")
            return np.array(audio.window(0, audio.samples))

    with tempfile.TemporaryDirectory(prefix="belle2-bench-") as scratch:
        audio = decoded(concatenated(Path(scratch)))
    seconds = len(audio) / RATE

    generate = {"language": "en", "task": "transcribe"}
    timings: dict[str, list[float]] = {"adapter": [], "pipeline": []}
    texts: dict[str, str] = {}

    def timed(name: str, call: Any) -> None:
        for _ in range(args.repeat):
            started = time.perf_counter()
            texts[name] = call()
            timings[name].append(time.perf_counter() - started)

    # The adapter first, alone: its peak RSS is read before the pipeline exists.
    warm = decoded(AUDIO / "jfk.flac")  # first calls pay one-time costs: not part of the RTF
    adapter.transcribe(warm, "en", lambda s: None, lambda f: None)
    timed("adapter", lambda: run_text(adapter, audio, "en"))
    rss_adapter = peak_rss_mb()

    # The documented direct call: the ASR pipeline, 30 s chunks, same model object, same batch size.
    pipe = transformers.pipeline(
        "automatic-speech-recognition", model=adapter.model, tokenizer=adapter.processor.tokenizer,
        feature_extractor=adapter.processor.feature_extractor, device=adapter.device,
        dtype=adapter.dtype, chunk_length_s=30, batch_size=settings.batch_size,
    )  # fmt: skip

    def run_pipeline() -> str:
        result: Any = pipe(audio.copy(), generate_kwargs=generate)
        return str(result["text"])

    pipe(warm.copy(), generate_kwargs=generate)
    timed("pipeline", run_pipeline)

    import jiwer

    reference = " ".join((AUDIO / n.replace(".flac", ".txt").replace(".wav", ".txt")).read_text().strip()
                         for n in SPEECH)  # fmt: skip
    from tests.support.quality import wer

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads, device {adapter.device}, {adapter.model_dir}")  # fmt: skip
    print(f"audio: {seconds:.1f} s ({len(SPEECH)} clips concatenated)")
    print(f"import (torch, transformers, adapter): {imported:.2f} s; load: {loaded:.2f} s; "
          f"import + load: {imported + loaded:.2f} s; peak RSS after load: {rss_loaded:.0f} MB")  # fmt: skip
    words = len(reference.split())
    for name in ("adapter", "pipeline"):
        best = min(timings[name])
        print(f"{name:>8}: {best:6.2f} s  RTF {seconds / best:5.2f}  WER {wer(reference, texts[name]):.3f}"
              f"  words {len(texts[name].split())}/{words}"
              f"  (runs: {', '.join(f'{t:.2f}' for t in timings[name])})")  # fmt: skip
    print("  (the pipeline stitches 30 s chunks by token overlap: content that repeats, as these clips"
          " do, can be merged away)")  # fmt: skip
    print(f"peak RSS, adapter alone (load + runs): {rss_adapter:.0f} MB")
    print(f"adapter time / pipeline time: {min(timings['adapter']) / min(timings['pipeline']):.3f}")

    jfk = run_text(adapter, decoded(AUDIO / "jfk.flac"), "en")
    print(f"jfk.flac WER: {wer((AUDIO / 'jfk.txt').read_text().strip(), jfk):.3f}: {jfk}")
    aishell = run_text(adapter, decoded(AUDIO / "aishell-BAC009S0724W0121.wav"), "zh").replace(" ", "")
    target = (AUDIO / "aishell-BAC009S0724W0121.txt").read_text().strip()
    print(f"AISHELL CER: {jiwer.cer(target, aishell):.3f}: {aishell} (reference {target})")
    try:  # whisper-base answers in Traditional characters; the reference is Simplified
        import opencc  # type: ignore[import-not-found]

        simplified = opencc.OpenCC("t2s").convert(aishell)
        print(f"AISHELL CER after Traditional->Simplified: {jiwer.cer(target, simplified):.3f}: {simplified}")
    except ImportError:
        pass
    print(f"peak RSS, whole process (adapter + pipeline): {peak_rss_mb():.0f} MB")
    return 0


def run_text(adapter: object, audio: object, language: str) -> str:
    transcript = adapter.transcribe(audio, language, lambda s: None, lambda f: None)  # type: ignore[attr-defined]
    return " ".join(segment.text for segment in transcript.segments)


if __name__ == "__main__":
    sys.exit(main())
