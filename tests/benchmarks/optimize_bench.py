"""The optimizer's throughput and rule compliance: on a synthetic one-hour transcript shaped like
Whisper output (English and Mandarin segments, 1 to 40 s, some with word timestamps, some 40 s
runs without punctuation, loops and silence hallucinations mixed in), and on the real clips'
segments from whisper-base (faster-whisper, the model the whisperx function bundles).

    python -m tests.benchmarks.optimize_bench [--hours H] [--repeat N] [--no-real] [--function]

Segments per second = segments / wall seconds of `Optimizer.run` (pure CPU, no I/O); the
rendering of all four formats is timed separately. Compliance is the ADR's quality figure: the
share of cues meeting the duration and length rules (target >= 0.95).

`--function` also times the optimize function on real servers (nats-server and SeaweedFS, no
model): the synthetic transcript's segments published to SEGMENTS, then `transcribed` handled,
split into reading the segments back, and everything else (optimizing, rendering, writing to S3).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from events.models import SegmentTranscribed, Word
from events.settings import Settings
from functions.optimize import outputs
from functions.optimize.cues import Optimized, Optimizer
from functions.optimize.rules import compliance

AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"
CLIPS = {
    "jfk.flac": "en",
    "librispeech-1995-1837-0001.wav": "en",
    "aishell-BAC009S0724W0121.wav": "zh",
    "sr-chinese.flac": "zh",
}
ENGLISH = (
    "the of and to in is that it for was on are as with his they at be this from have or by one had not "
    "but what all were when we there can an your which their said if do will each about how up out them "
    "then she many some so these would other into has more her two like him see time could no make than "
    "first been its who now people my made over did down only way find use may water long little very after "
    "words called just where most know government meeting subtitle recording transcript question answer "
    "important everybody together understand information development conversation"
).split()
# The first 3,000 unified ideographs, plus Traditional characters Whisper writes for Mandarin.
HANZI = "".join(chr(code) for code in range(0x4E00, 0x4E00 + 3000)) + "們說會國體學電話時間處裡這個"


def synthetic_hour(hours: float, seed: int = 7) -> list[SegmentTranscribed]:
    rng = random.Random(seed)
    segments: list[SegmentTranscribed] = []
    clock = 0.0
    while clock < hours * 3600:
        sequence = len(segments)
        kind = rng.random()
        words: list[Word] | None = None
        language = "en"
        if kind < 0.05:  # a Whisper 30-40 s segment with no punctuation at all
            text = " ".join(rng.choice(ENGLISH) for _ in range(rng.randint(70, 100)))
            duration = len(text) / rng.uniform(12, 16)
        elif kind < 0.15:  # Mandarin at 4-6 characters per second, often in Traditional
            text = "".join(_chinese_sentence(rng) for _ in range(rng.randint(1, 3)))
            duration = len(text) / rng.uniform(4, 6)
            language = "zh"
        elif kind < 0.16:  # a decoding loop
            text = rng.choice(["谢谢" * 30, "I mean " * 12 + "yes.", "Okay. " * 6])
            duration = rng.uniform(5, 25)
        elif kind < 0.17:  # a silence hallucination
            text = rng.choice(["Thanks for watching!", " Thank you for watching.", "谢谢观看"])
            duration = rng.uniform(2, 30)
        else:
            text = " ".join(_english_sentence(rng) for _ in range(rng.choice([1, 1, 1, 2, 2, 3])))
            duration = len(text) / rng.uniform(11, 17)
        start = clock
        end = start + max(duration, 0.5)
        if rng.random() < 0.5 and language == "en":
            words = _timed_words(text, start, end)
        segments.append(
            SegmentTranscribed(
                job_id="bench",
                run_id="r",
                sequence=sequence,
                start=start,
                end=end,
                text=" " + text,
                words=words,
                language=language,
            )
        )
        clock = end + rng.choice([0.0, 0.0, rng.uniform(0.1, 1.5), rng.uniform(1.5, 6)])
    return segments


def _english_sentence(rng: random.Random) -> str:
    words = [rng.choice(ENGLISH) for _ in range(rng.randint(4, 22))]
    if len(words) > 8 and rng.random() < 0.6:
        words[rng.randint(2, len(words) - 3)] += ","
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])


def _chinese_sentence(rng: random.Random) -> str:
    clauses = [
        "".join(rng.choice(HANZI) for _ in range(rng.randint(4, 14))) for _ in range(rng.randint(1, 3))
    ]
    return "，".join(clauses) + rng.choice(["。", "。", "？", "！"])  # noqa: RUF001


def _timed_words(text: str, start: float, end: float) -> list[Word]:
    tokens = text.split()
    total = sum(len(token) for token in tokens) or 1
    words, clock = [], start
    for token in tokens:
        span = (end - start) * len(token) / total
        words.append(Word(word=token, start=round(clock, 3), end=round(clock + span * 0.85, 3)))
        clock += span
    return words


def real_segments() -> dict[str, tuple[list[SegmentTranscribed], float, str]]:
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(Settings().whisperx_model_path()), device="cpu", compute_type="int8", cpu_threads=2
    )
    found = {}
    for name, language in CLIPS.items():
        pieces, info = model.transcribe(
            str(AUDIO / name), language=language, beam_size=5, word_timestamps=True
        )
        segments = [
            SegmentTranscribed(
                job_id="bench",
                run_id="r",
                sequence=index,
                start=piece.start,
                end=piece.end,
                text=piece.text,
                words=[
                    Word(word=w.word, start=w.start, end=w.end, score=w.probability)
                    for w in piece.words or []
                ],
                language=language,
            )
            for index, piece in enumerate(pieces)
        ]
        found[name] = (segments, info.duration, language)
    return found


def report(
    label: str, segments: list[SegmentTranscribed], optimized: Optimized, seconds: list[float]
) -> None:
    best = min(seconds)
    rules = optimized.stats["rules"]
    print(
        f"{label}: {len(segments)} segments -> {len(optimized.cues)} cues; "
        f"{len(segments) / best:,.0f} segments/s (best of {len(seconds)}: {best * 1000:.1f} ms, "
        f"median {statistics.median(seconds) * 1000:.1f} ms)"
    )
    print(
        f"  compliance: duration+length {rules['duration_and_length']}, duration {rules['duration']}, "
        f"length {rules['length']}, reading speed {rules['reading_speed']}; "
        f"removed {optimized.stats['removed']}, "
        f"simplified characters {optimized.stats['simplified_characters']}"
    )


def function_timings(segments: list[SegmentTranscribed], repeat: int) -> None:
    """The optimize function on an embedded stack without models: segment reading and the rest."""
    import asyncio
    import tempfile
    import uuid

    import nats

    from events import binding, catalogue
    from events.bus import Publisher
    from events.harness import Harness
    from events.models import TranscriptionTranscribed
    from events.runtime.function import Runtime
    from functions.optimize.function import Optimize
    from infra.embedded.stack import EmbeddedStack, Ports

    async def timed(stack: EmbeddedStack) -> None:
        nc = await nats.connect(stack.settings.nats_url)
        js = nc.jetstream()
        function = Optimize(stack.settings)
        runtime = Runtime(stack.settings, Publisher(js, stack.settings), js)
        async with Harness(function, runtime=runtime) as harness:
            reads, handles = [], []
            for _ in range(repeat):
                job = uuid.uuid4().hex
                publisher = Publisher(js, stack.settings)
                for item in segments:
                    item = item.model_copy(update={"job_id": job})
                    await publisher.publish(
                        binding.new_event(
                            catalogue.SEGMENT,
                            item,
                            function="bench",
                            subject=job,
                            event_id=f"{job}:{item.sequence}",
                        )
                    )
                done = TranscriptionTranscribed(
                    job_id=job,
                    run_id=segments[0].run_id,
                    model="whisperx",
                    language="en",
                    segment_count=len(segments),
                    audio_seconds=segments[-1].end,
                )
                started = time.perf_counter()
                assert len(await function.segments_of(done)) == len(segments)
                reads.append(time.perf_counter() - started)
                event = binding.new_event(
                    catalogue.TRANSCRIBED, done, function="bench", subject=job, event_id=f"{job}:done"
                )
                started = time.perf_counter()
                outcome = await harness.run(event)
                handles.append(time.perf_counter() - started)
                assert outcome.error is None, outcome.error
        await nc.close()
        print(
            f"optimize function, {len(segments)} segments: reading them back from SEGMENTS "
            f"{min(reads) * 1000:.0f} ms (best of {repeat}, median {statistics.median(reads) * 1000:.0f}); "
            f"transcribed -> completed {min(handles) * 1000:.0f} ms (median "
            f"{statistics.median(handles) * 1000:.0f}; reading, optimizing, rendering, S3 writes)"
        )

    settings = Settings(enabled_models=[])
    with tempfile.TemporaryDirectory() as scratch:
        with EmbeddedStack(
            Path(scratch) / "stack", ports=Ports.free(), settings=settings, functions=[]
        ) as stack:
            asyncio.run(timed(stack))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-real", action="store_true", help="skip the real clips (no model load)")
    parser.add_argument("--function", action="store_true", help="also time the function on real servers")
    args = parser.parse_args()
    optimizer = Optimizer.from_settings(Settings())

    segments = synthetic_hour(args.hours)
    audio = segments[-1].end
    seconds = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        optimized = optimizer.run(segments, audio, "en")
        seconds.append(time.perf_counter() - started)
    report(f"synthetic {audio / 3600:.2f} h", segments, optimized, seconds)
    started = time.perf_counter()
    sizes = {
        fmt: len(outputs.render(fmt, optimized.cues, {"stats": optimized.stats}))
        for fmt in ("json", "srt", "vtt", "txt")
    }
    print(f"  rendering all four formats: {(time.perf_counter() - started) * 1000:.0f} ms, bytes {sizes}")
    if args.function:
        function_timings(segments, args.repeat)

    if args.no_real:
        return
    every_cue: list[tuple[float, float, str]] = []
    too_short: list[str] = []
    for name, (clip_segments, duration, language) in real_segments().items():
        started = time.perf_counter()
        optimized = optimizer.run(clip_segments, duration, language)
        report(
            f"{name} ({duration:.1f} s, {language})",
            clip_segments,
            optimized,
            [time.perf_counter() - started],
        )
        for cue in optimized.cues:
            print(f"    {cue.start:6.2f}-{cue.end:6.2f} {cue.text!r}")
        every_cue.extend((cue.start, cue.end, cue.text) for cue in optimized.cues)
        if duration < optimizer.rules.min_cue_s:
            too_short.append(name)
    together = compliance(every_cue, optimizer.rules)
    print(
        f"real clips together: {together['cues']} cues, duration+length {together['duration_and_length']}, "
        f"reading speed {together['reading_speed']}"
    )
    for name in too_short:
        print(f"  ({name} is shorter than the {optimizer.rules.min_cue_s} s minimum: no cue meets it)")


if __name__ == "__main__":
    main()
