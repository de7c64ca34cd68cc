"""The diarization stage (functions/whisperx/diarization.py) on the benchmark mixes of
tests/support/mixes.py (2, 3 and 4 speakers, English and Mandarin, with overlaps and short turns):
DER and its parts, speakers found vs true, and the stage's RTF.

    python -m tests.benchmarks.diarization_bench [--repeat N] [--collar S] [--turns]

DER is pyannote.metrics' DiarizationErrorRate (collar 0.25 s by default, overlapped speech
scored): (missed + false alarm + confusion) / reference speech. RTF = wall seconds of
`Diarizer.diarize` / audio seconds (the best of `--repeat` runs), the encoder's load reported
apart (a worker pays it once, on its first diarized job). Target DER <= 0.15. Nothing here
passes or fails.
"""

from __future__ import annotations

import argparse
import os
import time

from events.models import Diarization
from events.settings import Settings
from functions.transcriber.hub import offline
from functions.whisperx.diarization import Turn, load_diarizer
from tests.support.mixes import Mix, benchmark_mixes

TARGET_DER = 0.15


def hypothesis(name: str, turns: list[Turn]):  # -> pyannote.core.Annotation
    from pyannote.core import Annotation, Segment

    annotation = Annotation(uri=name)
    for index, turn in enumerate(turns):
        annotation[Segment(turn.start, turn.end), index] = turn.speaker
    return annotation


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per mix; the fastest is reported")
    parser.add_argument(
        "--collar", type=float, default=0.25, help="seconds forgiven either side of a reference boundary"
    )
    parser.add_argument(
        "--turns", action="store_true", help="also print each mix's reference and found turns"
    )
    args = parser.parse_args()

    os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
    offline()
    from pyannote.metrics.diarization import DiarizationErrorRate

    settings = Settings(model_device="cpu")
    started = time.perf_counter()
    diarizer = load_diarizer(settings)
    load_s = time.perf_counter() - started
    mixes: list[Mix] = benchmark_mixes()
    print(
        f"diarizer: {diarizer.name}, cpu_threads {settings.cpu_threads}; "
        f"encoder load {load_s:.2f} s (once per process)"
    )
    print(f"DER: pyannote.metrics DiarizationErrorRate(collar={args.collar}); RTF: best of {args.repeat}\n")
    print("| mix | audio s | speakers true | found | DER | missed | false alarm | confusion | RTF |")
    print("|---|---|---|---|---|---|---|---|---|")
    total = DiarizationErrorRate(collar=args.collar)
    counted = 0
    wall = audio = 0.0
    for mix in mixes:
        times: list[float] = []
        turns: list[Turn] = []
        for _ in range(max(1, args.repeat)):
            started = time.perf_counter()
            turns = diarizer.diarize(mix.audio, Diarization())
            times.append(time.perf_counter() - started)
        reference = mix.annotation()
        found = hypothesis(mix.name, turns)
        parts = DiarizationErrorRate(collar=args.collar)(reference, found, detailed=True)
        total(reference, found)
        speech = parts["total"] or 1.0
        true_count, found_count = len(mix.speakers), len({t.speaker for t in turns})
        counted += true_count == found_count
        wall += min(times)
        audio += mix.seconds
        print(
            f"| {mix.name} | {mix.seconds:.1f} | {true_count} | {found_count} "
            f"| {parts['diarization error rate']:.3f} "
            f"| {parts['missed detection'] / speech:.3f} | {parts['false alarm'] / speech:.3f} "
            f"| {parts['confusion'] / speech:.3f} | {min(times) / mix.seconds:.3f} |"
        )
        if args.turns:
            for start, end, speaker in mix.reference:
                print(f"    reference {start:6.2f}-{end:6.2f} {speaker}")
            for turn in turns:
                print(f"    found     {turn.start:6.2f}-{turn.end:6.2f} {turn.speaker}")
    print(
        f"\ntotal: {audio:.1f} s of audio, DER {abs(total):.3f} (target <= {TARGET_DER}), "
        f"speaker count right on {counted}/{len(mixes)} mixes, "
        f"RTF {wall / audio:.3f} ({wall / audio * 60:.1f} s per minute of audio)"
    )


if __name__ == "__main__":
    main()
